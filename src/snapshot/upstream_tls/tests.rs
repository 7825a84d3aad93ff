use proptest::prelude::*;

use super::*;

type Issuer = rcgen::Issuer<'static, rcgen::KeyPair>;

fn ca(name: &str) -> (String, Issuer) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), rcgen::Issuer::new(params, key))
}

fn intermediate(issuer: &Issuer, name: &str) -> (CertificateDer<'static>, Issuer) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.der().clone(), rcgen::Issuer::new(params, key))
}

/// A server certificate for `names`, its PEM and its key's PEM.
fn server(issuer: &Issuer, names: &[&str]) -> (CertificateDer<'static>, String, String) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let params = rcgen::CertificateParams::new(names).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.der().clone(), cert.pem(), key.serialize_pem())
}

fn verifying(ca_pem: &str, name: &str, depth: u8) -> UpstreamTls {
    let secret = SecretTls {
        source: "shop/backend-ca",
        ca: Some(ca_pem.as_bytes()),
        ..SecretTls::default()
    };
    UpstreamTls::new(Some(secret), Some(depth), name, false, Versions::BOTH).unwrap()
}

#[test]
fn protocols_are_read_as_nginx_writes_them() {
    let (v, dropped) = Versions::parse("TLSv1.2 TLSv1.3").unwrap();
    assert_eq!(v, Versions::BOTH);
    assert!(dropped.is_empty());
    let (v, dropped) = Versions::parse("TLSv1 TLSv1.1 TLSv1.2").unwrap();
    assert_eq!((v.tls12, v.tls13), (true, false));
    assert_eq!(dropped, ["TLSv1", "TLSv1.1"]);
    let (v, dropped) = Versions::parse("SSLv3").unwrap();
    assert!(!v.any());
    assert_eq!(dropped, ["SSLv3"]);
    assert!(Versions::parse("TLSv1.2 tlsv1.3").is_none());
    assert!(Versions::parse("TLSv1.2;TLSv1.3").is_none());
}

#[test]
fn a_secret_must_hold_a_ca_or_a_key_pair() {
    let (pem, issuer) = ca("backend CA");
    let (_, cert, key) = server(&issuer, &["portico-client"]);
    fn with<'a>(ca: Option<&'a str>, cert: Option<&'a str>, key: Option<&'a str>) -> SecretTls<'a> {
        SecretTls {
            source: "shop/s",
            ca: ca.map(str::as_bytes),
            cert: cert.map(str::as_bytes),
            key: key.map(str::as_bytes),
        }
    }
    let new =
        |s: SecretTls<'_>, verify| UpstreamTls::new(Some(s), verify, "", false, Versions::BOTH);
    assert!(new(with(Some(&pem), None, None), Some(1)).is_ok());
    let both = new(with(None, Some(&cert), Some(&key)), None).unwrap();
    assert!(both.has_identity());
    let why = new(with(None, None, None), None).unwrap_err();
    assert!(why.contains("neither"), "{why}");
    let why = new(with(Some(&pem), Some(&cert), None), None).unwrap_err();
    assert!(why.contains("only one"), "{why}");
    let why = new(with(None, Some(&cert), Some(&key)), Some(1)).unwrap_err();
    assert!(why.contains("no ca.crt"), "{why}");
    let why = new(with(Some("not a certificate"), None, None), None).unwrap_err();
    assert!(why.contains("ca.crt"), "{why}");
    let why = new(
        with(
            None,
            Some(&cert),
            Some("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
        ),
        None,
    )
    .unwrap_err();
    assert!(why.contains("tls.key"), "{why}");
}

#[test]
fn the_digest_is_the_settings_identity() {
    let (pem, _) = ca("backend CA");
    let (other, _) = ca("other CA");
    let a = verifying(&pem, "web.shop.svc", 1);
    assert_eq!(a, verifying(&pem, "web.shop.svc", 1));
    assert_ne!(a, verifying(&pem, "api.shop.svc", 1));
    assert_ne!(a, verifying(&pem, "web.shop.svc", 2));
    assert_ne!(a, verifying(&other, "web.shop.svc", 1));
    // Not verifying is another identity than verifying with the same CA.
    let secret = SecretTls {
        source: "shop/backend-ca",
        ca: Some(pem.as_bytes()),
        ..SecretTls::default()
    };
    let unverified = UpstreamTls::new(Some(secret), None, "web.shop.svc", false, Versions::BOTH);
    assert_ne!(a, unverified.unwrap());
    assert_ne!(UpstreamTls::plain("web.shop.svc"), a);
    // Renaming gives exactly the settings made for the other name.
    assert_eq!(verifying(&pem, "", 1).renamed("web.shop.svc"), a);
    assert_eq!(
        UpstreamTls::plain("x").renamed("y"),
        UpstreamTls::plain("y")
    );
}

