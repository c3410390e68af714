//! The lease store: the part of DynamoDB (DynamoDB API reference, 2012-08-10) that the
//! Kinesis Client Library uses for its lease and coordinator tables, on Freshet's
//! catalog. It is a lease store for Kinesis clients, not a general DynamoDB
//! (docs/leases.md says what is and is not there).
//!
//! - Tables live in the catalog (namespace `dynamodb-tables`, one JSON record each);
//!   the items of a table in their own namespace (`dynamodb-items/<table>`), one JSON
//!   document of AttributeValues per item, keyed by the canonical form of the hash (and
//!   range) key. Tables are CREATING, then ACTIVE after `--state-delay-ms`.
//! - Every write to a table happens under the table's lock: the condition is checked
//!   and the item written in one catalog commit (fsynced), so conditional writes are
//!   atomic and reads (always from the catalog) are strongly consistent.
//! - [`expr`]: expressions and the legacy parameters; [`attr`]: values and numbers.
//!
//! Requests and responses are the DynamoDB JSON documents (the data model of this
//! API); nothing here knows about HTTP. Calls block on the catalog: run them off the
//! async runtime.

pub mod attr;
pub mod error;
pub mod expr;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use error::{LeaseError, Result};

use attr::{Attr, Item, item_from_json, item_size, item_to_json};
use expr::{Cond, Kind, Placeholders, Update};

use crate::store::catalog::{Catalog, CatalogWrite};

const TABLES: &str = "dynamodb-tables";
/// DynamoDB's item size limit.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;
/// The most tables (DynamoDB's default quota per region is 2,500; leases need few).
pub const TABLE_LIMIT: usize = 256;
/// The most items in one BatchWriteItem / BatchGetItem / TransactWriteItems.
const BATCH_WRITE_LIMIT: usize = 25;
const BATCH_GET_LIMIT: usize = 100;
const TRANSACT_LIMIT: usize = 100;
/// The most bytes one Scan or Query page returns (DynamoDB: 1 MB).
const PAGE_BYTES: usize = 1024 * 1024;

fn items_namespace(table: &str) -> String {
    format!("dynamodb-items/{table}")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn invalid(m: impl Into<String>) -> LeaseError {
    LeaseError::Validation(m.into())
}

/// A key attribute of a table or index.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct KeyDef {
    name: String,
    /// `S`, `N` or `B`.
    ty: String,
}

/// A global secondary index: kept so DescribeTable shows it and Query can use it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Index {
    name: String,
    hash: KeyDef,
    range: Option<KeyDef>,
    /// The `Projection` as given (only `ALL` is honoured: queries return whole items).
    projection: Value,
    throughput: Value,
    /// When it was added: it is CREATING until `--state-delay-ms` after this.
    created_ms: u64,
}

/// A table's record in the catalog.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Table {
    name: String,
    id: String,
    hash: KeyDef,
    range: Option<KeyDef>,
    attribute_definitions: Value,
    billing_mode: String,
    throughput: Value,
    indexes: Vec<Index>,
    created_ms: u64,
    /// The last UpdateTable: UPDATING until `--state-delay-ms` after it.
    updated_ms: u64,
    /// Tags and point-in-time recovery are accepted and kept, not acted on.
    #[serde(default)]
    pitr: bool,
}

impl Table {
    fn key_defs(&self, index: Option<&Index>) -> (KeyDef, Option<KeyDef>) {
        match index {
            Some(i) => (i.hash.clone(), i.range.clone()),
            None => (self.hash.clone(), self.range.clone()),
        }
    }

    /// The key attributes of `item` (table key).
    fn key_of(&self, item: &Item) -> Item {
        let mut k = Item::new();
        for def in std::iter::once(&self.hash).chain(self.range.as_ref()) {
            if let Some(v) = item.get(&def.name) {
                k.insert(def.name.clone(), v.clone());
            }
        }
        k
    }

    /// The catalog key of an item with key attributes `key` (already checked).
    fn storage_key(&self, key: &Item) -> String {
        let h = key
            .get(&self.hash.name)
            .map(Attr::key_text)
            .unwrap_or_default();
        match &self.range {
            None => h,
            Some(r) => {
                let r = key.get(&r.name).map(Attr::key_text).unwrap_or_default();
                serde_json::to_string(&[h, r]).unwrap_or_default()
            }
        }
    }

