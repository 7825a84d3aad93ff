use std::collections::BTreeMap;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, header::AUTHORIZATION};

use super::*;
use crate::snapshot::basic_auth::SecretType;

fn auth(text: &str) -> Arc<BasicAuth> {
    let data: BTreeMap<String, Vec<u8>> = [("auth".to_string(), text.as_bytes().to_vec())].into();
    Arc::new(BasicAuth::new("shop/users", "r", SecretType::File, &data, &mut Vec::new()).unwrap())
}

fn basic(user: &str, password: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    let v = data_encoding::BASE64.encode(format!("{user}:{password}").as_bytes());
    h.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Basic {v}")).unwrap(),
    );
    h
}

#[tokio::test]
async fn a_verified_credential_is_not_checked_again() {
    let hash = bcrypt::hash("secret", 10).unwrap();
    let users = auth(&format!("alice:{hash}\n"));
    let checker = Checker::new();
    assert_eq!(
        checker.check(&users, &basic("alice", "secret")).await,
        Outcome::Allowed
    );
    assert_eq!(checker.checked(), 1);
    for _ in 0..100 {
        assert_eq!(
            checker.check(&users, &basic("alice", "secret")).await,
            Outcome::Allowed
        );
    }
    assert_eq!(checker.checked(), 1, "answered from the cache");
    // A wrong password is never cached, and never allowed.
    for _ in 0..2 {
        assert_eq!(
            checker.check(&users, &basic("alice", "nope")).await,
            Outcome::Unauthorized
        );
    }
    assert_eq!(checker.checked(), 3);
    // The same credentials under a changed Secret are checked again (and refused there).
    let changed = auth(&format!("alice:{}\n", bcrypt::hash("other", 4).unwrap()));
    assert_eq!(
        checker.check(&changed, &basic("alice", "secret")).await,
        Outcome::Unauthorized
    );
}

#[tokio::test]
async fn hostile_authorization_fields_get_clear_answers() {
    let users = auth("alice:{PLAIN}secret\nbob:abJnggxhB/yWI\n");
    let checker = Checker::new();
    assert_eq!(
        checker.check(&users, &HeaderMap::new()).await,
        Outcome::Unauthorized
    );
    let mut two = basic("alice", "secret");
    two.append(
        AUTHORIZATION,
        HeaderValue::from_static("Basic Zm9vOmJhcg=="),
    );
    assert_eq!(checker.check(&users, &two).await, Outcome::Duplicate);
    // 1 MB of credentials.
    let big = "x".repeat(1 << 20);
    assert_eq!(
        checker.check(&users, &basic("alice", &big)).await,
        Outcome::Unauthorized
    );
    assert_eq!(
        checker.check(&users, &basic(&big, "secret")).await,
        Outcome::Unauthorized
    );
    let mut garbage = HeaderMap::new();
    garbage.insert(AUTHORIZATION, HeaderValue::from_static("Basic ====="));
    assert_eq!(checker.check(&users, &garbage).await, Outcome::Unauthorized);
    // A user whose stored password cannot be checked: 500, as nginx.
    assert_eq!(
        checker.check(&users, &basic("bob", "x")).await,
        Outcome::Error
    );
    assert_eq!(
        checker.check(&users, &basic("carol", "x")).await,
        Outcome::Unauthorized
    );
}
