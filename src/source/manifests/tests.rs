//! Tests of manifest parsing, and helpers shared with the directory and watcher tests.

use std::fs;
use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::source::{Kind, ObjectKey};

pub(super) fn service(name: &str, port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  ports:\n  - port: {port}\n"
    )
}

pub(super) fn ingress(name: &str, host: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: web\nspec:\n  rules:\n  - host: {host}\n"
    )
}

const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\n";

pub(super) fn svc_key(name: &str) -> ObjectKey {
    ObjectKey::new(Kind::Service, "default", name)
}

/// Writes a file, creating its directories.
pub(super) fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, text).unwrap();
}

pub(super) fn keys(objects: &[Object]) -> Vec<ObjectKey> {
    objects.iter().map(Object::key).collect()
}

fn parse_as(name: &str, text: &str) -> FileParse {
    parse_file(Path::new(name), text)
}

pub(super) fn port(object: &Object) -> Option<i32> {
    match object {
        Object::Service(s) => Some(s.spec.as_ref()?.ports.as_ref()?.first()?.port),
        _ => None,
    }
}

#[test]
fn syntax_error_in_second_document_is_located_in_the_file() {
    let text = format!(
        "{}---\n{}  labels: {{a: [1, 2}}\n",
        service("a", 80),
        service("b", 81)
    );
    let parse = parse_as("x.yaml", &text);
    assert!(parse.broken);
    assert_eq!(parse.problems.len(), 1, "{:?}", parse.problems);
    let problem = &parse.problems[0];
    assert!(problem.is_error());
    assert_eq!(problem.document, Some(2));
    // Document 2 starts at line 8 (its `---`); the bad flow mapping is its line 9, i.e. line 16.
    assert_eq!(problem.line, Some(16), "{problem}");
    assert!(problem.column.is_some(), "{problem}");
    assert!(
        problem
            .to_string()
            .starts_with("x.yaml: document 2, line 16, column ")
    );
}

#[test]
fn lists_are_expanded() {
    let text = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Service, metadata: {name: a}}\n- apiVersion: networking.k8s.io/v1\n  kind: Ingress\n  metadata: {name: i, namespace: web}\n---\nkind: ServiceList\napiVersion: v1\nitems: [{apiVersion: v1, kind: Service, metadata: {name: b}}]\n";
    let parse = parse_as("list.yaml", text);
    assert!(
        !parse.broken && parse.problems.is_empty(),
        "{:?}",
        parse.problems
    );
    let want = vec![
        ObjectKey::new(Kind::Ingress, "web", "i"),
        svc_key("a"),
        svc_key("b"),
    ];
    assert_eq!(keys(&parse.objects), want);
}

/// Items are decoded as they are read (see `parse::document`): the result must not depend on
/// where `kind` stands, and `items` in a document that is not a List means nothing.
#[test]
fn lists_decode_whatever_the_field_order() {
    let items = r#"[{"apiVersion":"v1","kind":"Service","metadata":{"name":"a"}}]"#;
    let late = format!(r#"{{"items":{items},"apiVersion":"v1","kind":"List"}}"#);
    assert_eq!(keys(&parse_as("l.json", &late).objects), vec![svc_key("a")]);
    let not_list = format!(
        r#"{{"items":{items},"apiVersion":"v1","kind":"Service","metadata":{{"name":"s"}}}}"#
    );
    let parse = parse_as("s.json", &not_list);
    assert!(
        !parse.broken && parse.problems.is_empty(),
        "{:?}",
        parse.problems
    );
    assert_eq!(keys(&parse.objects), vec![svc_key("s")]);
    let not_array = r#"{"apiVersion":"v1","kind":"List","items":{"a":1}}"#;
    let parse = parse_as("m.json", not_array);
    assert!(
        parse.objects.is_empty() && !parse.broken,
        "not a List: a kind not read"
    );
    assert!(
        parse.problems[0].reason.contains("\"List\""),
        "{:?}",
        parse.problems
    );
    for scalar in ["3", "\"text\"", "null", "[1, 2]"] {
        let parse = parse_as("x.json", scalar);
        assert_eq!(
            parse.problems[0].reason, "the document is not a mapping",
            "{scalar}"
        );
    }
}

#[test]
fn list_items_are_checked_like_documents() {
    let text = "kind: List\napiVersion: v1\nitems:\n- {apiVersion: apps/v1, kind: Deployment, metadata: {name: d}}\n- {apiVersion: v1, kind: Service, metadata: {}}\n";
    let parse = parse_as("list.yaml", text);
    assert!(parse.broken);
    let reasons: Vec<_> = parse.problems.iter().map(|p| p.reason.as_str()).collect();
    assert!(
        reasons[0].starts_with("items[0]: kind \"Deployment\""),
        "{reasons:?}"
    );
    assert_eq!(reasons[1], "items[1]: metadata.name is missing");
}

#[test]
fn json_objects_and_syntax_errors() {
    let good = r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "j"}}
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "k"}}"#;
    let parse = parse_as("s.json", good);
    assert!(
        !parse.broken && parse.problems.is_empty(),
        "{:?}",
        parse.problems
    );
    assert_eq!(keys(&parse.objects), vec![svc_key("j"), svc_key("k")]);

    let bad = "{\n  \"apiVersion\": \"v1\",\n  \"kind\": \"Service\"\n  \"metadata\": {}\n}\n";
    let parse = parse_as("bad.json", bad);
    assert!(parse.broken);
    let problem = &parse.problems[0];
    assert_eq!(
        (problem.document, problem.line, problem.column),
        (Some(1), Some(4), Some(3))
    );
    assert_eq!(
        problem.to_string(),
        "bad.json: document 1, line 4, column 3: expected `,` or `}`"
    );
    // A `.json` file is JSON, even when the text would be YAML.
    assert!(parse_file(Path::new("y.json"), &service("a", 80)).broken);
}

