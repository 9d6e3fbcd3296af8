//! The guest's root file system as a cpio "newc" archive, the format the kernel unpacks
//! into its initramfs: directories, files (executables must be static: the guest has no
//! shared libraries), symlinks and device nodes, all owned by root.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    io::{self, Write},
    os::unix::fs::PermissionsExt,
    path::Path,
};

use anyhow::{Context, Result, bail};

/// One node of the guest's root file system.
pub enum Node {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

#[derive(Default)]
pub struct Tree(BTreeMap<String, Node>);

impl Tree {
    pub fn insert(&mut self, path: &str, node: Node) {
        // Parents first: BTreeMap order puts "/a" before "/a/b" when emitting.
        let mut parent = Path::new(path).parent();
        while let Some(p) = parent.filter(|p| *p != Path::new("/")) {
            self.0
                .entry(p.to_string_lossy().into_owned())
                .or_insert(Node::Dir);
            parent = p.parent();
        }
        self.0.insert(path.to_string(), node);
    }

    pub fn add_host_file(&mut self, host: &Path, guest: &str) -> Result<()> {
        let data = fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        let mode = fs::metadata(host)?.permissions().mode() & 0o7777;
        if data.starts_with(b"\x7fELF") && wants_interpreter(&data) {
            bail!(
                "{} is dynamically linked; the guest has no shared libraries (use a static build)",
                host.display()
            );
        }
        self.insert(guest, Node::File { data, mode });
        Ok(())
    }

    pub fn add_host_path(&mut self, host: &Path, guest: &str) -> Result<()> {
        let meta =
            fs::metadata(host).with_context(|| format!("no such file {}", host.display()))?;
        if meta.is_dir() {
            self.insert(guest, Node::Dir);
            for entry in fs::read_dir(host)? {
                let entry = entry?;
                let name = entry.file_name();
                let child = format!("{}/{}", guest.trim_end_matches('/'), name.to_string_lossy());
                self.add_host_path(&entry.path(), &child)?;
            }
            Ok(())
        } else {
            self.add_host_file(host, guest)
        }
    }

    /// cpio "newc", the format the kernel unpacks; owned by root, mtime 0.
    pub fn write_newc(&self, w: &mut impl Write) -> io::Result<()> {
        for (ino, (path, node)) in (1..).zip(&self.0) {
            let name = path.trim_start_matches('/');
            let (mode, data, rdev): (u32, &[u8], (u32, u32)) = match node {
                Node::Dir => (0o040755, &[], (0, 0)),
                Node::File { data, mode } => (0o100000 | mode, data, (0, 0)),
                Node::Symlink(target) => (0o120777, target.as_bytes(), (0, 0)),
                Node::CharDev { major, minor } => (0o020600, &[], (*major, *minor)),
            };
            newc_entry(w, ino, mode, name, data, rdev)?;
        }
        newc_entry(w, 0, 0, "TRAILER!!!", &[], (0, 0))
    }
}

fn newc_entry(
    w: &mut impl Write,
    ino: u32,
    mode: u32,
    name: &str,
    data: &[u8],
    (rdev_major, rdev_minor): (u32, u32),
) -> io::Result<()> {
    let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
    let namesize = name.len() + 1;
    let mut header = String::with_capacity(110);
    header.push_str("070701");
    for field in [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        u32::try_from(data.len()).map_err(|_| io::Error::other("file too large for cpio"))?,
        0, // dev major
        0, // dev minor
        rdev_major,
        rdev_minor,
        u32::try_from(namesize).map_err(|_| io::Error::other("name too long"))?,
        0, // check
    ] {
        let _ = write!(header, "{field:08X}");
    }
    w.write_all(header.as_bytes())?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    w.write_all(&[0; 3][..pad4(110 + namesize)])?;
    w.write_all(data)?;
    w.write_all(&[0; 3][..pad4(data.len())])
}

fn pad4(n: usize) -> usize {
    (4 - n % 4) % 4
}

/// Whether an ELF file asks for a program interpreter (PT_INTERP): a dynamically linked
/// executable. Only 64-bit little-endian ELF, what x86-64 and arm64 guests run, is read;
/// anything else is not taken for one.
fn wants_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u64_at = |at: usize| {
        elf.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    // ELFCLASS64, ELFDATA2LSB.
    if elf.get(4..6) != Some(&[2, 1]) {
        return false;
    }
    let (Some(phoff), Some(entsize), Some(count)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..usize::from(count)).any(|i| {
        let at = phoff as usize + i * usize::from(entsize);
        elf.get(at..at + 4)
            .is_some_and(|t| u32::from_le_bytes([t[0], t[1], t[2], t[3]]) == PT_INTERP)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_and_dynamic_executables_are_told_apart() {
        let busybox = fs::read("/bin/busybox").expect("busybox-static is installed");
        assert!(!wants_interpreter(&busybox));
        let sh = fs::read("/bin/sh").expect("/bin/sh");
        assert!(wants_interpreter(&sh));
    }
}
