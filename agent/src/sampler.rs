//! Samples for drills: the controller's probe queries (the within-pct smoke checks), run on
//! the production instance every sample interval. A drill compares what it restored with
//! the sample nearest before its target, so the values are taken with their time.

use std::sync::Arc;
use std::time::Duration;

use tidemark_proto::agent_service_client::AgentServiceClient;
use tidemark_proto::{Probe, Sample, SampleBatch};
use tonic::transport::Channel;

use crate::config::AgentConfig;
use crate::engine;

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

pub async fn run(
    mut client: AgentServiceClient<Channel>,
    config: Arc<AgentConfig>,
    probes: Vec<Probe>,
    every: Duration,
) {
    if probes.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut samples = Vec::new();
        for p in &probes {
            let Some(inst) = config.instance(&p.instance) else {
                continue;
            };
            let taken_at = now_micros();
            let result = engine::of(inst.kind())
                .probe(inst, &p.database, &p.sql)
                .await;
            match result {
                Ok(out) => samples.push(Sample {
                    instance: p.instance.clone(),
                    name: p.name.clone(),
                    taken_at,
                    value: out
                        .lines()
                        .next()
                        .and_then(|l| l.split('\t').next())
                        .unwrap_or("")
                        .to_string(),
                }),
                Err(e) => {
                    tracing::warn!(instance = %p.instance, probe = %p.name, error = %e, "probe query failed");
                }
            }
        }
        if samples.is_empty() {
            continue;
        }
        if let Err(e) = client.push_samples(SampleBatch { samples }).await {
            tracing::warn!(error = %e.message(), "pushing samples failed");
        }
    }
}
