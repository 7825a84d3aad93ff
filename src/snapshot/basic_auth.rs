//! Basic authentication (ingress-nginx's `auth-type: basic`): the users of a Secret
//! (`auth-file`: an htpasswd file in key `auth`; `auth-map`: a key per user), read once when
//! the snapshot is built, and checked per request with the hash schemes nginx accepts:
//! bcrypt (`$2y$`, `$2a$`, `$2b$`), `$apr1$` and `$1$` (MD5-crypt), `$5$` and `$6$`
//! (SHA-crypt), `{SHA}`, `{SSHA}` and `{PLAIN}`. Other schemes are reported when the Secret is
//! read; such a user's requests get 500, as nginx answers when `crypt()` fails. Every
//! comparison of secret material runs in constant time. Neither the hashes nor the passwords
//! ever reach a log, a diagnostic or `/debug/snapshot`.

use std::collections::HashMap;

use http::HeaderValue;
use serde::Serialize;
use subtle::ConstantTimeEq;

/// The highest bcrypt cost accepted (2^17 rounds, about 8 s per check on a 2020 core): a
/// Secret cannot make one request stall a thread for minutes. ingress-nginx's e2e tests use 14.
pub const MAX_BCRYPT_COST: u32 = 17;

/// The highest SHA-crypt `rounds=` accepted (glibc's default is 5000).
pub const MAX_SHA_CRYPT_ROUNDS: u32 = 1_000_000;

/// The users of one Secret, and how to ask a client for credentials.
#[derive(Clone)]
pub struct BasicAuth {
    /// `WWW-Authenticate: Basic realm="<auth-realm>"`.
    pub challenge: HeaderValue,
    /// The Secret, `namespace/name` (for logs and diagnostics).
    pub source: Box<str>,
    /// A digest of what was read (the Secret's data and the realm): part of the key of the
    /// verified-credentials cache, so a changed Secret never reuses an earlier verdict.
    pub digest: [u8; 32],
    users: HashMap<Box<[u8]>, Credential>,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("source", &self.source)
            .field("users", &self.users.len())
            .finish()
    }
}

impl PartialEq for BasicAuth {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest && self.source == other.source
    }
}

impl Eq for BasicAuth {}

impl Serialize for BasicAuth {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("BasicAuth", 3)?;
        st.serialize_field("secret", &*self.source)?;
        st.serialize_field("challenge", self.challenge.to_str().unwrap_or(""))?;
        st.serialize_field("users", &self.users.len())?;
        st.end()
    }
}

/// One user's stored password.
#[derive(Clone)]
pub enum Credential {
    /// `$2a$`, `$2b$`, `$2y$`: the whole hash.
    Bcrypt(Box<str>),
    /// `$1$` or `$apr1$`: the magic, the salt, the encoded digest.
    Md5Crypt {
        /// `$1$` or `$apr1$`.
        magic: &'static str,
        /// Up to 8 characters.
        salt: Box<[u8]>,
        /// 22 characters of crypt's base-64.
        encoded: Box<[u8]>,
    },
    /// `$5$`, `$6$`: the whole hash.
    ShaCrypt(Box<str>),
    /// `{SHA}`: SHA-1 of the password.
    Sha1([u8; 20]),
    /// `{SSHA}`: SHA-1 of the password and the salt, and the salt.
    Ssha {
        /// SHA-1 of the password, then the salt.
        digest: [u8; 20],
        /// The salt.
        salt: Box<[u8]>,
    },
    /// `{PLAIN}`: the password itself.
    Plain(Box<[u8]>),
    /// A scheme Portico cannot check (the reason): the user's requests get 500.
    Unsupported(&'static str),
}

/// What checking a password gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The password is the user's.
    Valid,
    /// It is not (401).
    Invalid,
    /// The stored password cannot be checked (500, as nginx when `crypt()` fails).
    Error,
}

