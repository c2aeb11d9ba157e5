//! The WAL archive as PostgreSQL uses it: archive_command = `tidemark-agent wal-push %p` and
//! restore_command = `tidemark-agent wal-fetch %f %p`, against a real cluster, controller and
//! agent. What must never happen: an archived file replaced, a clone or another host adding
//! to the archive, or a failure that recovery would mistake for "end of WAL".

use std::path::{Path, PathBuf};
use std::process::Command;

use tidemark_tests::bin;
use tidemark_tests::fleet::{Agent, Fleet};
use tidemark_tests::process::run;

const SEG: usize = 16 * 1024 * 1024;

/// Run `tidemark-agent --config CONFIG ARGS` in `cwd` (PostgreSQL runs its archive and
/// restore commands in the data directory). Returns (status, stderr).
fn agent_cmd(config: &Path, cwd: &Path, args: &[&str]) -> (i32, String) {
    let out = run(Command::new(bin("tidemark-agent"))
        .current_dir(cwd)
        .arg("--config")
        .arg(config)
        .args(args));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Switch to a new segment and wait until PostgreSQL's archiver has archived the old one.
fn switch_and_wait(f: &Fleet) -> String {
    f.pg.archive_current_segment()
}

fn fake_segment(dir: &Path, name: &str, byte: u8) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, vec![byte; SEG]).unwrap();
    p
}

