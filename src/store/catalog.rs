//! The metadata catalog: small, transactional, crash-safe records (streams and their
//! shards, tags, consumers, resource policies, server secrets).
//!
//! The interface is a namespaced key-value map with atomic multi-key writes, so the
//! embedded implementation ([`RedbCatalog`], a single `catalog.redb` file whose commits
//! are fsynced) can later be swapped for PostgreSQL in scale-out mode. Values are opaque
//! bytes; the domain layers own their encoding. All calls block: use `spawn_blocking`
//! (or accept a short block for rare control-plane calls made at start-up).

use std::path::Path;

use redb::{Database, ReadableDatabase, TableDefinition};

/// Errors from the catalog.
#[derive(Debug, thiserror::Error)]
#[error("catalog error: {0}")]
pub struct CatalogError(String);

fn err(e: impl std::fmt::Display) -> CatalogError {
    CatalogError(e.to_string())
}

/// One change in an atomic batch.
#[derive(Debug, Clone)]
pub enum CatalogWrite {
    Put {
        namespace: String,
        key: String,
        value: Vec<u8>,
    },
    Delete {
        namespace: String,
        key: String,
    },
}

/// Transactional metadata storage.
pub trait Catalog: Send + Sync + 'static {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, CatalogError>;
    /// All entries of a namespace, ordered by key.
    fn list(&self, namespace: &str) -> Result<Vec<(String, Vec<u8>)>, CatalogError>;
    /// Applies all writes atomically and durably.
    fn write(&self, writes: Vec<CatalogWrite>) -> Result<(), CatalogError>;

    fn put(&self, namespace: &str, key: &str, value: Vec<u8>) -> Result<(), CatalogError> {
        self.write(vec![CatalogWrite::Put {
            namespace: namespace.into(),
            key: key.into(),
            value,
        }])
    }

    fn delete(&self, namespace: &str, key: &str) -> Result<(), CatalogError> {
        self.write(vec![CatalogWrite::Delete {
            namespace: namespace.into(),
            key: key.into(),
        }])
    }
}

/// Every namespace lives in one redb table keyed by `namespace \0 key`, so a new
/// namespace needs no schema change.
const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entries");

fn full_key(namespace: &str, key: &str) -> String {
    format!("{namespace}\0{key}")
}

/// The embedded catalog, in one redb file.
pub struct RedbCatalog {
    db: Database,
}

impl RedbCatalog {
    pub fn open(path: &Path) -> Result<Self, CatalogError> {
        let db = Database::create(path).map_err(err)?;
        let txn = db.begin_write().map_err(err)?;
        txn.open_table(ENTRIES).map_err(err)?;
        txn.commit().map_err(err)?;
        Ok(Self { db })
    }
}

impl Catalog for RedbCatalog {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, CatalogError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(ENTRIES).map_err(err)?;
        Ok(table
            .get(full_key(namespace, key).as_str())
            .map_err(err)?
            .map(|v| v.value().to_vec()))
    }

    fn list(&self, namespace: &str) -> Result<Vec<(String, Vec<u8>)>, CatalogError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(ENTRIES).map_err(err)?;
        let start = format!("{namespace}\0");
        let end = format!("{namespace}\u{1}");
        let mut out = Vec::new();
        for item in table.range(start.as_str()..end.as_str()).map_err(err)? {
            let (k, v) = item.map_err(err)?;
            out.push((k.value()[start.len()..].to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn write(&self, writes: Vec<CatalogWrite>) -> Result<(), CatalogError> {
        let txn = self.db.begin_write().map_err(err)?;
        {
            let mut table = txn.open_table(ENTRIES).map_err(err)?;
            for w in writes {
                match w {
                    CatalogWrite::Put {
                        namespace,
                        key,
                        value,
                    } => {
                        table
                            .insert(full_key(&namespace, &key).as_str(), value.as_slice())
                            .map_err(err)?;
                    }
                    CatalogWrite::Delete { namespace, key } => {
                        table
                            .remove(full_key(&namespace, &key).as_str())
                            .map_err(err)?;
                    }
                }
            }
        }
        txn.commit().map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_list_delete_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.redb");
        {
            let c = RedbCatalog::open(&path).unwrap();
            c.put("streams", "b", b"2".to_vec()).unwrap();
            c.put("streams", "a", b"1".to_vec()).unwrap();
            c.put("other", "a", b"x".to_vec()).unwrap();
            c.write(vec![
                CatalogWrite::Put {
                    namespace: "streams".into(),
                    key: "c".into(),
                    value: b"3".to_vec(),
                },
                CatalogWrite::Delete {
                    namespace: "streams".into(),
                    key: "b".into(),
                },
            ])
            .unwrap();
        }
        let c = RedbCatalog::open(&path).unwrap();
        assert_eq!(c.get("streams", "a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(c.get("streams", "b").unwrap(), None);
        let keys: Vec<String> = c
            .list("streams")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec!["a", "c"]);
        assert_eq!(c.list("other").unwrap().len(), 1);
        c.delete("other", "a").unwrap();
        assert!(c.list("other").unwrap().is_empty());
    }
}
