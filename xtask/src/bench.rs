//! `cargo xtask bench`: builds the release binary and measures tracing overhead side by side
//! (`kcmp-trace bench`), writing JSON under target/bench/.

use clap::Args;

use crate::{build_release, run_checked, setup, workspace_root};

#[derive(Args)]
pub struct BenchArgs {
    /// Interleaved rounds (medians are reported).
    #[arg(long, default_value_t = 9)]
    rounds: usize,
    /// Length of each measurement, e.g. 400ms.
    #[arg(long, default_value = "400ms")]
    round: String,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let path = setup::ensure()?;
    let bin = build_release(&path)?;
    let out_dir = workspace_root().join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let json = out_dir.join("host.json");
    run_checked(
        std::process::Command::new(bin)
            .args([
                "bench",
                "--rounds",
                &args.rounds.to_string(),
                "--round",
                &args.round,
            ])
            .arg("--json-out")
            .arg(&json),
    )
}
