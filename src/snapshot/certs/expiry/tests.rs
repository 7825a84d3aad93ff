use super::*;
use crate::source::Kind;

fn served(secret: &str, host: &str, (not_before, not_after): (i64, i64)) -> Served {
    Served {
        secret: ObjectKey::new(Kind::Secret, "shop", secret),
        host: host.to_string(),
        not_before,
        not_after,
    }
}

#[test]
fn utc_dates() {
    assert_eq!(utc(0), "1970-01-01T00:00:00Z");
    assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(utc(1_767_225_599), "2025-12-31T23:59:59Z");
    assert_eq!(utc(4_102_444_800), "2100-01-01T00:00:00Z");
    assert_eq!(utc(-1), "1969-12-31T23:59:59Z");
}

#[test]
fn warnings_name_the_secret_the_hosts_and_the_date() {
    let now = 1_767_225_600; // 2026-01-01T00:00:00Z
    let list = [
        served("expired", "a.test", (now - 100 * DAY, now - DAY)),
        served("expired", "b.test", (now - 100 * DAY, now - DAY)),
        served("early", "c.test", (now + DAY, now + 100 * DAY)),
        served("soon", DEFAULT_HOST, (now - DAY, now + 3 * DAY + 5)),
        served("today", "d.test", (now - DAY, now + 60)),
        served("edge", "e.test", (now - DAY, now + EXPIRES_SOON)),
        served("fine", "f.test", (now - DAY, now + EXPIRES_SOON + 1)),
        served("starts-now", "g.test", (now, now + 100 * DAY)),
    ];
    let shown: Vec<String> = diagnostics(&list, now)
        .iter()
        .map(|d| d.to_string())
        .collect();
    assert_eq!(
        shown,
        [
            "warning: Secret shop/early tls.crt: the certificate is not valid before 2026-01-02T00:00:00Z (notBefore); still served for c.test",
            "warning: Secret shop/edge tls.crt: the certificate expires at 2026-01-15T00:00:00Z (notAfter), in 14 days; still served for e.test",
            "warning: Secret shop/expired tls.crt: the certificate expired at 2025-12-31T00:00:00Z (notAfter); still served for a.test, b.test",
            "warning: Secret shop/soon tls.crt: the certificate expires at 2026-01-04T00:00:05Z (notAfter), in 3 days; still served for the default certificate",
            "warning: Secret shop/today tls.crt: the certificate expires at 2026-01-01T00:01:00Z (notAfter), within a day; still served for d.test",
        ]
    );
}

#[test]
fn many_hosts_are_counted() {
    let now = 1_767_225_600;
    let list: Vec<Served> = (0..8)
        .map(|i| served("wide", &format!("h{i}.test"), (0, now - 1)))
        .collect();
    let d = diagnostics(&list, now);
    assert_eq!(d.len(), 1);
    assert!(
        d[0].reason
            .ends_with("h0.test, h1.test, h2.test, h3.test, h4.test and 3 more hosts"),
        "{}",
        d[0].reason
    );
}
