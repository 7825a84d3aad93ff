//! The state of a manifests directory between scans, and the diff a rescan produces.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{FileParse, ManifestProblem, ManifestsError, parse_file};
use crate::source::{Event, Object, ObjectKey};

/// A manifests directory as last read: per file its content and last good objects, and the
/// union of objects last reported. Blocking I/O: call it off the async runtime.
#[derive(Debug)]
pub struct ManifestDir {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
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
    /// State for this directory, read nothing yet; fails when the directory cannot be read.
    pub fn new(dir: PathBuf) -> Result<Self, ManifestsError> {
        if let Err(source) = fs::read_dir(&dir) {
            return Err(ManifestsError::Dir { path: dir, source });
        }
        Ok(ManifestDir {
            dir,
            files: BTreeMap::new(),
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
        self.files
            .retain(|path, _| listing.files.contains(path) || listing.covers(path));
        for path in &listing.files {
            let state = self.files.entry(path.clone()).or_default();
            new_problems.extend(state.refresh(path));
        }
        let (objects, conflicts) = self.union();
        let standing: BTreeSet<_> = listing.problems.into_iter().chain(conflicts).collect();
        new_problems.extend(standing.difference(&self.dir_problems).cloned());
        self.dir_problems = standing;
        let events = diff(&self.objects, &objects);
        self.objects = objects;
        Rescan {
            events,
            new_problems,
        }
    }

    /// The objects of every file; a key defined twice goes to the later path, reported.
    fn union(&self) -> (BTreeMap<ObjectKey, Object>, Vec<ManifestProblem>) {
        let mut owners: BTreeMap<ObjectKey, (&Path, &Object)> = BTreeMap::new();
        let mut conflicts = Vec::new();
        for (path, state) in &self.files {
            for object in &state.good {
                let key = object.key();
                if let Some((earlier, _)) = owners.insert(key.clone(), (path, object)) {
                    let reason = format!(
                        "{key} is also defined in {}; the definition here wins",
                        earlier.display()
                    );
                    conflicts.push(ManifestProblem::warning(path, None, None, reason));
                }
            }
        }
        let objects = owners
            .into_iter()
            .map(|(key, (_, object))| (key, object.clone()))
            .collect();
        (objects, conflicts)
    }
}

/// Applied for new or changed objects, Deleted for keys gone, in key order.
fn diff(old: &BTreeMap<ObjectKey, Object>, new: &BTreeMap<ObjectKey, Object>) -> Vec<Event> {
    let keys: BTreeSet<&ObjectKey> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter_map(|key| match (old.get(key), new.get(key)) {
            (old, Some(new)) if old != Some(new) => Some(Event::Applied(new.clone())),
            (Some(_), None) => Some(Event::Deleted(key.clone())),
            _ => None,
        })
        .collect()
}

// === impl FileState ===

impl FileState {
    /// Re-reads the file; returns the problems to report (none when nothing changed).
    fn refresh(&mut self, path: &Path) -> Vec<ManifestProblem> {
        match fs::read(path) {
            Ok(bytes) if self.content.as_ref() == Some(&bytes) => Vec::new(),
            Ok(bytes) => {
                let parse = match std::str::from_utf8(&bytes) {
                    Ok(text) => parse_file(path, text),
                    Err(e) => broken(path, format!("the file is not UTF-8: {e}")),
                };
                if !parse.broken {
                    self.good = parse.objects;
                }
                self.content = Some(bytes);
                self.problems = parse.problems;
                self.problems.clone()
            }
            Err(e) => {
                let problems = broken(path, format!("cannot read the file: {e}")).problems;
                let new = self.content.is_some() || self.problems != problems;
                self.content = None;
                self.problems = problems;
                if new {
                    self.problems.clone()
                } else {
                    Vec::new()
                }
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
            // `fs::metadata` follows links; a dangling link named like a manifest is listed
            // and then fails to read, which keeps its last objects.
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

#[cfg(test)]
mod tests;
