//! A one-line progress bar for backups and restores, drawn only when stdout is a terminal.

use std::io::{IsTerminal, Write};

pub struct ProgressLine {
    enabled: bool,
    drawn: bool,
}

impl ProgressLine {
    pub fn new() -> Self {
        Self {
            enabled: std::io::stdout().is_terminal(),
            drawn: false,
        }
    }

    pub fn update(&mut self, label: &str, done: u64, total: u64, elapsed_secs: f64) {
        if !self.enabled {
            return;
        }
        let rate = if elapsed_secs > 0.0 {
            done as f64 / elapsed_secs
        } else {
            0.0
        };
        let line = if total > 0 {
            let frac = (done as f64 / total as f64).min(1.0);
            let filled = (frac * 30.0) as usize;
            format!(
                "{label} [{}{}] {:>5.1}% {} / {}  {}/s",
                "#".repeat(filled),
                "-".repeat(30 - filled),
                frac * 100.0,
                crate::output::bytes(done),
                crate::output::bytes(total),
                crate::output::bytes(rate as u64)
            )
        } else {
            format!(
                "{label} {}  {}/s",
                crate::output::bytes(done),
                crate::output::bytes(rate as u64)
            )
        };
        print!("\r\x1b[2K{line}");
        let _ = std::io::stdout().flush();
        self.drawn = true;
    }

    pub fn finish(&mut self) {
        if self.drawn {
            print!("\r\x1b[2K");
            let _ = std::io::stdout().flush();
            self.drawn = false;
        }
    }
}
