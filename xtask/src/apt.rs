//! Debian packages: installing the host's, and fetching files from packages that are not
//! installed (another architecture's, or another suite's through a private apt
//! configuration, see [`Apt`]), cached under the cache root.

use std::{
    ffi::OsStr,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::workspace::{
    cache_root, capture, fresh_dir, is_root, lock, logged, publish, remove_dir, setup_log,
};

fn step(msg: impl AsRef<str>) {
    eprintln!("apt: {}", msg.as_ref());
}

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
    step(format!("installing {}", missing.join(" ")));
    let install = |pkgs: &[&str]| {
        let mut args = vec!["install", "-y", "--no-install-recommends"];
        args.extend_from_slice(pkgs);
        apt_get(&args)
    };
    if install(&missing).is_err() {
        // A fresh machine has no package lists yet.
        step("update (no package lists yet, or stale ones)");
        apt_get(&["update"])?;
        install(&missing)?;
    }
    Ok(())
}

/// A file from a Debian package that is not installed on the host (another architecture's,
/// e.g. `busybox-static:arm64`'s `bin/busybox`, or a package of another suite): downloaded,
/// unpacked and cached under `<cache>/debs/<package>_<version>/` on first use. Returns the
/// file and the package's version.
pub fn file_from_package(apt: &Apt, package: &str, path: &str) -> Result<(PathBuf, String)> {
    let version = apt.find(package, |apt| apt.candidate_version(package))?;
    let name = format!(
        "{}_{}",
        package.replace(':', "_"),
        version.replace(':', "%3a")
    );
    let dir = cache_root().join("debs");
    let entry = dir.join(&name);
    let wanted = entry.join(path);
    if wanted.is_file() {
        return Ok((wanted, version));
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let _lock = lock(&dir.join(format!("{name}.lock")))?;
    if wanted.is_file() {
        return Ok((wanted, version));
    }
    let tmp = fresh_dir(&dir.join(format!(".tmp-{name}")))?;
    let deb = apt.download(package, &version, &tmp)?;
    let out = tmp.join("x");
    capture(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&out))?;
    if !out.join(path).is_file() {
        bail!("{package} {version} has no {path}");
    }
    publish(&out, &entry)?;
    remove_dir(&tmp);
    Ok((wanted, version))
}

