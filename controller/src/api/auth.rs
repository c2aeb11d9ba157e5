//! Who is calling, from the TLS client certificate only. The TLS layer has already checked
//! that the certificate chains to the fleet CA; here its common name becomes an identity and
//! each service states which roles it serves.

use std::collections::HashSet;
use std::sync::RwLock;

use tidemark_core::identity::{Identity, Role, fingerprint};
use tonic::{Request, Status};

use super::error::{ApiError, ApiResult};

pub fn caller<T>(req: &Request<T>) -> ApiResult<Identity> {
    let certs = req.peer_certs().ok_or_else(|| {
        ApiError::Unauthenticated("no client certificate; tidemark requires mutual TLS".into())
    })?;
    let leaf = certs
        .first()
        .ok_or_else(|| ApiError::Unauthenticated("empty client certificate chain".into()))?;
    Identity::from_certificate(leaf).map_err(|e| ApiError::Unauthenticated(e.to_string()))
}

/// The caller, if its role is one of `roles`.
pub fn require<T>(req: &Request<T>, roles: &[Role], what: &str) -> ApiResult<Identity> {
    let who = caller(req)?;
    if roles.contains(&who.role) {
        Ok(who)
    } else {
        let wanted: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        Err(ApiError::PermissionDenied(format!(
            "{who} may not {what}; that needs a {} certificate",
            wanted.join(" or ")
        )))
    }
}

/// Revoked certificates, by fingerprint. Checked before any service sees a request (see
/// [`Revoked::check`]), so one place refuses a revoked certificate whatever it asks.
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

    /// The interceptor every service runs first.
    pub fn check(&self, req: Request<()>) -> Result<Request<()>, Status> {
        let revoked = req
            .peer_certs()
            .and_then(|certs| certs.first().map(|leaf| fingerprint(leaf)))
            .is_some_and(|fp| self.0.read().expect("revocation lock").contains(&fp));
        if revoked {
            return Err(Status::unauthenticated(
                "this certificate was revoked (tidemark pki revoke); issue a new one",
            ));
        }
        Ok(req)
    }
}
