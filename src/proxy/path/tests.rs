use proptest::prelude::*;

use super::*;

#[test]
fn paths_normalise_as_the_table_says() {
    for (path, want) in [
        ("/", Ok("/")),
        ("/a/b", Ok("/a/b")),
        ("/a/b/", Ok("/a/b/")),
        ("/a/./b", Ok("/a/b")),
        ("/a/../b", Ok("/b")),
        ("/a/b/..", Ok("/a/")),
        ("/a/b/.", Ok("/a/b/")),
        ("/a/..", Ok("/")),
        ("/public/../internal", Ok("/internal")),
        ("/public/%2e%2e/internal", Ok("/internal")),
        ("/public/%2E%2e/internal", Ok("/internal")),
        ("/public/.%2e/internal", Ok("/internal")),
        ("/public/%2e/x", Ok("/public/x")),
        ("/public//../internal", Ok("/internal")),
        ("//a///b//", Ok("/a/b/")),
        ("/%70ublic/%7Euser", Ok("/public/~user")),
        ("/a%2Fb", Ok("/a%2Fb")),
        ("/a%2fb/c", Ok("/a%2fb/c")),
        ("/a%20b", Ok("/a%20b")),
        ("/.hidden/x", Ok("/.hidden/x")),
        ("/a/...", Ok("/a/...")),
        ("/%2F", Ok("/%2F")),
        ("/a/%2F%2F/b", Ok("/a/%2F%2F/b")),
        ("/é/../x", Ok("/x")),
        ("/..", Err(InvalidPath::AboveRoot)),
        ("/a/../..", Err(InvalidPath::AboveRoot)),
        ("/a/%2e%2e/%2e%2e", Err(InvalidPath::AboveRoot)),
        ("/public/..%2finternal", Err(InvalidPath::EncodedDotSegment)),
        ("/public/..%5Cinternal", Err(InvalidPath::EncodedDotSegment)),
        ("/public/x%2F..", Err(InvalidPath::EncodedDotSegment)),
        ("/public/x%2f.%2fy", Err(InvalidPath::EncodedDotSegment)),
        (
            "/public/%2e%2e%2finternal",
            Err(InvalidPath::EncodedDotSegment),
        ),
        ("/a%zz", Err(InvalidPath::BadEscape)),
        ("/a%2", Err(InvalidPath::BadEscape)),
        ("/a%", Err(InvalidPath::BadEscape)),
        ("/a%00b", Err(InvalidPath::Nul)),
        ("a/b", Err(InvalidPath::NotAbsolute)),
        ("", Err(InvalidPath::NotAbsolute)),
    ] {
        assert_eq!(normalize(path).as_deref().map_err(|e| *e), want, "{path}");
    }
}

#[test]
fn normal_paths_are_borrowed() {
    for path in ["/", "/a/b.c/d", "/api/v1/users/42", "/a.b/c."] {
        assert!(matches!(normalize(path), Ok(Cow::Borrowed(_))), "{path}");
    }
}

proptest! {
    /// Any path: no panic; a normal result has no dot segment, no empty segment but a
    /// trailing one, starts with '/', is its own normal form, and keeps every character
    /// that is not a decoded unreserved one.
    #[test]
    fn normal_forms_are_normal(path in "/[a-z./%25%2e%2E%2fF5cC0-9~_-]{0,24}") {
        if let Ok(normal) = normalize(&path) {
            prop_assert!(normal.starts_with('/'));
            let inner = normal.strip_suffix('/').unwrap_or(&normal);
            for segment in inner.split('/').skip(1) {
                prop_assert!(!segment.is_empty() && segment != "." && segment != "..", "{normal}");
            }
            let again = normalize(&normal).map(Cow::into_owned);
            prop_assert_eq!(again.as_deref(), Ok(&*normal));
        }
    }

    /// Arbitrary text, with or without a leading '/', never panics.
    #[test]
    fn arbitrary_bytes_never_panic(path in "\\PC{0,40}") {
        let _ = normalize(&path);
        let _ = normalize(&format!("/{path}"));
    }
}

/// Routing takes `%2F` for a separator, as nginx's location matching on the decoded path.
#[test]
fn routing_decodes_encoded_slashes() {
    let cases = [
        ("/plain/path", "/plain/path"),
        ("/a%20b", "/a%20b"),
        ("/admin%2Fsecret", "/admin/secret"),
        ("/admin%2fsecret/x", "/admin/secret/x"),
        ("/%2fadmin", "/admin"),
        ("/%2F%2Fadmin", "/admin"),
        ("/admin%2F", "/admin/"),
        ("/a%2F/b", "/a/b"),
        ("/a%252Fb", "/a%252Fb"),
        ("/a%5Cb", "/a%5Cb"),
        ("/caf%C3%A9%2Fx", "/caf%C3%A9/x"),
    ];
    for (path, want) in cases {
        assert_eq!(routing(path), want, "{path}");
    }
    assert!(matches!(routing("/no/escapes"), Cow::Borrowed(_)));
    assert!(matches!(routing("/a%20b"), Cow::Borrowed(_)));
}

proptest! {
    /// Whatever the path, routing never panics, never holds `%2F` or `//`, and never changes
    /// a path without an encoded slash.
    #[test]
    fn routing_is_total(path in "/[a-zA-Z0-9%/.2fF_-]{0,40}") {
        let r = routing(&path);
        let lower = r.to_ascii_lowercase();
        prop_assert!(!lower.contains("%2f"));
        prop_assert!(!r.contains("//") || path.contains("//"));
        if !path.to_ascii_lowercase().contains("%2f") {
            prop_assert_eq!(&*r, &*path);
        }
    }
}
