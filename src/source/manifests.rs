//! The manifests directory source (`portico --manifests DIR`): the files `kubectl apply -f DIR`
//! takes, read once at start and then watched.
//!
//! What is read:
//! - every `*.yaml`, `*.yml` and `*.json` regular file under the directory, recursively,
//!   following symbolic links (a directory reached twice, e.g. through a link loop, is read
//!   once); anything else with such a name (a FIFO, socket, device or dangling link) is an
//!   error naming what it is, and is never opened for reading;
//! - a file larger than [`ManifestOptions::max_file_bytes`] is an error, and is not read;
//! - while watching, a file changed in place (truncated and rewritten) is read once it has
//!   settled (see [`ManifestDir::settling`]); one renamed into place at once;
//! - entries whose name starts with `.` are skipped, files and directories alike: editor swap
//!   and temporary files, and the internals of a Kubernetes ConfigMap volume (`..data`,
//!   `..2024_01_01_00_00_00.123`), which hold the same files again and would otherwise define
//!   every object twice;
//! - YAML files may hold several documents (`---`); empty and comment-only documents are
//!   skipped; a document whose `kind` ends in `List` and that has an `items` array stands for
//!   its items; JSON files may hold a stream of values;
//! - namespaced objects without a namespace get `default`.
//!
//! Problems are data ([`ManifestProblem`]) and are logged once, when they appear (again when
//! the file changes and still has them):
//! - a document of a kind Portico does not read (a Deployment) is a warning, and skipped;
//! - a YAML/JSON error, or a document that is not a Kubernetes object at all (not a mapping, no
//!   `apiVersion` or `kind`, which `kubectl apply` rejects too) or is of a kind Portico reads
//!   but fails its schema, is an error that makes the whole file *broken*: it keeps
//!   contributing the objects of its last good parse (none if it never had one), so that a
//!   half-saved edit never deletes routes; an unreadable or non-UTF-8 file is treated the same;
//! - a file that is deleted takes its objects with it; a directory that cannot be read keeps
//!   the files last seen under it;
//! - one key defined in two files: the later path (in sorted order) wins, which is reported.

mod dir;
mod parse;
mod watch;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};

pub use dir::{ManifestDir, Rescan};
pub use parse::{FileParse, parse_file};
pub use watch::{WatchBackend, run, run_with};

use crate::source::Object;

/// How the files of a manifests directory are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ManifestOptions {
    /// A file larger than this is not read: it is an error, and keeps the objects of its last
    /// good read (`--manifests-max-file-bytes`).
    pub max_file_bytes: u64,
}

impl ManifestOptions {
    /// The default `max_file_bytes`: 16 MiB, far above any hand-written manifest, and low
    /// enough that one file cannot take a large share of memory.
    pub const DEFAULT_MAX_FILE_BYTES: u64 = 16 << 20;
}

impl Default for ManifestOptions {
    fn default() -> Self {
        ManifestOptions {
            max_file_bytes: Self::DEFAULT_MAX_FILE_BYTES,
        }
    }
}

/// Something wrong with a manifest file, located as precisely as known.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ManifestProblem {
    /// The file (or directory) concerned, as reached from the manifests directory.
    pub file: PathBuf,
    /// The 1-based index of the document in the file, when it concerns one.
    pub document: Option<usize>,
    /// The 1-based line in the file, when known.
    pub line: Option<usize>,
    /// The 1-based column, when known.
    pub column: Option<usize>,
    /// What is wrong (control characters escaped).
    pub reason: String,
    /// True when the file (or directory) cannot be used: a YAML/JSON error, a malformed
    /// document, a read error. False for a warning: something skipped or overridden while
    /// the rest is used (a kind Portico does not read, a key defined twice).
    pub error: bool,
}

// === impl ManifestProblem ===

impl ManifestProblem {
    /// An error: the file (or directory) cannot be used. Control characters in `reason` are
    /// escaped so that it is safe to log.
    pub fn error(
        file: &Path,
        document: Option<usize>,
        at: Option<(usize, usize)>,
        reason: impl AsRef<str>,
    ) -> Self {
        ManifestProblem {
            error: true,
            ..ManifestProblem::warning(file, document, at, reason)
        }
    }

    /// A warning: something was skipped or overridden, the rest is used. Control characters in
    /// `reason` are escaped so that it is safe to log.
    pub fn warning(
        file: &Path,
        document: Option<usize>,
        at: Option<(usize, usize)>,
        reason: impl AsRef<str>,
    ) -> Self {
        let reason = reason.as_ref();
        let reason = if reason.chars().any(char::is_control) {
            reason.chars().flat_map(char::escape_debug).collect()
        } else {
            reason.to_string()
        };
        ManifestProblem {
            file: file.to_path_buf(),
            document,
            line: at.map(|(line, _)| line),
            column: at.map(|(_, column)| column).filter(|&c| c > 0),
            reason,
            error: false,
        }
    }

    /// Whether this is an error (see [`ManifestProblem::error`]) rather than a warning.
    pub fn is_error(&self) -> bool {
        self.error
    }
}

impl fmt::Display for ManifestProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        let mut separator = ": ";
        if let Some(document) = self.document {
            write!(f, "{separator}document {document}")?;
            separator = ", ";
        }
        if let Some(line) = self.line {
            write!(f, "{separator}line {line}")?;
            if let Some(column) = self.column {
                write!(f, ", column {column}")?;
            }
        }
        write!(f, ": {}", self.reason)
    }
}

/// Why the manifests source could not run.
#[derive(Debug, thiserror::Error)]
pub enum ManifestsError {
    /// The manifests directory is missing, not a directory or unreadable.
    #[error("cannot read manifests directory {}", path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why it cannot be read.
        source: std::io::Error,
    },
    /// No file watcher, not even the polling one, could be created.
    #[error("cannot watch manifests directory {}", path.display())]
    Watch {
        /// The directory.
        path: PathBuf,
        /// The watcher's error.
        source: notify::Error,
    },
    /// The background task that reads the directory failed.
    #[error("the manifests directory reader failed")]
    Reader(#[from] tokio::task::JoinError),
}

/// Reads the directory once, for `portico check`: the objects (sorted by key; broken files
/// contribute none) and every problem found.
pub fn load_dir(dir: &Path) -> Result<(Vec<Object>, Vec<ManifestProblem>), ManifestsError> {
    let mut state = ManifestDir::new(dir.to_path_buf())?;
    state.rescan();
    Ok((state.objects().cloned().collect(), state.problems()))
}
