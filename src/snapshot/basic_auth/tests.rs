use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn check(hash: &str, password: &str) -> Verdict {
    Credential::parse(hash).unwrap().verify(password.as_bytes())
}

/// Vectors from `openssl passwd` (-apr1, -1, -5, -6), `htpasswd -s` and Python's hashlib.
#[test]
fn every_scheme_nginx_accepts_verifies() {
    let bcrypt = bcrypt::hash_with_salt("secret", 4, *b"0123456789abcdef")
        .unwrap()
        .format_for_version(bcrypt::Version::TwoY);
    for (hash, good) in [
        ("$apr1$lZL6V/ci$eIMz/iKDkbtys/uU7LEK00", "password"),
        ("$1$saltsalt$9xy1btjgzLYfb7hivXtC//", "secret"),
        ("$1$$LP5.V3ajGqHDdXW6XwZQy.", "x"),
        ("$apr1$ab$S8K6Sgp3W8c9Jb6LxgywZ.", ""),
        (
            "$5$saltsalt$0IyaXrmV7.sGNS6tirgqHLqX/G.FBvgkYA.lpPdS5sA",
            "secret",
        ),
        (
            "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1",
            "secret",
        ),
        ("{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=", "secret"),
        ("{SSHA}dj2lH1ocucmj5OQsjP6mQrVx6FhOYUNs", "secret"),
        ("{PLAIN}secret", "secret"),
        (bcrypt.as_str(), "secret"),
        (&bcrypt.replacen("$2y$", "$2a$", 1), "secret"),
        (&bcrypt.replacen("$2y$", "$2b$", 1), "secret"),
    ] {
        assert_eq!(check(hash, good), Verdict::Valid, "{hash}");
        assert_eq!(check(hash, "wrong"), Verdict::Invalid, "{hash}");
        assert_eq!(check(hash, &format!("{good}x")), Verdict::Invalid, "{hash}");
    }
}

#[test]
fn unknown_or_dangerous_hashes_are_refused_with_a_reason() {
    for (hash, why) in [
        ("", "empty"),
        ("abJnggxhB/yWI", "DES"),
        (
            "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
            "does not know",
        ),
        (
            "$2y$31$abcdefghijklmnopqrstuu5Ud6MzgcvyE9EuMLXRK9hcsOWnJ6mmG",
            "cost above 17",
        ),
        ("$2y$10$short", "wrong length"),
        ("$5$rounds=999999999$salt$hash", "rounds above"),
        ("{SHA}not base64!", "not base64"),
        ("{SHA}c2hvcnQ=", "not 20 bytes"),
        ("{SSHA}c2hvcnQ=", "shorter"),
        ("$apr1$toolongsalt$eIMz/iKDkbtys/uU7LEK00", "wrong length"),
        ("$1$nosalt", "without a salt"),
    ] {
        let err = Credential::parse(hash)
            .err()
            .unwrap_or_else(|| panic!("{hash}"));
        assert!(err.contains(why), "{hash}: {err}");
    }
}

fn file(text: &str) -> BTreeMap<String, Vec<u8>> {
    [("auth".to_string(), text.as_bytes().to_vec())].into()
}

#[test]
fn htpasswd_files_are_read_as_nginx_reads_them() {
    let mut w = Vec::new();
    let text = "# a comment\n\
                alice:{PLAIN}one\n\
                bob:{PLAIN}two:a comment after the password\r\n\
                alice:{PLAIN}second line ignored\n\
                :{PLAIN}no user\n\
                no colon here\n\
                carol:abJnggxhB/yWI\n\
                \n";
    let auth = BasicAuth::new(
        "shop/users",
        "Admins",
        SecretType::File,
        &file(text),
        &mut w,
    )
    .unwrap();
    assert_eq!(auth.len(), 3);
    assert_eq!(auth.user(b"alice").unwrap().verify(b"one"), Verdict::Valid);
    assert_eq!(auth.user(b"bob").unwrap().verify(b"two"), Verdict::Valid);
    assert_eq!(auth.user(b"carol").unwrap().verify(b"x"), Verdict::Error);
    assert!(auth.user(b"").is_none() && auth.user(b"no colon here").is_none());
    assert_eq!(auth.challenge, "Basic realm=\"Admins\"");
    // One warning, naming the line and the user, never the hash.
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("line 7") && w[0].contains("carol"), "{w:?}");
    assert!(!w[0].contains("abJnggxhB"), "{w:?}");
}

