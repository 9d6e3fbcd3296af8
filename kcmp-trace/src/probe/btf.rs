//! The one question about kernel BTF that aya's `Btf` cannot answer: does a struct have a
//! member? (It answers function lookups, which the probes use, but keeps members private.)
//! A scan of the raw vmlinux BTF for one struct that allocates nothing.

const BTF_MAGIC: u16 = 0xeb9f;

// BTF kinds whose trailing data we must skip (include/uapi/linux/btf.h).
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, thiserror::Error)]
pub enum BtfParseError {
    #[error("not BTF (bad magic)")]
    BadMagic,
    #[error("BTF truncated at offset {0}")]
    Truncated(usize),
}

/// Whether the struct (or union) `type_name` has a member named `member`.
pub fn struct_has_member(
    data: &[u8],
    type_name: &str,
    member: &str,
) -> Result<bool, BtfParseError> {
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
    let name_is = |off: u32, want: &str| {
        strings.get(off as usize..).is_some_and(|rest| {
            rest.starts_with(want.as_bytes()) && rest.get(want.len()) == Some(&0)
        })
    };

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
        if matches!(kind, KIND_STRUCT | KIND_UNION) && name_is(name_off, type_name) {
            for i in 0..vlen {
                if name_is(u32_at(off + 12 * i)?, member) {
                    return Ok(true);
                }
            }
        }
        off += trailing;
    }
    Ok(false)
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
        // [4] func f (kind 12)
        put(&[11, 12 << 24, 3]);
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
    fn finds_members() {
        let btf = sample();
        assert!(struct_has_member(&btf, "s", "a").expect("scan"));
        assert!(struct_has_member(&btf, "s", "b").expect("scan"));
        assert!(!struct_has_member(&btf, "s", "c").expect("scan"));
        assert!(!struct_has_member(&btf, "t", "a").expect("scan"));
        // A prefix of a name is not the name.
        assert!(!struct_has_member(&btf, "", "a").expect("scan"));
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            struct_has_member(b"nope", "s", "a"),
            Err(BtfParseError::BadMagic)
        ));
        let mut blob = sample();
        blob.truncate(30);
        assert!(struct_has_member(&blob, "s", "a").is_err());
    }

    #[test]
    fn reads_this_kernels_btf_when_present() {
        let Ok(data) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            return;
        };
        assert!(struct_has_member(&data, "signal_struct", "exec_update_lock").expect("scan"));
        assert!(struct_has_member(&data, "task_struct", "signal").expect("scan"));
    }
}