    /// Checks a `Key` parameter: exactly the key attributes, of the right types.
    fn check_key(&self, key: &Item) -> Result<()> {
        let defs: Vec<&KeyDef> = std::iter::once(&self.hash)
            .chain(self.range.as_ref())
            .collect();
        if key.len() != defs.len() {
            return Err(invalid(
                "The provided key element does not match the schema",
            ));
        }
        for d in defs {
            match key.get(&d.name) {
                Some(v) if v.type_name() == d.ty => check_key_value(&d.name, v)?,
                _ => {
                    return Err(invalid(
                        "The provided key element does not match the schema",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks an item to be written: key attributes present and typed, size capped.
    fn check_item(&self, item: &Item) -> Result<()> {
        for d in std::iter::once(&self.hash).chain(self.range.as_ref()) {
            match item.get(&d.name) {
                None => {
                    return Err(invalid(format!(
                        "One or more parameter values were invalid: Missing the key {} in the item",
                        d.name
                    )));
                }
                Some(v) if v.type_name() != d.ty => {
                    return Err(invalid(format!(
                        "One or more parameter values were invalid: Type mismatch for key {} expected: {} actual: {}",
                        d.name,
                        d.ty,
                        v.type_name()
                    )));
                }
                Some(v) => check_key_value(&d.name, v)?,
            }
        }
        for i in &self.indexes {
            for d in std::iter::once(&i.hash).chain(i.range.as_ref()) {
                if let Some(v) = item.get(&d.name)
                    && v.type_name() != d.ty
                {
                    return Err(invalid(format!(
                        "One or more parameter values were invalid: Type mismatch for Index Key {} Expected: {} Actual: {} IndexName: {}",
                        d.name,
                        d.ty,
                        v.type_name(),
                        i.name
                    )));
                }
            }
        }
        if item_size(item) > MAX_ITEM_BYTES {
            return Err(invalid("Item size has exceeded the maximum allowed size"));
        }
        Ok(())
    }
}

fn check_key_value(name: &str, v: &Attr) -> Result<()> {
    if matches!(v, Attr::S(s) | Attr::B(s) if s.is_empty()) {
        return Err(invalid(format!(
            "One or more parameter values are not valid. The AttributeValue for a key attribute cannot contain an empty string value. Key: {name}"
        )));
    }
    Ok(())
}

/// Settings of the lease store.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub account_id: String,
    pub region: String,
    /// How long CREATING / UPDATING last before a table is ACTIVE (tests: 0).
    pub state_delay_ms: u64,
}

/// The lease store's service.
pub struct LeaseService {
    config: LeaseConfig,
    catalog: Arc<dyn Catalog>,
    /// One lock per table: every write holds it from reading the old item to the
    /// commit, so a condition and its write are atomic.
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

fn text<'a>(doc: &'a Value, key: &str) -> &'a str {
    doc[key].as_str().unwrap_or("")
}

fn item_param(doc: &Value, key: &str) -> Result<Item> {
    item_from_json(&doc[key]).map_err(invalid)
}

/// One write of a TransactWriteItems or BatchWriteItem, prepared.
struct PreparedWrite {
    table: Table,
    key: Item,
    cond: Option<Cond>,
    action: WriteAction,
}

enum WriteAction {
    Put(Item),
    Delete,
    Update(Update),
    Check,
}

impl LeaseService {
    pub fn new(config: LeaseConfig, catalog: Arc<dyn Catalog>) -> Arc<Self> {
        Arc::new(Self {
            config,
            catalog,
            locks: Mutex::new(HashMap::new()),
        })
    }

    fn lock_of(&self, table: &str) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(table.to_string()).or_default().clone()
    }

    fn arn(&self, table: &str) -> String {
        format!(
            "arn:aws:dynamodb:{}:{}:table/{table}",
            self.config.region, self.config.account_id
        )
    }

    fn load(&self, name: &str) -> Result<Option<Table>> {
        let Some(bytes) = self.catalog.get(TABLES, name)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| LeaseError::Internal(format!("table record {name}: {e}")))
    }

    /// A table that takes item requests (ACTIVE or UPDATING).
    fn active(&self, name: &str) -> Result<Table> {
        check_table_name(name)?;
        match self.load(name)? {
            Some(t) if self.status(&t) != "CREATING" => Ok(t),
            _ => Err(LeaseError::ResourceNotFound(
                "Requested resource not found".into(),
            )),
        }
    }

    fn status(&self, t: &Table) -> &'static str {
        let now = now_ms();
        let delay = self.config.state_delay_ms;
        if now < t.created_ms + delay {
            "CREATING"
        } else if now < t.updated_ms + delay {
            "UPDATING"
        } else {
            "ACTIVE"
        }
    }

    fn items(&self, t: &Table) -> Result<Vec<(String, Item)>> {
        let mut out = Vec::new();
        for (k, v) in self.catalog.list(&items_namespace(&t.name))? {
            let doc: Value = serde_json::from_slice(&v)
                .map_err(|e| LeaseError::Internal(format!("item {k}: {e}")))?;
            let item = item_from_json(&doc).map_err(LeaseError::Internal)?;
            out.push((k, item));
        }
        Ok(out)
    }

    fn get_stored(&self, t: &Table, key: &Item) -> Result<Option<Item>> {
        let Some(v) = self
            .catalog
            .get(&items_namespace(&t.name), &t.storage_key(key))?
        else {
            return Ok(None);
        };
        let doc: Value =
            serde_json::from_slice(&v).map_err(|e| LeaseError::Internal(e.to_string()))?;
        item_from_json(&doc).map(Some).map_err(LeaseError::Internal)
    }

    fn describe(&self, t: &Table) -> Result<Value> {
        let items = self.items(t)?;
        let size: usize = items.iter().map(|(_, i)| item_size(i)).sum();
        Ok(self.description(t, self.status(t), items.len(), size))
    }

    fn description(&self, t: &Table, status: &str, count: usize, size: usize) -> Value {
        let key_schema = |h: &KeyDef, r: &Option<KeyDef>| {
            let mut ks = vec![json!({"AttributeName": h.name, "KeyType": "HASH"})];
            if let Some(r) = r {
                ks.push(json!({"AttributeName": r.name, "KeyType": "RANGE"}));
            }
            ks
        };
        let throughput = |p: &Value| {
            json!({
                "NumberOfDecreasesToday": 0,
                "ReadCapacityUnits": p["ReadCapacityUnits"].as_u64().unwrap_or(0),
                "WriteCapacityUnits": p["WriteCapacityUnits"].as_u64().unwrap_or(0),
            })
        };
        let mut d = json!({
            "TableName": t.name,
            "TableId": t.id,
            "TableArn": self.arn(&t.name),
            "TableStatus": status,
            "KeySchema": key_schema(&t.hash, &t.range),
            "AttributeDefinitions": t.attribute_definitions,
            "CreationDateTime": t.created_ms as f64 / 1000.0,
            "ProvisionedThroughput": throughput(&t.throughput),
            "TableSizeBytes": size,
            "ItemCount": count,
            "BillingModeSummary": {
                "BillingMode": t.billing_mode,
                "LastUpdateToPayPerRequestDateTime": t.created_ms as f64 / 1000.0,
            },
            "DeletionProtectionEnabled": false,
        });
        if !t.indexes.is_empty() {
            let now = now_ms();
            d["GlobalSecondaryIndexes"] = t
                .indexes
                .iter()
                .map(|i| {
                    json!({
                        "IndexName": i.name,
                        "KeySchema": key_schema(&i.hash, &i.range),
                        "Projection": i.projection,
                        "IndexStatus": if now < i.created_ms + self.config.state_delay_ms { "CREATING" } else { "ACTIVE" },
                        "ProvisionedThroughput": throughput(&i.throughput),
                        "IndexSizeBytes": size,
                        "ItemCount": count,
                        "IndexArn": format!("{}/index/{}", self.arn(&t.name), i.name),
                    })
                })
                .collect::<Vec<_>>()
                .into();
        }
        d
    }

    /// Runs one operation of the DynamoDB API on its request document.
    pub fn call(&self, op: &str, doc: &Value) -> Result<Value> {
        match op {
            "CreateTable" => self.create_table(doc),
            "DescribeTable" => {
                let name = text(doc, "TableName");
                check_table_name(name)?;
                let t = self.load(name)?.ok_or_else(|| {
                    LeaseError::ResourceNotFound(format!(
                        "Requested resource not found: Table: {name} not found"
                    ))
                })?;
                Ok(json!({ "Table": self.describe(&t)? }))
            }
            "DeleteTable" => self.delete_table(doc),
            "UpdateTable" => self.update_table(doc),
            "ListTables" => self.list_tables(doc),
            "UpdateContinuousBackups" => {
                let t = self.active(text(doc, "TableName"))?;
                let on = doc["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"]
                    .as_bool()
                    .unwrap_or(false);
                let lock = self.lock_of(&t.name);
                let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
                let mut t = self.active(&t.name)?;
                t.pitr = on;
                self.save_table(&t)?;
                Ok(json!({"ContinuousBackupsDescription": continuous_backups(on)}))
            }
            "DescribeContinuousBackups" => {
                let t = self.active(text(doc, "TableName"))?;
                Ok(json!({"ContinuousBackupsDescription": continuous_backups(t.pitr)}))
            }
            "DescribeTimeToLive" => {
                self.active(text(doc, "TableName"))?;
                Ok(json!({"TimeToLiveDescription": {"TimeToLiveStatus": "DISABLED"}}))
            }
            "TagResource" | "UntagResource" => Ok(json!({})),
            "ListTagsOfResource" => Ok(json!({"Tags": []})),
            "GetItem" => self.get_item(doc),
            "PutItem" => self.put_item(doc),
            "UpdateItem" => self.update_item(doc),
            "DeleteItem" => self.delete_item(doc),
            "Scan" => self.scan(doc, false),
            "Query" => self.scan(doc, true),
            "BatchGetItem" => self.batch_get(doc),
            "BatchWriteItem" => self.batch_write(doc),
            "TransactWriteItems" => self.transact_write(doc),
            "TransactGetItems" => self.transact_get(doc),
            other => Err(invalid(format!(
                "{other} is not supported by Freshet's lease store (docs/leases.md)."
            ))),
        }
    }

    fn save_table(&self, t: &Table) -> Result<()> {
        let bytes = serde_json::to_vec(t).map_err(|e| LeaseError::Internal(e.to_string()))?;
        self.catalog.put(TABLES, &t.name, bytes)?;
        Ok(())
    }

    fn create_table(&self, doc: &Value) -> Result<Value> {
        let name = text(doc, "TableName");
        check_table_name(name)?;
        let defs = attribute_types(&doc["AttributeDefinitions"])?;
        let (hash, range) = key_schema(&doc["KeySchema"], &defs)?;
        let billing = doc["BillingMode"]
            .as_str()
            .unwrap_or("PROVISIONED")
            .to_string();
        let throughput = doc["ProvisionedThroughput"].clone();
        check_billing(&billing, &throughput)?;
        let now = now_ms();
        let mut indexes = Vec::new();
        for g in doc["GlobalSecondaryIndexes"]
            .as_array()
            .into_iter()
            .flatten()
        {
            indexes.push(index_of(g, &defs, &billing, now)?);
        }
        let lock = self.lock_of(name);
        let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
        if self.load(name)?.is_some() {
            return Err(LeaseError::ResourceInUse(format!(
                "Table already exists: {name}"
            )));
        }
        if self.catalog.list(TABLES)?.len() >= TABLE_LIMIT {
            return Err(LeaseError::LimitExceeded(format!(
                "Subscriber limit exceeded: the most tables is {TABLE_LIMIT}"
            )));
        }
        let t = Table {
            name: name.to_string(),
            id: uuid::Uuid::new_v4().to_string(),
            hash,
            range,
            attribute_definitions: doc["AttributeDefinitions"].clone(),
            billing_mode: billing,
            throughput,
            indexes,
            created_ms: now,
            updated_ms: 0,
            pitr: false,
        };
        self.save_table(&t)?;
        Ok(json!({ "TableDescription": self.description(&t, self.status(&t), 0, 0) }))
    }

    fn delete_table(&self, doc: &Value) -> Result<Value> {
        let name = text(doc, "TableName");
        check_table_name(name)?;
        let lock = self.lock_of(name);
        let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
        let t = self.load(name)?.ok_or_else(|| {
            LeaseError::ResourceNotFound(format!(
                "Requested resource not found: Table: {name} not found"
            ))
        })?;
        let ns = items_namespace(name);
        let mut writes: Vec<CatalogWrite> = self
            .catalog
            .list(&ns)?
            .into_iter()
            .map(|(key, _)| CatalogWrite::Delete {
                namespace: ns.clone(),
                key,
            })
            .collect();
        writes.push(CatalogWrite::Delete {
            namespace: TABLES.into(),
            key: name.into(),
        });
        self.catalog.write(writes)?;
        Ok(json!({ "TableDescription": self.description(&t, "DELETING", 0, 0) }))
    }

    fn update_table(&self, doc: &Value) -> Result<Value> {
        let name = text(doc, "TableName");
        let lock = self.lock_of(name);
        let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut t = self.active(name)?;
        if self.status(&t) != "ACTIVE" {
            return Err(LeaseError::ResourceInUse(format!(
                "Attempt to change a resource which is still in use: Table is being updated: {name}"
            )));
        }
        if let Some(defs) = doc["AttributeDefinitions"].as_array() {
            let mut merged: Vec<Value> = t
                .attribute_definitions
                .as_array()
                .cloned()
                .unwrap_or_default();
            for d in defs {
                if !merged
                    .iter()
                    .any(|m| m["AttributeName"] == d["AttributeName"])
                {
                    merged.push(d.clone());
                }
            }
            t.attribute_definitions = Value::Array(merged);
        }
        if let Some(b) = doc["BillingMode"].as_str() {
            t.billing_mode = b.to_string();
        }
        if !doc["ProvisionedThroughput"].is_null() {
            t.throughput = doc["ProvisionedThroughput"].clone();
        }
        check_billing(&t.billing_mode, &t.throughput)?;
        let defs = attribute_types(&t.attribute_definitions)?;
        let now = now_ms();
        for u in doc["GlobalSecondaryIndexUpdates"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if !u["Create"].is_null() {
                let i = index_of(&u["Create"], &defs, &t.billing_mode, now)?;
                if t.indexes.iter().any(|x| x.name == i.name) {
                    return Err(invalid(format!(
                        "One or more parameter values were invalid: Index with name {} already exists",
                        i.name
                    )));
                }
                t.indexes.push(i);
            } else if !u["Delete"].is_null() {
                let n = text(&u["Delete"], "IndexName");
                let before = t.indexes.len();
                t.indexes.retain(|i| i.name != n);
                if t.indexes.len() == before {
                    return Err(LeaseError::ResourceNotFound(format!(
                        "Requested resource not found: Index: {n} not found"
                    )));
                }
            } else if !u["Update"].is_null() {
                let n = text(&u["Update"], "IndexName");
                let Some(i) = t.indexes.iter_mut().find(|i| i.name == n) else {
                    return Err(LeaseError::ResourceNotFound(format!(
                        "Requested resource not found: Index: {n} not found"
                    )));
                };
                i.throughput = u["Update"]["ProvisionedThroughput"].clone();
            }
        }
        t.updated_ms = now;
        self.save_table(&t)?;
        Ok(json!({ "TableDescription": self.describe(&t)? }))
    }

    fn list_tables(&self, doc: &Value) -> Result<Value> {
        let limit = doc["Limit"].as_u64().unwrap_or(100);
        if !(1..=100).contains(&limit) {
            return Err(invalid(format!(
                "1 validation error detected: Value '{limit}' at 'limit' failed to satisfy constraint: Member must have value less than or equal to 100"
            )));
        }
        let start = doc["ExclusiveStartTableName"].as_str();
        let names: Vec<String> = self
            .catalog
            .list(TABLES)?
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| start.is_none_or(|s| k.as_str() > s))
            .collect();
        let page: Vec<&String> = names.iter().take(limit as usize).collect();
        let mut out = json!({ "TableNames": page });
        if names.len() > limit as usize
            && let Some(last) = page.last()
        {
            out["LastEvaluatedTableName"] = json!(last);
        }
        Ok(out)
    }

