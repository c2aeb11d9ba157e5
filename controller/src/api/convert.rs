//! Catalog rows to wire messages.

use tidemark_proto as pb;

use crate::catalog::{
    AgentRow, BackupRow, BaseBackupRow, BinlogCoordRow, InstanceRow, JobRow, PartRow,
};

pub fn instance(i: &InstanceRow) -> pb::InstanceInfo {
    pb::InstanceInfo {
        name: i.name.clone(),
        engine: i.engine.to_string(),
        server_version: i.server_version.clone(),
        system_identifier: i.system_identifier.clone(),
        databases: i.databases.clone(),
        error: i.error.clone(),
        data_directory: i.data_directory.clone(),
        wal_segment_size: i.wal_segment_size,
        log_bin_basename: i.log_bin_basename.clone(),
    }
}

pub fn agent(a: &AgentRow, connected: bool) -> pb::AgentInfo {
    pb::AgentInfo {
        name: a.name.clone(),
        role: a.role.clone(),
        sandbox_engines: a
            .sandbox_engines
            .iter()
            .map(|(engine, major)| pb::SandboxEngine {
                engine: engine.to_string(),
                major: *major,
            })
            .collect(),
        connected,
        last_seen: a.last_seen,
        agent_version: a.agent_version.clone(),
        tools: a
            .tools
            .iter()
            .map(|(name, version)| pb::ToolVersion {
                name: name.clone(),
                version: version.clone(),
            })
            .collect(),
        instances: a.instances.iter().map(instance).collect(),
    }
}

pub fn backup_summary(b: &BackupRow) -> pb::BackupSummary {
    pb::BackupSummary {
        id: b.id.0,
        instance: b.instance.clone(),
        agent: b.agent.clone(),
        kind: b.kind.to_string(),
        status: b.status.to_string(),
        started_at: b.started_at,
        finished_at: b.finished_at.unwrap_or(0),
        raw_bytes: b.parts.iter().map(|p| p.stats.raw_bytes).sum(),
        new_bytes: b.parts.iter().map(|p| p.stats.new_bytes).sum(),
        chunks: b.parts.iter().map(|p| p.stats.chunks).sum(),
        parts: b.parts.len() as u32,
        warnings: b.warnings.len() as u32,
        reason: b.reason.clone(),
    }
}

fn part(p: &PartRow) -> pb::PartInfo {
    pb::PartInfo {
        name: p.name.clone(),
        format: p.format.clone(),
        status: if p.stored { "stored" } else { "missing" }.into(),
        raw_bytes: p.stats.raw_bytes,
        chunks: p.stats.chunks,
        new_chunks: p.stats.new_chunks,
        new_bytes: p.stats.new_bytes,
        stream_sha256: p.stats.stream_sha256.clone(),
        check: p.check_status.clone(),
        check_detail: p.check_detail.clone(),
    }
}

pub fn base_backup(b: &BaseBackupRow) -> pb::BaseBackupInfo {
    pb::BaseBackupInfo {
        start_lsn: b.start_lsn.to_string(),
        stop_lsn: b.stop_lsn.to_string(),
        timeline: b.timeline,
        system_identifier: b.system_identifier.clone(),
        backup_label: b.backup_label.clone(),
        start_time: b.start_time,
        stop_time: b.stop_time,
        tablespaces: b.tablespaces.clone().into_iter().collect(),
    }
}

pub fn binlog_coordinates(c: &BinlogCoordRow) -> pb::BinlogCoordinates {
    pb::BinlogCoordinates {
        file: c.file.clone(),
        position: c.position,
        gtid: c.gtid.clone(),
        start_time: c.start_time,
        stop_time: c.stop_time,
    }
}

pub fn backup_detail(
    b: &BackupRow,
    base: Option<&BaseBackupRow>,
    binlog: Option<&BinlogCoordRow>,
) -> pb::BackupDetail {
    pb::BackupDetail {
        summary: Some(backup_summary(b)),
        parts: b.parts.iter().map(part).collect(),
        warnings: b.warnings.clone(),
        job_id: b.job_id.map(|j| j.0).unwrap_or(0),
        server_version: b.server_version.clone(),
        tool_version: b.tool_version.clone(),
        base: base.map(base_backup),
        binlog: binlog.map(binlog_coordinates),
        databases: b.databases.clone(),
    }
}

pub fn job(j: &JobRow) -> pb::JobInfo {
    pb::JobInfo {
        id: j.id.0,
        kind: j.kind.clone(),
        agent: j.agent.clone(),
        instance: j.instance.clone(),
        state: j.state.as_str().into(),
        bytes_done: j.bytes_done,
        bytes_total: j.bytes_total,
        message: j.message.clone(),
        backup_id: j.backup_id.map(|b| b.0).unwrap_or(0),
        created_at: j.created_at,
        finished_at: j.finished_at.unwrap_or(0),
    }
}
