//! Where batches go: the [`Destination`] trait, and its embedded default, a local
//! directory that stands in for S3 (`<data-dir>/buckets/<bucket>/<key>`).
//!
//! A destination writes one whole object under one key, or fails; writing the same key
//! again replaces the object with the same bytes (the worker names batches
//! deterministically, so a retry or a re-upload after a crash is idempotent). The local
//! directory writes atomically and durably, in the order a crash cannot undo: a
//! temporary file outside the bucket, fsync, rename into place, fsync of the directory
//! (and of every directory it had to create), so a reader never sees a partial object.
//! Retries (capped exponential backoff with jitter) are the worker's job.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use bytes::Bytes;

/// Why an object could not be written. Retried by the worker; never lost silently.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DestinationError(pub String);

pub type PutFuture<'a> = Pin<Box<dyn Future<Output = Result<(), DestinationError>> + Send + 'a>>;

/// An object store the worker delivers batches to.
pub trait Destination: Send + Sync + 'static {
    /// Writes `body` as the object `key` of `bucket`, replacing any object of that key.
    fn put_object<'a>(&'a self, bucket: &'a str, key: &'a str, body: Bytes) -> PutFuture<'a>;

    /// What `/metrics` calls this destination (the `destination` label): `file` for the
    /// local directory, `s3` for S3.
    fn kind(&self) -> &'static str;
}

/// S3 buckets as directories: `<root>/<bucket>/<key>`.
#[derive(Debug)]
pub struct LocalDirectory {
    root: PathBuf,
    /// Temporary files, on the same file system, outside every bucket.
    staging: PathBuf,
}

impl LocalDirectory {
    /// Buckets under `data_dir/buckets`; staging in `data_dir/delivery-staging`
    /// (emptied here: what is left there is from writes a crash interrupted).
    pub fn open(data_dir: &Path) -> std::io::Result<LocalDirectory> {
        let root = data_dir.join("buckets");
        let staging = data_dir.join("delivery-staging");
        std::fs::create_dir_all(&root)?;
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging)?;
        Ok(LocalDirectory { root, staging })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, bucket: &str, key: &str) -> Result<PathBuf, DestinationError> {
        if !valid_bucket(bucket) {
            return Err(DestinationError(format!("invalid bucket name {bucket:?}")));
        }
        let mut path = self.root.join(bucket);
        for part in key.split('/') {
            if part.is_empty() || part == "." || part == ".." {
                return Err(DestinationError(format!(
                    "the key {key:?} cannot be stored as a file (empty, '.' or '..' segment)"
                )));
            }
            path.push(part);
        }
        Ok(path)
    }

    fn write(&self, bucket: &str, key: &str, body: &[u8]) -> Result<(), DestinationError> {
        let io = |what: &str, e: std::io::Error| DestinationError(format!("{what}: {e}"));
        let path = self.path_of(bucket, key)?;
        let dir = path
            .parent()
            .ok_or_else(|| DestinationError("object path has no directory".into()))?;
        // Create missing directories one by one, remembering which to fsync.
        let mut created = Vec::new();
        let mut probe = dir.to_path_buf();
        while !probe.is_dir() {
            created.push(probe.clone());
            if !probe.pop() {
                break;
            }
        }
        std::fs::create_dir_all(dir).map_err(|e| io("create directory", e))?;
        let tmp = self.staging.join(uuid::Uuid::new_v4().simple().to_string());
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(|e| io("create staging file", e))?;
            f.write_all(body).map_err(|e| io("write staging file", e))?;
            f.sync_all().map_err(|e| io("fsync staging file", e))?;
        }
        if let Err(e) = std::fs::rename(&tmp, &path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(io("rename into place", e));
        }
        sync_dir(dir).map_err(|e| io("fsync directory", e))?;
        for made in created {
            if let Some(parent) = made.parent() {
                sync_dir(parent).map_err(|e| io("fsync directory", e))?;
            }
        }
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// S3's bucket naming rules (3 to 63 lowercase letters, digits, dots and hyphens,
/// starting and ending with a letter or digit).
pub fn valid_bucket(name: &str) -> bool {
    let bytes = name.as_bytes();
    (3..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-'))
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && !name.contains("..")
}

impl Destination for LocalDirectory {
    fn put_object<'a>(&'a self, bucket: &'a str, key: &'a str, body: Bytes) -> PutFuture<'a> {
        Box::pin(async move {
            let root = self.root.clone();
            let staging = self.staging.clone();
            let (bucket, key) = (bucket.to_string(), key.to_string());
            tokio::task::spawn_blocking(move || {
                LocalDirectory { root, staging }.write(&bucket, &key, &body)
            })
            .await
            .map_err(|e| DestinationError(format!("writer task failed: {e}")))?
        })
    }

    fn kind(&self) -> &'static str {
        "file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn objects_land_whole_under_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let dest = LocalDirectory::open(dir.path()).unwrap();
        dest.put_object("my-bucket", "a/b/c.gz", Bytes::from_static(b"one"))
            .await
            .unwrap();
        dest.put_object("my-bucket", "a/b/c.gz", Bytes::from_static(b"two"))
            .await
            .unwrap();
        let path = dir.path().join("buckets/my-bucket/a/b/c.gz");
        assert_eq!(std::fs::read(path).unwrap(), b"two");
        assert_eq!(
            std::fs::read_dir(dir.path().join("delivery-staging"))
                .unwrap()
                .count(),
            0
        );
        for (bucket, key) in [
            ("my-bucket", "../x"),
            ("my-bucket", "a//b"),
            ("Bad_Bucket", "k"),
        ] {
            assert!(
                dest.put_object(bucket, key, Bytes::new()).await.is_err(),
                "{bucket} {key}"
            );
        }
    }
}
