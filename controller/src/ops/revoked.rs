//! Certificates refused from now on.

use std::collections::HashSet;
use std::sync::RwLock;

/// Revoked certificates, by fingerprint. Checked before any service sees a request (see
/// `api::auth::refuse_revoked`), so one place refuses a revoked certificate whatever it asks.
#[derive(Default)]
pub struct Revoked(RwLock<HashSet<String>>);

impl Revoked {
    pub fn new(fingerprints: impl IntoIterator<Item = String>) -> Self {
        Self(RwLock::new(fingerprints.into_iter().collect()))
    }

    /// Refuse `fingerprint` from now on; true when it was not refused already.
    pub fn add(&self, fingerprint: &str) -> bool {
        self.0
            .write()
            .expect("revocation lock")
            .insert(fingerprint.to_string())
    }

    pub fn contains(&self, fingerprint: &str) -> bool {
        self.0
            .read()
            .expect("revocation lock")
            .contains(fingerprint)
    }
}
