//! The questions about kernel BTF that aya's `Btf` cannot answer: does a struct have a
//! member, where is it, and how long is an array? (It answers function lookups, which the
//! probes use, but keeps members private.) Scans of the raw vmlinux BTF that allocate
//! nothing.

const BTF_MAGIC: u16 = 0xeb9f;

// BTF kinds whose trailing data we must skip or read (include/uapi/linux/btf.h).
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

/// A struct member as BTF places it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub type_id: u32,
    /// From the start of the struct; None for a bitfield.
    pub byte_offset: Option<u32>,
}

/// One type record: its id, and where its kind-specific data starts.
struct Record {
    id: u32,
    name_off: u32,
    kind: u32,
    kind_flag: bool,
    vlen: usize,
    data: usize,
}

/// A BTF blob's type and string sections.
struct Blob<'a> {
    data: &'a [u8],
    types: std::ops::Range<usize>,
    strings: &'a [u8],
}

impl<'a> Blob<'a> {
    fn new(data: &'a [u8]) -> Result<Blob<'a>, BtfParseError> {
        let blob = Blob {
            data,
            types: 0..0,
            strings: &[],
        };
        if blob.u16_at(0)? != BTF_MAGIC {
            return Err(BtfParseError::BadMagic);
        }
        let hdr_len = blob.u32_at(4)? as usize;
        let type_off = hdr_len + blob.u32_at(8)? as usize;
        let type_len = blob.u32_at(12)? as usize;
        let str_off = hdr_len + blob.u32_at(16)? as usize;
        let str_len = blob.u32_at(20)? as usize;
        let strings = data
            .get(str_off..str_off + str_len)
            .ok_or(BtfParseError::Truncated(str_off))?;
        Ok(Blob {
            data,
            types: type_off..type_off + type_len,
            strings,
        })
    }

    fn u16_at(&self, off: usize) -> Result<u16, BtfParseError> {
        self.data
            .get(off..off + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or(BtfParseError::Truncated(off))
    }

    fn u32_at(&self, off: usize) -> Result<u32, BtfParseError> {
        self.data
            .get(off..off + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or(BtfParseError::Truncated(off))
    }

    fn name_is(&self, off: u32, want: &str) -> bool {
        self.strings.get(off as usize..).is_some_and(|rest| {
            rest.starts_with(want.as_bytes()) && rest.get(want.len()) == Some(&0)
        })
    }

    /// Calls `visit` on each type record in id order until it returns Some.
    fn find<T>(
        &self,
        mut visit: impl FnMut(&Record) -> Result<Option<T>, BtfParseError>,
    ) -> Result<Option<T>, BtfParseError> {
        let mut off = self.types.start;
        let mut id = 1;
        while off < self.types.end {
            let info = self.u32_at(off + 4)?;
            let record = Record {
                id,
                name_off: self.u32_at(off)?,
                kind: (info >> 24) & 0x1f,
                kind_flag: info >> 31 != 0,
                vlen: (info & 0xffff) as usize,
                data: off + 12,
            };
            if let Some(found) = visit(&record)? {
                return Ok(Some(found));
            }
            let trailing = match record.kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * record.vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * record.vlen,
                _ => 0,
            };
            off = record.data + trailing;
            id += 1;
        }
        Ok(None)
    }
}

/// The member `member` of the struct (or union) `type_name`, if there is one.
pub fn struct_member(
    data: &[u8],
    type_name: &str,
    member: &str,
) -> Result<Option<Member>, BtfParseError> {
    let blob = Blob::new(data)?;
    blob.find(|r| {
        if !matches!(r.kind, KIND_STRUCT | KIND_UNION) || !blob.name_is(r.name_off, type_name) {
            return Ok(None);
        }
        for i in 0..r.vlen {
            let at = r.data + 12 * i;
            if blob.name_is(blob.u32_at(at)?, member) {
                let offset = blob.u32_at(at + 8)?;
                // With kind_flag set, the low 24 bits are the bit offset, the rest a
                // bitfield's size (0: not a bitfield).
                let (bits, bitfield) = if r.kind_flag {
                    (offset & 0xff_ffff, offset >> 24 != 0)
                } else {
                    (offset, false)
                };
                return Ok(Some(Member {
                    type_id: blob.u32_at(at + 4)?,
                    byte_offset: (!bitfield && bits % 8 == 0).then_some(bits / 8),
                }));
            }
        }
        Ok(None)
    })
}

/// Whether the struct (or union) `type_name` has a member named `member`.
pub fn struct_has_member(
    data: &[u8],
    type_name: &str,
    member: &str,
) -> Result<bool, BtfParseError> {
    Ok(struct_member(data, type_name, member)?.is_some())
}

/// The element count of the array type `type_id`; None if that type is not an array.
pub fn array_len(data: &[u8], type_id: u32) -> Result<Option<u32>, BtfParseError> {
    let blob = Blob::new(data)?;
    blob.find(|r| {
        if r.id != type_id {
            return Ok(None);
        }
        // struct btf_array: element type, index type, nelems.
        Ok(Some(
            (r.kind == KIND_ARRAY)
                .then(|| blob.u32_at(r.data + 8))
                .transpose()?,
        ))
    })
    .map(Option::flatten)
}

/// Where `task_struct.comm` is, when it is the 16-byte array the programs read directly.
pub fn task_comm_offset(data: &[u8]) -> Result<Option<u32>, BtfParseError> {
    let Some(comm) = struct_member(data, "task_struct", "comm")? else {
        return Ok(None);
    };
    let is_16_bytes = array_len(data, comm.type_id)? == Some(16);
    Ok(comm.byte_offset.filter(|_| is_16_bytes))
}

/// Where the programs find a task's exec_update_lock, and how they recognise one another
/// caller waits on (`reader`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ReaderOffsets {
    /// task_struct.signal.
    pub signal: u32,
    /// signal_struct.exec_update_lock.
    pub exec_update_lock: u32,
    /// signal_struct.thread_head and task_struct.thread_node (6.7 and later): a rwsem is an
    /// exec_update_lock when the signal_struct it would sit in lists a thread whose
    /// task_struct points back to it. None: other callers' waits cannot be told apart.
    pub thread_list: Option<(u32, u32)>,
}

/// The offsets the reader programs need, where BTF places them at whole bytes.
pub fn reader_offsets(data: &[u8]) -> Result<Option<ReaderOffsets>, BtfParseError> {
    let at = |ty: &str, member: &str| -> Result<Option<u32>, BtfParseError> {
        Ok(struct_member(data, ty, member)?.and_then(|m| m.byte_offset))
    };
    let (Some(signal), Some(exec_update_lock)) = (
        at("task_struct", "signal")?,
        at("signal_struct", "exec_update_lock")?,
    ) else {
        return Ok(None);
    };
    let thread_list = at("signal_struct", "thread_head")?.zip(at("task_struct", "thread_node")?);
    Ok(Some(ReaderOffsets {
        signal,
        exec_update_lock,
        thread_list,
    }))
}

/// How a test skips itself when this machine cannot run it, shared with the integration tests.
#[cfg(test)]
#[path = "../../tests/common/skip.rs"]
mod skip;

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
        // [5] int [16]
        put(&[0, KIND_ARRAY << 24, 0, 1, 1, 16]);
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
    fn places_members_and_arrays() {
        let btf = sample();
        assert_eq!(
            struct_member(&btf, "s", "b").expect("scan"),
            Some(Member {
                type_id: 1,
                byte_offset: Some(4)
            })
        );
        assert_eq!(struct_member(&btf, "s", "c").expect("scan"), None);
        // [5] is `int [16]`; [1] is not an array; [9] does not exist.
        assert_eq!(array_len(&btf, 5).expect("scan"), Some(16));
        assert_eq!(array_len(&btf, 1).expect("scan"), None);
        assert_eq!(array_len(&btf, 9).expect("scan"), None);
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

    /// Where the running kernel exposes its BTF.
    const THIS_KERNEL: &str = "/sys/kernel/btf/vmlinux";

    /// This kernel's BTF, for the tests that hold the parser to it. Like the privileged
    /// tests they are ignored by default and run by `cargo xtask test`; on a kernel without
    /// BTF they skip themselves the same visible way (counted, and a failure in CI).
    fn this_kernels_btf() -> Option<Vec<u8>> {
        std::fs::read(THIS_KERNEL)
            .inspect_err(|e| skip::skip(&format!("{THIS_KERNEL} ({e})")))
            .ok()
    }

    #[test]
    #[ignore = "needs /sys/kernel/btf/vmlinux"]
    fn reads_this_kernels_btf() {
        let Some(data) = this_kernels_btf() else {
            return;
        };
        assert!(struct_has_member(&data, "signal_struct", "exec_update_lock").expect("scan"));
        assert!(struct_has_member(&data, "task_struct", "signal").expect("scan"));
    }

    /// The offset bpftool reads from the same BTF (the peer).
    #[test]
    #[ignore = "needs /sys/kernel/btf/vmlinux"]
    fn places_task_comm_where_bpftool_does() {
        let Some(data) = this_kernels_btf() else {
            return;
        };
        // Debian puts bpftool in /usr/sbin, which a user's PATH leaves out.
        let sbin = std::path::Path::new("/usr/sbin/bpftool");
        let bpftool = if sbin.exists() {
            sbin
        } else {
            "bpftool".as_ref()
        };
        let out = std::process::Command::new(bpftool)
            .args(["btf", "dump", "file", THIS_KERNEL, "format", "raw"])
            .output()
            .expect("bpftool must be installed (cargo xtask setup installs it)");
        let dump = String::from_utf8_lossy(&out.stdout);
        let bits: u32 = dump
            .lines()
            .skip_while(|l| !l.contains("STRUCT 'task_struct' size"))
            .find_map(|l| l.trim().strip_prefix("'comm' "))
            .and_then(|l| l.split("bits_offset=").nth(1))
            .and_then(|n| n.trim().parse().ok())
            .expect("bpftool shows task_struct.comm");
        assert_eq!(task_comm_offset(&data).expect("scan"), Some(bits / 8));
    }
}
