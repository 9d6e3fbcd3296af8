//! Kernels for the VM tests, by flavour and version (see [`Kernel`]):
//!
//! * stock: Debian's newest `linux-image-*-cloud-<arch>-unsigned` of the version, the kernel
//!   users actually run (no fast path: kcmp() takes both locks). On x86-64 6.12 it is built
//!   with PREEMPT_DYNAMIC, so `preempt=none|voluntary|full` on the command line picks the
//!   model; the arm64 one is voluntary only. 7.2 comes from Debian unstable (x86-64 only,
//!   through a private apt configuration, see [`Apt`]) as `linux-binary-*-cloud-amd64`:
//!   PREEMPT_DYNAMIC with only `full` and `lazy`, lazy by default.
//! * stock-rt: Debian's `linux-image-*-rt-<arch>-unsigned` (PREEMPT_RT; 7.2's
//!   `linux-binary-*-rt-amd64` is PREEMPT_DYNAMIC too, full by default, lazy on request).
//! * fastpath: `linux-source-<version>` with `testing/kernel/<version>/*.patch` applied
//!   (exec_update_seq fast path plus the test-only `kcmp_fastpath` debugfs oracle),
//!   configured from `make tinyconfig`, `testing/kernel/config.fragment` and, on 6.12,
//!   `preempt-dynamic.fragment`; on 7.2 `preempt-lazy.fragment`, `landlock.fragment`,
//!   `x86-like-debian.fragment` and `criu.fragment`.
//!   7.2's source comes from Debian unstable and is unpacked into the cache, not installed;
//!   its series carries the upstream kcmp patch byte-exact, checked by git blob hash.
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
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, Result, bail};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::{
    apt::{Apt, ensure_packages, extract_members, file_from_package, installed_version},
    target::Target,
    workspace::{cache_root, fresh_dir, hex, lock, logged, publish, remove_dir, workspace_root},
};

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
    #[value(name = "7.2")]
    V7_2,
}

impl Version {
    pub fn name(self) -> &'static str {
        match self {
            Version::V6_1 => "6.1",
            Version::V6_12 => "6.12",
            Version::V7_2 => "7.2",
        }
    }

    /// Fails unless its kernels boot with `preempt=<model>`: a kernel ignores a model it
    /// does not know and boots its default silently. x86 has lazy preemption from 6.13 on,
    /// and no longer none or voluntary in 7.2.
    pub fn ensure_boots(self, model: Option<Preempt>) -> Result<()> {
        let boots = match (self, model) {
            (_, None) => true,
            (Version::V6_1 | Version::V6_12, Some(model)) => model != Preempt::Lazy,
            (Version::V7_2, Some(model)) => matches!(model, Preempt::Full | Preempt::Lazy),
        };
        match model {
            Some(model) if !boots => bail!(
                "{} kernels do not boot with preempt={}",
                self.name(),
                model.name()
            ),
            _ => Ok(()),
        }
    }

    /// The ordering number of a kernel release of this version (the release without its
    /// `-<variant>-<arch>` tail), or None if the release is not of this version.
    fn image_abi(self, release: &str) -> Option<u32> {
        let sublevel = |prefix: &str, suffix: &str| {
            release
                .strip_prefix(prefix)?
                .strip_suffix(suffix)?
                .parse()
                .ok()
        };
        match self {
            // 6.1.0-<abi>
            Version::V6_1 => release.strip_prefix("6.1.0-")?.parse().ok(),
            Version::V6_12 => sublevel("6.12.", "+deb12"),
            Version::V7_2 => sublevel("7.2.", "+deb14"),
        }
    }

    /// The config fragments of its fast-path kernel (in testing/kernel/), merged in order onto
    /// `make tinyconfig`.
    fn fragments(self, rt: bool) -> Result<Vec<&'static str>> {
        let preempt = match (rt, self) {
            (true, Version::V6_1) => {
                bail!("PREEMPT_RT is mainline from 6.12 on: no fastpath-rt build of 6.1")
            }
            (true, _) => Some("preempt-rt.fragment"),
            // The 6.1 kernel keeps tinyconfig's model (none), as its tests always had it.
            (false, Version::V6_1) => None,
            (false, Version::V6_12) => Some("preempt-dynamic.fragment"),
            // x86 has lazy preemption from 6.13 on, and no longer none or voluntary in 7.2.
            (false, Version::V7_2) => Some("preempt-lazy.fragment"),
        };
        // 7.2's second writer of exec_update_lock is Landlock's TSYNC; its kprobes need
        // Debian's code-patching settings; the CRIU guest needs what CRIU runs on.
        let since_7_2: &[&str] = if self == Version::V7_2 {
            &[
                "landlock.fragment",
                "x86-like-debian.fragment",
                "criu.fragment",
            ]
        } else {
            &[]
        };
        Ok(std::iter::once("config.fragment")
            .chain(preempt)
            .chain(since_7_2.iter().copied())
            .collect())
    }

    /// The patch of its series that is the upstream kcmp patch itself, applied byte-exact.
    fn exact_patch(self) -> Option<ExactPatch> {
        match self {
            Version::V6_1 | Version::V6_12 => None,
            Version::V7_2 => Some(ExactPatch {
                patch: "0003-kcmp-take-a-lock-free-exec_update_seq-fast-path.patch",
                file: "kernel/kcmp.c",
                // Linux 7.2.13's kernel/kcmp.c, the patch's pre-image.
                before: "7c1a65bd5f8d3b47e237c83258d5a416138fdb61",
                after: "8fee7a5752d47c39ffd9d1cde24e68964a00f31d",
            }),
        }
    }

    /// The Debian suite with this version's packages, and how its images are packaged.
    fn suite(self) -> Suite {
        match self {
            Version::V6_1 | Version::V6_12 => Suite::Host,
            Version::V7_2 => Suite::Sid,
        }
    }
}

