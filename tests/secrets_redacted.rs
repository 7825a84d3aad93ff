//! No log line, diagnostic or admin page ever shows what a Secret holds. Malformed Secrets
//! (data written as one string, a truncated key, a key of another certificate, the wrong type,
//! junk in a CERTIFICATE block, bad base64, broken YAML, JSON, a List) are read by the built
//! binary, from a manifests directory and from an API server; everything it writes, every admin
//! page and `portico check` are searched for the key material: none of it shows.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use data_encoding::BASE64;
use http::StatusCode;
use serde_json::json;
use support::Backend;
use support::child::Child;
use support::client::{get, h1, https};
use support::fake_api::FakeApi;
use support::manifests::{class, endpoints, ingress_full, prefix, service};
use tokio::time::{sleep, timeout};

/// Every test is bounded.
const LIMIT: Duration = Duration::from_secs(90);

/// Waiting for one thing the child does.
const PATIENCE: Duration = Duration::from_secs(20);

/// A certificate for `names` with its own key, as PEM.
struct Pair {
    crt: String,
    key: String,
}

fn pair(names: &[&str]) -> Pair {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let generated = rcgen::generate_simple_self_signed(names).unwrap();
    Pair {
        crt: generated.cert.pem(),
        key: generated.signing_key.serialize_pem(),
    }
}

/// What must never show: every 40-character piece of the keys' base64 (the PEM bodies, line
/// by line and joined, and the base64 of the whole PEM text as `data:` holds it), and the PEM
/// header words.
struct Secrets {
    needles: Vec<String>,
}

impl Secrets {
    fn of(keys: &[&str]) -> Secrets {
        let mut needles = vec!["PRIVATE KEY".to_string()];
        let mut add_windows = |text: &str| {
            let chars: Vec<char> = text.chars().collect();
            for w in chars.windows(40) {
                needles.push(w.iter().collect());
            }
        };
        for key in keys {
            let body: Vec<&str> = key.lines().filter(|l| !l.starts_with("-----")).collect();
            for line in &body {
                add_windows(line);
            }
            add_windows(&body.concat());
            add_windows(&BASE64.encode(key.as_bytes()));
        }
        Secrets { needles }
    }

    /// Panics naming the first needle found in `haystack`.
    fn assert_absent(&self, what: &str, haystack: &str) {
        if let Some(needle) = self.needles.iter().find(|n| haystack.contains(n.as_str())) {
            let at = haystack.find(needle.as_str()).unwrap();
            let line = haystack[..at].rfind('\n').map_or(0, |n| n + 1);
            let end = haystack[at..].find('\n').map_or(haystack.len(), |n| at + n);
            panic!(
                "{what} shows Secret data ({needle:?}) in:\n{}",
                &haystack[line..end]
            );
        }
    }
}

/// YAML of a Secret in `shop` with these extra top-level lines.
fn secret(name: &str, type_: &str, body: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: shop}}\ntype: {type_}\n{body}"
    )
}

/// A YAML block scalar of `text`, indented for a key at `indent` spaces.
fn block(text: &str, indent: usize) -> String {
    let pad = " ".repeat(indent + 2);
    let lines: String = text.lines().map(|l| format!("{pad}{l}\n")).collect();
    format!("|\n{lines}")
}

