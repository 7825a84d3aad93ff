//! The manifests directory source (being written).
