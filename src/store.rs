//! The current objects, keyed by kind/namespace/name, fed by [`Event`]s.
//!
//! Ordered maps keep iteration independent of arrival order, which is what makes
//! [`crate::snapshot::build`] deterministic.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

use crate::source::{Event, Kind, Object, ObjectKey};

/// `(namespace, name)`; the namespace is empty for cluster-scoped kinds.
pub type NsName = (String, String);

/// Objects of one kind by namespace and name.
pub type Objects<T> = BTreeMap<NsName, Arc<T>>;

/// Every object the sources delivered, by kind.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObjectStore {
    /// IngressClasses by ("", name).
    pub ingress_classes: Objects<IngressClass>,
    /// Ingresses.
    pub ingresses: Objects<Ingress>,
    /// Services.
    pub services: Objects<Service>,
    /// EndpointSlices.
    pub endpoint_slices: Objects<EndpointSlice>,
    /// Endpoints.
    pub endpoints: Objects<Endpoints>,
    /// Secrets.
    pub secrets: Objects<Secret>,
    /// Namespaces by ("", name).
    pub namespaces: Objects<Namespace>,
}

// === impl ObjectStore ===

impl ObjectStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding these objects (later ones replace earlier ones with the same key).
    pub fn from_objects(objects: impl IntoIterator<Item = Object>) -> Self {
        let mut store = Self::new();
        for object in objects {
            store.apply(Event::Applied(object));
        }
        store
    }

    /// Applies one event; true when the objects changed.
    pub fn apply(&mut self, event: Event) -> bool {
        match event {
            Event::Applied(object) => self.insert(object),
            Event::Deleted(key) => self.remove(&key),
            Event::Synced(_) => false,
        }
    }

    /// Number of objects of every kind.
    pub fn len(&self) -> usize {
        self.ingress_classes.len()
            + self.ingresses.len()
            + self.services.len()
            + self.endpoint_slices.len()
            + self.endpoints.len()
            + self.secrets.len()
            + self.namespaces.len()
    }

    /// True when the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The object with this key, if present.
    pub fn get(&self, key: &ObjectKey) -> Option<Object> {
        let k = (key.namespace.clone(), key.name.clone());
        match key.kind {
            Kind::IngressClass => self
                .ingress_classes
                .get(&k)
                .cloned()
                .map(Object::IngressClass),
            Kind::Ingress => self.ingresses.get(&k).cloned().map(Object::Ingress),
            Kind::Service => self.services.get(&k).cloned().map(Object::Service),
            Kind::EndpointSlice => self
                .endpoint_slices
                .get(&k)
                .cloned()
                .map(Object::EndpointSlice),
            Kind::Endpoints => self.endpoints.get(&k).cloned().map(Object::Endpoints),
            Kind::Secret => self.secrets.get(&k).cloned().map(Object::Secret),
            Kind::Namespace => self.namespaces.get(&k).cloned().map(Object::Namespace),
        }
    }

    fn insert(&mut self, object: Object) -> bool {
        let key = object.key();
        let k = (key.namespace, key.name);
        match object {
            Object::IngressClass(o) => put(&mut self.ingress_classes, k, o),
            Object::Ingress(o) => put(&mut self.ingresses, k, o),
            Object::Service(o) => put(&mut self.services, k, o),
            Object::EndpointSlice(o) => put(&mut self.endpoint_slices, k, o),
            Object::Endpoints(o) => put(&mut self.endpoints, k, o),
            Object::Secret(o) => put(&mut self.secrets, k, o),
            Object::Namespace(o) => put(&mut self.namespaces, k, o),
        }
    }

    fn remove(&mut self, key: &ObjectKey) -> bool {
        let k = (key.namespace.clone(), key.name.clone());
        match key.kind {
            Kind::IngressClass => self.ingress_classes.remove(&k).is_some(),
            Kind::Ingress => self.ingresses.remove(&k).is_some(),
            Kind::Service => self.services.remove(&k).is_some(),
            Kind::EndpointSlice => self.endpoint_slices.remove(&k).is_some(),
            Kind::Endpoints => self.endpoints.remove(&k).is_some(),
            Kind::Secret => self.secrets.remove(&k).is_some(),
            Kind::Namespace => self.namespaces.remove(&k).is_some(),
        }
    }
}

/// Inserts unless an equal object is already there; true when something changed.
fn put<T: PartialEq>(map: &mut Objects<T>, key: NsName, object: Arc<T>) -> bool {
    match map.get(&key) {
        Some(old) if Arc::ptr_eq(old, &object) || **old == *object => false,
        _ => {
            map.insert(key, object);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::ObjectError;
    use serde_json::json;

    fn svc(ns: &str, name: &str, port: i32) -> Object {
        Object::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"ports": [{"port": port}]}
        }))
        .unwrap()
    }

    #[test]
    fn apply_reports_changes_only() {
        let mut store = ObjectStore::new();
        assert!(store.apply(Event::Applied(svc("a", "s", 80))));
        assert!(
            !store.apply(Event::Applied(svc("a", "s", 80))),
            "same object again"
        );
        assert!(
            store.apply(Event::Applied(svc("a", "s", 81))),
            "changed object"
        );
        assert!(!store.apply(Event::Synced(Kind::Service)));
        let key = ObjectKey::new(Kind::Service, "a", "s");
        assert!(store.get(&key).is_some());
        assert!(store.apply(Event::Deleted(key.clone())));
        assert!(!store.apply(Event::Deleted(key)), "already gone");
        assert!(store.is_empty());
    }

    #[test]
    fn namespace_defaults_and_cluster_scope() {
        let o = Object::from_value(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}
        }))
        .unwrap();
        assert_eq!(o.key(), ObjectKey::new(Kind::Service, "default", "s"));
        let c = Object::from_value(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": {"name": "portico", "namespace": "ignored"}
        }))
        .unwrap();
        assert_eq!(c.key().namespace, "");
        assert!(c.metadata().namespace.is_none());
    }

    #[test]
    fn unsupported_and_invalid_documents() {
        let e = Object::from_value(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "x"}}))
        .unwrap_err();
        assert!(matches!(e, ObjectError::UnsupportedKind { .. }), "{e}");
        let e = Object::from_value(json!({"apiVersion": "v1", "kind": "Service", "metadata": {}}))
            .unwrap_err();
        assert!(matches!(e, ObjectError::MissingName), "{e}");
        let e = Object::from_value(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "x"}, "spec": {"ports": "nope"}}))
        .unwrap_err();
        assert!(
            e.to_string().contains("Service does not match its schema"),
            "{e}"
        );
    }
}
