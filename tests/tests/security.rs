//! Identity comes from certificates, and each identity may do only its own job.

use std::time::Duration;

use tidemark_core::chunk;
use tidemark_core::ids::ChunkId;
use tidemark_proto::agent_service_client::AgentServiceClient;
use tidemark_proto::upload_part_message::Msg;
use tidemark_proto::{
    BeginBackupRequest, EncodedChunk, InstanceInfo, PartHeader, RegisterRequest, UploadPartMessage,
};
use tidemark_tests::fleet::{Agent, Cli, Fleet, Pki, pg_instance_toml};
use tonic::Code;
use tonic::transport::Channel;

/// A raw gRPC client holding `identity`'s certificate, for calls the real agent would never
/// make.
fn raw_agent(
    f: &Fleet,
    identity: &str,
    rt: &tokio::runtime::Runtime,
) -> AgentServiceClient<Channel> {
    tidemark_tests::fleet::raw_agent_client(&f.pki, &f.controller.url, identity, rt)
}

fn register(
    rt: &tokio::runtime::Runtime,
    c: &mut AgentServiceClient<Channel>,
    host: &str,
    instances: Vec<InstanceInfo>,
) -> Result<(), tonic::Status> {
    let req = RegisterRequest {
        host: host.into(),
        agent_version: "test".into(),
        tools: vec![],
        instances,
        sandbox_engines: vec![],
    };
    rt.block_on(c.register(req)).map(|_| ())
}

fn header(backup: i64, part: &str) -> UploadPartMessage {
    let h = PartHeader {
        backup_id: backup,
        part: part.into(),
        format: "sql".into(),
    };
    UploadPartMessage {
        msg: Some(Msg::Header(h)),
    }
}

fn chunk(c: EncodedChunk) -> UploadPartMessage {
    UploadPartMessage {
        msg: Some(Msg::Chunk(c)),
    }
}

fn instance(name: &str) -> InstanceInfo {
    InstanceInfo {
        name: name.into(),
        engine: "postgresql".into(),
        ..Default::default()
    }
}

#[test]
fn a_client_certificate_from_a_foreign_ca_is_rejected() {
    let f = Fleet::start("foreignca");
    let foreign = Pki::init(&f.dir.path().join("foreign-pki"));
    let (cert, key) = foreign.issue("admin:mallory", &[]);
    // Trusts the real CA for the server, but presents a certificate the fleet CA never signed.
    let cli = Cli::with_files(f.dir.path(), &f.pki.ca(), &cert, &key, &f.controller.url);
    let out = cli.run(&["agents"]);
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("certificate"),
        "the error must say what was wrong: {}",
        out.stderr
    );

    // An agent with such a certificate never gets registered.
    let (acert, akey) = foreign.issue("agent:rogue", &[]);
    let cfg = f.dir.path().join("agent-rogue.toml");
    std::fs::write(
        &cfg,
        format!(
            "version = 1\ncontroller = \"{}\"\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n{}",
            f.controller.url,
            f.pki.ca().display(),
            acert.display(),
            akey.display(),
            pg_instance_toml("rogue-pg", &f.pg, "")
        ),
    )
    .unwrap();
    let rogue = Agent::spawn(f.dir.path(), "rogue", &cfg);
    std::thread::sleep(Duration::from_secs(3));
    let agents = f.admin.json(&["agents"]);
    assert!(!agents.to_string().contains("rogue"), "{agents}");
    assert!(
        rogue
            .daemon
            .log_text()
            .contains("cannot reach the controller"),
        "{}",
        rogue.daemon.log_text()
    );
}

