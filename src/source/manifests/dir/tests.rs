//! Tests of the directory state: listing, diffing, conflicts and reporting problems once.

use std::fs;
use std::path::PathBuf;

use super::*;
use crate::source::Kind;
use crate::source::manifests::load_dir;
use crate::source::manifests::tests::{ingress, keys, port, service, svc_key, write};

const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\n";

fn applied_keys(rescan: &Rescan) -> Vec<ObjectKey> {
    let applied = rescan.events.iter().filter_map(|e| match e {
        Event::Applied(o) => Some(o.key()),
        _ => None,
    });
    applied.collect()
}

fn dir_with(files: &[(&str, String)]) -> (tempfile::TempDir, ManifestDir) {
    let tmp = tempfile::tempdir().unwrap();
    for (name, text) in files {
        write(&tmp.path().join(name), text);
    }
    let state = ManifestDir::new(tmp.path().to_path_buf()).unwrap();
    (tmp, state)
}

#[test]
fn nested_files_are_read_and_dot_entries_skipped() {
    let (_tmp, mut state) = dir_with(&[
        ("a.yaml", service("a", 80)),
        ("sub/deeper/b.yml", ingress("b", "b.example")),
        (
            "c.json",
            r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"c"}}"#.into(),
        ),
        (".hidden.yaml", service("hidden", 80)),
        (".git/d.yaml", service("d", 80)),
        ("..data/e.yaml", service("e", 80)),
        ("notes.txt", service("txt", 80)),
        ("upper.YAML", service("upper", 80)),
    ]);
    let rescan = state.rescan();
    let want = vec![
        ObjectKey::new(Kind::Ingress, "web", "b"),
        svc_key("a"),
        svc_key("c"),
    ];
    assert_eq!(applied_keys(&rescan), want);
    assert!(rescan.new_problems.is_empty(), "{:?}", rescan.new_problems);
    assert_eq!(state.rescan(), Rescan::default(), "nothing changed");
}

#[cfg(unix)]
#[test]
fn links_are_followed_once_and_configmap_volumes_read_once() {
    use std::os::unix::fs::symlink;
    let outside = tempfile::tempdir().unwrap();
    write(&outside.path().join("o.yaml"), &service("o", 80));
    let (tmp, mut state) = dir_with(&[("..2024_01_01/x.yaml", service("x", 80))]);
    let root = tmp.path();
    symlink("..2024_01_01", root.join("..data")).unwrap();
    symlink("..data/x.yaml", root.join("x.yaml")).unwrap();
    symlink(outside.path(), root.join("linked")).unwrap();
    symlink(root, root.join("loop")).unwrap();
    let rescan = state.rescan();
    assert_eq!(applied_keys(&rescan), vec![svc_key("o"), svc_key("x")]);
    assert!(rescan.new_problems.is_empty(), "{:?}", rescan.new_problems);
}

#[test]
fn the_later_file_wins_a_conflict() {
    let (_tmp, mut state) = dir_with(&[("a.yaml", service("s", 80)), ("b.yaml", service("s", 81))]);
    let rescan = state.rescan();
    assert_eq!(rescan.events.len(), 1);
    let objects: Vec<_> = state.objects().collect();
    assert_eq!(port(objects[0]), Some(81));
    let [problem] = rescan.new_problems.as_slice() else {
        panic!("{:?}", rescan.new_problems)
    };
    assert!(
        problem.file.ends_with("b.yaml") && !problem.is_error(),
        "{problem}"
    );
    assert!(problem.reason.contains("a.yaml") && problem.reason.contains("Service default/s"));
    assert!(state.rescan().new_problems.is_empty(), "reported once");
}

#[test]
fn broken_files_keep_their_objects_and_are_reported_once() {
    let (tmp, mut state) = dir_with(&[("a.yaml", service("a", 80))]);
    let path = tmp.path().join("a.yaml");
    assert_eq!(applied_keys(&state.rescan()), vec![svc_key("a")]);

    write(&path, &format!("{}---\nkind: [", service("a", 81)));
    let rescan = state.rescan();
    assert!(
        rescan.events.is_empty(),
        "last good objects stay: {:?}",
        rescan.events
    );
    assert_eq!(rescan.new_problems.len(), 1);
    assert_eq!(
        state.rescan(),
        Rescan::default(),
        "unchanged: not reported again"
    );
    assert_eq!(state.problems().len(), 1, "but still standing");

    write(&path, &format!("{}---\nkind: {{", service("a", 81)));
    let rescan = state.rescan();
    assert!(rescan.events.is_empty());
    assert_eq!(
        rescan.new_problems.len(),
        1,
        "changed and still broken: reported"
    );

    write(&path, &service("a", 82));
    let rescan = state.rescan();
    assert!(rescan.new_problems.is_empty());
    assert!(state.problems().is_empty());
    assert!(matches!(&rescan.events[..], [Event::Applied(o)] if port(o) == Some(82)));

    fs::remove_file(&path).unwrap();
    assert_eq!(state.rescan().events, vec![Event::Deleted(svc_key("a"))]);
}

