//! What sources deliver: Kubernetes objects (k8s-openapi types) and the events that carry them.
//!
//! Every source (the manifests directory, the Kubernetes API) turns the outside world into
//! [`Event`]s; the controller applies them to the [`crate::store::ObjectStore`].

pub mod kubernetes;
pub mod manifests;

use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

/// The namespace given to namespaced objects that name none (what `kubectl apply` does).
pub const DEFAULT_NAMESPACE: &str = "default";

/// The kinds of object Portico reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Kind {
    /// networking.k8s.io/v1 IngressClass (cluster-scoped).
    IngressClass,
    /// networking.k8s.io/v1 Ingress.
    Ingress,
    /// v1 Service.
    Service,
    /// discovery.k8s.io/v1 EndpointSlice.
    EndpointSlice,
    /// v1 Endpoints (used only for Services without EndpointSlices).
    Endpoints,
    /// v1 Secret (TLS certificates).
    Secret,
    /// v1 Namespace (cluster-scoped).
    Namespace,
    /// v1 ConfigMap (only the controller's, `--configmap`).
    ConfigMap,
}

// === impl Kind ===

impl Kind {
    /// Every kind, in a fixed order.
    pub const ALL: [Kind; 8] = [
        Kind::IngressClass,
        Kind::Ingress,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Endpoints,
        Kind::Secret,
        Kind::Namespace,
        Kind::ConfigMap,
    ];

    /// The kind's name as it appears in manifests (`kind:`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::IngressClass => "IngressClass",
            Kind::Ingress => "Ingress",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Endpoints => "Endpoints",
            Kind::Secret => "Secret",
            Kind::Namespace => "Namespace",
            Kind::ConfigMap => "ConfigMap",
        }
    }

    /// The `apiVersion` Portico reads this kind in.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::IngressClass | Kind::Ingress => "networking.k8s.io/v1",
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            Kind::Service | Kind::Endpoints | Kind::Secret | Kind::Namespace | Kind::ConfigMap => {
                "v1"
            }
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn is_namespaced(self) -> bool {
        !matches!(self, Kind::IngressClass | Kind::Namespace)
    }

    /// The kind named by a manifest's `apiVersion` and `kind`, if Portico reads it.
    pub fn from_type_meta(api_version: &str, kind: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == kind && k.api_version() == api_version)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies one object: kind, namespace (empty for cluster-scoped kinds) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ObjectKey {
    /// The object's kind.
    pub kind: Kind,
    /// The namespace; empty for cluster-scoped kinds.
    pub namespace: String,
    /// The object's name.
    pub name: String,
}

// === impl ObjectKey ===

