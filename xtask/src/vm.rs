//! Runs one shell command as root inside a qemu guest (TCG, so it works without KVM).
//!
//! The guest (x86-64, or arm64 on qemu's `virt` machine) boots `spec.kernel` with a
//! generated initramfs: a static busybox of its architecture, the given files (static
//! binaries: the guest has no shared libraries), the kernel's config at
//! `/boot/config-<release>` as Debian installs it, and an `/init` that mounts proc, sysfs,
//! devtmpfs, tracefs, debugfs and bpffs, runs the command and powers off.
//!
//! Or ([`Root::Systemd`]) it boots a whole Debian root from the initramfs with systemd as
//! PID 1, and a unit runs the command once the system is up; results come back the same way.
//!
//! Two channels keep kernel messages and data apart:
//! * the serial console (ttyS0, ttyAMA0 on arm64: kernel log plus `@@KCMP-TRACE-VM@@`
//!   markers from /init), written to `<log_dir>/<name>-<timestamp>.log` and scanned for
//!   panics and splats;
//! * a data port (ttyS1 in raw mode; on arm64, whose `virt` machine has one UART, a
//!   virtio serial port) carries one framed gzip tar with the command's output, its exit
//!   status and (if requested) everything it wrote under `/results`, checked by length
//!   and sha256 on the host, so results arrive byte-exact.
//!
//! Serial transfer is slow under TCG (roughly 1 MB/s): keep `/results` to a few MB.

