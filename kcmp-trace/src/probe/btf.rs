//! Just enough of a BTF reader to answer "does this struct have that member?" and "is there
//! a function of that name?" from /sys/kernel/btf/vmlinux.

use std::collections::{HashMap, HashSet};

const BTF_MAGIC: u16 = 0xeb9f;

// BTF kinds whose trailing data we must skip (include/uapi/linux/btf.h).
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, Default)]
pub struct BtfIndex {
    /// struct/union name -> member names.
    members: HashMap<String, Vec<String>>,
    functions: HashSet<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BtfParseError {
    #[error("not BTF (bad magic)")]
    BadMagic,
    #[error("BTF truncated at offset {0}")]
    Truncated(usize),
}

impl BtfIndex {
    pub fn parse(data: &[u8]) -> Result<BtfIndex, BtfParseError> {
        let u16_at = |off: usize| {
            data.get(off..off + 2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .ok_or(BtfParseError::Truncated(off))
        };
        let u32_at = |off: usize| {
            data.get(off..off + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or(BtfParseError::Truncated(off))
        };
        if u16_at(0)? != BTF_MAGIC {
            return Err(BtfParseError::BadMagic);
        }
        let hdr_len = u32_at(4)? as usize;
        let type_off = hdr_len + u32_at(8)? as usize;
        let type_len = u32_at(12)? as usize;
        let str_off = hdr_len + u32_at(16)? as usize;
        let str_len = u32_at(20)? as usize;
        let strings = data
            .get(str_off..str_off + str_len)
            .ok_or(BtfParseError::Truncated(str_off))?;
        let name = |off: u32| -> String {
            let rest = strings.get(off as usize..).unwrap_or_default();
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            String::from_utf8_lossy(&rest[..end]).into_owned()
        };

        let mut index = BtfIndex::default();
        let mut off = type_off;
        let end = type_off + type_len;
        while off < end {
            let name_off = u32_at(off)?;
            let info = u32_at(off + 4)?;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            off += 12;
            let trailing = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                _ => 0,
            };
            match kind {
                KIND_STRUCT | KIND_UNION if name_off != 0 => {
                    let members = (0..vlen)
                        .map(|i| u32_at(off + 12 * i).map(name))
                        .collect::<Result<Vec<_>, _>>()?;
                    index
                        .members
                        .entry(name(name_off))
                        .or_default()
                        .extend(members);
                }
                KIND_FUNC => {
                    index.functions.insert(name(name_off));
                }
                _ => {}
            }
            off += trailing;
        }
        Ok(index)
    }

    pub fn has_member(&self, type_name: &str, member: &str) -> bool {
        self.members
            .get(type_name)
            .is_some_and(|m| m.iter().any(|n| n == member))
    }

    pub fn has_function(&self, name: &str) -> bool {
        self.functions.contains(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob with `struct s { int a; int b; }` and `void f(void)`.
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0s\0a\0b\0f\0";
        let mut types = Vec::new();
        let mut put = |v: &[u32]| {
            v.iter()
                .for_each(|x| types.extend_from_slice(&x.to_le_bytes()))
        };
        // [1] int: name "int"(1), kind INT, size 4, encoding
        put(&[1, KIND_INT << 24, 4, 32]);
        // [2] struct s: 2 members
        put(&[5, (KIND_STRUCT << 24) | 2, 8, 7, 1, 0, 9, 1, 32]);
        // [3] func_proto: 0 params, returns void
        put(&[0, KIND_FUNC_PROTO << 24, 0]);
        // [4] func f
        put(&[11, KIND_FUNC << 24, 3]);
        let mut blob = Vec::new();
        blob.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        blob.extend_from_slice(&[1, 0]);
        for v in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            blob.extend_from_slice(&v.to_le_bytes());
        }
        blob.extend_from_slice(&types);
        blob.extend_from_slice(strings);
        blob
    }

    #[test]
    fn finds_members_and_functions() {
        let btf = BtfIndex::parse(&sample()).expect("parse");
        assert!(btf.has_member("s", "a"));
        assert!(btf.has_member("s", "b"));
        assert!(!btf.has_member("s", "c"));
        assert!(!btf.has_member("t", "a"));
        assert!(btf.has_function("f"));
        assert!(!btf.has_function("g"));
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            BtfIndex::parse(b"nope"),
            Err(BtfParseError::BadMagic)
        ));
        let mut blob = sample();
        blob.truncate(30);
        assert!(BtfIndex::parse(&blob).is_err());
    }

    #[test]
    fn reads_this_kernels_btf_when_present() {
        let Ok(data) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            return;
        };
        let btf = BtfIndex::parse(&data).expect("parse vmlinux BTF");
        assert!(btf.has_member("signal_struct", "exec_update_lock"));
        assert!(btf.has_member("task_struct", "signal"));
    }
}
