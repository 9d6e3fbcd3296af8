//! How a test that this machine cannot run skips itself: visibly. Such a test is
//! `#[ignore = "needs ..."]`, so plain `cargo test` lists it as ignored, and `cargo xtask
//! test` runs it with `--include-ignored`. The integration tests use this through
//! `require_root`; `probe::btf`'s unit tests include this file for the kernel's BTF.

use std::io::Write as _;

/// Skips the running test for want of `what`: says so on stderr and appends the test's
/// name to the file in `KCMP_TRACE_SKIP_LOG`, where `cargo xtask test` counts the skips
/// and fails on them unless told not to. In CI (`CI` set) a test never skips: it fails.
pub fn skip(what: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("unnamed test")
        .to_owned();
    if std::env::var_os("CI").is_some() {
        panic!("{test} needs {what}, and CI must provide it");
    }
    eprintln!("skipping {test}: needs {what} (CI runs it)");
    if let Some(log) = std::env::var_os("KCMP_TRACE_SKIP_LOG") {
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .and_then(|mut f| writeln!(f, "{test}"));
        appended.expect("recording a skipped test");
    }
}
