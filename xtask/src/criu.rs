//! A real client of kcmp: CRIU dumps a process tree in the 7.2 guests, Debian's stock
//! kernel and the fast-path one, while kcmp-trace follows CRIU's calls and strace writes
//! down the same calls one by one.
//!
//! CRIU compares the tree's tasks and files with kcmp() to find what they share. The tree
//! (`testing/criu/tree.rs`, built here with rustc for musl) holds an epoll set watching an
//! eventfd, one file open in every process (inherited across fork and exec, and opened
//! again), an fd table shared through clone(CLONE_FILES), threads, and a process that execs
//! itself in a loop. CRIU seizes that one like the others: PTRACE_INTERRUPT stops it once an
//! execve in flight has returned, so CRIU dumps the new image, and with `--leave-running` the
//! loop goes on afterwards. So the exec loop stays inside the dumped tree; the checks hold
//! CRIU to having dumped it and the loop to having gone on.
//!
//! CRIU and strace come from Debian unstable (bookworm's CRIU 3.17 stops in its kernel
//! feature detection on 7.2), with their libraries and sid's own loader and libc, which the
//! guest unpacks over its busybox root (the only other binaries there are static). They are
//! cached under the cache root, keyed by a hash of the packages' names and versions. The
//! socket-diag modules are not needed: the tree has no socket, and CRIU only notes that it
//! could not list the host's.
//!
//! The checks: the dump succeeds and covers the tree; the tracer claims to be exact, with
//! every incompleteness counter at 0, and its counts per kcmp type and per result equal
//! strace's for the same calls; on the fast-path kernel its outcome split equals the
//! kernel's own oracle, on the stock kernel every call took the locks.

use std::{
    collections::BTreeMap,
    env, fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, ensure};
use kcmp_trace_common::{
    json::report::{Counts, Report},
    kcmp::{parse_type, type_slot_name},
    result::{KNOWN_ERRNOS, errno_name, result_slot, result_slot_name},
};
use sha2::{Digest as _, Sha256};

use crate::{
    apt::Apt,
    kernel::{Flavour, Kernel, Version, ensure_kernel},
    output::Watched,
    target::{Target, target_dir},
    vm::{self, VmSpec},
    workspace::{cache_root, capture, fresh_dir, hex, lock, publish, remove_dir, workspace_root},
};

/// The flags the tracer runs with beside `watch --json -c criu`: every flag a CRIU run
/// should exercise (`--stacks` joins `--readers` here).
const TRACER_FLAGS: &str = "--readers";

/// The guest's architecture: Debian unstable's packages are fetched for amd64.
pub const ARCH: Target = Target::X86_64;

/// The packages the guest runs, with everything they depend on.
const ROOTS: &[&str] = &["criu", "strace"];
/// The programs the guest runs from them.
const PROGRAMS: &[&str] = &["usr/sbin/criu", "usr/bin/strace"];
/// sid's loader, as libc6 ships it.
const SID_LOADER: &str = "usr/lib64/ld-linux-x86-64.so.2";
/// Where every x86-64 program asks for its loader.
const GUEST_LOADER: &str = "lib64/ld-linux-x86-64.so.2";
const LIBDIR: &str = "usr/lib/x86_64-linux-gnu";
/// The guest's part of the cache entry: the programs, their libraries and the loader.
const ARCHIVE: &str = "criu-sid.tar.gz";
/// Changing what the archive holds must not reuse archives made the old way.
const RECIPE: &str = "kcmp-trace criu archive 1";
/// Where the guest finds the archive and the tree.
const GUEST_ARCHIVE: &str = "/kcmp-vm/criu-sid.tar.gz";
const GUEST_TREE: &str = "/usr/bin/criu-tree";

/// One guest: CRIU on a 7.2 kernel in its default model.
pub struct Guest {
    kernel: Kernel,
}

impl Guest {
    pub fn name(&self) -> String {
        format!("criu-{}", self.kernel)
    }
}

/// Debian's stock 7.2 and the fast-path 7.2 kernel.
pub fn guests() -> Vec<Guest> {
    [Flavour::Stock, Flavour::Fastpath]
        .into_iter()
        .map(|flavour| Guest {
            kernel: Kernel::new(flavour, Version::V7_2),
        })
        .collect()
}

