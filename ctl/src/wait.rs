//! Waiting for a job to finish, with a progress bar on a terminal.

use std::time::{Duration, Instant};

use tidemark_proto::admin_service_client::AdminServiceClient;
use tidemark_proto::{GetJobRequest, JobInfo};
use tonic::transport::Channel;

use crate::client::{CliError, Exit};

/// A connected agent starts a job at once; one still queued after this is not coming.
const NOT_PICKED_UP: Duration = Duration::from_secs(60);
use crate::progress::ProgressLine;

pub async fn until_done(
    client: &mut AdminServiceClient<Channel>,
    job: JobInfo,
    label: &str,
) -> Result<JobInfo, CliError> {
    let start = Instant::now();
    let mut bar = ProgressLine::new();
    let mut info = job;
    while info.state == "queued" || info.state == "running" {
        if info.state == "queued" && start.elapsed() > NOT_PICKED_UP {
            bar.finish();
            return Err(CliError::new(
                Exit::Failed,
                format!(
                    "job {} was not started by agent {} within {}s; is the agent healthy? (tidemark agents)",
                    info.id,
                    info.agent,
                    NOT_PICKED_UP.as_secs()
                ),
            ));
        }
        bar.update(
            label,
            info.bytes_done,
            info.bytes_total,
            start.elapsed().as_secs_f64(),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        info = client
            .get_job(GetJobRequest { id: info.id })
            .await?
            .into_inner();
    }
    bar.finish();
    Ok(info)
}