    fn get_item(&self, doc: &Value) -> Result<Value> {
        let t = self.active(text(doc, "TableName"))?;
        let mut ph = Placeholders::from_request(doc).map_err(invalid)?;
        let projection = projection(doc, &mut ph)?;
        ph.check_all_used().map_err(invalid)?;
        let key = item_param(doc, "Key")?;
        t.check_key(&key)?;
        Ok(match self.get_stored(&t, &key)? {
            Some(item) => {
                let item = match &projection {
                    Some(p) => expr::project(&item, p),
                    None => item,
                };
                json!({ "Item": item_to_json(&item) })
            }
            None => json!({}),
        })
    }

    /// Checks `cond` against `old` and writes what `action` makes of it, under the
    /// table's lock, in one catalog commit. Returns (old, new).
    fn write_item(
        &self,
        t: &Table,
        key: &Item,
        cond: Option<&Cond>,
        action: &WriteAction,
    ) -> Result<(Option<Item>, Option<Item>)> {
        let lock = self.lock_of(&t.name);
        let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
        // The table may have gone while waiting for the lock.
        let t = self.active(&t.name)?;
        let old = self.get_stored(&t, key)?;
        if let Some(c) = cond
            && !expr::eval(c, old.as_ref().unwrap_or(&Item::new()))
        {
            return Err(LeaseError::ConditionalCheckFailed);
        }
        let new = self.next_item(&t, key, old.as_ref(), action)?;
        self.catalog
            .write(vec![self.catalog_write(&t, key, new.as_ref())?])?;
        Ok((old, new))
    }

