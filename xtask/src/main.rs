//! Automation: setup, build, tests, benchmarks, VMs.

mod apt;
mod bench;
mod compare;
mod criu;
mod demo;
mod deployed;
mod dist;
mod fresh_root;
mod harness;
mod initramfs;
mod kernel;
mod layers;
mod output;
mod scrape;
mod setup;
mod stream;
mod target;
mod test;
mod vm;
mod vmtest;
mod workspace;

use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "kcmp-trace automation")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (idempotent).
    Setup {
        /// Only list the packages and why.
        #[arg(long)]
        list: bool,
    },
    /// Set up, build the release binary and run it: `cargo xtask run -- watch`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, then run every test: unit, host (real BPF), VM.
    Test(test::TestArgs),
    /// Measure tracing overhead side by side and write JSON.
    Bench(bench::BenchArgs),
    /// Static binaries, Debian packages and checksums for x86_64 and aarch64 in target/dist.
    Dist,
    /// Boot a real kernel under qemu and run a command in it.
    Vm(vm::VmArgs),
    /// Watch fast-path hits, retries and busy fallbacks live in the fast-path kernel.
    Demo(demo::DemoArgs),
    /// Record one workload on the stock and the fast-path kernel and report them side by
    /// side, with plots (target/compare/).
    Compare(compare::CompareArgs),
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Task::Setup { list: true } => {
            setup::describe().for_each(|l| println!("{l}"));
            Ok(ExitCode::SUCCESS)
        }
        Task::Setup { list: false } => setup::ensure().map(|_| ExitCode::SUCCESS),
        Task::Run { args } => {
            let path = setup::ensure()?;
            let bin = workspace::build_release(&path)?;
            let status = Command::new(bin).args(args).status()?;
            Ok(ExitCode::from(status.code().unwrap_or(1) as u8))
        }
        Task::Test(args) => test::run(args),
        Task::Bench(args) => bench::run(args).map(|_| ExitCode::SUCCESS),
        Task::Demo(args) => demo::run(args).map(|_| ExitCode::SUCCESS),
        Task::Compare(args) => compare::run(args).map(|_| ExitCode::SUCCESS),
        Task::Dist => {
            let path = setup::ensure()?;
            dist::run(&path).map(|()| ExitCode::SUCCESS)
        }
        Task::Vm(args) => {
            let path = setup::ensure()?;
            dist::build_static(&path, &[args.arch])?;
            let code = vm::cli(args)?;
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
    }
}