/// Extracts `members` (paths without the leading `./`) of `deb` into `dest`. tar stops
/// reading after the last one, so a member near the start of a large package (the -dbg
/// ones reach a gigabyte) costs little.
pub fn extract_members(deb: &Path, dest: &Path, members: &[&str]) -> Result<()> {
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running dpkg-deb")?;
    let tarfile = dpkg.stdout.take().context("dpkg-deb stdout")?;
    let tar = Command::new("tar")
        .args(["-x", "--occurrence", "-C"])
        .arg(dest)
        .args(members.iter().map(|m| format!("./{m}")))
        .stdin(tarfile)
        .output()
        .context("running tar")?;
    // When tar stops early dpkg-deb dies of SIGPIPE: only tar's status says whether every
    // member arrived whole.
    let dpkg = dpkg.wait_with_output().context("waiting for dpkg-deb")?;
    if !tar.status.success() {
        bail!(
            "extracting {} from {} failed: {}{}",
            members.join(" "),
            deb.display(),
            String::from_utf8_lossy(&tar.stderr),
            String::from_utf8_lossy(&dpkg.stderr)
        );
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

/// The installed version of a package of the host.
pub fn installed_version(package: &str) -> Result<String> {
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
    logged(&mut cmd, &setup_log())
}

/// An apt configuration that packages are found and downloaded with: the host's, or
/// [`Apt::sid`], a private one under `<cache>/apt-sid/` (its own sources.list, package
/// lists and archive cache), so the host's apt sources are never changed.
pub struct Apt {
    /// The private configuration's directory; None for the host's.
    private: Option<PathBuf>,
}

/// Debian unstable, for the private configuration.
const SID_SOURCES: &str = "deb [arch=amd64] http://deb.debian.org/debian sid main\n";

impl Apt {
    pub fn host() -> Apt {
        Apt { private: None }
    }

    /// Debian unstable, amd64 only.
    pub fn sid() -> Result<Apt> {
        let dir = cache_root().join("apt-sid");
        for sub in ["lists/partial", "cache/archives/partial"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        }
        let sources = dir.join("sources.list");
        if fs::read_to_string(&sources).ok().as_deref() != Some(SID_SOURCES) {
            fs::write(&sources, SID_SOURCES)
                .with_context(|| format!("writing {}", sources.display()))?;
        }
        Ok(Apt { private: Some(dir) })
    }

    /// `program` (apt-get, apt-cache) with this configuration's options.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        if let Some(dir) = &self.private {
            let opt = |name: &str, value: &Path| format!("{name}={}", value.display());
            for value in [
                opt("Dir::Etc::SourceList", &dir.join("sources.list")),
                opt("Dir::Etc::SourceParts", Path::new("/dev/null")),
                opt("Dir::State::Lists", &dir.join("lists")),
                opt("Dir::Cache", &dir.join("cache")),
                // The mirror's sid index is served past its Valid-Until date.
                "Acquire::Check-Valid-Until=false".to_string(),
                "APT::Architecture=amd64".to_string(),
            ] {
                cmd.arg("-o").arg(value);
            }
        }
        cmd
    }

    fn describe(&self) -> String {
        match &self.private {
            None => "the host's apt sources".to_string(),
            Some(dir) => format!("Debian unstable (apt configuration in {})", dir.display()),
        }
    }

    fn update(&self) -> Result<()> {
        step(format!("apt-get update ({})", self.describe()));
        match self.private {
            None => apt_get(&["update"]),
            Some(_) => capture(self.command("apt-get").arg("update")).map(drop),
        }
    }

    /// Runs `query`; if it finds nothing (or a private configuration has no package lists
    /// yet), updates the package lists and runs it again.
    pub fn find<T>(&self, what: &str, query: impl Fn(&Apt) -> Result<Option<T>>) -> Result<T> {
        if self.has_lists()
            && let Some(found) = query(self)?
        {
            return Ok(found);
        }
        self.update()?;
        query(self)?.with_context(|| format!("{what}: not found in {}", self.describe()))
    }

    /// A private configuration has package lists once an update fetched a Release file.
    fn has_lists(&self) -> bool {
        let Some(dir) = &self.private else {
            return true;
        };
        fs::read_dir(dir.join("lists")).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with("Release"))
        })
    }

    /// Names of the packages matching the regex `pattern`.
    pub fn search(&self, pattern: &str) -> Result<Vec<String>> {
        let out = capture(
            self.command("apt-cache")
                .args(["search", "--names-only", pattern]),
        )?;
        Ok(out
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .map(str::to_string)
            .collect())
    }

    pub fn candidate_version(&self, package: &str) -> Result<Option<String>> {
        let out = capture(self.command("apt-cache").args(["policy", package]))?;
        Ok(out
            .lines()
            .find_map(|l| l.trim().strip_prefix("Candidate:"))
            .map(|v| v.trim().to_string())
            .filter(|v| v != "(none)"))
    }

    /// `roots` and every package they depend on, recursively (Depends and Pre-Depends; a
    /// virtual package stands for the packages that provide it), each with its candidate
    /// version, sorted by name.
    pub fn closure(&self, roots: &[&str]) -> Result<Vec<(String, String)>> {
        let tree = capture(
            self.command("apt-cache")
                .args(["depends", "--recurse", "--no-recommends", "--no-suggests"])
                .args(["--no-conflicts", "--no-breaks", "--no-replaces"])
                .args(["--no-enhances"])
                .args(roots),
        )?;
        let mut names: Vec<&str> = tree
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with([' ', '<']))
            .collect();
        names.sort_unstable();
        names.dedup();
        let policy = capture(self.command("apt-cache").arg("policy").args(&names))?;
        let mut versions = Vec::new();
        let mut package = None;
        for line in policy.lines() {
            if !line.starts_with(' ') {
                package = line.strip_suffix(':');
            } else if let (Some(name), Some(version)) =
                (package, line.trim().strip_prefix("Candidate:"))
            {
                match version.trim() {
                    "(none)" => bail!(
                        "{name}, a dependency of {}, has no candidate",
                        roots.join(" ")
                    ),
                    version => versions.push((name.to_string(), version.to_string())),
                }
            }
        }
        if versions.len() != names.len() {
            bail!(
                "apt-cache policy named {} of the {} packages {} depend on",
                versions.len(),
                names.len(),
                roots.join(" ")
            );
        }
        versions.sort();
        Ok(versions)
    }

    /// Downloads each (package, version) into `dir` with one apt-get.
    pub fn download_all(&self, packages: &[(String, String)], dir: &Path) -> Result<()> {
        step(format!("downloading {} packages", packages.len()));
        capture(
            self.command("apt-get")
                .arg("download")
                .args(packages.iter().map(|(p, v)| format!("{p}={v}")))
                .current_dir(dir),
        )
        .map(drop)
    }

    /// Downloads `package` at `version` into `dir`; returns the .deb.
    pub fn download(&self, package: &str, version: &str, dir: &Path) -> Result<PathBuf> {
        step(format!("downloading {package} {version}"));
        capture(
            self.command("apt-get")
                .arg("download")
                .arg(format!("{package}={version}"))
                .current_dir(dir),
        )?;
        let stem = package.split(':').next().unwrap_or(package);
        find_file(dir, |n| {
            n.starts_with(&format!("{stem}_")) && n.ends_with(".deb")
        })
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