impl Credential {
    /// Reads a stored password; the error says why it cannot be checked (never quoting it).
    pub fn parse(hash: &str) -> Result<Credential, &'static str> {
        if let Some(rest) = hash.strip_prefix("{PLAIN}") {
            return Ok(Credential::Plain(rest.as_bytes().into()));
        }
        if let Some(rest) = hash.strip_prefix("{SHA}") {
            let raw = base64(rest).ok_or("a {SHA} value that is not base64")?;
            let digest: [u8; 20] = raw
                .try_into()
                .map_err(|_| "a {SHA} value that is not 20 bytes")?;
            return Ok(Credential::Sha1(digest));
        }
        if let Some(rest) = hash.strip_prefix("{SSHA}") {
            let raw = base64(rest).ok_or("a {SSHA} value that is not base64")?;
            if raw.len() < 20 {
                return Err("a {SSHA} value shorter than a SHA-1 digest");
            }
            let (digest, salt) = raw.split_at(20);
            return Ok(Credential::Ssha {
                digest: digest.try_into().unwrap_or([0; 20]),
                salt: salt.into(),
            });
        }
        for magic in ["$apr1$", "$1$"] {
            if let Some(rest) = hash.strip_prefix(magic) {
                let (salt, encoded) = rest
                    .split_once('$')
                    .ok_or("an MD5-crypt hash without a salt")?;
                if salt.len() > 8 || encoded.len() != 22 {
                    return Err("an MD5-crypt hash of the wrong length");
                }
                let magic = if magic == "$1$" { "$1$" } else { "$apr1$" };
                return Ok(Credential::Md5Crypt {
                    magic,
                    salt: salt.as_bytes().into(),
                    encoded: encoded.as_bytes().into(),
                });
            }
        }
        if ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
            let cost = hash
                .get(4..6)
                .and_then(|c| c.parse::<u32>().ok())
                .ok_or("a bcrypt hash without a cost")?;
            if cost > MAX_BCRYPT_COST {
                return Err("a bcrypt cost above 17 (each check would take many seconds)");
            }
            if hash.len() != 60 {
                return Err("a bcrypt hash of the wrong length");
            }
            return Ok(Credential::Bcrypt(hash.into()));
        }
        if let Some(rest) = hash
            .strip_prefix("$5$")
            .or_else(|| hash.strip_prefix("$6$"))
        {
            if let Some(rounds) = rest.strip_prefix("rounds=") {
                let n = rounds
                    .split('$')
                    .next()
                    .and_then(|n| n.parse::<u32>().ok())
                    .ok_or("a SHA-crypt hash with invalid rounds")?;
                if n > MAX_SHA_CRYPT_ROUNDS {
                    return Err("SHA-crypt rounds above 1000000 (each check would take seconds)");
                }
            }
            return Ok(Credential::ShaCrypt(hash.into()));
        }
        if hash.is_empty() {
            return Err("an empty password hash");
        }
        if hash.len() == 13 && !hash.starts_with('$') {
            return Err(
                "a traditional DES crypt() hash, which Portico does not check (re-hash with bcrypt: htpasswd -B)",
            );
        }
        Err("a hash scheme nginx's auth_basic does not know")
    }

    /// Whether checking costs real time (bcrypt, SHA-crypt, MD5-crypt): done off the
    /// reactor's threads.
    pub fn is_slow(&self) -> bool {
        matches!(
            self,
            Credential::Bcrypt(_) | Credential::ShaCrypt(_) | Credential::Md5Crypt { .. }
        )
    }

    /// Checks a password.
    pub fn verify(&self, password: &[u8]) -> Verdict {
        let ok = |b: bool| if b { Verdict::Valid } else { Verdict::Invalid };
        match self {
            Credential::Plain(p) => ok(p.ct_eq(password).into()),
            Credential::Sha1(digest) => {
                let got = sha1(&[password]);
                ok(got.ct_eq(digest).into())
            }
            Credential::Ssha { digest, salt } => {
                let got = sha1(&[password, salt]);
                ok(got.ct_eq(digest).into())
            }
            Credential::Md5Crypt {
                magic,
                salt,
                encoded,
            } => {
                let got = md5_crypt(password, magic.as_bytes(), salt);
                ok(got[..].ct_eq(&encoded[..]).into())
            }
            Credential::Bcrypt(hash) => match bcrypt::verify(password, hash) {
                Ok(b) => ok(b),
                Err(_) => Verdict::Error,
            },
            Credential::ShaCrypt(hash) => {
                use sha_crypt::PasswordVerifier;
                match sha_crypt::ShaCrypt::default().verify_password(password, hash.as_ref()) {
                    Ok(()) => Verdict::Valid,
                    Err(sha_crypt::password_hash::Error::PasswordInvalid) => Verdict::Invalid,
                    Err(_) => Verdict::Error,
                }
            }
            Credential::Unsupported(_) => Verdict::Error,
        }
    }
}

fn base64(text: &str) -> Option<Vec<u8>> {
    data_encoding::BASE64.decode(text.trim().as_bytes()).ok()
}

fn sha1(parts: &[&[u8]]) -> [u8; 20] {
    use sha1::Digest;
    let mut h = sha1::Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// MD5-crypt (`$1$`, and Apache's `$apr1$`, which differs only in the magic): the encoded
/// digest, 22 characters of crypt's base-64.
pub fn md5_crypt(password: &[u8], magic: &[u8], salt: &[u8]) -> [u8; 22] {
    use md5::{Digest, Md5};
    let mut alt = Md5::new();
    alt.update(password);
    alt.update(salt);
    alt.update(password);
    let alt = alt.finalize();
    let mut ctx = Md5::new();
    ctx.update(password);
    ctx.update(magic);
    ctx.update(salt);
    let mut left = password.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(&alt[..n]);
        left -= n;
    }
    let mut i = password.len();
    while i != 0 {
        if i & 1 != 0 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        i >>= 1;
    }
    let mut fin = ctx.finalize();
    for round in 0..1000 {
        let mut c = Md5::new();
        if round & 1 != 0 {
            c.update(password);
        } else {
            c.update(fin);
        }
        if round % 3 != 0 {
            c.update(salt);
        }
        if round % 7 != 0 {
            c.update(password);
        }
        if round & 1 != 0 {
            c.update(fin);
        } else {
            c.update(password);
        }
        fin = c.finalize();
    }
    const ITOA64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = [0u8; 22];
    let mut at = 0;
    let mut put = |mut v: u32, n: usize| {
        for _ in 0..n {
            out[at] = ITOA64[(v & 0x3f) as usize];
            v >>= 6;
            at += 1;
        }
    };
    let f = |i: usize| u32::from(fin[i]);
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        put((f(a) << 16) | (f(b) << 8) | f(c), 4);
    }
    put(f(11), 2);
    out
}