use std::{
    env,
    fs::{self, File},
    io::{self, Read, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use sha2::{Digest, Sha256};

use crate::{
    apt::{self, Apt},
    harness::GUEST_FUNCTIONS,
    initramfs::{Node, Tree},
    kernel::{self, Flavour, Kernel, Preempt, Version},
    target::{Target, static_binary, target_dir},
    workspace::{fresh_dir, hex, tail},
};

/// Printed by /init on the console; nothing in the kernel prints this.
const MARKER: &str = "@@KCMP-TRACE-VM@@";
/// Host-side allowance on top of the command's timeout for boot, transfer and reboot.
const HOST_GRACE: Duration = Duration::from_secs(60);
/// A TCG boot takes seconds; a guest silent this long is hung, not slow.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const CONSOLE_TAIL_LINES: usize = 60;
const BUSYBOX: &str = "/bin/busybox";
/// Where the kernel's config lands in the initramfs, before /init renames it.
const KERNEL_CONFIG: &str = "/boot/config";
/// Names the arm64 guest's data port (virtio serial), which /init finds by it.
const DATA_PORT: &str = "kcmp-data";

/// Console lines that mean the kernel is broken, whatever the command's exit status.
const KERNEL_PROBLEMS: &[&str] = &[
    "Kernel panic",
    "BUG:",
    "kernel BUG at",
    "Oops",
    "WARNING: CPU",
    "WARNING: possible",
    "WARNING: suspicious",
    "general protection fault",
    "Unable to handle kernel",
    "detected stalls",
    "verifier bug",
    "verifier internal error",
];

/// The guest's root file system, and what runs the command.
#[derive(Clone, Debug, Default)]
pub enum Root {
    /// A static busybox and the spec's files; a generated /init mounts the kernel's file
    /// systems, runs the command and powers off.
    #[default]
    Busybox,
    /// A Debian root booted with systemd as PID 1 (`rdinit=/sbin/init`): gzip cpio archives
    /// unpacked in this order (each may overwrite what the ones before it hold), then one
    /// with the spec's files and a unit that runs the command once multi-user.target is
    /// reached. x86-64 only.
    Systemd(Vec<PathBuf>),
}

/// What to run and how.
#[derive(Clone, Debug)]
pub struct VmSpec {
    /// Names the console log: `<log_dir>/<name>-<timestamp>.log`.
    pub name: String,
    /// The guest's architecture: the kernel's and every binary's in `files`.
    pub arch: Target,
    /// bzImage/vmlinuz to boot (see [`kernel::ensure_kernel`]).
    pub kernel: PathBuf,
    /// Kernel command-line parameters added to the runner's own (e.g. `preempt=full`).
    pub cmdline: Vec<String>,
    /// (host path, absolute guest path) pairs; directories are copied recursively.
    pub files: Vec<(PathBuf, String)>,
    /// Run by `/bin/sh` in the guest, as root, with `/` as working directory, after the
    /// definitions of [`GUEST_FUNCTIONS`]. Its guest-side directories are on PATH;
    /// `/results` is where to leave result files.
    pub command: String,
    /// Limit for the command; the host kills qemu [`HOST_GRACE`] later if still running.
    pub timeout: Duration,
    pub smp: u32,
    pub memory_mb: u32,
    /// If set, the guest's `/results` tree is copied here after the command.
    pub results_dir: Option<PathBuf>,
    /// Where console logs go (`target/vm` by default).
    pub log_dir: PathBuf,
    /// Echo the command's output to the host's stdout while it runs (for people watching).
    pub live: bool,
    /// The root file system: busybox by default.
    pub root: Root,
}

impl VmSpec {
    /// An x86-64 spec with defaults: 2 CPUs, 1 GiB, 300 s, no extra files, logs in
    /// target/vm.
    pub fn new(name: impl Into<String>, kernel: PathBuf, command: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            arch: Target::X86_64,
            kernel,
            cmdline: Vec::new(),
            files: Vec::new(),
            command: command.into(),
            timeout: Duration::from_secs(300),
            smp: 2,
            memory_mb: 1024,
            results_dir: None,
            log_dir: target_dir().join("vm"),
            live: false,
            root: Root::Busybox,
        }
    }
}

/// A finished run. A kernel problem, a timeout or a lost result is an `Err` instead.
#[derive(Clone, Debug)]
pub struct VmOutcome {
    /// The command's exit status (128 + signal number if a signal ended it).
    pub exit_code: i32,
    /// The command's stdout and stderr, interleaved as written (lossy UTF-8).
    pub output: String,
    /// The serial console log of the whole boot.
    pub console_log: PathBuf,
    /// From starting qemu to /init starting the command.
    pub boot_time: Option<Duration>,
    /// From starting qemu to qemu exiting.
    pub elapsed: Duration,
}

/// `cargo xtask vm`: run a command in a guest and exit with its status.
#[derive(Debug, clap::Args)]
pub struct VmArgs {
    /// Kernel to boot.
    #[arg(long, value_enum, default_value = "fastpath")]
    pub kernel: Flavour,
    /// Its version (Debian's images and linux-source packages).
    #[arg(long, value_enum, default_value = "6.12")]
    pub kernel_version: Version,
    /// The guest's architecture (aarch64: `--kernel stock` only).
    #[arg(long, value_enum, default_value = "x86_64")]
    pub arch: Target,
    /// Preemption model to boot a PREEMPT_DYNAMIC kernel with (`preempt=` on the command
    /// line); the kernel's default when absent.
    #[arg(long, value_enum)]
    pub preempt: Option<Preempt>,
    /// Seconds the command may run in the guest.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Host directory receiving what the command wrote under /results in the guest.
    #[arg(long, value_name = "DIR")]
    pub results: Option<PathBuf>,
    /// Extra file or directory to put into the guest (repeatable).
    #[arg(long = "file", value_name = "HOST:GUEST", value_parser = parse_file_arg)]
    pub files: Vec<(PathBuf, String)>,
    /// Virtual CPUs.
    #[arg(long, default_value_t = 2)]
    pub smp: u32,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 1024)]
    pub memory: u32,
    /// Shell command run in the guest (words are joined with spaces).
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub fn parse_file_arg(s: &str) -> Result<(PathBuf, String), String> {
    match s.split_once(':') {
        Some((host, guest)) if !host.is_empty() && guest.starts_with('/') => {
            Ok((PathBuf::from(host), guest.to_string()))
        }
        _ => Err(format!(
            "expected HOST:GUEST with an absolute GUEST path, got {s:?}"
        )),
    }
}

