//! Timeouts and retries for every store, in one place: each operation gets a deadline, and
//! one that fails transiently (a timeout, throttling, a 5xx, a dropped connection) is tried
//! again after a doubling backoff. Permanent failures (not found, access denied) return at
//! once. Puts are safe to repeat: chunks are content-addressed.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tidemark_core::ids::ChunkId;

use super::{ChunkStore, StoreError};

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Tries per operation, the first included.
    pub attempts: u32,
    /// Wait before the second try; doubles after each.
    pub backoff: Duration,
    /// Deadline for one try.
    pub timeout: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            attempts: 5,
            backoff: Duration::from_millis(200),
            timeout: Duration::from_secs(60),
        }
    }
}

pub struct Retrying<S> {
    inner: S,
    policy: Policy,
}

impl<S: ChunkStore> Retrying<S> {
    pub fn new(inner: S, policy: Policy) -> Self {
        Self { inner, policy }
    }

    async fn run<T, F, Fut>(&self, op: &'static str, key: &str, f: F) -> Result<T, StoreError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut wait = self.policy.backoff;
        let mut attempt = 1;
        loop {
            let result = match tokio::time::timeout(self.policy.timeout, f()).await {
                Ok(r) => r,
                Err(_) => Err(StoreError::Timeout {
                    op,
                    key: key.to_string(),
                    after: self.policy.timeout,
                }),
            };
            match result {
                Err(e) if e.is_transient() && attempt < self.policy.attempts => {
                    tracing::warn!(op, attempt, error = %e, retry_in = ?wait, "chunk store operation failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

#[async_trait]
impl<S: ChunkStore> ChunkStore for Retrying<S> {
    async fn put(&self, id: &ChunkId, encoded: &[u8]) -> Result<bool, StoreError> {
        self.run("put", &id.to_hex(), || self.inner.put(id, encoded))
            .await
    }

    async fn get(&self, id: &ChunkId) -> Result<Vec<u8>, StoreError> {
        self.run("get", &id.to_hex(), || self.inner.get(id)).await
    }

    async fn exists(&self, id: &ChunkId) -> Result<bool, StoreError> {
        self.run("exists", &id.to_hex(), || self.inner.exists(id))
            .await
    }

    async fn quarantine(&self, id: &ChunkId) -> Result<(), StoreError> {
        self.run("quarantine", &id.to_hex(), || self.inner.quarantine(id))
            .await
    }

    async fn list(&self) -> Result<Vec<ChunkId>, StoreError> {
        self.run("list", "", || self.inner.list()).await
    }

    async fn delete(&self, id: &ChunkId) -> Result<(), StoreError> {
        self.run("delete", &id.to_hex(), || self.inner.delete(id))
            .await
    }

    async fn put_pack(&self, name: &str, bytes: Bytes) -> Result<(), StoreError> {
        // A retried PUT whose first try did land finds the name taken; it holds these bytes.
        let tried = std::sync::atomic::AtomicBool::new(false);
        self.run("put pack", name, || {
            let again = tried.swap(true, std::sync::atomic::Ordering::Relaxed);
            let bytes = bytes.clone();
            async move {
                match self.inner.put_pack(name, bytes.clone()).await {
                    Err(StoreError::PackExists(_)) if again => {
                        self.confirm_pack(name, &bytes).await
                    }
                    other => other,
                }
            }
        })
        .await
    }

    async fn get_pack_range(
        &self,
        name: &str,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, StoreError> {
        self.run("get pack", name, || {
            self.inner.get_pack_range(name, offset, len)
        })
        .await
    }

    async fn list_packs(&self) -> Result<Vec<crate::store::PackInfo>, StoreError> {
        self.run("list packs", "", || self.inner.list_packs()).await
    }

    async fn delete_pack(&self, name: &str) -> Result<(), StoreError> {
        self.run("delete pack", name, || self.inner.delete_pack(name))
            .await
    }

    async fn put_record(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        // A retried PUT whose first try did land finds the name taken; it holds these bytes.
        let tried = std::sync::atomic::AtomicBool::new(false);
        self.run("put record", name, || {
            let again = tried.swap(true, std::sync::atomic::Ordering::Relaxed);
            async move {
                match self.inner.put_record(name, bytes).await {
                    Err(StoreError::RecordExists(_))
                        if again && self.inner.get_record(name).await? == bytes =>
                    {
                        Ok(())
                    }
                    other => other,
                }
            }
        })
        .await
    }

    async fn get_record(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        self.run("get record", name, || self.inner.get_record(name))
            .await
    }

    async fn list_records(&self, under: &str) -> Result<Vec<String>, StoreError> {
        self.run("list records", under, || self.inner.list_records(under))
            .await
    }

    async fn delete_record(&self, name: &str) -> Result<(), StoreError> {
        self.run("delete record", name, || self.inner.delete_record(name))
            .await
    }

    async fn identity(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.run("get identity", "", || self.inner.identity()).await
    }

    async fn initialize(&self, identity: &[u8]) -> Result<(), StoreError> {
        // A retried initialisation may find the identity its first attempt wrote.
        let tried = std::sync::atomic::AtomicBool::new(false);
        self.run("initialize", "", || {
            let again = tried.swap(true, std::sync::atomic::Ordering::Relaxed);
            async move {
                match self.inner.initialize(identity).await {
                    Err(StoreError::IdentityExists)
                        if again && self.inner.identity().await?.as_deref() == Some(identity) =>
                    {
                        Ok(())
                    }
                    other => other,
                }
            }
        })
        .await
    }

    async fn holds_data(&self) -> Result<bool, StoreError> {
        self.run("list", "", || self.inner.holds_data()).await
    }

    fn requests(&self) -> Vec<(&'static str, u64)> {
        self.inner.requests()
    }
}

impl<S: ChunkStore> Retrying<S> {
    /// After a retried pack PUT found its name taken: the earlier try landed if the stored
    /// pack is these very bytes (pack names are random, so nobody else wrote it).
    async fn confirm_pack(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let stored = self
            .inner
            .get_pack_range(name, 0, bytes.len() as u32)
            .await?;
        if stored == bytes {
            Ok(())
        } else {
            Err(StoreError::PackExists(name.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::mem::MemStore;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Fails the first `fail` calls of every operation: puts with a 503 (after storing the
    /// pack when `lands`, as a reply lost on the way back would), reads by hanging.
    struct Flaky {
        inner: MemStore,
        fail: u32,
        calls: AtomicU32,
        transient: bool,
        lands: bool,
    }

    impl Flaky {
        fn failing(&self) -> bool {
            self.calls.fetch_add(1, Ordering::SeqCst) < self.fail
        }

        fn slow_down(&self, key: String) -> StoreError {
            StoreError::Remote {
                op: "put",
                key,
                message: "503 SlowDown".into(),
                transient: self.transient,
            }
        }
    }

    #[async_trait]
    impl ChunkStore for Flaky {
        async fn put(&self, id: &ChunkId, encoded: &[u8]) -> Result<bool, StoreError> {
            if self.failing() {
                return Err(self.slow_down(id.to_hex()));
            }
            self.inner.put(id, encoded).await
        }
        async fn get(&self, id: &ChunkId) -> Result<Vec<u8>, StoreError> {
            self.inner.get(id).await
        }
        async fn exists(&self, id: &ChunkId) -> Result<bool, StoreError> {
            self.inner.exists(id).await
        }
        async fn quarantine(&self, id: &ChunkId) -> Result<(), StoreError> {
            self.inner.quarantine(id).await
        }
        async fn list(&self) -> Result<Vec<ChunkId>, StoreError> {
            self.inner.list().await
        }
        async fn delete(&self, id: &ChunkId) -> Result<(), StoreError> {
            self.inner.delete(id).await
        }
        async fn put_pack(&self, name: &str, bytes: Bytes) -> Result<(), StoreError> {
            if self.failing() {
                if self.lands {
                    let _ = self.inner.put_pack(name, bytes).await;
                }
                return Err(self.slow_down(name.into()));
            }
            self.inner.put_pack(name, bytes).await
        }
        async fn get_pack_range(
            &self,
            name: &str,
            offset: u64,
            len: u32,
        ) -> Result<Vec<u8>, StoreError> {
            if self.failing() {
                // Hangs: the per-try deadline must cut it off.
                std::future::pending::<()>().await;
            }
            self.inner.get_pack_range(name, offset, len).await
        }
        async fn list_packs(&self) -> Result<Vec<crate::store::PackInfo>, StoreError> {
            self.inner.list_packs().await
        }
        async fn delete_pack(&self, name: &str) -> Result<(), StoreError> {
            self.inner.delete_pack(name).await
        }
        async fn put_record(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
            self.inner.put_record(name, bytes).await
        }
        async fn get_record(&self, name: &str) -> Result<Vec<u8>, StoreError> {
            self.inner.get_record(name).await
        }
        async fn list_records(&self, under: &str) -> Result<Vec<String>, StoreError> {
            self.inner.list_records(under).await
        }
        async fn delete_record(&self, name: &str) -> Result<(), StoreError> {
            self.inner.delete_record(name).await
        }
        async fn identity(&self) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.identity().await
        }
        async fn initialize(&self, identity: &[u8]) -> Result<(), StoreError> {
            if self.failing() {
                if self.lands {
                    let _ = self.inner.initialize(identity).await;
                }
                return Err(self.slow_down("identity".into()));
            }
            self.inner.initialize(identity).await
        }
    }

    fn policy() -> Policy {
        Policy {
            attempts: 3,
            backoff: Duration::from_millis(5),
            timeout: Duration::from_millis(100),
        }
    }

    fn flaky(fail: u32, transient: bool, lands: bool) -> Retrying<Flaky> {
        Retrying::new(
            Flaky {
                inner: MemStore::default(),
                fail,
                calls: AtomicU32::new(0),
                transient,
                lands,
            },
            policy(),
        )
    }

    #[tokio::test]
    async fn transient_failures_and_hangs_are_retried_up_to_the_limit() {
        let name = crate::store::new_pack_name();
        let s = flaky(2, true, false);
        s.put_pack(&name, Bytes::from_static(b"pack"))
            .await
            .unwrap();
        assert_eq!(
            s.inner.calls.load(Ordering::SeqCst),
            3,
            "third try succeeds"
        );
        let s = flaky(3, true, false);
        let e = s
            .put_pack(&name, Bytes::from_static(b"pack"))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("SlowDown"), "{e}");
        assert_eq!(
            s.inner.calls.load(Ordering::SeqCst),
            3,
            "gives up after 3 tries"
        );
        // Two hung reads time out and the third answers.
        let s = flaky(0, true, false);
        s.put_pack(&name, Bytes::from_static(b"pack"))
            .await
            .unwrap();
        s.inner.calls.store(0, Ordering::SeqCst);
        let s = Retrying::new(Flaky { fail: 2, ..s.inner }, policy());
        assert_eq!(s.get_pack_range(&name, 1, 2).await.unwrap(), b"ac");
    }

    #[tokio::test]
    async fn a_pack_put_whose_reply_was_lost_is_confirmed_not_doubted() {
        let name = crate::store::new_pack_name();
        let s = flaky(1, true, true);
        s.put_pack(&name, Bytes::from_static(b"pack bytes"))
            .await
            .unwrap();
        assert_eq!(s.get_pack_range(&name, 0, 10).await.unwrap(), b"pack bytes");
        // But a name taken by other bytes stays an error: a pack is never replaced.
        let e = s
            .put_pack(&name, Bytes::from_static(b"other"))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("never replaced"), "{e}");
    }

    #[tokio::test]
    async fn an_initialisation_whose_reply_was_lost_is_confirmed_and_another_is_refused() {
        let s = flaky(1, true, true);
        s.initialize(b"ours").await.unwrap();
        assert_eq!(s.identity().await.unwrap().as_deref(), Some(&b"ours"[..]));
        assert!(matches!(
            s.initialize(b"theirs").await,
            Err(StoreError::IdentityExists)
        ));
    }

    #[tokio::test]
    async fn permanent_failures_return_at_once() {
        let s = flaky(1, false, false);
        let e = s
            .put_pack(&crate::store::new_pack_name(), Bytes::from_static(b"x"))
            .await
            .unwrap_err();
        assert!(!e.is_transient());
        assert_eq!(s.inner.calls.load(Ordering::SeqCst), 1);
        let missing = s
            .get_pack_range(&crate::store::new_pack_name(), 0, 1)
            .await
            .unwrap_err();
        assert!(matches!(missing, StoreError::PackNotFound(_)));
    }
}
