//! A store in an S3 bucket (AWS or any S3-compatible server): immutable pack objects in
//! `PREFIX/packs/ab/abcdef…`, and chunks stored before packs existed in
//! `PREFIX/chunks/ab/abcdef…`, one object each.
//!
//! S3 makes an object visible only once it is whole and durable, so a PUT that returned
//! success is the durability point. Retries and timeouts are not here: [`super::retry`]
//! wraps every store. The SDK's own retries are off so that there is one policy.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use tidemark_core::ids::ChunkId;

use super::{ChunkStore, StoreError};

/// Where the bucket is and how to sign for it.
#[derive(Debug, Clone)]
pub struct S3Settings {
    pub bucket: String,
    /// Every key starts with this (e.g. "fleet1/"); may be empty.
    pub prefix: String,
    /// Empty: AWS's endpoint for the region.
    pub endpoint: String,
    pub region: String,
    /// Path-style requests (`https://host/bucket/key`), which most S3-compatible servers
    /// need.
    pub path_style: bool,
    pub access_key: String,
    pub secret_key: String,
}

#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    counts: std::sync::Arc<Counts>,
}

/// Requests sent, by kind, retries included.
#[derive(Default)]
struct Counts([AtomicU64; 6]);

const KINDS: [&str; 6] = ["put", "get", "head", "list", "delete", "copy"];

