//! `cargo xtask dist`: what a fleet installs, under `target/dist/`:
//!
//! * `kcmp-trace-<version>-<arch>-linux-musl`: static binaries (musl, the eBPF programs of
//!   that architecture embedded), stripped;
//! * `kcmp-trace_<version>_<debian arch>.deb`: the binary, the systemd unit, man pages and
//!   bash, zsh and fish completions generated from the clap definitions
//!   (`kcmp-trace generate`), built by dpkg-deb;
//! * `SHA256SUMS` of all of them, in `sha256sum -c` format.
//!
//! [`verify`] is what the test command holds the packages to.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail, ensure};
use kcmp_trace_common::programs;
use sha2::{Digest as _, Sha256};

use crate::{
    kernel::{Flavour, Kernel, Version, ensure_kernel},
    target::{HOST, Target, static_bench_binary, static_binary, target_dir},
    vm::VmSpec,
    workspace::{cargo, fresh_dir, hex, run_checked, workspace_root},
};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const UNIT: &str = "contrib/kcmp-trace.service";
/// Where each generated completion goes in the package, by the name clap_complete gives it.
const COMPLETIONS: &[(&str, &str)] = &[
    (
        "kcmp-trace.bash",
        "usr/share/bash-completion/completions/kcmp-trace",
    ),
    (
        "_kcmp-trace",
        "usr/share/zsh/vendor-completions/_kcmp-trace",
    ),
    (
        "kcmp-trace.fish",
        "usr/share/fish/vendor_completions.d/kcmp-trace.fish",
    ),
];
const UNIT_PATH: &str = "lib/systemd/system/kcmp-trace.service";
/// What a Prometheus and a Grafana beside the daemon take: the rules go in Prometheus's
/// `rule_files`, the dashboard is imported (docs/daemon.md).
const CONTRIB: &[(&str, &str)] = &[
    (
        "contrib/prometheus/kcmp-trace.rules.yml",
        "usr/share/kcmp-trace/prometheus/kcmp-trace.rules.yml",
    ),
    (
        "contrib/grafana-dashboard.json",
        "usr/share/kcmp-trace/grafana-dashboard.json",
    ),
];
/// The units a unit with default dependencies needs to exist for `systemd-analyze verify`.
const SYSTEMD_TARGETS: &[&str] = &[
    "sysinit.target",
    "basic.target",
    "shutdown.target",
    "multi-user.target",
];

pub fn dist_dir() -> PathBuf {
    target_dir().join("dist")
}

fn dist_binary(dir: &Path, arch: Target) -> PathBuf {
    dir.join(format!("kcmp-trace-{VERSION}-{}-linux-musl", arch.name()))
}

fn package_in(dir: &Path, arch: Target) -> PathBuf {
    dir.join(format!("kcmp-trace_{VERSION}_{}.deb", arch.deb_arch()))
}

fn package(arch: Target) -> PathBuf {
    package_in(&dist_dir(), arch)
}

