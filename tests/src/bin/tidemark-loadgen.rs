//! A load generator, not part of the product: N simulated agents against one controller,
//! each over its own mTLS connection with its own `agent:simN` certificate. Each registers a
//! PostgreSQL instance, holds its job stream open like a real agent, reports archiver status
//! every `--status-every`, sends a sample every `--wal-every`, and pushes one WAL segment
//! (1 MiB, one chunk) every `--wal-every`, starts spread evenly. Prints push-ack and status
//! latency percentiles; tests/bench/scale.sh adds the controller's memory and CPU.
//!
//!   tidemark-loadgen --url https://localhost:PORT --pki DIR --agents 1000 --seconds 120

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidemark_core::chunk;
use tidemark_core::ids::ChunkId;
use tidemark_proto::agent_service_client::AgentServiceClient;
use tidemark_proto::upload_part_message::Msg;
use tidemark_proto::{
    ArchiverStatus, EncodedChunk, InstanceInfo, JobsRequest, PartTrailer, RegisterRequest, Sample,
    SampleBatch, StatusReport, UploadPartMessage, WalHeader,
};
use tokio::sync::Mutex;
use tonic::transport::Channel;

const SEG: u64 = 1 << 20;

struct Args {
    url: String,
    pki: PathBuf,
    agents: usize,
    seconds: u64,
    wal_every: u64,
    status_every: u64,
}

fn args() -> Args {
    let mut a = Args {
        url: String::new(),
        pki: PathBuf::new(),
        agents: 1000,
        seconds: 120,
        wal_every: 60,
        status_every: 15,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--url" => a.url = v,
            "--pki" => a.pki = v.into(),
            "--agents" => a.agents = v.parse().expect("--agents N"),
            "--seconds" => a.seconds = v.parse().expect("--seconds N"),
            "--wal-every" => a.wal_every = v.parse().expect("--wal-every SECONDS"),
            "--status-every" => a.status_every = v.parse().expect("--status-every SECONDS"),
            other => panic!("unknown option {other}"),
        }
    }
    assert!(!a.url.is_empty(), "--url is required");
    a
}

