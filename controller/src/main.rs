//! tidemark-controller: the catalog, the chunk store and the gRPC services for agents and
//! operators.

mod api;
mod catalog;
mod config;
mod store;

fn main() {}
