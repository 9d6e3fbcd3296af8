//! The JSON lines of reports, as `watch --json` and `report --json` print them.

use serde::Serialize;

use crate::report::Report;

/// One report of `watch --json` (and `report --json` of one recording, the total).
#[derive(Serialize)]
pub struct JsonLine<'a> {
    /// "interval" for each report, "total" for the summary at exit.
    pub scope: &'static str,
    /// Seconds since attach (the daemon's, with --connect) at the end of this report, on the
    /// same clock as `interval_s`.
    pub elapsed_s: f64,
    #[serde(flatten)]
    pub report: &'a Report,
}
