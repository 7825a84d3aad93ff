//! Portico: a Kubernetes ingress controller.
//!
//! Sources ([`source`]) turn a cluster or a directory of manifests into events; the
//! [`controller`] applies them to the [`store`], rebuilds a [`snapshot::Snapshot`] with the pure
//! [`snapshot::build`] and publishes it atomically. Data planes read the snapshot and never
//! import a source. See ARCHITECTURE.md.

pub mod admin;
pub mod check;
pub mod config;
pub mod controller;
pub mod echo;
pub mod egress;
pub mod health;
pub mod l4;
pub mod lru;
pub mod metrics;
pub mod proxy;
pub mod redact;
pub mod resources;
pub mod run;
pub mod serve;
pub mod snapshot;
pub mod source;
pub mod store;

pub use run::{RunError, run};