    fn next_item(
        &self,
        t: &Table,
        key: &Item,
        old: Option<&Item>,
        action: &WriteAction,
    ) -> Result<Option<Item>> {
        Ok(match action {
            WriteAction::Put(item) => Some(item.clone()),
            WriteAction::Delete => None,
            WriteAction::Check => old.cloned(),
            WriteAction::Update(u) => {
                let base = old.cloned().unwrap_or_else(|| key.clone());
                let new = expr::apply(u, &base).map_err(invalid)?;
                if t.key_of(&new) != *key {
                    let name = u
                        .touched()
                        .into_iter()
                        .find(|n| *n == t.hash.name || Some(n) == t.range.as_ref().map(|r| &r.name))
                        .unwrap_or_default();
                    return Err(invalid(format!(
                        "One or more parameter values were invalid: Cannot update attribute {name}. This attribute is part of the key"
                    )));
                }
                t.check_item(&new)?;
                Some(new)
            }
        })
    }

    fn catalog_write(&self, t: &Table, key: &Item, new: Option<&Item>) -> Result<CatalogWrite> {
        let namespace = items_namespace(&t.name);
        let key = t.storage_key(key);
        Ok(match new {
            Some(item) => CatalogWrite::Put {
                namespace,
                key,
                value: serde_json::to_vec(&item_to_json(item))
                    .map_err(|e| LeaseError::Internal(e.to_string()))?,
            },
            None => CatalogWrite::Delete { namespace, key },
        })
    }

    fn put_item(&self, doc: &Value) -> Result<Value> {
        let t = self.active(text(doc, "TableName"))?;
        let mut ph = Placeholders::from_request(doc).map_err(invalid)?;
        let cond = condition(doc, &mut ph)?;
        ph.check_all_used().map_err(invalid)?;
        let rv = return_values(doc, &["NONE", "ALL_OLD"])?;
        let item = item_param(doc, "Item")?;
        t.check_item(&item)?;
        let key = t.key_of(&item);
        let (old, _) = self.write_item(&t, &key, cond.as_ref(), &WriteAction::Put(item))?;
        Ok(match (rv, old) {
            ("ALL_OLD", Some(old)) => json!({ "Attributes": item_to_json(&old) }),
            _ => json!({}),
        })
    }

