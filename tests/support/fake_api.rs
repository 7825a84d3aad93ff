//! A fake Kubernetes API server on loopback, speaking the wire format kube-rs consumes: JSON
//! objects and lists with `metadata.resourceVersion`, and watch streams of
//! `{"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object": …}` lines. Tests drive it:
//! apply and delete objects (watchers see them), expire watches with a 410 mid-stream, drop
//! connections, take it down, and read what clients wrote (the request log).
//!
//! Objects are kept in one map; every change gets the next resourceVersion and is kept in a
//! history, so a watch from resourceVersion N first gets the changes after N. Watches register
//! under the same lock as the history read, so nothing falls between a LIST and its WATCH.

mod serve;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use hyper::body::Bytes;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// The resources the fake serves: apiVersion, kind, plural, namespaced.
const RESOURCES: &[(&str, &str, &str, bool)] = &[
    (
        "networking.k8s.io/v1",
        "IngressClass",
        "ingressclasses",
        false,
    ),
    ("networking.k8s.io/v1", "Ingress", "ingresses", true),
    ("v1", "Service", "services", true),
    (
        "discovery.k8s.io/v1",
        "EndpointSlice",
        "endpointslices",
        true,
    ),
    ("v1", "Endpoints", "endpoints", true),
    ("v1", "Secret", "secrets", true),
    ("v1", "Namespace", "namespaces", false),
    ("v1", "ConfigMap", "configmaps", true),
    ("v1", "Pod", "pods", true),
    ("v1", "Node", "nodes", false),
    ("coordination.k8s.io/v1", "Lease", "leases", true),
    ("events.k8s.io/v1", "Event", "events", true),
];

/// An index into `RESOURCES`.
type Res = usize;

/// (resource, namespace, name); the namespace is empty for cluster-scoped resources.
type Key = (Res, String, String);

/// One request a client made.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Option<Value>,
}

/// What a watch selects, and where its lines go.
struct Watch {
    res: Res,
    namespace: Option<String>,
    fields: Vec<(String, String)>,
    labels: Vec<(String, String)>,
    tx: mpsc::UnboundedSender<Result<Bytes, std::io::Error>>,
}

/// One change, for watches that resume from an older resourceVersion.
struct Change {
    rv: u64,
    kind: &'static str,
    key: Key,
    object: Value,
}

#[derive(Default)]
struct State {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: Vec<Change>,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted: u64,
    watches: Vec<Watch>,
    log: Vec<Logged>,
    down: bool,
    /// Resources whose reads (get, list, watch) RBAC forbids: 403.
    forbidden: Vec<Res>,
}

/// The fake API server.
pub struct FakeApi {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeApi {
    pub async fn start() -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let task = tokio::spawn(serve::accept(listener, state.clone()));
        FakeApi { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig pointing at the fake (namespace `portico`) into `dir`.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \"{}\"}}\nusers:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: fake, namespace: portico}}\ncurrent-context: fake\n",
            self.url()
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Creates or replaces an object (as `kubectl apply` would); watchers see it.
    pub fn apply(&self, object: Value) -> Value {
        let key = key_of(&object);
        self.state().put(key, object)
    }

    /// Applies every object of a multi-document YAML text.
    pub fn apply_yaml(&self, yaml: &str) {
        for object in yaml_values(yaml) {
            self.apply(object);
        }
    }

    /// Deletes an object; watchers get DELETED.
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) {
        let key = self.key(kind, namespace, name);
        self.state().remove(&key, true);
    }

    /// Deletes an object without telling the watchers (as if it happened while they were
    /// away): only a relist shows it is gone.
    pub fn delete_quietly(&self, kind: &str, namespace: &str, name: &str) {
        let key = self.key(kind, namespace, name);
        self.state().remove(&key, false);
    }

    /// Compacts the history: every open watch gets an ERROR 410 (Expired) line and ends, and
    /// watches from an older resourceVersion are refused the same way.
    pub fn expire_watches(&self) {
        let mut s = self.state();
        s.compacted = s.rv + 1;
        s.history.clear();
        let line = expired_line(s.rv);
        for w in s.watches.drain(..) {
            let _ = w.tx.send(Ok(line.clone()));
        }
    }

    /// Drops every watch connection abruptly (no end of the chunked body).
    pub fn drop_watches(&self) {
        for w in self.state().watches.drain(..) {
            let _ = w.tx.send(Err(std::io::Error::other("connection dropped")));
        }
    }

    /// Sends a BOOKMARK with the current resourceVersion on every watch.
    pub fn bookmark(&self) {
        let s = self.state();
        for w in &s.watches {
            let (api_version, kind, _, _) = RESOURCES[w.res];
            let object = json!({"apiVersion": api_version, "kind": kind,
                                "metadata": {"resourceVersion": s.rv.to_string()}});
            let _ = w.tx.send(Ok(line("BOOKMARK", &object)));
        }
    }

    /// Down: connections are closed without an answer, open watches are dropped.
    pub fn set_down(&self, down: bool) {
        if down {
            self.drop_watches();
        }
        self.state().down = down;
    }

