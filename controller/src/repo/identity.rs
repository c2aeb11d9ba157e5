//! The store's identity: an object written once, when the store is initialised, whose id
//! the catalog records. A controller starts only on the store its catalog indexes, so an
//! unmounted volume (an empty directory where the store should be) or the wrong bucket is
//! refused at start, before anything could read it as "every chunk is missing".
//!
//! | catalog records | store holds | then |
//! |---|---|---|
//! | id A | identity A | start |
//! | id A | identity B | refuse: another store |
//! | id A | nothing | refuse: not the store (unmounted? wrong bucket or prefix?) |
//! | nothing | identity B | record B (a new catalog on an existing store), unless the store holds data the catalog does not know: then refuse, and point at `rebuild-catalog` |
//! | nothing | nothing | initialise a new identity, unless the catalog knows stored chunks and the store holds no data at all (a catalog from before identities, on an empty store) |

use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, CatalogError, now};
use crate::store::{ChunkStore, StoreError};

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct IdentityObject {
    format: u32,
    store_id: String,
    created_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "the store at {store} has no identity object (tidemark-store), but this catalog indexes store {recorded}; it is not that store. Is the volume mounted, or the bucket and prefix right? The controller does not start on what may be an empty store"
    )]
    Missing { store: String, recorded: String },
    #[error(
        "the store at {store} is store {found}, but this catalog indexes store {recorded}; check the [store] settings (each catalog has one store)"
    )]
    Another {
        store: String,
        found: String,
        recorded: String,
    },
    #[error(
        "the catalog knows stored chunks, but the store at {store} holds no data and no identity object; is the volume mounted, or the bucket and prefix right? The controller does not start on what may be an empty store"
    )]
    Empty { store: String },
    #[error(
        "the store at {store} holds backups, but this catalog is new and indexes none of them; to recover a lost catalog run `tidemark-controller rebuild-catalog --config FILE` first, or point [store] at a new location for a new fleet"
    )]
    Unindexed { store: String },
    #[error("the store at {store} has a malformed identity object: {detail}")]
    Malformed { store: String, detail: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

fn parse(store: &str, bytes: &[u8]) -> Result<String, IdentityError> {
    serde_json::from_slice::<IdentityObject>(bytes)
        .map(|o| o.store_id)
        .map_err(|e| IdentityError::Malformed {
            store: store.to_string(),
            detail: e.to_string(),
        })
}

/// Check that `store` (described as `name` in messages) is the store `catalog` indexes,
/// initialising or recording its identity where the table above says so. Returns its id.
pub async fn check(
    catalog: &Catalog,
    store: &dyn ChunkStore,
    name: &str,
) -> Result<String, IdentityError> {
    let recorded = catalog.store_id().await?;
    let found = match store.identity().await? {
        Some(bytes) => Some(parse(name, &bytes)?),
        None => None,
    };
    match (recorded, found) {
        (Some(r), Some(f)) if r == f => Ok(r),
        (Some(recorded), Some(found)) => Err(IdentityError::Another {
            store: name.to_string(),
            found,
            recorded,
        }),
        (Some(recorded), None) => Err(IdentityError::Missing {
            store: name.to_string(),
            recorded,
        }),
        (None, Some(_)) if !catalog.knows_stored_chunks().await? && store.holds_data().await? => {
            Err(IdentityError::Unindexed {
                store: name.to_string(),
            })
        }
        (None, Some(found)) => {
            tracing::info!(store = %name, store_id = %found, "recording the store's identity in the catalog");
            adopt(catalog, name, &found).await
        }
        (None, None) => {
            if catalog.knows_stored_chunks().await? && !store.holds_data().await? {
                return Err(IdentityError::Empty {
                    store: name.to_string(),
                });
            }
            let object = IdentityObject {
                format: 1,
                store_id: hex::encode(crate::keys::seal::random::<16>()),
                created_at: now(),
            };
            let bytes = serde_json::to_vec_pretty(&object).expect("an identity serialises");
            let id = match store.initialize(&bytes).await {
                Ok(()) => {
                    tracing::info!(store = %name, store_id = %object.store_id, "store initialised");
                    object.store_id
                }
                // Another controller sharing the catalog initialised it just now.
                Err(StoreError::IdentityExists) => match store.identity().await? {
                    Some(b) => parse(name, &b)?,
                    None => return Err(StoreError::IdentityExists.into()),
                },
                Err(e) => return Err(e.into()),
            };
            adopt(catalog, name, &id).await
        }
    }
}

/// Record `id` in the catalog; a different id recorded meanwhile (by another controller)
/// is a mismatch.
async fn adopt(catalog: &Catalog, name: &str, id: &str) -> Result<String, IdentityError> {
    let recorded = catalog.record_store_id(id).await?;
    if recorded != id {
        return Err(IdentityError::Another {
            store: name.to_string(),
            found: id.to_string(),
            recorded,
        });
    }
    Ok(recorded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::test_catalog;
    use crate::store::mem::MemStore;
    use tidemark_core::ids::ChunkId;

    #[tokio::test]
    async fn a_new_store_is_initialised_once_and_then_known() {
        let (cat, _dir) = test_catalog().await;
        let store = MemStore::default();
        let id = check(&cat, &store, "mem").await.unwrap();
        assert_eq!(cat.store_id().await.unwrap().as_deref(), Some(id.as_str()));
        assert_eq!(check(&cat, &store, "mem").await.unwrap(), id);
        // A second catalog on the same store takes its identity.
        let (other, _d2) = test_catalog().await;
        assert_eq!(check(&other, &store, "mem").await.unwrap(), id);
    }

    #[tokio::test]
    async fn a_store_without_the_identity_or_with_another_is_refused() {
        let (cat, _dir) = test_catalog().await;
        check(&cat, &MemStore::default(), "first").await.unwrap();
        // An unmounted volume, or the wrong bucket: nothing there.
        let e = check(&cat, &MemStore::default(), "/srv/store")
            .await
            .unwrap_err();
        assert!(matches!(e, IdentityError::Missing { .. }), "{e}");
        assert!(e.to_string().contains("Is the volume mounted"), "{e}");
        // Another initialised store.
        let other = MemStore::default();
        let (cat2, _d2) = test_catalog().await;
        check(&cat2, &other, "other").await.unwrap();
        let e = check(&cat, &other, "other").await.unwrap_err();
        assert!(matches!(e, IdentityError::Another { .. }), "{e}");
        // Nothing recorded was changed by the refusals.
        assert_ne!(
            cat.store_id().await.unwrap(),
            cat2.store_id().await.unwrap()
        );
    }

    /// A catalog from before identities: its store is adopted when it holds data, and
    /// refused when it holds none (the unmounted volume of the same catalog).
    #[tokio::test]
    async fn a_catalog_that_knows_chunks_refuses_an_empty_store_without_identity() {
        let (cat, _dir) = test_catalog().await;
        let chunk = ChunkId::of(b"known");
        crate::catalog::test_backup(&cat, &[(chunk, 5, None)]).await;
        assert!(cat.knows_stored_chunks().await.unwrap());
        let e = check(&cat, &MemStore::default(), "/srv/store")
            .await
            .unwrap_err();
        assert!(matches!(e, IdentityError::Empty { .. }), "{e}");
        assert_eq!(cat.store_id().await.unwrap(), None);
        // The real store, with its data: initialised and recorded.
        let store = MemStore::default();
        store.put(&chunk, b"bytes").await.unwrap();
        let id = check(&cat, &store, "/srv/store").await.unwrap();
        assert_eq!(cat.store_id().await.unwrap(), Some(id));
    }

    /// A lost catalog replaced by an empty one must not start on the store: its first
    /// retention run would see every pack as garbage.
    #[tokio::test]
    async fn a_new_catalog_on_a_store_with_data_is_refused_with_the_rebuild_hint() {
        let (cat, _dir) = test_catalog().await;
        let store = MemStore::default();
        check(&cat, &store, "mem").await.unwrap();
        store
            .put_pack(
                &crate::store::new_pack_name(),
                bytes::Bytes::from_static(b"data"),
            )
            .await
            .unwrap();
        let (fresh, _d2) = test_catalog().await;
        let e = check(&fresh, &store, "/srv/store").await.unwrap_err();
        assert!(matches!(e, IdentityError::Unindexed { .. }), "{e}");
        assert!(e.to_string().contains("rebuild-catalog"), "{e}");
        assert_eq!(fresh.store_id().await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_malformed_identity_is_refused() {
        let (cat, _dir) = test_catalog().await;
        let store = MemStore::default();
        store.initialize(b"not json").await.unwrap();
        let e = check(&cat, &store, "mem").await.unwrap_err();
        assert!(matches!(e, IdentityError::Malformed { .. }), "{e}");
        assert_eq!(cat.store_id().await.unwrap(), None);
    }
}
