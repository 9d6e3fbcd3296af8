//! Kernels for the VM tests, by flavour and version (see [`Kernel`]):
//!
//! * stock: Debian's newest `linux-image-*-cloud-<arch>-unsigned` of the version, the kernel
//!   users actually run (no fast path: kcmp() takes both locks). On x86-64 6.12 it is built
//!   with PREEMPT_DYNAMIC, so `preempt=none|voluntary|full` on the command line picks the
//!   model; the arm64 one is voluntary only.
//! * stock-rt: Debian's `linux-image-*-rt-<arch>-unsigned` (PREEMPT_RT).
//! * fastpath: `linux-source-<version>` with `testing/kernel/<version>/*.patch` applied
//!   (exec_update_seq fast path plus the test-only `kcmp_fastpath` debugfs oracle),
//!   configured from `make tinyconfig`, `testing/kernel/config.fragment` and, on 6.12,
//!   `preempt-dynamic.fragment`.
//! * fastpath-rt: the same with `preempt-rt.fragment` (6.12 and later: PREEMPT_RT is mainline).
//!
//! Stock kernels exist for x86-64 and arm64; the fast-path kernels are built for x86-64
//! only (their config fragment is x86's).
//!
//! All are cached under [`cache_root`]. Each cache entry is a directory holding the
//! image (`vmlinuz` or `bzImage`), `config` and `System.map`; it is assembled in a
//! temporary directory next to it and renamed into place, so an interrupted download
//! or build is never mistaken for a finished one. Built kernels are keyed by a hash of
//! everything they are built from.

use std::{
    env,
    ffi::OsStr,
    fmt,
    fs::{self, File},
    io::{Read, Seek, SeekFrom},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::target::Target;

/// Which kind of kernel to boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Flavour {
    /// Debian's stock cloud kernel (kcmp() always takes both exec_update_locks).
    Stock,
    /// Debian's stock PREEMPT_RT kernel.
    StockRt,
    /// linux-source with the exec_update_seq fast path and the kcmp_fastpath oracle.
    Fastpath,
    /// The fast-path kernel built with PREEMPT_RT (6.12 and later).
    FastpathRt,
}

impl Flavour {
    pub fn name(self) -> &'static str {
        match self {
            Flavour::Stock => "stock",
            Flavour::StockRt => "stock-rt",
            Flavour::Fastpath => "fastpath",
            Flavour::FastpathRt => "fastpath-rt",
        }
    }

    /// The kernel carries the series and its oracle.
    pub fn has_series(self) -> bool {
        matches!(self, Flavour::Fastpath | Flavour::FastpathRt)
    }

    pub fn is_rt(self) -> bool {
        matches!(self, Flavour::StockRt | Flavour::FastpathRt)
    }
}

/// Kernel versions with both a Debian image and a `linux-source-<version>` package.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Version {
    #[value(name = "6.1")]
    V6_1,
    #[value(name = "6.12")]
    V6_12,
}

impl Version {
    pub fn name(self) -> &'static str {
        match self {
            Version::V6_1 => "6.1",
            Version::V6_12 => "6.12",
        }
    }

    /// Image package names of this version: the pattern after `linux-image-` and before
    /// `-<variant>-amd64-unsigned`, and how to read its ordering number.
    fn image_abi(self, name: &str) -> Option<u32> {
        match self {
            // linux-image-6.1.0-<abi>-cloud-amd64-unsigned
            Version::V6_1 => name.strip_prefix("6.1.0-")?.parse().ok(),
            // linux-image-6.12.<sublevel>+deb12-cloud-amd64-unsigned
            Version::V6_12 => name
                .strip_prefix("6.12.")?
                .strip_suffix("+deb12")?
                .parse()
                .ok(),
        }
    }
}

/// A kernel to boot: flavour, version and architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernel {
    pub flavour: Flavour,
    pub version: Version,
    pub arch: Target,
}

impl Kernel {
    /// An x86-64 kernel.
    pub const fn new(flavour: Flavour, version: Version) -> Kernel {
        Kernel {
            flavour,
            version,
            arch: Target::X86_64,
        }
    }

