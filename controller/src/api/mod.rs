//! The controller's gRPC services: a thin layer that checks who calls, turns messages into
//! calls of the operations (`crate::ops`) and their results back into messages, and maps
//! errors to status codes in one place (`error`).

mod admin_service;
mod agent_service;
pub mod auth;
mod convert;
mod error;
mod read;
mod upload;

use std::sync::Arc;

use tidemark_core::tls::TlsMaterial;
use tidemark_proto::MAX_MESSAGE_BYTES;
use tidemark_proto::admin_service_server::AdminServiceServer;
use tidemark_proto::agent_service_server::AgentServiceServer;
use tokio::net::TcpListener;

use crate::ops::State;

/// Serve both services on `listener` until `shutdown` resolves.
pub async fn serve(
    state: Arc<State>,
    tls: &TlsMaterial,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let agent = AgentServiceServer::new(agent_service::AgentApi {
        state: state.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let revoked = state.revoked.clone();
    let admin = AdminServiceServer::new(admin_service::AdminApi { state })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    // A revoked certificate is refused before either service sees what it asks.
    let (r1, r2) = (revoked.clone(), revoked);
    let agent = tonic::service::interceptor::InterceptedService::new(agent, move |req| {
        auth::refuse_revoked(&r1, req)
    });
    let admin = tonic::service::interceptor::InterceptedService::new(admin, move |req| {
        auth::refuse_revoked(&r2, req)
    });
    tonic::transport::Server::builder()
        .tls_config(tls.server_config())?
        // Flow control sized by measurement (BDP): a stream that is read fast gets room for
        // chunks in flight (the fixed 64 KiB default stalls uploads), and one that is not
        // read yet, or is refused, holds little. A fixed 8 MiB window let 200 pushes
        // arriving at once buffer 1.4 GiB before any was refused.
        .http2_adaptive_window(Some(true))
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
        .add_service(agent)
        .add_service(admin)
        // TCP_NODELAY: without it, Nagle's algorithm meets the client's delayed ACK and
        // stalls the TLS handshake and small replies by ~40 ms each.
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await?;
    Ok(())
}