/// Builds the static binaries of `arches` in one cargo run, and checks that they are.
pub fn build_static(path: &str, arches: &[Target]) -> Result<()> {
    eprintln!(
        "xtask: building the static binaries ({})",
        arches
            .iter()
            .map(|a| a.triple())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut build = cargo(path);
    build.args(["build", "--release", "-p", "kcmp-trace"]);
    for arch in arches {
        build.args(["--target", arch.triple()]);
        build.envs(arch.cargo_env());
    }
    run_checked(&mut build)?;
    for &arch in arches {
        check_static(&static_binary(arch), arch)?;
    }
    Ok(())
}

/// The bench's static binary for `arch`, for the bench's guests.
pub fn build_static_bench(path: &str, arch: Target) -> Result<()> {
    run_checked(
        cargo(path)
            .args(["build", "--release", "-p", "kcmp-trace-bench"])
            .args(["--target", arch.triple()])
            .envs(arch.cargo_env()),
    )?;
    check_static(&static_bench_binary(arch), arch)
}

/// The product carries none of the bench's programs: they live in the bench's binary.
pub fn check_no_bench_programs(binary: &Path) -> Result<()> {
    let bytes = fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let found: Vec<&str> = programs::bench::ALL
        .into_iter()
        .filter(|name| bytes.windows(name.len()).any(|w| w == name.as_bytes()))
        .collect();
    ensure!(
        found.is_empty(),
        "{} carries the bench's programs {}",
        binary.display(),
        found.join(", ")
    );
    Ok(())
}

/// `file` says the binary is a static executable of `arch`.
fn check_static(binary: &Path, arch: Target) -> Result<()> {
    let out = Command::new("file")
        .arg("-b")
        .arg(binary)
        .output()
        .context("running file")?;
    let says = String::from_utf8_lossy(&out.stdout);
    ensure!(
        says.contains(arch.file_machine())
            && (says.contains("statically linked") || says.contains("static-pie linked")),
        "{}: not a static {arch} executable: {}",
        binary.display(),
        says.trim()
    );
    Ok(())
}

/// `cargo xtask dist`.
pub fn run(path: &str) -> Result<()> {
    build_static(path, &Target::ALL)?;
    let dist = dist_dir();
    fresh_dir(&dist)?;
    let stage = fresh_dir(&target_dir().join("dist-stage"))?;
    let docs = generate_docs(&stage)?;
    let mut artifacts = Vec::new();
    for arch in Target::ALL {
        let (binary, deb) = build_package(arch, &dist, &stage, &docs)?;
        artifacts.push(binary);
        artifacts.push(deb);
    }

    let mut sums = String::new();
    for artifact in &artifacts {
        let data = fs::read(artifact).with_context(|| format!("reading {}", artifact.display()))?;
        let name = artifact
            .file_name()
            .and_then(|n| n.to_str())
            .context("artifact name")?;
        sums.push_str(&format!("{}  {name}\n", hex(&Sha256::digest(&data))));
        eprintln!("dist: {} ({} KiB)", artifact.display(), data.len() / 1024);
    }
    fs::write(dist.join("SHA256SUMS"), sums)?;
    eprintln!("dist: {}", dist.join("SHA256SUMS").display());
    Ok(())
}

/// The package of `arch` alone, built into `out` (emptied first) from the static binary
/// as last built, exactly as `cargo xtask dist` builds it: what the deployed guests install.
pub fn package_into(arch: Target, out: &Path) -> Result<PathBuf> {
    fresh_dir(out)?;
    let stage = out.join("stage");
    let docs = generate_docs(&stage)?;
    let (_, deb) = build_package(arch, out, &stage, &docs)?;
    fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    Ok(deb)
}

/// Man pages and completions under `stage`. They depend on the clap definitions only: the
/// host's binary writes them for every architecture.
fn generate_docs(stage: &Path) -> Result<PathBuf> {
    let docs = stage.join("generated");
    let host_binary = static_binary(HOST);
    for what in ["man", "completions"] {
        run_checked(
            Command::new(&host_binary)
                .args(["generate", what])
                .arg(docs.join(what)),
        )
        .with_context(|| format!("generating the {what}"))?;
    }
    Ok(docs)
}

/// The stripped static binary of `arch` and its package, both into `out`, staged under
/// `stage`.
fn build_package(
    arch: Target,
    out: &Path,
    stage: &Path,
    docs: &Path,
) -> Result<(PathBuf, PathBuf)> {
    let binary = dist_binary(out, arch);
    fs::copy(static_binary(arch), &binary)
        .with_context(|| format!("copying to {}", binary.display()))?;
    run_checked(Command::new("llvm-strip-22").arg(&binary))?;
    check_static(&binary, arch)?;
    check_no_bench_programs(&binary)?;
    let root = stage.join(arch.deb_arch());
    stage_package(&root, &binary, docs, arch)?;
    let deb = package_in(out, arch);
    run_checked(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&root)
            .arg(&deb),
    )?;
    Ok((binary, deb))
}

