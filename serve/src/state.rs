//! [`AppState`]: the current model behind a swap point, the metrics, the configuration.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use crate::api::AddItemsResponse;
use crate::catalogue::NewItem;
use crate::config::{Retrieval, ServeConfig};
use crate::error::{ApiError, LoadError};
use crate::metrics::Metrics;
use crate::model::LoadedModel;

/// Shared server state; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ServeConfig,
    model: RwLock<Arc<LoadedModel>>,
    metrics: Arc<Metrics>,
    reload: tokio::sync::Mutex<()>,
    shutting_down: AtomicBool,
}

/// The outcome of a successful reload.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reloaded {
    /// The model now serving.
    pub model: String,
    /// The model served before.
    pub previous: String,
}

impl AppState {
    /// Loads the model of `config` (blocking: creates sessions and runs a warm-up).
    pub fn load(config: ServeConfig) -> Result<Self, LoadError> {
        let mut metrics = Metrics::new();
        let r = &config.retrieval;
        if r.mode == Retrieval::Ann && r.shadow_rate > 0.0 {
            metrics = metrics.with_ann_shadow();
        }
        let metrics = Arc::new(metrics);
        let model = load_model(&config, metrics.clone())?;
        metrics.set_model(model.id());
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                model: RwLock::new(Arc::new(model)),
                metrics,
                reload: tokio::sync::Mutex::new(()),
                shutting_down: AtomicBool::new(false),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ServeConfig {
        &self.inner.config
    }

    /// The model serving now. A request keeps the `Arc` it got, so a reload never changes the
    /// model under a request in flight.
    pub fn model(&self) -> Arc<LoadedModel> {
        self.inner
            .model
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Loads the model from `--model` again (with the additions file) and swaps it in; on
    /// failure the old model keeps serving and the error is returned. Reloads and additions are
    /// serialised.
    pub async fn reload(&self) -> Result<Reloaded, LoadError> {
        let _guard = self.inner.reload.lock().await;
        let cfg = self.inner.config.clone();
        let metrics = self.inner.metrics.clone();
        let loaded = tokio::task::spawn_blocking(move || load_model(&cfg, metrics))
            .await
            .unwrap_or_else(|e| Err(LoadError::Runtime(format!("reload task failed: {e}"))));
        match loaded {
            Ok(model) => {
                let new_id = model.id().to_string();
                let old = {
                    let mut cur = self.inner.model.write().unwrap_or_else(|e| e.into_inner());
                    std::mem::replace(&mut *cur, Arc::new(model))
                };
                self.inner.metrics.observe_reload(true);
                self.inner.metrics.set_model(&new_id);
                tracing::info!(model = %new_id, previous = %old.id(), "model reloaded");
                Ok(Reloaded {
                    model: new_id,
                    previous: old.id().to_string(),
                })
            }
            Err(e) => {
                self.inner.metrics.observe_reload(false);
                tracing::error!(error = %e, model = %self.model().id(), "reload failed; keeping the current model");
                Err(e)
            }
        }
    }

    /// `POST /v1/items`: builds the model with `items` added ([`LoadedModel::add_items`]: the
    /// additions file is written first) and swaps it in; requests in flight finish on the
    /// model they hold. Serialised with reloads; on error nothing changes. The work runs as a
    /// task of its own, so a client that disconnects or times out cannot stop it between
    /// writing the file and the swap (the items are then added all the same).
    pub async fn add_items(&self, items: Vec<NewItem>) -> Result<AddItemsResponse, ApiError> {
        let state = self.clone();
        tokio::spawn(async move { state.add_items_now(items).await })
            .await
            .map_err(|e| ApiError::Internal(format!("add task failed: {e}")))?
    }

    /// [`AppState::add_items`] in the caller's task.
    async fn add_items_now(&self, items: Vec<NewItem>) -> Result<AddItemsResponse, ApiError> {
        let _guard = self.inner.reload.lock().await;
        let current = self.model();
        let (model, done) = tokio::task::spawn_blocking(move || current.add_items(items))
            .await
            .map_err(|e| ApiError::Internal(format!("add task failed: {e}")))??;
        let counts = model.info().items.clone();
        let id = model.id().to_string();
        {
            let mut cur = self.inner.model.write().unwrap_or_else(|e| e.into_inner());
            *cur = Arc::new(model);
        }
        tracing::info!(model = %id, added = done.added, updated = done.updated, total_added = counts.added, "items added");
        Ok(AddItemsResponse {
            model: id,
            added: done.added,
            updated: done.updated,
            trained_items: counts.trained,
            added_items: counts.added,
        })
    }

    /// Marks the server as draining (`/readyz` answers 503 from now on).
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Whether [`AppState::begin_shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }
}

/// Loads `--model` with the settings of `config`.
fn load_model(config: &ServeConfig, metrics: Arc<Metrics>) -> Result<LoadedModel, LoadError> {
    LoadedModel::load_with(
        &config.model,
        &config.session,
        &config.batch,
        &config.retrieval,
        metrics,
    )
}