/// Where a version's Debian packages come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Suite {
    /// The host's apt sources (Debian bookworm and its updates): `linux-image-<release>-unsigned`
    /// holds `boot/{vmlinuz,config,System.map}-<release>`.
    Host,
    /// Debian unstable, amd64 only, through a private apt configuration under the cache (see
    /// [`Apt`]): `linux-binary-<release>` holds `usr/lib/modules/<release>/vmlinuz`,
    /// `linux-base-<release>` the config next to a stub System.map, and
    /// `linux-image-<release>-dbg` the real System.map.
    Sid,
}

/// One file of a stock kernel's cache entry: where it is in which package.
struct StockFile {
    package: String,
    /// Path inside the package, without the leading `./`.
    member: String,
    /// File name in the cache entry.
    dest: &'static str,
}

impl Suite {
    /// The apt configuration its packages are found and downloaded with.
    fn apt(self) -> Result<Apt> {
        match self {
            Suite::Host => Ok(Apt::host()),
            Suite::Sid => Apt::sid(),
        }
    }

    /// Image package names: `<prefix><release><suffix>`.
    fn image_affixes(self) -> (&'static str, &'static str) {
        match self {
            Suite::Host => ("linux-image-", "-unsigned"),
            Suite::Sid => ("linux-binary-", ""),
        }
    }