/// The malformed Secrets, one per file, each named after what is wrong with it, and the
/// Ingress that uses them (one host per Secret).
fn manifests(backend: SocketAddr, a: &Pair, b: &Pair) -> Vec<(String, String)> {
    let key_lines: Vec<&str> = a.key.lines().collect();
    let truncated_key = format!("{}\n{}\n", key_lines[0], key_lines[1]);
    let junk_crt = a.key.replace("PRIVATE KEY", "CERTIFICATE");
    let secrets = [
        (
            "data-string",
            secret(
                "data-string",
                "kubernetes.io/tls",
                &format!("data: \"{}\"\n", BASE64.encode(a.key.as_bytes())),
            ),
        ),
        (
            "truncated-key",
            secret(
                "truncated-key",
                "kubernetes.io/tls",
                &format!(
                    "stringData:\n  tls.crt: {}  tls.key: {}",
                    block(&a.crt, 2),
                    block(&truncated_key, 2)
                ),
            ),
        ),
        (
            "other-key",
            secret(
                "other-key",
                "kubernetes.io/tls",
                &format!(
                    "stringData:\n  tls.crt: {}  tls.key: {}",
                    block(&a.crt, 2),
                    block(&b.key, 2)
                ),
            ),
        ),
        (
            "wrong-type",
            secret(
                "wrong-type",
                "Opaque",
                &format!(
                    "data:\n  tls.crt: {}\n  tls.key: {}\n",
                    BASE64.encode(a.crt.as_bytes()),
                    BASE64.encode(a.key.as_bytes())
                ),
            ),
        ),
        (
            "junk-crt",
            secret(
                "junk-crt",
                "kubernetes.io/tls",
                &format!(
                    "stringData:\n  tls.crt: {}  tls.key: {}",
                    block(&junk_crt, 2),
                    block(&b.key, 2)
                ),
            ),
        ),
        (
            "bad-base64",
            secret(
                "bad-base64",
                "kubernetes.io/tls",
                &format!(
                    "data:\n  tls.crt: {}\n  tls.key: \"!{}\"\n",
                    BASE64.encode(a.crt.as_bytes()),
                    BASE64.encode(b.key.as_bytes())
                ),
            ),
        ),
        (
            "broken-yaml",
            secret(
                "broken-yaml",
                "kubernetes.io/tls",
                &format!(
                    "stringData:\n  tls.key: \"{}\n  tls.crt: [\n",
                    a.key.replace('\n', "\\n")
                ),
            ),
        ),
        (
            "annotated",
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: annotated\n  namespace: shop\n  annotations:\n    kubectl.kubernetes.io/last-applied-configuration: '{}'\n    count: 5\ntype: kubernetes.io/tls\ndata: {{tls.key: [\"{}\"]}}\n",
                json!({"kind": "Secret", "stringData": {"tls.key": a.key}}),
                BASE64.encode(b.key.as_bytes())
            ),
        ),
        (
            "listed",
            format!(
                "apiVersion: v1\nkind: List\nitems:\n  - apiVersion: v1\n    kind: Secret\n    metadata: {{name: listed, namespace: shop}}\n    type: kubernetes.io/tls\n    data: \"{}\"\n",
                BASE64.encode(b.key.as_bytes())
            ),
        ),
    ];
    let mut files: Vec<(String, String)> = secrets
        .iter()
        .map(|(name, yaml)| (format!("secret-{name}.yaml"), yaml.clone()))
        .collect();
    let json_secret = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "json-string", "namespace": "shop"},
        "data": BASE64.encode(a.key.as_bytes()),
    });
    files.push(("secret-json-string.json".into(), json_secret.to_string()));
    let mut names: Vec<&str> = secrets.iter().map(|(name, _)| *name).collect();
    names.push("json-string");
    let hosts: Vec<String> = names.iter().map(|n| format!("{n}.test")).collect();
    let host_lists: Vec<[&str; 1]> = hosts.iter().map(|h| [h.as_str()]).collect();
    let tls: Vec<(&[&str], &str)> = host_lists
        .iter()
        .zip(&names)
        .map(|(h, n)| (&h[..], *n))
        .collect();
    let rules: Vec<(&str, Vec<_>)> = hosts
        .iter()
        .map(|h| (h.as_str(), vec![prefix("/", "app", 80)]))
        .collect();
    files.push(("class.yaml".into(), class()));
    files.push(("svc.yaml".into(), service("shop", "app", 80)));
    files.push(("eps.yaml".into(), endpoints("shop", "app", &[backend], &[])));
    let no_redirect = "portico.dev/ssl-redirect: \"false\"";
    let ing = ingress_full("shop", "sites", &rules, &tls, no_redirect, None);
    files.push(("ing.yaml".into(), ing));
    files
}

