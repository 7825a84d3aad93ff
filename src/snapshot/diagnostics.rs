//! Diagnostics: what `build()` had to leave out or warn about, as data.

use std::fmt;

use serde::Serialize;

use crate::source::ObjectKey;

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Something was left out or cannot be served (`portico check` exits 1).
    Error,
    /// Served, but probably not as intended.
    Warning,
}

/// One problem found in one object: which object, which field, and why.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The object at fault.
    pub object: ObjectKey,
    /// The field path inside the object, e.g. `spec.rules[0].http.paths[1].path`.
    pub field: String,
    /// Why.
    pub reason: String,
}

// === impl Diagnostic ===

impl Diagnostic {
    /// An error about `object`'s `field`.
    pub fn error(object: &ObjectKey, field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::new(Severity::Error, object, field, reason)
    }

    /// A warning about `object`'s `field`.
    pub fn warning(
        object: &ObjectKey,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self::new(Severity::Warning, object, field, reason)
    }

    fn new(
        severity: Severity,
        object: &ObjectKey,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity,
            object: object.clone(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{severity}: {}", self.object)?;
        if !self.field.is_empty() {
            write!(f, " {}", self.field)?;
        }
        write!(f, ": {}", self.reason)
    }
}