/// Runs `cargo xtask vm`; returns the guest command's exit status.
///
/// The static kcmp-trace binary of the guest's architecture goes to /usr/bin/kcmp-trace
/// when it has been built; a command naming kcmp-trace without it fails early.
pub fn cli(args: VmArgs) -> Result<i32> {
    args.kernel_version.ensure_boots(args.preempt)?;
    let command = args.command.join(" ");
    let mut files = match default_files(args.arch) {
        Ok(files) => files,
        Err(e) if command.contains("kcmp-trace") => return Err(e),
        Err(_) => Vec::new(),
    };
    files.extend(args.files);

    let kernel = Kernel::new(args.kernel, args.kernel_version).on(args.arch);
    let kernel_image = kernel::ensure_kernel(kernel)?;
    let mut spec = VmSpec::new(kernel.to_string(), kernel_image, command);
    spec.arch = args.arch;
    spec.cmdline.extend(args.preempt.map(Preempt::cmdline));
    spec.files = files;
    spec.timeout = Duration::from_secs(args.timeout);
    spec.smp = args.smp;
    spec.memory_mb = args.memory;
    spec.results_dir = args.results;

    let outcome = run(&spec)?;
    io::stdout()
        .write_all(outcome.output.as_bytes())
        .context("writing the guest output")?;
    eprintln!(
        "vm: exit status {} after {:.1} s (boot {}); console: {}",
        outcome.exit_code,
        outcome.elapsed.as_secs_f64(),
        outcome
            .boot_time
            .map_or_else(|| "?".to_string(), |t| format!("{:.1} s", t.as_secs_f64())),
        outcome.console_log.display()
    );
    Ok(outcome.exit_code)
}

/// The files every test guest gets: the static tracer of its architecture as
/// /usr/bin/kcmp-trace.
pub fn default_files(arch: Target) -> Result<Vec<(PathBuf, String)>> {
    let tracer = static_binary(arch);
    ensure!(
        tracer.is_file(),
        "{} does not exist: run cargo xtask dist (or build kcmp-trace for {}) first",
        tracer.display(),
        arch.triple()
    );
    Ok(vec![(tracer, "/usr/bin/kcmp-trace".to_string())])
}

