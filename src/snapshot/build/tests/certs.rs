//! Certificates by SNI.

use super::*;

const RSA_CRT: &str = include_str!("../../../../tests/fixtures/tls/rsa-pkcs1.crt");
const RSA_KEY: &str = include_str!("../../../../tests/fixtures/tls/rsa-pkcs1.key");
const EC_CRT: &str = include_str!("../../../../tests/fixtures/tls/ec-sec1.crt");
const EC_KEY: &str = include_str!("../../../../tests/fixtures/tls/ec-sec1.key");
const CN_CRT: &str = include_str!("../../../../tests/fixtures/tls/cn-only.crt");
const CN_KEY: &str = include_str!("../../../../tests/fixtures/tls/cn-only.key");

fn secret(name: &str, crt: &str, key: &str) -> Object {
    obj(json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": "default"},
        "stringData": {"tls.crt": crt, "tls.key": key}
    }))
}

/// A PKCS#8 (ECDSA) certificate for these names, made now.
fn pkcs8(names: &[&str]) -> (String, String) {
    let generated =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    (generated.cert.pem(), generated.signing_key.serialize_pem())
}

fn tls_ing(name: &str, tls: Value, hosts: &[&str]) -> Object {
    let rules: Vec<Value> = hosts
        .iter()
        .map(|h| rule(h, &[("/", "Prefix", "s", 80)]))
        .collect();
    ing(name, json!({"tls": tls, "rules": rules}))
}

/// The first DNS name of the certificate served for this SNI.
fn served_cert(built: &Built, sni: Option<&str>) -> Vec<u8> {
    built.snapshot.certs.resolve(sni).cert[0].to_vec()
}

