//! Byte rates given on the command line: `500K`, `10M`, `1.5G`, `2048`.

use std::num::NonZeroU64;

/// Parses a rate in bytes per second with an optional binary suffix
/// (K, M, G; `iB`, `B` and `/s` after it are accepted too).
pub fn parse_rate(text: &str) -> Result<NonZeroU64, String> {
    let trimmed = text.trim();
    let lower = trimmed.to_ascii_lowercase();
    let body = lower
        .trim_end_matches("/s")
        .trim_end_matches('b')
        .trim_end_matches('i');
    let (number, scale) = match body.chars().last() {
        Some('k') => (&body[..body.len() - 1], 1u64 << 10),
        Some('m') => (&body[..body.len() - 1], 1 << 20),
        Some('g') => (&body[..body.len() - 1], 1 << 30),
        _ => (body, 1),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a rate like 500K, 10M or 1.5G (bytes per second)"))?;
    let bytes = value * scale as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!("rate {text:?} must be at least 1 byte per second"));
    }
    NonZeroU64::new(bytes as u64)
        .ok_or_else(|| format!("rate {text:?} must be at least 1 byte per second"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_are_binary() {
        assert_eq!(parse_rate("2048").unwrap().get(), 2048);
        assert_eq!(parse_rate("500K").unwrap().get(), 500 * 1024);
        assert_eq!(parse_rate("10MiB/s").unwrap().get(), 10 << 20);
        assert_eq!(parse_rate("1.5g").unwrap().get(), 3 << 29);
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("-1M").is_err());
    }
}
