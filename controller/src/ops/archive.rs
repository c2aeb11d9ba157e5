//! The WAL archive's front door: archive_command pushes (`tidemark-agent wal-push`),
//! restore_command fetches (`tidemark-agent wal-fetch`), and the range check a base backup
//! waits on.
//!
//! A push is accepted only from the agent that registered the instance, from the data
//! directory it registered, for the cluster (system identifier) it registered. A restored
//! clone has the same system identifier but another directory or host, so it can never add
//! to the archive; nor can a standby with archive_mode = always on another host.

use futures::Stream;
use tidemark_core::binlog;
use tidemark_core::identity::{Identity, Role};
use tidemark_core::wal::{self, Lsn, WalName};
use tidemark_proto::{self as pb, UploadPartMessage};

use super::{OpsError, OpsResult, State};
use crate::catalog::{Engine, InstanceRow, ManifestEntry, WalFileRow, WalOutcome, now};
use crate::repo::ingest::{ChunkReceiver, IngestError, Sink};
use crate::repo::records::LogRecord;

/// The instance `agent` archives from `header`'s cluster and directory, or why not.
async fn primary_for(state: &State, agent: &str, h: &pb::WalHeader) -> OpsResult<InstanceRow> {
    let same_cluster = state
        .repo
        .catalog
        .instances_of_cluster(&h.system_identifier)
        .await?;
    let own: Vec<&InstanceRow> = same_cluster.iter().filter(|i| i.agent == agent).collect();
    if own.is_empty() {
        let owners: Vec<String> = same_cluster
            .iter()
            .map(|i| format!("{} (agent {})", i.name, i.agent))
            .collect();
        return Err(OpsError::PermissionDenied(format!(
            "agent {agent} has no instance with system identifier {:?}{}; WAL is accepted only from the agent of the cluster's registered primary",
            h.system_identifier,
            if owners.is_empty() {
                String::new()
            } else {
                format!(", which is registered as {}", owners.join(", "))
            }
        )));
    }
    own.iter()
        .find(|i| i.data_directory == h.data_directory)
        .map(|i| (*i).clone())
        .ok_or_else(|| {
            OpsError::PermissionDenied(format!(
                "archive_command ran in {:?}, but instance {} has its data directory at {:?}; a restored clone or copy must not archive into the primary's archive (set archive_mode = off there)",
                h.data_directory, own[0].name, own[0].data_directory
            ))
        })
}

/// A MariaDB binlog push names its instance: the agent daemon archives it. It must be the
/// pushing agent's own MariaDB instance, and the file must be named after the
/// log_bin_basename that instance registered.
async fn binlog_source(
    state: &State,
    agent: &str,
    h: &pb::WalHeader,
) -> OpsResult<(InstanceRow, u64)> {
    let inst = state
        .repo
        .catalog
        .instance(&h.instance)
        .await?
        .ok_or_else(|| OpsError::NotFound(format!("instance {} is not registered", h.instance)))?;
    if inst.agent != agent {
        return Err(OpsError::PermissionDenied(format!(
            "instance {} belongs to agent {}; agent {agent} may archive binlogs only for its own instances",
            inst.name, inst.agent
        )));
    }
    if inst.engine != Engine::Mariadb {
        return Err(OpsError::InvalidArgument(format!(
            "instance {} is {}, not MariaDB: its WAL comes from archive_command",
            inst.name, inst.engine
        )));
    }
    let seq = binlog::sequence(&h.name, inst.binlog_base()).ok_or_else(|| {
        OpsError::InvalidArgument(format!(
            "{:?} is not a binlog of instance {}, whose log_bin_basename is {:?}",
            h.name, inst.name, inst.log_bin_basename
        ))
    })?;
    Ok((inst, seq))
}

