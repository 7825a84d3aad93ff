//! Towards the cluster, against the fake API server: Ingress status with the right addresses
//! (flag or nodes running Portico), written only when it differs and only by the leader, cleared
//! when an Ingress stops being ours; Events for bad Ingresses, de-duplicated.

mod support;

use std::time::Duration;

use portico::snapshot::routes::Upstream;
use serde_json::{Value, json};
use support::fake_api::FakeApi;
use support::kube::{KubeEnv, eventually, ingress, lb_status, node, portico_pod};
use support::manifests;
use tokio::time::{sleep, timeout};

const LIMIT: Duration = Duration::from_secs(60);

fn status_of(api: &FakeApi, ns: &str, name: &str) -> Value {
    lb_status(&api.get("Ingress", ns, name).unwrap())
}

/// Waits until the Ingress's status is `want`.
async fn status_becomes(api: &FakeApi, ns: &str, name: &str, want: Value) {
    let what = format!("status of {ns}/{name} to be {want}");
    eventually(&what, || (status_of(api, ns, name) == want).then_some(())).await;
}

fn base(api: &FakeApi) {
    api.apply_yaml(&manifests::class());
    api.apply_yaml(&manifests::service("shop", "web", 80));
    api.apply(ingress("shop", "a", "portico", "a.example", "web"));
}

#[tokio::test]
async fn status_gets_the_published_addresses_and_is_cleared_when_not_ours() {
    timeout(LIMIT, published_addresses()).await.unwrap();
}

