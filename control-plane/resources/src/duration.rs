//! Gateway API durations (GEP-2257): `^([0-9]{1,5}(h|m|s|ms)){1,4}$` — `10s`, `1m30s`,
//! `500ms`, `0s`. A strict subset of Go's `time.ParseDuration`, so documents written for
//! other Gateway API implementations mean the same thing here; components add up.

use std::time::Duration;

/// Most components (`1h2m3s4ms` has four).
const MAX_COMPONENTS: usize = 4;
/// Most digits per component.
const MAX_DIGITS: usize = 5;

/// Parses a Gateway API duration; the error says what the format is.
pub fn parse(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "{text:?} is not a Gateway API duration: 1 to 4 groups of up to 5 digits \
             and a unit h, m, s or ms (e.g. 10s, 1m30s, 500ms)"
        )
    };
    let bytes = text.as_bytes();
    let mut total = Duration::ZERO;
    let mut i = 0;
    let mut components = 0;
    while i < bytes.len() {
        components += 1;
        if components > MAX_COMPONENTS {
            return Err(bad());
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let digits = i - start;
        if digits == 0 || digits > MAX_DIGITS {
            return Err(bad());
        }
        // At most 5 digits: always fits.
        let n: u64 = text[start..i].parse().map_err(|_| bad())?;
        // `m` followed by `s` is milliseconds: a new component must start with a digit,
        // so `ms` can never be minutes followed by something else.
        let unit = match (bytes.get(i), bytes.get(i + 1)) {
            (Some(b'm'), Some(b's')) => {
                i += 2;
                Duration::from_millis(n)
            }
            (Some(b'h'), _) => {
                i += 1;
                Duration::from_secs(n * 3600)
            }
            (Some(b'm'), _) => {
                i += 1;
                Duration::from_secs(n * 60)
            }
            (Some(b's'), _) => {
                i += 1;
                Duration::from_secs(n)
            }
            _ => return Err(bad()),
        };
        total += unit;
    }
    if components == 0 {
        return Err(bad());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_forms() {
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("2m5ms"), Ok(Duration::from_millis(120_005)));
        assert_eq!(parse("1h2m3s4ms"), Ok(Duration::from_millis(3_723_004)));
        assert_eq!(parse("99999ms"), Ok(Duration::from_millis(99_999)));
    }

    #[test]
    fn invalid_forms() {
        for bad in [
            "",
            "10",
            "s",
            "1.5s",
            "-1s",
            "100000s",
            "1d",
            "1h2m3s4ms5s",
            "1 s",
            "1S",
            "1us",
            "1m s",
            "1sm",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains("is not a Gateway API duration"), "{bad}: {e}");
        }
    }
}