/// What a push carries. An agent of the version before the header named its engine sends
/// a binlog's instance and leaves it empty for PostgreSQL WAL: that tells them apart. An
/// engine number this controller does not know is refused, never taken for one it knows.
fn pushed_engine(h: &pb::WalHeader) -> OpsResult<Engine> {
    Ok(match pb::Engine::try_from(h.engine) {
        Ok(pb::Engine::Postgresql) => Engine::Postgresql,
        Ok(pb::Engine::Mariadb) => Engine::Mariadb,
        Ok(pb::Engine::Unspecified) if h.instance.is_empty() => Engine::Postgresql,
        Ok(pb::Engine::Unspecified) => Engine::Mariadb,
        Err(_) => {
            return Err(OpsError::InvalidArgument(format!(
                "{} is pushed as engine number {}, which this controller does not know; upgrade the controller",
                h.name, h.engine
            )));
        }
    })
}

/// Archive one WAL file or binlog: `stream` yields its chunks and trailer after `header`.
pub async fn push(
    state: &State,
    agent: &str,
    header: pb::WalHeader,
    stream: &mut (impl Stream<Item = Result<UploadPartMessage, String>> + Unpin),
) -> OpsResult<pb::PushWalResponse> {
    // PostgreSQL WAL: (timeline, segment number or None for a .history file), and the size
    // every segment must have. A binlog: its sequence number, any size.
    let engine = pushed_engine(&header)?;
    let (inst, timeline, segno, size) = match engine {
        Engine::Postgresql => {
            let inst = primary_for(state, agent, &header).await?;
            let name = WalName::parse(&header.name, inst.segment_size())
                .map_err(OpsError::InvalidArgument)?;
            let size = name.segno().map(|_| inst.segment_size());
            (inst, name.timeline(), name.segno(), size)
        }
        Engine::Mariadb => {
            let (inst, seq) = binlog_source(state, agent, &header).await?;
            (inst, 0, Some(seq), None)
        }
    };
    let _claim = state.uploading.claim(
        format!("WAL file {} of instance {}", header.name, inst.name),
        super::upload::StreamKind::Log,
    )?;
    // A name already archived: the push is received and compared, and nothing of it is
    // stored, whether it is the same file again or a conflicting one.
    let archived = state
        .repo
        .catalog
        .wal_file(&inst.name, &header.name)
        .await?
        .is_some();
    let sink = if archived {
        Sink::Discard
    } else {
        Sink::Memory {
            entries: Vec::new(),
            new: Vec::new(),
        }
    };
    let mut rx = ChunkReceiver::new(
        &state.repo,
        agent,
        format!("WAL file {}", header.name),
        sink,
    );
    let stats = rx.run(stream).await.map_err(|e| match e {
        IngestError::EndedEarly => OpsError::FailedPrecondition(format!(
            "push of {} ended without its trailer; nothing was archived",
            header.name
        )),
        e => e.into(),
    })?;
    if let Some(size) = size
        && stats.raw_bytes != size
    {
        return Err(OpsError::InvalidArgument(format!(
            "{} is {} bytes, but instance {}'s WAL segments are {size} bytes; nothing was archived",
            header.name, stats.raw_bytes, inst.name,
        )));
    }
    let row = WalFileRow {
        instance: inst.name.clone(),
        name: header.name.clone(),
        timeline,
        segno,
        size: stats.raw_bytes,
        sha256: stats.stream_sha256.clone(),
        chunks: stats.chunks,
        modified_at: header.modified_at,
        stored_at: now(),
        agent: agent.to_string(),
        first_event_at: (engine == Engine::Mariadb).then_some(header.first_event_at),
        description_pack: None,
    };
    // The pack carrying the file's last chunks describes it, so the store alone can
    // rebuild the archive.
    if archived
        && state
            .repo
            .catalog
            .wal_file(&inst.name, &header.name)
            .await?
            .is_none()
    {
        // Retention deleted it while this push was compared: nothing is recorded now,
        // and the next push stores it again.
        return Err(OpsError::Internal(format!(
            "{} was deleted from the archive while it was pushed again; try again",
            header.name
        )));
    }
    let description = (!archived).then(|| LogRecord::new(&row, &rx.manifest()));
    let stats = rx.commit(description).await?;
    let row = WalFileRow {
        description_pack: rx.last_pack(),
        ..row
    };
    let (entries, new) = rx.take_collected();
    match state.repo.catalog.add_wal(&row, &entries, &new).await? {
        WalOutcome::Stored => {
            tracing::debug!(instance = %inst.name, wal = %header.name, new_bytes = stats.new_bytes, "WAL archived");
            Ok(pb::PushWalResponse {
                instance: inst.name,
                already_archived: false,
            })
        }
        WalOutcome::Identical => Ok(pb::PushWalResponse {
            instance: inst.name,
            already_archived: true,
        }),
        WalOutcome::Conflict { archived_sha256 } => {
            tracing::error!(instance = %inst.name, wal = %header.name, pushed = %row.sha256,
                archived = %archived_sha256, "refused a different WAL file under an archived name");
            Err(OpsError::AlreadyExists(format!(
                "instance {} already has a different {} archived (sha256 {archived_sha256}, pushed {}); it was kept and an alert raised. Two clusters may be archiving as one instance",
                inst.name, header.name, row.sha256
            )))
        }
    }
}

