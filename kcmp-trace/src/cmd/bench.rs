//! `kcmp-trace bench`: tracing overhead on this machine, side by side.

use crate::cli::BenchArgs;

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let report = crate::bench::run(
        args.attach,
        args.strategy,
        args.rounds,
        args.round,
        args.only,
    )?;
    print!("{}", crate::bench::table(&report));
    if let Some(path) = &args.json_out {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
