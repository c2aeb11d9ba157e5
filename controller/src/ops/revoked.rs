//! Certificates refused from now on.

use std::collections::HashSet;
use std::sync::RwLock;

use tidemark_core::identity::{Identity, IdentityError, Role};
use tidemark_proto as pb;

use super::{OpsError, OpsResult, State};

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

/// Refuse a certificate from now on: every call it makes, and its job stream at once.
/// `by` is the operator who asked.
pub async fn revoke(
    state: &State,
    by: &str,
    r: pb::RevokeCertificateRequest,
) -> OpsResult<pb::RevokeCertificateResponse> {
    let id: Identity = r
        .identity
        .parse()
        .map_err(|e: IdentityError| OpsError::InvalidArgument(e.to_string()))?;
    if r.fingerprint.len() != 64 || !r.fingerprint.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(OpsError::InvalidArgument(format!(
            "{:?} is not a certificate fingerprint (64 hex digits, the SHA-256 of its DER)",
            r.fingerprint
        )));
    }
    let fingerprint = r.fingerprint.to_ascii_lowercase();
    // In the store first: a catalog rebuilt from it must refuse the certificate too.
    state
        .repo
        .publish_revocation(&fingerprint, &id.to_string(), by)
        .await?;
    let newly = state
        .repo
        .catalog
        .revoke_certificate(&fingerprint, &id.to_string(), by)
        .await?;
    state.revoked.add(&fingerprint);
    if matches!(id.role, Role::Agent | Role::Sandbox) {
        state
            .sessions
            .close(&id.name, "its certificate was revoked");
    }
    tracing::warn!(identity = %id, %fingerprint, "certificate revoked");
    Ok(pb::RevokeCertificateResponse {
        identity: id.to_string(),
        fingerprint,
        already: !newly,
    })
}