#[test]
fn empty_and_comment_only_documents_are_skipped() {
    let text = format!(
        "# header\n---\n# only a comment\n---\n\n---\n{}---\n...\n---\n",
        service("a", 80)
    );
    let parse = parse_as("e.yaml", &text);
    assert!(
        !parse.broken && parse.problems.is_empty(),
        "{:?}",
        parse.problems
    );
    assert_eq!(keys(&parse.objects), vec![svc_key("a")]);
    for text in ["", "\n\n", "# nothing\n", "---\n", "\u{feff}---\n~\n"] {
        assert_eq!(parse_as("e.yaml", text), FileParse::default(), "{text:?}");
    }
    // Empty documents still count in the numbering.
    let parse = parse_as("e.yaml", &format!("---\n# c\n---\n{DEPLOYMENT}"));
    assert_eq!(parse.problems[0].document, Some(2));
}

#[test]
fn unsupported_kinds_are_reported_and_the_rest_is_used() {
    let text = format!("{DEPLOYMENT}---\n{}", service("a", 80));
    let parse = parse_as("d.yaml", &text);
    assert!(!parse.broken);
    assert_eq!(keys(&parse.objects), vec![svc_key("a")]);
    assert_eq!(parse.problems.len(), 1);
    assert!(!parse.problems[0].is_error(), "a warning");
    let shown = parse.problems[0].to_string();
    assert!(
        shown.starts_with("d.yaml: document 1: kind \"Deployment\""),
        "{shown}"
    );
}

#[test]
fn schema_errors_and_malformed_documents_break_the_file() {
    let bad_schema = service("b", 80).replace("port: 80", "port: nope");
    for (text, reason) in [
        (bad_schema.as_str(), "Service does not match its schema"),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {}\n",
            "metadata.name is missing",
        ),
        ("just a string\n", "the document is not a mapping"),
        ("- a\n- b\n", "the document is not a mapping"),
        (
            "metadata: {name: x}\n",
            "apiVersion is missing or not a string",
        ),
        (
            "apiVersion: v1\nkind: [Service]\n",
            "kind is missing or not a string",
        ),
    ] {
        let parse = parse_as("b.yaml", &format!("{}---\n{text}", service("a", 80)));
        assert!(parse.broken, "{text}");
        assert_eq!(parse.problems.len(), 1, "{text}: {:?}", parse.problems);
        assert_eq!(parse.problems[0].document, Some(2));
        assert!(
            parse.problems[0].reason.contains(reason),
            "{:?}",
            parse.problems
        );
    }
}