fn step(msg: impl AsRef<str>) {
    eprintln!("criu: {}", msg.as_ref());
}

/// Runs the guests, reporting each check by name to `check`. The archive and the tree are
/// made once, first.
pub fn run(guests: &[Guest], check: &mut dyn FnMut(&str, Result<()>)) {
    if guests.is_empty() {
        return;
    }
    let made = (|| anyhow::Ok((ensure_archive()?, build_tree()?)))();
    let Ok((archive, tree)) = made else {
        check("criu_archive_and_tree", made.map(drop));
        return;
    };
    for guest in guests {
        run_guest(guest, &archive, &tree, check);
    }
}

fn run_guest(guest: &Guest, archive: &Path, tree: &Path, check: &mut dyn FnMut(&str, Result<()>)) {
    let name = guest.name();
    let test = |what: &str| format!("{name}_{what}");
    let dir = workspace_root().join("target/vm-results").join(&name);
    let booted = boot(guest, archive, tree, &dir);
    let ok = booted.is_ok();
    check(&test("guest_runs"), booted);
    if !ok {
        return;
    }
    check(
        &test("dump_covers_the_tree"),
        dump_covers_the_tree(&dir, &name),
    );
    check(
        &test("tracer_equals_strace"),
        tracer_equals_strace(&dir, &name),
    );
    if guest.kernel.flavour.has_series() {
        check(
            &test("outcomes_equal_the_oracle"),
            outcomes_equal_the_oracle(&dir, &name),
        );
    } else {
        check(&test("every_call_locked"), every_call_locked(&dir));
    }
}

// ---------------------------------------------------------------------------------
// What the guest gets