impl Counts {
    fn add(&self, kind: &str) {
        if let Some(i) = KINDS.iter().position(|k| *k == kind) {
            self.0[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Credentials from an AWS shared-credentials file (`[default]` or `[PROFILE]` with
/// `aws_access_key_id` and `aws_secret_access_key`).
pub fn credentials_from_file(path: &Path, profile: &str) -> Result<(String, String), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read S3 credentials file {}: {e}", path.display()))?;
    let mut section = String::new();
    let (mut key, mut secret) = (None, None);
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('#') || l.starts_with(';') || l.is_empty() {
            continue;
        }
        if let Some(name) = l.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            section = name.trim().trim_start_matches("profile ").to_string();
            continue;
        }
        if section != profile {
            continue;
        }
        if let Some((k, v)) = l.split_once('=') {
            match k.trim() {
                "aws_access_key_id" => key = Some(v.trim().to_string()),
                "aws_secret_access_key" => secret = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    match (key, secret) {
        (Some(k), Some(s)) => Ok((k, s)),
        _ => Err(format!(
            "S3 credentials file {} has no [{profile}] section with aws_access_key_id and aws_secret_access_key",
            path.display()
        )),
    }
}

fn remote<E: ProvideErrorMetadata + std::fmt::Debug>(
    op: &'static str,
    key: &str,
    e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> StoreError {
    let status = e.raw_response().map(|r| r.status().as_u16());
    let (transient, message) = match &e {
        SdkError::TimeoutError(_) => (true, "timed out".to_string()),
        SdkError::DispatchFailure(d) => (
            true,
            format!(
                "could not reach the S3 server ({})",
                d.as_connector_error()
                    .map(|c| tidemark_core::text::error_chain(c))
                    .unwrap_or_else(|| format!("{d:?}"))
            ),
        ),
        SdkError::ResponseError(_) => (true, "unreadable response".to_string()),
        SdkError::ServiceError(s) => {
            let err = s.err();
            let code = err.code().unwrap_or("");
            let msg = err.message().unwrap_or("");
            let throttled = matches!(code, "SlowDown" | "RequestTimeout" | "InternalError");
            (
                throttled || status.is_some_and(|s| s >= 500 || s == 429),
                format!(
                    "{} {code}{}{msg}",
                    status.map(|s| s.to_string()).unwrap_or_default(),
                    if msg.is_empty() { "" } else { ": " }
                ),
            )
        }
        other => (false, format!("{other:?}")),
    };
    StoreError::Remote {
        op,
        key: key.to_string(),
        message: message.trim().to_string(),
        transient,
    }
}

impl S3Store {
    pub fn new(s: &S3Settings) -> Self {
        let creds = Credentials::new(&s.access_key, &s.secret_key, None, None, "tidemark-config");
        let mut conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(s.region.clone()))
            .credentials_provider(creds)
            .force_path_style(s.path_style)
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled());
        if !s.endpoint.is_empty() {
            conf = conf.endpoint_url(&s.endpoint);
        }
        let mut prefix = s.prefix.clone();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Self {
            client: Client::from_conf(conf.build()),
            bucket: s.bucket.clone(),
            prefix,
            counts: Default::default(),
        }
    }

    fn pack_key(&self, name: &str) -> String {
        format!(
            "{}packs/{}/{name}",
            self.prefix,
            name.get(..2).unwrap_or("")
        )
    }

    fn record_key(&self, name: &str) -> Result<String, StoreError> {
        super::check_record_name(name)?;
        Ok(format!("{}meta/{name}", self.prefix))
    }

    fn identity_key(&self) -> String {
        format!("{}tidemark-store", self.prefix)
    }

    fn key(&self, id: &ChunkId) -> String {
        let hex = id.to_hex();
        format!("{}chunks/{}/{hex}", self.prefix, &hex[..2])
    }

    /// The last path segment of every object under PREFIX/`under`, page by page.
    async fn list_names(&self, under: &str) -> Result<Vec<(String, u64, i64)>, StoreError> {
        let mut keys = self.list_keys(under).await?;
        for (k, _, _) in &mut keys {
            if let Some((_, last)) = k.rsplit_once('/') {
                *k = last.to_string();
            }
        }
        Ok(keys)
    }

    /// Every object's key under PREFIX/`under`, without PREFIX/`under`, its size and when
    /// it was written (unix seconds), page by page.
    async fn list_keys(&self, under: &str) -> Result<Vec<(String, u64, i64)>, StoreError> {
        let prefix = format!("{}{under}", self.prefix);
        let mut out = Vec::new();
        let mut token = None;
        loop {
            self.counts.add("list");
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&prefix)
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| remote("list", &prefix, e))?;
            out.extend(page.contents().iter().filter_map(|o| {
                let key = o.key()?.strip_prefix(&prefix)?.to_string();
                let modified = o.last_modified().map_or(0, |t| t.secs());
                Some((key, o.size().unwrap_or(0).max(0) as u64, modified))
            }));
            token = page.next_continuation_token().map(str::to_string);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn delete_key(&self, key: &str) -> Result<(), StoreError> {
        self.counts.add("delete");
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| remote("delete", key, e))?;
        Ok(())
    }

    /// The whole object at `key`, or None when there is none.
    async fn get_whole(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.counts.add("get");
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) if matches!(e.as_service_error(), Some(s) if s.is_no_such_key()) => {
                return Ok(None);
            }
            Err(e) => return Err(remote("get", key, e)),
        };
        let bytes = out.body.collect().await.map_err(|e| {
            let chain = tidemark_core::text::error_chain(&e);
            // The SDK checks the checksum the server stored with the object: a mismatch
            // means the stored bytes changed, which no retry mends.
            if chain.to_ascii_lowercase().contains("checksum mismatch") {
                StoreError::Damaged {
                    key: key.to_string(),
                    detail: chain,
                }
            } else {
                StoreError::Remote {
                    op: "get",
                    key: key.to_string(),
                    message: format!("reading the body: {chain}"),
                    transient: true,
                }
            }
        })?;
        Ok(Some(bytes.into_bytes().to_vec()))
    }

    /// Write `bytes` at `key` only if no object is there (If-None-Match: *): false when
    /// one is.
    async fn create(&self, key: &str, bytes: Bytes) -> Result<bool, StoreError> {
        self.counts.add("put");
        match self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .if_none_match("*")
            .body(ByteStream::from(bytes))
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 412) => Ok(false),
            Err(e) => Err(remote("put", key, e)),
        }
    }

    /// Check that the bucket is there and these credentials may use it, so that a
    /// misconfiguration stops the controller at start rather than the first backup.
    pub async fn check(&self) -> Result<(), StoreError> {
        self.any_under("").await.map(|_| ())
    }

    /// Is there any object under PREFIX/`under`? One LIST of at most one key.
    async fn any_under(&self, under: &str) -> Result<bool, StoreError> {
        let prefix = format!("{}{under}", self.prefix);
        self.counts.add("list");
        let page = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&prefix)
            .max_keys(1)
            .send()
            .await
            .map_err(|e| remote("list", &format!("s3://{}/{prefix}", self.bucket), e))?;
        Ok(!page.contents().is_empty())
    }
}