/// Every admin page, as "path: status\nbody".
async fn admin_pages(admin: SocketAddr, hosts: &[&str]) -> String {
    let mut paths = vec![
        "/healthz".to_string(),
        "/readyz".to_string(),
        "/metrics".to_string(),
        "/debug/snapshot".to_string(),
        "/debug/".to_string(),
    ];
    for host in hosts {
        paths.push(format!("/debug/explain?url=https://{host}/"));
    }
    let mut out = String::new();
    for path in paths {
        let reply = h1(admin, get("localhost", &path)).await;
        out.push_str(&format!(
            "{path}: {}\n{}\n",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_never_show_secret_data() {
    timeout(LIMIT, manifests_case()).await.expect("bounded");
}

async fn manifests_case() {
    let backend = Backend::start("app").await;
    let (a, b) = (pair(&["a.test"]), pair(&["b.test"]));
    let secrets = Secrets::of(&[&a.key, &b.key]);
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in manifests(backend.addr, &a, &b) {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    let dir_arg = dir.path().to_str().unwrap();
    let args = [&["--manifests", dir_arg][..], &support::LOOPBACK_LISTENERS].concat();
    let mut child = Child::spawn(&args, "debug");
    let (http, https_addr, admin) = child.listening(PATIENCE);
    child.wait_for("the first snapshot", PATIENCE, |v| {
        v["message"] == "snapshot published"
    });
    let hosts = [
        "data-string.test",
        "truncated-key.test",
        "other-key.test",
        "wrong-type.test",
        "junk-crt.test",
        "bad-base64.test",
        "json-string.test",
    ];
    // Routed, over HTTP and (with the default certificate) HTTPS.
    for host in hosts {
        let reply = h1(http, get(host, "/")).await;
        assert_eq!(reply.status, StatusCode::OK, "{host}");
        let (reply, _) = https(https_addr, Some(host), &["http/1.1"], host, "/").await;
        assert_eq!(reply.status, StatusCode::OK, "{host} over HTTPS");
    }
    let pages = admin_pages(admin, &hosts).await;
    let output = child.stop(PATIENCE).join("\n");
    // The problems are reported, located, without their values.
    for name in [
        "data-string",
        "listed",
        "json-string",
        "annotated",
        "broken-yaml",
    ] {
        let file = format!("secret-{name}");
        assert!(
            output.contains(&file),
            "no problem reported for {file}:\n{output}"
        );
    }
    assert!(
        pages.contains("does not match the certificate"),
        "the diagnostics are in /debug/snapshot:\n{pages}"
    );
    secrets.assert_absent("the log", &output);
    secrets.assert_absent("the admin pages", &pages);
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["check", "--manifests", dir_arg])
        .output()
        .expect("run portico check");
    let check = format!(
        "{}\n{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    // Located and named, without the values.
    for expected in [
        "secret-data-string.yaml: document 1, line 5, column 1: Secret does not match its schema: data: expected a mapping of keys to base64 strings, found a string",
        "secret-bad-base64.yaml: document 1, line 7, column 3: Secret does not match its schema: data.tls.key: not valid base64",
        "Secret shop/truncated-key: tls.key: a PEM block has no END line",
        "Secret shop/wrong-type: the Secret's type is Opaque, not kubernetes.io/tls",
    ] {
        assert!(check.contains(expected), "{expected:?} in:\n{check}");
    }
    secrets.assert_absent("portico check", &check);
}

/// A Secret the API server lists with `data` as one string: the list cannot be decoded; the
/// watcher's error, kube-rs's own log lines and everything else stay free of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_never_shows_secret_data() {
    timeout(LIMIT, cluster_case()).await.expect("bounded");
}

async fn cluster_case() {
    let api = FakeApi::start().await;
    let a = pair(&["a.test"]);
    let secrets = Secrets::of(&[&a.key]);
    api.apply_yaml(&class());
    api.apply(json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "data-string", "namespace": "shop"},
        "data": BASE64.encode(a.key.as_bytes()),
    }));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.kubeconfig(dir.path());
    let kubeconfig = kubeconfig.to_str().unwrap();
    // The child talks to the fake API server served by this runtime: wait on a thread.
    let output = tokio::task::spawn_blocking({
        let kubeconfig = kubeconfig.to_string();
        move || {
            let source = ["--kubeconfig", &kubeconfig, "--pod-namespace", "portico"];
            let args = [&source[..], &support::LOOPBACK_LISTENERS].concat();
            let mut child = Child::spawn(&args, "debug");
            child.wait_for("a failed Secret watch", PATIENCE, |v| {
                v["kind"] == "Secret" && v["message"].as_str().is_some_and(|m| m.contains("watch"))
            });
            // Let the watcher retry once or twice.
            child.read_for(Duration::from_secs(2));
            child.stop(PATIENCE).join("\n")
        }
    })
    .await
    .unwrap();
    sleep(Duration::from_millis(10)).await;
    secrets.assert_absent("the log", &output);
}
