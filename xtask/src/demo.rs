//! `cargo xtask demo`: boots the fast-path kernel and shows, live, what kcmp-trace sees while
//! exec racers make kcmp calls retry and fall back to the locks.

use std::time::Duration;

use anyhow::ensure;
use clap::Args;

use crate::{
    kernel::{Flavour, Kernel, Preempt, Version, ensure_kernel},
    setup,
    target::Target,
    vm::{VmSpec, default_files, run as run_vm},
};

#[derive(Args)]
pub struct DemoArgs {
    /// How long the workload runs.
    #[arg(long, default_value_t = 12)]
    seconds: u64,
    /// Kernel to boot: fastpath shows fast/retry/busy, stock shows locked.
    #[arg(long, value_enum, default_value = "fastpath")]
    kernel: Flavour,
    /// The series' own base by default, the kernel the default test matrix builds.
    #[arg(long, value_enum, default_value = "7.2")]
    kernel_version: Version,
    /// Preemption model (PREEMPT_DYNAMIC kernels); 7.2 boots only full or lazy.
    #[arg(long, value_enum)]
    preempt: Option<Preempt>,
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    args.kernel_version.ensure_boots(args.preempt)?;
    let path = setup::ensure()?;
    crate::dist::build_static(&path, &[Target::X86_64])?;
    let secs = args.seconds;
    let script = format!(
        r#"
mkdir -p /tmp
echo "== kcmp-trace doctor"
kcmp-trace doctor | grep -E "^(kernel|preemption|kprobes|fentry|exec_update_seq)"
echo "== stress: 2 kcmp threads against 2 processes that exec() themselves, {secs} s"
kcmp-trace stress --duration {secs}s --threads 2 --exec-racers 2 --types vm,files --wait-for /tmp/go > /tmp/stress.txt &
sp=$!
kcmp-trace watch -i 2s -p $sp 2>/tmp/watch.err &
wp=$!
wait_attached /tmp/watch.err $wp || exit 1
echo 0 > /sys/kernel/debug/kcmp_fastpath 2>/dev/null
touch /tmp/go
wait $sp
kill -INT $wp; wait $wp
echo "== the workload's own count"
cat /tmp/stress.txt
echo "== the kernel's own count (test-only oracle)"
cat /sys/kernel/debug/kcmp_fastpath 2>/dev/null || echo "(no oracle in this kernel)"
"#
    );
    let kernel = Kernel::new(args.kernel, args.kernel_version);
    let mut spec = VmSpec::new("demo", ensure_kernel(kernel)?, script);
    spec.cmdline.extend(args.preempt.map(Preempt::cmdline));
    spec.files = default_files(Target::X86_64)?;
    spec.timeout = Duration::from_secs(secs + 120);
    spec.live = true;
    eprintln!("demo: booting the {kernel} kernel under qemu (TCG)");
    let outcome = run_vm(&spec)?;
    ensure!(
        outcome.exit_code == 0,
        "demo guest failed ({}):\n{}",
        outcome.console_log.display(),
        outcome.output
    );
    Ok(())
}
