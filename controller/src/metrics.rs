//! Prometheus metrics over plain HTTP (`GET /metrics`), computed from the catalog at scrape
//! time so they never disagree with `tidemark status`. Bind it to a private address: it
//! names instances and agents but carries no data and accepts no input.

use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::catalog::{DrillState, now};
use crate::ops::State;

struct Family<'a> {
    name: &'a str,
    help: &'a str,
    samples: Vec<(String, f64)>,
}

fn render(families: &[Family]) -> String {
    let mut out = String::new();
    for f in families {
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        // Prometheus naming: a _total series only ever goes up.
        let kind = if f.name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        let _ = writeln!(out, "# TYPE {} {kind}", f.name);
        for (labels, v) in &f.samples {
            let value = if v.is_infinite() {
                "+Inf".to_string()
            } else {
                v.to_string()
            };
            let _ = writeln!(out, "{}{{{labels}}} {value}", f.name);
        }
    }
    out
}

fn label(k: &str, v: &str) -> String {
    format!(
        "{k}=\"{}\"",
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    )
}

/// The metrics text for the whole fleet.
pub async fn collect(state: &State) -> Result<String, String> {
    let list = crate::ops::status::fleet_status(state)
        .await
        .map_err(|e| e.to_string())?;
    let t = now();
    let fam = |name, help| Family {
        name,
        help,
        samples: Vec::new(),
    };
    let mut archive_age = fam(
        "tidemark_wal_archive_age_seconds",
        "Seconds since the instance's newest WAL file reached the archive (+Inf when none has).",
    );
    let mut ready = fam(
        "tidemark_wal_ready_segments",
        "WAL files PostgreSQL is waiting to archive (archive_status/*.ready), as the agent last reported.",
    );
    let mut failures = fam(
        "tidemark_wal_archive_failures",
        "archive_command failures since the statistics were reset (pg_stat_archiver.failed_count).",
    );
    let mut base_age = fam(
        "tidemark_base_backup_age_seconds",
        "Seconds since the newest complete base backup finished (+Inf when there is none).",
    );
    let mut window = fam(
        "tidemark_pitr_window_seconds",
        "Length of the recovery window: newest minus oldest restorable point (0 when not restorable).",
    );
    let mut gap = fam(
        "tidemark_wal_gap",
        "1 when a WAL segment is missing between a base backup and the newest archived WAL.",
    );
    let mut alerts = fam(
        "tidemark_alerts",
        "Alerts raised for the instance (a conflicting WAL push, say).",
    );
    let mut connected = fam(
        "tidemark_agent_connected",
        "1 while the instance's agent holds its job stream open.",
    );
    let mut corrupt = fam(
        "tidemark_corrupt_backups",
        "Complete backups of the instance that verify found damaged (a chunk missing or corrupt).",
    );
    let mut drill_success = fam(
        "tidemark_drill_last_success_timestamp",
        "Unix time when the instance's newest passing drill finished (0 when none has passed).",
    );
    let mut drill_status = fam(
        "tidemark_drill_status",
        "1 when the instance's newest finished drill passed, 0 when it failed (aborted drills do not count).",
    );
    let mut drill_rto = fam(
        "tidemark_drill_rto_seconds",
        "Recovery time of the newest passing drill: from its start until the server was ready at the target.",
    );
    for s in &list {
        let l = label("instance", &s.instance);
        let cat = &state.repo.catalog;
        corrupt.samples.push((
            l.clone(),
            cat.corrupt_backup_count(&s.instance)
                .await
                .map_err(|e| e.to_string())? as f64,
        ));
        let passed = cat
            .last_drill(&s.instance, &[DrillState::Passed])
            .await
            .map_err(|e| e.to_string())?;
        let judged = cat
            .last_drill(&s.instance, &[DrillState::Passed, DrillState::Failed])
            .await
            .map_err(|e| e.to_string())?;
        drill_success.samples.push((
            l.clone(),
            passed.as_ref().and_then(|d| d.finished_at).unwrap_or(0) as f64,
        ));
        if let Some(d) = &judged {
            let ok = d.state == DrillState::Passed;
            drill_status
                .samples
                .push((l.clone(), if ok { 1.0 } else { 0.0 }));
        }
        if let Some(d) = &passed {
            drill_rto
                .samples
                .push((l.clone(), d.evidence.rto_ms as f64 / 1000.0));
        }
        let w = s.window.clone().unwrap_or_default();
        let a = s.archiver.clone().unwrap_or_default();
        let age = |at: i64| {
            if at == 0 {
                f64::INFINITY
            } else {
                (t - at).max(0) as f64
            }
        };
        archive_age
            .samples
            .push((l.clone(), age(s.newest_wal_stored_at)));
        ready.samples.push((l.clone(), a.ready as f64));
        failures.samples.push((l.clone(), a.failed_count as f64));
        base_age.samples.push((l.clone(), age(s.last_base_backup)));
        window.samples.push((
            l.clone(),
            if w.restorable {
                (w.newest_time - w.oldest_time).max(0) as f64
            } else {
                0.0
            },
        ));
        gap.samples
            .push((l.clone(), if w.gap.is_empty() { 0.0 } else { 1.0 }));
        alerts.samples.push((l.clone(), s.alerts.len() as f64));
        connected.samples.push((
            format!("{l},{}", label("agent", &s.agent)),
            if s.connected { 1.0 } else { 0.0 },
        ));
    }
    let mut requests = fam(
        "tidemark_store_requests_total",
        "Requests made to the object store since the controller started, by kind (what S3 bills).",
    );
    for (op, n) in state.repo.store.requests() {
        requests.samples.push((label("op", op), n as f64));
    }
    let mut leading = fam(
        "tidemark_controller_leading",
        "1 when this controller runs the schedules and drills (one of several sharing a catalog leads; a lone controller always does).",
    );
    leading.samples.push((
        label("controller", state.repo.catalog.controller_id()),
        if state.leading() { 1.0 } else { 0.0 },
    ));
    Ok(render(&[
        leading,
        archive_age,
        ready,
        failures,
        base_age,
        window,
        gap,
        alerts,
        connected,
        drill_success,
        drill_status,
        drill_rto,
        corrupt,
        requests,
    ]))
}

/// Serve until the listener fails; each connection gets one response.
pub async fn serve(state: Arc<State>, listener: TcpListener) {
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), respond(&state, conn)).await;
        });
    }
}

async fn respond(state: &State, mut conn: TcpStream) -> std::io::Result<()> {
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&req);
    let path = line.split_whitespace().nth(1).unwrap_or("");
    let (status, body) = if !line.starts_with("GET ") {
        ("405 Method Not Allowed", "only GET\n".to_string())
    } else if path == "/metrics" {
        match collect(state).await {
            Ok(b) => ("200 OK", b),
            Err(e) => ("503 Service Unavailable", format!("{e}\n")),
        }
    } else {
        ("404 Not Found", "metrics are at /metrics\n".to_string())
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await?;
    conn.write_all(body.as_bytes()).await?;
    conn.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text_with_escaped_labels() {
        let f = Family {
            name: "tidemark_wal_gap",
            help: "gap",
            samples: vec![
                (label("instance", "a\"b"), 1.0),
                (label("instance", "c"), f64::INFINITY),
            ],
        };
        let text = render(&[f]);
        assert!(text.contains("# TYPE tidemark_wal_gap gauge\n"));
        assert!(
            text.contains("tidemark_wal_gap{instance=\"a\\\"b\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("tidemark_wal_gap{instance=\"c\"} +Inf\n"),
            "{text}"
        );
    }
}
