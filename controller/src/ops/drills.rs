//! Drill settings and policies from the config, as every operation that starts, dispatches
//! or judges a drill sees them.

use tidemark_proto as pb;
use tokio::sync::Notify;

use crate::config::{CheckConfig, DrillSettings, Expect, InstancePolicy};

/// Drill settings and policies, and the dispatcher's wake-up call.
pub struct Drills {
    pub settings: DrillSettings,
    pub policies: Vec<InstancePolicy>,
    wake: Notify,
}

impl Drills {
    pub fn new(settings: DrillSettings, policies: Vec<InstancePolicy>) -> Self {
        Self {
            settings,
            policies,
            wake: Notify::new(),
        }
    }

    /// Something changed (a drill queued or finished, a sandbox connected): dispatch now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Resolves at the next [`Drills::wake`] (the dispatcher waits on it).
    pub fn woken(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }

    pub fn checks(&self, instance: &str) -> &[CheckConfig] {
        self.policies
            .iter()
            .find(|p| p.name == instance)
            .map(|p| p.checks.as_slice())
            .unwrap_or(&[])
    }

    /// The probe queries an agent samples on its instances: the within-pct checks.
    pub fn probes(&self, instances: &[String]) -> Vec<pb::Probe> {
        let mut out = Vec::new();
        for inst in instances {
            for c in self.checks(inst) {
                if matches!(c.expect, Expect::WithinPct(_)) {
                    out.push(pb::Probe {
                        instance: inst.clone(),
                        name: c.name.clone(),
                        database: c.database.clone(),
                        sql: c.sql.clone(),
                    });
                }
            }
        }
        out
    }
}
