//! The expression indexes declared in `nimbus.toml`: validated, named by what
//! they index and the sort-key version, and built (an index of an older
//! version is dropped).

use sha2::Digest;

use super::path::CollectionPath;
use crate::store::documents::IndexScope;
use crate::store::Store;

/// The version of the sort-key expressions that declared indexes are built on.
const SORT_KEYS_VERSION: &str = "|keys-v2";

/// Creates the expression indexes declared in configuration (idempotent).
pub async fn ensure_indexes(store: &Store, indexes: &[crate::config::IndexSetting]) -> Result<(), String> {
    for (i, index) in indexes.iter().enumerate() {
        let context = format!("nimbus.toml: indexes[{i}]");
        let (target, scope) = match (&index.collection, &index.collection_group) {
            (Some(collection), None) => {
                let pattern = collection.trim_matches('/');
                CollectionPath::parse(&pattern.replace('*', "x"))
                    .map_err(|e| format!("{context}.collection: {}", e.0))?;
                // A pattern (`rooms/*/messages`) spans many collections: index them all.
                let scope =
                    if pattern.contains('*') { IndexScope::Everything } else { IndexScope::Collection(pattern) };
                (pattern.to_owned(), scope)
            }
            (None, Some(group)) => {
                let valid = CollectionPath::parse(group).is_ok_and(|p| !p.as_str().contains('/'));
                if !valid {
                    return Err(format!("{context}.collectionGroup: a collection id, one segment (e.g. \"comments\")"));
                }
                (format!("**/{group}"), IndexScope::Group(group))
            }
            _ => return Err(format!("{context}: give either `collection` or `collectionGroup`")),
        };
        if index.fields.is_empty() || index.fields.len() > 8 {
            return Err(format!("{context}.fields: list 1 to 8 fields"));
        }
        let fields = index
            .fields
            .iter()
            .map(|f| {
                crate::store::query::FieldPath::parse(f)
                    .ok_or_else(|| format!("{context}.fields: invalid field path {f:?}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // The identity names the sort-key expressions' version: when they
        // change (timestamps got their own type rank), the index is built
        // again under a new name and the old one is dropped.
        let name_of = |version: &str| {
            let identity = format!("{target}|{}{version}", index.fields.join(","));
            format!("documents_idx_{}", &hex::encode(sha2::Sha256::digest(identity.as_bytes()))[..16])
        };
        let (name, previous) = (name_of(SORT_KEYS_VERSION), name_of(""));
        store.drop_index(&previous).await.map_err(|e| format!("{context}: {e}"))?;
        store.ensure_index(&name, scope, &fields).await.map_err(|e| format!("{context}: {e}"))?;
    }
    Ok(())
}
