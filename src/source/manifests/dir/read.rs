//! Reading one manifest file safely: regular files only, never blocking on a special file,
//! never more than a bound.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::path::Path;
use std::time::SystemTime;

/// A file as read: its bytes and what its metadata said while they were read.
#[derive(Debug)]
pub(super) struct Contents {
    pub bytes: Vec<u8>,
    pub stamp: Stamp,
}

/// What identifies a version of a file without reading it: its identity (device and inode:
/// a file renamed into place has a new one) and what a write changes (size, mtime).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Stamp {
    /// Device and inode (`None` where the platform has none).
    pub identity: Option<(u64, u64)>,
    pub len: u64,
    pub modified: Option<SystemTime>,
}

/// Why a manifest file was not read.
#[derive(Debug)]
pub(super) enum ReadError {
    /// Not a regular file (after following links): what it is instead.
    NotRegular(&'static str),
    /// Larger than the limit (its size as known: at least `limit + 1`).
    TooLarge { len: u64, limit: u64 },
    /// The file system's error.
    Io(io::Error),
}

// === impl ReadError ===

impl ReadError {
    /// The reason, for a [`super::ManifestProblem`].
    pub fn reason(&self) -> String {
        match self {
            ReadError::NotRegular(what) => {
                format!("cannot read the file: it is {what}, not a regular file; skipped")
            }
            ReadError::TooLarge { len, limit } => format!(
                "cannot read the file: {len} bytes or more, over the limit of {limit} bytes \
                 (--manifests-max-file-bytes)"
            ),
            ReadError::Io(e) => format!("cannot read the file: {e}"),
        }
    }
}

/// Reads a manifest file: a regular file (links followed) of at most `limit` bytes. Anything
/// else is refused from its metadata, before it is opened; the file is opened without
/// blocking (a FIFO swapped in after the check cannot hang the rescan), its metadata checked
/// again, and at most `limit + 1` bytes read, so a file that grows meanwhile (or that says it
/// is empty, as /proc files do) is still bounded.
pub(super) fn read(path: &Path, limit: u64) -> Result<Contents, ReadError> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound && is_link(path) => {
            return Err(ReadError::NotRegular("a symbolic link to nothing"));
        }
        Err(e) => return Err(ReadError::Io(e)),
    };
    check(&meta, limit)?;
    let mut file = open(path).map_err(ReadError::Io)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    check(&meta, limit)?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).map_or(0, |n| n + 1));
    (&mut file)
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    let len = bytes.len() as u64;
    if len > limit {
        return Err(ReadError::TooLarge { len, limit });
    }
    // The stamp after the read: a write during the read changes it, which the caller sees
    // as a file not yet settled.
    let stamp = file.metadata().map_err(ReadError::Io)?;
    Ok(Contents {
        bytes,
        stamp: Stamp::of(&stamp),
    })
}

fn check(meta: &Metadata, limit: u64) -> Result<(), ReadError> {
    if !meta.is_file() {
        return Err(ReadError::NotRegular(describe(meta)));
    }
    if meta.len() > limit {
        return Err(ReadError::TooLarge {
            len: meta.len(),
            limit,
        });
    }
    Ok(())
}

fn is_link(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// Opens for reading without blocking: opening a FIFO without a writer blocks otherwise.
fn open(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // pipe2(2) takes open(2)'s O_NONBLOCK itself, so this is O_NONBLOCK on every
        // architecture (without rustix's `fs` feature). It changes nothing for a regular file.
        let nonblock = rustix::pipe::PipeFlags::NONBLOCK.bits();
        options.custom_flags(i32::try_from(nonblock).unwrap_or(0));
    }
    options.open(path)
}

/// What a file that is not a regular file is, for a problem's reason.
fn describe(meta: &Metadata) -> &'static str {
    let kind = meta.file_type();
    if kind.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "a FIFO";
        }
        if kind.is_socket() {
            return "a socket";
        }
        if kind.is_char_device() {
            return "a character device";
        }
        if kind.is_block_device() {
            return "a block device";
        }
    }
    "a special file"
}

// === impl Stamp ===

impl Stamp {
    fn of(meta: &Metadata) -> Stamp {
        #[cfg(unix)]
        let identity = {
            use std::os::unix::fs::MetadataExt;
            Some((meta.dev(), meta.ino()))
        };
        #[cfg(not(unix))]
        let identity = None;
        Stamp {
            identity,
            len: meta.len(),
            modified: meta.modified().ok(),
        }
    }
}