async fn published_addresses() {
    let api = FakeApi::start().await;
    base(&api);
    let ours = json!([{"ip": "192.0.2.10"}, {"hostname": "lb.example.com"}]);
    // Was ours before (holds our addresses), now another controller's: cleared.
    let mut stale = ingress("shop", "stale", "nginx", "s.example", "web");
    stale["status"] = json!({"loadBalancer": {"ingress": ours.clone()}});
    api.apply(stale);
    // Another controller's Ingress with its own status: never touched.
    let mut foreign = ingress("shop", "foreign", "nginx", "f.example", "web");
    foreign["status"] = json!({"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}});
    api.apply(foreign);
    let flags = ["--publish-status-address", "lb.example.com,192.0.2.10"];
    let env = KubeEnv::start(&api, &flags).await;
    status_becomes(&api, "shop", "a", ours.clone()).await;
    status_becomes(&api, "shop", "stale", json!([])).await;
    assert_eq!(
        status_of(&api, "shop", "foreign"),
        json!([{"ip": "198.51.100.1"}])
    );
    let writes = api.requests_to("PUT", "/status");
    assert_eq!(writes.len(), 2, "one write each: {writes:?}");
    assert_guarded(&writes);

    // A rebuild that changes nothing for status writes nothing.
    api.apply(ingress("shop", "b", "portico", "b.example", "web"));
    status_becomes(&api, "shop", "b", ours.clone()).await;
    sleep(Duration::from_millis(500)).await;
    assert_eq!(
        api.requests_to("PUT", "/status").len(),
        3,
        "only b was written"
    );

    // a stops being ours: its status is cleared.
    api.apply(ingress("shop", "a", "nginx", "a.example", "web"));
    status_becomes(&api, "shop", "a", json!([])).await;
    env.shutdown().await;
}

/// Status writes carry the resourceVersion read, and no managedFields.
fn assert_guarded(writes: &[support::fake_api::Logged]) {
    for w in writes {
        let meta = &w.body.as_ref().unwrap()["metadata"];
        assert!(
            meta.get("managedFields").is_none(),
            "managedFields stripped"
        );
        assert!(
            meta["resourceVersion"].is_string(),
            "optimistic concurrency"
        );
    }
}

#[tokio::test]
async fn status_uses_the_addresses_of_the_nodes_running_portico() {
    timeout(LIMIT, node_addresses()).await.unwrap();
}

async fn node_addresses() {
    let api = FakeApi::start().await;
    base(&api);
    api.apply(node("n1", "10.0.0.1", Some("203.0.113.1")));
    api.apply(node("n2", "10.0.0.2", None));
    api.apply(node("n3", "10.0.0.3", None));
    api.apply(portico_pod("portico-1", "n1", "Running"));
    api.apply(portico_pod("portico-2", "n2", "Running"));
    api.apply(portico_pod("portico-3", "n3", "Pending"));
    let env = KubeEnv::start(&api, &["--pod-name", "portico-1"]).await;
    let want = json!([{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}]);
    status_becomes(&api, "shop", "a", want).await;
    let pods = api.requests_to("GET", "/api/v1/namespaces/portico/pods");
    assert!(
        pods[0]
            .query
            .contains("labelSelector=app.kubernetes.io%2Fname%3Dportico")
    );
    env.shutdown().await;

    // ExternalIP with the flag (InternalIP where a node has none).
    let api = FakeApi::start().await;
    base(&api);
    api.apply(node("n1", "10.0.0.1", Some("203.0.113.1")));
    api.apply(node("n2", "10.0.0.2", None));
    api.apply(portico_pod("portico-1", "n1", "Running"));
    api.apply(portico_pod("portico-2", "n2", "Running"));
    let env = KubeEnv::start(&api, &["--status-external-ip"]).await;
    let want = json!([{"ip": "10.0.0.2"}, {"ip": "203.0.113.1"}]);
    status_becomes(&api, "shop", "a", want).await;
    env.shutdown().await;
}

#[tokio::test]
async fn with_two_instances_only_the_leader_writes() {
    timeout(LIMIT, two_instances()).await.unwrap();
}

fn holder(api: &FakeApi) -> Option<String> {
    let lease = api.get("Lease", "portico", "portico-leader")?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_string)
}

async fn two_instances() {
    let api = FakeApi::start().await;
    base(&api);
    let flags = |name, address| {
        let lease = ["--leader-lease-duration", "2s", "--pod-name", name];
        [&lease[..], &["--publish-status-address", address]].concat()
    };
    let a = KubeEnv::start(&api, &flags("a", "192.0.2.1")).await;
    let b = KubeEnv::start(&api, &flags("b", "192.0.2.2")).await;
    let leader = eventually("a leader", || holder(&api)).await;
    let (address, other) = match leader.as_str() {
        "a" => ("192.0.2.1", "192.0.2.2"),
        _ => ("192.0.2.2", "192.0.2.1"),
    };
    status_becomes(&api, "shop", "a", json!([{"ip": address}])).await;
    sleep(Duration::from_secs(2)).await;
    let written: Vec<Value> = api
        .requests_to("PUT", "/status")
        .into_iter()
        .map(|r| lb_status(r.body.as_ref().unwrap()))
        .collect();
    assert_eq!(written, [json!([{"ip": address}])], "only the leader wrote");
    assert_eq!(holder(&api).as_deref(), Some(leader.as_str()), "renewed");

    // The leader goes away: the other takes the Lease over and rewrites the status.
    let (gone, stays) = if leader == "a" { (a, b) } else { (b, a) };
    gone.shutdown().await;
    status_becomes(&api, "shop", "a", json!([{"ip": other}])).await;
    let lease = api.get("Lease", "portico", "portico-leader").unwrap();
    assert_ne!(lease["spec"]["holderIdentity"], json!(leader));
    assert_eq!(lease["spec"]["leaseTransitions"], json!(1));
    stays.shutdown().await;
}

#[tokio::test]
async fn events_appear_for_bad_ingresses() {
    timeout(LIMIT, events()).await.unwrap();
}

/// The Events about the Ingress `name` in `shop`.
fn events_about(api: &FakeApi, name: &str) -> Vec<Value> {
    api.list("Event")
        .into_iter()
        .filter(|e| e["regarding"]["name"] == json!(name))
        .collect()
}

/// A Warning Event about the Ingress with this uid, reported by Portico.
fn assert_warning_about(event: &Value, uid: &Value) {
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "ConfigurationError");
    assert_eq!(event["regarding"]["kind"], "Ingress");
    assert_eq!(event["regarding"]["uid"], *uid);
    assert_eq!(event["metadata"]["namespace"], "shop");
    let reporter = &event["reportingController"];
    assert_eq!(reporter, "portico.dev/ingress-controller");
}

async fn events() {
    let api = FakeApi::start().await;
    base(&api);
    api.apply(ingress("shop", "bad", "portico", "bad.example", "missing"));
    let env = KubeEnv::start(&api, &["--publish-status-address", "192.0.2.1"]).await;
    let events = eventually("an Event", || {
        Some(events_about(&api, "bad")).filter(|e| !e.is_empty())
    })
    .await;
    let uid = api.get("Ingress", "shop", "bad").unwrap()["metadata"]["uid"].clone();
    let event = &events[0];
    assert_warning_about(event, &uid);
    let note = event["note"].as_str().unwrap();
    assert!(note.contains("shop/missing not found"), "{note}");
    assert!(
        events_about(&api, "a").is_empty(),
        "a good Ingress gets none"
    );

    // Rebuilds with the same diagnostic publish nothing new.
    api.apply(ingress("shop", "c", "portico", "c.example", "web"));
    status_becomes(&api, "shop", "c", json!([{"ip": "192.0.2.1"}])).await;
    sleep(Duration::from_millis(300)).await;
    assert_eq!(events_about(&api, "bad").len(), 1, "de-duplicated");

    // Fixed, then broken again: the same problem's Event is updated, not created again.
    api.apply(ingress("shop", "bad", "portico", "bad.example", "web"));
    env.wait_for("bad is fixed", |s| {
        s.routes
            .route("bad.example", "/")
            .is_some_and(|r| matches!(r.backend.upstream, Upstream::Service(_)))
    })
    .await;
    sleep(Duration::from_millis(300)).await;
    api.apply(ingress("shop", "bad", "portico", "bad.example", "missing"));
    eventually("the Event's series bumped", || {
        let events = events_about(&api, "bad");
        (events.len() == 1 && events[0]["series"]["count"] == json!(2)).then_some(())
    })
    .await;
    env.shutdown().await;
}