/// Boots the guest, runs the command and collects its output and results.
pub fn run(spec: &VmSpec) -> Result<VmOutcome> {
    apt::ensure_packages(&[spec.arch.qemu_package(), "busybox-static", "gzip", "tar"])?;
    ensure!(
        spec.kernel.is_file(),
        "no kernel image at {}",
        spec.kernel.display()
    );
    fs::create_dir_all(&spec.log_dir)
        .with_context(|| format!("creating {}", spec.log_dir.display()))?;
    let stem = format!("{}-{}", spec.name, timestamp());
    let sidecar = |suffix: &str| spec.log_dir.join(format!("{stem}.{suffix}"));
    let console_log = sidecar("log");
    let channel = sidecar("channel");
    let initramfs = sidecar("initramfs.gz");
    let qemu_log = sidecar("qemu.log");
    let archive = sidecar("tgz");
    let unpacked = sidecar("d");
    let nonce = nonce()?;

    let init = match &spec.root {
        Root::Busybox => {
            build_initramfs(spec, &nonce, &initramfs)?;
            "/init"
        }
        Root::Systemd(layers) => {
            ensure!(spec.arch == Target::X86_64, "systemd roots are x86-64 only");
            build_systemd_initramfs(spec, layers, &nonce, &initramfs)?;
            "/sbin/init"
        }
    };
    let mut append = format!(
        "console={} quiet panic=-1 rdinit={init}",
        spec.arch.console()
    );
    for param in &spec.cmdline {
        append.push(' ');
        append.push_str(param);
    }
    let mut qemu = Command::new(spec.arch.qemu());
    // One host thread runs every vCPU: with a thread per vCPU, Debian's 6.12 kernel booted
    // preempt=full now and then executed a stale int3 (or a stale call) right after live
    // text patching, which no real CPU does after the kernel's cross-CPU sync; the vCPUs
    // still interleave, so races and preemption stay.
    let accel = env::var("KCMP_TRACE_QEMU_ACCEL").unwrap_or_else(|_| "tcg,thread=single".into());
    qemu.args(["-accel", &accel])
        .args(spec.arch.qemu_machine())
        .args([
            "-nographic",
            "-nodefaults",
            "-no-reboot",
            "-monitor",
            "none",
        ])
        .arg("-smp")
        .arg(spec.smp.to_string())
        .arg("-m")
        .arg(spec.memory_mb.to_string())
        .arg("-serial")
        .arg(format!("file:{}", console_log.display()));
    match spec.arch {
        Target::X86_64 => qemu
            .arg("-serial")
            .arg(format!("file:{}", channel.display())),
        Target::Aarch64 => qemu
            .args(["-device", "virtio-serial-pci", "-chardev"])
            .arg(format!("file,id=data,path={}", channel.display()))
            .arg("-device")
            .arg(format!("virtserialport,chardev=data,name={DATA_PORT}")),
    };
    qemu.arg("-kernel")
        .arg(&spec.kernel)
        .arg("-initrd")
        .arg(&initramfs)
        .arg("-append")
        .arg(&append)
        .stdin(Stdio::null())
        .stdout(File::create(&qemu_log)?)
        .stderr(File::create(&qemu_log)?);
    // Exist before qemu starts, so that polling the console never races its creation.
    File::create(&console_log)?;
    File::create(&channel)?;

    let started = Instant::now();
    let mut child = qemu
        .spawn()
        .with_context(|| format!("starting {}", spec.arch.qemu()))?;
    let deadline = spec.timeout + HOST_GRACE;
    let mut boot_time = None;
    let mut echoed = 0;
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for qemu")? {
            break status;
        }
        if spec.live && boot_time.is_some() {
            echoed = echo_new_console(&console_log, echoed)?;
        }
        if boot_time.is_none() && file_contains(&console_log, &format!("{MARKER} start"))? {
            boot_time = Some(started.elapsed());
        }
        if boot_time.is_none() && started.elapsed() > BOOT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "guest did not start the command within {} s; console {}:\n{}",
                BOOT_TIMEOUT.as_secs(),
                console_log.display(),
                tail(&console_log, CONSOLE_TAIL_LINES)
            );
        }
        if started.elapsed() > deadline {
            // Already exiting is fine; the error below is what matters.
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "guest did not finish within {} s (command timeout {} s + {} s); \
                 console {}:\n{}",
                deadline.as_secs(),
                spec.timeout.as_secs(),
                HOST_GRACE.as_secs(),
                console_log.display(),
                tail(&console_log, CONSOLE_TAIL_LINES)
            );
        }
        thread::sleep(Duration::from_millis(50));
    };
    let elapsed = started.elapsed();
    if boot_time.is_none() && file_contains(&console_log, &format!("{MARKER} start"))? {
        boot_time = Some(elapsed);
    }
    let console =
        fs::read(&console_log).with_context(|| format!("reading {}", console_log.display()))?;
    let console = String::from_utf8_lossy(&console);
    let with_tail = |what: String| {
        anyhow::anyhow!(
            "{what}\nconsole {}:\n{}",
            console_log.display(),
            tail(&console_log, CONSOLE_TAIL_LINES)
        )
    };

    if !status.success() {
        return Err(with_tail(format!(
            "qemu exited with {status}; its messages ({}):\n{}",
            qemu_log.display(),
            tail(&qemu_log, 20)
        )));
    }
    let lines: Vec<&str> = console.lines().map(str::trim_end).collect();
    if let Some(at) = lines
        .iter()
        .position(|l| KERNEL_PROBLEMS.iter().any(|p| l.contains(p)))
    {
        // The start of the splat says more than the console's tail.
        let from = at.saturating_sub(5);
        let to = (at + CONSOLE_TAIL_LINES).min(lines.len());
        bail!(
            "the kernel reported a problem: {}\nconsole {} (lines {}-{}):\n{}",
            lines[at],
            console_log.display(),
            from + 1,
            to,
            lines[from..to].join("\n")
        );
    }
    // Firmware escape sequences may share a line with a marker, so search within lines.
    let exit_tag = format!("{MARKER} exit=");
    let exit_marker = console
        .lines()
        .filter_map(|l| {
            l.find(&exit_tag)
                .map(|i| l[i + exit_tag.len()..].trim_end())
        })
        .next_back()
        .map(str::to_string);
    let Some(exit_marker) = exit_marker else {
        return Err(with_tail(
            "the guest stopped without reporting the command's exit".into(),
        ));
    };

    let data = read_channel(&channel, &nonce).map_err(|e| with_tail(format!("{e:#}")))?;
    fresh_dir(&unpacked)?;
    fs::write(&archive, &data)?;
    untar(&archive, &unpacked, &[])?;
    let output = String::from_utf8_lossy(
        &fs::read(unpacked.join("output")).context("the guest sent no output file")?,
    )
    .into_owned();
    let status_text =
        fs::read_to_string(unpacked.join("status")).context("the guest sent no status file")?;
    let exit_code: i32 = status_text
        .trim()
        .parse()
        .with_context(|| format!("bad status {status_text:?} from the guest"))?;
    ensure!(
        exit_marker == status_text.trim(),
        "console says exit={exit_marker} but the data channel says {}",
        status_text.trim()
    );
    // Results first: after a timeout they help to see how far the command got.
    if let Some(dir) = &spec.results_dir {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        untar(&archive, dir, &["--strip-components=1", "results"])?;
    }
    if unpacked.join("timed-out").exists() {
        let out_tail: Vec<&str> = output.lines().collect();
        let out_tail = out_tail[out_tail.len().saturating_sub(30)..].join("\n");
        return Err(with_tail(format!(
            "the command timed out after {} s and was killed; its output ends with:\n{out_tail}",
            spec.timeout.as_secs()
        )));
    }

    // Keep the console log; the rest only matters while debugging a failed run.
    for path in [&channel, &initramfs, &archive] {
        let _ = fs::remove_file(path);
    }
    let _ = fs::remove_dir_all(&unpacked);
    if fs::metadata(&qemu_log).is_ok_and(|m| m.len() == 0) {
        let _ = fs::remove_file(&qemu_log);
    }

    Ok(VmOutcome {
        exit_code,
        output,
        console_log,
        boot_time,
        elapsed,
    })
}