#[test]
fn a_broken_file_never_good_contributes_nothing() {
    let (_tmp, mut state) = dir_with(&[("a.yaml", "kind: [".into()), ("b.yaml", service("b", 80))]);
    let rescan = state.rescan();
    assert_eq!(applied_keys(&rescan), vec![svc_key("b")]);
    assert_eq!(rescan.new_problems.len(), 1);
}

#[cfg(unix)]
#[test]
fn unreadable_files_keep_their_objects() {
    let (tmp, mut state) = dir_with(&[("a.yaml", service("a", 80))]);
    let (path, outside) = (tmp.path().join("a.yaml"), tempfile::tempdir().unwrap());
    let target = outside.path().join("a.yaml");
    state.rescan();
    fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(&target, &path).unwrap();
    let rescan = state.rescan();
    assert!(rescan.events.is_empty());
    let [problem] = rescan.new_problems.as_slice() else {
        panic!("{:?}", rescan.new_problems)
    };
    assert!(
        problem.reason.starts_with("cannot read the file") && problem.is_error(),
        "{problem}"
    );
    assert_eq!(state.rescan(), Rescan::default(), "reported once");
    fs::write(&target, service("a", 80)).unwrap();
    assert_eq!(
        state.rescan(),
        Rescan::default(),
        "readable again, same object"
    );
}

#[test]
fn a_vanished_directory_keeps_everything_until_it_returns() {
    let (tmp, mut state) = dir_with(&[("a.yaml", service("a", 80))]);
    let root: PathBuf = tmp.path().to_path_buf();
    state.rescan();
    fs::remove_dir_all(&root).unwrap();
    let rescan = state.rescan();
    assert!(rescan.events.is_empty() && !state.is_readable());
    assert!(
        rescan.new_problems[0]
            .reason
            .starts_with("cannot read the directory")
    );
    assert!(rescan.new_problems[0].is_error());
    assert_eq!(state.rescan(), Rescan::default(), "reported once");
    write(&root.join("b.yaml"), &service("b", 80));
    let rescan = state.rescan();
    assert!(state.is_readable());
    let want = vec![
        Event::Deleted(svc_key("a")),
        Event::Applied(state.objects().next().unwrap().clone()),
    ];
    assert_eq!(rescan.events, want);
}

#[test]
fn load_dir_reads_once_and_names_a_missing_directory() {
    let (tmp, _) = dir_with(&[("a.yaml", format!("{DEPLOYMENT}---\n{}", service("a", 80)))]);
    let (objects, problems) = load_dir(tmp.path()).unwrap();
    assert_eq!(keys(&objects), vec![svc_key("a")]);
    assert_eq!(problems.len(), 1);
    let missing = tmp.path().join("nope");
    let e = load_dir(&missing).unwrap_err();
    assert!(matches!(e, ManifestsError::Dir { .. }));
    assert!(e.to_string().contains(&*missing.to_string_lossy()), "{e}");
    assert!(
        load_dir(&tmp.path().join("a.yaml")).is_err(),
        "a file is not a directory"
    );
}

