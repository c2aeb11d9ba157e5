//! Tidemark's gRPC protocol, generated from `proto/tidemark.proto` at build time.

#![allow(clippy::all, clippy::pedantic)]

pub mod v1 {
    tonic::include_proto!("tidemark.v1");
}

pub use v1::*;

/// Largest message either side accepts: a chunk is at most 8 MiB of plaintext, and an
/// incompressible chunk grows a little when encoded.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
