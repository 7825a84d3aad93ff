//! Validity periods of the served certificates: the list behind
//! `portico_certificate_expiry_timestamp_seconds`, and the warnings about certificates that
//! have expired, are not valid yet, or expire soon.
//!
//! Kept out of `build()`, which has no clock: the controller takes [`served`] from each
//! published snapshot and calls [`diagnostics`] with the time of day, after each build and
//! again every hour, so a certificate that comes within [`EXPIRES_SOON`] of its end is
//! reported without any change to the objects.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::CertTable;
use crate::snapshot::diagnostics::Diagnostic;
use crate::source::ObjectKey;

/// A certificate that expires within this many seconds (14 days) gets a warning.
pub const EXPIRES_SOON: i64 = 14 * DAY;

/// The `host` of the default certificate (`--default-ssl-certificate`) in [`Served`].
pub const DEFAULT_HOST: &str = "*";

const DAY: i64 = 86_400;

/// Hosts named in one warning; the rest are counted.
const HOSTS_SHOWN: usize = 5;

/// One host pattern (or [`DEFAULT_HOST`]) and the certificate served for it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Served {
    /// The Secret the certificate came from.
    pub secret: ObjectKey,
    /// The host pattern, or [`DEFAULT_HOST`] for the default certificate.
    pub host: String,
    /// The leaf's notBefore, as Unix seconds.
    pub not_before: i64,
    /// The leaf's notAfter, as Unix seconds.
    pub not_after: i64,
}

/// Every certificate the table serves from a Secret, by Secret then host. The self-signed
/// fallback is not listed: it comes from no Secret and is made afresh at each start.
pub fn served(table: &CertTable) -> Vec<Served> {
    let entries = table.entries();
    let default = table.default_entry().map(|entry| (DEFAULT_HOST, entry));
    let mut served: Vec<Served> = entries
        .chain(default)
        .map(|(host, entry)| Served {
            secret: entry.secret.clone(),
            host: host.to_string(),
            not_before: entry.cert.not_before,
            not_after: entry.cert.not_after,
        })
        .collect();
    served.sort();
    served
}

/// A warning for each Secret whose certificate, at `now` (Unix seconds), has expired, is not
/// valid yet, or expires within [`EXPIRES_SOON`]; it names the Secret (the object), the hosts
/// it is served for and the date. Such certificates are still served, as nginx serves them.
pub fn diagnostics(served: &[Served], now: i64) -> Vec<Diagnostic> {
    let mut by_secret: BTreeMap<&ObjectKey, (&Served, Vec<&str>)> = BTreeMap::new();
    for s in served {
        let (_, hosts) = by_secret.entry(&s.secret).or_insert((s, Vec::new()));
        hosts.push(&s.host);
    }
    let mut out = Vec::new();
    for (secret, (cert, hosts)) in by_secret {
        let Some(state) = state(cert, now) else {
            continue;
        };
        let reason = format!("{state}; still served for {}", host_list(&hosts));
        out.push(Diagnostic::warning(secret, "tls.crt", reason));
    }
    out
}

/// What is wrong with the validity period at `now`, if anything.
fn state(cert: &Served, now: i64) -> Option<String> {
    let (start, end) = (utc(cert.not_before), utc(cert.not_after));
    if now >= cert.not_after {
        Some(format!("the certificate expired at {end} (notAfter)"))
    } else if now < cert.not_before {
        Some(format!(
            "the certificate is not valid before {start} (notBefore)"
        ))
    } else if cert.not_after - now <= EXPIRES_SOON {
        let days = (cert.not_after - now) / DAY;
        let within = match days {
            0 => "within a day".to_string(),
            1 => "in 1 day".to_string(),
            n => format!("in {n} days"),
        };
        Some(format!(
            "the certificate expires at {end} (notAfter), {within}"
        ))
    } else {
        None
    }
}

fn host_list(hosts: &[&str]) -> String {
    let mut out = String::new();
    for (i, host) in hosts.iter().take(HOSTS_SHOWN).enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        match *host {
            DEFAULT_HOST => out.push_str("the default certificate"),
            host => out.push_str(host),
        }
    }
    if hosts.len() > HOSTS_SHOWN {
        let _ = write!(out, " and {} more hosts", hosts.len() - HOSTS_SHOWN);
    }
    out
}

/// The wall clock as Unix seconds: what the validity of certificates is judged by. Read by
/// the controller and `portico check`, never by `build()`.
pub fn unix_now() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Unix seconds as an RFC 3339 date and time in UTC (`2025-01-31T23:59:59Z`).
pub fn utc(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(DAY), secs.rem_euclid(DAY));
    let (year, month, day) = civil_from_days(days);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
}

/// Unix seconds as nginx's `ngx.cookie_time` writes a cookie's Expires
/// (`Thu, 03-Dec-26 10:07:13 GMT`).
pub fn cookie_time(secs: i64) -> String {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (days, rem) = (secs.div_euclid(DAY), secs.rem_euclid(DAY));
    let (year, month, day) = civil_from_days(days);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let weekday = WEEKDAYS[days.rem_euclid(7) as usize];
    let month = MONTHS[(month - 1) as usize];
    let year = year.rem_euclid(100);
    format!("{weekday}, {day:02}-{month}-{year:02} {h:02}:{m:02}:{s:02} GMT")
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests;
