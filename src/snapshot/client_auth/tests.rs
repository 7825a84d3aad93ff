use proptest::prelude::*;

use super::*;

fn ca_pem(name: &str) -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), rcgen::Issuer::new(params, key))
}

fn leaf(
    issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
    dn: &[(rcgen::DnType, &str)],
    ca: bool,
) -> (
    CertificateDer<'static>,
    rcgen::Issuer<'static, rcgen::KeyPair>,
) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    for (t, v) in dn {
        params.distinguished_name.push(t.clone(), *v);
    }
    if ca {
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    } else {
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    }
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.der().clone(), rcgen::Issuer::new(params, key))
}

fn auth(pem: &str, verify: Verify, depth: u8) -> ClientAuth {
    ClientAuth::new(
        "shop/ca",
        pem.as_bytes(),
        (verify, depth, false),
        None,
        None,
    )
    .unwrap()
}

#[test]
fn chains_verify_within_the_depth() {
    let (pem, root) = ca_pem("Root");
    let (direct, _) = leaf(&root, &[(rcgen::DnType::CommonName, "direct")], false);
    let (mid, mid_issuer) = leaf(&root, &[(rcgen::DnType::CommonName, "Intermediate")], true);
    let (below, _) = leaf(&mid_issuer, &[(rcgen::DnType::CommonName, "below")], false);
    let depth1 = auth(&pem, Verify::On, 1);
    assert_eq!(
        depth1.check(Some(std::slice::from_ref(&direct))),
        Verification::Success
    );
    assert_eq!(depth1.check(None), Verification::None);
    assert_eq!(depth1.check(Some(&[])), Verification::None);
    // One intermediate: depth 1 (nginx's default) takes it, as OpenSSL's
    // `verify -verify_depth 1` does; depth 0 takes a client the CA signed itself, only.
    let chain = [below.clone(), mid.clone()];
    let depth0 = auth(&pem, Verify::On, 0);
    assert!(matches!(
        depth0.check(Some(&chain)),
        Verification::Failed(_)
    ));
    assert_eq!(
        depth0.check(Some(std::slice::from_ref(&direct))),
        Verification::Success
    );
    assert_eq!(depth1.check(Some(&chain)), Verification::Success);
    // Without the intermediate: unknown issuer.
    assert_eq!(
        auth(&pem, Verify::On, 2).check(Some(&[below])),
        Verification::Failed("unable to get local issuer certificate".into())
    );
    // Another CA's certificate fails.
    let (_, other) = ca_pem("Other");
    let (foreign, _) = leaf(&other, &[(rcgen::DnType::CommonName, "x")], false);
    assert!(matches!(
        depth1.check(Some(&[foreign])),
        Verification::Failed(_)
    ));
    // Garbage instead of a certificate fails, without a panic.
    let junk = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
    assert!(matches!(
        depth1.check(Some(&[junk])),
        Verification::Failed(_)
    ));
}

#[test]
fn names_are_printed_as_openssl_rfc2253() {
    let (_, root) = ca_pem("Root CA");
    let (der, _) = leaf(
        &root,
        &[
            (rcgen::DnType::CountryName, "DE"),
            (rcgen::DnType::OrganizationName, "Acme, Inc."),
            (rcgen::DnType::CommonName, "#client+1 "),
        ],
        false,
    );
    let names = CertNames::of(&der).unwrap();
    // The last RDN of the certificate first (OpenSSL's RFC 2253 order).
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der).unwrap();
    let forward: Vec<String> = cert
        .subject()
        .iter_rdn()
        .map(|rdn| {
            let atv = rdn.iter().next().unwrap();
            let abbrev = x509_parser::objects::oid2abbrev(
                atv.attr_type(),
                x509_parser::objects::oid_registry(),
            )
            .unwrap();
            let value = match abbrev {
                "CN" => "\\#client\\+1\\ ",
                "O" => "Acme\\, Inc.",
                _ => "DE",
            };
            format!("{abbrev}={value}")
        })
        .collect();
    assert_eq!(forward.len(), 3);
    let reversed: Vec<String> = forward.into_iter().rev().collect();
    assert_eq!(names.subject, reversed.join(","));
    assert_eq!(names.issuer, "CN=Root CA");
    let (der, _) = leaf(
        &root,
        &[(rcgen::DnType::CommonName, "Jürgen\r\nX: y")],
        false,
    );
    let names = CertNames::of(&der).unwrap();
    assert_eq!(names.subject, "CN=J\\C3\\BCrgen\\0D\\0AX: y");
    assert!(http::HeaderValue::from_str(&names.subject).is_ok());
    assert!(CertNames::of(b"not der").is_none());
}

#[test]
fn ca_files_are_checked() {
    let (pem, _) = ca_pem("Root");
    assert!(ClientAuth::new("a/b", b"", (Verify::On, 1, false), None, None).is_err());
    assert!(ClientAuth::new("a/b", b"garbage", (Verify::On, 1, false), None, None).is_err());
    let bad = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    assert!(ClientAuth::new("a/b", bad.as_bytes(), (Verify::On, 1, false), None, None).is_err());
    let two = format!("{pem}{pem}");
    let a = ClientAuth::new("a/b", two.as_bytes(), (Verify::On, 1, false), None, None).unwrap();
    assert_eq!(a.subjects.len(), 2);
    let err = ClientAuth::new(
        "a/b",
        pem.as_bytes(),
        (Verify::On, 1, false),
        None,
        Some("("),
    )
    .unwrap_err();
    assert!(err.contains("auth-tls-match-cn"), "{err}");
    assert!(
        ClientAuth::new(
            "a/b",
            pem.as_bytes(),
            (Verify::On, 1, false),
            None,
            Some(&"a".repeat(5000))
        )
        .is_err()
    );
}

#[test]
fn the_table_finds_exact_then_wildcard_hosts() {
    let (pem, _) = ca_pem("Root");
    let a = Arc::new(auth(&pem, Verify::On, 1));
    let mut t = ClientAuthTable::default();
    assert!(t.get("a.example").is_none());
    t.0.insert("a.example".into(), Arc::clone(&a));
    t.0.insert("*.wild.example".into(), Arc::clone(&a));
    assert!(t.get("a.example").is_some());
    assert!(t.get("A.Example.").is_some());
    assert!(t.get("x.wild.example").is_some());
    assert!(t.get("wild.example").is_none());
    assert!(t.get("x.y.wild.example").is_none());
    assert!(t.get("b.example").is_none());
}

#[test]
fn escaped_pem_is_a_uri_component() {
    let out = escaped_pem(&[0xff; 100]);
    assert!(out.starts_with("-----BEGIN%20CERTIFICATE-----%0A"));
    assert!(
        out.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b))
    );
}

proptest! {
    /// Any bytes as a certificate chain: a verdict, never a panic.
    #[test]
    fn any_chain_gets_a_verdict(chain in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..4)) {
        static PEM: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let pem = PEM.get_or_init(|| ca_pem("Root").0);
        let a = auth(pem, Verify::On, 3);
        let chain: Vec<CertificateDer<'static>> = chain.into_iter().map(CertificateDer::from).collect();
        let v = a.check(Some(&chain));
        prop_assert!(v != Verification::Success);
        for c in &chain {
            let _ = CertNames::of(c);
        }
    }
}
