//! The configured access keys and what each may do: a small, IAM-shaped policy per
//! key (`allow`: action patterns such as `kinesis:PutRecord*`; `resources`: stream-name
//! patterns), checked before any work is done.
//!
//! Patterns have one wildcard, `*` (any run of characters). Actions are matched without
//! regard to case, as IAM does; stream names exactly. An empty `allow` allows every
//! action, an empty `resources` every stream. Pure: no I/O; secrets never appear in
//! `Debug` output.

use std::collections::HashMap;

use super::sigv4::{Secret, SecretLookup};

/// One configured key.
#[derive(Clone)]
pub struct AccessKey {
    pub access_key_id: String,
    secret_access_key: String,
    pub allow: Vec<String>,
    pub resources: Vec<String>,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("allow", &self.allow)
            .field("resources", &self.resources)
            .finish()
    }
}

impl AccessKey {
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        allow: Vec<String>,
        resources: Vec<String>,
    ) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            allow,
            resources,
        }
    }

    /// Whether this key may do `action` (`kinesis:PutRecord`) on `stream` (`None`:
    /// the request names no stream, such as ListStreams).
    pub fn permits(&self, action: &str, stream: Option<&str>) -> bool {
        let action_ok = self.allow.is_empty()
            || self
                .allow
                .iter()
                .any(|p| glob(&p.to_ascii_lowercase(), &action.to_ascii_lowercase()));
        let resource_ok = match stream {
            None => true,
            Some(name) => self.resources.is_empty() || self.resources.iter().any(|p| glob(p, name)),
        };
        action_ok && resource_ok
    }

    /// The secret itself, for Digest authentication (which hashes it).
    pub(super) fn secret(&self) -> &str {
        &self.secret_access_key
    }

    /// Whether `secret` is this key's secret (constant time).
    pub fn secret_matches(&self, secret: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.secret_access_key
            .as_bytes()
            .ct_eq(secret.as_bytes())
            .into()
    }
}

/// The keys by access key id.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: HashMap<String, AccessKey>,
}

impl Keyring {
    /// Fails on an empty id or secret, or an id given twice.
    pub fn new(keys: Vec<AccessKey>) -> Result<Self, String> {
        let mut map = HashMap::new();
        for k in keys {
            if k.access_key_id.is_empty() || k.secret_access_key.is_empty() {
                return Err("every auth key needs an access_key_id and a secret_access_key".into());
            }
            let id = k.access_key_id.clone();
            if map.insert(id.clone(), k).is_some() {
                return Err(format!("auth key {id} is configured twice"));
            }
        }
        Ok(Self { keys: map })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn get(&self, access_key_id: &str) -> Option<&AccessKey> {
        self.keys.get(access_key_id)
    }
}

impl SecretLookup for Keyring {
    fn secret_for(&self, access_key_id: &str) -> Option<Secret> {
        self.keys
            .get(access_key_id)
            .map(|k| Secret::new(k.secret_access_key.clone()))
    }
}

/// `*` matches any run of characters (also none); everything else itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn globs() {
        assert!(glob("kinesis:*", "kinesis:PutRecord"));
        assert!(glob("kinesis:Put*", "kinesis:PutRecords"));
        assert!(glob("*", ""));
        assert!(glob("cam-*-hd", "cam-porch-hd"));
        assert!(glob("a*b*c", "abc"));
        assert!(!glob("a*b*c", "acb"));
        assert!(!glob("orders*", "order"));
        assert!(!glob("cam-*-hd", "cam-hd"));
        assert!(glob("exact", "exact") && !glob("exact", "exact2"));
    }

    proptest! {
        #[test]
        fn a_star_pattern_matches_what_it_was_cut_from(text in "[a-z:]{0,12}", cut in 0usize..13, len in 0usize..13) {
            let start = cut.min(text.len());
            let end = (start + len).min(text.len());
            let pattern = format!("{}*{}", &text[..start], &text[end..]);
            prop_assert!(glob(&pattern, &text));
        }
    }

    #[test]
    fn policies() {
        let k = AccessKey::new(
            "AKID",
            "s3cret",
            vec![
                "kinesis:PutRecord*".into(),
                "kinesis:Describe*".into(),
                "kinesisvideo:*".into(),
            ],
            vec!["orders*".into(), "cam-*".into()],
        );
        assert!(k.permits("kinesis:PutRecord", Some("orders-eu")));
        assert!(k.permits("Kinesis:putrecords", Some("orders")));
        assert!(k.permits("kinesis:DescribeStreamSummary", Some("orders")));
        assert!(k.permits("kinesisvideo:PutMedia", Some("cam-porch")));
        assert!(!k.permits("kinesis:ListStreams", None));
        assert!(!k.permits("kinesis:DeleteStream", Some("orders")));
        assert!(!k.permits("kinesis:PutRecord", Some("payments")));
        let admin = AccessKey::new("ADMIN", "x", vec![], vec![]);
        assert!(admin.permits("kinesis:DeleteStream", Some("anything")));
        assert!(k.secret_matches("s3cret") && !k.secret_matches("s3cre") && !k.secret_matches(""));
        assert!(!format!("{k:?}").contains("s3cret"));
    }

    #[test]
    fn keyrings_refuse_duplicates_and_empty_secrets() {
        assert!(Keyring::new(vec![AccessKey::new("A", "", vec![], vec![])]).is_err());
        assert!(
            Keyring::new(vec![
                AccessKey::new("A", "x", vec![], vec![]),
                AccessKey::new("A", "y", vec![], vec![])
            ])
            .is_err()
        );
        let ring = Keyring::new(vec![AccessKey::new("A", "x", vec![], vec![])]).unwrap();
        assert!(ring.secret_for("A").is_some() && ring.secret_for("B").is_none());
    }
}