mod rescans {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// What a file can hold: objects that overlap between files, a broken file, nothing.
    fn content(version: u8) -> Option<String> {
        match version % 7 {
            0 => None,
            1 => Some(service("s", 80)),
            2 => Some(service("s", 81) + "---\n" + &service("t", 80)),
            3 => Some(service("t", 82) + "---\n" + &service("t", 83)),
            4 => Some(ingress("i", "a.com")),
            5 => Some("kind: [broken".to_string()),
            _ => Some(ingress("i", "b.com") + "---\n" + &service("u", 80)),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// After any sequence of edits, the events of each rescan, applied in order, give the
        /// objects that a fresh read of the files' last good versions gives, with the same
        /// conflicts.
        #[test]
        fn rescans_track_a_fresh_read(steps in proptest::collection::vec((0u8..4, any::<u8>()), 1..24)) {
            let (tmp, good) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let mut state = ManifestDir::new(tmp.path().to_path_buf()).unwrap();
            let mut seen: BTreeMap<ObjectKey, Object> = BTreeMap::new();
            for (file, version) in steps {
                let name = format!("f{file}.yaml");
                let (path, good_path) = (tmp.path().join(&name), good.path().join(&name));
                match content(version) {
                    Some(text) => {
                        write(&path, &text);
                        if !text.contains("broken") {
                            write(&good_path, &text);
                        }
                    }
                    None => {
                        drop(fs::remove_file(&path));
                        drop(fs::remove_file(&good_path));
                    }
                }
                for event in state.rescan().events {
                    match event {
                        Event::Applied(o) => drop(seen.insert(o.key(), o)),
                        Event::Deleted(key) => prop_assert!(seen.remove(&key).is_some()),
                        Event::Synced(_) => {}
                    }
                }
                let mut fresh = ManifestDir::new(good.path().to_path_buf()).unwrap();
                fresh.rescan();
                let objects: Vec<&Object> = state.objects().collect();
                prop_assert_eq!(&objects, &fresh.objects().collect::<Vec<_>>());
                prop_assert_eq!(&objects, &seen.values().collect::<Vec<_>>());
                let warnings = |d: &ManifestDir, root: &std::path::Path| -> Vec<(PathBuf, String)> {
                    let root = root.display().to_string();
                    d.problems().into_iter().filter(|p| p.reason.contains("the definition here wins"))
                        .map(|p| (p.file.strip_prefix(&root).unwrap().to_path_buf(), p.reason.replace(&root, "")))
                        .collect()
                };
                prop_assert_eq!(warnings(&state, tmp.path()), warnings(&fresh, good.path()));
            }
        }
    }
}

/// Runs a rescan on a thread of its own, so that a rescan that blocks fails the test instead
/// of hanging it.
fn rescan_within(mut state: ManifestDir, limit: std::time::Duration) -> (ManifestDir, Rescan) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rescan = state.rescan();
        drop(tx.send((state, rescan)));
    });
    rx.recv_timeout(limit)
        .expect("the rescan blocked (a special file opened for reading?)")
}

fn problem_about<'a>(rescan: &'a Rescan, name: &str) -> &'a ManifestProblem {
    let found = rescan.new_problems.iter().find(|p| p.file.ends_with(name));
    found.unwrap_or_else(|| panic!("no problem about {name}: {:?}", rescan.new_problems))
}

/// A FIFO, a socket and a dangling link named like manifests are reported (path and what it
/// is) and skipped without being opened: before, the FIFO blocked the rescan forever.
#[cfg(unix)]
#[test]
fn special_files_are_reported_and_skipped() {
    let (tmp, state) = dir_with(&[("a.yaml", service("a", 80))]);
    let root = tmp.path();
    let fifo = root.join("f.yaml");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.unwrap().success(), "mkfifo");
    let _socket = std::os::unix::net::UnixListener::bind(root.join("s.yaml")).unwrap();
    std::os::unix::fs::symlink(root.join("missing.txt"), root.join("d.yaml")).unwrap();
    let (mut state, rescan) = rescan_within(state, std::time::Duration::from_secs(10));
    assert_eq!(applied_keys(&rescan), vec![svc_key("a")]);
    assert_eq!(rescan.new_problems.len(), 3, "{:?}", rescan.new_problems);
    for (name, what) in [
        ("f.yaml", "a FIFO"),
        ("s.yaml", "a socket"),
        ("d.yaml", "a symbolic link to nothing"),
    ] {
        let problem = problem_about(&rescan, name);
        assert!(problem.is_error(), "{problem}");
        assert!(problem.reason.contains(what), "{problem}");
        assert!(problem.to_string().contains(name), "{problem}");
    }
    assert_eq!(state.rescan(), Rescan::default(), "reported once");
}

/// A link to a device (`/dev/zero` never ends) is reported and not read: before, it was read
/// until memory ran out (2 GiB in 2 s).
#[cfg(unix)]
#[test]
fn a_link_to_a_device_is_not_read() {
    let (tmp, state) = dir_with(&[("a.yaml", service("a", 80))]);
    std::os::unix::fs::symlink("/dev/zero", tmp.path().join("zero.yaml")).unwrap();
    let (_state, rescan) = rescan_within(state, std::time::Duration::from_secs(10));
    assert_eq!(applied_keys(&rescan), vec![svc_key("a")]);
    let problem = problem_about(&rescan, "zero.yaml");
    assert!(problem.reason.contains("a character device"), "{problem}");
}

