//! Cron expressions, evaluated in UTC: `MIN HOUR DOM MON DOW` as in crontab(5), with an
//! optional leading seconds field (`SEC MIN HOUR DOM MON DOW`, as Quartz and croner accept)
//! and the usual `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`. Fields take `*`,
//! lists, ranges and steps (`*/15`, `1-5`, `0-30/10`), month and weekday names, and
//! weekday 7 for Sunday. As in cron, when both day fields are restricted a day matching
//! either one runs.

use tidemark_core::timefmt::civil_from_days;

#[derive(Debug, Clone, PartialEq)]
pub struct Cron {
    secs: u64,
    mins: u64,
    hours: u32,
    /// Bits 1..=31.
    dom: u32,
    /// Bits 1..=12.
    months: u16,
    /// Bits 0..=6, Sunday = 0.
    dow: u8,
    dom_any: bool,
    dow_any: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn field(
    text: &str,
    what: &str,
    min: u32,
    max: u32,
    names: &[&str],
    base: u32,
) -> Result<u64, String> {
    let bad = |why: String| format!("cron {what} field {text:?}: {why}");
    let value = |s: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(i as u32 + base);
        }
        let v: u32 = s
            .parse()
            .map_err(|_| bad(format!("{s:?} is not a number")))?;
        if v < min || v > max {
            return Err(bad(format!("{v} is outside {min}-{max}")));
        }
        Ok(v)
    };
    let mut bits = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let s: u32 = s
                    .parse()
                    .map_err(|_| bad(format!("step {s:?} is not a number")))?;
                if s == 0 {
                    return Err(bad("a step of 0".into()));
                }
                (r, s)
            }
            None => (item, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let v = value(range)?;
            (v, if item.contains('/') { max } else { v })
        };
        if lo > hi {
            return Err(bad(format!("range {lo}-{hi} runs backwards")));
        }
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

impl Cron {
    pub fn parse(text: &str) -> Result<Cron, String> {
        let t = text.trim();
        let expanded = match t {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            other => other,
        };
        let f: Vec<&str> = expanded.split_whitespace().collect();
        let (sec, rest) = match f.len() {
            5 => ("0", &f[..]),
            6 => (f[0], &f[1..]),
            _ => {
                return Err(format!(
                    "{t:?} is not a cron expression: write 5 fields (MIN HOUR DOM MON DOW, e.g. \"0 2 * * *\"), 6 with leading seconds, or @daily"
                ));
            }
        };
        let mut dow = field(rest[4], "weekday", 0, 7, &DAYS, 0)?;
        if dow & (1 << 7) != 0 {
            dow = (dow | 1) & 0x7f;
        }
        Ok(Cron {
            secs: field(sec, "second", 0, 59, &[], 0)?,
            mins: field(rest[0], "minute", 0, 59, &[], 0)?,
            hours: field(rest[1], "hour", 0, 23, &[], 0)? as u32,
            dom: field(rest[2], "day-of-month", 1, 31, &[], 0)? as u32,
            months: field(rest[3], "month", 1, 12, &MONTHS, 1)? as u16,
            dow: dow as u8,
            dom_any: rest[2] == "*",
            dow_any: rest[4] == "*",
        })
    }

    fn day_matches(&self, days: i64) -> bool {
        let (_, m, d) = civil_from_days(days);
        if self.months & (1 << m) == 0 {
            return false;
        }
        // 1970-01-01 was a Thursday.
        let wd = (days + 4).rem_euclid(7) as u32;
        let dom = self.dom & (1 << d) != 0;
        let dow = self.dow & (1 << wd) != 0;
        match (self.dom_any, self.dow_any) {
            (true, true) => true,
            (false, true) => dom,
            (true, false) => dow,
            (false, false) => dom || dow,
        }
    }

    /// The first time strictly after `t` (unix seconds) that matches; None if none within
    /// eight years (a 31 February, say).
    pub fn next_after(&self, t: i64) -> Option<i64> {
        let start = t + 1;
        let first_day = start.div_euclid(86400);
        for day in first_day..first_day + 8 * 366 {
            if !self.day_matches(day) {
                continue;
            }
            let from = if day == first_day {
                start.rem_euclid(86400)
            } else {
                0
            };
            for h in (from / 3600) as u32..24 {
                if self.hours & (1 << h) == 0 {
                    continue;
                }
                for m in 0..60u32 {
                    if self.mins & (1 << m) == 0 {
                        continue;
                    }
                    for s in 0..60u32 {
                        if self.secs & (1 << s) == 0 {
                            continue;
                        }
                        let at = day * 86400 + (h * 3600 + m * 60 + s) as i64;
                        if at >= start {
                            return Some(at);
                        }
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_core::timefmt::days_from_civil;

    fn date(y: i64, m: u32, d: u32) -> i64 {
        days_from_civil(y, m, d) * 86400
    }

    fn at(y: i64, mo: u32, d: u32, h: i64, mi: i64, s: i64) -> i64 {
        date(y, mo, d) + h * 3600 + mi * 60 + s
    }

    #[test]
    fn next_runs() {
        let t = at(2026, 11, 25, 20, 11, 2); // a Wednesday
        let c = |e: &str| Cron::parse(e).unwrap();
        assert_eq!(
            c("0 2 * * *").next_after(t),
            Some(at(2026, 11, 26, 2, 0, 0))
        );
        assert_eq!(
            c("*/15 * * * *").next_after(t),
            Some(at(2026, 11, 25, 20, 15, 0))
        );
        assert_eq!(c("@hourly").next_after(t), Some(at(2026, 11, 25, 21, 0, 0)));
        assert_eq!(
            c("0 3 * * sun").next_after(t),
            Some(at(2026, 11, 29, 3, 0, 0))
        );
        assert_eq!(
            c("0 3 * * 7").next_after(t),
            Some(at(2026, 11, 29, 3, 0, 0))
        );
        assert_eq!(
            c("30 4 1 jan *").next_after(t),
            Some(at(2027, 1, 1, 4, 30, 0))
        );
        assert_eq!(
            c("*/5 * * * * *").next_after(t),
            Some(at(2026, 11, 25, 20, 11, 5))
        );
        assert_eq!(
            c("0 0 29 2 *").next_after(t),
            Some(at(2028, 2, 29, 0, 0, 0))
        );
        // Both day fields restricted: either matches (the 1st, or a Monday).
        assert_eq!(
            c("0 0 1 * mon").next_after(t),
            Some(at(2026, 11, 30, 0, 0, 0))
        );
        // Strictly after.
        let exact = at(2026, 11, 26, 2, 0, 0);
        assert_eq!(c("0 2 * * *").next_after(exact), Some(exact + 86400));
        assert_eq!(c("0 0 31 2 *").next_after(t), None);
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        for (e, says) in [
            ("* * *", "5 fields"),
            ("61 * * * *", "outside 0-59"),
            ("* 25 * * *", "outside 0-23"),
            ("*/0 * * * *", "step of 0"),
            ("5-1 * * * *", "backwards"),
            ("* * * foo *", "not a number"),
        ] {
            let err = Cron::parse(e).unwrap_err();
            assert!(err.contains(says), "{e}: {err}");
        }
    }
}
