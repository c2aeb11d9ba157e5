//! Unix seconds as operators read them: `2026-11-25 20:01:02Z` (UTC, always).

/// The current time in unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Format unix seconds as UTC; 0 (unset) formats as `-`.
pub fn utc(secs: i64) -> String {
    if secs == 0 {
        return "-".into();
    }
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A proleptic Gregorian date to days since 1970-01-01 (the inverse of the above).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parse a timestamp as operators write them for a recovery target, to unix microseconds:
/// `2026-11-25 20:11:02`, with an optional fraction (`.123456`), `T` instead of the space,
/// and a zone (`Z`, `+01`, `-05:30`). Without a zone the time is UTC.
pub fn parse_timestamp(s: &str) -> Result<i64, String> {
    let bad = |why: &str| {
        format!(
            "{s:?} is not a timestamp ({why}); write it as 2026-11-25 20:11:02.5+00 (UTC when no zone is given)"
        )
    };
    let t = s.trim();
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        t.get(r.clone())
            .filter(|x| x.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|x| x.parse().ok())
            .ok_or_else(|| bad("bad digits"))
    };
    if t.len() < 19 || &t[4..5] != "-" || &t[7..8] != "-" || !matches!(&t[10..11], " " | "T") {
        return Err(bad("expected YYYY-MM-DD HH:MM:SS"));
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return Err(bad("a field is out of range"));
    }
    let mut rest = &t[19..];
    let mut micros = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits: String = frac.chars().take_while(|c| c.is_ascii_digit()).collect();
        if digits.is_empty() || digits.len() > 6 {
            return Err(bad("1 to 6 fraction digits"));
        }
        micros = format!("{digits:0<6}")
            .parse()
            .map_err(|_| bad("bad fraction"))?;
        rest = &frac[digits.len()..];
    }
    let offset_secs = match rest.trim() {
        "" | "Z" | "z" => 0,
        z if z.starts_with('+') || z.starts_with('-') => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let body = z[1..].replace(':', "");
            let (hh, mm) = match body.len() {
                2 => (&body[..2], "0"),
                4 => (&body[..2], &body[2..]),
                _ => return Err(bad("zone must be +HH or +HH:MM")),
            };
            let hh: i64 = hh.parse().map_err(|_| bad("bad zone"))?;
            let mm: i64 = mm.parse().map_err(|_| bad("bad zone"))?;
            sign * (hh * 3600 + mm * 60)
        }
        _ => return Err(bad("unexpected text after the time")),
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    let secs = days * 86400 + h * 3600 + mi * 60 + sec - offset_secs;
    Ok(secs * 1_000_000 + micros)
}

/// Unix microseconds in the form PostgreSQL reads for recovery_target_time.
pub fn pg_timestamp(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let u = utc(secs);
    format!("{}.{frac:06}+00", u.trim_end_matches('Z'))
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_parse_with_fractions_and_zones() {
        use super::{parse_timestamp as p, pg_timestamp};
        let base = 1_795_637_462_000_000;
        assert_eq!(p("2026-11-25 20:11:02").unwrap(), base);
        assert_eq!(p("2026-11-25T20:11:02Z").unwrap(), base);
        assert_eq!(p("2026-11-25 20:11:02.25").unwrap(), base + 250_000);
        assert_eq!(p("2026-11-25 21:11:02+01").unwrap(), base);
        assert_eq!(p("2026-11-25 14:41:02.000001-05:30").unwrap(), base + 1);
        assert_eq!(p("2000-02-29 00:00:00").unwrap(), 951_782_400_000_000);
        for bad in [
            "yesterday",
            "2026-11-25",
            "2026-13-01 00:00:00",
            "2026-11-25 20:11:02 UTC",
            "2026-11-25 20:11:02.1234567",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
        assert_eq!(
            pg_timestamp(base + 250_000),
            "2026-11-25 20:11:02.250000+00"
        );
        assert_eq!(p(&pg_timestamp(base + 7)).unwrap(), base + 7);
    }

    #[test]
    fn known_instants() {
        assert_eq!(super::utc(0), "-");
        assert_eq!(super::utc(951_782_400), "2000-02-29 00:00:00Z");
        assert_eq!(super::utc(1_795_637_462), "2026-11-25 20:11:02Z");
    }
}
