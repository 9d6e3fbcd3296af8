use which::which;

/// The eBPF crate links with bpf-linker, which cargo does not know about: rebuild when it
/// changes, and say clearly when it is missing.
fn main() {
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => panic!("bpf-linker not found in PATH: run `cargo xtask setup`"),
    }
}
