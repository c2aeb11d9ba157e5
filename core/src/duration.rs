//! Durations as DBAs write them in config: `90s`, `5m`, `1h`, `2d`.

use std::time::Duration;

pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration; write e.g. 90s, 5m, 1h or 2d"))?;
    let secs = match unit.trim() {
        "s" | "" => n,
        "m" | "min" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?}; use s, m, h or d"
            ));
        }
    };
    Ok(Duration::from_secs(secs))
}

/// Serde adapter for duration fields in config files.
pub mod serde_text {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Serde adapter for optional duration fields.
pub mod serde_text_opt {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = String::deserialize(d)?;
        super::parse(&s).map(Some).map_err(serde::de::Error::custom)
    }
}

/// Human form for tables: `2h03m`, `45s`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_rejects_nonsense() {
        assert_eq!(parse("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse("2d").unwrap(), Duration::from_secs(172800));
        assert_eq!(parse("30").unwrap(), Duration::from_secs(30));
        assert!(parse("1w").unwrap_err().contains("unknown unit"));
        assert!(parse("soon").is_err());
        assert_eq!(human(Duration::from_secs(7380)), "2h03m");
    }
}
