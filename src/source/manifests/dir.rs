//! The state of a manifests directory between scans, and the diff a rescan produces.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{FileParse, ManifestOptions, ManifestProblem, ManifestsError, parse_file};
use crate::source::{Event, Object, ObjectKey};

/// A manifests directory as last read: per file its content and last good objects, per key
/// the files defining it, and the union of objects last reported. A rescan costs the reading
/// of the files plus work in proportion to the objects of the files that changed, not to all
/// objects. Blocking I/O: call it off the async runtime.
#[derive(Debug)]
pub struct ManifestDir {
    dir: PathBuf,
    options: ManifestOptions,
    files: BTreeMap<PathBuf, FileState>,
    /// Every definition of each key, in (path, position in the file) order: the last wins.
    defs: BTreeMap<ObjectKey, Vec<Definition>>,
    objects: BTreeMap<ObjectKey, Object>,
    /// Problems not tied to one file's content (unreadable directories, conflicts).
    dir_problems: BTreeSet<ManifestProblem>,
    readable: bool,
}

/// What a rescan found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rescan {
    /// Applied for new or changed objects, Deleted for keys gone, sorted by key.
    pub events: Vec<Event>,
    /// Problems that appeared with this rescan (to be logged); standing ones are not repeated.
    pub new_problems: Vec<ManifestProblem>,
}

/// One object as one file defines it.
#[derive(Debug)]
struct Definition {
    path: Arc<Path>,
    object: Object,
}

#[derive(Debug, Default)]
struct FileState {
    /// The bytes last read; `None` when the last read failed.
    content: Option<Vec<u8>>,
    /// The objects of the last good parse.
    good: Vec<Object>,
    /// The problems of the last read.
    problems: Vec<ManifestProblem>,
}

// === impl ManifestDir ===

impl ManifestDir {
    /// State for this directory with the default options, read nothing yet; fails when the
    /// directory cannot be read.
    pub fn new(dir: PathBuf) -> Result<Self, ManifestsError> {
        Self::with_options(dir, ManifestOptions::default())
    }