/// The instance of a KubeEnv started with `--pod-name name`.
fn instance(api: &FakeApi, name: &str, lease: &str) -> impl Future<Output = KubeEnv> {
    let flags = [
        "--pod-name",
        name,
        "--leader-lease-duration",
        lease,
        "--publish-status-address",
        "192.0.2.1",
    ]
    .map(str::to_string);
    async move {
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        KubeEnv::start(api, &flags).await
    }
}

/// A rolling update: the leader stops gracefully and releases the Lease, so the other replica
/// leads within a retry period (2 s of the default 15 s lease), not after the lease expires.
#[tokio::test]
async fn a_leader_that_stops_hands_the_lease_over_at_once() {
    timeout(LIMIT, handover()).await.unwrap();
}

async fn handover() {
    let api = FakeApi::start().await;
    base(&api);
    let a = instance(&api, "a", "15s").await;
    eventually("a leads", || (holder(&api)? == "a").then_some(())).await;
    let b = instance(&api, "b", "15s").await;
    sleep(Duration::from_millis(500)).await;
    let stopped = tokio::time::Instant::now();
    a.shutdown().await;
    let lease = api.get("Lease", "portico", "portico-leader").unwrap();
    assert!(
        lease["spec"]["holderIdentity"].is_null(),
        "released on shutdown: {lease}"
    );
    eventually("b leads", || (holder(&api)? == "b").then_some(())).await;
    let took = stopped.elapsed();
    assert!(took < Duration::from_secs(5), "b took over after {took:?}");
    b.shutdown().await;
}

/// Seven leader changes, one problem: one Event, its series counting the re-publications.
#[tokio::test]
async fn leader_changes_update_one_event_per_problem() {
    timeout(Duration::from_secs(120), one_event())
        .await
        .unwrap();
}

async fn one_event() {
    let api = FakeApi::start().await;
    base(&api);
    api.apply(ingress("shop", "bad", "portico", "bad.example", "missing"));
    for round in 0..7 {
        let name = format!("p{round}");
        let env = instance(&api, &name, "15s").await;
        eventually("this instance leads", || {
            (holder(&api)? == name).then_some(())
        })
        .await;
        let want = json!(round + 1);
        eventually("the Event published by this leader", || {
            let events = events_about(&api, "bad");
            let count = &events.first()?["series"]["count"];
            let count = if count.is_null() { &json!(1) } else { count };
            (*count == want).then_some(())
        })
        .await;
        env.shutdown().await;
    }
    let events = events_about(&api, "bad");
    assert_eq!(events.len(), 1, "one Event for one problem: {events:?}");
    assert_eq!(events[0]["series"]["count"], json!(7));
    assert!(events[0]["series"]["lastObservedTime"].is_string());
}

/// Every write Portico makes (status, Events, the Lease) names the field manager `portico`.
#[tokio::test]
async fn every_write_uses_the_field_manager_portico() {
    timeout(LIMIT, field_manager()).await.unwrap();
}

async fn field_manager() {
    let api = FakeApi::start().await;
    base(&api);
    api.apply(ingress("shop", "bad", "portico", "bad.example", "missing"));
    let a = instance(&api, "a", "15s").await;
    status_becomes(&api, "shop", "a", json!([{"ip": "192.0.2.1"}])).await;
    eventually("an Event", || {
        Some(events_about(&api, "bad")).filter(|e| !e.is_empty())
    })
    .await;
    // Broken differently, then the original problem again: a series bump (PATCH).
    api.apply(ingress("shop", "bad", "portico", "bad.example", "web"));
    sleep(Duration::from_millis(400)).await;
    api.apply(ingress("shop", "bad", "portico", "bad.example", "missing"));
    eventually("a patched Event", || {
        (!api.requests_to("PATCH", "").is_empty()).then_some(())
    })
    .await;
    a.shutdown().await;
    let writes: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| matches!(r.method.as_str(), "POST" | "PUT" | "PATCH"))
        .collect();
    for method in ["POST", "PUT", "PATCH"] {
        assert!(writes.iter().any(|w| w.method == method), "{writes:?}");
    }
    for w in &writes {
        assert!(
            w.query.split('&').any(|kv| kv == "fieldManager=portico"),
            "{} {} ?{}",
            w.method,
            w.path,
            w.query
        );
    }
}