/// The package's tree under `root`, DEBIAN/control included.
fn stage_package(root: &Path, binary: &Path, docs: &Path, arch: Target) -> Result<()> {
    let put = |from: &Path, to: &str, mode: u32| -> Result<()> {
        let dest = root.join(to);
        if let Some(dir) = dest.parent() {
            fs::create_dir_all(dir)?;
        }
        fs::copy(from, &dest).with_context(|| format!("copying {}", from.display()))?;
        set_mode(&dest, mode)
    };
    put(binary, "usr/bin/kcmp-trace", 0o755)?;
    put(&workspace_root().join(UNIT), UNIT_PATH, 0o644)?;
    for (from, to) in CONTRIB {
        put(&workspace_root().join(from), to, 0o644)?;
    }
    for (generated, to) in COMPLETIONS {
        put(&docs.join("completions").join(generated), to, 0o644)?;
    }
    let man = root.join("usr/share/man/man1");
    fs::create_dir_all(&man)?;
    for page in fs::read_dir(docs.join("man"))? {
        let page = page?.path();
        let name = page.file_name().and_then(|n| n.to_str()).context("page")?;
        let dest = man.join(format!("{name}.gz"));
        let out = Command::new("gzip")
            .args(["-9", "-n", "-c"])
            .arg(&page)
            .output()
            .context("running gzip")?;
        ensure!(out.status.success(), "gzip {} failed", page.display());
        fs::write(&dest, out.stdout)?;
        set_mode(&dest, 0o644)?;
    }
    let doc = root.join("usr/share/doc/kcmp-trace");
    fs::create_dir_all(&doc)?;
    fs::write(
        doc.join("copyright"),
        format!(
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
             Upstream-Name: kcmp-trace\n\n\
             Files: *\nLicense: {}\n",
            env!("CARGO_PKG_LICENSE")
        ),
    )?;

    let installed_kib = du_kib(root)?;
    let debian = root.join("DEBIAN");
    fs::create_dir_all(&debian)?;
    fs::write(
        debian.join("control"),
        format!(
            "Package: kcmp-trace\n\
             Version: {VERSION}\n\
             Architecture: {}\n\
             Maintainer: {}\n\
             Installed-Size: {installed_kib}\n\
             Section: utils\n\
             Priority: optional\n\
             Description: trace kcmp(2): the path every call takes, latency, lock waits\n \
             kcmp-trace attaches eBPF programs to kcmp(2) and reports, for every call,\n \
             its type, pids, result, latency and the path it took through kernel/kcmp.c.\n \
             Statically linked; needs a kernel with BPF and BTF. The systemd unit\n \
             (kcmp-trace.service, a Prometheus exporter) is installed but not enabled;\n \
             Prometheus rules and a Grafana dashboard are in /usr/share/kcmp-trace.\n",
            arch.deb_arch(),
            maintainer()
        ),
    )?;
    Ok(())
}

/// Who builds the package, as Debian's tools take it (DEBFULLNAME, DEBEMAIL).
fn maintainer() -> String {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    format!(
        "{} <{}>",
        var("DEBFULLNAME").unwrap_or_else(|| "kcmp-trace maintainers".into()),
        var("DEBEMAIL").unwrap_or_else(|| "root@localhost".into())
    )
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

/// Disk use of a tree in KiB, as dpkg counts Installed-Size.
fn du_kib(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            du_kib(&entry.path())?
        } else {
            meta.len().div_ceil(1024)
        };
    }
    Ok(total)
}

/// What every package must hold: the binary, the unit, the Prometheus rules and the
/// dashboard, a man page per command and the completions.
fn expected_contents() -> Vec<String> {
    let mut paths = vec![
        "usr/bin/kcmp-trace".to_string(),
        UNIT_PATH.to_string(),
        "usr/share/doc/kcmp-trace/copyright".to_string(),
    ];
    paths.extend(COMPLETIONS.iter().map(|(_, to)| to.to_string()));
    paths.extend(CONTRIB.iter().map(|(_, to)| to.to_string()));
    for page in [
        "kcmp-trace",
        "kcmp-trace-watch",
        "kcmp-trace-events",
        "kcmp-trace-record",
        "kcmp-trace-report",
        "kcmp-trace-doctor",
        "kcmp-trace-stress",
        "kcmp-trace-serve",
        "kcmp-trace-generate",
    ] {
        paths.push(format!("usr/share/man/man1/{page}.1.gz"));
    }
    paths.sort();
    paths
}

