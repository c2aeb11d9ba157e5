//! Who is calling, from the TLS client certificate only. The TLS layer has already checked
//! that the certificate chains to the fleet CA; here its common name becomes an identity and
//! each service states which roles it serves.

use tidemark_core::identity::{Identity, Role};
use tonic::Request;

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
