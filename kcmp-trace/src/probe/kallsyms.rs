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

#[cfg(test)]
mod tests {
    use super::*;

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
