use which::which;

/// The eBPF crate links with bpf-linker, which cargo does not know about: rebuild when it
/// changes, and say clearly when it is missing. `bpf_target_arch` (pt_regs layout) comes
/// from aya-build when built for kcmp-trace, and from the host when linted alone.
fn main() -> aya_build::Result<()> {
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => panic!("bpf-linker not found in PATH: run `cargo xtask setup`"),
    }
    aya_build::emit_bpf_target_arch_cfg()
}