/// A file over `max_file_bytes` is an error and keeps its previous objects, like a file that
/// does not parse; one that says it is empty but reads longer (a /proc file) is cut at the
/// limit all the same.
#[test]
fn a_file_over_the_size_limit_keeps_its_objects() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("a.yaml");
    write(&path, &service("a", 80));
    let options = crate::source::manifests::ManifestOptions {
        max_file_bytes: 200,
    };
    let mut state = ManifestDir::with_options(tmp.path().to_path_buf(), options).unwrap();
    assert_eq!(applied_keys(&state.rescan()), vec![svc_key("a")]);

    let padded = format!("{}# {}\n", service("a", 81), "x".repeat(300));
    write(&path, &padded);
    let rescan = state.rescan();
    assert!(rescan.events.is_empty(), "{:?}", rescan.events);
    let problem = problem_about(&rescan, "a.yaml");
    assert!(
        problem.is_error() && problem.reason.contains("200 bytes"),
        "{problem}"
    );
    assert_eq!(port(state.objects().next().unwrap()), Some(80), "kept");
    assert_eq!(state.rescan(), Rescan::default(), "reported once");

    write(&path, &service("a", 82));
    let rescan = state.rescan();
    assert!(rescan.new_problems.is_empty() && state.problems().is_empty());
    assert!(matches!(&rescan.events[..], [Event::Applied(o)] if port(o) == Some(82)));

    #[cfg(target_os = "linux")]
    {
        std::os::unix::fs::symlink("/proc/self/status", tmp.path().join("p.yaml")).unwrap();
        let rescan = state.rescan();
        let problem = problem_about(&rescan, "p.yaml");
        assert!(problem.reason.contains("200 bytes"), "{problem}");
    }
}

mod settling {
    use std::io::Write;
    use std::path::Path;
    use std::time::{Duration, SystemTime};

    use super::*;

    /// Long enough that a file just written is never settled by the test's own slowness.
    const SETTLE: Duration = Duration::from_secs(60);

    /// Truncates and writes, as `echo > file` does: the same file, empty for a moment.
    fn rewrite(path: &Path, text: &str) {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path)
            .unwrap();
        file.write_all(text.as_bytes()).unwrap();
    }

    /// Makes the file look last modified `ago`.
    fn age(path: &Path, ago: Duration) {
        let file = fs::OpenOptions::new().write(true).open(path).unwrap();
        file.set_modified(SystemTime::now() - ago).unwrap();
    }

    fn settling_dir() -> (tempfile::TempDir, ManifestDir, PathBuf) {
        let (tmp, state) = dir_with(&[("a.yaml", service("a", 80))]);
        let path = tmp.path().join("a.yaml");
        let mut state = state.settling(SETTLE);
        assert_eq!(
            applied_keys(&state.rescan()),
            vec![svc_key("a")],
            "new: at once"
        );
        (tmp, state, path)
    }

    /// A file rewritten in place is taken once unchanged for the settle time; emptied, once
    /// empty for 50 of them; meanwhile it keeps its objects and the rescan says when to look
    /// again.
    #[test]
    fn a_file_rewritten_in_place_is_taken_once_settled() {
        let (_tmp, mut state, path) = settling_dir();
        rewrite(&path, &service("a", 81));
        let held = state.rescan();
        assert!(held.events.is_empty(), "{:?}", held.events);
        assert!(held.wait.is_some_and(|w| w <= SETTLE), "{held:?}");
        age(&path, 2 * SETTLE);
        let rescan = state.rescan();
        assert!(matches!(&rescan.events[..], [Event::Applied(o)] if port(o) == Some(81)));
        assert_eq!(rescan.wait, None);

        rewrite(&path, "");
        age(&path, 2 * SETTLE);
        let held = state.rescan();
        assert!(
            held.events.is_empty(),
            "emptied: held longer {:?}",
            held.events
        );
        assert!(held.wait.is_some_and(|w| w > SETTLE), "{held:?}");
        age(&path, SETTLE * 60);
        assert_eq!(state.rescan().events, vec![Event::Deleted(svc_key("a"))]);
    }

    /// A broken version caught while the file is still being written is not reported; once
    /// settled it is, and the file keeps its objects as any broken file does.
    #[test]
    fn a_broken_write_in_progress_is_not_reported_until_settled() {
        let (_tmp, mut state, path) = settling_dir();
        rewrite(&path, "kind: [");
        let held = state.rescan();
        assert!(
            held.new_problems.is_empty() && held.wait.is_some(),
            "{held:?}"
        );
        age(&path, 2 * SETTLE);
        let rescan = state.rescan();
        assert!(rescan.events.is_empty());
        assert_eq!(rescan.new_problems.len(), 1, "{rescan:?}");
    }

    /// A file renamed into place (a new inode: editors, kubelet, `kubectl cp`-style tools) is
    /// complete when it lands, and is taken at once, as are new files.
    #[test]
    fn a_file_renamed_into_place_is_taken_at_once() {
        let (tmp, mut state, path) = settling_dir();
        let temporary = tmp.path().join(".a.yaml.tmp");
        write(&temporary, &service("a", 82));
        fs::rename(&temporary, &path).unwrap();
        write(&tmp.path().join("b.yaml"), &service("b", 80));
        let rescan = state.rescan();
        assert_eq!(applied_keys(&rescan), vec![svc_key("a"), svc_key("b")]);
        assert_eq!(rescan.wait, None);
    }
}
