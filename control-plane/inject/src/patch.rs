//! RFC 6902 JSON Patch operations, as the injector writes them: `add`, `replace` and
//! `remove` with RFC 6901 pointers. Applying them is left to the API server (webhook) or
//! a JSON Patch library (`tandemctl`), so that what is tested is the patch a cluster gets.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Operation {
    /// Adds `value` at `path` (into an object, or before an array index, or `-` to append).
    Add {
        /// An RFC 6901 pointer.
        path: String,
        /// The value.
        value: Value,
    },
    /// Replaces the value at `path`, which must exist.
    Replace {
        /// An RFC 6901 pointer.
        path: String,
        /// The value.
        value: Value,
    },
    /// Removes the value at `path`, which must exist.
    Remove {
        /// An RFC 6901 pointer.
        path: String,
    },
}

/// `parent` + `/` + `token` with the token escaped (`~` → `~0`, `/` → `~1`), so that an
/// annotation key such as `tandem.dev/injected` stays one token.
pub fn pointer(parent: &str, token: &str) -> String {
    format!("{parent}/{}", token.replace('~', "~0").replace('/', "~1"))
}

/// The operations as the JSON array a webhook returns (base64-encoded by the caller).
pub fn to_json(ops: &[Operation]) -> Value {
    serde_json::to_value(ops).unwrap_or(Value::Array(Vec::new()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    #[test]
    fn operations_serialize_as_rfc_6902() {
        let ops = vec![
            Operation::Add {
                path: pointer("/metadata/annotations", "tandem.dev/injected"),
                value: json!("x"),
            },
            Operation::Remove {
                path: pointer("/a", "b~c"),
            },
        ];
        assert_eq!(
            to_json(&ops),
            json!([
                {"op": "add", "path": "/metadata/annotations/tandem.dev~1injected", "value": "x"},
                {"op": "remove", "path": "/a/b~0c"}
            ])
        );
    }
}
