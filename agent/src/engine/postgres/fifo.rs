//! Named pipes for pg_basebackup's tar files, so each tablespace streams straight into the
//! upload without touching the database host's disk.
//!
//! `pg_basebackup -Ft -D DIR` (the only tar mode that handles extra tablespaces) refuses a
//! DIR that is not empty, so the pipes cannot be made beforehand. Instead DIR is left for
//! pg_basebackup to create, and the pipes are made the moment it appears: pg_basebackup
//! checks DIR before it starts the backup (a checkpoint and several round trips), and only
//! then opens its files. If it ever opened one first, it would have made a regular file and
//! our mkfifo fails with EEXIST: that is detected, never mistaken for success, and the
//! backup is run again.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

pub struct FifoSpool {
    _root: tempfile::TempDir,
    dir: PathBuf,
    released: Arc<AtomicBool>,
    planted: Vec<String>,
}

/// Why the pipes could not be put in place.
#[derive(Debug)]
pub enum PlantError {
    /// pg_basebackup opened a file before its pipe existed; run the backup again.
    LostRace(String),
    /// pg_basebackup exited or never created its directory.
    NoDirectory,
    Io(String),
}

impl FifoSpool {
    pub fn new(spool_dir: &Path) -> std::io::Result<Self> {
        let root = tempfile::Builder::new()
            .prefix("tidemark-basebackup-")
            .tempdir_in(spool_dir)?;
        let dir = root.path().join("out");
        Ok(Self {
            _root: root,
            dir,
            released: Arc::new(AtomicBool::new(false)),
            planted: Vec::new(),
        })
    }

    /// The directory to give pg_basebackup as -D; it must not exist yet.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Wait for pg_basebackup to create the directory, then make a pipe for each name.
    /// `alive` tells whether pg_basebackup is still running.
    pub fn plant(
        &mut self,
        names: &[String],
        alive: impl Fn() -> bool,
        timeout: Duration,
    ) -> Result<(), PlantError> {
        let deadline = Instant::now() + timeout;
        while !self.dir.is_dir() {
            if !alive() || Instant::now() > deadline {
                return Err(PlantError::NoDirectory);
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        for name in names {
            let path = self.dir.join(name);
            match rustix::fs::mkfifoat(
                rustix::fs::CWD,
                &path,
                rustix::fs::Mode::from_raw_mode(0o600),
            ) {
                Ok(()) => self.planted.push(name.clone()),
                Err(rustix::io::Errno::EXIST) => return Err(PlantError::LostRace(name.clone())),
                Err(e) => return Err(PlantError::Io(format!("mkfifo {}: {e}", path.display()))),
            }
        }
        Ok(())
    }

    /// Open every pipe for reading, each in its own thread (an open blocks until
    /// pg_basebackup opens the pipe for writing). Pipes arrive in the order pg_basebackup
    /// writes them. A pipe that arrives after [`release`](Self::release) was never written.
    pub fn open_all(&self) -> mpsc::UnboundedReceiver<(String, File, bool)> {
        let (tx, rx) = mpsc::unbounded_channel();
        for name in &self.planted {
            let (tx, path, name, released) = (
                tx.clone(),
                self.dir.join(name),
                name.clone(),
                self.released.clone(),
            );
            std::thread::spawn(move || {
                if let Ok(f) = File::open(&path) {
                    let _ = tx.send((name, f, released.load(Ordering::SeqCst)));
                }
            });
        }
        rx
    }

    /// Unblock the readers of pipes pg_basebackup never opened (it has exited).
    pub fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
        for name in &self.planted {
            // Succeeds only while a reader waits; the reader then sees end of file.
            let _ = rustix::fs::open(
                self.dir.join(name),
                rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::NONBLOCK,
                rustix::fs::Mode::empty(),
            );
        }
    }

    /// Regular files pg_basebackup wrote instead of into a pipe (a tablespace created
    /// while the backup ran).
    pub fn unexpected_files(&self) -> Vec<String> {
        std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tar"))
            .collect()
    }
}

impl Drop for FifoSpool {
    fn drop(&mut self) {
        if !self.released.load(Ordering::SeqCst) {
            self.release();
        }
    }
}
