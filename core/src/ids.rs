//! Ids that cross the wire, as newtypes so they cannot be mixed up inside the code.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// SHA-256 of a chunk's plaintext.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    pub fn of(plaintext: &[u8]) -> Self {
        Self(Sha256::digest(plaintext).into())
    }

    pub fn from_slice(bytes: &[u8]) -> Result<Self, IdError> {
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| IdError::ChunkIdLength(bytes.len()))?;
        Ok(Self(arr))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", self.to_hex())
    }
}

impl FromStr for ChunkId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let bytes = hex::decode(s).map_err(|_| IdError::ChunkIdHex(s.to_string()))?;
        Self::from_slice(&bytes)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdError {
    #[error("chunk id must be 32 bytes, got {0}")]
    ChunkIdLength(usize),
    #[error("chunk id {0:?} is not 64 hex digits")]
    ChunkIdHex(String),
}

/// Catalog id of a backup, as operators type it: `tidemark backups show 42`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackupId(pub i64);

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Catalog id of a job (a backup or restore the controller asked an agent to run).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub i64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_id_round_trips_through_hex() {
        let id = ChunkId::of(b"hello");
        assert_eq!(
            id.to_hex(),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(id.to_hex().parse::<ChunkId>().unwrap(), id);
        assert!("abc".parse::<ChunkId>().is_err());
        assert!(ChunkId::from_slice(&[0u8; 31]).is_err());
    }
}