#[derive(Default)]
struct Stats {
    push_ms: Vec<f64>,
    status_ms: Vec<f64>,
    /// (seconds into the run, kind, ms) of replies slower than [`SLOW_MS`].
    slow: Vec<(u64, &'static str, f64)>,
    errors: Vec<String>,
}

const SLOW_MS: f64 = 100.0;

impl Stats {
    /// One reply of `kind` ("status" or "push"), `at` seconds into the run.
    fn record<T>(
        &mut self,
        kind: &'static str,
        agent: usize,
        at: u64,
        ms: f64,
        r: Result<T, tonic::Status>,
    ) {
        if ms > SLOW_MS {
            self.slow.push((at, kind, ms));
        }
        match r {
            Ok(_) if kind == "status" => self.status_ms.push(ms),
            Ok(_) => self.push_ms.push(ms),
            Err(e) => self.errors.push(format!("sim{agent} {kind}: {e}")),
        }
    }
}

/// Certificates for every simulated agent, issued once (kept in the PKI directory).
fn issue_certificates(a: &Args) {
    for n in 0..a.agents {
        if a.pki.join(format!("agent-sim{n}.crt")).exists() {
            continue;
        }
        let out = std::process::Command::new(tidemark_tests::bin("tidemark"))
            .args(["pki", "issue", "--dir"])
            .arg(&a.pki)
            .args(["--name", &format!("agent:sim{n}")])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

async fn connect(a: &Args, n: usize) -> AgentServiceClient<Channel> {
    let name = format!("agent:sim{n}");
    let stem = format!("agent-sim{n}");
    let (cert, key) = (
        a.pki.join(format!("{stem}.crt")),
        a.pki.join(format!("{stem}.key")),
    );
    let _ = name;
    let tls = tidemark_core::tls::TlsMaterial::load(&tidemark_core::config::TlsFiles {
        ca: a.pki.join("ca.crt"),
        cert,
        key,
    })
    .unwrap();
    let ch = tls
        .endpoint(&a.url, Some(Duration::from_secs(60)))
        .unwrap()
        .connect()
        .await
        .unwrap();
    AgentServiceClient::new(ch)
}

fn segment(n: usize, seq: u64) -> (String, EncodedChunk) {
    // A quiet server's segment: a little unique data, the rest zeros.
    let mut data = vec![0u8; SEG as usize];
    let tag = format!("sim{n} segment {seq} ");
    for (i, b) in tag.bytes().cycle().take(4096).enumerate() {
        data[i] = b;
    }
    let name = tidemark_core::wal::segment_name(1, seq, SEG);
    let c = EncodedChunk {
        id: ChunkId::of(&data).0.to_vec(),
        raw_len: data.len() as u32,
        data: chunk::encode(&data),
    };
    (name, c)
}

async fn sim(
    a: Arc<Args>,
    n: usize,
    stats: Arc<Mutex<Stats>>,
    ready: tokio::sync::mpsc::Sender<()>,
    mut go: tokio::sync::watch::Receiver<Option<Instant>>,
) {
    let mut c = connect(&a, n).await;
    let instance = format!("sim{n}-pg");
    let sysid = format!("{}", 7_000_000_000_000_000_000u64 + n as u64);
    let datadir = format!("/sim/{n}");
    let reg = RegisterRequest {
        host: format!("sim{n}"),
        agent_version: "loadgen".into(),
        instances: vec![InstanceInfo {
            name: instance.clone(),
            engine: "postgresql".into(),
            server_version: "15.0".into(),
            system_identifier: sysid.clone(),
            data_directory: datadir.clone(),
            wal_segment_size: SEG,
            ..Default::default()
        }],
        ..Default::default()
    };
    if let Err(e) = c.register(reg).await {
        stats
            .lock()
            .await
            .errors
            .push(format!("sim{n} register: {e}"));
        return;
    }
    // The job stream is open (its reply headers came) before the agent counts as connected.
    match c
        .clone()
        .jobs(JobsRequest {
            session: n as u64 + 1,
        })
        .await
    {
        Ok(r) => {
            let mut s = r.into_inner();
            tokio::spawn(async move { while let Ok(Some(_)) = s.message().await {} });
        }
        Err(e) => {
            stats.lock().await.errors.push(format!("sim{n} jobs: {e}"));
            return;
        }
    }
    let _ = ready.send(()).await;
    drop(ready);
    let start = loop {
        if let Some(t) = *go.borrow() {
            break t;
        }
        if go.changed().await.is_err() {
            return;
        }
    };
    let end = start + Duration::from_secs(a.seconds);
    // Spread the agents evenly over one WAL interval.
    let offset = Duration::from_millis(a.wal_every * 1000 * n as u64 / a.agents as u64);
    let mut next_wal = start + offset;
    let mut next_status = start + offset;
    let mut seq = 1u64;
    while Instant::now() < end {
        let now = Instant::now();
        if now >= next_status {
            next_status += Duration::from_secs(a.status_every);
            let t = Instant::now();
            let r = c
                .report_status(StatusReport {
                    instances: vec![ArchiverStatus {
                        instance: instance.clone(),
                        last_archived_wal: tidemark_core::wal::segment_name(1, seq, SEG),
                        system_identifier: sysid.clone(),
                        ..Default::default()
                    }],
                })
                .await;
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            stats
                .lock()
                .await
                .record("status", n, (t - start).as_secs(), ms, r);
        }
        if now >= next_wal {
            next_wal += Duration::from_secs(a.wal_every);
            let (name, chunk) = segment(n, seq);
            // One chunk: the stream's digest is the chunk's id.
            let digest = chunk.id.clone();
            let msgs = vec![
                UploadPartMessage {
                    msg: Some(Msg::Wal(WalHeader {
                        system_identifier: sysid.clone(),
                        data_directory: datadir.clone(),
                        name,
                        modified_at: tidemark_core::timefmt::now(),
                        ..Default::default()
                    })),
                },
                UploadPartMessage {
                    msg: Some(Msg::Chunk(chunk)),
                },
                UploadPartMessage {
                    msg: Some(Msg::Trailer(PartTrailer {
                        stream_sha256: digest,
                        raw_bytes: SEG,
                        chunk_count: 1,
                    })),
                },
            ];
            let t = Instant::now();
            let r = c.push_wal(tokio_stream::iter(msgs)).await;
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            let sample = c
                .push_samples(SampleBatch {
                    samples: vec![Sample {
                        instance: instance.clone(),
                        name: "orders".into(),
                        taken_at: tidemark_core::timefmt::now() * 1_000_000,
                        value: seq.to_string(),
                    }],
                })
                .await;
            let mut s = stats.lock().await;
            s.record("push", n, (t - start).as_secs(), ms, r);
            if let Err(e) = sample {
                s.errors.push(format!("sim{n} samples: {e}"));
            }
            seq += 1;
        }
        let wake = next_wal.min(next_status).min(end);
        tokio::time::sleep_until(wake.into()).await;
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let a = Arc::new(args());
    let stats = Arc::new(Mutex::new(Stats::default()));
    eprintln!("loadgen: issuing certificates for {} agents", a.agents);
    issue_certificates(&a);
    // Connect and register everyone first, then run the clock for all at once. All connecting
    // at once is what a controller restart looks like to a fleet: the time it takes is
    // reported too.
    let connecting = Instant::now();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(a.agents.max(1));
    let (go_tx, go_rx) = tokio::sync::watch::channel(None);
    let mut tasks = Vec::new();
    for n in 0..a.agents {
        let (a, stats) = (a.clone(), stats.clone());
        tasks.push(tokio::spawn(sim(
            a,
            n,
            stats,
            ready_tx.clone(),
            go_rx.clone(),
        )));
    }
    drop(ready_tx);
    let mut connected = 0;
    while ready_rx.recv().await.is_some() {
        connected += 1;
    }
    let connect_secs = connecting.elapsed().as_secs_f64();
    eprintln!(
        "loadgen: {connected} agents connected and registered; running {} s",
        a.seconds
    );
    let _ = go_tx.send(Some(Instant::now()));
    for t in tasks {
        let _ = t.await;
    }
    let mut s = std::mem::take(&mut *stats.lock().await);
    let pushes = s.push_ms.len();
    let statuses = s.status_ms.len();
    println!(
        "agents {}  seconds {}  WAL pushes {pushes}  status reports {statuses}  errors {}",
        a.agents,
        a.seconds,
        s.errors.len()
    );
    println!(
        "all agents connecting at once (TLS, registration, job stream): {connect_secs:.1} s until the last was connected"
    );
    println!(
        "{:<16} {:>8} {:>8} {:>8} {:>8}",
        "latency (ms)", "p50", "p90", "p99", "max"
    );
    for (what, v) in [
        ("WAL push ack", &mut s.push_ms),
        ("status report", &mut s.status_ms),
    ] {
        println!(
            "{:<16} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
            what,
            pct(v, 0.5),
            pct(v, 0.9),
            pct(v, 0.99),
            pct(v, 1.0)
        );
    }
    // When the slow replies came: a burst at the start (connections settling) reads
    // differently from a tail spread over the whole run.
    let mut by_window = std::collections::BTreeMap::new();
    for (at, kind, _) in &s.slow {
        *by_window.entry((at / 10 * 10, *kind)).or_insert(0u32) += 1;
    }
    if !by_window.is_empty() {
        println!("replies over {SLOW_MS} ms, by 10 s window of the run:");
        for ((w, kind), n) in by_window {
            println!("  {w:>4}-{:<4} s  {kind:<7} {n}", w + 10);
        }
    }
    for e in s.errors.iter().take(10) {
        println!("error: {e}");
    }
}
