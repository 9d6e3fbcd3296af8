//! `cargo xtask compare`: the same workload on the stock and the fast-path kernel of one
//! version, each recorded by `kcmp-trace record`, then `kcmp-trace report A B` with plots.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail, ensure};
use clap::Args;

use crate::{
    kernel::{Flavour, Kernel, Preempt, Version, ensure_kernel},
    setup,
    vm::{VmSpec, default_files, parse_file_arg, run as run_vm},
    workspace::workspace_root,
};

/// The default workload: kcmp threads against processes that exec() themselves, so that the
/// fast path meets writers.
pub const DEFAULT_WORKLOAD: &str =
    "kcmp-trace stress --json --duration 5s --threads 2 --exec-racers 2 --types vm,files";

#[derive(Args)]
pub struct CompareArgs {
    /// Kernel version: its stock and its fast-path kernel are compared.
    #[arg(long, value_enum, default_value = "7.2")]
    kernel_version: Version,
    /// Preemption model both kernels boot with (default: the version's own, lazy on 7.2,
    /// voluntary before). 7.2 boots only full or lazy.
    #[arg(long, value_enum)]
    preempt: Option<Preempt>,
    /// Time between the recording's readings.
    #[arg(long, default_value = "500ms")]
    interval: String,
    /// Seconds the workload may run in each guest.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Extra file or directory for the command (repeatable).
    #[arg(long = "file", value_name = "HOST:GUEST", value_parser = parse_file_arg)]
    files: Vec<(PathBuf, String)>,
    /// Follow exec_update_lock's /proc readers too (`record --readers`), with this many
    /// `--proc-readers` threads in the default workload (a command of your own reads /proc
    /// itself).
    #[arg(long, value_name = "N", default_value_t = 0)]
    proc_readers: usize,
    /// With this many `--mm-readers` threads in the default workload: opens of the racers'
    /// /proc/PID/environ, each an mm_access() wait on exec_update_lock (implies following
    /// the readers).
    #[arg(long, value_name = "N", default_value_t = 0)]
    mm_readers: usize,
    /// Record kernel stacks of the lock's waiters and writers (`record --stacks`): the
    /// report then has flame graphs.
    #[arg(long)]
    stacks: bool,
    /// Keep every call as an event (`record --events`): fallbacks by writer.
    #[arg(long)]
    events: bool,
    /// Where the recordings, the report and the plots go.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Workload run in each guest while `kcmp-trace record` traces every kcmp call (default:
    /// `kcmp-trace stress` with exec racers). Its stdout is kept as workload.out.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

/// One comparison to run.
pub struct Plan {
    pub version: Version,
    /// None: each kernel's default model.
    pub preempt: Option<Preempt>,
    pub interval: String,
    pub timeout: Duration,
    pub files: Vec<(PathBuf, String)>,
    pub workload: String,
    /// Record with `--readers`.
    pub readers: bool,
    /// Record with `--stacks`, and with `--events`.
    pub stacks: bool,
    pub events: bool,
    pub out: PathBuf,
}

/// What a comparison left: a directory per kernel (workload.out, the recorder's output), the
/// recordings (`<kernel>.jsonl`) and the report's files.
pub struct Compared {
    /// The stock kernel's results directory.
    pub stock: PathBuf,
    pub fastpath: PathBuf,
    /// `report A B --json` (A stock, B fast path).
    pub report_json: PathBuf,
}

/// Records the workload in one guest; returns the directory holding its results.
fn record_in(plan: &Plan, flavour: Flavour) -> anyhow::Result<PathBuf> {
    let kernel = Kernel::new(flavour, plan.version);
    let dir = plan.out.join(kernel.to_string());
    let _ = std::fs::remove_dir_all(&dir);
    let script = format!(
        r#"
mkdir -p /tmp
kcmp-trace record {options} -o /results/recording.jsonl -i {interval} > /results/record.out 2> /results/record.err &
rp=$!
wait_attached /results/record.err $rp || exit 1
( {workload} ) > /results/workload.out 2> /results/workload.err
status=$?
kill -INT $rp
wait $rp || exit 1
cat /results/workload.err
exit $status
"#,
        interval = plan.interval,
        workload = plan.workload,
        options = [
            (plan.readers, "--readers"),
            (plan.stacks, "--stacks"),
            (plan.events, "--events --ring-size 64M"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, flag)| *flag)
        .collect::<Vec<_>>()
        .join(" "),
    );
    let mut spec = VmSpec::new(format!("compare-{kernel}"), ensure_kernel(kernel)?, script);
    spec.cmdline.extend(plan.preempt.map(Preempt::cmdline));
    spec.files = default_files(crate::target::HOST)?;
    spec.files.extend(plan.files.iter().cloned());
    spec.timeout = plan.timeout;
    spec.results_dir = Some(dir.clone());
    eprintln!("compare: recording the workload on the {kernel} kernel under qemu (TCG)");
    let outcome = run_vm(&spec)?;
    ensure!(
        outcome.exit_code == 0,
        "the {kernel} guest failed with {} (console: {}):\n{}",
        outcome.exit_code,
        outcome.console_log.display(),
        outcome.output
    );
    Ok(dir)
}

/// `kcmp-trace report` on the host in `dir`, its stdout into `dir/dest`: run there, it
/// names the recordings as they are named in `dir`.
fn report(dir: &Path, args: &[&str], dest: &str) -> anyhow::Result<()> {
    let tracer = default_files(crate::target::HOST)?
        .into_iter()
        .next()
        .map(|(host, _)| host)
        .context("no kcmp-trace binary")?;
    let out = Command::new(&tracer)
        .current_dir(dir)
        .arg("report")
        .args(args)
        .output()
        .with_context(|| format!("running {}", tracer.display()))?;
    if !out.status.success() {
        bail!(
            "kcmp-trace report failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let dest = dir.join(dest);
    std::fs::write(&dest, &out.stdout).with_context(|| format!("writing {}", dest.display()))
}

/// Boots the stock kernel, then the fast-path one, records the workload in each and writes
/// report.txt, report.json and the plots (index.html) into `plan.out`.
pub fn compare(plan: &Plan) -> anyhow::Result<Compared> {
    std::fs::create_dir_all(&plan.out)?;
    let stock = record_in(plan, Flavour::Stock)?;
    let fastpath = record_in(plan, Flavour::Fastpath)?;
    // Named by kernel, which is how the report and the page name them.
    let keep = |dir: &Path| -> anyhow::Result<String> {
        let kept = format!(
            "{}.jsonl",
            dir.file_name().context("results directory")?.display()
        );
        std::fs::copy(dir.join("recording.jsonl"), plan.out.join(&kept))
            .with_context(|| format!("copying the recording to {kept}"))?;
        Ok(kept)
    };
    let (a, b) = (keep(&stock)?, keep(&fastpath)?);
    report(&plan.out, &[&a, &b, "--json"], "report.json")?;
    report(&plan.out, &[&a, &b, "--out", "."], "report.txt")?;
    let report_json = plan.out.join("report.json");
    Ok(Compared {
        stock,
        fastpath,
        report_json,
    })
}

pub fn run(args: CompareArgs) -> anyhow::Result<()> {
    args.kernel_version.ensure_boots(args.preempt)?;
    let path = setup::ensure()?;
    crate::dist::build_static(&path, &[crate::target::HOST])?;
    let workload = if args.command.is_empty() {
        let mut workload = DEFAULT_WORKLOAD.to_owned();
        for (flag, n) in [
            ("--proc-readers", args.proc_readers),
            ("--mm-readers", args.mm_readers),
        ] {
            if n > 0 {
                workload += &format!(" {flag} {n}");
            }
        }
        workload
    } else {
        args.command.join(" ")
    };
    let plan = Plan {
        version: args.kernel_version,
        preempt: args.preempt,
        interval: args.interval,
        timeout: Duration::from_secs(args.timeout),
        files: args.files,
        workload,
        readers: args.proc_readers > 0 || args.mm_readers > 0,
        stacks: args.stacks,
        events: args.events,
        out: args
            .out
            .unwrap_or_else(|| workspace_root().join("target/compare")),
    };
    compare(&plan)?;
    let text = std::fs::read_to_string(plan.out.join("report.txt"))?;
    print!("{text}");
    eprintln!(
        "compare: report and plots in {}",
        plan.out.join("index.html").display()
    );
    Ok(())
}