    pub const fn on(self, arch: Target) -> Kernel {
        Kernel { arch, ..self }
    }
}

/// `stock-6.12`; other architectures than x86-64 are named: `stock-6.12-aarch64`.
impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.flavour.name(), self.version.name())?;
        match self.arch {
            Target::X86_64 => Ok(()),
            arch => write!(f, "-{arch}"),
        }
    }
}

/// Changing how the kernel is built must not reuse kernels built the old way.
const RECIPE: &str = "kcmp-trace fastpath kernel recipe 1";
const BUILD_PACKAGES: &[&str] = &[
    "build-essential",
    "bc",
    "bison",
    "flex",
    "libelf-dev",
    "libssl-dev",
    "dwarves",
    "xz-utils",
];
/// Symbols the patch series must add; a build without them is not the kernel we want.
const PATCH_SYMBOLS: &[&str] = &[
    "exec_update_speculate_try_begin",
    "exec_update_speculate_retry",
];
const LOG_TAIL_LINES: usize = 40;

/// Root of the kernel cache: `$KCMP_TRACE_CACHE`, or `/var/cache/kcmp-trace`.
pub fn cache_root() -> PathBuf {
    env::var_os("KCMP_TRACE_CACHE")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/var/cache/kcmp-trace"), PathBuf::from)
}

/// Returns the path of a bootable image of `kernel`, downloading or building it on first
/// use. `config` and `System.map` sit next to the image.
pub fn ensure_kernel(kernel: Kernel) -> Result<PathBuf> {
    let root = cache_root();
    match kernel.flavour {
        Flavour::Stock | Flavour::StockRt => ensure_stock(&root.join("stock"), kernel),
        Flavour::Fastpath | Flavour::FastpathRt if kernel.arch != Target::X86_64 => bail!(
            "the fast-path kernels are built for x86_64 only (testing/kernel/config.fragment)"
        ),
        Flavour::Fastpath | Flavour::FastpathRt => ensure_fastpath(&root.join("fastpath"), kernel),
    }
    .with_context(|| format!("preparing the {kernel} kernel (cache: {})", root.display()))
}

fn step(msg: impl AsRef<str>) {
    eprintln!("kernel: {}", msg.as_ref());
}

// ---------------------------------------------------------------------------------
// Debian packages

/// Installs the Debian packages that are missing (apt-get, via sudo when not root).
pub fn ensure_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !package_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("apt: installing {}", missing.join(" "));
    let install = |pkgs: &[&str]| {
        let mut args = vec!["install", "-y", "--no-install-recommends"];
        args.extend_from_slice(pkgs);
        apt_get(&args)
    };
    if install(&missing).is_err() {
        // A fresh machine has no package lists yet.
        eprintln!("apt: update (no package lists yet, or stale ones)");
        apt_get(&["update"])?;
        install(&missing)?;
    }
    Ok(())
}

/// A file from a Debian package of another architecture (which cannot be installed next to
/// the host's own), e.g. `busybox-static:arm64`'s `bin/busybox`: downloaded, extracted and
/// cached under `<cache>/debs/<package>_<version>/` on first use.
pub fn file_from_package(package: &str, path: &str) -> Result<PathBuf> {
    let version = candidate_version(package)?;
    let name = format!(
        "{}_{}",
        package.replace(':', "_"),
        version.replace(':', "%3a")
    );
    let dir = cache_root().join("debs");
    let entry = dir.join(&name);
    let wanted = |entry: &Path| entry.join(path);
    if wanted(&entry).is_file() {
        return Ok(wanted(&entry));
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let _lock = lock(&dir.join(format!("{name}.lock")))?;
    if wanted(&entry).is_file() {
        return Ok(wanted(&entry));
    }
    let tmp = fresh_dir(&dir.join(format!(".tmp-{name}")))?;
    let out = download_deb(package, &version, &tmp)?;
    if !wanted(&out).is_file() {
        bail!("{package} {version} has no {path}");
    }
    publish(&out, &entry)?;
    remove_dir(&tmp);
    Ok(wanted(&entry))
}

/// Downloads `package` at `version` into `tmp` and unpacks it there; returns the
/// directory it was unpacked into.
fn download_deb(package: &str, version: &str, tmp: &Path) -> Result<PathBuf> {
    step(format!("downloading {package} {version}"));
    capture(
        Command::new("apt-get")
            .arg("download")
            .arg(format!("{package}={version}"))
            .current_dir(tmp),
    )?;
    let deb = find_file(tmp, |n| n.ends_with(".deb"))?;
    let unpacked = tmp.join("x");
    capture(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    Ok(unpacked)
}

fn package_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.ends_with(b" installed"))
}

