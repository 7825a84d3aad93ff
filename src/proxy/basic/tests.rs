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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_logins_with_the_same_credentials_pay_one_check() {
    let hash = bcrypt::hash("secret", 10).unwrap();
    let users = auth(&format!("alice:{hash}\nbob:{hash}\n"));
    let checker = Arc::new(Checker::new());
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (checker, users) = (Arc::clone(&checker), Arc::clone(&users));
        tasks.push(tokio::spawn(async move {
            checker.check(&users, &basic("alice", "secret")).await
        }));
    }
    // Wrong passwords are checked each on its own (never shared with a right one).
    for _ in 0..2 {
        assert_eq!(
            checker.check(&users, &basic("alice", "wrong")).await,
            Outcome::Unauthorized
        );
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), Outcome::Allowed);
    }
    assert_eq!(
        checker.checked(),
        3,
        "one check for 32 logins, two for the wrong ones"
    );
    assert!(
        checker.flights.lock().unwrap().is_empty(),
        "finished checks leave"
    );
    // Another user with the same password is another credential.
    assert_eq!(
        checker.check(&users, &basic("bob", "secret")).await,
        Outcome::Allowed
    );
    assert_eq!(checker.checked(), 4);
}

#[tokio::test]
async fn an_abandoned_check_leaves_nothing_behind() {
    let hash = bcrypt::hash("secret", 12).unwrap();
    let users = auth(&format!("alice:{hash}\n"));
    let checker = Checker::new();
    let fields = basic("alice", "secret");
    let check = checker.check(&users, &fields);
    // Dropped before the check ends (the client went away).
    let _ = tokio::time::timeout(std::time::Duration::from_millis(1), check).await;
    assert!(checker.flights.lock().unwrap().is_empty());
    assert_eq!(
        checker.check(&users, &basic("alice", "secret")).await,
        Outcome::Allowed
    );
}
