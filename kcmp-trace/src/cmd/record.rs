//! `kcmp-trace record`: `watch`, with the session kept in a file for `report`.

use crate::{cli::RecordArgs, error::Error, recording::Recorder};

pub fn run(args: RecordArgs) -> anyhow::Result<()> {
    let recorder = Recorder::create(&args.output, args.events)
        .map_err(|e| Error::Usage(crate::error::one_line(&e)))?;
    crate::cmd::watch::run_recording(args.watch, Some((recorder, args.ring_size)))
}
