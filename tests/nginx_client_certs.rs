//! Client certificates (issue: ingress-nginx compatibility II, `auth-tls-*`) over real TLS
//! connections with certificates made by rcgen: a host with `auth-tls-secret` asks for a
//! certificate in the handshake and answers as nginx does (400 for a required certificate
//! missing or failing, never a handshake failure; 403 for `auth-tls-match-cn`; a 302 to
//! `auth-tls-error-page`), the endpoint gets `ssl-client-verify`, `-subject-dn`,
//! `-issuer-dn` (and `ssl-client-cert` when asked), never the client's own; hosts without it
//! keep working for clients without certificates; a certificate for one host cannot be
//! skipped by naming another in SNI.

mod support;

use std::time::Duration;

use http::StatusCode;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use support::Env;
use support::client::{self, Reply};
use support::manifests::{class, endpoints, service};
use support::pki::{Ca, ca};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(90);

/// A client certificate `O=Acme, CN=<cn>` signed by `ca`: its chain and key.
fn client_cert(ca: &Ca, cn: &str) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Acme");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (vec![cert.der().clone()], der)
}

/// The names the site's certificate covers; alias.example is no rule's host, only the
/// `server-alias` of on.example.
const HOSTS: [&str; 8] = [
    "on.example",
    "alias.example",
    "open.example",
    "optional.example",
    "noca.example",
    "cn.example",
    "page.example",
    "off.example",
];

fn files(web: std::net::SocketAddr, ca: &Ca) -> Vec<(&'static str, String)> {
    let (tls, _) = support::manifests::tls_secret("shop", "site", &HOSTS);
    let indent: String = ca.pem.lines().map(|l| format!("    {l}\n")).collect();
    let ca_secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: ca, namespace: shop}}\ntype: Opaque\nstringData:\n  ca.crt: |\n{indent}"
    );
    let ing = |name: &str, host: &str, annotations: &[(&str, &str)]| {
        let annotations = annotations
            .iter()
            .map(|(k, v)| format!("nginx.ingress.kubernetes.io/{k}: {v:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        support::manifests::ingress_full(
            "shop",
            name,
            &[(host, vec![support::manifests::prefix("/", "web", 80)])],
            &[(&[host], "site")],
            &annotations,
            None,
        )
    };
    let ingresses = [
        ing(
            "required",
            "on.example",
            &[
                ("auth-tls-secret", "shop/ca"),
                ("server-alias", "alias.example"),
            ],
        ),
        ing("open", "open.example", &[]),
        ing(
            "optional",
            "optional.example",
            &[
                ("auth-tls-secret", "shop/ca"),
                ("auth-tls-verify-client", "optional"),
                ("auth-tls-pass-certificate-to-upstream", "true"),
            ],
        ),
        ing(
            "noca",
            "noca.example",
            &[
                ("auth-tls-secret", "ca"),
                ("auth-tls-verify-client", "optional_no_ca"),
            ],
        ),
        ing(
            "cn",
            "cn.example",
            &[
                ("auth-tls-secret", "shop/ca"),
                ("auth-tls-match-cn", "CN=(client2|client3)$"),
            ],
        ),
        ing(
            "page",
            "page.example",
            &[
                ("auth-tls-secret", "shop/ca"),
                ("auth-tls-error-page", "https://login.example/cert"),
            ],
        ),
        ing(
            "unasked",
            "off.example",
            &[
                ("auth-tls-secret", "shop/ca"),
                ("auth-tls-verify-client", "off"),
            ],
        ),
    ];
    let mut out = vec![
        ("class.yaml", class()),
        (
            "web.yaml",
            service("shop", "web", 80) + &endpoints("shop", "web", &[web], &[]),
        ),
        ("site.yaml", tls),
        ("ca.yaml", ca_secret),
        (
            "configmap.yaml",
            support::manifests::controller_configmap("ssl-redirect: \"false\""),
        ),
    ];
    for (i, y) in ingresses.into_iter().enumerate() {
        let name: &'static str = Box::leak(format!("ing{i}.yaml").into_boxed_str());
        out.push((name, y));
    }
    out
}