#[test]
fn verification_checks_issuer_name_and_depth() {
    let (pem, issuer) = ca("backend CA");
    let (_, stranger) = ca("stranger CA");
    let now = UnixTime::now();
    let (leaf, _, _) = server(&issuer, &["web.shop.svc"]);
    let tls = verifying(&pem, "web.shop.svc", 1);
    tls.check(&leaf, &[], now).unwrap();
    let wrong_name = verifying(&pem, "api.shop.svc", 1).check(&leaf, &[], now);
    assert!(
        matches!(
            wrong_name,
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName
            ))
        ),
        "{wrong_name:?}"
    );
    let (foreign, _, _) = server(&stranger, &["web.shop.svc"]);
    let unknown = tls.check(&foreign, &[], now);
    assert!(
        matches!(
            unknown,
            Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer
            ))
        ),
        "{unknown:?}"
    );
    // Through an intermediate: depth 1 (nginx's default) takes it, as OpenSSL's
    // `verify -verify_depth 1`; depth 0 is too short.
    let (middle, middle_issuer) = intermediate(&issuer, "intermediate");
    let (deep, _, _) = server(&middle_issuer, &["web.shop.svc"]);
    tls.check(&deep, std::slice::from_ref(&middle), now)
        .unwrap();
    assert!(
        verifying(&pem, "web.shop.svc", 0)
            .check(&deep, std::slice::from_ref(&middle), now)
            .is_err()
    );
    verifying(&pem, "web.shop.svc", 0)
        .check(&leaf, &[], now)
        .unwrap();
    // Without verification anything goes.
    UpstreamTls::plain("web.shop.svc")
        .check(&foreign, &[], now)
        .unwrap();
}

#[test]
fn the_key_is_never_shown() {
    let (_, issuer) = ca("backend CA");
    let (_, cert, key) = server(&issuer, &["portico-client"]);
    let secret = SecretTls {
        source: "shop/client",
        cert: Some(cert.as_bytes()),
        key: Some(key.as_bytes()),
        ..SecretTls::default()
    };
    let tls = UpstreamTls::new(Some(secret), None, "web.shop.svc", true, Versions::BOTH).unwrap();
    let json = serde_json::to_string(&tls).unwrap();
    let debug = format!("{tls:?}");
    let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    for shown in [&json, &debug] {
        assert!(shown.contains("client_certificate"), "{shown}");
        assert!(!shown.contains(&body[..20]), "{shown}");
    }
}

#[test]
fn sni_goes_only_when_asked() {
    let ip: std::net::IpAddr = "10.0.0.7".parse().unwrap();
    let off = UpstreamTls::plain("web.shop.svc");
    assert!(matches!(off.server_name(ip), ServerName::IpAddress(_)));
    let (pem, _) = ca("c");
    let secret = SecretTls {
        source: "shop/s",
        ca: Some(pem.as_bytes()),
        ..SecretTls::default()
    };
    let on = UpstreamTls::new(Some(secret), None, "web.shop.svc", true, Versions::BOTH).unwrap();
    assert_eq!(
        on.server_name(ip),
        ServerName::try_from("web.shop.svc").unwrap()
    );
}

proptest! {
    /// Any bytes as a Secret's values: an error or settings, never a panic.
    #[test]
    fn hostile_secrets_never_panic(
        ca in proptest::collection::vec(any::<u8>(), 0..300),
        cert in proptest::collection::vec(any::<u8>(), 0..300),
        key in proptest::collection::vec(any::<u8>(), 0..300),
        verify in proptest::option::of(0u8..5),
        name in "\\PC{0,40}",
    ) {
        let mut pem_ca = b"-----BEGIN CERTIFICATE-----\n".to_vec();
        pem_ca.extend_from_slice(&ca);
        pem_ca.extend_from_slice(b"\n-----END CERTIFICATE-----\n");
        let secret = SecretTls {
            source: "ns/s",
            ca: Some(&pem_ca),
            cert: Some(&cert),
            key: Some(&key),
        };
        let _ = UpstreamTls::new(Some(secret), verify, &name, true, Versions::BOTH);
        let plain = UpstreamTls::plain(&name);
        let _ = plain.server_name("127.0.0.1".parse().unwrap());
    }

    #[test]
    fn hostile_protocol_lists_never_panic(value in "\\PC{0,60}") {
        let _ = Versions::parse(&value);
    }
}
