//! Operators' roles and accountability: a `viewer:` certificate reads and never changes; every
//! change, and every refused attempt at one, is in the audit log; `tidemark pki revoke`
//! blocks a certificate at once, and a certificate issued afterwards under the name works.

use std::time::Duration;

use tidemark_tests::fleet::{Cli, Fleet};
use tidemark_tests::process::wait_for;

#[test]
fn a_viewer_reads_everything_and_changes_nothing() {
    let f = Fleet::start("viewer");
    let (b, code) = f.backup();
    assert_eq!(code, 0, "{b}");
    let id = b["id"].as_i64().unwrap().to_string();
    let viewer = Cli::new(f.dir.path(), &f.pki, "viewer:vera", &f.controller.url);

    for args in [
        &["agents"][..],
        &["backups"],
        &["backups", "show", &id],
        &["status"],
        &["pitr-window", "--instance", "demo-pg"],
        &["drill", "history"],
        &["schedule"],
        &["keys"],
        &["audit"],
        &["retention", "plan"],
    ] {
        let out = viewer.run(args);
        // pitr-window of a non-archiving fleet is refused for its own reasons, not the role.
        assert!(
            !out.stderr.contains("may not"),
            "{args:?}: {}{}",
            out.stdout,
            out.stderr
        );
    }
    for (args, what) in [
        (
            &["backup", "--instance", "demo-pg", "--kind", "logical"][..],
            "start backups",
        ),
        (
            &[
                "restore",
                "--backup",
                &id,
                "--host",
                "db1",
                "--into-database",
                "x",
            ],
            "start restores",
        ),
        (&["drill", "run", "--instance", "demo-pg"], "start drills"),
        (
            &[
                "policy",
                "set",
                "--instance",
                "demo-pg",
                "--logical",
                "0 1 * * *",
            ],
            "change policies",
        ),
        (&["verify"], "verify the store"),
        (&["keys", "rotate"], "rotate the encryption keys"),
        (&["retention", "apply"], "apply retention"),
    ] {
        let out = viewer.run(args);
        assert_eq!(out.code, 3, "{args:?}: {}{}", out.stdout, out.stderr);
        assert!(
            out.stderr
                .contains(&format!("viewer:vera may not {what}; that needs a admin")),
            "{args:?}: {}",
            out.stderr
        );
    }

    // The audit log: the admin's backup, and every refused attempt with who tried it.
    let log = f.admin.json(&["audit", "--limit", "100"]);
    let entries = log.as_array().unwrap();
    let has = |who: &str, action: &str, outcome: &str| {
        entries.iter().any(|e| {
            e["who"] == who
                && e["action"] == action
                && e["outcome"].as_str().unwrap().starts_with(outcome)
        })
    };
    assert!(has("admin:ops", "start backups", "ok"), "{log:#}");
    for what in [
        "start backups",
        "start restores",
        "start drills",
        "change policies",
        "verify the store",
        "rotate the encryption keys",
        "apply retention",
    ] {
        assert!(has("viewer:vera", what, "refused:"), "{what}: {log:#}");
    }
    // A change that fails is recorded with its reason, and with what was asked.
    let out = f.admin.run(&[
        "restore",
        "--backup",
        "999",
        "--host",
        "db1",
        "--into-database",
        "x",
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let log = f.admin.json(&["audit", "--limit", "1"]);
    assert_eq!(log[0]["action"], "start restores", "{log:#}");
    assert!(
        log[0]["outcome"]
            .as_str()
            .unwrap()
            .contains("backup 999 does not exist"),
        "{log:#}"
    );
    assert!(
        log[0]["detail"]
            .as_str()
            .unwrap()
            .contains("backup_id: 999"),
        "{log:#}"
    );
    f.dir.keep_if_asked();
}

#[test]
fn a_revoked_certificate_is_refused_at_once_and_a_new_one_works() {
    let mut f = Fleet::start("revoke");
    let connected = |f: &Fleet| {
        f.admin.json(&["agents"])[0]["connected"]
            .as_bool()
            .unwrap_or(false)
    };
    assert!(connected(&f));

    // A viewer may not revoke.
    let viewer = Cli::new(f.dir.path(), &f.pki, "viewer:vera", &f.controller.url);
    let dir = f.pki.dir.to_string_lossy().into_owned();
    let out = viewer.run(&["pki", "revoke", "--dir", &dir, "--name", "agent:db1"]);
    assert_eq!(out.code, 3, "{}", out.stderr);

    let out = f.admin.run(&[
        "pki",
        "revoke",
        "--dir",
        &dir,
        "--name",
        "agent:db1",
        "--output",
        "json",
    ]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let r = out.json();
    assert_eq!(r["identity"], "agent:db1", "{r}");
    assert_eq!(r["already"], false, "{r}");
    assert!(f.pki.dir.join("agent-db1.crt.revoked").exists());

    // The running agent's job stream is closed and it cannot get back in.
    wait_for(
        "the revoked agent to be disconnected",
        Duration::from_secs(20),
        || (!connected(&f)).then_some(()),
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(!connected(&f), "a revoked agent reconnected");
    let out = f.admin.run(&["backup", "--instance", "demo-pg", "--wait"]);
    assert_eq!(out.code, 1, "a revoked agent took a backup: {}", out.stdout);
    assert!(
        out.stderr.contains("db1 is not connected"),
        "{}",
        out.stderr
    );
    // Any call with the revoked certificate is refused before a service sees it.
    let revoked = Cli::with_files(
        f.dir.path(),
        &f.pki.ca(),
        &f.pki.dir.join("agent-db1.crt.revoked"),
        &f.pki.dir.join("agent-db1.key.revoked"),
        &f.controller.url,
    );
    let out = revoked.run(&["agents"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr.contains("certificate was revoked"),
        "{}",
        out.stderr
    );

    // The revocation survives a controller restart.
    f.restart_controller_alone();
    std::thread::sleep(Duration::from_secs(3));
    assert!(!connected(&f));
    assert!(revoked.run(&["agents"]).stderr.contains("revoked"));

    // A new certificate under the same name is a different certificate: it works.
    f.pki.issue("agent:db1", &[]);
    f.agent.restart(f.dir.path(), &f.admin);
    let (b, code) = f.backup();
    assert_eq!(code, 0, "{b}");
    let log = f.admin.json(&["audit", "--limit", "20"]);
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "revoke certificates"
                && e["who"] == "admin:ops"
                && e["outcome"] == "ok"),
        "{log:#}"
    );
}
