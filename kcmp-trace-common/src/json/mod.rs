//! The JSON that consumers parse: `events --json` lines, `watch --json` and `report --json`
//! lines, the daemon's snapshot and `/events` notices, recordings, `stress --json` and the
//! bench's report; the pure logic that makes them from the counters.
//!
//! kcmp-trace writes these types and reads its own back (recordings, a daemon's
//! snapshot); xtask reads kcmp-trace's output through them; [`schema`] publishes their
//! JSON Schemas. A key that is always written is required when read back: a missing one is
//! an error, never a silent zero. (serde reads a missing `Option` as `None`: the
//! always-written ones that may be `null` say [`nullable`].)

pub mod bench;
pub mod event;
pub mod fallbacks;
pub mod lines;
pub mod plan;
pub mod readout;
pub mod recording;
pub mod report;
pub mod schema;
pub mod snapshot;
pub mod stacks;
pub mod stress;
pub mod timeline;

use serde::{Deserialize, Deserializer};

/// Reads a key that is always written but may be `null`: missing, it is an error.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    Option::deserialize(deserializer)
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
