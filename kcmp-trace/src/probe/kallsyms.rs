//! Which kernel functions exist as real symbols (/proc/kallsyms).

use std::collections::HashSet;

#[derive(Debug, Default)]
pub struct Kallsyms {
    names: HashSet<String>,
}

impl Kallsyms {
    pub fn read() -> std::io::Result<Kallsyms> {
        Ok(Self::parse(&std::fs::read_to_string("/proc/kallsyms")?))
    }

    /// Text symbols only (`t`/`T`): a function that was inlined everywhere has none.
    pub fn parse(text: &str) -> Kallsyms {
        let names = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let (_addr, kind, name) = (fields.next()?, fields.next()?, fields.next()?);
                matches!(kind, "t" | "T").then(|| name.to_owned())
            })
            .collect();
        Kallsyms { names }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }
}

/// Text symbols by address, to name the function an address is in (a caller's return
/// address: `reader`'s call sites).
#[derive(Debug, Default)]
pub struct TextSymbols {
    /// (address, name), sorted by address.
    by_address: Vec<(u64, String)>,
}

impl TextSymbols {
    pub fn read() -> std::io::Result<TextSymbols> {
        Ok(Self::parse(&std::fs::read_to_string("/proc/kallsyms")?))
    }

    pub fn parse(text: &str) -> TextSymbols {
        let mut by_address: Vec<(u64, String)> = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let (addr, kind, name) = (fields.next()?, fields.next()?, fields.next()?);
                let addr = u64::from_str_radix(addr, 16).ok()?;
                (matches!(kind, "t" | "T") && addr != 0).then(|| (addr, name.to_owned()))
            })
            .collect();
        by_address.sort_unstable();
        TextSymbols { by_address }
    }

    /// The function `addr` is in: the nearest text symbol at or below it. None below the
    /// first, or when addresses are hidden (kptr_restrict reads them as 0).
    pub fn containing(&self, addr: u64) -> Option<&str> {
        let i = self.by_address.partition_point(|(a, _)| *a <= addr);
        i.checked_sub(1).map(|i| self.by_address[i].1.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_function_an_address_is_in() {
        let t = TextSymbols::parse(
            "ffffffff81000100 t mm_access\n\
             ffffffff81000000 T proc_pid_stack\n\
             ffffffff82000000 D init_signals\n\
             0000000000000000 t hidden\n",
        );
        assert_eq!(t.containing(0xffffffff81000000), Some("proc_pid_stack"));
        assert_eq!(t.containing(0xffffffff810000ff), Some("proc_pid_stack"));
        assert_eq!(t.containing(0xffffffff81000123), Some("mm_access"));
        assert_eq!(t.containing(0xffffffff80000000), None);
    }

    #[test]
    fn keeps_only_text_symbols() {
        let k = Kallsyms::parse(
            "ffffffff81000000 T __x64_sys_kcmp\n\
             ffffffff81000010 t ptrace_may_access\n\
             ffffffff82000000 D init_signals\n\
             ffffffff81000020 t exec_mmap\t[some_module]\n",
        );
        assert!(k.contains("__x64_sys_kcmp"));
        assert!(k.contains("ptrace_may_access"));
        assert!(k.contains("exec_mmap"));
        assert!(!k.contains("init_signals"));
        assert!(!k.contains("kcmp_lock"));
    }
}
