use serde_json::json;

use super::*;

const KEY_B64: &str =
    "LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0tCk1JR0hBZ0VBTUJNR0J5cUdTTTQ5QWdFR0NDcUdTTTQ5";

#[test]
fn scrub_hides_quoted_values_pem_and_long_base64() {
    let cases = [
        (
            "invalid type: string \"LS0t\\\"x\", expected a map",
            "invalid type: string \"[hidden]\", expected a map",
        ),
        ("empty \"\" stays", "empty \"\" stays"),
        ("unterminated \"abc", "unterminated \"[hidden]\""),
        (
            "a -----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY----- b",
            "a [PEM block hidden] b",
        ),
        (
            "cut -----BEGIN RSA PRIVATE KEY-----\nMIIE",
            "cut [PEM block hidden]",
        ),
        ("lone -----END PRIVATE KEY----- end", "lone [hidden] end"),
        (
            "Invalid symbol 45, offset 0.",
            "Invalid symbol 45, offset 0.",
        ),
        (
            "names like data.tls.key stay",
            "names like data.tls.key stay",
        ),
        ("é ü and ✓ stay", "é ü and ✓ stay"),
    ];
    for (input, want) in cases {
        assert_eq!(scrub(input), want, "{input:?}");
    }
    let long = format!("decode {KEY_B64} failed");
    assert_eq!(scrub(&long), "decode [hidden] failed");
    // Debug-escaped line breaks do not split a PEM body into short runs.
    let escaped = format!("line: {}\\n{}", &KEY_B64[..64], &KEY_B64[..50]);
    assert_eq!(scrub(&escaped), "line: [hidden]\\[hidden]");
    assert!(matches!(scrub("nothing to hide"), Cow::Borrowed(_)));
}

#[test]
fn short_value_is_scrubbed_and_bounded() {
    assert_eq!(short_value("Opaque"), "Opaque");
    assert_eq!(short_value(KEY_B64), "[hidden]");
    let long = "kubernetes.io/".repeat(10);
    assert_eq!(short_value(&long).chars().count(), 64);
}

#[test]
fn secret_schema_errors_name_the_field_not_the_value() {
    let secret = |body: serde_json::Value| {
        let mut v = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}});
        v.as_object_mut()
            .unwrap()
            .extend(body.as_object().unwrap().clone());
        v
    };
    let cases = [
        (
            json!({"data": KEY_B64}),
            "data",
            "expected a mapping of keys to base64 strings, found a string",
        ),
        (
            json!({"data": {"tls.key": 5}}),
            "data.tls.key",
            "expected a base64 string, found a number",
        ),
        (
            json!({"data": {"tls.key": format!("!{KEY_B64}")}}),
            "data.tls.key",
            "not valid base64",
        ),
        (
            json!({"stringData": [KEY_B64]}),
            "stringData",
            "expected a mapping of strings, found a list",
        ),
        (
            json!({"stringData": {"tls.key": {"a": KEY_B64}}}),
            "stringData.tls.key",
            "expected a string, found a mapping",
        ),
        (
            json!({"type": [1]}),
            "type",
            "expected a string, found a list",
        ),
        (
            json!({"immutable": "yes"}),
            "immutable",
            "expected a boolean, found a string",
        ),
        (
            json!({"metadata": {"name": "s", "annotations": {"last-applied": KEY_B64, "n": 5}}}),
            "metadata.annotations.n",
            "expected a string, found a number",
        ),
        (
            json!({"metadata": {"name": "s", "finalizers": KEY_B64}}),
            "metadata",
            "does not match ObjectMeta",
        ),
    ];
    for (body, field, reason) in cases {
        let value = secret(body);
        let (found, text) =
            secret_schema_error(&value, &format!("invalid type: string \"{KEY_B64}\""));
        assert_eq!(found.as_deref(), Some(field), "{value}");
        assert!(text.starts_with(&format!("{field}: {reason}")), "{text}");
        assert!(!text.contains(&KEY_B64[..40]), "{text}");
    }
    let (found, text) = secret_schema_error(&secret(json!({})), &format!("odd \"{KEY_B64}\""));
    assert_eq!(found, None);
    assert_eq!(text, "odd \"[hidden]\" (Secret values are not shown)");
}

#[test]
fn the_log_filter_drops_the_quoting_targets() {
    use tracing::Level;
    use tracing::callsite::Identifier;
    use tracing::metadata::Kind;
    struct Site;
    impl tracing::Callsite for Site {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &tracing::Metadata<'_> {
            unreachable!()
        }
    }
    static SITE: Site = Site;
    let meta = |target: &'static str| {
        tracing::Metadata::new(
            "e",
            target,
            Level::WARN,
            None,
            None,
            None,
            tracing::field::FieldSet::new(&[], Identifier(&SITE)),
            Kind::EVENT,
        )
    };
    assert!(!logged(&meta("kube_client::client")));
    assert!(!logged(&meta("kube_runtime::watcher")));
    assert!(logged(&meta("kube_client::client::builder")));
    assert!(logged(&meta("portico::controller")));
}
