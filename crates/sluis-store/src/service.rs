//! Flows as a service: what both admin doors (HTTP and gRPC) call. Writes go to the store
//! first and are acknowledged once committed; this replica's index then catches up.

use std::sync::Arc;

use chrono::Utc;
use serde::Serialize;
use sluis_core::flows::{FieldError, Flow, FlowIndex};

pub use crate::flows::Filter;
use crate::flows::{Store, StoreError};

/// Why a flow operation failed, for the admin doors to turn into a status.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// 400, with every bad field.
    #[error("invalid flow")]
    Invalid(Vec<FieldError>),
    /// 404.
    #[error("no flow with id `{0}`")]
    NotFound(String),
    /// 409: a flow with this id exists with other content.
    #[error(
        "a flow with id `{0}` exists with different content; flows are immutable except for revocation"
    )]
    Conflict(String),
    /// 503: the store cannot be reached or failed; nothing was written.
    #[error("flow store unavailable: {0}")]
    Unavailable(String),
}

impl From<StoreError> for FlowError {
    fn from(e: StoreError) -> FlowError {
        match e {
            StoreError::Conflict(id) => FlowError::Conflict(id),
            StoreError::Database(message) => FlowError::Unavailable(message),
        }
    }
}

/// The result of a create: whether the flow was new.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Created {
    pub created: bool,
}

/// A page of a listing.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    pub flows: Vec<Flow>,
    /// Pass as `page_token` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// The result of a bulk import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Imported {
    pub created: usize,
    pub unchanged: usize,
}

pub const DEFAULT_PAGE_SIZE: usize = 100;
pub const MAX_PAGE_SIZE: usize = 1000;
/// Flows per bulk import request.
pub const MAX_IMPORT: usize = 100_000;

/// Flows as a service: the store for writes and listings, the index for decisions. Both
/// admin doors call this and nothing else.
#[derive(Clone)]
pub struct Flows {
    store: Arc<Store>,
    index: Arc<FlowIndex>,
}

impl Flows {
    pub fn new(store: Arc<Store>, index: Arc<FlowIndex>) -> Flows {
        Flows { store, index }
    }

    pub fn index(&self) -> &Arc<FlowIndex> {
        &self.index
    }

    /// Creates a flow, or confirms an identical one exists. Acknowledged only after the
    /// store committed it; the index of this replica has it before this returns, unless
    /// the database went away in between (then the sync loop brings it in later).
    pub async fn create(&self, mut flow: Flow) -> Result<Created, FlowError> {
        flow.validate().map_err(FlowError::Invalid)?;
        let created = self.store.create(&flow).await?;
        self.index_committed().await;
        Ok(Created { created })
    }

    /// Brings this replica's index up to a write that has committed. A failure here must
    /// not turn the acknowledged write into an error: the client would retry a write
    /// that happened. The sync loop catches up when the database is back.
    async fn index_committed(&self) {
        if let Err(e) = self.store.catch_up_bounded(&self.index).await {
            tracing::warn!(error = %e, "flow written, but this replica's index could not catch up yet");
        }
    }

    pub async fn get(&self, id: &str) -> Result<Flow, FlowError> {
        self.store
            .get(id)
            .await?
            .ok_or_else(|| FlowError::NotFound(id.to_owned()))
    }

    pub async fn list(
        &self,
        filter: &Filter,
        page_size: Option<usize>,
        page_token: Option<&str>,
    ) -> Result<Page, FlowError> {
        let size = page_size.unwrap_or(DEFAULT_PAGE_SIZE);
        if size == 0 || size > MAX_PAGE_SIZE {
            return Err(FlowError::Invalid(vec![FieldError::new(
                "page_size",
                format!("must be between 1 and {MAX_PAGE_SIZE}"),
            )]));
        }
        let flows = self.store.list(filter, size + 1, page_token).await?;
        Ok(page(flows, size))
    }

    /// Revokes a flow: it stays on record with `revoked_at`, and permits nothing from now
    /// on. Revoking a revoked flow changes nothing.
    pub async fn revoke(&self, id: &str) -> Result<Flow, FlowError> {
        let flow = self
            .store
            .revoke(id, Utc::now())
            .await?
            .ok_or_else(|| FlowError::NotFound(id.to_owned()))?;
        self.index_committed().await;
        Ok(flow)
    }

    /// Creates many flows in one transaction: all of them or, on any invalid flow or
    /// conflict, none.
    pub async fn import(&self, mut flows: Vec<Flow>) -> Result<Imported, FlowError> {
        if flows.len() > MAX_IMPORT {
            return Err(FlowError::Invalid(vec![FieldError::new(
                "",
                format!("more than {MAX_IMPORT} flows in one import; split it"),
            )]));
        }
        let mut errors = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, flow) in flows.iter_mut().enumerate() {
            if let Err(e) = flow.validate() {
                errors.extend(e.into_iter().map(|e| e.at(i)));
            } else if !seen.insert(flow.id.clone()) {
                errors.push(FieldError::new("id", "appears twice in this import").at(i));
            }
        }
        if !errors.is_empty() {
            return Err(FlowError::Invalid(errors));
        }
        let created = self.store.import(&flows).await?;
        self.index_committed().await;
        Ok(Imported {
            created,
            unchanged: flows.len() - created,
        })
    }
}

impl Flows {
    /// Every flow, revoked ones included, in write order: a page of the store at a time.
    /// An error is the last item, so a cut export cannot pass for a whole one.
    pub fn export(
        &self,
    ) -> impl futures_util::Stream<Item = Result<Vec<Flow>, FlowError>> + Send + 'static {
        let store = self.store.clone();
        futures_util::stream::unfold(Some(0i64), move |after| {
            let store = store.clone();
            async move {
                match store.all_after(after?).await {
                    Ok(rows) if rows.is_empty() => None,
                    Ok(rows) => {
                        let next = rows.last().map(|(version, _)| *version);
                        Some((Ok(rows.into_iter().map(|(_, flow)| flow).collect()), next))
                    }
                    Err(e) => Some((Err(e.into()), None)),
                }
            }
        })
    }
}

/// Cuts a listing fetched with one extra row into a page and the next page's token.
fn page(mut flows: Vec<Flow>, size: usize) -> Page {
    let next_page_token = if flows.len() > size {
        flows.truncate(size);
        flows.last().map(|f| f.id.clone())
    } else {
        None
    };
    Page {
        flows,
        next_page_token,
    }
}
