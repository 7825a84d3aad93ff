//! Which Ingresses are Portico's, and in which order they take precedence.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

use super::BuildConfig;
use crate::snapshot::diagnostics::Diagnostic;
use crate::source::{Kind, ObjectKey};
use crate::store::ObjectStore;

/// The deprecated class annotation.
const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// Marks the cluster's default IngressClass.
const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// One of our Ingresses.
pub(super) struct OurIngress<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub ingress: &'a Arc<Ingress>,
}

/// Our Ingresses, in key order (namespace/name).
pub(super) fn our_ingresses<'a>(
    store: &'a ObjectStore,
    config: &BuildConfig,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<OurIngress<'a>> {
    let classes = Classes::new(store, &config.controller_classes);
    store
        .ingresses
        .iter()
        .filter(|(_, ing)| classes.is_ours(config, ing, diagnostics))
        .map(|((ns, name), ingress)| OurIngress {
            namespace: ns,
            name,
            ingress,
        })
        .collect()
}

// === impl OurIngress ===

impl OurIngress<'_> {
    /// The Ingress's key (allocated: only for what is compiled or reported).
    pub fn key(&self) -> ObjectKey {
        ObjectKey::new(Kind::Ingress, self.namespace, self.name)
    }

    /// The order in which conflicting claims are settled: oldest first (creationTimestamp;
    /// objects without one count as newest), then namespace/name.
    pub fn precedence(&self) -> impl Ord + '_ {
        let created = self.ingress.metadata.creation_timestamp.as_ref();
        (
            created.is_none(),
            created.map(|t| t.0),
            self.namespace,
            self.name,
        )
    }
}

/// The IngressClasses, decided once per build: whether each is ours, and whether one of ours
/// is the cluster's default.
struct Classes<'a> {
    ours: HashMap<&'a str, bool>,
    ours_is_default: bool,
}

// === impl Classes ===

impl<'a> Classes<'a> {
    fn new(store: &'a ObjectStore, controllers: &[String]) -> Self {
        let classes = &store.ingress_classes;
        Classes {
            ours: classes
                .iter()
                .map(|((_, name), c)| (name.as_str(), is_our_class(c, controllers)))
                .collect(),
            ours_is_default: classes
                .values()
                .any(|c| is_our_class(c, controllers) && is_default_class(c)),
        }
    }

    fn is_ours(
        &self,
        config: &BuildConfig,
        ing: &Ingress,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> bool {
        let spec_class = ing
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_deref());
        let annotation = ing
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(CLASS_ANNOTATION));
        match (spec_class, annotation) {
            (Some(class), _) => {
                let known = self.ours.get(class);
                if known.is_none() && class == config.ingress_class {
                    let key = ObjectKey::new(
                        Kind::Ingress,
                        ing.metadata.namespace.as_deref().unwrap_or_default(),
                        ing.metadata.name.as_deref().unwrap_or_default(),
                    );
                    let reason = format!(
                        "IngressClass {class:?} does not exist; the Ingress is not served until it does"
                    );
                    diagnostics.push(Diagnostic::warning(&key, "spec.ingressClassName", reason));
                }
                known.copied().unwrap_or(false)
            }
            (None, Some(class)) => {
                *class == config.ingress_class || self.ours.get(class.as_str()) == Some(&true)
            }
            (None, None) => config.watch_ingress_without_class || self.ours_is_default,
        }
    }
}

fn is_our_class(class: &IngressClass, controllers: &[String]) -> bool {
    let controller = class.spec.as_ref().and_then(|s| s.controller.as_deref());
    controller.is_some_and(|c| controllers.iter().any(|ours| ours == c))
}

fn is_default_class(class: &IngressClass) -> bool {
    class
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
        .is_some_and(|v| v == "true")
}
