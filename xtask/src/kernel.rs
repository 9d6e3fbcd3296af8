//! Kernels for the VM tests.
//!
//! * [`KernelKind::Stock`]: Debian's newest `linux-image-6.1.0-*-cloud-amd64-unsigned`,
//!   the kernel users actually run (no fast path: kcmp() takes both locks).
//! * [`KernelKind::Fastpath`]: `linux-source-6.1` with `testing/kernel/*.patch` applied
//!   (exec_update_seq fast path plus the test-only `kcmp_fastpath` debugfs oracle),
//!   configured from `make tinyconfig` and `testing/kernel/config.fragment`.
//!
//! Both are cached under [`cache_root`]. Each cache entry is a directory holding the
//! image (`vmlinuz` or `bzImage`), `config` and `System.map`; it is assembled in a
//! temporary directory next to it and renamed into place, so an interrupted download
//! or build is never mistaken for a finished one.

use std::{
    env,
    ffi::OsStr,
    fs::{self, File},
    io::{Read, Seek, SeekFrom},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// Which kernel to boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelKind {
    /// Debian's stock cloud kernel (kcmp() always takes both exec_update_locks).
    Stock,
    /// linux-source-6.1 with the exec_update_seq fast path and the kcmp_fastpath oracle.
    Fastpath,
}

const SOURCE_PACKAGE: &str = "linux-source-6.1";
const SOURCE_TARBALL: &str = "/usr/src/linux-source-6.1.tar.xz";
const SOURCE_DIR: &str = "linux-source-6.1";
const BUILD_PACKAGES: &[&str] = &[
    SOURCE_PACKAGE,
    "build-essential",
    "bc",
    "bison",
    "flex",
    "libelf-dev",
    "libssl-dev",
    "dwarves",
    "xz-utils",
];
/// Changing how the kernel is built must not reuse kernels built the old way.
const RECIPE: &str = "kcmp-trace fastpath kernel recipe 1";
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

/// Returns the path of a bootable kernel image of `kind`, downloading or building it
/// on first use. `config` and `System.map` sit next to the image.
pub fn ensure_kernel(kind: KernelKind) -> Result<PathBuf> {
    let root = cache_root();
    match kind {
        KernelKind::Stock => ensure_stock(&root.join("stock")),
        KernelKind::Fastpath => ensure_fastpath(
            &root.join("fastpath"),
            &crate::workspace_root().join("testing/kernel"),
        ),
    }
    .with_context(|| format!("preparing the {kind:?} kernel (cache: {})", root.display()))
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
    step(format!("installing packages: {}", missing.join(" ")));
    let install = |pkgs: &[&str]| {
        let mut args = vec!["install", "-y", "--no-install-recommends"];
        args.extend_from_slice(pkgs);
        apt_get(&args)
    };
    if install(&missing).is_err() {
        // A fresh machine has no package lists yet.
        step("apt-get update");
        apt_get(&["update"])?;
        install(&missing)?;
    }
    Ok(())
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
    capture(&mut cmd).map(drop)
}

