//! The daemon as deployed: the project's Debian package on a booted Debian root with
//! systemd as PID 1, on Debian's stock kernels.
//!
//! The root is a debootstrapped bookworm (minbase with systemd, udev, dbus, curl and cpio),
//! packed as a gzip initramfs and cached under the cache root, keyed by what it is made of.
//! Each guest boots it twice:
//!
//! 1. The freshly built x86-64 `.deb` is installed with apt, the unit enabled and started
//!    with systemctl, and `/healthz` awaited. The daemon's capabilities must be what the
//!    unit leaves it (its bounding set less what its sandboxing drops), its plan kprobes,
//!    and under a crowd (`kcmp-trace stress`, 6 kcmp threads and 2 exec racers) it must
//!    count exactly the calls the workload made, with nothing incomplete, lost or missed.
//!    What this boot wrote to the root is sent back as a cpio archive: what a disk would
//!    keep. Then, without root: `nobody` runs copies of the packaged binary with file
//!    capabilities, `watch --json` beside its own stress workload. With the set `--help`
//!    gives the default plan it must attach kprobes and count exactly; with none it must
//!    exit 3 naming CAP_BPF and CAP_PERFMON; without CAP_SYS_ADMIN (Debian's
//!    `perf_event_paranoid` 3) it must say so in the plan it falls back to; without
//!    CAP_DAC_OVERRIDE it must say up front that its return probes get only the kernel's
//!    default instances, and count a crowd honestly. Last, root's `doctor --cost` must see
//!    every exec of its workload at each exec hook.
//! 2. The same root with that archive on top boots again: the unit must come back by
//!    itself, with counters from zero, no warning in its journal, and count exactly.

use std::{
    collections::BTreeMap,
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail, ensure};
use kcmp_trace_common::json::{
    plan::{AttachMode, Plan},
    report::Report,
    snapshot::Snapshot,
    stress::StressReport,
};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

mod prometheus;

use crate::{
    dist,
    fresh_root::{SUITE, debootstrap, debootstrap_recipe},
    kernel::{Flavour, Kernel, Preempt, Version, ensure_kernel},
    output::{self, Watched},
    target::{Target, target_dir},
    vm::{self, Root, VmSpec},
    workspace::{cache_root, fresh_dir, hex, lock, logged, workspace_root},
};

/// What the root holds beyond minbase: an init system as a server has one, procps (whose
/// `kill` Prometheus's unit reloads with), Debian's Prometheus under its own unit, and the
/// tools the test uses (curl for the endpoints, cpio for what the first boot wrote, setcap
/// for the binary a normal user runs).
const PACKAGES: &[&str] = &[
    "systemd-sysv",
    "systemd",
    "udev",
    "dbus",
    "procps",
    "curl",
    "cpio",
    "libcap2-bin",
    "prometheus",
];

