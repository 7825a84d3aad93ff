//! Diagnostics about Ingresses become Kubernetes Events on them (events.k8s.io/v1, type
//! Warning), so `kubectl describe ingress` says why a rule was dropped.
//!
//! - Only the leader publishes (every replica builds the same diagnostics).
//! - One Event per problem: a diagnostic (Ingress uid, severity, field, reason) names its Event
//!   (the Ingress's name and a digest of the problem), so whichever replica leads, the problem
//!   has one Event. It is created when the diagnostic appears; if it exists already (an earlier
//!   leader published it, or the problem went away and came back) its series is bumped instead
//!   (count and last observed time, a merge patch). While it persists the series is bumped
//!   every 30 minutes, which keeps it from expiring (the API server's event TTL is one hour).
//! - Rate-limited: a token bucket (burst 25, then one per second) over all Events; what is
//!   held back goes out on the next tick. Publishing is best effort: a failed request is tried
//!   again on the next build.
//!
//! kube-runtime's `Recorder` is not used: it keys its series on (reason, action, object) and
//! not the note, so two different problems of one Ingress would merge into one series that
//! keeps showing the first message.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as KubeEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::Patch;
use kube::{Api, Client};
use serde_json::json;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::status::Inputs;
use crate::snapshot::{CONTROLLER_NAME, Diagnostic, Severity};
use crate::source::Kind;

/// How often the series of a persisting diagnostic's Event is bumped.
const REPEAT: Duration = Duration::from_secs(30 * 60);
/// Events that may be sent at once.
const BURST: f64 = 25.0;
/// Events per second after the burst.
const RATE: f64 = 1.0;
/// The longest `note` the API server accepts (bytes).
const MAX_NOTE: usize = 1024;

/// One diagnostic about one Ingress (by uid, so a re-created Ingress gets its own Events).
pub(super) type Key = (String, Severity, String, String);

/// The Event published for a diagnostic.
#[derive(Debug)]
struct Sent {
    namespace: String,
    name: String,
    count: i32,
    at: Instant,
}

/// A diagnostic to publish, with what the Event needs.
pub(super) struct Wanted {
    key: Key,
    regarding: ObjectReference,
    diagnostic: Diagnostic,
}

/// Runs forever: publishes while we lead.
pub(super) async fn run(client: Client, mut inputs: Inputs, identity: String) {
    let mut publisher = Publisher {
        client,
        instance: format!("{CONTROLLER_NAME}/{identity}")
            .chars()
            .take(128)
            .collect(),
        sent: BTreeMap::new(),
        bucket: Bucket::new(Instant::now()),
    };
    while inputs.ready().await {
        while inputs.leading() {
            let held_back = publisher.sync(&inputs).await;
            let tick = tokio::time::sleep(Duration::from_secs(1));
            tokio::select! {
                changed = inputs.builds.changed() => if changed.is_err() { return },
                changed = inputs.leader.changed() => if changed.is_err() { return },
                () = tick, if held_back => {}
                () = tokio::time::sleep(REPEAT) => {}
            }
        }
        publisher.sent.clear();
    }
}

/// Publishes Events.
struct Publisher {
    client: Client,
    instance: String,
    sent: BTreeMap<Key, Sent>,
    bucket: Bucket,
}

// === impl Publisher ===

impl Publisher {
    /// Publishes what is due; true when something had to wait.
    async fn sync(&mut self, inputs: &Inputs) -> bool {
        let (wanted, mut waiting) = wanted(inputs);
        let keys: std::collections::BTreeSet<&Key> = wanted.iter().map(|w| &w.key).collect();
        self.sent.retain(|k, _| keys.contains(k));
        for w in &wanted {
            let due = self
                .sent
                .get(&w.key)
                .is_none_or(|s| s.at.elapsed() >= REPEAT);
            if !due {
                continue;
            }
            if !self.bucket.take(Instant::now()) {
                waiting = true;
                break;
            }
            self.publish(w).await;
        }
        waiting
    }

    async fn publish(&mut self, w: &Wanted) {
        let result = match self.sent.remove(&w.key) {
            Some(sent) => match self.bump(&sent.namespace, &sent.name, sent.count).await {
                Err(kube::Error::Api(s)) if s.is_not_found() => self.create(w).await,
                bumped => bumped,
            },
            None => self.create(w).await,
        };
        match result {
            Ok(sent) => {
                self.sent.insert(w.key.clone(), sent);
            }
            Err(error) => warn!(object = %w.diagnostic.object, %error, "cannot publish an Event"),
        }
    }