fn is_root() -> bool {
    // /proc/self is owned by the effective uid; avoids a libc dependency.
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

// ---------------------------------------------------------------------------------
// Stock kernel

fn ensure_stock(dir: &Path) -> Result<PathBuf> {
    let package = match newest_cloud_image()? {
        Some(p) => p,
        None => {
            step("apt-get update (no linux-image-6.1.0-*-cloud-amd64-unsigned known)");
            apt_get(&["update"])?;
            newest_cloud_image()?.context(
                "no linux-image-6.1.0-*-cloud-amd64-unsigned package in the apt sources \
                 (needs Debian bookworm with bookworm-updates/security)",
            )?
        }
    };
    let version = candidate_version(&package)?;
    let name = format!("{package}_{}", version.replace(':', "%3a"));
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

    step(format!("downloading {package} {version}"));
    capture(
        Command::new("apt-get")
            .arg("download")
            .arg(format!("{package}={version}"))
            .current_dir(&tmp),
    )?;
    let deb = find_file(&tmp, |n| n.ends_with(".deb"))?;
    let extracted = tmp.join("x");
    capture(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&extracted))?;

    let boot = extracted.join("boot");
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

/// The `linux-image-6.1.0-<abi>-cloud-amd64-unsigned` with the highest ABI number.
fn newest_cloud_image() -> Result<Option<String>> {
    let out = capture(Command::new("apt-cache").args([
        "search",
        "--names-only",
        r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$",
    ]))?;
    Ok(out
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|name| {
            let abi = name
                .strip_prefix("linux-image-6.1.0-")?
                .strip_suffix("-cloud-amd64-unsigned")?;
            Some((abi.parse::<u32>().ok()?, name.to_string()))
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

fn ensure_fastpath(dir: &Path, patch_dir: &Path) -> Result<PathBuf> {
    // The source version is part of the cache key, so it must be installed first.
    ensure_packages(&[SOURCE_PACKAGE])?;
    let inputs = FastpathInputs::read(patch_dir)?;
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
        "extracting {SOURCE_TARBALL} (linux-source-6.1 {})",
        inputs.source_version
    ));
    logged(
        Command::new("tar")
            .arg("-xf")
            .arg(SOURCE_TARBALL)
            .arg("-C")
            .arg(&tmp),
        &log,
    )?;
    let src = tmp.join(SOURCE_DIR);

    for patch in &inputs.patches {
        step(format!("applying {}", file_name(patch)));
        logged(
            Command::new("patch")
                .args(["-p1", "--forward", "--batch", "-i"])
                .arg(patch)
                .current_dir(&src),
            &log,
        )?;
    }

    step("configuring: make tinyconfig + config.fragment");
    logged(make(&src).arg("tinyconfig"), &log)?;
    logged(
        Command::new("scripts/kconfig/merge_config.sh")
            .args(["-m", ".config"])
            .arg(&inputs.fragment)
            .current_dir(&src),
        &log,
    )?;
    logged(make(&src).arg("olddefconfig"), &log)?;
    check_config(&src.join(".config"), &inputs.fragment)?;

    let jobs = build_jobs();
    step(format!(
        "building kernel (about 8 min on 2 cores, make -j{jobs}) ... log: {}",
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

/// Everything the fast-path kernel is built from, hashed into its cache key.
struct FastpathInputs {
    source_version: String,
    patches: Vec<PathBuf>,
    fragment: PathBuf,
    /// (file name, contents) of every patch, then of the fragment.
    contents: Vec<(String, Vec<u8>)>,
}

impl FastpathInputs {
    fn read(patch_dir: &Path) -> Result<Self> {
        let mut patches = Vec::new();
        for entry in
            fs::read_dir(patch_dir).with_context(|| format!("reading {}", patch_dir.display()))?
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
        let fragment = patch_dir.join("config.fragment");
        if !fragment.is_file() {
            bail!("missing {}", fragment.display());
        }
        let contents = patches
            .iter()
            .chain([&fragment])
            .map(|p| {
                let bytes = fs::read(p).with_context(|| format!("reading {}", p.display()))?;
                Ok((file_name(p), bytes))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            source_version: installed_version(SOURCE_PACKAGE)?,
            patches,
            fragment,
            contents,
        })
    }

    /// sha256 over the recipe, the source version, every patch and the fragment.
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
        let mut s = format!("{RECIPE}\n{SOURCE_PACKAGE} {}\n", self.source_version);
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
/// the log's tail.
fn logged(cmd: &mut Command, log: &Path) -> Result<()> {
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
            "{cmd:?} failed ({status}); last lines of {}:\n{}",
            log.display(),
            tail(log, LOG_TAIL_LINES)
        );
    }
    Ok(())
}

/// The last `lines` lines of a (possibly large) text file.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let read = || -> std::io::Result<String> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))?;
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
fn fresh_dir(path: &Path) -> Result<PathBuf> {
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