    /// The files of a stock kernel's cache entry, the image first.
    fn stock_files(self, release: &str) -> Vec<StockFile> {
        let file = |package: String, member: String, dest| StockFile {
            package,
            member,
            dest,
        };
        match self {
            Suite::Host => {
                let package = format!("linux-image-{release}-unsigned");
                [
                    ("vmlinuz", "vmlinuz"),
                    ("config", "config"),
                    ("System.map", "System.map"),
                ]
                .into_iter()
                .map(|(name, dest)| file(package.clone(), format!("boot/{name}-{release}"), dest))
                .collect()
            }
            Suite::Sid => {
                let modules = format!("usr/lib/modules/{release}");
                vec![
                    file(
                        format!("linux-binary-{release}"),
                        format!("{modules}/vmlinuz"),
                        "vmlinuz",
                    ),
                    file(
                        format!("linux-base-{release}"),
                        format!("{modules}/config"),
                        "config",
                    ),
                    file(
                        format!("linux-image-{release}-dbg"),
                        format!("usr/lib/debug/lib/modules/{release}/System.map"),
                        "System.map",
                    ),
                ]
            }
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
// Stock kernel

fn ensure_stock(dir: &Path, kernel: Kernel) -> Result<PathBuf> {
    let variant = if kernel.flavour.is_rt() {
        "rt"
    } else {
        "cloud"
    };
    let deb_arch = kernel.arch.deb_arch();
    let suite = kernel.version.suite();
    if suite == Suite::Sid && kernel.arch != Target::X86_64 {
        bail!(
            "Linux {} images are fetched for x86_64 only",
            kernel.version.name()
        );
    }
    let apt = suite.apt()?;
    let (prefix, suffix) = suite.image_affixes();
    let hint = match (suite, deb_arch) {
        (Suite::Sid, _) => "",
        (Suite::Host, "amd64") => " (needs Debian bookworm with bookworm-updates/security)",
        (Suite::Host, _) => {
            " (needs Debian bookworm with bookworm-updates/security, and \
             `dpkg --add-architecture arm64`)"
        }
    };
    let release = apt.find(
        &format!(
            "{prefix}{}.*-{variant}-{deb_arch}{suffix}{hint}",
            kernel.version.name()
        ),
        |apt| newest_release(apt, kernel.version, variant, deb_arch),
    )?;
    let files = suite.stock_files(&release);
    let mut packages: Vec<(String, String)> = Vec::new();
    for file in &files {
        let package = format!("{}:{deb_arch}", file.package);
        if !packages.iter().any(|(p, _)| *p == package) {
            let version = apt.find(&package, |apt| apt.candidate_version(&package))?;
            packages.push((package, version));
        }
    }
    let (package, version) = &packages[0];
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
    let unpacked = tmp.join("x");
    fs::create_dir(&unpacked)?;
    for (package, version) in &packages {
        let members: Vec<&str> = files
            .iter()
            .filter(|f| package.strip_suffix(&format!(":{deb_arch}")) == Some(&f.package))
            .map(|f| f.member.as_str())
            .collect();
        let deb = apt.download(package, version, &tmp)?;
        extract_members(&deb, &unpacked, &members)?;
        // The -dbg packages are large; only the extracted members are kept.
        fs::remove_file(&deb).with_context(|| format!("removing {}", deb.display()))?;
    }
    let out = tmp.join("out");
    fs::create_dir(&out)?;
    for file in &files {
        let src = unpacked.join(&file.member);
        fs::copy(&src, out.join(file.dest))
            .with_context(|| format!("copying {} of {}", file.member, file.package))?;
    }
    let listing: String = packages.iter().map(|(p, v)| format!("{p} {v}\n")).collect();
    fs::write(out.join("package"), listing)?;
    publish(&out, &entry)?;
    remove_dir(&tmp);
    step(format!("cached: {}", image.display()));
    Ok(image)
}

/// The newest `<release>` (`<abi>-<variant>-<deb_arch>`) of `version` with an image package,
/// by ABI (6.1) or sublevel (6.12 and later) number.
fn newest_release(
    apt: &Apt,
    version: Version,
    variant: &str,
    deb_arch: &str,
) -> Result<Option<String>> {
    let (prefix, suffix) = version.suite().image_affixes();
    let tail = format!("-{variant}-{deb_arch}");
    let names = apt.search(&format!(
        r"^{prefix}{}\..*{tail}{suffix}$",
        version.name().replace('.', r"\.")
    ))?;
    Ok(names
        .iter()
        .filter_map(|name| {
            let release = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
            Some((version.image_abi(release.strip_suffix(&tail)?)?, release))
        })
        .max()
        .map(|(_, release)| release.to_string()))
}

// ---------------------------------------------------------------------------------
// Fast-path kernel

fn ensure_fastpath(dir: &Path, kernel: Kernel) -> Result<PathBuf> {
    // The source version is part of the cache key, so it must be fetched first.
    let source = SourceTree::fetch(kernel.version)?;
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
        source.tarball.display(),
        source.package,
        source.version
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

    let exact = kernel.version.exact_patch();
    if let Some(exact) = &exact
        && !inputs.patches.iter().any(|p| file_name(p) == exact.patch)
    {
        bail!(
            "the series lacks {}, which must be applied byte-exact",
            exact.patch
        );
    }
    for patch in &inputs.patches {
        let name = file_name(patch);
        let exact = exact.as_ref().filter(|e| e.patch == name);
        if let Some(exact) = exact {
            exact.check(&src, exact.before, "before")?;
        }
        step(format!("applying {name}"));
        logged(
            Command::new("patch")
                .args(["-p1", "--forward", "--batch", "--fuzz=0", "-i"])
                .arg(patch)
                .current_dir(&src),
            &log,
        )?;
        if let Some(exact) = exact {
            exact.check(&src, exact.after, "after")?;
            step(format!(
                "{}: git blob {} as expected",
                exact.file, exact.after
            ));
        }
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
        "building {kernel} (5 to 30 min on 2 cores, make -j{jobs}) ... log: {}",
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

/// Debian's `linux-source-<version>` package: its version and the tarball it ships, which
/// unpacks into a directory named like the package.
struct SourceTree {
    package: String,
    version: String,
    tarball: PathBuf,
}

impl SourceTree {
    /// Installs the package from the host's apt sources, or for another suite downloads and
    /// unpacks it into the cache (never installing it on the host).
    fn fetch(version: Version) -> Result<SourceTree> {
        let package = format!("linux-source-{}", version.name());
        let tarball = format!("usr/src/{package}.tar.xz");
        let (tarball, version) = match version.suite() {
            Suite::Host => {
                ensure_packages(&[&package])?;
                (Path::new("/").join(tarball), installed_version(&package)?)
            }
            suite => file_from_package(&suite.apt()?, &package, &tarball)?,
        };
        Ok(SourceTree {
            package,
            version,
            tarball,
        })
    }
}

/// A patch of a series that must produce an exact file: the upstream patch, carried byte-exact
/// rather than ported. Checked by git blob hash before and after it is applied.
struct ExactPatch {
    patch: &'static str,
    file: &'static str,
    before: &'static str,
    after: &'static str,
}

impl ExactPatch {
    fn check(&self, src: &Path, want: &str, when: &str) -> Result<()> {
        let path = src.join(self.file);
        let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let have = git_blob_sha1(&bytes);
        if have != want {
            bail!(
                "{} {when} {}: git blob {have}, expected {want}",
                self.file,
                self.patch
            );
        }
        Ok(())
    }
}

/// What `git hash-object` prints for a file with these contents.
fn git_blob_sha1(bytes: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", bytes.len()));
    h.update(bytes);
    hex(&h.finalize())
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
        let base = workspace_root().join("testing/kernel");
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
        let fragments = kernel
            .version
            .fragments(kernel.flavour.is_rt())?
            .iter()
            .map(|f| base.join(f))
            .collect::<Vec<_>>();
        let contents = patches
            .iter()
            .chain(&fragments)
            .map(|p| {
                let bytes = fs::read(p).with_context(|| format!("reading {}", p.display()))?;
                Ok((file_name(p), bytes))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            source_version: source.version.clone(),
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

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_blob_sha1_matches_git_hash_object() {
        // `printf '' | git hash-object --stdin` and `echo hello | git hash-object --stdin`.
        assert_eq!(
            git_blob_sha1(b""),
            "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
        );
        assert_eq!(
            git_blob_sha1(b"hello\n"),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
    }

    #[test]
    fn exact_patch_check_rejects_other_contents() -> Result<()> {
        let src = fresh_dir(&env::temp_dir().join(format!("xtask-exact-{}", std::process::id())))?;
        fs::write(src.join("f"), "hello\n")?;
        let exact = ExactPatch {
            patch: "0001-x.patch",
            file: "f",
            before: "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391",
            after: "ce013625030ba8dba906f756967f9e9ca394464a",
        };
        let checked = (
            exact.check(&src, exact.after, "after"),
            exact.check(&src, exact.before, "before"),
        );
        fs::remove_dir_all(&src)?;
        assert!(checked.0.is_ok());
        let err = checked.1.expect_err("a different blob must fail");
        assert!(err.to_string().contains("expected e69de29b"), "{err}");
        Ok(())
    }
}

/// The models a PREEMPT_DYNAMIC kernel accepts on its command line (which ones depends on
/// the kernel: Debian's 7.2 offers only full and lazy).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Preempt {
    None,
    Voluntary,
    Full,
    /// Full, with preemption of ordinary tasks deferred to the next tick (6.13 and later).
    Lazy,
}

impl Preempt {
    pub fn name(self) -> &'static str {
        match self {
            Preempt::None => "none",
            Preempt::Voluntary => "voluntary",
            Preempt::Full => "full",
            Preempt::Lazy => "lazy",
        }
    }

    pub fn cmdline(self) -> String {
        format!("preempt={}", self.name())
    }
}