    /// Forbids (as RBAC would) reading every object of a kind: 403 Forbidden.
    pub fn forbid(&self, kind: &str) {
        let res = res_of_kind(kind);
        self.state().forbidden.push(res);
    }

    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let key = self.key(kind, namespace, name);
        self.state().objects.get(&key).cloned()
    }

    /// Every object of a kind.
    pub fn list(&self, kind: &str) -> Vec<Value> {
        let res = res_of_kind(kind);
        let s = self.state();
        s.objects
            .iter()
            .filter(|(k, _)| k.0 == res)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn requests(&self) -> Vec<Logged> {
        self.state().log.clone()
    }

    /// The requests with this method whose path ends with `suffix`.
    pub fn requests_to(&self, method: &str, suffix: &str) -> Vec<Logged> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method && r.path.ends_with(suffix))
            .collect()
    }

    fn key(&self, kind: &str, namespace: &str, name: &str) -> Key {
        let res = res_of_kind(kind);
        let ns = if RESOURCES[res].3 { namespace } else { "" };
        (res, ns.to_string(), name.to_string())
    }
}

impl State {
    /// Stores an object with the next resourceVersion (uid, creationTimestamp and
    /// managedFields kept from the stored one, or made up); returns the stored object.
    fn put(&mut self, key: Key, mut object: Value) -> Value {
        self.rv += 1;
        let previous = self.objects.get(&key).cloned();
        let existed = previous.is_some();
        let meta = object["metadata"].as_object_mut().unwrap();
        meta.insert("resourceVersion".into(), json!(self.rv.to_string()));
        if RESOURCES[key.0].3 {
            meta.insert("namespace".into(), json!(key.1));
        }
        for field in ["uid", "creationTimestamp", "managedFields"] {
            let kept = previous
                .as_ref()
                .and_then(|p| p["metadata"].get(field))
                .cloned();
            let fresh = match field {
                "uid" => json!(format!("uid-{}-{}", key.2, self.rv)),
                "creationTimestamp" => json!("2026-01-01T00:00:00Z"),
                _ => json!([{"manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1",
                             "fieldsV1": {"f:metadata": {}}}]),
            };
            if !meta.contains_key(field) {
                meta.insert(field.into(), kept.unwrap_or(fresh));
            }
        }
        self.objects.insert(key.clone(), object.clone());
        let kind = if existed { "MODIFIED" } else { "ADDED" };
        self.notify(kind, key, object.clone());
        object
    }

    fn remove(&mut self, key: &Key, tell: bool) -> Option<Value> {
        let mut object = self.objects.remove(key)?;
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        if tell {
            self.notify("DELETED", key.clone(), object.clone());
        }
        Some(object)
    }

    fn notify(&mut self, kind: &'static str, key: Key, object: Value) {
        let text = line(kind, &object);
        self.watches
            .retain(|w| !w.selects(&key, &object) || w.tx.send(Ok(text.clone())).is_ok());
        self.history.push(Change {
            rv: self.rv,
            kind,
            key,
            object,
        });
    }
}

impl Watch {
    fn selects(&self, key: &Key, object: &Value) -> bool {
        key.0 == self.res
            && self.namespace.as_ref().is_none_or(|ns| *ns == key.1)
            && self.fields.iter().all(|(f, v)| match f.strip_suffix('!') {
                // `field!=value`.
                Some(f) => field(object, f) != Some(v.as_str()),
                None => field(object, f) == Some(v.as_str()),
            })
            && self
                .labels
                .iter()
                .all(|(l, v)| object["metadata"]["labels"][l].as_str() == Some(v.as_str()))
    }
}

/// A field selector's field: `type`, `metadata.name`, `metadata.namespace`, `spec.nodeName`.
fn field<'a>(object: &'a Value, path: &str) -> Option<&'a str> {
    path.split('.').try_fold(object, |v, k| v.get(k))?.as_str()
}

/// One watch stream line.
fn line(kind: &str, object: &Value) -> Bytes {
    let mut text = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap();
    text.push(b'\n');
    Bytes::from(text)
}

fn expired_line(rv: u64) -> Bytes {
    line(
        "ERROR",
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("too old resource version (current {rv})"),
                "reason": "Expired", "code": 410}),
    )
}

fn res_of_kind(kind: &str) -> Res {
    RESOURCES
        .iter()
        .position(|r| r.1 == kind)
        .unwrap_or_else(|| panic!("the fake API does not serve {kind}"))
}

fn key_of(object: &Value) -> Key {
    let res = res_of_kind(object["kind"].as_str().unwrap());
    let ns = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default");
    let ns = if RESOURCES[res].3 { ns } else { "" };
    let name = object["metadata"]["name"].as_str().unwrap();
    (res, ns.to_string(), name.to_string())
}

/// The documents of a YAML text, as JSON values.
pub fn yaml_values(yaml: &str) -> Vec<Value> {
    let mut docs = vec![String::new()];
    for l in yaml.lines() {
        if l.trim_end() == "---" {
            docs.push(String::new());
        } else {
            let doc = docs.last_mut().unwrap();
            doc.push_str(l);
            doc.push('\n');
        }
    }
    docs.iter()
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_saphyr::from_str::<Value>(d).unwrap())
        .collect()
}
