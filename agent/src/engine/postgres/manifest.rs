//! What a PostgreSQL base backup says about itself, read as it streams by: each tar's
//! completeness, `backup_label`'s start of WAL, and `backup_manifest`'s WAL range. The
//! backup is recorded with these, and is complete only once that WAL is archived.

use tidemark_core::wal::Lsn;
use tidemark_proto::PartCheck;

use super::tar::TarSummary;
use crate::error::AgentError;

/// The part holding the data directory's tar, and the one holding PostgreSQL's own
/// backup_manifest.
pub const BASE: &str = "base";
pub const MANIFEST: &str = "backup_manifest";

/// The stored tar's check: closed by its end-of-archive marker and, for the base
/// tablespace, holding the control file and the backup label.
pub(super) fn tar_check(part: &str, s: &TarSummary) -> PartCheck {
    let problem = if let Some(m) = &s.malformed {
        Some(m.clone())
    } else if !s.ended {
        Some("the tar stream ends without its end-of-archive marker; it is truncated".into())
    } else if part == BASE && !s.seen.iter().any(|n| n == "global/pg_control") {
        Some("base.tar holds no global/pg_control".into())
    } else if part == BASE && !s.seen.iter().any(|n| n == "backup_label") {
        Some("base.tar holds no backup_label".into())
    } else {
        None
    };
    match problem {
        Some(p) => PartCheck {
            part: part.into(),
            ok: false,
            detail: p,
        },
        None => PartCheck {
            part: part.into(),
            ok: true,
            detail: format!(
                "tar stream with {} members, closed by its end-of-archive marker",
                s.members
            ),
        },
    }
}

pub(super) struct Label {
    pub start: Lsn,
}

/// `START WAL LOCATION: 0/2000028 (file 000000010000000000000002)`.
pub(super) fn parse_label(text: &str) -> Result<Label, AgentError> {
    let start = text
        .lines()
        .find_map(|l| l.strip_prefix("START WAL LOCATION: "))
        .and_then(|rest| rest.split_whitespace().next())
        .ok_or_else(|| {
            AgentError::permanent(format!("backup_label has no START WAL LOCATION: {text:?}"))
        })?;
    Ok(Label {
        start: Lsn::parse(start).map_err(AgentError::permanent)?,
    })
}

pub(super) struct WalRange {
    pub start: Lsn,
    pub stop: Lsn,
    pub timeline: u32,
}

/// The WAL range from the manifest's `WAL-Ranges` (the last range is the backup's end).
pub(super) fn parse_manifest(bytes: &[u8]) -> Result<WalRange, AgentError> {
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| AgentError::permanent(format!("backup_manifest is not JSON: {e}")))?;
    let ranges = v["WAL-Ranges"]
        .as_array()
        .filter(|r| !r.is_empty())
        .ok_or_else(|| AgentError::permanent("backup_manifest has no WAL-Ranges"))?;
    let lsn = |r: &serde_json::Value, k: &str| -> Result<Lsn, AgentError> {
        Lsn::parse(
            r[k].as_str()
                .ok_or_else(|| AgentError::permanent(format!("WAL-Ranges entry without {k}")))?,
        )
        .map_err(AgentError::permanent)
    };
    let last = ranges.last().expect("non-empty");
    Ok(WalRange {
        start: lsn(&ranges[0], "Start-LSN")?,
        stop: lsn(last, "End-LSN")?,
        timeline: last["Timeline"]
            .as_u64()
            .ok_or_else(|| AgentError::permanent("WAL-Ranges entry without Timeline"))?
            as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_and_manifest_give_the_wal_range() {
        let label = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/2000060\nSTART TIMELINE: 1\n";
        assert_eq!(parse_label(label).unwrap().start, Lsn(0x2000028));
        assert!(parse_label("LABEL: x\n").is_err());
        let m = br#"{"PostgreSQL-Backup-Manifest-Version": 1, "Files": [],
            "WAL-Ranges": [{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000138" }]}"#;
        let r = parse_manifest(m).unwrap();
        assert_eq!(
            (r.start, r.stop, r.timeline),
            (Lsn(0x2000028), Lsn(0x2000138), 1)
        );
        assert!(parse_manifest(b"{}").is_err());
        assert!(parse_manifest(b"not json").is_err());
    }
}
