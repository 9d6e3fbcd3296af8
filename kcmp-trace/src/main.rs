use std::process::ExitCode;

use clap::Parser as _;
use kcmp_trace::{
    cli::{Cli, Command, WatchArgs},
    cmd, error, stress,
};

fn main() -> ExitCode {
    // Racers (exec racers re-exec themselves thousands of times a second): skip everything
    // else.
    match std::env::args_os().nth(1) {
        Some(a) if a == stress::EXEC_RACER_ARG => stress::exec_racer_loop(),
        Some(a) if a == stress::TSYNC_RACER_ARG => stress::tsync_racer_loop(),
        _ => {}
    }
    // Die quietly on a closed pipe (`kcmp-trace events | head`), as C tools do.
    // SAFETY: restoring the default disposition of a signal has no preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version go to stdout as clap prints them; a usage error is one line.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            // Its first paragraph, which may list what is missing on lines of their own.
            let rendered = e.render().to_string();
            let first: Vec<&str> = rendered
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            eprintln!(
                "kcmp-trace: {} (see --help)",
                first.join(" ").trim_start_matches("error: ")
            );
            return ExitCode::from(error::exit::USAGE);
        }
    };
    let mut logger = env_logger::Builder::new();
    logger.filter_level(match cli.verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    });
    if cli.bpf_log() {
        // Asked for by name: the programs' diagnostics show whatever -v says.
        logger.filter_module(kcmp_trace::bpf_log::TARGET, log::LevelFilter::Debug);
    }
    logger.parse_env("KCMP_TRACE_LOG").init();
    let command = cli
        .command
        .unwrap_or_else(|| Command::Watch(WatchArgs::default_from_cli()));
    let result = match command {
        Command::Watch(args) => cmd::watch::run(args),
        Command::Events(args) => cmd::events::run(args),
        Command::Record(args) => cmd::record::run(args),
        Command::Report(args) => cmd::report::run(args),
        Command::Doctor(args) => cmd::doctor::run(args),
        Command::Stress(args) => cmd::stress::run(args),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Generate(args) => cmd::generate::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("kcmp-trace: {}", error::one_line(&err));
            error::exit_code_of(&err)
        }
    }
}
