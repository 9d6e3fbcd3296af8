//! What every request handler sees.

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use super::{
    comms::{CommCounts, CommTable},
    events::Hub,
    rejections::Rejections,
};
use crate::{loader::Tracer, plan::Plan};

/// What every request handler sees.
pub struct AppState {
    pub tracer: Arc<Tracer>,
    pub plan: Arc<Plan>,
    pub started: Instant,
    pub start_time_s: f64,
    pub hub: Option<Arc<Hub>>,
    pub rejections: Arc<Rejections>,
    pub comms: Mutex<CommTable>,
    pub kernel: String,
}

impl AppState {
    pub fn comm_series(&self) -> Vec<(String, CommCounts)> {
        self.comms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .series()
    }
}
