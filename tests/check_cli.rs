//! `portico check` as users run it: the table, the problems, the exit status.

use std::process::Command;

fn check(dir: &std::path::Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["check", "--manifests"])
        .arg(dir)
        .output()
        .expect("run portico");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn the_myblog_example_passes() {
    let (code, out) = check(std::path::Path::new("examples/myblog"));
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    let cols = |l: &str| l.split_whitespace().map(String::from).collect::<Vec<_>>();
    assert_eq!(
        cols(lines[0]),
        ["HOST", "PATH", "TYPE", "BACKEND", "ENDPOINTS", "TLS"]
    );
    assert_eq!(
        cols(lines[1]),
        [
            "myblog.devops.cn",
            "/",
            "Prefix",
            "demo/myblog:80",
            "127.0.0.1:8002,127.0.0.2:8002",
            "demo/https-secret",
            "(redirect)"
        ]
    );
    assert!(out.contains("0 errors, 0 warnings"), "{out}");
}

#[test]
fn errors_are_listed_and_fail_the_check() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("broken.yaml"),
        "kind: Service\nmetadata: [\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("ing.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: i}\nspec:\n  defaultBackend: {service: {name: nope, port: {number: 80}}}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("class.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: portico\n  annotations: {ingressclass.kubernetes.io/is-default-class: \"true\"}\nspec: {controller: portico.dev/ingress-controller}\n",
    )
    .unwrap();
    let (code, out) = check(dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("broken.yaml: document 1, line"), "{out}");
    assert!(
        out.contains(
            "error: Ingress default/i spec.defaultBackend.service: Service default/nope not found"
        ),
        "{out}"
    );
    assert!(
        out.contains("*     *     default  default/nope:80"),
        "{out}"
    );
}

#[test]
fn a_missing_directory_is_a_clear_error() {
    let (code, _) = check(std::path::Path::new("/nonexistent/portico-test"));
    assert_eq!(code, 1);
    let out = Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["check", "--manifests", "/nonexistent/portico-test"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/portico-test"), "{err}");
}

#[test]
fn sigterm_drains_and_exits_zero() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["--manifests", dir.path().to_str().unwrap()])
        .args([
            "--http-addr",
            "127.0.0.1:0",
            "--https-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let ready = lines
        .by_ref()
        .take(50)
        .map_while(Result::ok)
        .any(|l| l.contains("snapshot published"));
    assert!(ready, "portico started");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "portico did not exit after SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("drained")), "{rest:?}");
}

fn check_args(dir: &std::path::Path, extra: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["check", "--manifests"])
        .arg(dir)
        .args(extra)
        .output()
        .expect("run portico");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn migrating(dir: &std::path::Path, annotations: &str) {
    std::fs::write(
        dir.join("app.yaml"),
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {{name: portico}}\nspec: {{controller: portico.dev/ingress-controller}}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: shop}}\nspec: {{ports: [{{port: 80}}]}}\n---\n\
             apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: web\n  namespace: shop\n  annotations: {{{annotations}}}\n\
             spec:\n  ingressClassName: portico\n  rules: [{{host: a.example, http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]}}}}]\n"
        ),
    )
    .unwrap();
}