    /// State for this directory, read nothing yet; fails when the directory cannot be read.
    pub fn with_options(dir: PathBuf, options: ManifestOptions) -> Result<Self, ManifestsError> {
        if let Err(source) = fs::read_dir(&dir) {
            return Err(ManifestsError::Dir { path: dir, source });
        }
        Ok(ManifestDir {
            dir,
            options,
            files: BTreeMap::new(),
            defs: BTreeMap::new(),
            objects: BTreeMap::new(),
            dir_problems: BTreeSet::new(),
            readable: true,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the directory itself could be read at the last rescan.
    pub fn is_readable(&self) -> bool {
        self.readable
    }

    /// The objects as of the last rescan, sorted by key.
    pub fn objects(&self) -> impl Iterator<Item = &Object> {
        self.objects.values()
    }

    /// Every problem standing as of the last rescan, sorted.
    pub fn problems(&self) -> Vec<ManifestProblem> {
        let files = self.files.values().flat_map(|f| f.problems.iter());
        let all: BTreeSet<_> = files.chain(&self.dir_problems).cloned().collect();
        all.into_iter().collect()
    }

    /// Re-reads the directory, re-parses the files whose content changed and returns what
    /// changed since the last rescan.
    pub fn rescan(&mut self) -> Rescan {
        let listing = Listing::walk(&self.dir);
        self.readable = !listing.covers(&self.dir);
        let mut new_problems = Vec::new();
        // (path, its previous good objects) of every file whose good objects were replaced.
        let mut changed: Vec<(PathBuf, Vec<Object>)> = Vec::new();
        let gone: Vec<PathBuf> = (self.files.keys())
            .filter(|p| !listing.files.contains(*p) && !listing.covers(p))
            .cloned()
            .collect();
        for path in gone {
            if let Some(state) = self.files.remove(&path) {
                changed.push((path, state.good));
            }
        }
        for path in &listing.files {
            let state = self.files.entry(path.clone()).or_default();
            let (problems, replaced) = state.refresh(path, self.options.max_file_bytes);
            new_problems.extend(problems);
            if let Some(before) = replaced {
                changed.push((path.clone(), before));
            }
        }
        let events = self.redefine(changed);
        let standing: BTreeSet<_> = listing
            .problems
            .into_iter()
            .chain(self.conflicts())
            .collect();
        new_problems.extend(standing.difference(&self.dir_problems).cloned());
        self.dir_problems = standing;
        Rescan {
            events,
            new_problems,
        }
    }

    /// Replaces the definitions of the changed files by their current good objects, and
    /// returns the events for the keys whose winning object changed: Applied for new or
    /// changed objects, Deleted for keys gone, in key order.
    fn redefine(&mut self, changed: Vec<(PathBuf, Vec<Object>)>) -> Vec<Event> {
        let mut affected: BTreeSet<ObjectKey> = BTreeSet::new();
        for (path, before) in &changed {
            for object in before {
                let key = object.key();
                if let Some(defs) = self.defs.get_mut(&key) {
                    defs.retain(|d| *d.path != **path);
                    if defs.is_empty() {
                        self.defs.remove(&key);
                    }
                }
                affected.insert(key);
            }
        }
        for (path, _) in changed {
            let Some(state) = self.files.get(&path) else {
                continue;
            };
            let path: Arc<Path> = Arc::from(path);
            for object in &state.good {
                let key = object.key();
                let defs = self.defs.entry(key.clone()).or_default();
                // After the definitions of earlier paths and the earlier ones of this file.
                let at = defs.partition_point(|d| *d.path <= *path);
                let definition = Definition {
                    path: Arc::clone(&path),
                    object: object.clone(),
                };
                defs.insert(at, definition);
                affected.insert(key);
            }
        }
        affected
            .into_iter()
            .filter_map(|key| {
                let winner = self.defs.get(&key).and_then(|d| d.last());
                match (self.objects.get(&key), winner) {
                    (old, Some(new)) if old != Some(&new.object) => {
                        self.objects.insert(key, new.object.clone());
                        Some(Event::Applied(new.object.clone()))
                    }
                    (Some(_), None) => {
                        self.objects.remove(&key);
                        Some(Event::Deleted(key))
                    }
                    _ => None,
                }
            })
            .collect()
    }

    /// A key defined more than once goes to the later definition; each earlier one is reported
    /// where it is overridden.
    fn conflicts(&self) -> Vec<ManifestProblem> {
        let defined_twice = self.defs.iter().filter(|(_, defs)| defs.len() > 1);
        defined_twice
            .flat_map(|(key, defs)| {
                defs.windows(2).map(move |w| {
                    let reason = format!(
                        "{key} is also defined in {}; the definition here wins",
                        w[0].path.display()
                    );
                    ManifestProblem::warning(&w[1].path, None, None, reason)
                })
            })
            .collect()
    }
}

// === impl FileState ===

impl FileState {
    /// Re-reads the file; returns the problems to report (none when nothing changed), and
    /// the previous good objects when a good parse replaced them.
    fn refresh(&mut self, path: &Path, limit: u64) -> (Vec<ManifestProblem>, Option<Vec<Object>>) {
        match read::read(path, limit) {
            Ok(read) if self.content.as_ref() == Some(&read.bytes) => (Vec::new(), None),
            Ok(read::Contents { bytes, .. }) => {
                let parse = match std::str::from_utf8(&bytes) {
                    Ok(text) => parse_file(path, text),
                    Err(e) => broken(path, format!("the file is not UTF-8: {e}")),
                };
                let replaced =
                    (!parse.broken).then(|| std::mem::replace(&mut self.good, parse.objects));
                self.content = Some(bytes);
                self.problems = parse.problems;
                (self.problems.clone(), replaced)
            }
            Err(e) => {
                let problems = broken(path, e.reason()).problems;
                let new = self.content.is_some() || self.problems != problems;
                self.content = None;
                self.problems = problems;
                let report = if new {
                    self.problems.clone()
                } else {
                    Vec::new()
                };
                (report, None)
            }
        }
    }
}

fn broken(path: &Path, reason: String) -> FileParse {
    FileParse {
        objects: Vec::new(),
        problems: vec![ManifestProblem::error(path, None, None, reason)],
        broken: true,
    }
}

/// The manifest files found under a directory, and the directories that could not be read.
#[derive(Debug, Default)]
struct Listing {
    files: BTreeSet<PathBuf>,
    unreadable: Vec<PathBuf>,
    problems: Vec<ManifestProblem>,
}

// === impl Listing ===

impl Listing {
    fn walk(root: &Path) -> Listing {
        let mut listing = Listing::default();
        listing.walk_dir(root, &mut HashSet::new());
        listing
    }

    fn walk_dir(&mut self, dir: &Path, visited: &mut HashSet<PathBuf>) {
        let entries = match fs::canonicalize(dir).and_then(|c| Ok((c, fs::read_dir(dir)?))) {
            Ok((canonical, entries)) => {
                // A directory reached again through a link is skipped (no loops, no duplicates).
                if !visited.insert(canonical) {
                    return;
                }
                entries
            }
            Err(e) => return self.unreadable(dir, &e),
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => return self.unreadable(dir, &e),
            };
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            // `fs::metadata` follows links; anything named like a manifest that is not a
            // directory is listed, and what is not a regular file (a FIFO, a device, a dangling
            // link) is then reported without being read, keeping its last objects.
            match fs::metadata(&path) {
                Ok(meta) if meta.is_dir() => self.walk_dir(&path, visited),
                _ if is_manifest(&path) => {
                    self.files.insert(path);
                }
                _ => {}
            }
        }
    }

    fn unreadable(&mut self, dir: &Path, e: &io::Error) {
        let reason = format!("cannot read the directory: {e}");
        self.problems
            .push(ManifestProblem::error(dir, None, None, reason));
        self.unreadable.push(dir.to_path_buf());
    }

    /// Whether a path lies under a directory that could not be read.
    fn covers(&self, path: &Path) -> bool {
        self.unreadable.iter().any(|dir| path.starts_with(dir))
    }
}

/// The extensions `kubectl apply -f DIR` reads (case-sensitive, as there).
fn is_manifest(path: &Path) -> bool {
    path.extension()
        .is_some_and(|ext| ext == "yaml" || ext == "yml" || ext == "json")
}

mod read;

#[cfg(test)]
mod tests;
