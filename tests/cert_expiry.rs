//! Certificates out of their validity period are served all the same (as nginx does), with a
//! warning naming the Secret, the hosts and the date; so is one that expires within 14 days.
//! `portico_certificate_expiry_timestamp_seconds` shows each served certificate's notAfter
//! and follows the published snapshot.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::client::{get, h1, tls_config, tls_connect};
use support::manifests::{class, endpoints, ingress_full, prefix, service, tls_secret_valid};
use support::{Backend, Env};
use tokio::time::timeout;

/// Every test is bounded.
const LIMIT: Duration = Duration::from_secs(60);

const DAY: i64 = 86_400;

fn now() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    i64::try_from(since.as_secs()).unwrap()
}

/// A certificate's notAfter, as Unix seconds.
fn not_after(der: &[u8]) -> i64 {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.validity().not_after.timestamp()
}

/// RFC 3339 in UTC, as the diagnostics show dates.
fn rfc3339(secs: i64) -> String {
    let dt = x509_parser::time::ASN1Time::from_timestamp(secs)
        .unwrap()
        .to_datetime();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    )
}

/// The names of the Secrets, each for `NAME.test`, and their validity periods.
fn periods(now: i64) -> [(&'static str, (i64, i64)); 4] {
    [
        ("expired", (now - 400 * DAY, now - 30 * DAY)),
        ("early", (now + 10 * DAY, now + 400 * DAY)),
        ("soon", (now - 80 * DAY, now + 5 * DAY)),
        ("fine", (now - 10 * DAY, now + 300 * DAY)),
    ]
}

struct Site {
    name: &'static str,
    host: String,
    der: Vec<u8>,
    period: (i64, i64),
}

async fn start() -> (Env, Vec<Site>, Backend) {
    let backend = Backend::start("app").await;
    let mut files = vec![
        ("class.yaml".to_string(), class()),
        ("svc.yaml".to_string(), service("shop", "app", 80)),
        (
            "eps.yaml".to_string(),
            endpoints("shop", "app", &[backend.addr], &[]),
        ),
    ];
    let mut sites = Vec::new();
    for (name, period) in periods(now()) {
        let host = format!("{name}.test");
        let (yaml, der) = tls_secret_valid("shop", name, &[&host], period);
        files.push((format!("{name}.yaml"), yaml));
        sites.push(Site {
            name,
            host,
            der,
            period,
        });
    }
    let hosts: Vec<[&str; 1]> = sites.iter().map(|s| [s.host.as_str()]).collect();
    let tls: Vec<(&[&str], &str)> = hosts
        .iter()
        .zip(&sites)
        .map(|(h, s)| (&h[..], s.name))
        .collect();
    let rules: Vec<(&str, Vec<_>)> = sites
        .iter()
        .map(|s| (s.host.as_str(), vec![prefix("/", "app", 80)]))
        .collect();
    let ingress = ingress_full("shop", "sites", &rules, &tls, "", None);
    files.push(("ing.yaml".to_string(), ingress));
    let files: Vec<(&str, String)> = files.iter().map(|(n, y)| (n.as_str(), y.clone())).collect();
    let env = Env::start(&files).await;
    (env, sites, backend)
}

#[tokio::test]
async fn certificates_out_of_date_are_served_with_a_warning() {
    timeout(LIMIT, out_of_date()).await.expect("bounded");
}

async fn out_of_date() {
    let (env, sites, _backend) = start().await;
    for site in &sites {
        let (_, tls) = tls_connect(env.https(), Some(&site.host), tls_config(&["http/1.1"])).await;
        assert_eq!(
            tls.cert, site.der,
            "{} serves its own certificate",
            site.host
        );
    }
    let dump = h1(env.admin(), get("localhost", "/debug/snapshot"))
        .await
        .json();
    let warnings: Vec<String> = dump["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["severity"] == "warning" && d["object"]["kind"] == "Secret")
        .map(|d| format!("{} {}: {}", d["object"]["name"], d["field"], d["reason"]))
        .collect();
    let about = |name: &str| {
        warnings
            .iter()
            .find(|w| w.starts_with(&format!("\"{name}\"")))
            .cloned()
    };
    let (expired, early, soon) = (&sites[0], &sites[1], &sites[2]);
    let expired_w =
        about("expired").unwrap_or_else(|| panic!("no warning about expired: {warnings:?}"));
    assert!(expired_w.contains("expired"), "{expired_w}");
    assert!(
        expired_w.contains(&rfc3339(expired.period.1)),
        "{expired_w}"
    );
    assert!(expired_w.contains("expired.test"), "{expired_w}");
    let early_w = about("early").unwrap_or_else(|| panic!("no warning about early: {warnings:?}"));
    assert!(early_w.contains("not valid before"), "{early_w}");
    assert!(early_w.contains(&rfc3339(early.period.0)), "{early_w}");
    assert!(early_w.contains("early.test"), "{early_w}");
    let soon_w = about("soon").unwrap_or_else(|| panic!("no warning about soon: {warnings:?}"));
    assert!(soon_w.contains("expires"), "{soon_w}");
    assert!(soon_w.contains(&rfc3339(soon.period.1)), "{soon_w}");
    assert!(soon_w.contains("soon.test"), "{soon_w}");
    assert_eq!(about("fine"), None, "{warnings:?}");
    // portico check says the same.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["check", "--manifests"])
        .arg(env.dir.path())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.contains("warning: Secret shop/expired tls.crt"),
        "{out}"
    );
    assert!(out.contains("warning: Secret shop/soon tls.crt"), "{out}");
    env.shutdown().await;
}

/// The value of the expiry gauge for one Secret and host, if shown.
async fn expiry_metric(env: &Env, secret: &str, host: &str) -> Option<i64> {
    let reply = h1(env.admin(), get("localhost", "/metrics")).await;
    let text = String::from_utf8_lossy(&reply.body).into_owned();
    let labels = format!("secret_namespace=\"shop\",secret_name=\"{secret}\",host=\"{host}\"");
    let line = text.lines().find(|l| {
        l.starts_with("portico_certificate_expiry_timestamp_seconds{") && l.contains(&labels)
    })?;
    line.rsplit(' ').next()?.parse().ok()
}

#[tokio::test]
async fn the_expiry_metric_follows_the_snapshot() {
    timeout(LIMIT, metric()).await.expect("bounded");
}

async fn metric() {
    let (env, sites, _backend) = start().await;
    for site in &sites {
        let value = expiry_metric(&env, site.name, &site.host).await;
        assert_eq!(value, Some(not_after(&site.der)), "{}", site.host);
        assert_eq!(value, Some(site.period.1), "rcgen kept the second");
    }
    env.remove("ing.yaml").await;
    for site in &sites {
        assert_eq!(
            expiry_metric(&env, site.name, &site.host).await,
            None,
            "{} is gone",
            site.host
        );
    }
    env.shutdown().await;
}