#[test]
fn secrets_that_cannot_serve_are_errors() {
    let mut w = Vec::new();
    let none: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let err = BasicAuth::new("shop/x", "", SecretType::File, &none, &mut w).unwrap_err();
    assert!(err.contains("no key \"auth\""), "{err}");
    let err =
        BasicAuth::new("shop/x", "", SecretType::File, &file("# only\n"), &mut w).unwrap_err();
    assert!(err.contains("no user"), "{err}");
    let err = BasicAuth::new(
        "shop/x",
        "a\nb",
        SecretType::File,
        &file("u:{PLAIN}p"),
        &mut w,
    )
    .unwrap_err();
    assert!(err.contains("auth-realm"), "{err}");
    // auth-map: a key per user.
    let map: BTreeMap<String, Vec<u8>> = [
        ("dave".to_string(), b"{PLAIN}four".to_vec()),
        (
            "erin".to_string(),
            b"{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=".to_vec(),
        ),
    ]
    .into();
    let auth = BasicAuth::new("shop/m", "", SecretType::Map, &map, &mut w).unwrap();
    assert_eq!(
        auth.user(b"erin").unwrap().verify(b"secret"),
        Verdict::Valid
    );
    assert_eq!(auth.challenge, "Basic realm=\"\"");
    // A changed Secret has another digest.
    let other = BasicAuth::new("shop/m", "x", SecretType::Map, &map, &mut w).unwrap();
    assert_ne!(auth.digest, other.digest);
}

#[test]
fn an_htpasswd_with_100000_users_is_read() {
    let text: String = (0..100_000)
        .map(|i| format!("user{i}:{{PLAIN}}p{i}\n"))
        .collect();
    let mut w = Vec::new();
    let auth = BasicAuth::new("shop/big", "", SecretType::File, &file(&text), &mut w).unwrap();
    assert_eq!(auth.len(), 100_000);
    assert_eq!(
        auth.user(b"user99999").unwrap().verify(b"p99999"),
        Verdict::Valid
    );
}

#[test]
fn authorization_values_are_read_as_nginx_reads_them() {
    let b64 = |s: &str| data_encoding::BASE64.encode(s.as_bytes());
    let ok = |v: &str, user: &str, pw: &str| {
        let (d, colon) = decode_authorization(v.as_bytes()).unwrap();
        assert_eq!(
            (&d[..colon], &d[colon + 1..]),
            (user.as_bytes(), pw.as_bytes()),
            "{v}"
        );
    };
    ok(&format!("Basic {}", b64("foo:bar")), "foo", "bar");
    ok(&format!("basic   {}", b64("foo:bar:baz")), "foo", "bar:baz");
    ok(&format!("BASIC {}", b64("foo:")), "foo", "");
    // As ngx_decode_base64: padding optional, anything after the first '=' ignored.
    ok("Basic YWxpY2U6cHc", "alice", "pw");
    ok("Basic YWxpY2U6cHc=garbage", "alice", "pw");
    for bad in [
        "Basic YWxpY2U6cHc!".to_string(),
        "Basic YWxpY2U6c".to_string(),
        String::new(),
        "Basic".into(),
        "Bearer abc".into(),
        format!("Basic {}", b64("nocolon")),
        format!("Basic {}", b64(":nouser")),
        "Basic !!!not base64".into(),
        format!("Basicx {}", b64("a:b")),
    ] {
        assert!(decode_authorization(bad.as_bytes()).is_none(), "{bad:?}");
    }
}

proptest! {
    /// Any value: decoded or refused, never a panic.
    #[test]
    fn any_authorization_value_is_handled(value in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_authorization(&value);
        let mut basic = b"Basic ".to_vec();
        basic.extend_from_slice(&value);
        let _ = decode_authorization(&basic);
    }

    /// Any stored hash: parsed or refused, and a parsed one checks without a panic.
    #[test]
    fn any_stored_hash_is_handled(hash in "(\\$(1|apr1|5|6|2y)\\$|\\{(SHA|SSHA|PLAIN)\\})?[ -~]{0,70}") {
        if let Ok(c) = Credential::parse(&hash)
            && !matches!(c, Credential::Bcrypt(_))
        {
            let _ = c.verify(b"password");
        }
    }

    /// Any htpasswd text: users or an error, never a panic.
    #[test]
    fn any_htpasswd_text_is_handled(text in "[a-z:{}#$\\n A-Z0-9./]{0,300}") {
        let mut w = Vec::new();
        let _ = BasicAuth::new("ns/n", "r", SecretType::File, &file(&text), &mut w);
    }
}
