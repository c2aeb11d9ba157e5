//! Scheduled runs the controller does itself (verify, retention), as they run.

/// Fleet-wide runs (verify, retention) the scheduler started in the controller itself and
/// has not collected: run id -> result once done. Lost on a restart, which retries them.
#[derive(Default)]
pub struct Background {
    pub(crate) runs: std::sync::Mutex<std::collections::HashMap<i64, Option<BackgroundResult>>>,
    /// The running tasks, to stop one that outlives its timeout.
    pub(crate) tasks: std::sync::Mutex<std::collections::HashMap<i64, tokio::task::AbortHandle>>,
}

/// A finished run: (summary, all went well), or why it could not run.
pub type BackgroundResult = Result<(String, bool), String>;