    /// Creates the Event of a diagnostic; if it exists already (published by an earlier
    /// leader, or before the diagnostic went away and came back), bumps its series instead.
    async fn create(&mut self, w: &Wanted) -> Result<Sent, kube::Error> {
        let now = Timestamp::now();
        let namespace = w.diagnostic.object.namespace.clone();
        let name = event_name(&w.diagnostic.object.name, &w.key);
        let (reason, note) = describe(&w.diagnostic);
        let event = KubeEvent {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some("Warning".to_string()),
            reason: Some(reason.to_string()),
            action: Some("Build".to_string()),
            note: Some(note),
            regarding: Some(w.regarding.clone()),
            reporting_controller: Some(CONTROLLER_NAME.to_string()),
            reporting_instance: Some(self.instance.clone()),
            ..KubeEvent::default()
        };
        let api: Api<KubeEvent> = Api::namespaced(self.client.clone(), &namespace);
        match api.create(&super::post_params(), &event).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_already_exists() => {
                let existing = api.get(&name).await?;
                let count = existing.series.map_or(1, |s| s.count);
                return self.bump(&namespace, &name, count).await;
            }
            Err(error) => return Err(error),
        }
        debug!(object = %w.diagnostic.object, event = %name, "Event created");
        Ok(Sent {
            namespace,
            name,
            count: 1,
            at: Instant::now(),
        })
    }

    /// Bumps the series of an Event already published (count and last observed time).
    async fn bump(&self, namespace: &str, name: &str, count: i32) -> Result<Sent, kube::Error> {
        let count = count.saturating_add(1);
        let patch =
            json!({"series": {"count": count, "lastObservedTime": MicroTime(Timestamp::now())}});
        let api: Api<KubeEvent> = Api::namespaced(self.client.clone(), namespace);
        api.patch(name, &super::patch_params(), &Patch::Merge(&patch))
            .await?;
        debug!(event = %name, count, "Event series bumped");
        Ok(Sent {
            namespace: namespace.to_string(),
            name: name.to_string(),
            count,
            at: Instant::now(),
        })
    }
}

/// The Event's name: the Ingress's name and a digest of the problem (Ingress uid, severity,
/// field, reason), so every leader names one problem's Event alike and updates it rather than
/// creating another.
pub(super) fn event_name(ingress: &str, key: &Key) -> String {
    let (uid, severity, field, reason) = key;
    let severity = match severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    let mut text = Vec::new();
    for part in [uid.as_str(), severity, field, reason] {
        text.extend_from_slice(part.as_bytes());
        text.push(0);
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, &text);
    let hex: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let ingress: String = ingress.chars().take(200).collect();
    format!("{ingress}.{hex}")
}

/// The diagnostics about Ingresses we know (with their uid), and whether some had to be
/// skipped because the Ingress has not been seen yet.
fn wanted(inputs: &Inputs) -> (Vec<Wanted>, bool) {
    let diagnostics = inputs.builds.borrow().diagnostics.clone();
    let ingresses = inputs.ingresses.borrow();
    let mut missing = false;
    let mut wanted = Vec::new();
    for d in diagnostics
        .iter()
        .filter(|d| d.object.kind == Kind::Ingress)
    {
        let key = (d.object.namespace.clone(), d.object.name.clone());
        let Some(uid) = ingresses.get(&key).and_then(|i| i.metadata.uid.clone()) else {
            missing = true;
            continue;
        };
        let regarding = ObjectReference {
            api_version: Some("networking.k8s.io/v1".to_string()),
            kind: Some("Ingress".to_string()),
            namespace: Some(key.0),
            name: Some(key.1),
            uid: Some(uid.clone()),
            ..ObjectReference::default()
        };
        wanted.push(Wanted {
            key: (uid, d.severity, d.field.clone(), d.reason.clone()),
            regarding,
            diagnostic: d.clone(),
        });
    }
    (wanted, missing)
}

/// The Event's reason and note for a diagnostic.
pub(super) fn describe(d: &Diagnostic) -> (&'static str, String) {
    let reason = match d.severity {
        Severity::Error => "ConfigurationError",
        Severity::Warning => "ConfigurationWarning",
    };
    let mut note = if d.field.is_empty() {
        d.reason.clone()
    } else {
        format!("{}: {}", d.field, d.reason)
    };
    if note.len() > MAX_NOTE {
        let mut end = MAX_NOTE - 3;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push_str("...");
    }
    (reason, note)
}

/// A token bucket: `BURST` tokens, refilled at `RATE` per second.
#[derive(Debug)]
pub(super) struct Bucket {
    tokens: f64,
    last: Instant,
}

// === impl Bucket ===

impl Bucket {
    /// A full bucket.
    pub(super) fn new(now: Instant) -> Self {
        Bucket {
            tokens: BURST,
            last: now,
        }
    }

    /// Takes a token if there is one.
    pub(super) fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * RATE).min(BURST);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
