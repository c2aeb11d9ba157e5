//! PostgreSQL WAL positions and file names: `16/B374D848` LSNs, `000000010000001600000003`
//! segment names and `00000002.history` timeline files.

use std::fmt;

/// A WAL position (a byte offset into the WAL stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an LSN (expected the form 16/B374D848)");
        let (hi, lo) = s.trim().split_once('/').ok_or_else(bad)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Lsn(((hi as u64) << 32) | lo as u64))
    }

    /// The segment holding this position.
    pub fn segno(self, seg_size: u64) -> u64 {
        self.0 / seg_size
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// What an archived WAL file name denotes. PostgreSQL's archiver sends all four kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalName {
    Segment {
        timeline: u32,
        segno: u64,
    },
    History {
        timeline: u32,
    },
    /// `SEGMENT.partial`: the last, incomplete segment of the old timeline at a promotion.
    Partial {
        timeline: u32,
        segno: u64,
    },
    /// `SEGMENT.OFFSET.backup`: the backup history file pg_backup_stop writes.
    BackupHistory {
        timeline: u32,
        segno: u64,
    },
}

fn hex32(s: &str) -> Option<u32> {
    (s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u32::from_str_radix(s, 16).ok())
        .flatten()
}

impl WalName {
    /// Parse a WAL file name. `seg_size` maps the two halves of a segment name to a
    /// segment number. Anything else (a path, a temporary file) is refused.
    pub fn parse(name: &str, seg_size: u64) -> Result<Self, String> {
        let bad = || {
            format!(
                "{name:?} is not a WAL file name (a segment, .history, .partial or .backup file)"
            )
        };
        if let Some(tli) = name.strip_suffix(".history") {
            return hex32(tli)
                .filter(|t| *t > 0)
                .map(|timeline| WalName::History { timeline })
                .ok_or_else(bad);
        }
        if let Some(seg) = name.strip_suffix(".partial") {
            return match Self::parse(seg, seg_size).map_err(|_| bad())? {
                WalName::Segment { timeline, segno } => Ok(WalName::Partial { timeline, segno }),
                _ => Err(bad()),
            };
        }
        if let Some(rest) = name.strip_suffix(".backup")
            && let Some((seg, offset)) = rest.split_once('.')
            && hex32(offset).is_some()
        {
            return match Self::parse(seg, seg_size).map_err(|_| bad())? {
                WalName::Segment { timeline, segno } => {
                    Ok(WalName::BackupHistory { timeline, segno })
                }
                _ => Err(bad()),
            };
        }
        if name.len() != 24 {
            return Err(bad());
        }
        let (tli, log, seg) = (
            hex32(&name[0..8]),
            hex32(&name[8..16]),
            hex32(&name[16..24]),
        );
        let (Some(timeline), Some(log), Some(seg)) = (tli, log, seg) else {
            return Err(bad());
        };
        let per_log = segments_per_xlogid(seg_size);
        if timeline == 0 || seg as u64 >= per_log {
            return Err(bad());
        }
        Ok(WalName::Segment {
            timeline,
            segno: log as u64 * per_log + seg as u64,
        })
    }

    pub fn timeline(self) -> u32 {
        match self {
            WalName::Segment { timeline, .. }
            | WalName::History { timeline }
            | WalName::Partial { timeline, .. }
            | WalName::BackupHistory { timeline, .. } => timeline,
        }
    }

    /// The segment number of a complete segment; None for the other kinds.
    pub fn segno(self) -> Option<u64> {
        match self {
            WalName::Segment { segno, .. } => Some(segno),
            _ => None,
        }
    }
}

fn segments_per_xlogid(seg_size: u64) -> u64 {
    0x1_0000_0000 / seg_size
}

/// The file name of segment `segno` on `timeline`.
pub fn segment_name(timeline: u32, segno: u64, seg_size: u64) -> String {
    let per_log = segments_per_xlogid(seg_size);
    format!(
        "{:08X}{:08X}{:08X}",
        timeline,
        segno / per_log,
        segno % per_log
    )
}

/// The PostgreSQL default, used where a size is not known (16 MiB).
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_round_trip_and_map_to_segments() {
        let l = Lsn::parse("16/B374D848").unwrap();
        assert_eq!(l.0, 0x16_B374_D848);
        assert_eq!(l.to_string(), "16/B374D848");
        assert_eq!(Lsn::parse("0/0").unwrap().to_string(), "0/0");
        assert!(Lsn::parse("16B374D848").is_err());
        assert!(Lsn::parse("x/1").is_err());
        let seg = DEFAULT_SEGMENT_SIZE;
        assert_eq!(
            segment_name(1, l.segno(seg), seg),
            "0000000100000016000000B3"
        );
    }

    #[test]
    fn names_parse_and_refuse_anything_else() {
        let seg = DEFAULT_SEGMENT_SIZE;
        assert_eq!(
            WalName::parse("0000000100000016000000B3", seg).unwrap(),
            WalName::Segment {
                timeline: 1,
                segno: 0x16 * 256 + 0xB3
            }
        );
        assert_eq!(
            WalName::parse("0000000A.history", seg).unwrap(),
            WalName::History { timeline: 10 }
        );
        for bad in [
            "00000001000000160000000B3",
            "000000010000001600000100",
            "0000000100000016000000B3.partial.partial",
            "000000010000000000000002.backup",
            "000000010000000000000002.0000002.backup",
            "0000000100000000000000020.00000028.backup",
            "../00000001000000160000B3",
            "00000000.history",
            "000000000000001600000003",
        ] {
            assert!(WalName::parse(bad, seg).is_err(), "{bad} accepted");
        }
        assert_eq!(
            WalName::parse("0000000100000016000000B3.partial", seg).unwrap(),
            WalName::Partial {
                timeline: 1,
                segno: 0x16 * 256 + 0xB3
            }
        );
        assert_eq!(
            WalName::parse("000000010000000000000002.00000028.backup", seg).unwrap(),
            WalName::BackupHistory {
                timeline: 1,
                segno: 2
            }
        );
        // 1 GiB segments: only 4 per xlogid.
        let big = 1 << 30;
        assert!(WalName::parse("000000010000000000000004", big).is_err());
        assert_eq!(segment_name(1, 5, big), "000000010000000100000001");
    }
}