#[test]
fn wal_is_archived_once_fetched_intact_and_refused_from_anyone_but_the_primary() {
    let f = Fleet::start_archiving("wal", "wal-retry-for = \"1s\"\n", "");
    let dir = f.dir.path();
    f.pg.sql(
        "postgres",
        "CREATE TABLE marker AS SELECT 'tidemark-wal-marker' AS v",
    );
    let seg = switch_and_wait(&f);
    let original = std::fs::read(f.pg.data.join("pg_wal").join(&seg)).unwrap();
    assert_eq!(original.len(), SEG);

    // Fetched back byte for byte.
    let out = dir.join("fetched");
    std::fs::create_dir_all(&out).unwrap();
    let dest = out.join("RECOVERYXLOG");
    let (code, err) = agent_cmd(
        &f.agent.config,
        &f.pg.data,
        &["wal-fetch", &seg, dest.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        std::fs::read(&dest).unwrap() == original,
        "fetched segment differs"
    );

    // Not in the archive: status 1, the normal end of recovery.
    let (code, err) = agent_cmd(
        &f.agent.config,
        &f.pg.data,
        &[
            "wal-fetch",
            "0000000100000000000000FF",
            dest.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1, "{err}");

    // A timeline history file is archived and fetched like a segment.
    let history = dir.join("history");
    std::fs::create_dir_all(&history).unwrap();
    let hfile = history.join("00000002.history");
    std::fs::write(&hfile, "1\t0/3000000\tno recovery target specified\n").unwrap();
    let (code, err) = agent_cmd(
        &f.agent.config,
        &f.pg.data,
        &["wal-push", hfile.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let (code, err) = agent_cmd(
        &f.agent.config,
        &f.pg.data,
        &["wal-fetch", "00000002.history", dest.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        std::fs::read(&hfile).unwrap()
    );
    let (code, _) = agent_cmd(
        &f.agent.config,
        &f.pg.data,
        &["wal-fetch", "00000003.history", dest.to_str().unwrap()],
    );
    assert_eq!(code, 1, "an absent history file is 'not found'");

    // The identical file again: fine.
    let (code, err) = agent_cmd(
        &f.agent.config,
        &f.pg.data,
        &["wal-push", &format!("pg_wal/{seg}")],
    );
    assert_eq!(code, 0, "{err}");

    // Different bytes under the archived name: refused, the archived file kept, an alert.
    let impostor = fake_segment(&dir.join("impostor"), &seg, 0x5a);
    let (code, err) = agent_cmd(
        &f.agent.config,
        &f.pg.data,
        &["wal-push", impostor.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("different"), "{err}");
    let (code, _) = agent_cmd(
        &f.agent.config,
        &f.pg.data,
        &["wal-fetch", &seg, dest.to_str().unwrap()],
    );
    assert_eq!(code, 0);
    assert!(
        std::fs::read(&dest).unwrap() == original,
        "archived segment was replaced"
    );
    let status = f.admin.json(&["status"]);
    let alerts = status[0]["alerts"].as_array().unwrap();
    assert!(
        alerts
            .iter()
            .any(|a| a.as_str().unwrap().contains("wal-conflict")),
        "{status}"
    );

    // A restored clone (same cluster, another directory) adds nothing.
    let clone = dir.join("clone");
    std::fs::create_dir_all(clone.join("global")).unwrap();
    std::fs::copy(
        f.pg.data.join("global/pg_control"),
        clone.join("global/pg_control"),
    )
    .unwrap();
    let fresh = "000000010000000000000077";
    let file = fake_segment(&clone.join("pg_wal"), fresh, 1);
    let (code, err) = agent_cmd(
        &f.agent.config,
        &clone,
        &["wal-push", file.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("a restored clone or copy must not archive"),
        "{err}"
    );

    // Another host's agent, even from the primary's own directory, adds nothing.
    let other = Agent::write_config(
        dir,
        &f.pki,
        "db2",
        &f.controller.url,
        "wal-retry-for = \"1s\"",
        "",
    );
    let (code, err) = agent_cmd(&other, &f.pg.data, &["wal-push", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("agent db2 has no instance"), "{err}");
    let (code, _) = agent_cmd(
        &f.agent.config,
        &f.pg.data,
        &["wal-fetch", fresh, dest.to_str().unwrap()],
    );
    assert_eq!(code, 1, "a refused push reached the archive");

    // Nor may it read the primary's WAL: a refusal, never "not found".
    let (code, err) = agent_cmd(
        &other,
        &f.pg.data,
        &["wal-fetch", &seg, dest.to_str().unwrap()],
    );
    assert_eq!(code, 200, "{err}");
    assert!(
        err.contains("may read instance demo-pg's WAL only"),
        "{err}"
    );

    // A configuration error is no "end of WAL" either, so recovery stops instead of
    // promoting early: an instance that is not registered, a cluster no instance has.
    let (code, err) = agent_cmd(
        &f.agent.config,
        &f.pg.data,
        &[
            "wal-fetch",
            "--instance",
            "nosuch",
            &seg,
            dest.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 200, "{err}");
    assert!(err.contains("instance nosuch is not registered"), "{err}");
    let stranger = dir.join("stranger");
    std::fs::create_dir_all(stranger.join("global")).unwrap();
    std::fs::write(stranger.join("global/pg_control"), 42u64.to_ne_bytes()).unwrap();
    let (code, err) = agent_cmd(
        &f.agent.config,
        &stranger,
        &["wal-fetch", &seg, dest.to_str().unwrap()],
    );
    assert_eq!(code, 200, "{err}");
    assert!(
        err.contains("no registered instance has system identifier \"42\""),
        "{err}"
    );

    // The controller gone: wal-fetch retries, then aborts recovery (status > 125) rather
    // than report the end of the WAL; wal-push fails so PostgreSQL keeps the segment.
    let mut f = f;
    f.controller.daemon.kill9();
    let (code, err) = agent_cmd(
        &f.agent.config,
        &f.pg.data,
        &["wal-fetch", &seg, dest.to_str().unwrap()],
    );
    assert_eq!(code, 200, "{err}");
    assert!(err.contains("gave up"), "{err}");
    let (code, _) = agent_cmd(
        &f.agent.config,
        &f.pg.data,
        &["wal-push", &format!("pg_wal/{seg}")],
    );
    assert_eq!(code, 1);
    f.dir.keep_if_asked();
}

/// A push under an archived name is compared, never stored: ten conflicting pushes, then a
/// collection, and the store holds exactly what it held before.
#[test]
fn conflicting_pushes_store_nothing_and_collection_finds_nothing_to_free() {
    let f = Fleet::start_archiving("walconflict", "", "");
    let seg = switch_and_wait(&f);
    let before = f.controller.store_files();
    let impostor = fake_segment(&f.dir.path().join("impostor"), &seg, 0x5a);
    for _ in 0..10 {
        let (code, err) = agent_cmd(
            &f.agent.config,
            &f.pg.data,
            &["wal-push", impostor.to_str().unwrap()],
        );
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("different"), "{err}");
    }
    // The identical file again is acknowledged, and stores nothing either.
    let (code, err) = agent_cmd(
        &f.agent.config,
        &f.pg.data,
        &["wal-push", &format!("pg_wal/{seg}")],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(f.controller.store_files(), before);
    let applied = f.admin.json(&["retention", "apply"]);
    assert_eq!(applied["objects_deleted"], 0, "{applied}");
    assert_eq!(applied["orphans_deleted"], 0, "{applied}");
    assert_eq!(f.controller.store_files(), before);
    f.dir.keep_if_asked();
}

/// More pushes at once than the controller receives ([ingest] wal-streams): the ones past
/// the limit are refused as busy, never parked, and their agents try again until every
/// file is archived.
#[test]
fn pushes_past_the_controllers_limit_wait_their_turn_and_all_arrive() {
    let f = tidemark_tests::fleet::Fleet::build(&tidemark_tests::fleet::FleetOpts {
        label: "walbusy",
        controller_extra: "[ingest]\nwal-streams = 1\n",
        ..Default::default()
    });
    let dir = f.dir.path().join("burst");
    let files: Vec<PathBuf> = (0..6u8)
        .map(|i| {
            let name = format!("0000000100000000000000{:02X}", 0x40 + i);
            // Different bytes each, and not compressible to nothing: each takes a moment.
            let p = dir.join(&name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&p, tidemark_tests::raw_agent::noise(u64::from(i) + 1, SEG)).unwrap();
            p
        })
        .collect();
    let pushes: Vec<_> = files
        .iter()
        .map(|p| {
            let (config, data, p) = (f.agent.config.clone(), f.pg.data.clone(), p.clone());
            std::thread::spawn(move || {
                agent_cmd(&config, &data, &["wal-push", p.to_str().unwrap()])
            })
        })
        .collect();
    for t in pushes {
        let (code, err) = t.join().unwrap();
        assert_eq!(code, 0, "{err}");
    }
    for p in &files {
        let name = p.file_name().unwrap().to_str().unwrap();
        let dest = f.dir.path().join(format!("fetched-{name}"));
        let (code, err) = agent_cmd(
            &f.agent.config,
            &f.pg.data,
            &["wal-fetch", name, dest.to_str().unwrap()],
        );
        assert_eq!(code, 0, "{err}");
        assert!(std::fs::read(&dest).unwrap() == std::fs::read(p).unwrap());
    }
    assert!(
        f.controller
            .daemon
            .log_text()
            .contains("busy: a push was refused for now"),
        "no push was ever refused as busy: the test did not test the limit"
    );
    f.dir.keep_if_asked();
}

/// A file pushed again under its archived name is compared without being held whole: the
/// agent sends every chunk of it as bytes, and nothing of it is stored either way.
#[test]
fn a_file_pushed_again_is_compared_and_stores_nothing() {
    let f = Fleet::start_archiving("walrepush", "", "");
    let dir = f.dir.path().join("repush");
    let name = "000000010000000000000060";
    // Four 4 MiB chunks, the last three repeats of one another.
    let quarter = SEG / 4;
    let mut archived = vec![0x11u8; quarter];
    archived.extend(std::iter::repeat_n(0u8, 3 * quarter));
    std::fs::create_dir_all(dir.join("a")).unwrap();
    let a = dir.join("a").join(name);
    std::fs::write(&a, &archived).unwrap();
    let push = |p: &Path| {
        agent_cmd(
            &f.agent.config,
            &f.pg.data,
            &["wal-push", p.to_str().unwrap()],
        )
    };
    let (code, err) = push(&a);
    assert_eq!(code, 0, "{err}");
    let before = f.controller.store_files();

    // The same bytes again: acknowledged, nothing stored.
    let (code, err) = push(&a);
    assert_eq!(code, 0, "{err}");
    assert_eq!(f.controller.store_files(), before);

    // Same first chunk, then one twice that the archive does not hold: a conflict.
    let mut other = vec![0x11u8; quarter];
    other.extend(std::iter::repeat_n(0x22u8, 2 * quarter));
    other.extend(std::iter::repeat_n(0u8, quarter));
    std::fs::create_dir_all(dir.join("b")).unwrap();
    let b = dir.join("b").join(name);
    std::fs::write(&b, &other).unwrap();
    let (code, err) = push(&b);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("different"), "{err}");

    assert_eq!(f.controller.store_files(), before);
    let dest = dir.join("fetched");
    let (code, err) = agent_cmd(
        &f.agent.config,
        &f.pg.data,
        &["wal-fetch", name, dest.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    assert!(std::fs::read(&dest).unwrap() == archived);
    f.dir.keep_if_asked();
}

/// What an older agent sends when it pushes a file again: repeats as references, and cut
/// where an older chunker cut it. A reference to a chunk the stream sent earlier is answered
/// from what the controller still holds of it, so an identical file cut differently is
/// identical (never a false conflict that would stop archiving); one past what is held is
/// refused as not comparable, naming the fix, and raises no conflict.
#[test]
fn a_file_pushed_again_by_an_older_agent_is_identical_however_it_was_cut() {
    use tidemark_proto::WalHeader;
    use tidemark_tests::raw_agent::{RawAgent, noise};
    let f = Fleet::start_archiving("walolder", "", "");
    let mut raw = RawAgent::connect(&f);
    let header = |name: &str| WalHeader {
        system_identifier: f.pg.sql(
            "postgres",
            "SELECT system_identifier FROM pg_control_system()",
        ),
        data_directory: std::fs::canonicalize(&f.pg.data)
            .unwrap()
            .display()
            .to_string(),
        name: name.into(),
        ..Default::default()
    };
    let name = "000000010000000000000061";
    let quarter = SEG / 4;
    let head = noise(1, quarter);
    let zeros = vec![0u8; quarter];
    raw.push_wal(
        header(name),
        &[
            (&head, true),
            (&zeros, true),
            (&zeros, false),
            (&zeros, false),
        ],
    )
    .unwrap();
    let before = f.controller.store_files();

    // The same file cut in 2 MiB pieces: its zero pieces are in no pack, only in the stream.
    let eighth = quarter / 2;
    let half_zeros = vec![0u8; eighth];
    let mut recut: Vec<(&[u8], bool)> = vec![(&head[..eighth], true), (&head[eighth..], true)];
    recut.push((&half_zeros, true));
    recut.extend(std::iter::repeat_n((half_zeros.as_slice(), false), 5));
    let ack = raw.push_wal(header(name), &recut).unwrap();
    assert!(ack.already_archived);
    assert_eq!(f.controller.store_files(), before);

    // Past what is held (a WAL segment's worth), a reference cannot be answered.
    let chunks: Vec<Vec<u8>> = (10..15).map(|s| noise(s, quarter)).collect();
    let mut long: Vec<(&[u8], bool)> = chunks.iter().map(|c| (c.as_slice(), true)).collect();
    long.push((&chunks[4], false));
    let e = raw.push_wal(header(name), &long).unwrap_err();
    assert!(e.message().contains("cannot be compared"), "{e:?}");
    assert!(e.message().contains("upgrade the agent"), "{e:?}");
    assert_eq!(f.controller.store_files(), before);
    let status = f.admin.json(&["status"]);
    assert!(
        !status.to_string().contains("wal-conflict"),
        "a file that could not be compared raised a conflict: {status}"
    );
    f.dir.keep_if_asked();
}