fn installed_version(package: &str) -> Result<String> {
    let out = capture(Command::new("dpkg-query").args(["-W", "-f=${Version}", package]))?;
    Ok(out.trim().to_string())
}

fn apt_get(args: &[&str]) -> Result<()> {
    let mut cmd = if is_root() {
        Command::new("apt-get")
    } else {
        let mut c = Command::new("sudo");
        c.args(["-n", "apt-get"]);
        c
    };
    cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    logged(&mut cmd, &crate::setup::log_path())
}

fn is_root() -> bool {
    // /proc/self is owned by the effective uid; avoids a libc dependency.
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

// ---------------------------------------------------------------------------------
// Stock kernel

fn ensure_stock(dir: &Path, kernel: Kernel) -> Result<PathBuf> {
    let variant = if kernel.flavour.is_rt() {
        "rt"
    } else {
        "cloud"
    };
    let deb_arch = kernel.arch.deb_arch();
    let package = match newest_image(kernel.version, variant, deb_arch)? {
        Some(p) => p,
        None => {
            step(format!(
                "apt-get update (no {variant} image of Linux {} known)",
                kernel.version.name()
            ));
            apt_get(&["update"])?;
            newest_image(kernel.version, variant, deb_arch)?.with_context(|| {
                format!(
                    "no linux-image-{}*-{variant}-{deb_arch}-unsigned package in the apt sources \
                     (needs Debian bookworm with bookworm-updates/security{})",
                    kernel.version.name(),
                    if deb_arch == "amd64" {
                        ""
                    } else {
                        ", and `dpkg --add-architecture arm64`"
                    }
                )
            })?
        }
    };
    let package = format!("{package}:{deb_arch}");
    let version = candidate_version(&package)?;
    // x86-64 entries keep their names from before other architectures.
    let name = format!(
        "{}_{}",
        package.trim_end_matches(":amd64").replace(':', "_"),
        version.replace(':', "%3a")
    );
    let entry = dir.join(&name);
    let image = entry.join("vmlinuz");
    if image.is_file() {
        step(format!("cached: {}", image.display()));
        return Ok(image);
    }

    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let _lock = lock(&dir.join(format!("{name}.lock")))?;
    if image.is_file() {
        step(format!("cached: {}", image.display()));
        return Ok(image);
    }
    let tmp = fresh_dir(&dir.join(format!(".tmp-{name}")))?;
    let boot = download_deb(&package, &version, &tmp)?.join("boot");
    let out = tmp.join("out");
    fs::create_dir(&out)?;
    for (prefix, dest) in [
        ("vmlinuz-", "vmlinuz"),
        ("config-", "config"),
        ("System.map-", "System.map"),
    ] {
        let src = find_file(&boot, |n| n.starts_with(prefix))?;
        fs::copy(&src, out.join(dest)).with_context(|| format!("copying {}", src.display()))?;
    }
    fs::write(out.join("package"), format!("{package} {version}\n"))?;
    publish(&out, &entry)?;
    remove_dir(&tmp);
    step(format!("cached: {}", image.display()));
    Ok(image)
}

/// The `linux-image-<version>...-<variant>-<deb_arch>-unsigned` package with the highest
/// ABI (6.1) or sublevel (6.12) number.
fn newest_image(version: Version, variant: &str, deb_arch: &str) -> Result<Option<String>> {
    let suffix = format!("-{variant}-{deb_arch}-unsigned");
    let out = capture(Command::new("apt-cache").args([
        "search",
        "--names-only",
        &format!(
            r"^linux-image-{}\..*{suffix}$",
            version.name().replace('.', r"\.")
        ),
    ]))?;
    Ok(out
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|name| {
            let middle = name.strip_prefix("linux-image-")?.strip_suffix(&suffix)?;
            Some((version.image_abi(middle)?, name.to_string()))
        })
        .max()
        .map(|(_, name)| name))
}