/// A request for `/` on `host`, over TLS with SNI `sni`, with this client certificate (if
/// any) and these fields.
async fn get(
    env: &Env,
    sni: &str,
    host: &str,
    cert: Option<&(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    fields: &[(&str, &str)],
) -> Reply {
    let config = match cert {
        Some((chain, key)) => {
            client::tls_config_with_cert(&["http/1.1"], chain.clone(), key.clone_key())
        }
        None => client::tls_config(&["http/1.1"]),
    };
    let (stream, _) = client::tls_connect(env.https(), Some(sni), config).await;
    let mut req = http::Request::get("/").header("host", host);
    for (k, v) in fields {
        req = req.header(*k, *v);
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    timeout(LIMIT, client::h1_over(stream, req)).await.unwrap()
}

#[tokio::test]
async fn client_certificates_are_judged_as_nginx_does() {
    timeout(LIMIT, judged()).await.expect("bounded");
}

async fn judged() {
    let web = support::Backend::start("web").await;
    let ca_ = ca("Portico Test CA");
    let other = ca("Someone Else CA");
    let good = client_cert(&ca_, "client1");
    let foreign = client_cert(&other, "client1");
    let env = Env::start_with(&files(web.addr, &ca_), &["--configmap", "ingress/portico"]).await;

    // Required (on): a certificate signed by the CA passes; the endpoint learns who it is.
    let forged = [
        ("ssl-client-verify", "SUCCESS"),
        ("ssl-client-subject-dn", "CN=admin"),
        ("ssl-client-cert", "forged"),
    ];
    let reply = get(&env, "on.example", "on.example", Some(&good), &forged).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let h = &reply.json()["headers"];
    assert_eq!(h["ssl-client-verify"], "SUCCESS");
    // RFC 2253 as nginx prints it: the certificate's last RDN first (rcgen writes CN, then O).
    assert_eq!(h["ssl-client-subject-dn"], "O=Acme,CN=client1");
    assert_eq!(h["ssl-client-issuer-dn"], "CN=Portico Test CA");
    assert!(h.get("ssl-client-cert").is_none(), "not asked for: {h}");
    // Missing: 400 (not a handshake failure), whatever the client claims; never forwarded.
    let reply = get(&env, "on.example", "on.example", None, &forged).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{reply:?}");
    assert!(String::from_utf8_lossy(&reply.body).contains("No required SSL certificate was sent"));
    assert_eq!(reply.served_by(), "");
    // The alias is another name of the same server: it asks for the certificate too, and
    // its SNI gets the host's certificate (which covers it).
    let reply = get(&env, "alias.example", "alias.example", None, &[]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{reply:?}");
    let reply = get(&env, "alias.example", "alias.example", Some(&good), &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let config = client::tls_config(&["http/1.1"]);
    let (_, by_alias) = client::tls_connect(env.https(), Some("alias.example"), config).await;
    let config = client::tls_config(&["http/1.1"]);
    let (_, by_host) = client::tls_connect(env.https(), Some("on.example"), config).await;
    assert_eq!(by_alias.cert, by_host.cert, "the host's certificate");
    // Signed by another CA: 400.
    let reply = get(&env, "on.example", "on.example", Some(&foreign), &[]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&reply.body).contains("The SSL certificate error"));
    // SNI of another host, Host of one that verifies clients: 421, as nginx (never a way
    // around the check), whatever certificate came.
    let reply = get(&env, "open.example", "on.example", None, &[]).await;
    assert_eq!(
        reply.status,
        StatusCode::MISDIRECTED_REQUEST,
        "SNI/Host mismatch"
    );
    assert_eq!(reply.served_by(), "");
    let reply = get(&env, "optional.example", "on.example", Some(&good), &[]).await;
    assert_eq!(reply.status, StatusCode::MISDIRECTED_REQUEST);
    // The other way round is fine: a host that asks for nothing, on a connection made for
    // one that did.
    let reply = get(&env, "on.example", "open.example", Some(&good), &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    // Plain HTTP to a host that requires one: 400 (nginx would serve it unverified).
    let plain = client::h1(env.http(), client::get("on.example", "/")).await;
    assert_eq!(plain.status, StatusCode::BAD_REQUEST);
    // A host without auth-tls works for clients without certificates, and the client's own
    // ssl-client-* fields are nobody's business there (passed as any field).
    let reply = get(&env, "open.example", "open.example", None, &[]).await;
    assert_eq!(reply.status, StatusCode::OK);

    // optional: none is fine (NONE), a good one is SUCCESS and passed on, a foreign one 400.
    let reply = get(&env, "optional.example", "optional.example", None, &forged).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let h = &reply.json()["headers"];
    assert_eq!(h["ssl-client-verify"], "NONE");
    assert!(h.get("ssl-client-subject-dn").is_none(), "{h}");
    assert!(h.get("ssl-client-cert").is_none(), "{h}");
    let reply = get(
        &env,
        "optional.example",
        "optional.example",
        Some(&good),
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let h = &reply.json()["headers"];
    assert_eq!(h["ssl-client-verify"], "SUCCESS");
    let pem = h["ssl-client-cert"].as_str().unwrap();
    assert!(pem.starts_with("-----BEGIN%20CERTIFICATE-----%0A"), "{pem}");
    let decoded = percent_decode(pem);
    let b64: String = decoded
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = data_encoding::BASE64.decode(b64.as_bytes()).unwrap();
    assert_eq!(
        der,
        good.0[0].to_vec(),
        "the client's certificate, unchanged"
    );
    let reply = get(
        &env,
        "optional.example",
        "optional.example",
        Some(&foreign),
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);

    // optional_no_ca: a foreign certificate passes; the endpoint reads the failure.
    let reply = get(&env, "noca.example", "noca.example", Some(&foreign), &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let verify = reply.json()["headers"]["ssl-client-verify"].clone();
    assert!(verify.as_str().unwrap().starts_with("FAILED:"), "{verify}");

    // match-cn: a good certificate with another CN is 403, with nginx's text.
    let reply = get(&env, "cn.example", "cn.example", Some(&good), &[]).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(String::from_utf8_lossy(&reply.body).contains("client certificate unauthorized"));
    let client3 = client_cert(&ca_, "client3");
    let reply = get(&env, "cn.example", "cn.example", Some(&client3), &[]).await;
    assert_eq!(reply.status, StatusCode::OK);

    // error-page: a 302 there instead of 400.
    let reply = get(&env, "page.example", "page.example", None, &[]).await;
    assert_eq!(reply.status, StatusCode::FOUND);
    assert_eq!(reply.header("location"), "https://login.example/cert");

    // off: nothing asked, nothing required; the endpoint reads NONE, not the client's claim.
    let reply = get(&env, "off.example", "off.example", None, &forged).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["headers"]["ssl-client-verify"], "NONE");
    env.shutdown().await;
}

#[tokio::test]
async fn a_missing_or_invalid_ca_secret_denies_the_host() {
    timeout(LIMIT, invalid()).await.expect("bounded");
}

async fn invalid() {
    let web = support::Backend::start("web").await;
    let files = vec![
        ("class.yaml", class()),
        (
            "web.yaml",
            service("shop", "web", 80) + &endpoints("shop", "web", &[web.addr], &[]),
        ),
        (
            "bad.yaml",
            support::manifests::opaque_secret("shop", "bad", &[("ca.crt", "not a certificate")]),
        ),
        (
            "ing.yaml",
            support::manifests::nginx_ingress(
                "missing",
                "a.example",
                "/missing",
                "web",
                &[("auth-tls-secret", "shop/nothing")],
            ) + "---\n"
                + &support::manifests::nginx_ingress(
                    "bad",
                    "a.example",
                    "/bad",
                    "web",
                    &[("auth-tls-secret", "shop/bad")],
                )
                + "---\n"
                + &support::manifests::nginx_ingress(
                    "elsewhere",
                    "a.example",
                    "/elsewhere",
                    "web",
                    &[("auth-tls-secret", "other/ca")],
                )
                + "---\n"
                + &support::manifests::nginx_ingress("open", "a.example", "/", "web", &[])
                + "---\n"
                + &support::manifests::nginx_ingress("other", "b.example", "/", "web", &[]),
        ),
    ];
    let env = Env::start(&files).await;
    // As ingress-nginx (the server's `return 403` for an AuthTLSError): every path of the
    // host, the other Ingresses' too, is refused; before, the paths of an Ingress without
    // the annotation served clients with no certificate once the CA Secret broke.
    for path in ["/missing", "/bad", "/elsewhere", "/", "/anything"] {
        let reply = client::h1(env.http(), client::get("a.example", path)).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{path}: {reply:?}");
        assert_eq!(reply.served_by(), "", "{path}");
    }
    // Another host is not concerned.
    let reply = client::h1(env.http(), client::get("b.example", "/")).await;
    assert_eq!(reply.status, StatusCode::OK);
    env.shutdown().await;
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() + 1 {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// OpenSSL's client (Python's `ssl`) reads the CA names of Portico's CertificateRequest
/// (each a DER SEQUENCE, RFC 8446 §4.2.4): a list it cannot parse aborts the handshake
/// (`parse_ca_names: wrong tag`) before any HTTP, which rustls clients never noticed. With
/// its certificate it is served, as curl or a browser would be.
#[tokio::test]
async fn an_openssl_client_presents_its_certificate() {
    timeout(LIMIT, openssl_client()).await.expect("bounded");
}

async fn openssl_client() {
    let web = support::Backend::start("web").await;
    let ca_ = ca("Portico Test CA");
    let env = Env::start_with(&files(web.addr, &ca_), &["--configmap", "ingress/portico"]).await;
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "client1");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca_.issuer).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("client.crt"), dir.path().join("client.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let script = r#"
import socket, ssl, sys
port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.load_cert_chain(cert, key)
with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
    with ctx.wrap_socket(raw, server_hostname="on.example") as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: on.example\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
print(data.decode("latin-1"))
"#;
    let port = env.https().port().to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(port)
            .arg(&cert_path)
            .arg(&key_path)
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "handshake or request failed: {stderr}"
    );
    assert!(stdout.starts_with("HTTP/1.1 200"), "{stdout}");
    assert!(
        stdout.contains("\"ssl-client-verify\": \"SUCCESS\""),
        "{stdout}"
    );
    env.shutdown().await;
}