#[async_trait]
impl ChunkStore for S3Store {
    async fn put(&self, id: &ChunkId, encoded: &[u8]) -> Result<bool, StoreError> {
        let key = self.key(id);
        // One request for a new chunk: create it only if absent (If-None-Match: *, which
        // S3 and most compatible servers honour). When it exists, it holds these bytes
        // unless damaged; a damaged one (wrong size) is replaced by this verified upload.
        self.counts.add("put");
        let created = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .if_none_match("*")
            .body(ByteStream::from(encoded.to_vec()))
            .send()
            .await;
        match created {
            Ok(_) => return Ok(true),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 412) => {}
            Err(e) => return Err(remote("put", &key, e)),
        }
        self.counts.add("head");
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(h) if h.content_length() == Some(encoded.len() as i64) => return Ok(false),
            Ok(_) => tracing::warn!(chunk = %id, "stored chunk has the wrong size; replacing it"),
            Err(e) if matches!(e.as_service_error(), Some(s) if s.is_not_found()) => {}
            Err(e) => return Err(remote("head", &key, e)),
        }
        self.counts.add("put");
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .body(ByteStream::from(encoded.to_vec()))
            .send()
            .await
            .map_err(|e| remote("put", &key, e))?;
        Ok(true)
    }

    async fn get(&self, id: &ChunkId) -> Result<Vec<u8>, StoreError> {
        self.get_whole(&self.key(id))
            .await?
            .ok_or(StoreError::NotFound(*id))
    }

    async fn exists(&self, id: &ChunkId) -> Result<bool, StoreError> {
        let key = self.key(id);
        self.counts.add("head");
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if matches!(e.as_service_error(), Some(s) if s.is_not_found()) => Ok(false),
            Err(e) => Err(remote("head", &key, e)),
        }
    }

    async fn quarantine(&self, id: &ChunkId) -> Result<(), StoreError> {
        let key = self.key(id);
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let dest = format!("{}quarantine/{}.{stamp}", self.prefix, id.to_hex());
        self.counts.add("copy");
        match self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .copy_source(format!("{}/{key}", self.bucket))
            .key(&dest)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) if matches!(e.as_service_error(), Some(s) if s.code() == Some("NoSuchKey")) => {
                return Ok(());
            }
            Err(e) => return Err(remote("copy", &key, e)),
        }
        self.delete(id).await
    }

    async fn list(&self) -> Result<Vec<ChunkId>, StoreError> {
        Ok(self
            .list_names("chunks/")
            .await?
            .iter()
            .filter_map(|(n, _, _)| n.parse::<ChunkId>().ok())
            .collect())
    }

    async fn delete(&self, id: &ChunkId) -> Result<(), StoreError> {
        self.delete_key(&self.key(id)).await
    }

    async fn put_pack(&self, name: &str, bytes: Bytes) -> Result<(), StoreError> {
        // Created only if absent: a pack is never replaced (Object Lock friendly).
        match self.create(&self.pack_key(name), bytes).await? {
            true => Ok(()),
            false => Err(StoreError::PackExists(name.to_string())),
        }
    }

    async fn get_pack_range(
        &self,
        name: &str,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, StoreError> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let key = self.pack_key(name);
        self.counts.add("get");
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .range(format!("bytes={offset}-{}", offset + u64::from(len) - 1))
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) if matches!(e.as_service_error(), Some(s) if s.is_no_such_key()) => {
                return Err(StoreError::PackNotFound(name.to_string()));
            }
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 416) => {
                return Err(super::short_pack(name, 0, offset, len));
            }
            Err(e) => return Err(remote("get", &key, e)),
        };
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| StoreError::Remote {
                op: "get",
                key: key.clone(),
                message: format!("reading the body: {}", tidemark_core::text::error_chain(&e)),
                transient: true,
            })?
            .into_bytes();
        if bytes.len() != len as usize {
            // S3 answers a range that runs past the end with what there is.
            return Err(super::short_pack(
                name,
                offset + bytes.len() as u64,
                offset,
                len,
            ));
        }
        Ok(bytes.to_vec())
    }

    async fn list_packs(&self) -> Result<Vec<super::PackInfo>, StoreError> {
        Ok(self
            .list_names("packs/")
            .await?
            .into_iter()
            .map(|(name, size, modified)| super::PackInfo {
                name,
                size,
                modified,
            })
            .collect())
    }

    async fn delete_pack(&self, name: &str) -> Result<(), StoreError> {
        self.delete_key(&self.pack_key(name)).await
    }

    async fn put_record(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        // Created only if absent: a record is never replaced (Object Lock friendly).
        match self
            .create(&self.record_key(name)?, Bytes::copy_from_slice(bytes))
            .await?
        {
            true => Ok(()),
            false => Err(StoreError::RecordExists(name.to_string())),
        }
    }

    async fn get_record(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        self.get_whole(&self.record_key(name)?)
            .await?
            .ok_or_else(|| StoreError::RecordNotFound(name.to_string()))
    }

    async fn list_records(&self, under: &str) -> Result<Vec<String>, StoreError> {
        if !under.is_empty() {
            super::check_record_name(under.trim_end_matches('/'))?;
        }
        let keys = self.list_keys(&format!("meta/{under}")).await?;
        Ok(keys
            .into_iter()
            .map(|(k, _, _)| format!("{under}{k}"))
            .collect())
    }

    async fn delete_record(&self, name: &str) -> Result<(), StoreError> {
        self.delete_key(&self.record_key(name)?).await
    }

    async fn identity(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_whole(&self.identity_key()).await
    }

    async fn initialize(&self, identity: &[u8]) -> Result<(), StoreError> {
        // Objects need no layout; the identity is created only if absent, so a second
        // controller initialising at the same moment cannot replace it.
        match self
            .create(&self.identity_key(), Bytes::copy_from_slice(identity))
            .await?
        {
            true => Ok(()),
            false => Err(StoreError::IdentityExists),
        }
    }

    async fn holds_data(&self) -> Result<bool, StoreError> {
        Ok(self.any_under("packs/").await? || self.any_under("chunks/").await?)
    }

    fn requests(&self) -> Vec<(&'static str, u64)> {
        KINDS
            .iter()
            .zip(&self.counts.0)
            .map(|(k, n)| (*k, n.load(Ordering::Relaxed)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder as ConnBuilder;
    use s3s::auth::SimpleAuth;
    use s3s::service::S3ServiceBuilder;

    /// A real S3-compatible server (s3s-fs) on loopback with bucket "chunks"; returns its
    /// endpoint.
    async fn server(root: &Path) -> String {
        std::fs::create_dir_all(root.join("chunks")).unwrap();
        let fs = s3s_fs::FileSystem::new(root).unwrap();
        let mut b = S3ServiceBuilder::new(fs);
        b.set_auth(SimpleAuth::from_single("tidemark", "secret-key-for-tests"));
        let service = b.build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            while let Ok((socket, _)) = listener.accept().await {
                let conn = http
                    .serve_connection(TokioIo::new(socket), service.clone())
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        format!("http://{addr}")
    }

    fn settings(endpoint: &str, secret: &str) -> S3Settings {
        S3Settings {
            bucket: "chunks".into(),
            prefix: "fleet1".into(),
            endpoint: endpoint.into(),
            region: "us-east-1".into(),
            path_style: true,
            access_key: "tidemark".into(),
            secret_key: secret.into(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = server(dir.path()).await;
        let store = S3Store::new(&settings(&endpoint, "secret-key-for-tests"));
        store.check().await.unwrap();
        super::super::conformance::run(Arc::new(super::super::retry::Retrying::new(
            store.clone(),
            super::super::retry::Policy::default(),
        )))
        .await;
        // Every request is counted (the conformance run makes each kind at least once).
        let counts: std::collections::HashMap<_, _> = store.requests().into_iter().collect();
        for k in KINDS {
            assert!(counts[k] > 0, "{k}: {counts:?}");
        }
        // The layout: PREFIX/chunks/ab/abcd... objects, quarantined ones aside.
        assert!(dir.path().join("chunks/fleet1/chunks").is_dir());
        assert!(dir.path().join("chunks/fleet1/quarantine").is_dir());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_chunk_costs_one_request_and_a_damaged_object_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = server(dir.path()).await;
        let store = S3Store::new(&settings(&endpoint, "secret-key-for-tests"));
        let id = ChunkId::of(b"one");
        assert!(store.put(&id, b"good bytes").await.unwrap());
        let counts: std::collections::HashMap<_, _> = store.requests().into_iter().collect();
        assert_eq!((counts["put"], counts["head"]), (1, 0));
        // Truncated on the server: the next verified upload replaces it.
        let hex = id.to_hex();
        let file = dir
            .path()
            .join(format!("chunks/fleet1/chunks/{}/{hex}", &hex[..2]));
        std::fs::write(&file, b"good").unwrap();
        assert!(store.put(&id, b"good bytes").await.unwrap());
        assert_eq!(store.get(&id).await.unwrap(), b"good bytes");
        assert!(!store.put(&id, b"good bytes").await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wrong_credentials_are_a_permanent_error_that_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = server(dir.path()).await;
        let e = S3Store::new(&settings(&endpoint, "wrong"))
            .check()
            .await
            .unwrap_err();
        assert!(!e.is_transient(), "{e}");
        assert!(e.to_string().contains("403"), "{e}");
        let nowhere = S3Store::new(&settings("http://127.0.0.1:1", "x"));
        let e = nowhere.check().await.unwrap_err();
        assert!(e.is_transient(), "{e}");
    }

    #[test]
    fn credentials_come_from_an_aws_credentials_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("credentials");
        std::fs::write(
            &f,
            "[default]\naws_access_key_id = AK1\naws_secret_access_key = SK1\n\n[profile backup]\naws_access_key_id=AK2\naws_secret_access_key=SK2\n",
        )
        .unwrap();
        assert_eq!(
            credentials_from_file(&f, "default").unwrap(),
            ("AK1".into(), "SK1".into())
        );
        assert_eq!(
            credentials_from_file(&f, "backup").unwrap(),
            ("AK2".into(), "SK2".into())
        );
        let e = credentials_from_file(&f, "other").unwrap_err();
        assert!(e.contains("no [other] section"), "{e}");
    }
}