    fn delete_item(&self, doc: &Value) -> Result<Value> {
        let t = self.active(text(doc, "TableName"))?;
        let mut ph = Placeholders::from_request(doc).map_err(invalid)?;
        let cond = condition(doc, &mut ph)?;
        ph.check_all_used().map_err(invalid)?;
        let rv = return_values(doc, &["NONE", "ALL_OLD"])?;
        let key = item_param(doc, "Key")?;
        t.check_key(&key)?;
        let (old, _) = self.write_item(&t, &key, cond.as_ref(), &WriteAction::Delete)?;
        Ok(match (rv, old) {
            ("ALL_OLD", Some(old)) => json!({ "Attributes": item_to_json(&old) }),
            _ => json!({}),
        })
    }

    fn update_item(&self, doc: &Value) -> Result<Value> {
        let t = self.active(text(doc, "TableName"))?;
        let mut ph = Placeholders::from_request(doc).map_err(invalid)?;
        let update = update_param(doc, &mut ph)?;
        let cond = condition(doc, &mut ph)?;
        ph.check_all_used().map_err(invalid)?;
        let rv = return_values(
            doc,
            &["NONE", "ALL_OLD", "ALL_NEW", "UPDATED_OLD", "UPDATED_NEW"],
        )?;
        let key = item_param(doc, "Key")?;
        t.check_key(&key)?;
        for name in update.touched() {
            if name == t.hash.name || t.range.as_ref().is_some_and(|r| r.name == name) {
                return Err(invalid(format!(
                    "One or more parameter values were invalid: Cannot update attribute {name}. This attribute is part of the key"
                )));
            }
        }
        let touched = update.touched();
        let (old, new) = self.write_item(&t, &key, cond.as_ref(), &WriteAction::Update(update))?;
        let only = |item: Option<Item>| -> Option<Item> {
            item.map(|i| {
                i.into_iter()
                    .filter(|(k, _)| touched.contains(k))
                    .collect::<Item>()
            })
        };
        let attrs = match rv {
            "ALL_OLD" => old,
            "ALL_NEW" => new,
            "UPDATED_OLD" => only(old),
            "UPDATED_NEW" => only(new),
            _ => None,
        };
        Ok(match attrs {
            Some(a) if !a.is_empty() => json!({ "Attributes": item_to_json(&a) }),
            _ => json!({}),
        })
    }

    fn scan(&self, doc: &Value, query: bool) -> Result<Value> {
        let t = self.active(text(doc, "TableName"))?;
        let index =
            match doc["IndexName"].as_str() {
                Some(n) => Some(t.indexes.iter().find(|i| i.name == n).cloned().ok_or_else(
                    || invalid(format!("The table does not have the specified index: {n}")),
                )?),
                None => None,
            };
        let mut ph = Placeholders::from_request(doc).map_err(invalid)?;
        let (hash, range) = t.key_defs(index.as_ref());
        let key_cond = if query {
            let c = match doc["KeyConditionExpression"].as_str() {
                Some(src) => expr::parse_condition(src, Kind::KeyCondition, &mut ph)
                    .map_err(invalid)?,
                None => expr::legacy_filter(&doc["KeyConditions"], None)
                    .map_err(invalid)?
                    .ok_or_else(|| {
                        invalid("Either the KeyConditions or KeyConditionExpression parameter must be specified in the request.")
                    })?,
            };
            check_key_condition(&c, &hash.name)?;
            Some(c)
        } else {
            None
        };
        let filter = match doc["FilterExpression"].as_str() {
            Some(src) => Some(expr::parse_condition(src, Kind::Filter, &mut ph).map_err(invalid)?),
            None => expr::legacy_filter(
                if query {
                    &doc["QueryFilter"]
                } else {
                    &doc["ScanFilter"]
                },
                doc["ConditionalOperator"].as_str(),
            )
            .map_err(invalid)?,
        };
        let projection = projection(doc, &mut ph)?;
        ph.check_all_used().map_err(invalid)?;
        let limit = match doc["Limit"].as_u64() {
            Some(0) => {
                return Err(invalid(
                    "1 validation error detected: Value '0' at 'limit' failed to satisfy constraint: Member must have value greater than or equal to 1",
                ));
            }
            Some(n) => n as usize,
            None => usize::MAX,
        };
        let count_only = doc["Select"].as_str() == Some("COUNT");
        let mut all = self.items(&t)?;
        if let Some(i) = &index {
            all.retain(|(_, item)| {
                item.contains_key(&i.hash.name)
                    && i.range.as_ref().is_none_or(|r| item.contains_key(&r.name))
            });
        }
        if let Some(c) = &key_cond {
            all.retain(|(_, item)| expr::eval(c, item));
        }
        if query || index.is_some() {
            // Items in the order of the (index's) range key, then the table key.
            all.sort_by(|(ka, a), (kb, b)| {
                let r = range.as_ref().and_then(|r| {
                    a.get(&r.name)
                        .zip(b.get(&r.name))
                        .and_then(|(x, y)| x.compare(y))
                });
                r.unwrap_or(std::cmp::Ordering::Equal)
                    .then_with(|| ka.cmp(kb))
            });
            if query && doc["ScanIndexForward"].as_bool() == Some(false) {
                all.reverse();
            }
        }
        let mut start = 0;
        if doc["ExclusiveStartKey"].is_object() {
            let esk = item_param(doc, "ExclusiveStartKey")?;
            let esk_key = t.key_of(&esk);
            if esk_key.len() != 1 + usize::from(t.range.is_some()) {
                return Err(invalid(
                    "The provided starting key is invalid: The provided key element does not match the schema",
                ));
            }
            let sk = t.storage_key(&esk_key);
            start = all
                .iter()
                .position(|(k, _)| *k == sk)
                .map(|p| p + 1)
                .unwrap_or_else(|| {
                    // The start item is gone: resume after where it would be.
                    all.iter()
                        .position(|(k, _)| k.as_str() > sk.as_str())
                        .unwrap_or(all.len())
                });
        }
        let mut items = Vec::new();
        let mut scanned = 0;
        let mut bytes = 0;
        let mut last: Option<&Item> = None;
        for (_, item) in all.iter().skip(start) {
            if scanned >= limit || bytes >= PAGE_BYTES {
                break;
            }
            scanned += 1;
            bytes += item_size(item);
            last = Some(item);
            if filter.as_ref().is_none_or(|f| expr::eval(f, item)) {
                items.push(match &projection {
                    Some(p) => expr::project(item, p),
                    None => item.clone(),
                });
            }
        }
        let mut out = json!({ "Count": items.len(), "ScannedCount": scanned });
        if !count_only {
            out["Items"] = items.iter().map(item_to_json).collect::<Vec<_>>().into();
        }
        if start + scanned < all.len()
            && let Some(last) = last
        {
            let mut lek = t.key_of(last);
            if let Some(i) = &index {
                for d in std::iter::once(&i.hash).chain(i.range.as_ref()) {
                    if let Some(v) = last.get(&d.name) {
                        lek.insert(d.name.clone(), v.clone());
                    }
                }
            }
            out["LastEvaluatedKey"] = item_to_json(&lek);
        }
        Ok(out)
    }