/// Run in the debootstrapped root (chroot) before it is packed.
fn configure() -> String {
    format!(
        r#"set -e
# One machine across boots, and no first-boot setup.
echo kcmp-deployed > /etc/hostname
printf '127.0.0.1\tlocalhost\n127.0.1.1\tkcmp-deployed\n::1\tlocalhost ip6-localhost ip6-loopback\n' > /etc/hosts
echo 6b636d70747261636564657065656c79 > /etc/machine-id
# No login prompt on the serial lines: the console carries the kernel's log and the test's
# markers, the second port its results.
ln -sf /dev/null /etc/systemd/system/serial-getty@.service
ln -sf /dev/null /etc/systemd/system/getty@.service
# No background maintenance competing for the two vCPUs.
ln -sf /dev/null /etc/systemd/system/apt-daily.timer
ln -sf /dev/null /etc/systemd/system/apt-daily-upgrade.timer
# Prometheus scrapes the daemon where the unit serves, and evaluates the rules the package
# installs (a rule file that is not there yet matches nothing: the first boot reloads it).
cat > /etc/prometheus/prometheus.yml <<'END'
{prometheus_yml}END
# The initramfs is unpacked at every boot: no documentation, locales, caches, or the
# rule checker (the host's test stage runs promtool).
rm -rf /usr/share/doc/* /usr/share/man/* /usr/share/info/* /usr/share/locale/*
rm -f /usr/bin/promtool
rm -rf /var/cache/apt/*.bin /var/cache/apt/archives/*.deb /var/lib/apt/lists/*
"#,
        prometheus_yml = prometheus::config(LISTEN),
    )
}

/// Where the daemon serves, as the unit sets it.
const LISTEN: &str = "127.0.0.1:10470";
const SOCKET: &str = "/run/kcmp-trace/kcmp-trace.sock";
const UNIT: &str = "/lib/systemd/system/kcmp-trace.service";
/// The crowd of the first boot.
const CROWD: &str = "--duration 4s --threads 6 --exec-racers 2 --types vm,files";
/// The count of the second boot.
const AFTER_REBOOT: &str = "-n 5000 --threads 2 --types vm,files";
/// Names the workload, so its calls can be told from anyone else's.
const COMM: &str = "kcmp-deployed";

/// One deployment: a stock kernel in one preemption model.
pub struct Guest {
    kernel: Kernel,
    preempt: Option<Preempt>,
    /// The model the kernel must run.
    model: &'static str,
}

impl Guest {
    pub fn name(&self) -> String {
        match self.preempt {
            Some(p) => format!("deployed-{}-{}", self.kernel, p.name()),
            None => format!("deployed-{}", self.kernel),
        }
    }
}

/// Debian's 7.2 in its default model (lazy), and 6.12 booted `preempt=full`: both preempt
/// kernel code, so only kprobes count every call, and the unit must let them attach.
pub fn guests() -> Vec<Guest> {
    vec![
        Guest {
            kernel: Kernel::new(Flavour::Stock, Version::V7_2),
            preempt: None,
            model: "lazy",
        },
        Guest {
            kernel: Kernel::new(Flavour::Stock, Version::V6_12),
            preempt: Some(Preempt::Full),
            model: "full",
        },
    ]
}

/// The architecture the guests run (and whose static binary they need built).
pub const ARCH: Target = Target::X86_64;

/// Shared by both boots' commands: the daemon's endpoints, a deadline on its health, and
/// its journal saved whatever happens.
fn guest_lib() -> String {
    format!(
        r#"set -e
R=/results
metrics() {{ curl -fsS --max-time 30 http://{LISTEN}/metrics; }}
healthy() {{
    n=0
    until curl -fs --max-time 5 -o /dev/null http://{LISTEN}/healthz; do
        n=$((n+1))
        if [ $n -ge 90 ]; then
            echo "no answer on http://{LISTEN}/healthz after $n tries"
            systemctl status --no-pager kcmp-trace || true
            return 1
        fi
        sleep 1
    done
}}
daemon() {{
    systemctl show -p ActiveState -p SubState -p NRestarts -p UnitFileState -p MainPID \
        kcmp-trace > $R/unit.show
    pid=$(systemctl show -p MainPID --value kcmp-trace)
    cat /proc/$pid/status > $R/daemon.status
}}
journal() {{
    journalctl -b -u prometheus -o short-monotonic --no-pager > $R/prometheus.journal 2>&1 || true
    journalctl -b -u kcmp-trace -o short-monotonic --no-pager > $R/journal.txt 2>&1 || true
    journalctl -b -u kcmp-trace -p warning -o cat --no-pager > $R/journal.warnings 2>&1 || true
}}
trap journal EXIT
uname -r > $R/kernel
readlink /proc/1/exe > $R/pid1
cat /proc/sys/kernel/perf_event_paranoid > $R/perf_event_paranoid
cat /sys/kernel/debug/sched/preempt > $R/preempt || true
{prometheus}"#,
        prometheus = prometheus::guest_lib(),
    )
}

/// The first boot: install, enable, start, a crowd; then what the boot wrote to the root.
fn install_script(deb: &str) -> String {
    format!(
        r#"{lib}
# What is written from here on is what a disk would keep for the next boot.
touch /run/kcmp-vm-stamp
apt-get install -y /kcmp-vm/{deb} > $R/apt.log 2>&1
cp {UNIT} $R/unit
systemctl enable --now kcmp-trace 2> $R/enable.log
healthy
systemctl is-enabled kcmp-trace > $R/enabled
# The package's rules are in place now: Prometheus rereads its rule files.
prom_ready
systemctl reload prometheus
daemon
metrics > $R/before.metrics
{prom_before}kcmp-trace stress --json --comm {COMM} {CROWD} > $R/stress.json
metrics > $R/after.metrics
{prom_after}curl -fsS --max-time 30 --unix-socket {SOCKET} http://localhost/api/v1/snapshot > $R/snapshot.json
# As a shutdown leaves them: the daemon and Prometheus stopped, the journal's files closed.
systemctl stop kcmp-trace
systemctl show -p Result -p ExecMainStatus -p ActiveState kcmp-trace > $R/stop.show
systemctl stop prometheus
journal
systemctl stop systemd-journald
cd /
# What changed, and the directories it lies in (the archive creates no parents), parents first.
find . -xdev -mindepth 1 \( -path ./dev -o -path ./proc -o -path ./sys -o -path ./run -o -path ./tmp \
    -o -path ./kcmp-vm -o -path ./results \) -prune -o -cnewer /run/kcmp-vm-stamp -print |
    awk '{{ p = $0; while (p != ".") {{ print p; sub("/[^/]*$", "", p) }} }}' |
    LC_ALL=C sort -u > $R/state.list
cpio -o -H newc --quiet < $R/state.list | gzip -1 > $R/state.cpio.gz
{nonroot}
# What each hook of the default plan costs per run here, as root.
kcmp-trace doctor --cost --json > $R/doctor-cost.json 2> $R/doctor-cost.err || true
"#,
        lib = guest_lib(),
        prom_before = prometheus::before_workload(),
        prom_after = prometheus::after_crowd(),
        nonroot = nonroot_script(),
    )
}

/// The user that runs the tracer without root, and its group.
const USER: (&str, &str) = ("nobody", "nogroup");
/// What the tracer traces in each run without root, for a few seconds.
const NONROOT_STRESS: &str = "--duration 2s --threads 2 --types vm,files";
/// More kcmp calls in flight at once than the kernel's default return probe instances (10
/// on 2 vCPUs): threads blocked on exec_update_lock behind the racers' execs.
const NONROOT_CROWD: &str = "--duration 2s --threads 12 --exec-racers 2 --types vm,files";

/// One run without root: its name, the capabilities of its copy of the binary, `watch`'s
/// options and the workload's.
struct NonrootRun {
    name: &'static str,
    caps: &'static [&'static str],
    watch: &'static str,
    stress: &'static str,
}

/// What `kcmp-trace --help` gives the default plan (kprobes) on Debian's stock 7.2, with
/// its `perf_event_paranoid` 3, for a user other than root: CAP_BPF and CAP_PERFMON,
/// CAP_DAC_OVERRIDE for kprobe_events, CAP_SYS_ADMIN for perf_event_open, and
/// CAP_SYS_NICE for map reads at SCHED_FIFO.
const KPROBE_CAPS: &[&str] = &[
    "CAP_BPF",
    "CAP_PERFMON",
    "CAP_DAC_OVERRIDE",
    "CAP_SYS_ADMIN",
    "CAP_SYS_NICE",
];
/// The least that counts exactly there: CAP_SYS_ADMIN covers CAP_BPF and CAP_PERFMON, and
/// without CAP_SYS_NICE a map read preempted mid-read makes the kernel skip probe runs.
const KPROBE_LEAST: &[&str] = &["CAP_SYS_ADMIN", "CAP_DAC_OVERRIDE", "CAP_SYS_NICE"];
/// `--help`'s tracepoint set there (CAP_DAC_READ_SEARCH for tracefs's event ids).
const TRACEPOINT_CAPS: &[&str] = &[
    "CAP_BPF",
    "CAP_PERFMON",
    "CAP_DAC_READ_SEARCH",
    "CAP_SYS_ADMIN",
    "CAP_SYS_NICE",
];
/// `--help`'s fentry set: no perf event, no tracefs.
const FENTRY_CAPS: &[&str] = &["CAP_BPF", "CAP_PERFMON", "CAP_SYS_NICE"];

/// The runs, each a few seconds (the tracer's attach takes about 5 s under TCG).
const NONROOT_RUNS: &[NonrootRun] = &[
    NonrootRun {
        name: "kprobe",
        caps: KPROBE_CAPS,
        watch: "",
        stress: NONROOT_STRESS,
    },
    NonrootRun {
        name: "kprobe-least",
        caps: KPROBE_LEAST,
        watch: "",
        stress: NONROOT_STRESS,
    },
    NonrootRun {
        name: "none",
        caps: &[],
        watch: "",
        stress: NONROOT_STRESS,
    },
    NonrootRun {
        name: "no-sys-admin",
        caps: &["CAP_BPF", "CAP_PERFMON", "CAP_DAC_OVERRIDE", "CAP_SYS_NICE"],
        watch: "",
        stress: NONROOT_STRESS,
    },
    NonrootRun {
        name: "no-dac-override",
        caps: &["CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN", "CAP_SYS_NICE"],
        watch: "",
        stress: NONROOT_CROWD,
    },
    NonrootRun {
        name: "tracepoint",
        caps: TRACEPOINT_CAPS,
        watch: "--attach tracepoint",
        stress: NONROOT_STRESS,
    },
    NonrootRun {
        name: "fentry",
        caps: FENTRY_CAPS,
        watch: "--attach fentry",
        stress: NONROOT_STRESS,
    },
];

fn run_caps(name: &str) -> &'static [&'static str] {
    NONROOT_RUNS
        .iter()
        .find(|r| r.name == name)
        .map_or(&[], |r| r.caps)
}

/// After the first boot's state is saved (so none of this reaches the second boot): each
/// run copies the packaged binary into a tmpfs (one that keeps file capabilities), sets
/// the run's capabilities on it, and the user runs `watch --json` on its own stress
/// workload, started once the tracer attached or gave up.
fn nonroot_script() -> String {
    let (user, group) = USER;
    let mut script = format!(
        r#"
# Without root: {user} runs copies of the packaged binary with file capabilities.
N=$R/nonroot
mkdir -p $N /opt/kcmp-nonroot
mount -t tmpfs -o mode=0755 tmpfs /opt/kcmp-nonroot
# A variable, not a function: `$AS_USER cmd &` is cmd's own process (setpriv execs it), so
# $! is the pid to filter on and to stop with SIGINT.
AS_USER="setpriv --reuid={user} --regid={group} --clear-groups --"
nonroot() {{
    name=$1 caps=$2 stress=$3; shift 3
    bin=/opt/kcmp-nonroot/$name
    cp /usr/bin/kcmp-trace $bin
    [ -z "$caps" ] || setcap "$caps+ep" $bin
    getcap $bin > $N/$name.getcap
    rm -f /tmp/go
    $AS_USER kcmp-trace stress --json --wait-for /tmp/go $stress > $N/$name.stress.json &
    sp=$!
    start=$(date +%s.%N)
    $AS_USER $bin watch --json -p $sp "$@" > $N/$name.json 2> $N/$name.err &
    wp=$!
    wait_attached $N/$name.err $wp || true
    cat /proc/$wp/status > $N/$name.status 2>/dev/null || true
    echo "$start $(date +%s.%N)" > $N/$name.attach-time
    touch /tmp/go
    wait $sp || true
    kill -INT $wp 2>/dev/null || true
    code=0
    wait $wp || code=$?
    echo $code > $N/$name.code
}}
"#
    );
    for run in NONROOT_RUNS {
        let caps: Vec<String> = run.caps.iter().map(|c| c.to_lowercase()).collect();
        script.push_str(&format!(
            "nonroot {} '{}' '{}' {}\n",
            run.name,
            caps.join(","),
            run.stress,
            run.watch
        ));
    }
    script
}

/// The second boot: nothing but waiting for the daemon, then a counted workload.
fn reboot_script() -> String {
    format!(
        r#"{lib}
healthy
dpkg-query -W -f '${{Status}} ${{Version}}\n' kcmp-trace > $R/dpkg
daemon
metrics > $R/before.metrics
{prom_before}kcmp-trace stress --json --comm {COMM} {AFTER_REBOOT} > $R/stress.json
metrics > $R/after.metrics
{prom_after}journalctl --list-boots --no-pager > $R/boots
"#,
        lib = guest_lib(),
        prom_before = prometheus::before_workload(),
        prom_after = prometheus::after_reboot(),
    )
}

/// The root as a gzip cpio archive, built on first use.
fn ensure_root() -> Result<PathBuf> {
    let configure = configure();
    let recipe = format!("{}\n{configure}", debootstrap_recipe(PACKAGES));
    let key = &hex(&Sha256::digest(recipe.as_bytes()))[..12];
    let cache = cache_root().join("deployed-root");
    let image = cache.join(format!("{SUITE}-systemd-amd64-{key}.cpio.gz"));
    if image.is_file() {
        return Ok(image);
    }
    fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let _lock = lock(&cache.join(format!("{key}.lock")))?;
    if image.is_file() {
        return Ok(image);
    }
    let tmp = fresh_dir(&cache.join(format!(".tmp-{key}")))?;
    let tree = tmp.join("root");
    let log = target_dir().join("deployed/root-build.log");
    fs::create_dir_all(log.parent().context("log dir")?)?;
    let _ = fs::remove_file(&log);
    eprintln!(
        "vm: debootstrapping the {SUITE} root of the deployed guests into {} (a minute or \
         two, once; log: {})",
        tree.display(),
        log.display()
    );
    debootstrap(&tree, PACKAGES, &log)?;
    logged(
        Command::new("chroot")
            .arg(&tree)
            .args(["/bin/sh", "-c", &configure])
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        &log,
    )?;
    let packed = tmp.join("root.cpio.gz");
    pack(&tree, &packed)?;
    fs::rename(&packed, &image).with_context(|| format!("moving to {}", image.display()))?;
    fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    eprintln!(
        "vm: cached {} ({} MiB)",
        image.display(),
        fs::metadata(&image)?.len() >> 20
    );
    Ok(image)
}

/// `tree` as a gzip cpio ("newc") archive, owners, modes and times kept.
fn pack(tree: &Path, dest: &Path) -> Result<()> {
    let list = Command::new("find")
        .current_dir(tree)
        .args([".", "-mindepth", "1", "-print0"])
        .output()
        .context("running find")?;
    ensure!(list.status.success(), "find in {} failed", tree.display());
    let mut gzip = Command::new("gzip")
        .args(["-6", "-n", "-c"])
        .stdin(Stdio::piped())
        .stdout(fs::File::create(dest).with_context(|| format!("creating {}", dest.display()))?)
        .spawn()
        .context("running gzip")?;
    let mut cpio = Command::new("cpio")
        .current_dir(tree)
        .args(["--null", "--quiet", "-o", "-H", "newc"])
        .stdin(Stdio::piped())
        .stdout(gzip.stdin.take().context("gzip's stdin")?)
        .spawn()
        .context("running cpio")?;
    cpio.stdin
        .take()
        .context("cpio's stdin")?
        .write_all(&list.stdout)
        .context("listing the root to cpio")?;
    ensure!(cpio.wait()?.success(), "cpio failed");
    ensure!(gzip.wait()?.success(), "gzip failed");
    Ok(())
}

/// Boots `layers` with `command` once; the results land in `dir`.
fn boot(
    guest: &Guest,
    which: &str,
    layers: Vec<PathBuf>,
    files: Vec<(PathBuf, String)>,
    command: String,
    dir: &Path,
) -> Result<()> {
    let _ = fs::remove_dir_all(dir);
    let mut spec = VmSpec::new(
        format!("{}-{which}", guest.name()),
        ensure_kernel(guest.kernel)?,
        command,
    );
    spec.cmdline.extend(guest.preempt.map(Preempt::cmdline));
    spec.memory_mb = 2048;
    spec.smp = 2;
    spec.files = files;
    spec.timeout = Duration::from_secs(480);
    spec.results_dir = Some(dir.to_path_buf());
    spec.root = Root::Systemd(layers);
    let outcome = vm::run(&spec)?;
    ensure!(
        outcome.exit_code == 0,
        "the {which} boot's command failed with {} (console: {}):\n{}",
        outcome.exit_code,
        outcome.console_log.display(),
        outcome.output
    );
    eprintln!(
        "vm: {} {which} boot done in {:.1} s (the command started {:.1} s after qemu)",
        guest.name(),
        outcome.elapsed.as_secs_f64(),
        outcome.boot_time.map_or(f64::NAN, |t| t.as_secs_f64()),
    );
    Ok(())
}

/// Runs the deployments, reporting each check by name to `check`. The root and the package
/// are made once, first.
pub fn run(guests: &[Guest], check: &mut dyn FnMut(&str, Result<()>)) {
    if guests.is_empty() {
        return;
    }
    let made = (|| {
        let root = ensure_root()?;
        let deb = dist::package_into(ARCH, &target_dir().join("deployed/package"))?;
        anyhow::Ok((root, deb))
    })();
    let Ok((root, deb)) = made else {
        check("deployed_root_and_package", made.map(drop));
        return;
    };
    for guest in guests {
        run_guest(guest, &root, &deb, check);
    }
}

fn run_guest(guest: &Guest, root: &Path, deb: &Path, check: &mut dyn FnMut(&str, Result<()>)) {
    let name = guest.name();
    let test = |what: &str| format!("{name}_{what}");
    let base = workspace_root().join("target/vm-results").join(&name);
    let (install, reboot) = (base.join("install"), base.join("reboot"));

    let booted = (|| {
        let deb_name = deb
            .file_name()
            .and_then(|n| n.to_str())
            .context("the package's name")?;
        boot(
            guest,
            "install",
            vec![root.to_path_buf()],
            vec![(deb.to_path_buf(), format!("/kcmp-vm/{deb_name}"))],
            install_script(deb_name),
            &install,
        )
    })();
    let ok = booted.is_ok();
    check(&test("installs_and_boots"), booted);
    if !ok {
        return;
    }
    check(&test("booted_as_deployed"), as_deployed(&install, guest));
    check(&test("unit_confines_the_daemon"), confined(&install));
    check(&test("kprobe_plan"), kprobe_plan(&install));
    check(&test("crowd_counted_exactly"), crowd_exact(&install));
    check(
        &test("crowd_counted_exactly_in_prometheus"),
        output::read(&install, "stress.json")
            .and_then(|stress| prometheus::counted_exactly(&install, &stress)),
    );
    check(
        &test("prometheus_evaluates_the_packaged_rules"),
        prometheus::rules_evaluated(&install, &workspace_root()),
    );
    check(&test("stops_cleanly"), stops_cleanly(&install));
    let nonroot = install.join("nonroot");
    survey(&nonroot);
    check(
        &test("nonroot_kprobe_caps_count_exactly"),
        nonroot_exact(&nonroot, "kprobe"),
    );
    check(
        &test("nonroot_least_kprobe_caps_count_exactly"),
        nonroot_exact(&nonroot, "kprobe-least"),
    );
    check(
        &test("nonroot_without_caps_refused"),
        nonroot_refused(&nonroot, "none"),
    );
    check(
        &test("nonroot_without_cap_sys_admin_says_why"),
        says_why(&nonroot, "no-sys-admin", "CAP_SYS_ADMIN"),
    );
    check(
        &test("nonroot_without_dac_caps_says_so_and_counts_honestly"),
        without_dac(&nonroot, "no-dac-override", "kprobe"),
    );
    for mode in [AttachMode::Tracepoint, AttachMode::Fentry] {
        check(
            &test(&format!("nonroot_{}_caps_attach", mode.name())),
            nonroot_attaches(&nonroot, mode),
        );
    }
    check(&test("doctor_cost_sees_every_exec"), doctor_cost(&install));

    // A root in an initramfs forgets everything at a reboot: the second boot gets what the
    // first one wrote on top of the root, as a disk would have kept it.
    let rebooted = boot(
        guest,
        "reboot",
        vec![root.to_path_buf(), install.join("state.cpio.gz")],
        Vec::new(),
        reboot_script(),
        &reboot,
    );
    let ok = rebooted.is_ok();
    check(&test("reboots"), rebooted);
    if ok {
        check(&test("comes_back_after_reboot"), comes_back(&reboot));
        check(
            &test("prometheus_sees_the_restart"),
            output::read(&reboot, "stress.json").and_then(|stress| {
                let first = output::read(&install, "stress.json")?;
                prometheus::sees_the_restart(&reboot, &stress, &first)
            }),
        );
    }
}

// ---------------------------------------------------------------------------------
// Checks

fn read(dir: &Path, file: &str) -> Result<String> {
    fs::read_to_string(dir.join(file)).with_context(|| format!("reading {file}"))
}

fn json(dir: &Path, file: &str) -> Result<Value> {
    serde_json::from_str(read(dir, file)?.trim()).with_context(|| format!("parsing {file}"))
}

/// The kernel, init and sysctl Debian ships: systemd as PID 1, `perf_event_paranoid` 3,
/// the guest's preemption model.
fn as_deployed(dir: &Path, guest: &Guest) -> Result<()> {
    let (kernel, pid1) = (read(dir, "kernel")?, read(dir, "pid1")?);
    let paranoid = read(dir, "perf_event_paranoid")?;
    let preempt = read(dir, "preempt").unwrap_or_default();
    eprintln!(
        "vm: {}: kernel {}, PID 1 {}, perf_event_paranoid {}, preemption {}",
        guest.name(),
        kernel.trim(),
        pid1.trim(),
        paranoid.trim(),
        preempt.trim()
    );
    ensure!(
        kernel.trim().ends_with("-cloud-amd64"),
        "not Debian's cloud kernel: {kernel}"
    );
    ensure!(pid1.trim().ends_with("/systemd"), "PID 1 is {pid1}");
    ensure!(
        paranoid.trim() == "3",
        "perf_event_paranoid is {paranoid}, Debian's is 3"
    );
    ensure!(
        preempt.contains(&format!("({})", guest.model)),
        "preemption {preempt:?}, want {}",
        guest.model
    );
    Ok(())
}

/// Capability names by number (linux/capability.h).
const CAPS: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

fn cap_bit(name: &str) -> Result<u64> {
    let bit = CAPS
        .iter()
        .position(|c| c.eq_ignore_ascii_case(name))
        .with_context(|| format!("unknown capability {name}"))?;
    Ok(1 << bit)
}

/// The unit's `CapabilityBoundingSet=` as a mask.
fn bounding_set(unit: &str) -> Result<u64> {
    let mut mask = 0;
    let mut found = false;
    for names in setting(unit, "CapabilityBoundingSet") {
        found = true;
        for name in names.split_whitespace() {
            mask |= cap_bit(name)?;
        }
    }
    ensure!(found, "the unit sets no CapabilityBoundingSet");
    Ok(mask)
}

/// The values of a `Key=` of the unit, in order.
fn setting<'a>(unit: &'a str, key: &str) -> impl Iterator<Item = &'a str> {
    let prefix = format!("{key}=");
    unit.lines()
        .filter_map(move |l| l.trim().strip_prefix(prefix.as_str()).map(str::trim))
}

/// Sandboxing settings that take capabilities out of the bounding set whatever
/// `CapabilityBoundingSet=` says, as systemd applies them (`unit_patch_contexts()`).
const DROPPED_BY: &[(&str, &[&str])] = &[
    ("PrivateDevices", &["CAP_MKNOD", "CAP_SYS_RAWIO"]),
    ("ProtectKernelModules", &["CAP_SYS_MODULE"]),
    ("ProtectKernelLogs", &["CAP_SYSLOG"]),
    ("ProtectClock", &["CAP_SYS_TIME", "CAP_WAKE_ALARM"]),
];

/// The capabilities the unit leaves its process: its bounding set less what its sandboxing
/// settings drop. Says which of its own capabilities a setting took away.
fn granted(unit: &str) -> Result<(u64, Vec<String>)> {
    let mut mask = bounding_set(unit)?;
    let mut dropped = Vec::new();
    for (key, caps) in DROPPED_BY {
        let on = setting(unit, key)
            .last()
            .is_some_and(|v| matches!(v, "yes" | "true" | "on" | "1"));
        if !on {
            continue;
        }
        for cap in *caps {
            let bit = cap_bit(cap)?;
            if mask & bit != 0 {
                dropped.push(format!("{key}= drops {cap}"));
                mask &= !bit;
            }
        }
    }
    Ok((mask, dropped))
}

fn cap_names(mask: u64) -> String {
    let names: Vec<&str> = (0..CAPS.len())
        .filter(|b| mask & (1 << b) != 0)
        .map(|b| CAPS[b])
        .collect();
    names.join(" ")
}

/// A line of /proc/PID/status.
fn status_field<'a>(status: &'a str, field: &str) -> Result<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
        .with_context(|| format!("no {field} in the daemon's status"))
}

/// The daemon runs as root holding exactly the unit's capabilities, no more (no
/// CAP_SYS_PTRACE, no CAP_SYS_MODULE, ...), and cannot gain any.
fn daemon_caps(dir: &Path, want: u64) -> Result<()> {
    let status = read(dir, "daemon.status")?;
    let eff = u64::from_str_radix(status_field(&status, "CapEff")?, 16)?;
    let bnd = u64::from_str_radix(status_field(&status, "CapBnd")?, 16)?;
    eprintln!("vm: the daemon's CapEff: {}", cap_names(eff));
    ensure!(
        eff == want && bnd == want,
        "CapEff {} and CapBnd {}, the unit's set {}",
        cap_names(eff),
        cap_names(bnd),
        cap_names(want)
    );
    ensure!(
        eff & (1 << 19) == 0,
        "the daemon holds CAP_SYS_PTRACE: {}",
        cap_names(eff)
    );
    ensure!(
        status_field(&status, "NoNewPrivs")? == "1",
        "NoNewPrivs is not set"
    );
    Ok(())
}

fn confined(dir: &Path) -> Result<()> {
    let enabled = read(dir, "enabled")?;
    ensure!(enabled.trim() == "enabled", "the unit is {enabled}");
    let (want, dropped) = granted(&read(dir, "unit")?)?;
    if !dropped.is_empty() {
        eprintln!(
            "vm: of the unit's CapabilityBoundingSet, {}",
            dropped.join(", ")
        );
    }
    daemon_caps(dir, want)
}

/// The plan the daemon logged and serves: kprobes, with no candidate tried before them.
fn kprobe_plan(dir: &Path) -> Result<()> {
    let journal = read(dir, "journal.txt")?;
    let attached = journal
        .lines()
        .find(|l| l.contains("kcmp-trace: attached ("))
        .with_context(|| format!("the journal has no attach line:\n{journal}"))?;
    eprintln!("vm: journal: {}", attached.trim());
    let fallbacks: Vec<&str> = journal
        .lines()
        .filter(|l| l.contains(" instead of "))
        .collect();
    ensure!(
        fallbacks.is_empty(),
        "the daemon fell back:\n{}",
        fallbacks.join("\n")
    );
    ensure!(
        attached.contains("attached (kprobe)"),
        "not the kprobe plan: {attached}"
    );
    journal_clean(dir)?;
    let m = Metrics::read(dir, "after.metrics")?;
    ensure!(
        m.get("kcmp_trace_attach_mode{mode=\"kprobe\"}") == 1,
        "attach_mode is not kprobe: {:?}",
        m.family("kcmp_trace_attach_mode")
    );
    ensure!(
        m.family("kcmp_trace_attach_rejected").is_empty(),
        "candidates rejected: {:?}",
        m.family("kcmp_trace_attach_rejected")
    );
    Ok(())
}

/// The counters that say what the numbers may be missing: all 0.
fn nothing_missing(m: &Metrics) -> Result<()> {
    let mut bad = Vec::new();
    for family in [
        "kcmp_trace_incomplete_total",
        "kcmp_trace_program_misses_total",
        "kcmp_trace_lost_exits_total",
        "kcmp_trace_unpaired_exits_total",
        "kcmp_trace_unclassified_total",
        "kcmp_trace_unattributed_calls_total",
        "kcmp_trace_lock_waits_unfinished_total",
    ] {
        let series = m.family(family);
        ensure!(!series.is_empty(), "/metrics has no {family}");
        bad.extend(series.into_iter().filter(|(_, v)| *v != 0));
    }
    ensure!(bad.is_empty(), "not exact: {bad:?}");
    Ok(())
}

/// The crowd's calls, counted by the daemon exactly: for the workload's process and in
/// all, by type, every one `locked` (Debian's kernels have no fast path), nothing missing.
fn crowd_exact(dir: &Path) -> Result<()> {
    let stress: StressReport = output::read(dir, "stress.json")?;
    let (before, after) = (
        Metrics::read(dir, "before.metrics")?,
        Metrics::read(dir, "after.metrics")?,
    );
    let snapshot: Snapshot = output::read(dir, "snapshot.json")?;
    let calls = stress.calls;
    let total = after.sum("kcmp_trace_calls_total") - before.sum("kcmp_trace_calls_total");
    let process = snapshot
        .report
        .top_processes
        .iter()
        .find(|p| p.tgid == stress.pid)
        .map(|p| p.calls);
    eprintln!(
        "vm: crowd ({CROWD}): stress counted {calls} calls; the daemon {} for its process, \
         {total} in all since the last scrape",
        process.map_or_else(|| "none".to_owned(), |n| n.to_string())
    );
    ensure!(
        calls > 0 && process == Some(calls) && total == calls,
        "stress made {calls} calls; the daemon counted {} for it, {total} in all, and says \
         exact {} with incomplete {:?}",
        process.map_or_else(|| "none".to_owned(), |n| n.to_string()),
        snapshot.report.exact,
        snapshot.report.incomplete
    );
    for (kcmp_type, &n) in &stress.by_type {
        let counted = after.sum_with("kcmp_trace_calls_total", &format!("type=\"{kcmp_type}\""))
            - before.sum_with("kcmp_trace_calls_total", &format!("type=\"{kcmp_type}\""));
        ensure!(
            counted == n,
            "{kcmp_type}: stress made {n}, the daemon counted {counted}"
        );
    }
    let locked = after.sum_with("kcmp_trace_calls_total", "outcome=\"locked\"")
        - before.sum_with("kcmp_trace_calls_total", "outcome=\"locked\"");
    ensure!(
        locked == stress.reached_comparison,
        "{locked} calls locked of the {} that found their tasks",
        stress.reached_comparison
    );
    ensure!(
        snapshot.report.exact,
        "the daemon's report is not exact: {:?}",
        snapshot.report.incomplete
    );
    nothing_missing(&after)
}

/// The unit's journal of the boot has no warning or error: none at systemd's priorities,
/// and none in the daemon's own log lines.
fn journal_clean(dir: &Path) -> Result<()> {
    let journal = read(dir, "journal.txt")?;
    let noisy: Vec<&str> = journal
        .lines()
        .filter(|l| {
            l.contains(" WARN ") || l.contains(" ERROR ") || l.to_lowercase().contains("error")
        })
        .collect();
    let warnings = read(dir, "journal.warnings")?;
    let warnings = warnings.trim();
    ensure!(
        noisy.is_empty() && (warnings.is_empty() || warnings == "-- No entries --"),
        "the unit's journal is not clean:\n{}\n{warnings}",
        noisy.join("\n")
    );
    Ok(())
}

/// `systemctl stop`: SIGTERM, and the daemon exits 0.
fn stops_cleanly(dir: &Path) -> Result<()> {
    let show = read(dir, "stop.show")?;
    for want in ["Result=success", "ExecMainStatus=0", "ActiveState=inactive"] {
        ensure!(
            show.lines().any(|l| l == want),
            "after systemctl stop: {show}"
        );
    }
    Ok(())
}

/// After the reboot: the package still installed, the unit started by itself and running
/// with the same confinement, its counters from zero, its journal clean, and exact.
fn comes_back(dir: &Path) -> Result<()> {
    let dpkg = read(dir, "dpkg")?;
    ensure!(
        dpkg.starts_with("install ok installed"),
        "the package after the reboot: {dpkg}"
    );
    let show = read(dir, "unit.show")?;
    let prop = |name: &str| {
        show.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_default()
    };
    ensure!(
        prop("ActiveState") == "active"
            && prop("UnitFileState") == "enabled"
            && prop("NRestarts") == "0",
        "the unit after the reboot: {show}"
    );
    // The journal is kept on the root: the first boot's must still be there.
    let boots = read(dir, "boots")?;
    let boots = boots
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .count();
    eprintln!(
        "vm: after the reboot: {}; the journal holds {boots} boots",
        dpkg.trim()
    );
    ensure!(boots == 2, "the journal holds {boots} boot(s), not both");
    daemon_caps(dir, granted(&read(dir, "../install/unit")?)?.0)?;
    let journal = read(dir, "journal.txt")?;
    ensure!(
        journal.contains("kcmp-trace: attached (kprobe)"),
        "no kprobe attach in this boot's journal:\n{journal}"
    );
    journal_clean(dir)?;
    let (before, after) = (
        Metrics::read(dir, "before.metrics")?,
        Metrics::read(dir, "after.metrics")?,
    );
    let at_start = before.sum("kcmp_trace_calls_total");
    ensure!(
        at_start == 0,
        "the counters start at {at_start} calls after the reboot"
    );
    let stress: StressReport = output::read(dir, "stress.json")?;
    let calls = stress.calls;
    let total = after.sum("kcmp_trace_calls_total");
    eprintln!(
        "vm: after the reboot: counters from {at_start}; stress counted {calls} calls, the \
         daemon {total}"
    );
    ensure!(
        total == calls,
        "stress made {calls} calls, the daemon counted {total}"
    );
    nothing_missing(&after)
}

/// A run without root: its exit code, stderr, what `watch --json` printed (nothing when
/// it was refused), and the workload's own count.
struct Nonroot {
    code: i32,
    err: String,
    watched: Option<Watched>,
    stress: Option<StressReport>,
    status: String,
    attach_secs: f64,
}

impl Nonroot {
    fn read(dir: &Path, name: &str) -> Result<Nonroot> {
        let code = read(dir, &format!("{name}.code"))?;
        let file = format!("{name}.json");
        let out = read(dir, &file).unwrap_or_default();
        let watched = match out.trim() {
            "" => None,
            _ => Some(Watched::parse(&out, &file)?),
        };
        let stress_file = format!("{name}.stress.json");
        let stress = match read(dir, &stress_file) {
            Ok(text) => Some(output::parse(&text, &stress_file)?),
            Err(_) => None,
        };
        let times = read(dir, &format!("{name}.attach-time")).unwrap_or_default();
        let times: Vec<f64> = times
            .split_whitespace()
            .filter_map(|t| t.parse().ok())
            .collect();
        Ok(Nonroot {
            code: code.trim().parse().context("the exit code")?,
            err: read(dir, &format!("{name}.err"))?,
            watched,
            stress,
            status: read(dir, &format!("{name}.status")).unwrap_or_default(),
            attach_secs: match times[..] {
                [a, b] => b - a,
                _ => f64::NAN,
            },
        })
    }

    /// The plan `watch` printed first.
    fn plan(&self) -> Result<&Plan> {
        Ok(&self.watched.as_ref().context("no plan line")?.plan)
    }

    fn summary(&self) -> String {
        let none = || "none".to_owned();
        let plan = self.plan().ok();
        let rejected = plan.map(|p| format!("{:?}", p.rejected));
        let plan = plan.map_or_else(none, Plan::attach);
        let total = self.watched.as_ref().and_then(|w| w.total().ok());
        let calls = total.map_or_else(none, |t| t.calls.to_string());
        let exact = total.map_or_else(none, |t| t.exact.to_string());
        let truth = self
            .stress
            .as_ref()
            .map_or_else(none, |s| s.calls.to_string());
        let eff = status_field(&self.status, "CapEff")
            .ok()
            .and_then(|e| u64::from_str_radix(e, 16).ok())
            .map_or_else(|| "?".to_owned(), cap_names);
        format!(
            "exit {}, attach {:.1} s, plan {plan}, rejected {}, counted {calls} of {truth}, \
             exact {exact}, CapEff [{eff}], stderr: {}",
            self.code,
            self.attach_secs,
            rejected.unwrap_or_default(),
            self.err
                .trim()
                .lines()
                .filter(|l| !l.contains("\"scope\""))
                .collect::<Vec<_>>()
                .join(" | ")
        )
    }
}

/// Every run without root, as it went.
fn survey(dir: &Path) {
    for run in NONROOT_RUNS {
        match Nonroot::read(dir, run.name) {
            Ok(r) => eprintln!("vm: without root, {}: {}", run.name, r.summary()),
            Err(e) => eprintln!("vm: without root, {}: {e:#}", run.name),
        }
    }
}

/// A run that must attach: as the user, holding the run's capabilities and nothing else,
/// exit 0 after SIGINT, the plan `mode` with no candidate rejected. Returns the run, its
/// total and the workload's report.
fn attached(dir: &Path, name: &str, mode: AttachMode) -> Result<(Nonroot, Report, StressReport)> {
    let r = Nonroot::read(dir, name)?;
    let want = run_caps(name)
        .iter()
        .try_fold(0, |m, c| Ok::<_, anyhow::Error>(m | cap_bit(c)?))?;
    let uid = status_field(&r.status, "Uid").unwrap_or_default();
    ensure!(
        !uid.is_empty() && uid.split_whitespace().all(|u| u == "65534"),
        "the tracer ran as uid {uid:?}, not {}",
        USER.0
    );
    let eff = u64::from_str_radix(status_field(&r.status, "CapEff")?, 16)?;
    ensure!(
        eff == want,
        "the tracer held {}, not {}",
        cap_names(eff),
        cap_names(want)
    );
    ensure!(r.code == 0, "watch exited {}: {}", r.code, r.err.trim());
    let plan = r.plan()?;
    ensure!(
        plan.mode == mode,
        "the plan is {}, not {}; rejected: {:?}",
        plan.attach(),
        mode.name(),
        plan.rejected
    );
    ensure!(
        plan.rejected.is_empty(),
        "candidates rejected: {:?}",
        plan.rejected
    );
    let total = r.watched.as_ref().context("no output")?.total()?.clone();
    let stress = r.stress.clone().context("no stress report")?;
    Ok((r, total, stress))
}

/// The user, with a kprobe run's capabilities and nothing else, attached the default plan
/// (kprobes, nothing rejected) and counted the workload's calls exactly.
fn nonroot_exact(dir: &Path, name: &str) -> Result<()> {
    let (_, total, stress) = attached(dir, name, AttachMode::Kprobe)?;
    let (calls, truth) = (total.calls, stress.calls);
    eprintln!(
        "vm: without root ({} with {}): stress counted {truth} calls, the tracer {calls}, \
         exact {}",
        USER.0,
        run_caps(name).join(" "),
        total.exact,
    );
    ensure!(
        truth > 0 && calls == truth && total.exact,
        "stress made {truth} calls; the tracer counted {calls}, exact {}, incomplete {:?}",
        total.exact,
        total.incomplete
    );
    ensure!(
        total.by_type == stress.by_type,
        "by type: the tracer {:?}, stress {:?}",
        total.by_type,
        stress.by_type
    );
    Ok(())
}

/// An attach mode asked for, with `--help`'s set for it: attached, and honest: exact, or
/// short by no more than it says.
fn nonroot_attaches(dir: &Path, mode: AttachMode) -> Result<()> {
    let (_, total, stress) = attached(dir, mode.name(), mode)?;
    let (calls, truth, slack) = honest(&total, &stress)?;
    eprintln!(
        "vm: without root, --attach {} with {}: {calls} of {truth} calls, exact {}, may be \
         short by {slack}",
        mode.name(),
        run_caps(mode.name()).join(" "),
        total.exact
    );
    Ok(())
}

/// A total held to the workload's count: exact, or short by no more than it says. Returns
/// (counted, made, may be short by).
fn honest(total: &Report, stress: &StressReport) -> Result<(u64, u64, u64)> {
    let (calls, truth, slack) = (total.calls, stress.calls, total.incomplete.calls);
    ensure!(truth > 0 && calls <= truth, "{calls} of {truth} calls");
    if total.exact {
        ensure!(calls == truth, "claims exact, counted {calls} of {truth}");
    } else {
        ensure!(
            truth - calls <= slack,
            "{calls} of {truth} calls, but says it may be short by only {slack}"
        );
    }
    Ok((calls, truth, slack))
}

/// Without file capabilities: exit 3, and one line naming CAP_BPF and CAP_PERFMON.
fn nonroot_refused(dir: &Path, name: &str) -> Result<()> {
    let r = Nonroot::read(dir, name)?;
    let err = r.err.trim();
    eprintln!("vm: without root or capabilities: exit {}: {err}", r.code);
    ensure!(r.code == 3, "exit {}, not 3: {err}", r.code);
    ensure!(
        err.lines().count() == 1 && err.contains("CAP_BPF") && err.contains("CAP_PERFMON"),
        "not one line naming CAP_BPF and CAP_PERFMON: {err}"
    );
    Ok(())
}

/// The return probes' instances a kprobe plan states (`N instances each`).
fn return_instances(plan: &Plan) -> Option<u64> {
    plan.accuracy
        .iter()
        .find(|(what, _)| what == "kretprobes")?
        .1
        .split_once(" instances each")?
        .0
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

/// The kprobe set less CAP_DAC_OVERRIDE, so with no DAC capability at all: kprobe_events
/// cannot be written, so the return probes cannot be defined there with room for many
/// calls at once; they attach through perf's kprobe PMU with the kernel's default number
/// of instances, fewer than `full`'s. Never silently: the plan's `why` and a warning on
/// stderr (the daemon's journal) say how many before counting starts, and name
/// CAP_DAC_OVERRIDE. Under a crowd of more threads than that, the count is honest: exact,
/// or short by no more than it says (the returns lost are counted).
fn without_dac(dir: &Path, name: &str, full: &str) -> Result<()> {
    let (r, total, stress) = attached(dir, name, AttachMode::Kprobe)?;
    let plan = r.plan()?;
    let few = return_instances(plan).context("no kretprobes line in the plan")?;
    let (f, ..) = attached(dir, full, AttachMode::Kprobe)?;
    let many = return_instances(f.plan()?).context("no kretprobes line in the full set's plan")?;
    ensure!(
        few < many,
        "{few} return probe instances without CAP_DAC_OVERRIDE, {many} with it"
    );
    let why = &plan.why;
    ensure!(
        why.contains(&format!(" {few} instances each, not {many} "))
            && why.contains("CAP_DAC_OVERRIDE"),
        "the plan's why does not say {few} instances, not {many}, for want of \
         CAP_DAC_OVERRIDE: {why}"
    );
    let warned = r.err.lines().any(|l| {
        l.contains("WARN")
            && l.contains(&format!(" {few} instances"))
            && l.contains("CAP_DAC_OVERRIDE")
    });
    ensure!(
        warned,
        "no warning on stderr of {few} instances naming CAP_DAC_OVERRIDE: {}",
        r.err.trim()
    );
    let (calls, truth, slack) = honest(&total, &stress)?;
    eprintln!(
        "vm: without CAP_DAC_OVERRIDE (nor CAP_DAC_READ_SEARCH): kprobes with {few} return \
         probe instances each, {many} with it, and the plan said so; under 12 threads and 2 \
         exec racers {calls} of {truth} calls, exact {}, may be short by {slack}; why: {why}",
        total.exact
    );
    Ok(())
}

/// Lacking only `cap` of the kprobe set: never silently. Either refused with exit 3
/// naming `cap`, or another plan whose rejected kprobe candidate says `cap` is missing; and
/// the kprobe check fails on it.
fn says_why(dir: &Path, name: &str, cap: &str) -> Result<()> {
    let r = Nonroot::read(dir, name)?;
    if r.code == 3 {
        eprintln!("vm: without {cap}: exit 3: {}", r.err.trim());
        ensure!(
            r.err.contains(cap),
            "exit 3 without naming {cap}: {}",
            r.err.trim()
        );
    } else {
        ensure!(r.code == 0, "exit {}: {}", r.code, r.err.trim());
        let plan = r.plan()?;
        ensure!(
            plan.mode != AttachMode::Kprobe,
            "attached kprobes without {cap}: {plan:?}"
        );
        let (candidate, why) = plan
            .rejected
            .iter()
            .find(|(candidate, _)| candidate.starts_with(AttachMode::Kprobe.name()))
            .with_context(|| {
                format!(
                    "fell back to {} without a rejected kprobe candidate: {:?}",
                    plan.attach(),
                    plan.rejected
                )
            })?;
        eprintln!(
            "vm: without {cap}: attached {}; {candidate} not used: {why}",
            plan.attach()
        );
        ensure!(
            why.contains(cap),
            "the kprobe candidate's rejection does not name {cap}: {why}"
        );
    }
    match nonroot_exact(dir, name) {
        Ok(()) => bail!("the kprobe check passed without {cap}"),
        Err(e) => eprintln!("vm: without {cap}, the kprobe check fails: {e:#}"),
    }
    Ok(())
}

/// `doctor --cost` as root: every exec hook of the default plan ran at least once per exec
/// of its workload, and took time.
fn doctor_cost(dir: &Path) -> Result<()> {
    let d = json(dir, "doctor-cost.json")
        .with_context(|| read(dir, "doctor-cost.err").unwrap_or_default())?;
    let cost = &d["cost"]["Ok"];
    ensure!(cost.is_object(), "no cost: {}", d["cost"]);
    let execs = cost["workload"]["execs"].as_u64().context("execs")?;
    let hooks = cost["hooks"].as_array().context("hooks")?;
    for h in hooks {
        eprintln!(
            "vm: doctor --cost: {} on {}: {} runs, {} ns/run, fires for {}",
            h["program"], h["target"], h["runs"], h["ns_per_run"], h["outside_kcmp"]
        );
    }
    let exec_hooks: Vec<&Value> = hooks
        .iter()
        .filter(|h| h["outside_kcmp"] == "every exec")
        .collect();
    ensure!(!exec_hooks.is_empty(), "no exec hook in the plan: {cost}");
    for h in exec_hooks {
        let runs = h["runs"]
            .as_u64()
            .with_context(|| format!("no runs: {h}"))?;
        ensure!(
            runs >= execs && h["ns_per_run"].as_f64().is_some_and(|ns| ns > 0.0),
            "{} ran {runs} times over {execs} execs, {} ns/run",
            h["target"],
            h["ns_per_run"]
        );
    }
    Ok(())
}

/// A scrape of /metrics: each sample by its series (name and labels).
struct Metrics(BTreeMap<String, f64>);

impl Metrics {
    fn read(dir: &Path, file: &str) -> Result<Metrics> {
        let text = read(dir, file)?;
        let mut samples = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line
                .rsplit_once(' ')
                .with_context(|| format!("{file}: bad line {line:?}"))?;
            let value: f64 = value
                .parse()
                .with_context(|| format!("{file}: bad value in {line:?}"))?;
            samples.insert(series.to_owned(), value);
        }
        if samples.is_empty() {
            bail!("{file} is empty");
        }
        Ok(Metrics(samples))
    }

    /// One series' value, 0 when absent.
    fn get(&self, series: &str) -> u64 {
        self.0.get(series).map_or(0, |v| *v as u64)
    }

    /// The series of a family (`name` or `name{...}`).
    fn family(&self, name: &str) -> Vec<(&str, u64)> {
        self.0
            .iter()
            .filter(|(s, _)| *s == name || s.starts_with(&format!("{name}{{")))
            .map(|(s, v)| (s.as_str(), *v as u64))
            .collect()
    }

    fn sum(&self, name: &str) -> u64 {
        self.family(name).iter().map(|(_, v)| v).sum()
    }

    /// The sum over the family's series carrying the label `label` (`key="value"`).
    fn sum_with(&self, name: &str, label: &str) -> u64 {
        self.family(name)
            .iter()
            .filter(|(s, _)| s.contains(label))
            .map(|(_, v)| v)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_units_bounding_set_reads_as_a_mask() -> Result<()> {
        let unit = fs::read_to_string(workspace_root().join("contrib/kcmp-trace.service"))?;
        let (mask, _) = granted(&unit)?;
        assert_ne!(mask, 0);
        assert_eq!(mask & (1 << 19), 0, "CAP_SYS_PTRACE: {}", cap_names(mask));
        let (mask, dropped) = granted(
            "CapabilityBoundingSet=CAP_BPF CAP_SYSLOG CAP_SYS_TIME\nProtectKernelLogs=yes\n\
             ProtectClock=no\n",
        )?;
        assert_eq!(cap_names(mask), "CAP_SYS_TIME CAP_BPF");
        assert_eq!(dropped, ["ProtectKernelLogs= drops CAP_SYSLOG"]);
        assert_eq!(
            bounding_set("CapabilityBoundingSet=CAP_BPF CAP_PERFMON\n")?,
            0xc0_0000_0000
        );
        assert!(bounding_set("CapabilityBoundingSet=CAP_NOPE\n").is_err());
        Ok(())
    }

    #[test]
    fn metrics_families_and_sums() -> Result<()> {
        let dir = fresh_dir(
            &std::env::temp_dir().join(format!("xtask-deployed-{}", std::process::id())),
        )?;
        fs::write(
            dir.join("m"),
            "# HELP x\nkcmp_trace_calls_total{type=\"KCMP_VM\",outcome=\"locked\",result=\"equal\"} 3\n\
             kcmp_trace_calls_total{type=\"KCMP_FILES\",outcome=\"locked\",result=\"less\"} 4\n\
             kcmp_trace_calls_total_other 9\nkcmp_trace_lost_exits_total 0\n",
        )?;
        let m = Metrics::read(&dir, "m")?;
        fs::remove_dir_all(&dir)?;
        assert_eq!(m.sum("kcmp_trace_calls_total"), 7);
        assert_eq!(m.sum_with("kcmp_trace_calls_total", "type=\"KCMP_VM\""), 3);
        assert_eq!(
            m.family("kcmp_trace_lost_exits_total"),
            [("kcmp_trace_lost_exits_total", 0)]
        );
        Ok(())
    }
}
