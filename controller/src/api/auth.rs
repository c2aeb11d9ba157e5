//! Who is calling, from the TLS client certificate only. The TLS layer has already checked
//! that the certificate chains to the fleet CA; here its common name becomes an identity and
//! each service states which roles it serves.

use tidemark_core::identity::{Identity, Role, fingerprint};
use tonic::{Request, Status};

use crate::ops::revoked::Revoked;
use crate::ops::{OpsError, OpsResult};

pub fn caller<T>(req: &Request<T>) -> OpsResult<Identity> {
    let certs = req.peer_certs().ok_or_else(|| {
        OpsError::Unauthenticated("no client certificate; tidemark requires mutual TLS".into())
    })?;
    let leaf = certs
        .first()
        .ok_or_else(|| OpsError::Unauthenticated("empty client certificate chain".into()))?;
    Identity::from_certificate(leaf).map_err(|e| OpsError::Unauthenticated(e.to_string()))
}

/// The caller, if its role is one of `roles`.
pub fn require<T>(req: &Request<T>, roles: &[Role], what: &str) -> OpsResult<Identity> {
    let who = caller(req)?;
    if roles.contains(&who.role) {
        Ok(who)
    } else {
        let wanted: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        Err(OpsError::PermissionDenied(format!(
            "{who} may not {what}; that needs a {} certificate",
            wanted.join(" or ")
        )))
    }
}

/// The interceptor every service runs first: a revoked certificate is refused whatever it
/// asks.
pub fn refuse_revoked(revoked: &Revoked, req: Request<()>) -> Result<Request<()>, Status> {
    let refused = req
        .peer_certs()
        .and_then(|certs| certs.first().map(|leaf| fingerprint(leaf)))
        .is_some_and(|fp| revoked.contains(&fp));
    if refused {
        return Err(Status::unauthenticated(
            "this certificate was revoked (tidemark pki revoke); issue a new one",
        ));
    }
    Ok(req)
}
