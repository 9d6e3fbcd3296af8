//! What every request handler sees.

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use super::{
    comms::{CommCounts, CommTable},
    events::Hub,
    reads::Reads,
    rejections::Rejections,
};
use crate::plan::Plan;

/// What every request handler sees.
pub struct AppState {
    /// The tracer's maps, read by one task of their own.
    pub reads: Reads,
    pub plan: Arc<Plan>,
    pub started: Instant,
    pub start_time_s: f64,
    pub hub: Option<Arc<Hub>>,
    pub rejections: Arc<Rejections>,
    pub comms: Arc<Mutex<CommTable>>,
    pub kernel: String,
    /// Responses being encoded at once. Handlers wait for a snapshot without holding a
    /// worker, so a crowd of scrapers would otherwise encode all at once, each with its
    /// own body in memory.
    pub encoders: tokio::sync::Semaphore,
}

impl AppState {
    pub fn comm_series(&self) -> Vec<(String, CommCounts)> {
        self.comms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .series()
    }
}
