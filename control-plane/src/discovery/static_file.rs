//! A YAML (or JSON) file of `Endpoint` documents, polled every second. When its content
//! (or the store, which someone else may have changed) differs from the last sync, the
//! endpoints this source owns are replaced by the file's, as one revision by
//! `static-file`. An invalid or unreadable file is logged and the last good set kept.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::Source;
use crate::resources::{
    parse_text, validate_documents, Kind, Resource, ResourceError, SOURCE_ANNOTATION,
};
use crate::store::{Store, WHO_STATIC_FILE};

/// The `tandem.dev/source` of endpoints from the static file.
pub const SOURCE: &str = "static-file";

/// The static file source.
#[derive(Debug)]
pub struct StaticFile {
    /// The file.
    pub path: PathBuf,
    /// How often it is read.
    pub interval: Duration,
}

impl StaticFile {
    /// A source for `path`, polled every second.
    pub fn new(path: PathBuf) -> StaticFile {
        StaticFile {
            path,
            interval: Duration::from_secs(1),
        }
    }
}

/// The endpoints described by the file's text, owned by this source.
pub fn endpoints_of(text: &str) -> Result<Vec<Resource>, ResourceError> {
    let mut docs = parse_text(text)?;
    for (i, doc) in docs.iter_mut().enumerate() {
        if doc.get("kind").and_then(Value::as_str) != Some(Kind::Endpoint.as_str()) {
            return Err(ResourceError::new(
                format!("documents[{i}].kind"),
                "only Endpoint documents belong in the static endpoints file",
            ));
        }
        if let Some(map) = doc.as_object_mut() {
            let meta = map
                .entry("metadata")
                .or_insert_with(|| Value::Object(Default::default()));
            if let Some(meta) = meta.as_object_mut() {
                let ann = meta
                    .entry("annotations")
                    .or_insert_with(|| Value::Object(Default::default()));
                if let Some(ann) = ann.as_object_mut() {
                    ann.insert(SOURCE_ANNOTATION.into(), SOURCE.into());
                }
            }
        }
    }
    validate_documents(docs)
}

impl Source for StaticFile {
    fn name(&self) -> &'static str {
        SOURCE
    }

    fn run(self: Box<Self>, store: Arc<Store>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let mut last: Option<(String, u64)> = None;
            let mut last_error: Option<String> = None;
            let mut tick = tokio::time::interval(self.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let text = match tokio::fs::read_to_string(&self.path).await {
                    Ok(t) => t,
                    Err(e) => {
                        let msg = format!("{}: {e}", self.path.display());
                        if last_error.as_deref() != Some(msg.as_str()) {
                            tracing::warn!(error = %msg, "static endpoints file unreadable; keeping the last good set");
                            last_error = Some(msg);
                        }
                        continue;
                    }
                };
                if last
                    .as_ref()
                    .is_some_and(|(t, head)| *t == text && *head == store.head())
                {
                    continue;
                }
                let desired = match endpoints_of(&text) {
                    Ok(d) => d,
                    Err(e) => {
                        let msg = format!("{}: {e}", self.path.display());
                        if last_error.as_deref() != Some(msg.as_str()) {
                            tracing::warn!(error = %msg, "static endpoints file invalid; keeping the last good set");
                            last_error = Some(msg);
                        }
                        continue;
                    }
                };
                let st = store.clone();
                let res = tokio::task::spawn_blocking(move || {
                    st.replace_endpoints(SOURCE, None, desired, WHO_STATIC_FILE)
                })
                .await;
                match res {
                    Ok(Ok(out)) => {
                        if !out.changed.is_empty() {
                            tracing::info!(revision = out.revision, "static endpoints applied");
                        }
                        last_error = None;
                        last = Some((text, store.head()));
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "static endpoints not applied"),
                    Err(e) => tracing::warn!(error = %e, "static endpoints task failed"),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_endpoints_and_they_are_owned() {
        let text = "apiVersion: tandem.dev/v1alpha1\nkind: Endpoint\nspec: {service: a, address: 127.0.0.1:80}\n";
        let eps = endpoints_of(text).unwrap();
        assert_eq!(
            eps[0].doc["metadata"]["annotations"][SOURCE_ANNOTATION],
            SOURCE
        );
        let bad = "apiVersion: tandem.dev/v1alpha1\nkind: Service\nmetadata: {name: a}\n";
        assert!(endpoints_of(bad)
            .unwrap_err()
            .to_string()
            .starts_with("documents[0].kind:"));
    }
}