#[test]
fn namespaces_default_and_cluster_scope() {
    let text = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: portico}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: other}\n";
    let parse = parse_as("n.yaml", text);
    assert!(parse.problems.is_empty(), "{:?}", parse.problems);
    let want = vec![
        ObjectKey::new(Kind::IngressClass, "", "portico"),
        ObjectKey::new(Kind::Service, "default", "s"),
        ObjectKey::new(Kind::Service, "other", "s"),
    ];
    assert_eq!(keys(&parse.objects), want);
    assert_eq!(
        parse.objects[1].metadata().namespace.as_deref(),
        Some("default")
    );
}

#[test]
fn a_key_twice_in_one_file_keeps_the_later() {
    let text = format!("{}---\n{}", service("a", 80), service("a", 81));
    let parse = parse_as("t.yaml", &text);
    assert!(!parse.broken);
    assert_eq!(parse.objects.len(), 1);
    assert_eq!(port(&parse.objects[0]), Some(81));
    assert!(!parse.problems[0].is_error());
    assert_eq!(
        parse.problems[0].to_string(),
        "t.yaml: document 2: Service default/a is also defined in document 1; this definition wins"
    );
}

#[test]
fn problems_display_and_escape() {
    let p = ManifestProblem::error(
        Path::new("d/x.yaml"),
        Some(2),
        Some((14, 3)),
        "bad\u{1b}[31m",
    );
    assert_eq!(
        p.to_string(),
        "d/x.yaml: document 2, line 14, column 3: bad\\u{1b}[31m"
    );
    assert!(p.is_error());
    let p = ManifestProblem::warning(Path::new("d"), None, None, "gone");
    assert_eq!(p.to_string(), "d: gone");
    assert!(!p.is_error());
}

proptest! {
    #[test]
    fn parsing_never_panics(text in "[-a-zA-Z0-9:{}\\[\\],'\" \n\t#&*!|>.~%?@`\\\\]{0,300}") {
        let yaml = parse_file(Path::new("p.yaml"), &text);
        let json = parse_file(Path::new("p.json"), &text);
        for problem in yaml.problems.iter().chain(&json.problems) {
            prop_assert!(problem.line.is_none_or(|l| l >= 1 && l <= text.lines().count() + 1));
        }
    }
}

/// A Secret that does not decode: the field and its line, never the value; a syntax error in
/// a Secret is scrubbed.
#[test]
fn secret_problems_locate_the_field_and_hide_the_value() {
    let key = "LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0tCk1JR0hBZ0VBTUJNR0J5cUdTTTQ5";
    let head = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ntype: kubernetes.io/tls\n";
    let cases = [
        (
            format!("{head}data: \"{key}\"\n"),
            (6, 1),
            "data: expected a mapping",
        ),
        (
            format!("{head}data:\n  # the key\n  tls.crt: \"\"\n  \"tls.key\": \"!{key}\"\n"),
            (9, 3),
            "data.tls.key: not valid base64",
        ),
        (
            format!("{head}data: {{tls.key: \"!{key}\"}}\n"),
            (6, 1),
            "data.tls.key: not valid base64",
        ),
        (
            format!("{head}stringData: [\"{key}\"]\n"),
            (6, 1),
            "stringData: expected a mapping of strings, found a list",
        ),
    ];
    for (text, (line, column), reason) in cases {
        let parse = parse_as("s.yaml", &format!("---\n{text}"));
        assert!(parse.broken, "{text}");
        let problem = &parse.problems[0];
        assert_eq!(
            (problem.line, problem.column),
            (Some(line), Some(column)),
            "{problem}"
        );
        assert!(problem.reason.contains(reason), "{problem}");
        assert!(!problem.to_string().contains(&key[..40]), "{problem}");
    }
    let json = format!(
        r#"{{"apiVersion": "v1", "kind": "Secret", "metadata": {{"name": "s"}}, "data": "{key}"}}"#
    );
    let parse = parse_as("s.json", &json);
    assert!(
        parse.problems[0]
            .reason
            .contains("data: expected a mapping"),
        "{:?}",
        parse.problems
    );
    assert!(!parse.problems[0].reason.contains(&key[..40]));
    let broken = format!("{head}stringData: {{tls.key: \"{key}\n");
    let parse = parse_as("s.yaml", &broken);
    assert!(parse.broken);
    assert!(
        !parse.problems[0].reason.contains(&key[..40]),
        "{:?}",
        parse.problems
    );
}