/// How the Secret lays out its users (`auth-secret-type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretType {
    /// `auth-file` (the default): an htpasswd file in key `auth`.
    File,
    /// `auth-map`: each key a user, each value a hash.
    Map,
}

impl BasicAuth {
    /// Reads the users of a Secret's data. `Err`: the Secret cannot serve (ingress-nginx
    /// denies the location: 503). Problems with single users are `warnings` (never quoting a
    /// hash); those users' requests get 500.
    pub fn new(
        source: &str,
        realm: &str,
        kind: SecretType,
        data: &std::collections::BTreeMap<String, Vec<u8>>,
        warnings: &mut Vec<String>,
    ) -> Result<BasicAuth, String> {
        let mut users: HashMap<Box<[u8]>, Credential> = HashMap::new();
        let mut add = |user: &[u8], hash: &[u8], line: String, warnings: &mut Vec<String>| {
            if users.contains_key(user) {
                // nginx takes the first line of a user.
                return;
            }
            let credential = match std::str::from_utf8(hash)
                .map_err(|_| "a hash that is not text")
                .and_then(|h| Credential::parse(h.trim_end_matches(['\r', ' ', '\t'])))
            {
                Ok(c) => c,
                Err(why) => {
                    warnings.push(format!(
                        "{line} (user {:?}) has {why}; that user's requests get 500",
                        String::from_utf8_lossy(user)
                    ));
                    Credential::Unsupported(why)
                }
            };
            users.insert(user.into(), credential);
        };
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        digest.update(realm.as_bytes());
        digest.update(&[0]);
        match kind {
            SecretType::File => {
                let file = data
                    .get("auth")
                    .ok_or_else(|| format!("the Secret {source} has no key \"auth\""))?;
                digest.update(file);
                for (n, line) in file.split(|&b| b == b'\n').enumerate() {
                    let line_no = format!("line {}", n + 1);
                    if line.first() == Some(&b'#') {
                        continue;
                    }
                    let Some(colon) = line.iter().position(|&b| b == b':') else {
                        continue;
                    };
                    let (user, rest) = (&line[..colon], &line[colon + 1..]);
                    if user.is_empty() {
                        continue;
                    }
                    // nginx ends the password at the next ':' (a comment may follow).
                    let end = rest.iter().position(|&b| b == b':').unwrap_or(rest.len());
                    add(user, &rest[..end], line_no, warnings);
                }
            }
            SecretType::Map => {
                for (user, hash) in data {
                    digest.update(user.as_bytes());
                    digest.update(&[0]);
                    digest.update(hash);
                    digest.update(&[0]);
                    add(user.as_bytes(), hash, format!("key {user:?}"), warnings);
                }
            }
        }
        if users.is_empty() {
            return Err(format!("the Secret {source} lists no user"));
        }
        let challenge = HeaderValue::from_str(&format!("Basic realm=\"{realm}\""))
            .map_err(|_| "auth-realm has characters a header cannot carry".to_string())?;
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.finish().as_ref());
        Ok(BasicAuth {
            challenge,
            source: source.into(),
            digest: out,
            users,
        })
    }

    /// The stored password of a user.
    pub fn user(&self, user: &[u8]) -> Option<&Credential> {
        self.users.get(user)
    }

    /// How many users it has.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether it has no user (never: such a Secret is refused).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// The user and password of an `Authorization: Basic …` field value, as nginx reads it: the
/// scheme in any case, spaces after it, standard base-64 up to the first `=` (padding
/// optional, what follows it ignored, as `ngx_decode_base64`), split at the first ':';
/// `None` (401) for anything else, an empty user included.
pub fn decode_authorization(value: &[u8]) -> Option<(Vec<u8>, usize)> {
    if value.len() < 6 || !value[..6].eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let encoded = value[6..].trim_ascii();
    let body = encoded.split(|&b| b == b'=').next().unwrap_or_default();
    if body.len() % 4 == 1 {
        return None;
    }
    let decoded = data_encoding::BASE64_NOPAD.decode(body).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    if colon == 0 {
        return None;
    }
    Some((decoded, colon))
}

#[cfg(test)]
mod tests;