    fn batch_get(&self, doc: &Value) -> Result<Value> {
        let Some(req) = doc["RequestItems"].as_object() else {
            return Err(invalid(
                "1 validation error detected: Value null at 'requestItems' failed to satisfy constraint: Member must not be null",
            ));
        };
        let total: usize = req
            .values()
            .map(|r| r["Keys"].as_array().map_or(0, Vec::len))
            .sum();
        if total > BATCH_GET_LIMIT {
            return Err(invalid(
                "Too many items requested for the BatchGetItem call",
            ));
        }
        let mut responses = serde_json::Map::new();
        for (name, r) in req {
            let t = self.active(name)?;
            let mut ph = Placeholders::from_request(r).map_err(invalid)?;
            let projection = projection(r, &mut ph)?;
            ph.check_all_used().map_err(invalid)?;
            let mut found = Vec::new();
            for k in r["Keys"].as_array().into_iter().flatten() {
                let key = item_from_json(k).map_err(invalid)?;
                t.check_key(&key)?;
                if let Some(item) = self.get_stored(&t, &key)? {
                    found.push(item_to_json(&match &projection {
                        Some(p) => expr::project(&item, p),
                        None => item,
                    }));
                }
            }
            responses.insert(name.clone(), found.into());
        }
        Ok(json!({ "Responses": responses, "UnprocessedKeys": {} }))
    }

    fn batch_write(&self, doc: &Value) -> Result<Value> {
        let Some(req) = doc["RequestItems"].as_object() else {
            return Err(invalid(
                "1 validation error detected: Value null at 'requestItems' failed to satisfy constraint: Member must not be null",
            ));
        };
        let total: usize = req.values().map(|r| r.as_array().map_or(0, Vec::len)).sum();
        if total == 0 || total > BATCH_WRITE_LIMIT {
            return Err(invalid(format!(
                "1 validation error detected: Value at 'requestItems' failed to satisfy constraint: Map value must satisfy constraint: [Member must have length less than or equal to {BATCH_WRITE_LIMIT}, Member must have length greater than or equal to 1]"
            )));
        }
        let mut prepared = Vec::new();
        for (name, list) in req {
            let t = self.active(name)?;
            for w in list.as_array().into_iter().flatten() {
                if w["PutRequest"].is_object() {
                    let item = item_param(&w["PutRequest"], "Item")?;
                    t.check_item(&item)?;
                    prepared.push(PreparedWrite {
                        key: t.key_of(&item),
                        table: t.clone(),
                        cond: None,
                        action: WriteAction::Put(item),
                    });
                } else if w["DeleteRequest"].is_object() {
                    let key = item_param(&w["DeleteRequest"], "Key")?;
                    t.check_key(&key)?;
                    prepared.push(PreparedWrite {
                        key,
                        table: t.clone(),
                        cond: None,
                        action: WriteAction::Delete,
                    });
                } else {
                    return Err(invalid(
                        "Supplied AttributeValue has more than one datatypes set, must contain exactly one of the supported datatypes",
                    ));
                }
            }
        }
        self.commit_all(prepared, "Provided list of item keys contains duplicates")?;
        Ok(json!({ "UnprocessedItems": {} }))
    }

    fn transact_write(&self, doc: &Value) -> Result<Value> {
        let list = doc["TransactItems"].as_array().cloned().unwrap_or_default();
        if list.is_empty() || list.len() > TRANSACT_LIMIT {
            return Err(invalid(format!(
                "1 validation error detected: Value at 'transactItems' failed to satisfy constraint: Member must have length less than or equal to {TRANSACT_LIMIT}, Member must have length greater than or equal to 1"
            )));
        }
        let mut prepared = Vec::new();
        for entry in &list {
            let (kind, body) = ["ConditionCheck", "Put", "Delete", "Update"]
                .iter()
                .find_map(|k| entry.get(*k).filter(|v| v.is_object()).map(|v| (*k, v)))
                .ok_or_else(|| {
                    invalid("TransactItems can only contain one of Check, Put, Update or Delete")
                })?;
            let t = self.active(text(body, "TableName"))?;
            let mut ph = Placeholders::from_request(body).map_err(invalid)?;
            let (key, action) = match kind {
                "Put" => {
                    let item = item_param(body, "Item")?;
                    t.check_item(&item)?;
                    (t.key_of(&item), WriteAction::Put(item))
                }
                "Update" => {
                    let key = item_param(body, "Key")?;
                    t.check_key(&key)?;
                    (key, WriteAction::Update(update_param(body, &mut ph)?))
                }
                "Delete" => {
                    let key = item_param(body, "Key")?;
                    t.check_key(&key)?;
                    (key, WriteAction::Delete)
                }
                _ => {
                    let key = item_param(body, "Key")?;
                    t.check_key(&key)?;
                    (key, WriteAction::Check)
                }
            };
            let cond = condition(body, &mut ph)?;
            if kind == "ConditionCheck" && cond.is_none() {
                return Err(invalid("The expression can not be empty;"));
            }
            ph.check_all_used().map_err(invalid)?;
            prepared.push(PreparedWrite {
                table: t,
                key,
                cond,
                action,
            });
        }
        self.commit_all(
            prepared,
            "Transaction request cannot include multiple operations on one item",
        )?;
        Ok(json!({}))
    }

