//! Upload streams as the operations take them: the header first, then the rest of the
//! stream with a broken transport reduced to its reason.

use futures::StreamExt;
use tidemark_proto::UploadPartMessage;
use tidemark_proto::upload_part_message::Msg;
use tonic::Streaming;

use crate::ops::{OpsError, OpsResult};

/// The rest of an upload after its header.
pub type Rest = futures::stream::Map<Streaming<UploadPartMessage>, ReasonOnly>;
type ReasonOnly = fn(Result<UploadPartMessage, tonic::Status>) -> Result<UploadPartMessage, String>;

fn reason_only(m: Result<UploadPartMessage, tonic::Status>) -> Result<UploadPartMessage, String> {
    m.map_err(|s| s.message().to_string())
}

/// Split `stream` into its first message and the rest. `what` names the upload in errors
/// ("part upload", "WAL push").
pub async fn open(
    stream: Streaming<UploadPartMessage>,
    what: &str,
) -> OpsResult<(Option<Msg>, Rest)> {
    let mut rest = stream.map(reason_only as ReasonOnly);
    match rest.next().await {
        Some(Ok(m)) => Ok((m.msg, rest)),
        None => Ok((None, rest)),
        Some(Err(why)) => Err(OpsError::InvalidArgument(format!("{what} broke: {why}"))),
    }
}
