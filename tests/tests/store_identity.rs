//! A controller starts only on the store its catalog indexes. An unmounted volume leaves an
//! empty directory where the store was: the controller must refuse it, create nothing there,
//! and run as before once the real store is back.

use std::process::Command;
use std::time::Duration;

use tidemark_tests::bin;
use tidemark_tests::fleet::Fleet;
use tidemark_tests::process::{Daemon, wait_for};

#[test]
fn an_empty_directory_where_the_store_was_is_refused_and_the_real_store_is_taken_back() {
    let mut f = Fleet::start("store-identity");
    let (b, code) = f.backup();
    assert_eq!(code, 0, "{b}");
    let store = f.controller.data_dir.join("store");
    assert!(
        store.join("tidemark-store").exists(),
        "the store was initialised"
    );

    // The volume is unmounted: an empty mount point where the store was.
    f.controller.daemon.kill9();
    let away = f.dir.path().join("store-volume");
    std::fs::rename(&store, &away).unwrap();
    std::fs::create_dir(&store).unwrap();
    let config = f.dir.path().join("controller.toml");
    let mut cmd = Command::new(bin("tidemark-controller"));
    cmd.arg("--config").arg(&config);
    let mut refused = Daemon::spawn(
        "controller",
        cmd,
        &f.dir.path().join("controller-refused.log"),
    );
    let status = wait_for(
        "the controller to refuse the store",
        Duration::from_secs(20),
        || refused.has_exited(),
    );
    assert!(!status.success());
    let log = refused.log_text();
    assert!(log.contains("has no identity object"), "{log}");
    assert!(log.contains("Is the volume mounted"), "{log}");
    assert_eq!(
        std::fs::read_dir(&store).unwrap().count(),
        0,
        "nothing was created on the mount point"
    );

    // The volume is back: the controller starts and every backup reads intact.
    std::fs::remove_dir(&store).unwrap();
    std::fs::rename(&away, &store).unwrap();
    f.restart_controller();
    let v = f.admin.json(&["verify"]);
    assert_eq!(v["bad"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(v["chunks_checked"], v["chunks_total"], "{v}");
    let backups = f.admin.json(&["backups", "--instance", "demo-pg"]);
    assert!(backups.to_string().contains("complete"), "{backups}");
}