/// sid's CRIU and strace with their libraries and loader, as a gzip tar the guest unpacks
/// at `/`; downloaded and assembled on first use.
fn ensure_archive() -> Result<PathBuf> {
    let apt = Apt::sid()?;
    // Fetches the package lists on first use.
    apt.find(ROOTS[0], |apt| apt.candidate_version(ROOTS[0]))?;
    let packages = apt.closure(ROOTS)?;
    let listing: String = packages.iter().map(|(p, v)| format!("{p} {v}\n")).collect();
    let key = hex(&Sha256::digest(format!("{RECIPE}\n{listing}"))[..12]);
    let dir = cache_root().join("criu");
    let entry = dir.join(&key);
    let archive = entry.join(ARCHIVE);
    if archive.is_file() {
        step(format!("cached: {}", archive.display()));
        return Ok(archive);
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let _lock = lock(&dir.join(format!("{key}.lock")))?;
    if archive.is_file() {
        return Ok(archive);
    }
    let tmp = fresh_dir(&dir.join(format!(".tmp-{key}")))?;
    let debs = fresh_dir(&tmp.join("debs"))?;
    apt.download_all(&packages, &debs)?;
    let unpacked = fresh_dir(&tmp.join("x"))?;
    for deb in fs::read_dir(&debs)? {
        capture(
            Command::new("dpkg-deb")
                .arg("-x")
                .arg(deb?.path())
                .arg(&unpacked),
        )?;
    }
    let guest = fresh_dir(&tmp.join("guest"))?;
    stage(&unpacked, &guest)?;
    let out = fresh_dir(&tmp.join("out"))?;
    capture(
        Command::new("tar")
            .args(["--owner=0", "--group=0", "-czf"])
            .arg(out.join(ARCHIVE))
            .arg("-C")
            .arg(&guest)
            .arg("."),
    )?;
    fs::write(out.join("packages"), listing)?;
    publish(&out, &entry)?;
    remove_dir(&tmp);
    step(format!(
        "cached: {} ({} KiB, from {} packages)",
        archive.display(),
        fs::metadata(&archive)?.len() >> 10,
        packages.len()
    ));
    Ok(archive)
}

/// Copies the programs, the libraries sid's loader resolves for them (as their sonames) and
/// the loader from `unpacked` into `guest`.
fn stage(unpacked: &Path, guest: &Path) -> Result<()> {
    let loader = unpacked.join(SID_LOADER);
    let libdir = guest.join(LIBDIR);
    fs::create_dir_all(&libdir)?;
    let guest_loader = guest.join(GUEST_LOADER);
    fs::create_dir_all(guest_loader.parent().context("the loader's directory")?)?;
    fs::copy(&loader, &guest_loader).context("copying sid's loader")?;
    for program in PROGRAMS {
        let dest = guest.join(program);
        fs::create_dir_all(dest.parent().context("a program's directory")?)?;
        fs::copy(unpacked.join(program), &dest).with_context(|| format!("copying {program}"))?;
        let listed = capture(
            Command::new(&loader)
                .arg("--library-path")
                .arg(unpacked.join(LIBDIR))
                .arg("--list")
                .arg(unpacked.join(program)),
        )?;
        for line in listed.lines() {
            let Some((soname, rest)) = line.trim().split_once(" => ") else {
                continue;
            };
            // The loader itself is listed by its path.
            if soname.contains('/') {
                continue;
            }
            let path = rest.split(" (").next().unwrap_or(rest);
            ensure!(
                path != "not found",
                "{program} needs {soname}, which sid's closure lacks"
            );
            fs::copy(path, libdir.join(soname)).with_context(|| format!("copying {path}"))?;
        }
    }
    Ok(())
}

/// The tree, built from its one source file: std and musl, no crates, so rustc alone
/// builds it.
fn build_tree() -> Result<PathBuf> {
    let source = workspace_root().join("testing/criu/tree.rs");
    let out = target_dir().join("criu/criu-tree");
    fs::create_dir_all(out.parent().context("the tree's directory")?)?;
    capture(
        Command::new(env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
            .args(["--edition", "2024", "-O", "-C", "strip=symbols", "--target"])
            .arg(ARCH.triple())
            .arg("-o")
            .arg(&out)
            .arg(&source),
    )
    .with_context(|| format!("building {}", source.display()))?;
    Ok(out)
}

/// The guest's command: the tree, the tracer attached, then CRIU's dump under strace.
fn script() -> String {
    format!(
        r#"set -e
R=/results
tar -xzf {GUEST_ARCHIVE} -C /
{{ criu --version; strace -V | head -1; }} > $R/versions
# CRIU's feature detection forks a child that ptraces itself, which fails under strace -f:
# an untraced run caches what it finds (/run/criu.kdat) for the traced dump to load.
criu check > $R/check.txt 2>&1 || true
if [ ! -s /run/criu.kdat ]; then
    echo "criu check left no /run/criu.kdat; its last lines:"; tail -20 $R/check.txt; exit 1
fi
criu-tree /tmp/tree.pids < /dev/null > $R/tree.out 2>&1 &
n=0
until [ -s /tmp/tree.pids ]; do
    n=$((n+1))
    [ $n -le 600 ] || {{ echo "the tree did not stand within 60 s:"; cat $R/tree.out; exit 1; }}
    sleep 0.1
done
read tree looper < /tmp/tree.pids
echo "$tree $looper" > $R/tree.pids
# How many times the loop has exec'd, from its argv (which is empty while an exec is in flight).
execs() {{
    local n=0
    while :; do
        set -- $(tr '\0' ' ' < /proc/$looper/cmdline)
        [ "$2" = exec-loop ] && {{ echo $3; return; }}
        n=$((n+1))
        [ $n -lt 1000 ] || {{ echo "process $looper is not the exec loop: $*" >&2; return 1; }}
    done
}}
kcmp-trace watch --json -c criu {TRACER_FLAGS} > $R/watch.json 2> $R/watch.err &
wp=$!
wait_attached $R/watch.err $wp
execs > $R/execs.before
oracle=/sys/kernel/debug/kcmp_fastpath
if [ -e $oracle ]; then echo 0 > $oracle; fi
mkdir -p /tmp/img
status=0
strace -f -qq -e trace=kcmp -e signal=none -o $R/strace.txt \
    criu dump -t $tree -D /tmp/img --leave-running -v4 -o $R/dump.log || status=$?
echo $status > $R/dump.status
if [ -e $oracle ]; then cat $oracle > $R/oracle; fi
kill -INT $wp
wait $wp
execs > $R/execs.after
ls /tmp/img > $R/images
"#
    )
}

fn boot(guest: &Guest, archive: &Path, tree: &Path, dir: &Path) -> Result<()> {
    let _ = fs::remove_dir_all(dir);
    let mut spec = VmSpec::new(
        format!("test-{}", guest.name()),
        ensure_kernel(guest.kernel)?,
        script(),
    );
    spec.files = vm::default_files(ARCH)?;
    spec.files
        .push((archive.to_path_buf(), GUEST_ARCHIVE.into()));
    spec.files.push((tree.to_path_buf(), GUEST_TREE.into()));
    spec.timeout = Duration::from_secs(240);
    spec.results_dir = Some(dir.to_path_buf());
    let outcome = vm::run(&spec)?;
    ensure!(
        outcome.exit_code == 0,
        "guest script failed with {} (console: {}):\n{}",
        outcome.exit_code,
        outcome.console_log.display(),
        outcome.output
    );
    eprintln!(
        "vm: {} guest done in {:.1} s (the command started {:.1} s after qemu)",
        guest.name(),
        outcome.elapsed.as_secs_f64(),
        outcome.boot_time.map_or(f64::NAN, |t| t.as_secs_f64()),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------
// Checks

fn read(dir: &Path, file: &str) -> Result<String> {
    fs::read_to_string(dir.join(file)).with_context(|| format!("reading {file}"))
}

/// The dump succeeded, holds the tree's root and its exec loop, and the loop went on
/// exec'ing after it.
fn dump_covers_the_tree(dir: &Path, name: &str) -> Result<()> {
    let status = read(dir, "dump.status")?;
    let log = read(dir, "dump.log")?;
    let finished = log
        .lines()
        .find(|l| l.ends_with("Dumping finished successfully"));
    ensure!(
        status.trim() == "0" && finished.is_some(),
        "criu dump exited {}; its log ends:\n{}",
        status.trim(),
        log.lines().rev().take(15).collect::<Vec<_>>().join("\n")
    );
    let images = read(dir, "images")?;
    let pids = read(dir, "tree.pids")?;
    for pid in pids.split_whitespace() {
        ensure!(
            images.lines().any(|i| i == format!("core-{pid}.img")),
            "no core image of process {pid} (tree {pids:?}): {images}"
        );
    }
    let count = |file| -> Result<u64> {
        read(dir, file)?
            .trim()
            .parse()
            .with_context(|| format!("{file}: not a count"))
    };
    let (before, after) = (count("execs.before")?, count("execs.after")?);
    ensure!(
        after > before,
        "the exec loop stood still over the dump: {before} execs before, {after} after"
    );
    eprintln!(
        "vm: {name}: criu dump of the tree (root and exec loop {}): {}; the loop went from \
         {before} to {after} execs over it",
        pids.trim(),
        finished.unwrap_or_default()
    );
    Ok(())
}

/// One kcmp call as strace printed it: its type and result as kcmp-trace names them.
#[derive(Debug, PartialEq, Eq)]
struct Call {
    ty: String,
    result: String,
}

/// The kcmp calls of `strace -f -qq -e trace=kcmp -e signal=none -o FILE`: lines
/// `PID kcmp(A, B, TYPE...) = RET`, or a call split by another thread's line into
/// `PID kcmp(A, B, TYPE... <unfinished ...>` and `PID <... kcmp resumed>...) = RET`.
fn strace_calls(text: &str) -> Result<Vec<Call>> {
    let mut calls = Vec::new();
    let mut unfinished: BTreeMap<&str, &str> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (pid, rest) = line
            .trim_start()
            .split_once(' ')
            .with_context(|| format!("no pid in strace's line {line:?}"))?;
        let rest = rest.trim_start();
        let (head, ret) = if let Some(head) = rest.strip_suffix(" <unfinished ...>") {
            unfinished.insert(pid, head);
            continue;
        } else if let Some(tail) = rest.strip_prefix("<... kcmp resumed>") {
            let head = unfinished
                .remove(pid)
                .with_context(|| format!("a resumed call without its start: {line:?}"))?;
            (head, tail)
        } else {
            (rest, rest)
        };
        let ty = head
            .strip_prefix("kcmp(")
            .and_then(|args| args.split(", ").nth(2))
            .and_then(|ty| ty.split([')', ' ']).next())
            .with_context(|| format!("not a kcmp call with a type: {line:?}"))?;
        let ty = parse_type(ty).map_or("invalid", type_slot_name).to_owned();
        let ret = ret
            .rsplit_once(" = ")
            .map(|(_, r)| r)
            .with_context(|| format!("no result in {line:?}"))?;
        calls.push(Call {
            ty,
            result: result_name(ret).with_context(|| format!("bad result in {line:?}"))?,
        });
    }
    ensure!(
        unfinished.is_empty(),
        "calls strace never saw return: {unfinished:?}"
    );
    Ok(calls)
}

/// strace's `0`..`3` or `-1 ENAME (text)`, as kcmp-trace names the result.
fn result_name(ret: &str) -> Option<String> {
    let mut words = ret.split_whitespace();
    let value: i64 = words.next()?.parse().ok()?;
    if value >= 0 {
        return Some(result_slot_name(result_slot(value)).to_owned());
    }
    let name = words.next()?;
    Some(
        KNOWN_ERRNOS
            .iter()
            .filter_map(|&e| errno_name(e))
            .find(|known| *known == name)
            .unwrap_or("other")
            .to_owned(),
    )
}

/// Counts by `key`.
fn tally(calls: &[Call], key: impl Fn(&Call) -> &str) -> Counts {
    let mut counts = Counts::new();
    for call in calls {
        *counts.entry(key(call).to_owned()).or_default() += 1;
    }
    counts
}

/// The tracer's summary; it must claim to be exact, with nothing incomplete, missed,
/// unpaired or dropped.
fn tracer_total(dir: &Path) -> Result<Report> {
    let total = Watched::read(dir, "watch.json")?.total()?.clone();
    ensure!(
        total.exact
            && total.incomplete.is_exact()
            && total.missed_runs.is_empty()
            && total.unpaired_exits + total.lost_exits + total.unclassified == 0
            && total.unattributed + total.events_dropped == 0,
        "the tracer is not exact: incomplete {:?}, missed runs {:?}, unpaired {} lost {} \
         unclassified {} unattributed {} dropped {}",
        total.incomplete,
        total.missed_runs,
        total.unpaired_exits,
        total.lost_exits,
        total.unclassified,
        total.unattributed,
        total.events_dropped
    );
    Ok(total)
}

/// kcmp-trace's counts of CRIU's calls per type and per result equal strace's, exactly.
fn tracer_equals_strace(dir: &Path, name: &str) -> Result<()> {
    let calls = strace_calls(&read(dir, "strace.txt")?)?;
    let total = tracer_total(dir)?;
    let by_type = tally(&calls, |c| &c.ty);
    let by_result = tally(&calls, |c| &c.result);
    eprintln!(
        "vm: {name}: CRIU's kcmp calls, kcmp-trace / strace: {} / {}",
        total.calls,
        calls.len()
    );
    for (what, traced, straced) in [
        ("type", &total.by_type, &by_type),
        ("result", &total.by_result, &by_result),
    ] {
        eprintln!("vm: {name}:   by {what}: {}", side_by_side(traced, straced));
    }
    ensure!(!calls.is_empty(), "strace saw CRIU make no kcmp call");
    ensure!(
        total.calls == calls.len() as u64
            && total.by_type == by_type
            && total.by_result == by_result,
        "kcmp-trace {} calls, by type {:?}, by result {:?}; strace {} calls, by type \
         {by_type:?}, by result {by_result:?}",
        total.calls,
        total.by_type,
        total.by_result,
        calls.len()
    );
    if let Some(readers) = &total.by_reader {
        let waits: Vec<String> = readers
            .iter()
            .filter(|(reader, r)| reader.starts_with("other:") && r.lock_waits > 0)
            .map(|(reader, r)| format!("{reader}={}", r.lock_waits))
            .collect();
        eprintln!(
            "vm: {name}:   CRIU's other waits on exec_update_lock: {}",
            waits.join(" ")
        );
    }
    Ok(())
}

/// `KEY=traced/straced` for every key of either.
fn side_by_side(traced: &Counts, straced: &Counts) -> String {
    let mut keys: Vec<&String> = traced.keys().chain(straced.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.iter()
        .map(|k| {
            let n = |c: &Counts| c.get(*k).copied().unwrap_or(0);
            format!("{k}={}/{}", n(traced), n(straced))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// On the fast-path kernel: the tracer's outcome split equals the kernel's own count of
/// each path (`/sys/kernel/debug/kcmp_fastpath`, reset just before the dump; nothing but
/// CRIU calls kcmp in the guest meanwhile).
fn outcomes_equal_the_oracle(dir: &Path, name: &str) -> Result<()> {
    let total = tracer_total(dir)?;
    let oracle = read(dir, "oracle")?;
    let kernel: Counts = oracle
        .lines()
        .map(|l| {
            let (path, n) = l
                .split_once(' ')
                .with_context(|| format!("oracle: bad line {l:?}"))?;
            Ok((path.to_owned(), n.trim().parse()?))
        })
        .collect::<Result<_>>()?;
    let of = |counts: &Counts, path: &str| counts.get(path).copied().unwrap_or(0);
    eprintln!(
        "vm: {name}: outcomes of CRIU's calls: {}; the kernel's oracle: {}",
        fmt_counts(&total.by_outcome),
        oracle.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    for path in ["fast", "retry", "busy", "interrupted"] {
        ensure!(
            of(&total.by_outcome, path) == of(&kernel, path),
            "{path}: the tracer {}, the kernel {} ({:?} vs {oracle:?})",
            of(&total.by_outcome, path),
            of(&kernel, path),
            total.by_outcome
        );
    }
    ensure!(
        of(&total.by_outcome, "locked") + of(&total.by_outcome, "unknown") == 0,
        "calls without a path on the fast-path kernel: {:?}",
        total.by_outcome
    );
    Ok(())
}

/// On the stock kernel every call that found its tasks took the locks.
fn every_call_locked(dir: &Path) -> Result<()> {
    let total = tracer_total(dir)?;
    let pathless = ["fast", "retry", "busy", "unknown"]
        .iter()
        .any(|p| total.by_outcome.contains_key(*p));
    ensure!(
        !pathless && total.by_outcome.get("locked").is_some_and(|&n| n > 0),
        "outcomes on the stock kernel: {:?}",
        total.by_outcome
    );
    Ok(())
}

fn fmt_counts(counts: &Counts) -> String {
    counts
        .iter()
        .map(|(k, n)| format!("{k}={n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(ty: &str, result: &str) -> Call {
        Call {
            ty: ty.into(),
            result: result.into(),
        }
    }

    #[test]
    fn strace_lines_become_calls() -> Result<()> {
        let text = "\
257   kcmp(257, 153, KCMP_VM)           = 1
257   kcmp(153, 153, KCMP_EPOLL_TFD, 4, {efd=5, tfd=4, toff=0}) = 0
258   kcmp(153, 155, KCMP_FILE, 3, 6 <unfinished ...>
257   kcmp(1, 99999, KCMP_FILES)        = -1 ESRCH (No such process)
258   <... kcmp resumed>)               = 2
257   kcmp(1, 2, 0x9 /* KCMP_??? */)    = -1 EINVAL (Invalid argument)
257   kcmp(1, 2, KCMP_SYSVSEM)          = -1 ENOSYS (Function not implemented)
257   kcmp(1, 2, KCMP_IO)               = 3
";
        assert_eq!(
            strace_calls(text)?,
            [
                call("KCMP_VM", "less"),
                call("KCMP_EPOLL_TFD", "equal"),
                call("KCMP_FILES", "ESRCH"),
                call("KCMP_FILE", "greater"),
                call("invalid", "EINVAL"),
                call("KCMP_SYSVSEM", "other"),
                call("KCMP_IO", "unordered"),
            ]
        );
        Ok(())
    }

    #[test]
    fn a_call_that_never_returned_is_an_error() {
        let err = strace_calls("257   kcmp(1, 2, KCMP_VM <unfinished ...>\n")
            .expect_err("an unfinished call must not pass");
        assert!(err.to_string().contains("never saw return"), "{err}");
        assert!(strace_calls("257   write(1, \"x\", 1) = 1\n").is_err());
    }

    #[test]
    fn tallies_count_each_key() {
        let calls = [
            call("KCMP_VM", "less"),
            call("KCMP_VM", "equal"),
            call("KCMP_FILE", "equal"),
        ];
        let by_type = tally(&calls, |c| &c.ty);
        assert_eq!(
            by_type,
            Counts::from([("KCMP_FILE".into(), 1), ("KCMP_VM".into(), 2)])
        );
        assert_eq!(
            side_by_side(&by_type, &Counts::from([("KCMP_VM".into(), 3)])),
            "KCMP_FILE=1/0 KCMP_VM=2/3"
        );
    }
}
