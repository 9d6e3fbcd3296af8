//! What differs between the architectures kcmp-trace runs on: the name of kcmp's syscall
//! wrapper, which fentry and kprobes hook, and where the `struct pt_regs *` that wrapper
//! receives holds kcmp's five arguments. The syscall tracepoints are the same everywhere.

/// An architecture kcmp-trace supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

/// The architecture this userspace build runs on.
#[cfg(target_arch = "x86_64")]
pub const NATIVE: Arch = Arch::X86_64;
/// The architecture this userspace build runs on.
#[cfg(target_arch = "aarch64")]
pub const NATIVE: Arch = Arch::Aarch64;

impl Arch {
    /// As `uname -m` and Rust's `target_arch` spell it.
    pub const fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// kcmp's syscall wrapper, the function the syscall table calls.
    pub const fn kcmp_wrapper(self) -> &'static str {
        match self {
            Arch::X86_64 => "__x64_sys_kcmp",
            Arch::Aarch64 => "__arm64_sys_kcmp",
        }
    }

    /// Byte offsets, in the kernel's `struct pt_regs`, of the registers that hold a
    /// syscall's first five arguments.
    pub const fn syscall_arg_offsets(self) -> [usize; 5] {
        match self {
            // r15 r14 r13 r12 bp bx r11 r10 r9 r8 ax cx dx si di ...: the syscall ABI passes
            // di, si, dx, r10, r8.
            Arch::X86_64 => [14 * 8, 13 * 8, 12 * 8, 7 * 8, 9 * 8],
            // regs[31] comes first: x0 to x4.
            Arch::Aarch64 => [0, 8, 16, 24, 32],
        }
    }

    /// The `struct pt_regs` offset of the instruction pointer: in a kretprobe, the kernel
    /// sets it to the return address into the caller (at the entry, a kretprobe on the
    /// same function has already replaced that address on the stack with its trampoline).
    pub const fn ip_offset(self) -> usize {
        match self {
            Arch::X86_64 => 16 * 8,
            Arch::Aarch64 => 32 * 8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_registers_are_distinct_and_aligned() {
        for arch in [Arch::X86_64, Arch::Aarch64] {
            let offsets = arch.syscall_arg_offsets();
            for (i, a) in offsets.iter().enumerate() {
                assert_eq!(a % 8, 0, "{arch:?}");
                assert!(!offsets[i + 1..].contains(a), "{arch:?}");
            }
        }
    }
}
