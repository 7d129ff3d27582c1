//! UTC timestamps from the system clock, formatted without a date crate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A UTC civil time, to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    /// Year.
    pub year: i64,
    /// Month, 1..=12.
    pub month: u32,
    /// Day of the month, 1..=31.
    pub day: u32,
    /// Seconds into the day.
    pub second_of_day: u32,
}

impl Utc {
    /// Now, by the system clock (the epoch if the clock is before it).
    pub fn now() -> Utc {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Utc::from_unix(secs)
    }

    /// The civil date of `secs` seconds after 1970-01-01T00:00:00Z
    /// (Howard Hinnant's days-from-civil inverse, proleptic Gregorian).
    pub fn from_unix(secs: u64) -> Utc {
        let days = (secs / 86_400) as i64;
        let second_of_day = (secs % 86_400) as u32;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Utc {
            year,
            month,
            day,
            second_of_day,
        }
    }

    /// `2024-05-01T12:34:56Z`.
    pub fn iso8601(&self) -> String {
        let (h, m, s) = self.hms();
        format!(
            "{:04}-{:02}-{:02}T{h:02}:{m:02}:{s:02}Z",
            self.year, self.month, self.day
        )
    }

    /// `20240501-123456`: sortable and safe in file names.
    pub fn compact(&self) -> String {
        let (h, m, s) = self.hms();
        format!(
            "{:04}{:02}{:02}-{h:02}{m:02}{s:02}",
            self.year, self.month, self.day
        )
    }

    /// Parses `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (the form log lines use)
    /// into the time since the Unix epoch; `None` for anything else or a
    /// date before 1970.
    pub fn parse_rfc3339(text: &str) -> Option<Duration> {
        let b = text.as_bytes();
        if b.len() < 20
            || b[4] != b'-'
            || b[7] != b'-'
            || b[10] != b'T'
            || b[13] != b':'
            || b[16] != b':'
        {
            return None;
        }
        let num = |range: std::ops::Range<usize>| -> Option<i64> {
            let digits = text.get(range)?;
            digits
                .bytes()
                .all(|c| c.is_ascii_digit())
                .then(|| digits.parse().ok())?
        };
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
            return None;
        }
        let rest = &text[19..];
        let (fraction, zone) = match rest.strip_prefix('.') {
            Some(r) => {
                let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
                (&r[..end], &r[end..])
            }
            None => ("", rest),
        };
        if zone != "Z" || fraction.len() > 9 {
            return None;
        }
        let nanos = if fraction.is_empty() {
            0
        } else {
            fraction.parse::<u32>().ok()? * 10u32.pow(9 - fraction.len() as u32)
        };
        // Days from civil (Howard Hinnant), the inverse of `from_unix`.
        let y = if mo <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let mp = (mo + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        let secs = days * 86_400 + h * 3600 + mi * 60 + s;
        Some(Duration::new(u64::try_from(secs).ok()?, nanos))
    }

    fn hms(&self) -> (u32, u32, u32) {
        let s = self.second_of_day;
        (s / 3600, s / 60 % 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(Utc::from_unix(0).iso8601(), "1970-01-01T00:00:00Z");
        // `date -u -d @951782400`: the leap day of a year divisible by 400.
        assert_eq!(
            Utc::from_unix(951_782_400).iso8601(),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            Utc::from_unix(1_700_000_000).iso8601(),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(Utc::from_unix(1_700_000_000).compact(), "20231114-221320");
        assert_eq!(
            Utc::from_unix(4_102_444_799).iso8601(),
            "2099-12-31T23:59:59Z"
        );
    }

    #[test]
    fn parses_what_it_prints_and_log_timestamps() {
        for secs in [0u64, 951_782_400, 1_700_000_000, 4_102_444_799] {
            let text = Utc::from_unix(secs).iso8601();
            assert_eq!(
                Utc::parse_rfc3339(&text),
                Some(Duration::from_secs(secs)),
                "{text}"
            );
        }
        assert_eq!(
            Utc::parse_rfc3339("2023-11-14T22:13:20.988184Z"),
            Some(Duration::new(1_700_000_000, 988_184_000))
        );
        for bad in [
            "",
            "2023-11-14 22:13:20Z",
            "2023-11-14T22:13:20",
            "2023-13-14T22:13:20Z",
            "2023-11-14T22:13:20+01:00",
            "1969-12-31T23:59:59Z",
            "2023-11-14T22:13:2xZ",
        ] {
            assert_eq!(Utc::parse_rfc3339(bad), None, "{bad}");
        }
    }
}
