//! The CLI's contract with scripts and operators: config lookup, exit codes, messages, and
//! the warnings a backup records.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use tidemark_tests::bin;
use tidemark_tests::fleet::{Cli, Fleet};
use tidemark_tests::{TestDir, process::run};

fn tidemark(args: &[&str], config: Option<&std::path::Path>) -> (i32, String) {
    let mut cmd = Command::new(bin("tidemark"));
    cmd.env_remove("TIDEMARK_CONFIG").args(args);
    if let Some(c) = config {
        cmd.env("TIDEMARK_CONFIG", c);
    }
    let out = run(&mut cmd);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_and_usage_errors_exit_2_and_an_unreachable_controller_exits_3() {
    let dir = TestDir::new("cliexit");
    let (code, err) = tidemark(&["agents"], None);
    assert_eq!(code, 2);
    assert!(err.contains("TIDEMARK_CONFIG"), "{err}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "version = 1\ncontroler = \"https://x:1\"\n").unwrap();
    let (code, err) = tidemark(&["agents"], Some(&bad));
    assert_eq!(code, 2);
    assert!(
        err.contains("bad.toml") && err.contains("controler"),
        "{err}"
    );

    let (code, _) = tidemark(
        &["backup", "--instance", "x", "--kind", "nightly"],
        Some(&bad),
    );
    assert_eq!(code, 2, "clap usage errors are usage errors");

    // A controller that is not there: a free port nobody listens on.
    let pki = tidemark_tests::fleet::Pki::init(&dir.path().join("pki"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cli = Cli::new(
        dir.path(),
        &pki,
        "admin:ops",
        &format!("https://localhost:{port}"),
    );
    let out = cli.run(&["agents"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr.contains("cannot reach the controller"),
        "{}",
        out.stderr
    );

    // A key others can read is refused, naming the fix.
    let key = pki.dir.join("admin-ops.key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = cli.run(&["agents"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("chmod 600"), "{}", out.stderr);
}

#[test]
fn a_long_open_transaction_is_recorded_as_a_warning() {
    let f = Fleet::start_with("longtxn", "long-transaction-warning = \"1s\"");
    let mut holder =
        f.pg.psql_cmd("postgres")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("psql");
    holder
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"BEGIN; SELECT txid_current();\n")
        .unwrap();
    holder.stdin.as_mut().unwrap().flush().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let (b, code) = f.backup();
    assert_eq!(code, 0, "{b}");
    assert_eq!(
        b["status"], "complete",
        "a warning does not fail the backup"
    );
    let warnings = b["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let w = warnings[0].as_str().unwrap();
    assert!(
        w.contains("transaction open for")
            && w.contains("idle in transaction")
            && w.contains("pins old row versions"),
        "{w}"
    );
    let _ = holder.kill();

    // Without the open transaction there is no warning.
    let _ = holder.wait();
    let (b, _) = f.backup();
    assert_eq!(b["warnings"].as_array().unwrap().len(), 0, "{b}");
    let shown = f.admin.run(&["backups", "show", &b["id"].to_string()]);
    assert!(
        shown.stdout.contains("status          complete"),
        "{}",
        shown.stdout
    );
}

#[test]
fn backup_and_restore_draw_progress_only_on_a_terminal() {
    let f = Fleet::start("progress");
    // script(1) gives the CLI a pseudo-terminal as stdout.
    let on_tty = |args: &str| {
        let cmd = format!("{} {args}", bin("tidemark").display());
        let out = run(Command::new("script")
            .args(["-q", "-e", "-c", &cmd, "/dev/null"])
            .env("TIDEMARK_CONFIG", &f.admin.config));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{cmd}: {text}");
        text
    };
    let shown = on_tty("backup --instance demo-pg --wait");
    assert!(
        shown.contains("\r\x1b[2Kbackup demo-pg"),
        "no progress line drawn: {shown:?}"
    );
    assert!(shown.contains("complete"), "{shown}");
    let shown = on_tty("restore --backup 1 --host db1 --database postgres --into-database copy");
    assert!(
        shown.contains("\r\x1b[2Krestore copy"),
        "no progress line drawn: {shown:?}"
    );
    // Without a terminal nothing is drawn, so scripts get clean output.
    let plain = f.admin.run(&["backup", "--instance", "demo-pg", "--wait"]);
    assert_eq!(plain.code, 0, "{}", plain.stderr);
    assert!(
        !plain.stdout.contains('\r') && !plain.stdout.contains('\x1b'),
        "{:?}",
        plain.stdout
    );
}