fn candidate_version(package: &str) -> Result<String> {
    let out = capture(Command::new("apt-cache").args(["policy", package]))?;
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(|v| v.trim().to_string())
        .filter(|v| v != "(none)")
        .with_context(|| format!("apt has no candidate version of {package}"))
}

// ---------------------------------------------------------------------------------
// Fast-path kernel

fn ensure_fastpath(dir: &Path, kernel: Kernel) -> Result<PathBuf> {
    let source = SourceTree::of(kernel.version);
    // The source version is part of the cache key, so it must be installed first.
    ensure_packages(&[&source.package])?;
    let inputs = FastpathInputs::read(kernel, &source)?;
    let key = inputs.key();
    let entry = dir.join(&key);
    let image = entry.join("bzImage");
    if image.is_file() {
        step(format!("cached: {}", image.display()));
        return Ok(image);
    }

    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let _lock = lock(&dir.join(format!("{key}.lock")))?;
    if image.is_file() {
        step(format!("cached: {}", image.display()));
        return Ok(image);
    }
    ensure_packages(BUILD_PACKAGES)?;

    // Anything left here is from an interrupted build; the lock says no one owns it.
    let tmp = fresh_dir(&dir.join(format!(".tmp-{key}")))?;
    let log = dir.join(format!("{key}.build.log"));
    File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let started = Instant::now();

    step(format!(
        "{kernel}: extracting {} ({} {})",
        source.tarball, source.package, inputs.source_version
    ));
    logged(
        Command::new("tar")
            .arg("-xf")
            .arg(&source.tarball)
            .arg("-C")
            .arg(&tmp),
        &log,
    )?;
    let src = tmp.join(&source.package);

    for patch in &inputs.patches {
        step(format!("applying {}", file_name(patch)));
        logged(
            Command::new("patch")
                .args(["-p1", "--forward", "--batch", "--fuzz=0", "-i"])
                .arg(patch)
                .current_dir(&src),
            &log,
        )?;
    }

    let names: Vec<String> = inputs.fragments.iter().map(|f| file_name(f)).collect();
    step(format!(
        "configuring: make tinyconfig + {}",
        names.join(" + ")
    ));
    logged(make(&src).arg("tinyconfig"), &log)?;
    logged(
        Command::new("scripts/kconfig/merge_config.sh")
            .args(["-m", ".config"])
            .args(&inputs.fragments)
            .current_dir(&src),
        &log,
    )?;
    logged(make(&src).arg("olddefconfig"), &log)?;
    for fragment in &inputs.fragments {
        check_config(&src.join(".config"), fragment)?;
    }

    let jobs = build_jobs();
    step(format!(
        "building {kernel} (about 5 to 10 min on 2 cores, make -j{jobs}) ... log: {}",
        log.display()
    ));
    logged(make(&src).arg(format!("-j{jobs}")).arg("bzImage"), &log)?;

    let system_map = src.join("System.map");
    let symbols = fs::read_to_string(&system_map)
        .with_context(|| format!("reading {}", system_map.display()))?;
    for sym in PATCH_SYMBOLS {
        if !symbols
            .lines()
            .any(|l| l.split_whitespace().nth(2) == Some(sym))
        {
            bail!("the built kernel lacks {sym} (System.map); the patch series did not take");
        }
    }

    let out = tmp.join("out");
    fs::create_dir(&out)?;
    fs::copy(src.join("arch/x86/boot/bzImage"), out.join("bzImage")).context("copying bzImage")?;
    fs::copy(src.join(".config"), out.join("config")).context("copying .config")?;
    fs::copy(&system_map, out.join("System.map")).context("copying System.map")?;
    fs::write(out.join("inputs"), inputs.describe())?;
    fs::copy(&log, out.join("build.log")).context("copying the build log")?;
    publish(&out, &entry)?;
    let _ = fs::remove_file(&log);
    step(format!(
        "built in {:.0} s, removing the build tree",
        started.elapsed().as_secs_f64()
    ));
    remove_dir(&tmp);
    step(format!("cached: {}", image.display()));
    Ok(image)
}

