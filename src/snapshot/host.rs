//! Host names on the request path: normalised without allocating.

/// The longest host name that can match (DNS names are at most 253 bytes).
pub const MAX_HOST: usize = 253;

/// Strips any `:port` and one trailing '.', and lower-cases into `buf` only when needed.
/// None for hosts no rule can match (empty, or longer than a DNS name).
pub fn normalize<'a>(host: &'a str, buf: &'a mut [u8; MAX_HOST]) -> Option<&'a str> {
    // One pass over the bytes, this runs for every request: the last ':', whether there is
    // another, and whether any byte is upper case (a stripped ":port" or '.' has none).
    let bytes = host.as_bytes();
    let (mut last_colon, mut colons, mut upper) = (None, 0u32, false);
    for (i, &b) in bytes.iter().enumerate() {
        if b == b':' {
            last_colon = Some(i);
            colons += 1;
        }
        upper |= b.is_ascii_uppercase();
    }
    let mut end = bytes.len();
    if let Some(at) = last_colon
        // A name or `[v6]` with a port; a bare IPv6 address has several ':' and no brackets.
        && (colons == 1 || bytes[..at].ends_with(b"]"))
        && bytes[at + 1..].iter().all(u8::is_ascii_digit)
    {
        end = at;
    }
    if bytes[..end].ends_with(b".") {
        end -= 1;
    }
    // ':' and '.' are ASCII: `end` is a char boundary.
    let host = &host[..end];
    if host.is_empty() || host.len() > MAX_HOST {
        return None;
    }
    if !upper {
        return Some(host);
    }
    let out = &mut buf[..host.len()];
    out.copy_from_slice(host.as_bytes());
    out.make_ascii_lowercase();
    std::str::from_utf8(out).ok()
}

/// The suffix a `*.suffix` wildcard must have to match `host`: everything after a non-empty
/// first label (so a wildcard matches exactly one more label).
pub fn wildcard_suffix(host: &str) -> Option<&str> {
    let (label, suffix) = host.split_once('.')?;
    (!label.is_empty() && !suffix.is_empty()).then_some(suffix)
}

/// Whether a certificate name (`foo.com` or `*.foo.com`) covers a host pattern (`foo.com`
/// or `*.foo.com`), case-insensitively.
pub fn name_covers(name: &str, host: &str) -> bool {
    if name.eq_ignore_ascii_case(host) {
        return true;
    }
    match (name.strip_prefix("*."), host.starts_with("*.")) {
        (Some(suffix), false) => {
            wildcard_suffix(host).is_some_and(|s| s.eq_ignore_ascii_case(suffix))
        }
        _ => false,
    }
}

/// Whether `host` is a valid Ingress rule host: a lower-case DNS-1123 subdomain, optionally
/// behind `*.`, and not an IP address.
pub fn validate_rule_host(host: &str) -> Result<(), &'static str> {
    let name = host.strip_prefix("*.").unwrap_or(host);
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Err("must be a DNS name, not an IP address");
    }
    if name.is_empty() || name.len() > MAX_HOST {
        return Err("must be 1 to 253 characters");
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !name.split('.').all(label_ok) {
        return Err(
            "must be a lower-case DNS name (labels of a-z, 0-9 and '-'), with '*.' only as a whole first label",
        );
    }
    Ok(())
}

/// A `host[:port]` without its port (`[v6]:port` keeps its brackets).
pub fn without_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((h, port))
            if port.bytes().all(|b| b.is_ascii_digit())
                && (!h.contains(':') || h.ends_with(']')) =>
        {
            h
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_strips_port_dot_and_case() {
        let mut buf = [0u8; MAX_HOST];
        for (input, want) in [
            ("foo.com", Some("foo.com")),
            ("Foo.COM:8080", Some("foo.com")),
            ("foo.com.", Some("foo.com")),
            ("foo.com.:443", Some("foo.com")),
            ("[::1]:80", Some("[::1]")),
            ("::1", Some("::1")),
            ("foo.com:http", Some("foo.com:http")),
            ("", None),
            (":80", None),
        ] {
            assert_eq!(normalize(input, &mut buf), want, "{input}");
        }
        let long = "a".repeat(300);
        assert_eq!(normalize(&long, &mut buf), None);
    }

    /// The straightforward form of `normalize` (split at the last ':', then the checks, each
    /// its own pass), which the one-pass version must agree with.
    fn reference(host: &str) -> Option<String> {
        let host = match host.rsplit_once(':') {
            Some((h, port))
                if (!h.contains(':') || h.ends_with(']'))
                    && port.bytes().all(|b| b.is_ascii_digit()) =>
            {
                h
            }
            _ => host,
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        (!host.is_empty() && host.len() <= MAX_HOST).then(|| host.to_ascii_lowercase())
    }

    proptest::proptest! {
        #[test]
        fn normalize_agrees_with_the_straightforward_form(host in "[aZ0-9.:\\[\\]é-]{0,12}") {
            let mut buf = [0u8; MAX_HOST];
            proptest::prop_assert_eq!(normalize(&host, &mut buf).map(str::to_owned), reference(&host));
        }
    }

    #[test]
    fn wildcard_covers_one_label() {
        assert!(name_covers("*.foo.com", "bar.foo.com"));
        assert!(name_covers("*.FOO.com", "bar.foo.com"));
        assert!(!name_covers("*.foo.com", "baz.bar.foo.com"));
        assert!(!name_covers("*.foo.com", "foo.com"));
        assert!(name_covers("*.foo.com", "*.foo.com"));
        assert!(!name_covers("bar.foo.com", "*.foo.com"));
        assert!(name_covers("foo.com", "FOO.com"));
    }

    #[test]
    fn rule_hosts() {
        assert!(validate_rule_host("foo.bar.com").is_ok());
        assert!(validate_rule_host("*.bar.com").is_ok());
        assert!(validate_rule_host("Foo.com").is_err());
        assert!(validate_rule_host("a.*.com").is_err());
        assert!(validate_rule_host("10.0.0.1").is_err());
        assert!(validate_rule_host("foo..com").is_err());
        assert!(validate_rule_host("-foo.com").is_err());
    }
}