#[test]
fn identities_may_do_only_their_own_job() {
    let f = Fleet::start("roles");
    let rt = tokio::runtime::Runtime::new().unwrap();

    // An agent certificate cannot use the admin service.
    let (cert, key) = f.pki.issue("agent:db9", &[]);
    let as_agent = Cli::with_files(f.dir.path(), &f.pki.ca(), &cert, &key, &f.controller.url);
    let out = as_agent.run(&["agents"]);
    assert_eq!(out.code, 3);
    assert!(
        out.stderr.contains("agent:db9 may not list agents"),
        "{}",
        out.stderr
    );

    // Nor the recovery calls.
    for args in [
        &["status"][..],
        &["pitr-window", "--instance", "demo-pg"],
        &[
            "restore",
            "--instance",
            "demo-pg",
            "--host",
            "db1",
            "--pgdata",
            "/tmp/x",
            "--latest",
        ],
    ] {
        let out = as_agent.run(args);
        assert_eq!(out.code, 3, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("agent:db9 may not"),
            "{args:?}: {}",
            out.stderr
        );
    }

    // Another agent cannot claim demo-pg, nor pretend to be another host.
    let mut db2 = raw_agent(&f, "agent:db2", &rt);
    let e = register(&rt, &mut db2, "db2", vec![instance("demo-pg")]).unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(
        e.message().contains("already registered to agent db1"),
        "{}",
        e.message()
    );
    let e = register(&rt, &mut db2, "db1", vec![]).unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(
        e.message().contains("certificate is for agent:db2"),
        "{}",
        e.message()
    );
    register(&rt, &mut db2, "db2", vec![instance("other-pg")]).unwrap();

    // ...nor report on it, which would move its recorded data directory.
    let report = tidemark_proto::StatusReport {
        instances: vec![tidemark_proto::ArchiverStatus {
            instance: "demo-pg".into(),
            data_directory: "/elsewhere".into(),
            ..Default::default()
        }],
    };
    let e = rt.block_on(db2.report_status(report)).unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());

    // ...nor back it up.
    let begin = BeginBackupRequest {
        instance: "demo-pg".into(),
        kind: "logical".into(),
        parts: vec!["db:app".into()],
        ..Default::default()
    };
    let e = rt.block_on(db2.begin_backup(begin.clone())).unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(
        e.message().contains("belongs to agent db1"),
        "{}",
        e.message()
    );

    // ...nor write into a backup db1 began.
    let mut db1 = raw_agent(&f, "agent:db1", &rt);
    let backup = rt
        .block_on(db1.begin_backup(begin))
        .unwrap()
        .into_inner()
        .backup_id;
    let header = header(backup, "db:app");
    let e = rt
        .block_on(db2.upload_part(tokio_stream::iter(vec![header])))
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());

    // The CLI reports it too: db2's instance exists, but the admin can only start what the
    // owning agent runs; and a restore onto an unknown host is refused.
    let out = f.admin.run(&[
        "restore",
        "--backup",
        &backup.to_string(),
        "--host",
        "db2",
        "--into-database",
        "x",
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("not complete"), "{}", out.stderr);
}

#[test]
fn a_chunk_whose_bytes_do_not_match_its_id_is_rejected() {
    let f = Fleet::start("badchunk");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut db1 = raw_agent(&f, "agent:db1", &rt);
    let begin = BeginBackupRequest {
        instance: "demo-pg".into(),
        kind: "logical".into(),
        parts: vec!["db:app".into()],
        ..Default::default()
    };
    let backup = rt
        .block_on(db1.begin_backup(begin))
        .unwrap()
        .into_inner()
        .backup_id;

    let claimed = b"the bytes the id promises".repeat(100);
    let sent = b"different bytes entirely!".repeat(100);
    let msgs = vec![
        header(backup, "db:app"),
        chunk(EncodedChunk {
            id: ChunkId::of(&claimed).0.to_vec(),
            raw_len: sent.len() as u32,
            data: chunk::encode(&sent),
        }),
    ];
    let e = rt
        .block_on(db1.upload_part(tokio_stream::iter(msgs)))
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("does not match its id"),
        "{}",
        e.message()
    );
    assert!(
        f.controller.pack_files().is_empty(),
        "nothing may be stored for a rejected chunk"
    );
    let b = f.admin.json(&["backups", "show", &backup.to_string()]);
    assert_eq!(b["status"], "failed", "{b}");
    assert!(
        b["reason"]
            .as_str()
            .unwrap()
            .contains("does not match its id"),
        "{b}"
    );
}

#[test]
fn an_agent_cannot_probe_or_reference_chunks_another_agent_stored() {
    let f = Fleet::start("chunkowners");
    let (b, code) = f.backup();
    assert_eq!(code, 0, "{b}");
    let stored = f.controller.stored_chunks();
    let theirs = hex_id(&stored.first().expect("a stored chunk").hex);
    let rt = tokio::runtime::Runtime::new().unwrap();

    let mut db1 = raw_agent(&f, "agent:db1", &rt);
    let mut db2 = raw_agent(&f, "agent:db2", &rt);
    register(&rt, &mut db2, "db2", vec![instance("db2-pg")]).unwrap();
    let ask = |c: &mut AgentServiceClient<Channel>| {
        let req = tidemark_proto::HaveChunksRequest {
            ids: vec![theirs.clone()],
        };
        rt.block_on(c.have_chunks(req))
            .unwrap()
            .into_inner()
            .present
    };
    assert_eq!(
        ask(&mut db1),
        vec![true],
        "the uploader's dedup query finds its chunk"
    );
    assert_eq!(ask(&mut db2), vec![false], "another agent learns nothing");

    let begin = BeginBackupRequest {
        instance: "db2-pg".into(),
        kind: "logical".into(),
        parts: vec!["db:x".into()],
        ..Default::default()
    };
    let backup = rt
        .block_on(db2.begin_backup(begin))
        .unwrap()
        .into_inner()
        .backup_id;
    let msgs = vec![
        header(backup, "db:x"),
        chunk(EncodedChunk {
            id: theirs.clone(),
            raw_len: 1,
            data: Vec::new(),
        }),
    ];
    let e = rt
        .block_on(db2.upload_part(tokio_stream::iter(msgs)))
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
    assert!(e.message().contains("never uploaded"), "{}", e.message());
}

fn hex_id(hex: &str) -> Vec<u8> {
    hex.parse::<ChunkId>().unwrap().0.to_vec()
}

