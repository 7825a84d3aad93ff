//! The state of a manifests directory between scans, and the diff a rescan produces.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

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
    /// How long a file changed in place must stay unchanged before it is read as final
    /// (`None`: files are taken as they are, for one-shot reads).
    settle: Option<Duration>,
}

/// How long a file written in place must have stayed unchanged before what it holds is taken
/// (see [`ManifestDir::settling`]). A file renamed into place or new is taken at once.
pub const SETTLE: Duration = Duration::from_millis(20);

/// How many settle periods a file changed in place must stay empty (no objects, where it had
/// some) before that is taken: truncating comes first in a rewrite, so emptiness is the state
/// most likely to be caught half-way; and how many a file may keep changing before what it
/// holds is taken anyway (when it has objects and parses).
const LONG_SETTLES: u32 = 50;

/// What a rescan found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rescan {
    /// Applied for new or changed objects, Deleted for keys gone, sorted by key.
    pub events: Vec<Event>,
    /// Problems that appeared with this rescan (to be logged); standing ones are not repeated.
    pub new_problems: Vec<ManifestProblem>,
    /// Some file changed in place and has not settled yet (it keeps its objects meanwhile):
    /// rescan after this long.
    pub wait: Option<Duration>,
}

/// One object as one file defines it.
#[derive(Debug)]
struct Definition {
    path: Arc<Path>,
    object: Object,
}

#[derive(Debug, Default)]
struct FileState {
    /// The bytes last taken; `None` when the last read failed.
    content: Option<Vec<u8>>,
    /// The file (device, inode) those bytes came from: a change to the same file is a write
    /// in place, which must settle; another file is one renamed into place, complete.
    identity: Option<(u64, u64)>,
    /// A change in place seen and not taken yet.
    pending: Option<Pending>,
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
            settle: None,
        })
    }

    /// Makes rescans wait for files written in place to settle: a file whose content changed
    /// while it stayed the same file (truncated and rewritten: `echo > file`, many editors and
    /// tools) is taken only once it has not been modified for `settle` (by its modification
    /// time, or by rescans seeing it unchanged that long); until then it keeps its objects and
    /// [`Rescan::wait`] says when to look again. One that became empty (no objects, where it
    /// had some) must stay so 50 times longer. One that keeps changing longer than that is
    /// taken anyway, unless it is empty or does not parse. A file renamed into place (another
    /// inode) or new is taken at once.
    pub fn settling(mut self, settle: Duration) -> Self {
        self.settle = Some(settle);
        self
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
        let mut wait: Option<Duration> = None;
        let clock = Clock {
            now: Instant::now(),
            wall: SystemTime::now(),
        };
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
            let read = (self.options.max_file_bytes, self.settle, clock);
            let (problems, replaced, held) = state.refresh(path, read);
            new_problems.extend(problems);
            wait = match (wait, held) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
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
            wait,
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
    /// Re-reads the file; returns the problems to report (none when nothing changed), the
    /// previous good objects when a good parse replaced them, and how long to wait when the
    /// file changed but is not taken yet (see [`ManifestDir::settling`]).
    fn refresh(
        &mut self,
        path: &Path,
        (limit, settle, clock): (u64, Option<Duration>, Clock),
    ) -> (Vec<ManifestProblem>, Option<Vec<Object>>, Option<Duration>) {
        let read::Contents { bytes, stamp } = match read::read(path, limit) {
            Ok(read) => read,
            Err(e) => {
                return (
                    self.unreadable(broken(path, e.reason()).problems),
                    None,
                    None,
                );
            }
        };
        if self.content.as_ref() == Some(&bytes) {
            self.pending = None;
            return (Vec::new(), None, None);
        }
        let quiet = match settle {
            Some(settle) => match self.settled(stamp, settle, clock) {
                Ok(quiet) => Some((settle, quiet)),
                Err(wait) => return (Vec::new(), None, Some(wait)),
            },
            None => None,
        };
        let parse = match std::str::from_utf8(&bytes) {
            Ok(text) => parse_file(path, text),
            Err(e) => broken(path, format!("the file is not UTF-8: {e}")),
        };
        if let Some((settle, quiet)) = quiet {
            let emptied = !parse.broken && parse.objects.is_empty() && !self.good.is_empty();
            let long = settle * LONG_SETTLES;
            if emptied && quiet < long {
                return (Vec::new(), None, Some(long - quiet));
            }
            // Taken while still changing (see `settled`): only a good parse counts.
            if parse.broken && quiet < settle {
                return (Vec::new(), None, Some(settle));
            }
        }
        let replaced = (!parse.broken).then(|| std::mem::replace(&mut self.good, parse.objects));
        self.content = Some(bytes);
        self.identity = stamp.identity;
        self.pending = None;
        self.problems = parse.problems;
        (self.problems.clone(), replaced, None)
    }

    /// Whether a changed file is to be taken now: `Ok(how long it has been unchanged)`, or
    /// `Err(how long to wait)`. A file that is not the one last taken (renamed into place,
    /// new) is complete. One changed in place is taken once unchanged for `settle` by its
    /// modification time, or by what rescans saw (so a clock set wrong or an mtime in the
    /// future cannot hold it forever); or once it has kept changing for `LONG_SETTLES` periods.
    fn settled(
        &mut self,
        stamp: read::Stamp,
        settle: Duration,
        clock: Clock,
    ) -> Result<Duration, Duration> {
        let in_place =
            self.content.is_some() && stamp.identity.is_some() && stamp.identity == self.identity;
        if !in_place {
            return Ok(Duration::MAX);
        }
        let pending = self.pending.get_or_insert(Pending {
            stamp,
            seen_since: clock.now,
            changing_since: clock.now,
        });
        if pending.stamp != stamp {
            pending.stamp = stamp;
            pending.seen_since = clock.now;
        }
        let by_mtime = stamp
            .modified
            .and_then(|m| clock.wall.duration_since(m).ok())
            .unwrap_or_default();
        let quiet = by_mtime.max(clock.now.duration_since(pending.seen_since));
        let changing = clock.now.duration_since(pending.changing_since);
        if quiet >= settle || changing >= settle * LONG_SETTLES {
            Ok(quiet)
        } else {
            Err(settle - quiet)
        }
    }

    /// The file could not be read: it keeps its objects; the problems are reported when new.
    fn unreadable(&mut self, problems: Vec<ManifestProblem>) -> Vec<ManifestProblem> {
        let new = self.content.is_some() || self.problems != problems;
        self.content = None;
        self.identity = None;
        self.pending = None;
        self.problems = problems;
        if new {
            self.problems.clone()
        } else {
            Vec::new()
        }
    }
}

/// The time of one rescan, for every file alike.
#[derive(Clone, Copy, Debug)]
struct Clock {
    now: Instant,
    wall: SystemTime,
}

/// A change in place not taken yet.
#[derive(Debug)]
struct Pending {
    /// The file's stamp when last seen, and since when it has been seen unchanged.
    stamp: read::Stamp,
    seen_since: Instant,
    /// When the change was first seen.
    changing_since: Instant,
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