    /// TransactGetItems: the items of up to 100 `Get`s as of one moment (no write to
    /// any table involved can come between two of the reads), in request order; `{}`
    /// for an item that does not exist.
    fn transact_get(&self, doc: &Value) -> Result<Value> {
        let list = doc["TransactItems"].as_array().cloned().unwrap_or_default();
        if list.is_empty() || list.len() > TRANSACT_LIMIT {
            return Err(invalid(format!(
                "1 validation error detected: Value at 'transactItems' failed to satisfy constraint: Member must have length less than or equal to {TRANSACT_LIMIT}, Member must have length greater than or equal to 1"
            )));
        }
        let mut gets = Vec::with_capacity(list.len());
        let mut seen = std::collections::BTreeSet::new();
        for entry in &list {
            let Some(body) = entry.get("Get").filter(|v| v.is_object()) else {
                return Err(invalid("TransactItems can only contain Get operations"));
            };
            let t = self.active(text(body, "TableName"))?;
            let mut ph = Placeholders::from_request(body).map_err(invalid)?;
            let projection = projection(body, &mut ph)?;
            ph.check_all_used().map_err(invalid)?;
            let key = item_param(body, "Key")?;
            t.check_key(&key)?;
            if !seen.insert((t.name.clone(), t.storage_key(&key))) {
                return Err(invalid(
                    "Transaction request cannot include multiple operations on one item",
                ));
            }
            gets.push((t, key, projection));
        }
        let names: std::collections::BTreeSet<String> =
            gets.iter().map(|(t, _, _)| t.name.clone()).collect();
        self.with_tables_locked(&names, || {
            let mut responses = Vec::with_capacity(gets.len());
            for (t, key, projection) in &gets {
                // The table may have gone while waiting for the locks.
                let t = self.active(&t.name)?;
                responses.push(match self.get_stored(&t, key)? {
                    Some(item) => {
                        let item = match projection {
                            Some(p) => expr::project(&item, p),
                            None => item,
                        };
                        json!({ "Item": item_to_json(&item) })
                    }
                    None => json!({}),
                });
            }
            Ok(json!({ "Responses": responses }))
        })
    }

    /// Runs `f` holding the locks of tables `names` (taken in name order, so two such
    /// calls never deadlock): no write to them comes in between.
    fn with_tables_locked<R>(
        &self,
        names: &std::collections::BTreeSet<String>,
        f: impl FnOnce() -> Result<R>,
    ) -> Result<R> {
        let locks: Vec<Arc<Mutex<()>>> = names.iter().map(|n| self.lock_of(n)).collect();
        let _guards: Vec<_> = locks
            .iter()
            .map(|l| l.lock().unwrap_or_else(|e| e.into_inner()))
            .collect();
        f()
    }

    /// Checks every condition and applies every write in one catalog commit, holding
    /// the locks of all tables involved (taken in name order, so never deadlocking).
    fn commit_all(&self, prepared: Vec<PreparedWrite>, duplicate: &str) -> Result<()> {
        let mut seen = std::collections::BTreeSet::new();
        for p in &prepared {
            if !seen.insert((p.table.name.clone(), p.table.storage_key(&p.key))) {
                return Err(invalid(duplicate));
            }
        }
        let names: std::collections::BTreeSet<String> =
            prepared.iter().map(|p| p.table.name.clone()).collect();
        self.with_tables_locked(&names, || {
            let mut tables: BTreeMap<String, Table> = BTreeMap::new();
            for n in &names {
                tables.insert(n.clone(), self.active(n)?);
            }
            let mut reasons = Vec::new();
            let mut writes = Vec::new();
            let mut failed = false;
            for p in &prepared {
                let t = &tables[&p.table.name];
                let old = self.get_stored(t, &p.key)?;
                if let Some(c) = &p.cond
                    && !expr::eval(c, old.as_ref().unwrap_or(&Item::new()))
                {
                    reasons.push(Some("ConditionalCheckFailed".to_string()));
                    failed = true;
                    continue;
                }
                reasons.push(None);
                if matches!(p.action, WriteAction::Check) {
                    continue;
                }
                let new = self.next_item(t, &p.key, old.as_ref(), &p.action)?;
                writes.push(self.catalog_write(t, &p.key, new.as_ref())?);
            }
            if failed {
                return Err(LeaseError::TransactionCanceled(reasons));
            }
            self.catalog.write(writes)?;
            Ok(())
        })
    }
}

fn continuous_backups(on: bool) -> Value {
    json!({
        "ContinuousBackupsStatus": "ENABLED",
        "PointInTimeRecoveryDescription": {
            "PointInTimeRecoveryStatus": if on { "ENABLED" } else { "DISABLED" }
        }
    })
}

fn check_table_name(name: &str) -> Result<()> {
    if name.len() < 3 || name.len() > 255 {
        return Err(invalid(format!(
            "1 validation error detected: Value '{name}' at 'tableName' failed to satisfy constraint: Member must have length {}",
            if name.len() < 3 {
                "greater than or equal to 3"
            } else {
                "less than or equal to 255"
            }
        )));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(invalid(format!(
            "1 validation error detected: Value '{name}' at 'tableName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+"
        )));
    }
    Ok(())
}

fn check_billing(billing: &str, throughput: &Value) -> Result<()> {
    match billing {
        "PAY_PER_REQUEST" => {
            if !throughput.is_null() {
                return Err(invalid(
                    "One or more parameter values were invalid: Neither ReadCapacityUnits nor WriteCapacityUnits can be specified when BillingMode is PAY_PER_REQUEST",
                ));
            }
        }
        "PROVISIONED" => {
            if throughput["ReadCapacityUnits"].as_u64().is_none()
                || throughput["WriteCapacityUnits"].as_u64().is_none()
            {
                return Err(invalid(
                    "One or more parameter values were invalid: ReadCapacityUnits and WriteCapacityUnits must both be specified when BillingMode is PROVISIONED",
                ));
            }
        }
        other => {
            return Err(invalid(format!(
                "1 validation error detected: Value '{other}' at 'billingMode' failed to satisfy constraint: Member must satisfy enum value set: [PROVISIONED, PAY_PER_REQUEST]"
            )));
        }
    }
    Ok(())
}