/// `kcmp-trace --version` of an installed binary: run here on this machine's architecture,
/// in a guest of Debian's stock kernel on another.
fn installed_version(binary: &Path, arch: Target) -> Result<String> {
    if arch == HOST {
        return output_of(Command::new(binary).arg("--version"));
    }
    let kernel = ensure_kernel(Kernel::new(Flavour::Stock, Version::V6_12).on(arch))?;
    let mut spec = VmSpec::new(
        format!("package-{}", arch.deb_arch()),
        kernel,
        "kcmp-trace --version",
    );
    spec.arch = arch;
    spec.files = vec![(binary.to_path_buf(), "/usr/bin/kcmp-trace".into())];
    spec.timeout = Duration::from_secs(60);
    let outcome = crate::vm::run(&spec)?;
    ensure!(
        outcome.exit_code == 0,
        "kcmp-trace --version failed in the {arch} guest ({}): {}",
        outcome.exit_code,
        outcome.output
    );
    Ok(outcome.output)
}

fn output_of(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One package checked: metadata, contents, checksum; installed by dpkg into a scratch
/// root, whose binary runs (here, or in a guest of its architecture) and whose unit systemd
/// accepts.
pub fn verify(arch: Target) -> Result<()> {
    let deb = package(arch);
    let info = output_of(Command::new("dpkg-deb").arg("--field").arg(&deb))?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .map(str::trim)
    };
    for (name, want) in [
        ("Package", "kcmp-trace"),
        ("Version", VERSION),
        ("Architecture", arch.deb_arch()),
    ] {
        ensure!(
            field(name) == Some(want),
            "{}: {name} is {:?}, want {want:?}",
            deb.display(),
            field(name)
        );
    }
    ensure!(
        field("Depends").is_none(),
        "a static binary depends on nothing: {info}"
    );

    let listing = output_of(Command::new("dpkg-deb").arg("--contents").arg(&deb))?;
    let mut files: Vec<String> = listing
        .lines()
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| p.trim_start_matches("./").to_string())
        .collect();
    files.sort();
    ensure!(
        files == expected_contents(),
        "{} holds {files:?}, want {:?}",
        deb.display(),
        expected_contents()
    );
    let binary_line = listing
        .lines()
        .find(|l| l.ends_with("./usr/bin/kcmp-trace"))
        .context("no binary in the package")?;
    ensure!(
        binary_line.starts_with("-rwxr-xr-x root/root"),
        "binary entry: {binary_line}"
    );

    let sums = fs::read_to_string(dist_dir().join("SHA256SUMS")).context("SHA256SUMS")?;
    let name = deb.file_name().and_then(|n| n.to_str()).context("name")?;
    let data = fs::read(&deb)?;
    ensure!(
        sums.contains(&format!("{}  {name}\n", hex(&Sha256::digest(&data)))),
        "SHA256SUMS does not match {name}"
    );

    let root = fresh_dir(&target_dir().join(format!("dist-root-{}", arch.deb_arch())))?;
    let admin = root.join("var/lib/dpkg");
    for dir in ["info", "updates", "triggers"] {
        fs::create_dir_all(admin.join(dir))?;
    }
    for file in ["status", "available"] {
        fs::write(admin.join(file), "")?;
    }
    let mut install = Command::new("dpkg");
    install.arg(format!("--root={}", root.display()));
    if arch != HOST {
        // The scratch root knows no foreign architecture.
        install.arg("--force-architecture");
    }
    output_of(install.arg("--install").arg(&deb))?;
    let status = fs::read_to_string(admin.join("status"))?;
    ensure!(
        status.contains("Package: kcmp-trace\nStatus: install ok installed"),
        "dpkg did not record the package as installed:\n{status}"
    );

    let installed = root.join("usr/bin/kcmp-trace");
    check_static(&installed, arch)?;
    let version = installed_version(&installed, arch)?;
    ensure!(
        version.trim() == format!("kcmp-trace {VERSION}"),
        "--version printed {version:?}"
    );

    for unit in SYSTEMD_TARGETS {
        fs::copy(
            Path::new("/lib/systemd/system").join(unit),
            root.join("lib/systemd/system").join(unit),
        )
        .with_context(|| format!("copying systemd's {unit}"))?;
    }
    let verify = Command::new("systemd-analyze")
        .arg(format!("--root={}", root.display()))
        .args(["verify", "kcmp-trace.service"])
        .output()
        .context("running systemd-analyze")?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    // It exits 0 after warnings too (unknown keys, bad values): any output is a failure.
    if !verify.status.success() || !said.trim().is_empty() {
        bail!("systemd-analyze verify: {}", said.trim());
    }
    Ok(())
}