fn der_of(pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[test]
fn exact_wildcard_and_default() {
    let (p8_crt, p8_key) = pkcs8(&["p8.example.com"]);
    let built = build_of(vec![
        our_class(),
        svc("s"),
        secret("rsa", RSA_CRT, RSA_KEY),
        secret("ec", EC_CRT, EC_KEY),
        secret("p8", &p8_crt, &p8_key),
        tls_ing(
            "a",
            json!([{"hosts": ["rsa.example.com"], "secretName": "rsa"},
                            {"hosts": ["*.ec.example.com", "ec.example.com"], "secretName": "ec"},
                            {"hosts": ["p8.example.com"], "secretName": "p8"}]),
            &["rsa.example.com", "p8.example.com"],
        ),
    ]);
    assert_eq!(errors(&built), 0, "{:?}", built.diagnostics);
    assert_eq!(
        served_cert(&built, Some("rsa.example.com")),
        der_of(RSA_CRT),
        "PKCS#1 RSA key"
    );
    assert_eq!(
        served_cert(&built, Some("RSA.example.com")),
        der_of(RSA_CRT),
        "SNI is case-insensitive"
    );
    assert_eq!(
        served_cert(&built, Some("ec.example.com")),
        der_of(EC_CRT),
        "SEC1 EC key"
    );
    assert_eq!(
        served_cert(&built, Some("x.ec.example.com")),
        der_of(EC_CRT),
        "wildcard"
    );
    assert_eq!(
        served_cert(&built, Some("p8.example.com")),
        der_of(&p8_crt),
        "PKCS#8 key"
    );
    let fallback = fallback().cert[0].to_vec();
    assert_eq!(
        served_cert(&built, Some("y.x.ec.example.com")),
        fallback,
        "wildcards match one label"
    );
    assert_eq!(served_cert(&built, Some("unknown.com")), fallback);
    assert_eq!(served_cert(&built, None), fallback, "no SNI");
}

#[test]
fn legacy_cn_only_certificate_covers_its_wildcard() {
    // The myblog tutorial's certificate: `-subj "/CN=*.devops.cn/O=ingress-nginx"`, no SAN.
    let built = build_of(vec![
        our_class(),
        svc("s"),
        secret("https-secret", CN_CRT, CN_KEY),
        tls_ing(
            "myblog-tls",
            json!([{"hosts": ["myblog.devops.cn"], "secretName": "https-secret"}]),
            &["myblog.devops.cn"],
        ),
    ]);
    assert_eq!(errors(&built), 0, "{:?}", built.diagnostics);
    assert_eq!(
        served_cert(&built, Some("myblog.devops.cn")),
        der_of(CN_CRT)
    );
}

#[test]
fn broken_tls_keeps_routing_with_the_default_certificate() {
    let (other_crt, other_key) = pkcs8(&["other.com"]);
    let mut wrong_type = secret("opaque", RSA_CRT, RSA_KEY);
    if let Object::Secret(s) = &mut wrong_type {
        Arc::make_mut(s).type_ = Some("Opaque".into());
    }
    let built = build_of(vec![
        our_class(),
        svc("s"),
        secret("mismatch", RSA_CRT, EC_KEY),
        secret("garbage", "not pem", "not pem"),
        secret("other", &other_crt, &other_key),
        wrong_type,
        tls_ing(
            "t",
            json!([
                {"hosts": ["a.com"], "secretName": "missing"},
                {"hosts": ["b.com"], "secretName": "mismatch"},
                {"hosts": ["c.com"], "secretName": "garbage"},
                {"hosts": ["d.com"], "secretName": "other"},
                {"hosts": ["e.com"], "secretName": "opaque"},
            ]),
            &["a.com", "b.com", "c.com", "d.com", "e.com"],
        ),
    ]);
    let fallback = fallback().cert[0].to_vec();
    for (i, host, reason) in [
        (0, "a.com", "Secret default/missing: not found"),
        (
            1,
            "b.com",
            "Secret default/mismatch: tls.key: does not match the certificate",
        ),
        (
            2,
            "c.com",
            "Secret default/garbage: tls.crt holds no PEM CERTIFICATE",
        ),
        (3, "d.com", "does not cover d.com"),
        (4, "e.com", "type is Opaque, not kubernetes.io/tls"),
    ] {
        assert_eq!(served(&built, host, "/"), "s:80", "{host} keeps routing");
        assert_eq!(
            served_cert(&built, Some(host)),
            fallback,
            "{host} gets the default certificate"
        );
        let found = built
            .diagnostics
            .iter()
            .any(|d| d.field.starts_with(&format!("spec.tls[{i}]")) && d.reason.contains(reason));
        assert!(found, "{reason} in {:?}", built.diagnostics);
    }
}

#[test]
fn configured_default_certificate() {
    let mut config = config();
    config.default_certificate = Some(("default".into(), "rsa".into()));
    let built = build_with(&config, vec![secret("rsa", RSA_CRT, RSA_KEY)]);
    assert_eq!(served_cert(&built, None), der_of(RSA_CRT));
    // Its Secret and validity are known (for the expiry metric and warnings), as host "*".
    let served = crate::snapshot::certs::expiry::served(&built.snapshot.certs);
    let hosts: Vec<(&str, &str)> = served
        .iter()
        .map(|s| (s.secret.name.as_str(), s.host.as_str()))
        .collect();
    assert_eq!(hosts, [("rsa", "*")]);
    config.default_certificate = Some(("default".into(), "nope".into()));
    let built = build_with(&config, vec![]);
    assert_eq!(served_cert(&built, None), fallback().cert[0].to_vec());
    assert_eq!(diags(&built, "--default-ssl-certificate").len(), 1);
    let served = crate::snapshot::certs::expiry::served(&built.snapshot.certs);
    assert!(served.is_empty(), "the self-signed fallback is not listed");
}

#[test]
fn oldest_ingress_keeps_a_host_certificate() {
    let (one_crt, one_key) = pkcs8(&["h.com"]);
    let (two_crt, two_key) = pkcs8(&["h.com"]);
    let built = build_of(vec![
        our_class(),
        svc("s"),
        secret("one", &one_crt, &one_key),
        secret("two", &two_crt, &two_key),
        tls_ing(
            "b",
            json!([{"hosts": ["h.com"], "secretName": "two"}]),
            &["h.com"],
        ),
        tls_ing("a", json!([{"hosts": ["h.com"], "secretName": "one"}]), &[]),
    ]);
    assert_eq!(served_cert(&built, Some("h.com")), der_of(&one_crt));
    assert_eq!(
        diags(&built, "already has the certificate of Secret default/one").len(),
        1
    );
}
