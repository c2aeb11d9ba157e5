//! `tidemark keys` and `tidemark keys rotate`.

use tidemark_proto as pb;

use super::State;
use super::error::{OpsError, OpsResult};
use crate::keys::{KeysError, kek};

fn not_encrypted() -> OpsError {
    OpsError::FailedPrecondition(
        "this fleet's store is not encrypted; set [encryption] enabled = true in the controller's config before the first backup".into(),
    )
}

impl From<KeysError> for OpsError {
    fn from(e: KeysError) -> Self {
        match e {
            KeysError::Catalog(c) => c.into(),
            // A key file that cannot be written, or a refused state: the operator must act.
            other => OpsError::FailedPrecondition(other.to_string()),
        }
    }
}

pub async fn info(state: &State) -> OpsResult<pb::KeysInfo> {
    let Some(keys) = &state.repo.keys else {
        return Ok(pb::KeysInfo::default());
    };
    let data_keys = state.repo.catalog.data_keys().await?;
    let keks = state
        .repo
        .catalog
        .keks()
        .await?
        .into_iter()
        .map(|k| pb::KeyEncryptionKey {
            id: k.id,
            file: kek::path(keys.dir(), k.id).display().to_string(),
            fingerprint: k.fingerprint,
            created_at: k.created_at,
            retired_at: k.retired_at.unwrap_or(0),
            data_keys: data_keys.iter().filter(|d| d.kek_id == k.id).count() as u32,
        })
        .collect();
    Ok(pb::KeysInfo {
        encrypted: true,
        keks,
        active_data_key: keys.active_data_key(),
        data_keys: data_keys.len() as u32,
        ..Default::default()
    })
}

pub async fn rotate(state: &State) -> OpsResult<pb::KeysInfo> {
    let keys = state.repo.keys.as_ref().ok_or_else(not_encrypted)?;
    let r = keys.rotate(&state.repo.catalog).await?;
    // The store must describe every data key that seals its chunks.
    state.repo.publish_keys().await.map_err(|e| {
        OpsError::Internal(format!(
            "the keys rotated, but the store's key record was not written ({e}); it is written when the controller next starts, restart it"
        ))
    })?;
    Ok(pb::KeysInfo {
        rotated_to: r.kek,
        rewrapped: r.rewrapped as u32,
        active_data_key: r.data_key,
        ..info(state).await?
    })
}
