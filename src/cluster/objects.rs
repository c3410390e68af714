//! The cluster's object store: immutable objects under unique keys, written once by a
//! shard's owner and read by any node. Two implementations: S3 or any S3-compatible
//! server (`s3://bucket/prefix`, through the delivery workers' `aws-sdk-s3` client and
//! the standard AWS environment variables), and a directory every node can reach
//! (`file:///path`: a shared file system, or one machine's disk for a cluster on one
//! host). Objects are written whole: a reader never sees a partial one.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

/// A boxed future of an object-store call.
pub type ObjectFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// Where objects live.
pub trait ObjectStore: Send + Sync + 'static {
    /// Stores `body` under `key` durably before answering.
    fn put(&self, key: String, body: Bytes) -> ObjectFuture<'_, ()>;
    /// The whole object.
    fn get(&self, key: String) -> ObjectFuture<'_, Bytes>;
    /// Deletes the object (a missing one is not an error).
    fn delete(&self, key: String) -> ObjectFuture<'_, ()>;
    /// One page (up to 1,000) of the objects whose keys start with `prefix` and come
    /// after `after`, in key order: (key, last modified, Unix ms).
    fn list(&self, prefix: String, after: Option<String>) -> ObjectFuture<'_, Vec<(String, i64)>>;
    /// `s3://bucket/prefix/` or `file:///path/`, for messages.
    fn describe(&self) -> String;
}

/// Opens the store named by `url` (`s3://bucket[/prefix]` or `file:///path`);
/// `region` is the default region when no AWS variable names one.
pub fn open(url: &str, region: &str) -> Result<Arc<dyn ObjectStore>, String> {
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(format!(
                "--object-store {url}: a file:// URL needs an absolute path"
            ));
        }
        let root = PathBuf::from(path);
        std::fs::create_dir_all(&root)
            .map_err(|e| format!("--object-store {url}: cannot create {path}: {e}"))?;
        return Ok(Arc::new(DirStore { root }));
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = match rest.split_once('/') {
            Some((b, p)) => (b, p.trim_matches('/')),
            None => (rest, ""),
        };
        if bucket.is_empty() {
            return Err(format!("--object-store {url}: no bucket named"));
        }
        return s3_store(bucket, prefix, region);
    }
    Err(format!(
        "--object-store {url}: expected s3://bucket/prefix or file:///path"
    ))
}

#[cfg(feature = "s3")]
fn s3_store(bucket: &str, prefix: &str, region: &str) -> Result<Arc<dyn ObjectStore>, String> {
    let settings = crate::delivery::s3::S3Settings::from_env(|k| std::env::var(k).ok(), region)
        .map_err(|e| e.replace("--delivery-s3 s3", "--object-store s3://..."))?;
    Ok(Arc::new(S3Store {
        client: crate::delivery::s3::S3::new(&settings),
        bucket: bucket.to_string(),
        prefix: if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        },
    }))
}

#[cfg(not(feature = "s3"))]
fn s3_store(_: &str, _: &str, _: &str) -> Result<Arc<dyn ObjectStore>, String> {
    Err("--object-store s3://... needs a freshet built with the `s3` feature".into())
}

/// Objects in S3 (or an S3-compatible server).
#[cfg(feature = "s3")]
struct S3Store {
    client: crate::delivery::s3::S3,
    bucket: String,
    /// Empty, or ends with `/`.
    prefix: String,
}

#[cfg(feature = "s3")]
impl ObjectStore for S3Store {
    fn put(&self, key: String, body: Bytes) -> ObjectFuture<'_, ()> {
        Box::pin(async move {
            let key = format!("{}{key}", self.prefix);
            self.client
                .put(&self.bucket, &key, body)
                .await
                .map_err(|e| e.0)
        })
    }

    fn get(&self, key: String) -> ObjectFuture<'_, Bytes> {
        Box::pin(async move {
            let key = format!("{}{key}", self.prefix);
            self.client.get(&self.bucket, &key).await.map_err(|e| e.0)
        })
    }

    fn delete(&self, key: String) -> ObjectFuture<'_, ()> {
        Box::pin(async move {
            let key = format!("{}{key}", self.prefix);
            self.client
                .delete(&self.bucket, &key)
                .await
                .map_err(|e| e.0)
        })
    }

    fn list(&self, prefix: String, after: Option<String>) -> ObjectFuture<'_, Vec<(String, i64)>> {
        Box::pin(async move {
            let full = format!("{}{prefix}", self.prefix);
            let after = after.map(|a| format!("{}{a}", self.prefix));
            let page = self
                .client
                .list(&self.bucket, &full, after.as_deref())
                .await
                .map_err(|e| e.0)?;
            Ok(page
                .into_iter()
                .filter_map(|(k, t)| Some((k.strip_prefix(&self.prefix)?.to_string(), t)))
                .collect())
        })
    }

    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }
}

/// Objects as files under a directory: written to a temporary name, fsynced, renamed
/// into place, and the directory fsynced, so an object is whole or absent.
struct DirStore {
    root: PathBuf,
}