/// Debian's `linux-source-<version>` package: the tarball it installs, which unpacks into a
/// directory named like the package.
struct SourceTree {
    package: String,
    tarball: String,
}

impl SourceTree {
    fn of(version: Version) -> SourceTree {
        let package = format!("linux-source-{}", version.name());
        SourceTree {
            tarball: format!("/usr/src/{package}.tar.xz"),
            package,
        }
    }
}

/// Everything the fast-path kernel is built from, hashed into its cache key.
struct FastpathInputs {
    source_package: String,
    source_version: String,
    patches: Vec<PathBuf>,
    fragments: Vec<PathBuf>,
    /// (file name, contents) of every patch, then of every fragment.
    contents: Vec<(String, Vec<u8>)>,
}

impl FastpathInputs {
    fn read(kernel: Kernel, source: &SourceTree) -> Result<Self> {
        let base = crate::workspace_root().join("testing/kernel");
        let patch_dir = base.join(kernel.version.name());
        let mut patches = Vec::new();
        for entry in
            fs::read_dir(&patch_dir).with_context(|| format!("reading {}", patch_dir.display()))?
        {
            let path = entry?.path();
            if path.extension() == Some(OsStr::new("patch")) {
                patches.push(path);
            }
        }
        // The series is applied in file-name order (0001-, 0002-, ...).
        patches.sort();
        if patches.is_empty() {
            bail!("no *.patch in {}", patch_dir.display());
        }
        let mut fragments = vec![base.join("config.fragment")];
        match (kernel.flavour.is_rt(), kernel.version) {
            (true, Version::V6_1) => {
                bail!("PREEMPT_RT is mainline from 6.12 on: no fastpath-rt build of 6.1")
            }
            (true, _) => fragments.push(base.join("preempt-rt.fragment")),
            // The 6.1 kernel keeps tinyconfig's model (none), as its tests always had it.
            (false, Version::V6_1) => {}
            (false, _) => fragments.push(base.join("preempt-dynamic.fragment")),
        }
        let contents = patches
            .iter()
            .chain(&fragments)
            .map(|p| {
                let bytes = fs::read(p).with_context(|| format!("reading {}", p.display()))?;
                Ok((file_name(p), bytes))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            source_version: installed_version(&source.package)?,
            source_package: source.package.clone(),
            patches,
            fragments,
            contents,
        })
    }