/// Extracts the frame `<nonce> DATA <len> <sha256>\n<bytes><nonce> END\n` from ttyS1.
fn read_channel(channel: &Path, nonce: &str) -> Result<Vec<u8>> {
    let raw = fs::read(channel).with_context(|| format!("reading {}", channel.display()))?;
    let head = format!("{nonce} DATA ");
    let start = find(&raw, head.as_bytes())
        .with_context(|| format!("no data frame from the guest in {}", channel.display()))?;
    let rest = &raw[start + head.len()..];
    let eol = find(rest, b"\n").context("truncated data frame header")?;
    let header = String::from_utf8_lossy(&rest[..eol]).into_owned();
    let (len, sum) = header
        .split_once(' ')
        .with_context(|| format!("bad data frame header {header:?}"))?;
    let len: usize = len
        .parse()
        .with_context(|| format!("bad data frame length in {header:?}"))?;
    let body = &rest[eol + 1..];
    ensure!(
        body.len() >= len,
        "data frame truncated: {} of {len} bytes arrived",
        body.len()
    );
    let (data, trailer) = body.split_at(len);
    ensure!(
        trailer.starts_with(format!("{nonce} END\n").as_bytes()),
        "data frame has no end marker"
    );
    let actual = hex(&Sha256::digest(data));
    ensure!(
        actual == sum.trim(),
        "data frame sha256 mismatch: {actual} != {sum}"
    );
    Ok(data.to_vec())
}