/// The instance a fetch reads from: named, or found by its system identifier. Not finding
/// it is a configuration error, never NotFound: NotFound tells restore_command that the
/// archive has no such file, and recovery would take that for the end of the WAL and
/// promote, early.
async fn fetch_source(state: &State, r: &pb::FetchWalRequest) -> OpsResult<InstanceRow> {
    if !r.instance.is_empty() {
        let inst = state
            .repo
            .catalog
            .instance(&r.instance)
            .await?
            .ok_or_else(|| {
                OpsError::FailedPrecondition(format!(
                    "instance {} is not registered; check --instance in restore_command",
                    r.instance
                ))
            })?;
        if !r.system_identifier.is_empty() && r.system_identifier != inst.system_identifier {
            return Err(OpsError::PermissionDenied(format!(
                "this cluster's system identifier is {}, but instance {}'s is {}: its WAL does not belong here",
                r.system_identifier, inst.name, inst.system_identifier
            )));
        }
        return Ok(inst);
    }
    let matches = state
        .repo
        .catalog
        .instances_of_cluster(&r.system_identifier)
        .await?;
    match matches.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(OpsError::FailedPrecondition(format!(
            "no registered instance has system identifier {:?}; pass --instance NAME to wal-fetch",
            r.system_identifier
        ))),
        many => Err(OpsError::InvalidArgument(format!(
            "instances {} share system identifier {}; pass --instance NAME to wal-fetch",
            many.iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            r.system_identifier
        ))),
    }
}

/// An archived WAL file or binlog a fetch may read: its chunks in order, digest and size.
pub struct ArchivedFile {
    pub entries: Vec<ManifestEntry>,
    pub sha256: String,
    pub size: u64,
}

/// What `who` may read of `r`, checked: its own instance's archive, a restore's grant, or
/// exactly what its running drill replays.
pub async fn fetch(
    state: &State,
    who: &Identity,
    r: pb::FetchWalRequest,
) -> OpsResult<ArchivedFile> {
    let agent = who.name.as_str();
    let inst = fetch_source(state, &r).await?;
    let segno = match inst.engine {
        Engine::Mariadb => {
            let seq = binlog::sequence(&r.name, inst.binlog_base()).ok_or_else(|| {
                OpsError::InvalidArgument(format!(
                    "{:?} is not a binlog of instance {}",
                    r.name, inst.name
                ))
            })?;
            Some(seq)
        }
        Engine::Postgresql => WalName::parse(&r.name, inst.segment_size())
            .map_err(OpsError::InvalidArgument)?
            .segno(),
    };
    if who.role == Role::Sandbox {
        // Only what its running drill replays: this instance's WAL from the backup's start,
        // or exactly the binlogs planned for the target.
        let needed = state
            .repo
            .catalog
            .drill_wal_grant(agent, &inst.name)
            .await?
            .is_some_and(|g| g.allows(&r.name, segno));
        if !needed {
            return Err(OpsError::PermissionDenied(format!(
                "sandbox {agent} may read only the WAL its running drill of instance {} replays, and {} is not part of it",
                inst.name, r.name
            )));
        }
        let streamed = fetch_file(state, &inst, &r.name).await;
        if let Err(OpsError::DataLoss(why)) = &streamed {
            state
                .repo
                .catalog
                .note_drill(agent, &inst.name, why)
                .await?;
        }
        return streamed;
    }
    let allowed =
        inst.agent == agent || state.repo.catalog.has_wal_grant(agent, &inst.name).await?;
    if !allowed {
        return Err(OpsError::PermissionDenied(format!(
            "agent {agent} may read instance {}'s WAL only during a restore of it onto this host",
            inst.name
        )));
    }
    fetch_file(state, &inst, &r.name).await
}

