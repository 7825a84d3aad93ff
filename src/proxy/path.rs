//! The request path the proxy routes by, which is also the path it forwards: dot segments
//! resolved (RFC 3986 §5.2.4), in any percent-encoding, before routing.
//!
//! - Percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded (RFC 3986
//!   §6.2.2.2: the same resource either way), so `%2e%2e` is `..` and `/%70ublic` is `/public`.
//!   Other percent-encodings stay as they came.
//! - Runs of `/` are merged into one (nginx's `merge_slashes on`): a backend that merges them
//!   itself would otherwise resolve `/public//../internal` to `/internal`.
//! - `.` and `..` segments are resolved; a `..` above `/` is an error (400).
//! - An encoded slash or backslash (`%2F`, `%5C`) is forwarded as it came, but a segment that
//!   such a character would split into a dot segment (`..%2Finternal`) is an error (400): a
//!   backend that decodes it would climb out of the route. So is an invalid percent-encoding
//!   and an encoded NUL (`%00`).
//! - Routing, as nginx matches locations on the decoded path, takes an encoded slash for a
//!   separator ([`routing`]): `/admin%2Fx` is under `/admin`, whatever the endpoint makes of
//!   the `%2F` it gets.
//!
//! A path without `%`, without `//` and without a segment starting with `.` is already
//! normal: one pass over its bytes, no allocation.

use std::borrow::Cow;

/// Why a path cannot be routed: the request is answered 400.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPath {
    /// `..` segments climb above `/`.
    #[error("the path climbs above the root")]
    AboveRoot,
    /// `%` not followed by two hex digits.
    #[error("invalid percent-encoding in the path")]
    BadEscape,
    /// `%00`.
    #[error("encoded NUL in the path")]
    Nul,
    /// A segment that an encoded slash or backslash turns into a dot segment.
    #[error("encoded slash next to a dot segment in the path")]
    EncodedDotSegment,
    /// The path does not start with `/`.
    #[error("the path does not start with '/'")]
    NotAbsolute,
}

/// The normal form of `path` (the path of a request target, without its query): borrowed
/// when it is already normal.
#[inline]
pub fn normalize(path: &str) -> Result<Cow<'_, str>, InvalidPath> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(InvalidPath::NotAbsolute);
    }
    // The fast check: nothing to decode, merge or resolve.
    let mut prev = 0u8;
    let mut plain = true;
    for &b in bytes {
        if b == b'%' || (prev == b'/' && (b == b'/' || b == b'.')) {
            plain = false;
            break;
        }
        prev = b;
    }
    if plain {
        return Ok(Cow::Borrowed(path));
    }
    slow(bytes).map(Cow::Owned)
}

/// The path routes and policies see for a normal `path` (nginx's `$uri`, where `%2F` is a
/// `/`): its encoded slashes decoded, runs of `/` merged again. Borrowed when it has none.
/// (A dot segment they would reveal was refused by [`normalize`].)
#[inline]
pub fn routing(path: &str) -> Cow<'_, str> {
    if !path.contains('%') {
        return Cow::Borrowed(path);
    }
    encoded_slashes(path)
}

fn encoded_slashes(path: &str) -> Cow<'_, str> {
    let bytes = path.as_bytes();
    let slash_at = |i: usize| {
        bytes[i] == b'%'
            && bytes
                .get(i + 1..i + 3)
                .is_some_and(|h| h.eq_ignore_ascii_case(b"2f"))
    };
    if !(0..bytes.len()).any(slash_at) {
        return Cow::Borrowed(path);
    }
    let mut out: Vec<u8> = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let (b, step) = if slash_at(i) {
            (b'/', 3)
        } else {
            (bytes[i], 1)
        };
        if !(b == b'/' && out.last() == Some(&b'/')) {
            out.push(b);
        }
        i += step;
    }
    // Only ASCII sequences were replaced: still UTF-8.
    String::from_utf8(out).map_or(Cow::Borrowed(path), Cow::Owned)
}

/// Whether `b` is an unreserved character (RFC 3986 §2.3).
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes the unreserved percent-encodings of `segment` (which has no '/'), checking the
/// others.
fn decode_segment(segment: &[u8], out: &mut Vec<u8>) -> Result<(), InvalidPath> {
    let mut i = 0;
    while i < segment.len() {
        let b = segment[i];
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            segment.get(i + 1).copied().and_then(hex),
            segment.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(InvalidPath::BadEscape);
        };
        let decoded = hi << 4 | lo;
        if decoded == 0 {
            return Err(InvalidPath::Nul);
        }
        if unreserved(decoded) {
            out.push(decoded);
        } else {
            out.extend_from_slice(&segment[i..i + 3]);
        }
        i += 3;
    }
    Ok(())
}

/// Whether a decoded segment holds an encoded slash or backslash that would split it into a
/// dot segment.
fn hides_dot_segment(segment: &[u8]) -> bool {
    let separator_at = |i: usize| {
        segment.get(i) == Some(&b'%')
            && segment
                .get(i + 1..i + 3)
                .is_some_and(|h| h.eq_ignore_ascii_case(b"2f") || h.eq_ignore_ascii_case(b"5c"))
    };
    let (mut start, mut i, mut split) = (0, 0, false);
    let is_dots = |piece: &[u8]| piece == b"." || piece == b"..";
    while i < segment.len() {
        if separator_at(i) {
            if is_dots(&segment[start..i]) {
                return true;
            }
            split = true;
            i += 3;
            start = i;
        } else {
            i += 1;
        }
    }
    split && is_dots(&segment[start..])
}

fn slow(bytes: &[u8]) -> Result<String, InvalidPath> {
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    // Where each segment of `out` starts, to remove the last one on "..".
    let mut starts: Vec<usize> = Vec::new();
    let mut segment = Vec::new();
    let mut pieces = bytes[1..].split(|&b| b == b'/').peekable();
    // Whether the output ends with '/': the last segment was empty or a dot segment.
    let mut trailing = false;
    while let Some(raw) = pieces.next() {
        segment.clear();
        decode_segment(raw, &mut segment)?;
        match &segment[..] {
            b"" | b"." => {}
            b".." => {
                let start = starts.pop().ok_or(InvalidPath::AboveRoot)?;
                out.truncate(start);
            }
            s => {
                if hides_dot_segment(s) {
                    return Err(InvalidPath::EncodedDotSegment);
                }
                starts.push(out.len());
                out.push(b'/');
                out.extend_from_slice(s);
            }
        }
        if pieces.peek().is_none() {
            trailing = matches!(&segment[..], b"" | b"." | b"..");
        }
    }
    if out.is_empty() || trailing {
        out.push(b'/');
    }
    // Only ASCII bytes were decoded, and the rest came from a `str`.
    String::from_utf8(out).map_err(|_| InvalidPath::BadEscape)
}

#[cfg(test)]
mod tests;