    /// sha256 over the recipe, the source version, every patch and every fragment.
    fn key(&self) -> String {
        let mut h = Sha256::new();
        let mut field = |bytes: &[u8]| {
            // Length-prefixed so that moving bytes between fields changes the key.
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        field(RECIPE.as_bytes());
        field(self.source_version.as_bytes());
        for (name, bytes) in &self.contents {
            field(name.as_bytes());
            field(bytes);
        }
        hex(&h.finalize()[..12])
    }

    fn describe(&self) -> String {
        let mut s = format!(
            "{RECIPE}\n{} {}\n",
            self.source_package, self.source_version
        );
        for (name, bytes) in &self.contents {
            s += &format!("{}  {name}\n", hex(&Sha256::digest(bytes)));
        }
        s
    }
}

fn make(src: &Path) -> Command {
    let mut cmd = Command::new("make");
    cmd.current_dir(src)
        // Fixed build identity keeps rebuilds of the same inputs alike.
        .env("KBUILD_BUILD_USER", "kcmp-trace")
        .env("KBUILD_BUILD_HOST", "xtask")
        .env("KBUILD_BUILD_TIMESTAMP", "2026-01-01");
    cmd
}

fn build_jobs() -> usize {
    env::var("KCMP_TRACE_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()) + 1)
}

/// Fails unless every option of the fragment survived olddefconfig (dependencies
/// can silently drop an option, and the tests rely on each one).
fn check_config(config: &Path, fragment: &Path) -> Result<()> {
    let have =
        fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let want = fs::read_to_string(fragment)?;
    let lines: Vec<&str> = have.lines().collect();
    let mut dropped = Vec::new();
    for line in want.lines().map(str::trim) {
        let (name, ok) = if let Some(off) = line
            .strip_prefix("# ")
            .and_then(|l| l.strip_suffix(" is not set"))
        {
            let set = lines.iter().any(|l| l.starts_with(&format!("{off}=")));
            (off, !set)
        } else if line.starts_with("CONFIG_") {
            (
                line.split('=').next().unwrap_or(line),
                lines.contains(&line),
            )
        } else {
            continue;
        };
        if !ok {
            let actual = lines
                .iter()
                .find(|l| l.starts_with(&format!("{name}=")) || l.contains(&format!(" {name} ")))
                .copied()
                .unwrap_or("absent");
            dropped.push(format!("  {line}  (got: {actual})"));
        }
    }
    if !dropped.is_empty() {
        bail!(
            "olddefconfig dropped config.fragment options:\n{}",
            dropped.join("\n")
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Helpers

/// Runs `cmd`, returning stdout; on failure the error carries stderr.
fn capture(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` with stdout and stderr appended to `log`; on failure the error carries
/// the tail of what `cmd` wrote there.
pub(crate) fn logged(cmd: &mut Command, log: &Path) -> Result<()> {
    let start = fs::metadata(log).map_or(0, |m| m.len());
    let open = || {
        File::options()
            .append(true)
            .create(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))
    };
    let status = cmd
        .stdin(Stdio::null())
        .stdout(open()?)
        .stderr(open()?)
        .status()
        .with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!(
            "{cmd:?} failed ({status}); its last lines in {}:\n{}",
            log.display(),
            tail_from(log, start, LOG_TAIL_LINES)
        );
    }
    Ok(())
}

/// The last `lines` lines of a (possibly large) text file.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    tail_from(path, 0, lines)
}

/// The last `lines` lines of a text file written from byte `start` on.
fn tail_from(path: &Path, start: u64, lines: usize) -> String {
    let read = || -> std::io::Result<String> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024).max(start)))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Holds an exclusive lock on `path` until dropped, so concurrent runs do not
/// download or build the same kernel twice.
fn lock(path: &Path) -> Result<File> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    if file.try_lock().is_err() {
        step(format!(
            "waiting for another run holding {}",
            path.display()
        ));
        file.lock()
            .with_context(|| format!("locking {}", path.display()))?;
    }
    Ok(file)
}

/// Creates `path` empty, removing leftovers of an interrupted run.
pub(crate) fn fresh_dir(path: &Path) -> Result<PathBuf> {
    if path.exists() {
        fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))?;
    }
    fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    Ok(path.to_path_buf())
}

/// Moves a complete entry into place in one rename.
fn publish(out: &Path, entry: &Path) -> Result<()> {
    fs::rename(out, entry)
        .with_context(|| format!("moving {} to {}", out.display(), entry.display()))
}

fn remove_dir(path: &Path) {
    if let Err(e) = fs::remove_dir_all(path) {
        step(format!("warning: cannot remove {}: {e}", path.display()));
    }
}

fn find_file(dir: &Path, pred: impl Fn(&str) -> bool) -> Result<PathBuf> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.file_name().and_then(OsStr::to_str).is_some_and(&pred) {
            return Ok(path);
        }
    }
    bail!("expected file not found in {}", dir.display())
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
