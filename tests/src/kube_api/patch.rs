//! PATCH bodies by content type. JSON Patch (RFC 6902) and JSON Merge Patch (RFC 7386) are
//! exact; a strategic merge patch is read as a merge patch (its list merge keys are not
//! modelled: a list in the patch replaces the stored list), and so is a server-side apply
//! body (field ownership is not tracked: the applied fields are merged, none is removed).

use serde_json::Value;

use super::error::ApiError;

/// The patch types a real API server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`.
    Json,
    /// `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json`, applied as a merge patch.
    StrategicMerge,
    /// `application/apply-patch+yaml` (server-side apply), applied as a merge patch; it
    /// creates a missing object and needs a `fieldManager`.
    Apply,
}

impl PatchType {
    /// The type named by a `Content-Type` header (parameters ignored), or 415.
    pub fn from_content_type(content_type: &str) -> Result<Self, ApiError> {
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        match essence {
            "application/json-patch+json" => Ok(Self::Json),
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/strategic-merge-patch+json" => Ok(Self::StrategicMerge),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Ok(Self::Apply),
            _ => Err(ApiError::unsupported_media_type(content_type)),
        }
    }
}

/// Reads a patch body: JSON, or YAML for server-side apply (YAML is what its content type
/// says; clients send JSON, which YAML includes).
pub fn parse(kind: PatchType, body: &[u8]) -> Result<Value, ApiError> {
    let parsed = match kind {
        PatchType::Apply => serde_yaml::from_slice(body).map_err(|e| e.to_string()),
        _ => serde_json::from_slice(body).map_err(|e| e.to_string()),
    };
    parsed.map_err(|e| ApiError::bad_request(format!("the patch body cannot be read: {e}")))
}

/// `current` with `patch` applied.
pub fn apply(kind: PatchType, current: &Value, patch: &Value) -> Result<Value, ApiError> {
    let mut out = current.clone();
    match kind {
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            // A failed test or missing path is the client's error: nothing is applied.
            json_patch::patch(&mut out, &ops).map_err(|e| {
                ApiError::invalid("", "", format!("the JSON patch does not apply: {e}"))
            })?;
        }
        PatchType::Merge | PatchType::StrategicMerge | PatchType::Apply => {
            if !patch.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            json_patch::merge(&mut out, patch);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn content_types_pick_the_patch_type() {
        let t = |s| PatchType::from_content_type(s);
        assert_eq!(t("application/json-patch+json").unwrap(), PatchType::Json);
        assert_eq!(
            t("application/merge-patch+json; charset=utf-8").unwrap(),
            PatchType::Merge
        );
        assert_eq!(t("application/apply-patch+yaml").unwrap(), PatchType::Apply);
        assert_eq!(t("text/plain").unwrap_err().code, 415);
    }

    #[test]
    fn merge_and_json_patches_apply_as_their_rfcs_say() {
        let cur = json!({ "spec": { "a": 1, "b": [1, 2] }, "metadata": { "name": "x" } });
        let merged = apply(
            PatchType::Merge,
            &cur,
            &json!({ "spec": { "a": null, "b": [3] } }),
        )
        .unwrap();
        assert_eq!(merged["spec"], json!({ "b": [3] }));
        let ops = json!([{ "op": "test", "path": "/spec/a", "value": 1 },
                         { "op": "add", "path": "/spec/b/-", "value": 9 }]);
        assert_eq!(
            apply(PatchType::Json, &cur, &ops).unwrap()["spec"]["b"],
            json!([1, 2, 9])
        );
        let failing = json!([{ "op": "test", "path": "/spec/a", "value": 2 }]);
        assert_eq!(
            apply(PatchType::Json, &cur, &failing).unwrap_err().code,
            422
        );
    }
}