fn fetch(
    rt: &tokio::runtime::Runtime,
    c: &mut AgentServiceClient<Channel>,
    instance: &str,
    name: &str,
) -> Result<(), tonic::Status> {
    let req = tidemark_proto::FetchWalRequest {
        instance: instance.into(),
        system_identifier: String::new(),
        name: name.into(),
    };
    rt.block_on(async {
        let mut s = c.fetch_wal(req).await?.into_inner();
        while s.message().await?.is_some() {}
        Ok(())
    })
}

fn read_part(
    rt: &tokio::runtime::Runtime,
    c: &mut AgentServiceClient<Channel>,
    backup: i64,
    job: i64,
) -> Result<(), tonic::Status> {
    let req = tidemark_proto::ReadPartRequest {
        backup_id: backup,
        part: "base".into(),
        job_id: job,
    };
    rt.block_on(async {
        let mut s = c.read_part(req).await?.into_inner();
        while s.message().await?.is_some() {}
        Ok(())
    })
}

#[test]
fn a_sandbox_reads_only_what_its_drill_needs_and_never_writes() {
    use tidemark_core::timefmt::pg_timestamp;
    let f = Fleet::start_archiving("sbroles", "", "");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let backup = f.base_backup()["id"].as_i64().unwrap();
    f.pg.sql("postgres", "CREATE TABLE t AS SELECT 1 AS v");
    std::thread::sleep(Duration::from_millis(1100));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let target = pg_timestamp(now.as_micros() as i64);
    std::thread::sleep(Duration::from_millis(1100));
    f.pg.sql("postgres", "INSERT INTO t VALUES (2)");
    let seg = f.pg.archive_current_segment();

    let mut sb = raw_agent(&f, "sandbox:sbx", &rt);
    // A sandbox registers engines, never instances; an agent cannot take its name.
    let with_instance = RegisterRequest {
        host: "sbx".into(),
        instances: vec![instance("sneaky-pg")],
        ..Default::default()
    };
    let e = rt.block_on(sb.register(with_instance)).unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    let reg = RegisterRequest {
        host: "sbx".into(),
        sandbox_engines: vec![tidemark_proto::SandboxEngine {
            engine: "postgresql".into(),
            major: 15,
        }],
        ..Default::default()
    };
    let session = rt.block_on(sb.register(reg)).unwrap().into_inner().session;
    let mut impostor = raw_agent(&f, "agent:sbx", &rt);
    let e = register(&rt, &mut impostor, "sbx", vec![]).unwrap_err();
    assert!(
        e.message().contains("already registered as a sandbox"),
        "{}",
        e.message()
    );

    // With no drill, it reads nothing.
    let e = fetch(&rt, &mut sb, "demo-pg", &seg).unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
    let e = read_part(&rt, &mut sb, backup, 0).unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
    // It never writes: no backups, no WAL, no samples, no status.
    let begin = BeginBackupRequest {
        instance: "demo-pg".into(),
        kind: "base".into(),
        ..Default::default()
    };
    let e = rt.block_on(sb.begin_backup(begin)).unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
    let wal = UploadPartMessage {
        msg: Some(Msg::Wal(tidemark_proto::WalHeader {
            name: "000000010000000000000009".into(),
            ..Default::default()
        })),
    };
    let e = rt
        .block_on(sb.push_wal(tokio_stream::iter(vec![wal])))
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
    let e = rt
        .block_on(sb.push_samples(tidemark_proto::SampleBatch::default()))
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
    // An admin cannot make it a restore target either.
    let out = f.admin.run(&[
        "restore",
        "--instance",
        "demo-pg",
        "--host",
        "sbx",
        "--pgdata",
        "/tmp/never",
        "--latest",
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("sbx is a sandbox"), "{}", out.stderr);

    // Given a drill, it reads that backup and the instance's WAL from the backup's start:
    // not the segment before it.
    let mut jobs = rt
        .block_on(sb.jobs(tidemark_proto::JobsRequest { session }))
        .unwrap()
        .into_inner();
    let out = f.admin.run(&[
        "drill",
        "run",
        "--instance",
        "demo-pg",
        "--sandbox",
        "sbx",
        "--target",
        &target,
    ]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let job = rt.block_on(jobs.message()).unwrap().unwrap();
    let Some(tidemark_proto::job::Spec::Drill(d)) = &job.spec else {
        panic!("not a drill job: {job:?}");
    };
    assert_eq!(d.restore.as_ref().unwrap().backup_id, backup);
    read_part(&rt, &mut sb, backup, job.job_id).unwrap();
    fetch(&rt, &mut sb, "demo-pg", &seg).unwrap();
    let e = fetch(&rt, &mut sb, "demo-pg", "000000010000000000000001").unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
    assert!(e.message().contains("not part of it"), "{}", e.message());
    // Nor another drill's evidence.
    let e = rt
        .block_on(sb.report_drill(tidemark_proto::DrillReport {
            drill_id: 999,
            ..Default::default()
        }))
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{}", e.message());
}