fn untar(archive: &Path, dest: &Path, extra: &[&str]) -> Result<()> {
    let out = Command::new("tar")
        .args(["--no-same-owner", "-xzf"])
        .arg(archive)
        .arg("-C")
        .arg(dest)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .context("running tar")?;
    ensure!(
        out.status.success(),
        "extracting {} failed: {}",
        archive.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn build_initramfs(spec: &VmSpec, nonce: &str, dest: &Path) -> Result<()> {
    let mut tree = Tree::default();
    let busybox = match spec.arch {
        Target::X86_64 => PathBuf::from(BUSYBOX),
        Target::Aarch64 => {
            apt::file_from_package(&Apt::host(), "busybox-static:arm64", "bin/busybox")?.0
        }
    };
    tree.add_host_file(&busybox, BUSYBOX)
        .with_context(|| format!("busybox-static provides {}", busybox.display()))?;
    for dir in [
        "/proc",
        "/sys",
        "/dev",
        "/tmp",
        "/root",
        "/run",
        "/sbin",
        "/usr/bin",
        "/usr/sbin",
        "/kcmp-vm/out/results",
    ] {
        tree.insert(dir, Node::Dir);
    }
    // The kernel opens /dev/console for init before devtmpfs is mounted.
    tree.insert("/dev/console", Node::CharDev { major: 5, minor: 1 });
    tree.insert("/results", Node::Symlink("/kcmp-vm/out/results".into()));
    add_spec(&mut tree, spec)?;
    tree.insert(
        "/init",
        Node::File {
            data: init_script(spec, nonce).into_bytes(),
            mode: 0o755,
        },
    );
    let dest = File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    write_gzip_cpio(&tree, dest)
}

/// What every guest's initramfs carries of its spec: the kernel's config (cached kernels
/// keep it next to the image; /init names it by the release), the spec's files and the
/// command.
fn add_spec(tree: &mut Tree, spec: &VmSpec) -> Result<()> {
    let config = spec.kernel.with_file_name("config");
    if config.is_file() {
        tree.add_host_file(&config, KERNEL_CONFIG)?;
    }
    for (host, guest) in &spec.files {
        ensure!(
            guest.starts_with('/'),
            "guest path {guest:?} must be absolute"
        );
        tree.add_host_path(host, guest)?;
    }
    tree.insert(
        "/kcmp-vm/command.sh",
        Node::File {
            data: format!("{GUEST_FUNCTIONS}\n{}\n", spec.command).into_bytes(),
            mode: 0o755,
        },
    );
    Ok(())
}

/// The initramfs of a [`Root::Systemd`] guest: the root's layers, then one more with the
/// spec's files, the command, the kernel's config and the unit that runs the command.
fn build_systemd_initramfs(
    spec: &VmSpec,
    layers: &[PathBuf],
    nonce: &str,
    dest: &Path,
) -> Result<()> {
    let mut tree = Tree::default();
    // Not /tmp or /root of the root: an entry sets its directory's mode.
    tree.insert("/kcmp-vm/out/results", Node::Dir);
    tree.insert("/results", Node::Symlink("/kcmp-vm/out/results".into()));
    add_spec(&mut tree, spec)?;
    tree.insert(
        "/kcmp-vm/run",
        Node::File {
            data: systemd_runner(spec, nonce).into_bytes(),
            mode: 0o755,
        },
    );
    tree.insert(
        &format!("/etc/systemd/system/{RUNNER_UNIT}"),
        Node::File {
            data: RUNNER_UNIT_FILE.as_bytes().to_vec(),
            mode: 0o644,
        },
    );
    tree.insert(
        &format!("/etc/systemd/system/multi-user.target.wants/{RUNNER_UNIT}"),
        Node::Symlink(format!("/etc/systemd/system/{RUNNER_UNIT}")),
    );
    let mut out = File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    for layer in layers {
        let mut from = File::open(layer).with_context(|| format!("opening {}", layer.display()))?;
        io::copy(&mut from, &mut out).with_context(|| format!("copying {}", layer.display()))?;
    }
    write_gzip_cpio(&tree, out)
}

/// Runs the command of a [`Root::Systemd`] guest once the system is up; the runner writes
/// its markers on the console, as /init does.
const RUNNER_UNIT: &str = "kcmp-vm.service";
const RUNNER_UNIT_FILE: &str = "\
[Unit]
Description=The VM test's command
After=multi-user.target

[Service]
Type=exec
ExecStart=/bin/sh -c 'exec /bin/sh /kcmp-vm/run >/dev/console 2>&1'

[Install]
WantedBy=multi-user.target
";

/// `tree` as a gzip cpio archive, appended to `dest`.
fn write_gzip_cpio(tree: &Tree, dest: File) -> Result<()> {
    let mut gzip = Command::new("gzip")
        .args(["-1", "-n", "-c"])
        .stdin(Stdio::piped())
        .stdout(dest)
        .spawn()
        .context("running gzip")?;
    {
        let stdin = gzip.stdin.take().context("gzip stdin")?;
        let mut w = io::BufWriter::new(stdin);
        tree.write_newc(&mut w).context("writing the initramfs")?;
        w.flush()?;
    }
    let status = gzip.wait()?;
    ensure!(status.success(), "gzip failed: {status}");
    Ok(())
}

fn init_script(spec: &VmSpec, nonce: &str) -> String {
    format!(
        r#"#!/bin/busybox sh
# PID 1 of a test guest, generated by xtask vm.
export PATH={path}
export HOME=/root TMPDIR=/tmp
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
[ -f {KERNEL_CONFIG} ] && mv {KERNEL_CONFIG} {KERNEL_CONFIG}-$(uname -r)
for fs in tracefs:/sys/kernel/tracing debugfs:/sys/kernel/debug bpf:/sys/fs/bpf; do
    mount -t "${{fs%%:*}}" "${{fs%%:*}}" "${{fs#*:}}" ||
        echo "{MARKER} warning: cannot mount $fs"
done
ip link set lo up 2>/dev/null
{run}"#,
        path = guest_path(spec),
        run = run_and_report(spec, nonce),
    )
}

/// The script [`RUNNER_UNIT`] runs in a systemd guest, whose manager has mounted the
/// kernel's file systems.
fn systemd_runner(spec: &VmSpec, nonce: &str) -> String {
    format!(
        r#"#!/bin/sh
# The command of a test guest under systemd, generated by xtask vm.
export PATH={path}
export HOME=/root TMPDIR=/tmp
[ -f {KERNEL_CONFIG} ] && mv {KERNEL_CONFIG} {KERNEL_CONFIG}-$(uname -r)
{run}"#,
        path = guest_path(spec),
        run = run_and_report(spec, nonce),
    )
}

/// PATH in the guest: the directories of the spec's files, then the usual ones.
fn guest_path(spec: &VmSpec) -> String {
    let mut path: Vec<String> = Vec::new();
    for (_, guest) in &spec.files {
        if let Some(dir) = Path::new(guest).parent().and_then(Path::to_str)
            && dir != "/"
            && !path.iter().any(|p| p == dir)
        {
            path.push(dir.to_string());
        }
    }
    for dir in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        if !path.iter().any(|p| p == dir) {
            path.push(dir.to_string());
        }
    }
    path.join(":")
}

/// Runs the command under its timeout, sends its output, status and results over the data
/// port, says the status on the console and ends the guest.
fn run_and_report(spec: &VmSpec, nonce: &str) -> String {
    let results = if spec.results_dir.is_some() {
        " results"
    } else {
        ""
    };
    format!(
        r#"{data_port}

echo "{MARKER} start"
cd /
sh /kcmp-vm/command.sh </dev/null >/kcmp-vm/out/output 2>&1 &
cmd=$!{live_start}
( sleep {timeout}; echo >/kcmp-vm/out/timed-out; kill -KILL $cmd ) 2>/dev/null &
watchdog=$!
wait $cmd
status=$?
kill $watchdog 2>/dev/null{live_stop}
echo "$status" >/kcmp-vm/out/status

cd /kcmp-vm/out
tar -czf /kcmp-vm/data.tgz output status $(ls timed-out 2>/dev/null){results}
size=$(wc -c </kcmp-vm/data.tgz)
sum=$(sha256sum /kcmp-vm/data.tgz)
# Closing the port waits until everything has been sent.
{{
    printf '%s DATA %s %s\n' {nonce} "$size" "${{sum%% *}}"
    cat /kcmp-vm/data.tgz
    printf '%s END\n' {nonce}
}} >"$data"
echo "{MARKER} exit=$status"
# With qemu's -no-reboot a reboot ends qemu; poweroff -f would leave it running.
reboot -f
"#,
        data_port = match spec.arch {
            Target::X86_64 => format!(
                "data=/dev/ttyS1\n\
                 # Raw, so that the data channel is byte-exact (no newline translation, no echo).\n\
                 stty -F $data raw -echo || echo \"{MARKER} warning: stty $data failed\""
            ),
            Target::Aarch64 => format!(
                "for port in /sys/class/virtio-ports/*; do\n    \
                 [ \"$(cat $port/name)\" = {DATA_PORT} ] && data=/dev/${{port##*/}}\n\
                 done\n\
                 [ -n \"$data\" ] || echo \"{MARKER} warning: no virtio port {DATA_PORT}\""
            ),
        },
        timeout = spec.timeout.as_secs().max(1),
        // The console is what the host can read while the guest runs.
        live_start = if spec.live {
            "\ntail -f /kcmp-vm/out/output >/dev/console 2>/dev/null &\nlive=$!"
        } else {
            ""
        },
        live_stop = if spec.live {
            "\nsleep 1; kill $live 2>/dev/null"
        } else {
            ""
        },
    )
}

// ---------------------------------------------------------------------------------
// Helpers

/// Prints the console lines after the start marker that arrived since `from` (a byte
/// offset); returns the new offset. Only whole lines, and not /init's own markers.
fn echo_new_console(path: &Path, from: usize) -> Result<usize> {
    let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let text = String::from_utf8_lossy(&data);
    let start = match text.find(&format!("{MARKER} start")) {
        Some(at) if from == 0 => text[at..].find('\n').map_or(at, |nl| at + nl + 1),
        Some(_) => from,
        None => return Ok(from),
    };
    let Some(end) = text[start..].rfind('\n').map(|nl| start + nl + 1) else {
        return Ok(start);
    };
    let mut out = io::stdout().lock();
    for line in text[start..end].lines() {
        let line = line.trim_end_matches('\r');
        if !line.starts_with(MARKER) {
            writeln!(out, "{line}")?;
        }
    }
    out.flush()?;
    Ok(end)
}

fn file_contains(path: &Path, needle: &str) -> Result<bool> {
    let mut buf = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut buf))
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(find(&buf, needle.as_bytes()).is_some())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn nonce() -> Result<String> {
    let mut bytes = [0u8; 12];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(format!("kcmpvm-{}", hex(&bytes)))
}

/// UTC `YYYYMMDD-HHMMSS.mmm`, so that logs sort by time.
fn timestamp() -> String {
    jiff::Timestamp::now()
        .strftime("%Y%m%d-%H%M%S%.3f")
        .to_string()
}
