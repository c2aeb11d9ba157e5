//! Where a drill recovers to. Always a past point the archive covers: a drill to "now"
//! would only prove that the newest WAL can be replayed, not that a past second can be
//! reached, and a point past the newest archived WAL cannot be reached at all.

use std::time::Duration;

use tidemark_core::timefmt::{parse_timestamp, pg_timestamp};

const MICROS: i64 = 1_000_000;
const DEFAULT_AGO: Duration = Duration::from_secs(3600);

/// A target as the operator gave it.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetSpec {
    /// One hour ago, or the middle of a window shorter than that.
    Default,
    /// This long ago.
    Ago(Duration),
    /// A random point in the window.
    Random,
    /// Unix microseconds.
    At(i64),
}

impl TargetSpec {
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        match t {
            "" => Ok(TargetSpec::Default),
            "random" => Ok(TargetSpec::Random),
            "now" => Err(
                "a drill recovers to a past point, and \"now\" is not one: give a time, a duration ago (90m), or random"
                    .into(),
            ),
            _ if t.starts_with(|c: char| c.is_ascii_digit()) && t.len() < 12 => {
                tidemark_core::duration::parse(t.trim_end_matches(" ago")).map(TargetSpec::Ago)
            }
            _ => parse_timestamp(t).map(TargetSpec::At),
        }
    }
}

/// The recovery window a drill can use, unix microseconds: from the oldest restorable base
/// backup's end to the newest archived WAL.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub oldest: i64,
    pub newest: i64,
}

/// The target for `spec` at `now` (unix microseconds), and how it was chosen. `seed` picks
/// the random point.
pub fn choose(spec: &TargetSpec, span: Span, now: i64, seed: u64) -> Result<(i64, String), String> {
    if span.newest <= span.oldest {
        return Err(format!(
            "the recovery window is empty (newest archived WAL {} is not after the oldest base backup's end {}); archive more WAL or take a base backup",
            pg_timestamp(span.newest),
            pg_timestamp(span.oldest)
        ));
    }
    let window = format!(
        "the recovery window {} .. {}",
        pg_timestamp(span.oldest),
        pg_timestamp(span.newest)
    );
    let check = |t: i64, how: String| -> Result<(i64, String), String> {
        if t >= now {
            return Err(format!(
                "target {} is not in the past; a drill recovers to a past point",
                pg_timestamp(t)
            ));
        }
        if t >= span.newest {
            return Err(format!(
                "target {} is later than the newest archived WAL ({}); a drill can only reach points the archive covers",
                pg_timestamp(t),
                pg_timestamp(span.newest)
            ));
        }
        if t <= span.oldest {
            return Err(format!(
                "target {} is before {window}: no base backup ended before it",
                pg_timestamp(t)
            ));
        }
        Ok((t, how))
    };
    match spec {
        TargetSpec::At(t) => check(*t, "given".into()),
        TargetSpec::Ago(d) => check(
            now - d.as_micros() as i64,
            format!("{} ago", tidemark_core::duration::human(*d)),
        ),
        TargetSpec::Random => {
            let len = (span.newest - span.oldest - 2) as u64;
            let t = span.oldest + 1 + (splitmix(seed) % len.max(1)) as i64;
            check(t, format!("a random point in {window}"))
        }
        TargetSpec::Default => {
            let hour_ago = now - DEFAULT_AGO.as_micros() as i64;
            if hour_ago > span.oldest && hour_ago < span.newest {
                check(hour_ago, "one hour ago (the default)".into())
            } else {
                let middle = span.oldest + (span.newest - span.oldest) / 2;
                check(
                    middle,
                    format!("the middle of {window}, which does not reach back one hour"),
                )
            }
        }
    }
}

/// A well-mixed 64-bit value from a seed (SplitMix64), for the random target.
fn splitmix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Unix seconds to microseconds.
pub fn micros(secs: i64) -> i64 {
    secs * MICROS
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000 * MICROS;

    fn span(oldest_ago_s: i64, newest_ago_s: i64) -> Span {
        Span {
            oldest: NOW - oldest_ago_s * MICROS,
            newest: NOW - newest_ago_s * MICROS,
        }
    }

    #[test]
    fn now_and_the_future_are_refused() {
        assert!(TargetSpec::parse("now").unwrap_err().contains("past"));
        let s = span(7200, 10);
        let e = choose(&TargetSpec::At(NOW), s, NOW, 0).unwrap_err();
        assert!(e.contains("not in the past"), "{e}");
        // Past, but later than the newest archived WAL.
        let e = choose(&TargetSpec::Ago(Duration::from_secs(5)), s, NOW, 0).unwrap_err();
        assert!(e.contains("later than the newest archived WAL"), "{e}");
        let e = choose(&TargetSpec::Ago(Duration::from_secs(9000)), s, NOW, 0).unwrap_err();
        assert!(e.contains("no base backup ended before it"), "{e}");
    }

    #[test]
    fn default_is_an_hour_ago_or_the_middle_of_a_short_window() {
        let (t, why) = choose(&TargetSpec::Default, span(7200, 10), NOW, 0).unwrap();
        assert_eq!(t, NOW - 3600 * MICROS);
        assert!(why.contains("one hour ago"), "{why}");
        let (t, why) = choose(&TargetSpec::Default, span(600, 100), NOW, 0).unwrap();
        assert_eq!(t, NOW - 350 * MICROS);
        assert!(why.contains("middle"), "{why}");
        assert!(choose(&TargetSpec::Default, span(100, 100), NOW, 0).is_err());
    }

    #[test]
    fn specs_parse_and_random_stays_inside() {
        assert_eq!(
            TargetSpec::parse("90m").unwrap(),
            TargetSpec::Ago(Duration::from_secs(5400))
        );
        assert_eq!(
            TargetSpec::parse("2h ago").unwrap(),
            TargetSpec::Ago(Duration::from_secs(7200))
        );
        assert_eq!(TargetSpec::parse("").unwrap(), TargetSpec::Default);
        assert!(matches!(
            TargetSpec::parse("2026-11-25 09:00:00Z").unwrap(),
            TargetSpec::At(_)
        ));
        assert!(TargetSpec::parse("yesterday").is_err());
        let s = span(600, 100);
        for seed in 0..200 {
            let (t, _) = choose(&TargetSpec::Random, s, NOW, seed).unwrap();
            assert!(t > s.oldest && t < s.newest);
        }
    }
}