fn attribute_types(defs: &Value) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for d in defs.as_array().into_iter().flatten() {
        let ty = text(d, "AttributeType");
        if !matches!(ty, "S" | "N" | "B") {
            return Err(invalid(format!(
                "1 validation error detected: Value '{ty}' at 'attributeDefinitions.member.attributeType' failed to satisfy constraint: Member must satisfy enum value set: [B, N, S]"
            )));
        }
        out.insert(text(d, "AttributeName").to_string(), ty.to_string());
    }
    Ok(out)
}

fn key_schema(schema: &Value, defs: &HashMap<String, String>) -> Result<(KeyDef, Option<KeyDef>)> {
    let list = schema.as_array().cloned().unwrap_or_default();
    let def = |e: &Value| -> Result<KeyDef> {
        let name = text(e, "AttributeName");
        let ty = defs.get(name).ok_or_else(|| {
            let mut names: Vec<&String> = defs.keys().collect();
            names.sort();
            invalid(format!(
                "One or more parameter values were invalid: Some index key attributes are not defined in AttributeDefinitions. Keys: [{name}], AttributeDefinitions: [{}]",
                names.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ))
        })?;
        Ok(KeyDef {
            name: name.to_string(),
            ty: ty.clone(),
        })
    };
    match list.as_slice() {
        [h] if text(h, "KeyType") == "HASH" => Ok((def(h)?, None)),
        [h, r] if text(h, "KeyType") == "HASH" && text(r, "KeyType") == "RANGE" => {
            Ok((def(h)?, Some(def(r)?)))
        }
        [] => Err(invalid(
            "1 validation error detected: Value null at 'keySchema' failed to satisfy constraint: Member must not be null",
        )),
        _ => Err(invalid(
            "Invalid KeySchema: The first KeySchemaElement is not a HASH key type",
        )),
    }
}

fn index_of(g: &Value, defs: &HashMap<String, String>, billing: &str, now: u64) -> Result<Index> {
    let (hash, range) = key_schema(&g["KeySchema"], defs)?;
    let throughput = g["ProvisionedThroughput"].clone();
    if billing == "PROVISIONED" && throughput.is_null() {
        return Err(invalid(format!(
            "One or more parameter values were invalid: ProvisionedThroughput must be specified for index: {}",
            text(g, "IndexName")
        )));
    }
    Ok(Index {
        name: text(g, "IndexName").to_string(),
        hash,
        range,
        projection: g["Projection"].clone(),
        throughput,
        created_ms: now,
    })
}

/// A Query's key condition must test the hash key for equality.
fn check_key_condition(c: &Cond, hash: &str) -> Result<()> {
    fn has_hash_eq(c: &Cond, hash: &str) -> bool {
        match c {
            Cond::Cmp(expr::Operand::Path(p), expr::CmpOp::Eq, expr::Operand::Value(_))
            | Cond::Cmp(expr::Operand::Value(_), expr::CmpOp::Eq, expr::Operand::Path(p)) => {
                p.0.len() == 1 && p.root() == hash
            }
            Cond::And(a, b) => has_hash_eq(a, hash) || has_hash_eq(b, hash),
            _ => false,
        }
    }
    if matches!(c, Cond::Or(..) | Cond::Not(..)) {
        return Err(invalid(
            "Invalid operator used in KeyConditionExpression: OR",
        ));
    }
    if !has_hash_eq(c, hash) {
        return Err(invalid(format!(
            "Query condition missed key schema element: {hash}"
        )));
    }
    Ok(())
}

fn return_values<'a>(doc: &'a Value, allowed: &[&str]) -> Result<&'a str> {
    let rv = doc["ReturnValues"].as_str().unwrap_or("NONE");
    if !allowed.contains(&rv) {
        return Err(invalid("Return values set to invalid value"));
    }
    Ok(rv)
}

fn both(non_expr: &str, expr: &str) -> LeaseError {
    invalid(format!(
        "Can not use both expression and non-expression parameters in the same request: Non-expression parameters: {{{non_expr}}} Expression parameters: {{{expr}}}"
    ))
}

fn condition(doc: &Value, ph: &mut Placeholders) -> Result<Option<Cond>> {
    match (
        doc["ConditionExpression"].as_str(),
        doc["Expected"].is_object(),
    ) {
        (Some(_), true) => Err(both("Expected", "ConditionExpression")),
        (Some(src), false) => Ok(Some(
            expr::parse_condition(src, Kind::Condition, ph).map_err(invalid)?,
        )),
        (None, _) => expr::legacy_expected(doc).map_err(invalid),
    }
}

fn update_param(doc: &Value, ph: &mut Placeholders) -> Result<Update> {
    match (
        doc["UpdateExpression"].as_str(),
        doc["AttributeUpdates"].is_object(),
    ) {
        (Some(_), true) => Err(both("AttributeUpdates", "UpdateExpression")),
        (Some(src), false) => expr::parse_update(src, ph).map_err(invalid),
        (None, _) => expr::legacy_updates(&doc["AttributeUpdates"]).map_err(invalid),
    }
}

fn projection(doc: &Value, ph: &mut Placeholders) -> Result<Option<Vec<expr::Path>>> {
    match (
        doc["ProjectionExpression"].as_str(),
        doc["AttributesToGet"].as_array(),
    ) {
        (Some(_), Some(_)) => Err(both("AttributesToGet", "ProjectionExpression")),
        (Some(src), None) => Ok(Some(expr::parse_projection(src, ph).map_err(invalid)?)),
        (None, Some(names)) => Ok(Some(
            names
                .iter()
                .filter_map(Value::as_str)
                .map(expr::Path::top)
                .collect(),
        )),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests;