/// The migration report: each ingress-nginx annotation of each Ingress, with what Portico
/// makes of it; warnings alone (an annotation not supported yet) do not fail the check.
#[test]
fn the_migration_report_names_each_annotation() {
    let dir = tempfile::tempdir().unwrap();
    migrating(
        dir.path(),
        "nginx.ingress.kubernetes.io/proxy-body-size: 8m, nginx.ingress.kubernetes.io/use-regex: \"true\", \
         nginx.ingress.kubernetes.io/satisfy: \"any\", nginx.ingress.kubernetes.io/session-cookie-hash: sha1",
    );
    let (code, out) = check(dir.path());
    assert_eq!(code, 0, "warnings only: {out}");
    assert!(out.contains("Migration from ingress-nginx"), "{out}");
    assert!(out.contains("  Ingress shop/web"), "{out}");
    assert!(out.contains("proxy-body-size = \"8m\": honoured"), "{out}");
    assert!(
        out.contains("use-regex = \"true\": honoured, differs: regexes run"),
        "{out}"
    );
    assert!(out.contains("satisfy = \"any\": not yet"), "{out}");
    assert!(
        out.contains("session-cookie-hash = \"sha1\": obsolete: removed in ingress-nginx 0.24"),
        "{out}"
    );
    // JSON for CI: the same, machine-readable.
    let (code, json) = check_args(dir.path(), &["--format", "json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    let entry = &v["migration"][0];
    assert_eq!(entry["ingress"], "shop/web");
    let statuses: Vec<(String, String)> = entry["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["annotation"].as_str().unwrap().to_string(),
                a["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        statuses.contains(&("satisfy".into(), "not yet".into())),
        "{statuses:?}"
    );
    assert_eq!(v["errors"], 0);
    assert!(v["warnings"].as_u64().unwrap() >= 2, "{v}");
    assert_eq!(v["routes"][0]["host"], "a.example");
}

/// An annotation that guards access and cannot be honoured as written fails closed, and is
/// an error: the check fails.
#[test]
fn an_annotation_that_fails_closed_fails_the_check() {
    let dir = tempfile::tempdir().unwrap();
    migrating(
        dir.path(),
        "nginx.ingress.kubernetes.io/auth-url: auth.example/no-scheme",
    );
    let (code, out) = check_args(dir.path(), &["--format", "json"]);
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["errors"], 1);
    // The migration report says so too, with the reason.
    let entry = &v["migration"][0]["annotations"][0];
    assert_eq!(entry["status"], "error", "{entry}");
    assert!(entry["note"].as_str().unwrap().contains("503"), "{entry}");
}

/// An invalid value is `invalid` in the migration report (not `honoured`), and what
/// ingress-nginx ignores on a canary is `ignored on a canary`.
#[test]
fn the_migration_report_says_what_happens_to_each_value() {
    let dir = tempfile::tempdir().unwrap();
    migrating(
        dir.path(),
        "nginx.ingress.kubernetes.io/proxy-read-timeout: \"60s\", nginx.ingress.kubernetes.io/canary: \"true\", nginx.ingress.kubernetes.io/canary-weight: \"10\", nginx.ingress.kubernetes.io/proxy-body-size: 1k",
    );
    let (_, out) = check_args(dir.path(), &["--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let status = |name: &str| {
        v["migration"][0]["annotations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["annotation"] == name)
            .map(|a| a["status"].as_str().unwrap().to_string())
    };
    assert_eq!(status("canary-weight").as_deref(), Some("honoured"), "{v}");
    assert_eq!(
        status("proxy-body-size").as_deref(),
        Some("ignored on a canary")
    );
    assert_eq!(
        status("proxy-read-timeout").as_deref(),
        Some("invalid"),
        "{v}"
    );
}

/// An annotation ingress-nginx rates above `annotations-risk-level` (default High) is an
/// error in the migration report whatever Portico's support for it, and fails the check.
#[test]
fn an_annotation_above_the_risk_level_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    migrating(
        dir.path(),
        "nginx.ingress.kubernetes.io/stream-snippet: \"x\", nginx.ingress.kubernetes.io/auth-url: \"http://127.0.0.1:1/\"",
    );
    let (code, out) = check_args(dir.path(), &["--format", "json"]);
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let entry = |name: &str| {
        v["migration"][0]["annotations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["annotation"] == name)
            .cloned()
            .unwrap()
    };
    let snippet = entry("stream-snippet");
    assert_eq!(snippet["status"], "error", "{snippet}");
    assert!(
        snippet["note"].as_str().unwrap().contains("Critical"),
        "{snippet}"
    );
    // auth-url (High) is allowed at the default level: its own verdict stands.
    let auth = entry("auth-url");
    assert!(
        !auth["note"]
            .as_str()
            .unwrap()
            .contains("annotations-risk-level"),
        "{auth}"
    );
}
