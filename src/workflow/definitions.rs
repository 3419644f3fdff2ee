//! Deploying and finding definitions. A definition is parsed once per (key, version) and shared;
//! the stored XML is the source of truth, so a restarted server rebuilds the same graph.
use std::sync::Arc;

use super::{Actor, Workflow};
use crate::{
    engine::definition::{self, ProcessDefinition},
    error::{Error, Result},
    model::{Definition, Page},
    store::PageRequest,
};

/// Larger definitions are refused before parsing.
const MAX_DEFINITION_BYTES: usize = 4 * 1024 * 1024;

impl Workflow {
    pub async fn deploy(&self, actor: &Actor, bpmn_xml: &[u8]) -> Result<Definition> {
        if bpmn_xml.is_empty() {
            return Err(Error::invalid("bpmn_xml", "required"));
        }
        if bpmn_xml.len() > MAX_DEFINITION_BYTES {
            return Err(Error::invalid("bpmn_xml", "larger than 4 MiB"));
        }
        let text = std::str::from_utf8(bpmn_xml)
            .map_err(|e| Error::invalid("bpmn_xml", format!("not UTF-8: {e}")))?;
        let parsed = definition::parse(bpmn_xml)?;
        let now = self.now();
        let (id, version) = self
            .store
            .insert_definition(&parsed.key, &parsed.name, text, &actor.user_id, now)
            .await?;
        tracing::info!(key = %parsed.key, version, by = %actor.user_id, "definition deployed");
        let stored = Definition {
            id,
            key: parsed.key.clone(),
            version,
            name: parsed.name.clone(),
            bpmn_xml: text.to_string(),
            deployed_by: actor.user_id.clone(),
            created_at: now,
            latest: true,
        };
        self.cache((parsed.key.clone(), version), Arc::new(parsed));
        Ok(stored)
    }

    /// The stored definition and its parsed graph; `version` 0 is the latest.
    pub async fn definition(
        &self,
        key: &str,
        version: i64,
    ) -> Result<(Definition, Arc<ProcessDefinition>)> {
        if key.is_empty() {
            return Err(Error::invalid("definition_key", "required"));
        }
        if version < 0 {
            return Err(Error::invalid("version", "must not be negative"));
        }
        let stored = self
            .store
            .definition(key, version)
            .await?
            .ok_or_else(|| match version {
                0 => Error::not_found("definition", key),
                v => Error::not_found("definition", format!("{key} version {v}")),
            })?;
        let graph = self.graph(&stored)?;
        Ok((stored, graph))
    }

    pub(super) fn graph(&self, stored: &Definition) -> Result<Arc<ProcessDefinition>> {
        let cache_key = (stored.key.clone(), stored.version);
        if let Some(graph) = self.lock_definitions().get(&cache_key) {
            return Ok(graph.clone());
        }
        let graph = definition::parse(stored.bpmn_xml.as_bytes()).map_err(|errors| {
            Error::Internal(anyhow::anyhow!(
                "stored definition {} v{} no longer parses: {errors}",
                stored.key,
                stored.version
            ))
        })?;
        let graph = Arc::new(graph);
        self.cache(cache_key, graph.clone());
        Ok(graph)
    }

    /// The graph of a version known to exist (an instance's).
    pub(super) async fn graph_of(&self, key: &str, version: i64) -> Result<Arc<ProcessDefinition>> {
        if let Some(graph) = self.lock_definitions().get(&(key.to_string(), version)) {
            return Ok(graph.clone());
        }
        let stored = self.store.definition(key, version).await?.ok_or_else(|| {
            Error::Internal(anyhow::anyhow!(
                "definition {key} v{version} of an instance is missing"
            ))
        })?;
        self.graph(&stored)
    }

    pub async fn list_definitions(
        &self,
        key: &str,
        latest_only: bool,
        page: &PageRequest,
    ) -> Result<Page<Definition>> {
        self.store.list_definitions(key, latest_only, page).await
    }

    /// The graph of an instance's or a task's definition, for showing outcomes and names.
    pub async fn graph_for(&self, key: &str, version: i64) -> Result<Arc<ProcessDefinition>> {
        self.graph_of(key, version).await
    }

    fn cache(&self, key: (String, i64), graph: Arc<ProcessDefinition>) {
        self.lock_definitions().insert(key, graph);
    }

    fn lock_definitions(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<(String, i64), Arc<ProcessDefinition>>>
    {
        // A panic while holding this lock cannot leave the map half-written: recover it.
        self.definitions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
