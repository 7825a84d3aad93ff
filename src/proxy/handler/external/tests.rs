use std::hash::Hash;

use super::*;

#[test]
fn add_header_statuses_are_nginx_s() {
    for ok in [200, 201, 204, 206, 301, 302, 303, 304, 307, 308] {
        assert!(adds_to(StatusCode::from_u16(ok).unwrap(), false), "{ok}");
    }
    for not in [202, 400, 401, 403, 404, 500, 503] {
        assert!(!adds_to(StatusCode::from_u16(not).unwrap(), false), "{not}");
        assert!(adds_to(StatusCode::from_u16(not).unwrap(), true), "{not}");
    }
}

fn tag(answers: &Answers, parts: &[&str]) -> [u8; 16] {
    let mut t = Tagger(ring::hmac::Context::with_key(&answers.key));
    for p in parts {
        p.hash(&mut t);
    }
    let mut out = [0u8; 16];
    out.copy_from_slice(&t.0.sign().as_ref()[..16]);
    out
}

#[test]
fn keys_cannot_run_together_and_differ_between_instances() {
    let a = Answers::new();
    // "ab" + "c" and "a" + "bc" are different keys.
    assert_ne!(tag(&a, &["ab", "c"]), tag(&a, &["a", "bc"]));
    assert_eq!(tag(&a, &["ab", "c"]), tag(&a, &["ab", "c"]));
    let b = Answers::new();
    assert_ne!(tag(&a, &["ab", "c"]), tag(&b, &["ab", "c"]));
}

#[test]
fn the_cache_keeps_answers_for_their_time_only() {
    let a = Answers::new();
    let answer = Arc::new(Answer {
        status: 200,
        copies: Vec::new(),
        cookies: Vec::new(),
        challenges: Vec::new(),
        cacheable: Some(None),
    });
    let t = tag(&a, &["user"]);
    assert!(a.get(&t).is_none());
    a.put(t, Duration::from_secs(60), Arc::clone(&answer));
    assert_eq!(a.get(&t).map(|x| x.status), Some(200));
    // Another key in the same slot replaces it (direct-mapped, bounded).
    let mut other = t;
    other[15] ^= 1;
    assert!(a.get(&other).is_none());
    a.put(other, Duration::ZERO, answer);
    assert!(a.get(&t).is_none());
    assert!(a.get(&other).is_none(), "expired at once");
}

#[test]
fn repeated_fields_are_joined_as_nginx_does() {
    let mut h = HeaderMap::new();
    let name = HeaderName::from_static("x-group");
    h.append(&name, HeaderValue::from_static("a"));
    h.append(&name, HeaderValue::from_static("b"));
    assert_eq!(joined(&h, &name).unwrap(), "a, b");
    assert!(joined(&h, &HeaderName::from_static("x-none")).is_none());
}

#[test]
fn answers_are_cached_as_nginx_proxy_cache_keeps_them() {
    let h = |pairs: &[(&'static str, &'static str)]| {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        cacheable(&m)
    };
    assert_eq!(h(&[]), Some(None));
    assert_eq!(h(&[("set-cookie", "s=1")]), None);
    assert_eq!(h(&[("cache-control", "no-store")]), None);
    assert_eq!(h(&[("cache-control", "Private, max-age=60")]), None);
    assert_eq!(h(&[("cache-control", "no-cache")]), None);
    assert_eq!(h(&[("vary", "Accept, *")]), None);
    assert_eq!(
        h(&[("cache-control", "public, max-age=30")]),
        Some(Some(Duration::from_secs(30)))
    );
    assert_eq!(
        h(&[("cache-control", "max-age=0")]),
        Some(Some(Duration::ZERO))
    );
    assert_eq!(h(&[("cache-control", "max-age=soon")]), None);
    assert_eq!(
        h(&[("x-accel-expires", "5"), ("cache-control", "max-age=30")]),
        Some(Some(Duration::from_secs(5)))
    );
}