async fn fetch_file(state: &State, inst: &InstanceRow, name: &str) -> OpsResult<ArchivedFile> {
    let file = state
        .repo
        .catalog
        .wal_file(&inst.name, name)
        .await?
        .ok_or_else(|| {
            OpsError::NotFound(format!(
                "{} is not in instance {}'s archive",
                name, inst.name
            ))
        })?;
    if let Some(first) = state
        .repo
        .catalog
        .unavailable_wal_chunks(&inst.name, name)
        .await?
        .first()
    {
        return Err(OpsError::DataLoss(format!(
            "archived {} of instance {} cannot be read: chunk {first} is missing or was found corrupt",
            name, inst.name
        )));
    }
    let entries = state.repo.catalog.wal_manifest(&inst.name, name).await?;
    Ok(ArchivedFile {
        entries,
        sha256: file.sha256,
        size: file.size,
    })
}

/// Segments of `instance` from `start` to `stop` (inclusive) on `timeline` that are not
/// archived: a base backup is complete only when there are none.
pub async fn missing(
    state: &State,
    instance: &str,
    timeline: u32,
    start: Lsn,
    stop: Lsn,
) -> OpsResult<Vec<String>> {
    let inst = state
        .repo
        .catalog
        .instance(instance)
        .await?
        .ok_or_else(|| OpsError::NotFound(format!("instance {instance} is not registered")))?;
    let seg = inst.segment_size();
    if stop < start || stop.segno(seg) - start.segno(seg) > 1 << 20 {
        return Err(OpsError::InvalidArgument(format!(
            "WAL range {start}..{stop} is not a plausible backup range"
        )));
    }
    // The stop LSN points just past the backup's last record: at a segment boundary, that
    // record is in the segment before.
    let last = Lsn(stop.0.saturating_sub(1))
        .segno(seg)
        .max(start.segno(seg));
    let mut out = Vec::new();
    for segno in start.segno(seg)..=last {
        let name = wal::segment_name(timeline, segno, seg);
        if state
            .repo
            .catalog
            .wal_file(&inst.name, &name)
            .await?
            .is_none()
        {
            out.push(name);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_names_its_engine_and_an_older_agent_is_told_by_its_instance() {
        let header = |engine: pb::Engine, instance: &str| pb::WalHeader {
            engine: engine.into(),
            instance: instance.into(),
            ..Default::default()
        };
        let engine = |h: pb::WalHeader| pushed_engine(&h).unwrap();
        assert_eq!(engine(header(pb::Engine::Mariadb, "shop")), Engine::Mariadb);
        assert_eq!(
            engine(header(pb::Engine::Postgresql, "")),
            Engine::Postgresql
        );
        // The version before the field: a binlog names its instance, WAL does not.
        assert_eq!(
            engine(header(pb::Engine::Unspecified, "shop")),
            Engine::Mariadb
        );
        assert_eq!(
            engine(header(pb::Engine::Unspecified, "")),
            Engine::Postgresql
        );
        // A newer agent's engine is refused, not taken for one of ours.
        let newer = pb::WalHeader {
            engine: 99,
            ..Default::default()
        };
        assert!(
            matches!(pushed_engine(&newer), Err(OpsError::InvalidArgument(m)) if m.contains("engine number 99"))
        );
    }
}
