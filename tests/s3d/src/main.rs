//! tidemark-test-s3: an S3-compatible server storing objects as files under a directory
//! (s3s-fs), with SigV4 authentication. Tests and the quickstart start it on loopback; its
//! data survives a restart, and a killed upload leaves no partial object.
//!
//! `tidemark-test-s3 --root DIR --access-key K --secret-key S [--listen 127.0.0.1:0]
//! [--addr-file FILE]`: with port 0 the bound address is written to FILE once listening.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

#[derive(Parser)]
#[command(
    name = "tidemark-test-s3",
    about = "S3-compatible test server on a directory"
)]
struct Args {
    /// Buckets are directories under this one.
    #[arg(long)]
    root: PathBuf,
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    #[arg(long)]
    access_key: String,
    #[arg(long)]
    secret_key: String,
    /// Write the bound address here (with a newline) once listening.
    #[arg(long)]
    addr_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    std::fs::create_dir_all(&args.root)?;
    let fs = s3s_fs::FileSystem::new(&args.root).map_err(|e| format!("{e:?}"))?;
    let mut builder = S3ServiceBuilder::new(fs);
    builder.set_auth(SimpleAuth::from_single(args.access_key, args.secret_key));
    let service = builder.build();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    if let Some(f) = &args.addr_file {
        // Written whole, then renamed: a reader never sees half an address.
        let tmp = f.with_extension("tmp");
        std::fs::write(&tmp, format!("{addr}\n"))?;
        std::fs::rename(&tmp, f)?;
    }
    eprintln!(
        "tidemark-test-s3 listening on http://{addr}, root {}",
        args.root.display()
    );
    let http = ConnBuilder::new(TokioExecutor::new());
    let mut stop = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let (socket, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("accept: {e}");
                    continue;
                }
            },
            _ = stop.as_mut() => break,
        };
        let conn = http
            .serve_connection(TokioIo::new(socket), service.clone())
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    Ok(())
}