impl DirStore {
    fn path(&self, key: &str) -> Result<PathBuf, String> {
        if key
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err(format!("invalid object key {key:?}"));
        }
        Ok(self.root.join(key))
    }
}

fn put_file(path: PathBuf, body: Bytes) -> Result<(), String> {
    use std::io::Write;
    let dir = path.parent().ok_or("object key without a directory")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| format!("{}: {e}", path.display()))
}

/// Every file under `root` whose key starts with `prefix` and sorts after `after`: the
/// first 1,000 in key order (temporary files of unfinished writes included: they are
/// objects no index names).
fn list_files(
    root: &std::path::Path,
    prefix: &str,
    after: Option<&str>,
) -> Result<Vec<(String, i64)>, String> {
    fn walk(dir: &std::path::Path, key: &str, out: &mut Vec<(String, i64)>) -> Result<(), String> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        };
        for entry in entries {
            let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let child = if key.is_empty() {
                name
            } else {
                format!("{key}/{name}")
            };
            let meta = entry.metadata().map_err(|e| format!("{child}: {e}"))?;
            if meta.is_dir() {
                walk(&entry.path(), &child, out)?;
            } else {
                let modified = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_millis() as i64);
                out.push((child, modified));
            }
        }
        Ok(())
    }
    // Walk from the prefix's directory part; filter on the whole prefix.
    let dir_part = prefix.rsplit_once('/').map_or("", |(d, _)| d);
    let start = if dir_part.is_empty() {
        root.to_path_buf()
    } else {
        root.join(dir_part)
    };
    let mut out = Vec::new();
    walk(&start, dir_part, &mut out)?;
    out.retain(|(k, _)| k.starts_with(prefix) && after.is_none_or(|a| k.as_str() > a));
    out.sort();
    out.truncate(1000);
    Ok(out)
}

impl ObjectStore for DirStore {
    fn put(&self, key: String, body: Bytes) -> ObjectFuture<'_, ()> {
        Box::pin(async move {
            let path = self.path(&key)?;
            tokio::task::spawn_blocking(move || put_file(path, body))
                .await
                .map_err(|e| e.to_string())?
        })
    }

    fn get(&self, key: String) -> ObjectFuture<'_, Bytes> {
        Box::pin(async move {
            let path = self.path(&key)?;
            tokio::fs::read(&path)
                .await
                .map(Bytes::from)
                .map_err(|e| format!("{}: {e}", path.display()))
        })
    }

    fn delete(&self, key: String) -> ObjectFuture<'_, ()> {
        Box::pin(async move {
            let path = self.path(&key)?;
            match tokio::fs::remove_file(&path).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(format!("{}: {e}", path.display()))
                }
                _ => Ok(()),
            }
        })
    }

    fn list(&self, prefix: String, after: Option<String>) -> ObjectFuture<'_, Vec<(String, i64)>> {
        Box::pin(async move {
            let root = self.root.clone();
            tokio::task::spawn_blocking(move || list_files(&root, &prefix, after.as_deref()))
                .await
                .map_err(|e| e.to_string())?
        })
    }

    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn directory_store_round_trip_and_refuses_escaping_keys() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let store = open(&url, "us-east-1").unwrap();
        store
            .put("a/b/one.rec".into(), Bytes::from_static(b"hello"))
            .await
            .unwrap();
        assert_eq!(store.get("a/b/one.rec".into()).await.unwrap(), "hello");
        store.delete("a/b/one.rec".into()).await.unwrap();
        assert!(store.get("a/b/one.rec".into()).await.is_err());
        // Listing: keys in order, by prefix, after a key, with their times.
        for k in ["p/b.rec", "p/a.rec", "p/sub/c.rec", "q/d.rec"] {
            store.put(k.into(), Bytes::from_static(b"x")).await.unwrap();
        }
        let keys = |page: Vec<(String, i64)>| page.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(
            keys(store.list("p/".into(), None).await.unwrap()),
            ["p/a.rec", "p/b.rec", "p/sub/c.rec"]
        );
        assert_eq!(
            keys(
                store
                    .list("p/".into(), Some("p/a.rec".into()))
                    .await
                    .unwrap()
            ),
            ["p/b.rec", "p/sub/c.rec"]
        );
        assert_eq!(
            keys(store.list("p/s".into(), None).await.unwrap()),
            ["p/sub/c.rec"]
        );
        assert!(store.list("none/".into(), None).await.unwrap().is_empty());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let listed = store.list("q/".into(), None).await.unwrap();
        assert!((now - listed[0].1).abs() < 60_000, "{listed:?}");
        // Deleting again is fine; keys cannot leave the root.
        store.delete("a/b/one.rec".into()).await.unwrap();
        assert!(store.put("../x".into(), Bytes::new()).await.is_err());
        assert!(open("file://relative", "r").is_err());
        assert!(open("ftp://x", "r").is_err());
        assert!(open("s3:///prefix", "r").is_err());
    }
}
