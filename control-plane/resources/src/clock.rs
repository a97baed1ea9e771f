//! Unix seconds, and their UTC text, without a date library: the REST API carries times as
//! Unix seconds (revisions, certificates, registrations); the control plane stamps them and
//! `tandemctl` prints them.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Unix seconds as RFC 3339 in UTC (`2026-11-25T15:16:42Z`).
pub fn rfc3339(secs: u64) -> String {
    let mut s = utc(secs).replacen(' ', "T", 1);
    s.push('Z');
    s
}

/// Unix seconds as RFC 3339 with microseconds (`2026-11-25T15:16:42.000000Z`), the form
/// Kubernetes `MicroTime` fields take.
pub fn rfc3339_micro(secs: u64) -> String {
    let mut s = utc(secs).replacen(' ', "T", 1);
    s.push_str(".000000Z");
    s
}

/// Unix seconds of an RFC 3339 UTC time (`2026-11-25T15:16:42Z`, fractions ignored);
/// `None` for another form or an offset other than `Z`.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let time = time.split('.').next()?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.splitn(3, ':').map(|p| p.parse::<u64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days)
        .ok()
        .map(|days| days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// `YYYY-MM-DD HH:MM:SS` for a Unix time (UTC), without a date library.
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_times() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20");
    }

    #[test]
    fn rfc3339_round_trips_and_refuses_other_forms() {
        for secs in [0, 951_782_400, 1_700_000_000, 1_796_542_690] {
            assert_eq!(parse_rfc3339(&rfc3339(secs)), Some(secs));
            assert_eq!(parse_rfc3339(&rfc3339_micro(secs)), Some(secs));
        }
        for bad in [
            "2026-11-25 15:16:42Z",
            "2026-11-25T15:16:42+01:00",
            "2026-13-01T00:00:00Z",
            "x",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
