//! Who is calling: the role and name carried in a certificate's common name, `ROLE:NAME`.
//!
//! The controller takes a caller's identity from its client certificate and from nothing else,
//! so an agent cannot claim to be another host by what it sends.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// A database host's agent: writes backups for its own instances.
    Agent,
    /// A drill sandbox host.
    Sandbox,
    /// An operator.
    Admin,
    /// A read-only operator: status, listings and metrics, never a change.
    Viewer,
    /// The controller itself (server certificate).
    Controller,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Agent,
        Role::Sandbox,
        Role::Admin,
        Role::Viewer,
        Role::Controller,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Sandbox => "sandbox",
            Role::Admin => "admin",
            Role::Viewer => "viewer",
            Role::Controller => "controller",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    pub role: Role,
    pub name: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum IdentityError {
    #[error(
        "identity {0:?} is not ROLE:NAME; roles are agent, sandbox, admin, viewer and controller"
    )]
    Malformed(String),
    #[error(
        "identity {0:?} has an unknown role; roles are agent, sandbox, admin, viewer and controller"
    )]
    UnknownRole(String),
    #[error("certificate cannot be parsed: {0}")]
    BadCertificate(String),
    #[error("certificate has no common name; tidemark certificates carry ROLE:NAME there")]
    NoCommonName,
}

impl FromStr for Identity {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, IdentityError> {
        let (role, name) = s
            .split_once(':')
            .ok_or_else(|| IdentityError::Malformed(s.into()))?;
        let valid_name = !name.is_empty()
            && name.len() <= 253
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid_name {
            return Err(IdentityError::Malformed(s.into()));
        }
        let role = Role::ALL
            .into_iter()
            .find(|r| r.as_str() == role)
            .ok_or_else(|| IdentityError::UnknownRole(s.into()))?;
        Ok(Identity {
            role,
            name: name.to_string(),
        })
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.role.as_str(), self.name)
    }
}

/// A certificate's fingerprint: the SHA-256 of its DER encoding, in hex. Revocation names
/// certificates by it, so a host re-issued a certificate under the same name is not blocked.
pub fn fingerprint(der: &[u8]) -> String {
    crate::ids::ChunkId::of(der).to_hex()
}

/// The identity and fingerprint of the certificate in a PEM file.
pub fn read_certificate(path: &std::path::Path) -> Result<(Identity, String), String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem)
        .map_err(|e| format!("{} is not a PEM certificate: {e}", path.display()))?;
    let id = Identity::from_certificate(&pem.contents)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((id, fingerprint(&pem.contents)))
}

impl Identity {
    /// The identity in a DER certificate's common name.
    pub fn from_certificate(der: &[u8]) -> Result<Self, IdentityError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .ok_or(IdentityError::NoCommonName)?;
        cn.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_roles_and_rejects_bad_names() {
        let id: Identity = "agent:db-1.example".parse().unwrap();
        assert_eq!(id.role, Role::Agent);
        assert_eq!(id.name, "db-1.example");
        assert_eq!(id.to_string(), "agent:db-1.example");
        assert!(matches!(
            "db1".parse::<Identity>(),
            Err(IdentityError::Malformed(_))
        ));
        assert!(matches!(
            "root:x".parse::<Identity>(),
            Err(IdentityError::UnknownRole(_))
        ));
        assert!(matches!(
            "agent:".parse::<Identity>(),
            Err(IdentityError::Malformed(_))
        ));
        assert!(matches!(
            "agent:a b".parse::<Identity>(),
            Err(IdentityError::Malformed(_))
        ));
    }
}
