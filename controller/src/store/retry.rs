//! Timeouts and retries for every store, in one place: each operation gets a deadline, and
//! one that fails transiently (a timeout, throttling, a 5xx, a dropped connection) is tried
//! again after a doubling backoff. Permanent failures (not found, access denied) return at
//! once. Puts are safe to repeat: chunks are content-addressed.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
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

    async fn run<T, F, Fut>(
        &self,
        op: &'static str,
        id: Option<&ChunkId>,
        f: F,
    ) -> Result<T, StoreError>
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
                    key: id.map(|i| i.to_hex()).unwrap_or_default(),
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
        self.run("put", Some(id), || self.inner.put(id, encoded))
            .await
    }

    async fn get(&self, id: &ChunkId) -> Result<Vec<u8>, StoreError> {
        self.run("get", Some(id), || self.inner.get(id)).await
    }

    async fn exists(&self, id: &ChunkId) -> Result<bool, StoreError> {
        self.run("exists", Some(id), || self.inner.exists(id)).await
    }

    async fn quarantine(&self, id: &ChunkId) -> Result<(), StoreError> {
        self.run("quarantine", Some(id), || self.inner.quarantine(id))
            .await
    }

    async fn list(&self) -> Result<Vec<ChunkId>, StoreError> {
        self.run("list", None, || self.inner.list()).await
    }

    async fn delete(&self, id: &ChunkId) -> Result<(), StoreError> {
        self.run("delete", Some(id), || self.inner.delete(id)).await
    }

    fn requests(&self) -> Vec<(&'static str, u64)> {
        self.inner.requests()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::mem::MemStore;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Fails the first `fail` calls of every operation with `error`.
    struct Flaky {
        inner: MemStore,
        fail: u32,
        calls: AtomicU32,
        transient: bool,
    }

    #[async_trait]
    impl ChunkStore for Flaky {
        async fn put(&self, id: &ChunkId, encoded: &[u8]) -> Result<bool, StoreError> {
            if self.calls.fetch_add(1, Ordering::SeqCst) < self.fail {
                return Err(StoreError::Remote {
                    op: "put",
                    key: id.to_hex(),
                    message: "503 SlowDown".into(),
                    transient: self.transient,
                });
            }
            self.inner.put(id, encoded).await
        }
        async fn get(&self, id: &ChunkId) -> Result<Vec<u8>, StoreError> {
            if self.calls.fetch_add(1, Ordering::SeqCst) < self.fail {
                // Hangs: the per-try deadline must cut it off.
                std::future::pending::<()>().await;
            }
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
    }

    fn policy() -> Policy {
        Policy {
            attempts: 3,
            backoff: Duration::from_millis(5),
            timeout: Duration::from_millis(100),
        }
    }

    fn flaky(fail: u32, transient: bool) -> Retrying<Flaky> {
        Retrying::new(
            Flaky {
                inner: MemStore::default(),
                fail,
                calls: AtomicU32::new(0),
                transient,
            },
            policy(),
        )
    }

    #[tokio::test]
    async fn transient_failures_and_hangs_are_retried_up_to_the_limit() {
        let id = ChunkId::of(b"x");
        let s = flaky(2, true);
        assert!(s.put(&id, b"x").await.unwrap(), "third try succeeds");
        let s = flaky(3, true);
        let e = s.put(&id, b"x").await.unwrap_err();
        assert!(e.to_string().contains("SlowDown"), "{e}");
        assert_eq!(
            s.inner.calls.load(Ordering::SeqCst),
            3,
            "gives up after 3 tries"
        );
        // Two hung reads time out and the third answers.
        let s = flaky(0, true);
        s.put(&id, b"x").await.unwrap();
        s.inner.calls.store(0, Ordering::SeqCst);
        let s = Retrying::new(Flaky { fail: 2, ..s.inner }, policy());
        assert_eq!(s.get(&id).await.unwrap(), b"x");
    }

    #[tokio::test]
    async fn permanent_failures_return_at_once() {
        let s = flaky(1, false);
        let e = s.put(&ChunkId::of(b"x"), b"x").await.unwrap_err();
        assert!(!e.is_transient());
        assert_eq!(s.inner.calls.load(Ordering::SeqCst), 1);
        let missing = s.get(&ChunkId::of(b"nothing")).await.unwrap_err();
        assert!(matches!(missing, StoreError::NotFound(_)));
    }
}
