//! `tidemark verify`: read chunks back from the store and check each against its digest.
//!
//! A chunk found missing or corrupt is recorded as faulty, never forgotten (a corrupt one of
//! its own is also moved to quarantine by the read), every complete backup that uses it is
//! marked corrupt, WAL files that use it leave the recovery window (it shows a gap), and an
//! alert is raised on each instance concerned. Restores and drills then refuse those
//! backups and say why. Every later run reads faulty chunks again, sampled or not: one that
//! reads intact (a volume remounted, a lagging replica caught up, a key loaded) is cleared,
//! and a corrupt backup whose every chunk is intact again is complete again.

use std::collections::BTreeSet;
use std::time::Instant;

use tidemark_core::ids::ChunkId;
use tidemark_proto as pb;

use super::State;
use super::error::{OpsError, OpsResult};
use crate::catalog::Held;

/// Whether `id` is in a `pct` percent sample drawn with `seed`.
fn sampled(id: &ChunkId, pct: u32, seed: u64) -> bool {
    if pct >= 100 {
        return true;
    }
    let mut x = u64::from_le_bytes(id.0[..8].try_into().expect("8 bytes")) ^ seed;
    x = (x ^ (x >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x % 10_000 < u64::from(pct) * 100
}

pub async fn run(state: &State, r: &pb::VerifyRequest) -> OpsResult<pb::VerifyReport> {
    let started = Instant::now();
    let instance = (!r.instance.is_empty()).then_some(r.instance.as_str());
    if let Some(name) = instance {
        super::instance(state, name).await?;
    }
    let pct = match r.sample_pct {
        0 => 100,
        p @ 1..=100 => p,
        p => {
            return Err(OpsError::InvalidArgument(format!(
                "--sample {p}: give a percentage from 1 to 100"
            )));
        }
    };
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let chunks = state.repo.catalog.referenced_chunks(instance).await?;
    let mut report = pb::VerifyReport {
        chunks_total: chunks.len() as u64,
        ..Default::default()
    };
    let mut bad = Vec::new();
    for (id, held) in &chunks {
        match held {
            Held::Stored if !sampled(id, pct, seed) => continue,
            Held::Stored => {}
            // Forgotten by an older version: nothing left to read it from.
            Held::Forgotten => {
                bad.push((
                    *id,
                    "lost earlier",
                    "found missing or corrupt before this run".to_string(),
                ));
                continue;
            }
            // Found faulty before: read again every run, never "sampled out".
            Held::Faulty => {
                report.chunks_checked += 1;
                match state.read_chunk(id).await {
                    Ok(c) => report.bytes_read += c.encoded.len() as u64,
                    Err(OpsError::DataLoss(why)) => bad.push((
                        *id,
                        "lost earlier",
                        format!("found missing or corrupt before this run, and still: {why}"),
                    )),
                    Err(e) => return Err(e),
                }
                continue;
            }
        }
        report.chunks_checked += 1;
        match state.read_chunk(id).await {
            Ok(c) => report.bytes_read += c.encoded.len() as u64,
            Err(OpsError::DataLoss(why)) => {
                let problem = if why.contains("missing") {
                    "missing"
                } else {
                    "corrupt"
                };
                bad.push((*id, problem, why));
            }
            // The store itself failed (unreachable): say so rather than report damage.
            Err(e) => return Err(e),
        }
    }
    let mut marked = BTreeSet::new();
    for (id, problem, detail) in bad {
        let users = state.repo.catalog.chunk_users(&id).await?;
        if users.backups.is_empty() && users.wal.is_empty() {
            // Retention expired everything that used it while this run read, and garbage
            // collection deleted it: gone on purpose, not damage.
            continue;
        }
        let mut instances = BTreeSet::new();
        for (backup, inst) in &users.backups {
            let reason = format!("chunk {id} is {problem}: {detail}");
            if state
                .repo
                .catalog
                .mark_backup_corrupt(*backup, &reason)
                .await?
            {
                marked.insert(*backup);
            }
            instances.insert(inst.clone());
        }
        for (inst, _) in &users.wal {
            instances.insert(inst.clone());
        }
        for inst in &instances {
            let backups: Vec<String> = users
                .backups
                .iter()
                .filter(|(_, i)| i == inst)
                .map(|(b, _)| b.to_string())
                .collect();
            let wal: Vec<&str> = users
                .wal
                .iter()
                .filter(|(i, _)| i == inst)
                .map(|(_, n)| n.as_str())
                .collect();
            let message = format!(
                "verify: chunk {id} is {problem}; backups [{}] are corrupt and WAL files [{}] unreadable",
                backups.join(", "),
                wal.join(", ")
            );
            tracing::error!(instance = %inst, "{message}");
            state
                .repo
                .catalog
                .raise_alert(inst, "corrupt", &message)
                .await?;
        }
        let pack = state
            .repo
            .catalog
            .chunk_place(&id)
            .await?
            .and_then(|(loc, _)| loc)
            .map(|l| l.pack)
            .unwrap_or_default();
        report.bad.push(pb::BadChunk {
            pack,
            chunk: id.to_hex(),
            problem: problem.into(),
            detail,
            backups: users.backups.iter().map(|(b, _)| b.0).collect(),
            wal: users.wal.iter().map(|(_, n)| n.clone()).collect(),
        });
    }
    report.backups_marked = marked.len() as u64;
    for healed in state.repo.catalog.clear_healed_corruption().await? {
        tracing::info!(backup = %healed, "every chunk of a corrupt backup reads intact again; it is complete again");
        report.backups_healed.push(healed.0);
    }
    report.millis = started.elapsed().as_millis() as u64;
    tracing::info!(
        checked = report.chunks_checked,
        bad = report.bad.len(),
        "verify finished"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_takes_about_its_share() {
        let ids: Vec<ChunkId> = (0..10_000u32)
            .map(|i| ChunkId::of(&i.to_le_bytes()))
            .collect();
        for pct in [1, 10, 50] {
            let n = ids.iter().filter(|id| sampled(id, pct, 42)).count();
            let want = 100 * pct as usize;
            assert!(n.abs_diff(want) < want / 4 + 20, "{pct}%: {n}");
        }
        assert!(ids.iter().all(|id| sampled(id, 100, 7)));
        // Another seed, another sample.
        let a: Vec<_> = ids.iter().filter(|id| sampled(id, 10, 1)).collect();
        let b: Vec<_> = ids.iter().filter(|id| sampled(id, 10, 2)).collect();
        assert_ne!(a, b);
    }
}