impl ObjectKey {
    /// A key; the namespace is dropped for cluster-scoped kinds.
    pub fn new(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        let namespace = if kind.is_namespaced() {
            namespace.into()
        } else {
            String::new()
        };
        ObjectKey {
            kind,
            namespace,
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// One object of a kind Portico reads, shared cheaply between the store and snapshots.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    /// An IngressClass.
    IngressClass(Arc<IngressClass>),
    /// An Ingress.
    Ingress(Arc<Ingress>),
    /// A Service.
    Service(Arc<Service>),
    /// An EndpointSlice.
    EndpointSlice(Arc<EndpointSlice>),
    /// An Endpoints object.
    Endpoints(Arc<Endpoints>),
    /// A Secret.
    Secret(Arc<Secret>),
    /// A Namespace.
    Namespace(Arc<Namespace>),
    /// A ConfigMap.
    ConfigMap(Arc<ConfigMap>),
}

/// Why a document could not become an [`Object`].
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// `apiVersion`/`kind` name something Portico does not read.
    #[error("kind {kind:?} (apiVersion {api_version:?}) is not one Portico reads")]
    UnsupportedKind {
        /// The document's apiVersion.
        api_version: String,
        /// The document's kind.
        kind: String,
    },
    /// The document lacks `metadata.name`.
    #[error("metadata.name is missing")]
    MissingName,
    /// The document does not match the kind's schema.
    #[error("{kind} does not match its schema: {reason}")]
    Schema {
        /// The kind it claimed to be.
        kind: Kind,
        /// The field found wrong, as a path (`data`, `data.tls.key`), when known.
        field: Option<String>,
        /// The decoder's reason; for a Secret, the field and the type expected, never a value
        /// ([`crate::redact::secret_schema_error`]).
        reason: String,
    },
}

// === impl Object ===

impl Object {
    /// Decodes one manifest document (already parsed into JSON) into an object, giving
    /// namespaced objects without a namespace the `default` one.
    pub fn from_value(value: serde_json::Value) -> Result<Object, ObjectError> {
        let field = |name: &str| value.get(name).and_then(|v| v.as_str()).unwrap_or("");
        let (api_version, kind_name) = (field("apiVersion"), field("kind"));
        let kind = Kind::from_type_meta(api_version, kind_name).ok_or_else(|| {
            ObjectError::UnsupportedKind {
                api_version: api_version.to_string(),
                kind: kind_name.to_string(),
            }
        })?;
        fn decode<T: serde::de::DeserializeOwned>(
            kind: Kind,
            value: serde_json::Value,
        ) -> Result<Arc<T>, ObjectError> {
            serde_json::from_value(value)
                .map(Arc::new)
                .map_err(|source| ObjectError::Schema {
                    kind,
                    field: None,
                    reason: source.to_string(),
                })
        }
        /// A Secret is decoded from a reference, so that a failure can be described from the
        /// value without quoting it.
        fn decode_secret(value: &serde_json::Value) -> Result<Arc<Secret>, ObjectError> {
            use serde::Deserialize;
            Secret::deserialize(value).map(Arc::new).map_err(|e| {
                let (field, reason) = crate::redact::secret_schema_error(value, &e.to_string());
                ObjectError::Schema {
                    kind: Kind::Secret,
                    field,
                    reason,
                }
            })
        }
        let mut object = match kind {
            Kind::IngressClass => Object::IngressClass(decode(kind, value)?),
            Kind::Ingress => Object::Ingress(decode(kind, value)?),
            Kind::Service => Object::Service(decode(kind, value)?),
            Kind::EndpointSlice => Object::EndpointSlice(decode(kind, value)?),
            Kind::Endpoints => Object::Endpoints(decode(kind, value)?),
            Kind::Secret => Object::Secret(decode_secret(&value)?),
            Kind::Namespace => Object::Namespace(decode(kind, value)?),
            Kind::ConfigMap => Object::ConfigMap(decode(kind, value)?),
        };
        if object.metadata().name.as_deref().unwrap_or("").is_empty() {
            return Err(ObjectError::MissingName);
        }
        object.default_namespace();
        Ok(object)
    }

    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Object::IngressClass(_) => Kind::IngressClass,
            Object::Ingress(_) => Kind::Ingress,
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::Endpoints(_) => Kind::Endpoints,
            Object::Secret(_) => Kind::Secret,
            Object::Namespace(_) => Kind::Namespace,
            Object::ConfigMap(_) => Kind::ConfigMap,
        }
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::IngressClass(o) => &o.metadata,
            Object::Ingress(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::Endpoints(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
            Object::Namespace(o) => &o.metadata,
            Object::ConfigMap(o) => &o.metadata,
        }
    }

    /// The object's key.
    pub fn key(&self) -> ObjectKey {
        let meta = self.metadata();
        ObjectKey::new(
            self.kind(),
            meta.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE),
            meta.name.as_deref().unwrap_or_default(),
        )
    }

    /// Sets `default` on namespaced objects without a namespace and clears the namespace of
    /// cluster-scoped ones, so that keys and metadata agree.
    fn default_namespace(&mut self) {
        fn fix(meta: &mut ObjectMeta, namespaced: bool) {
            if !namespaced {
                meta.namespace = None;
            } else if meta.namespace.as_deref().unwrap_or("").is_empty() {
                meta.namespace = Some(DEFAULT_NAMESPACE.to_string());
            }
        }
        let namespaced = self.kind().is_namespaced();
        match self {
            Object::IngressClass(o) => fix(&mut Arc::make_mut(o).metadata, namespaced),
            Object::Ingress(o) => fix(&mut Arc::make_mut(o).metadata, namespaced),
            Object::Service(o) => fix(&mut Arc::make_mut(o).metadata, namespaced),
            Object::EndpointSlice(o) => fix(&mut Arc::make_mut(o).metadata, namespaced),
            Object::Endpoints(o) => fix(&mut Arc::make_mut(o).metadata, namespaced),
            Object::Secret(o) => fix(&mut Arc::make_mut(o).metadata, namespaced),
            Object::Namespace(o) => fix(&mut Arc::make_mut(o).metadata, namespaced),
            Object::ConfigMap(o) => fix(&mut Arc::make_mut(o).metadata, namespaced),
        }
    }
}

/// What a source tells the controller.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The object was created or changed.
    Applied(Object),
    /// The object is gone.
    Deleted(ObjectKey),
    /// The source has delivered every object of this kind that existed when it started.
    Synced(Kind),
}
