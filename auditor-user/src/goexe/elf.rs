//! The executable as loaded bytes: loadable segments (virtual address to
//! file offset), relocated pointer reads, symbols, and the Go sections.

use std::{borrow::Cow, collections::HashMap};

use object::{
    Object, ObjectSection, ObjectSymbol, RelocationFlags, RelocationTarget, elf,
    read::elf::{ElfFile64, FileHeader, ProgramHeader},
};

use super::TargetError;

/// One `PT_LOAD` segment.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    pub vaddr: u64,
    pub offset: u64,
    pub filesz: u64,
}

/// A parsed x86-64 ELF executable.
pub struct ExeImage {
    data: Vec<u8>,
    pub segments: Vec<Segment>,
    /// `R_X86_64_RELATIVE` targets: address -> value after relocation.
    relative: HashMap<u64, u64>,
    pub pie: bool,
    pub stripped: bool,
}

impl std::fmt::Debug for ExeImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExeImage")
            .field("len", &self.data.len())
            .field("segments", &self.segments)
            .field("pie", &self.pie)
            .field("stripped", &self.stripped)
            .finish()
    }
}

impl ExeImage {
    /// Parse `data` (the whole file). Not ELF: [`TargetError::NotElf`];
    /// another machine: [`TargetError::NotX86_64`].
    pub fn parse(data: Vec<u8>, what: &str) -> Result<Self, TargetError> {
        if !data.starts_with(b"\x7fELF") {
            return Err(TargetError::NotElf(what.to_owned()));
        }
        // Check the machine before a 64-bit parse, so 32-bit or ARM files get
        // the right message.
        let machine = data.get(18..20).map(|b| u16::from_le_bytes([b[0], b[1]]));
        if data.get(4) != Some(&2) || machine != Some(elf::EM_X86_64) {
            return Err(TargetError::NotX86_64(what.to_owned()));
        }
        let file = ElfFile64::<object::Endianness>::parse(&*data)
            .map_err(|_| TargetError::NotElf(what.to_owned()))?;
        let endian = file.endian();
        let hdr = file.elf_header();
        let pie = hdr.e_type(endian) == elf::ET_DYN;
        let mut segments = Vec::new();
        for ph in file.elf_program_headers() {
            if ph.p_type(endian) == elf::PT_LOAD {
                segments.push(Segment {
                    vaddr: ph.p_vaddr(endian),
                    offset: ph.p_offset(endian),
                    filesz: ph.p_filesz(endian),
                });
            }
        }
        let stripped = file.section_by_name(".symtab").is_none();
        let mut relative = HashMap::new();
        if let Some(relocs) = file.dynamic_relocations() {
            for (addr, r) in relocs {
                if let RelocationFlags::Elf {
                    r_type: elf::R_X86_64_RELATIVE,
                } = r.flags()
                    && matches!(r.target(), RelocationTarget::Absolute)
                {
                    relative.insert(addr, r.addend() as u64);
                }
            }
        }
        drop(file);
        Ok(Self {
            data,
            segments,
            relative,
            pie,
            stripped,
        })
    }

    /// Re-borrow the object view (headers only; cheap).
    pub fn object(&self) -> ElfFile64<'_, object::Endianness> {
        // Parsed once in `parse`, so this cannot fail.
        ElfFile64::parse(&*self.data).expect("ELF parsed before")
    }

    /// File offset of a virtual address inside a loaded segment's file bytes.
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| vaddr >= s.vaddr && vaddr - s.vaddr < s.filesz)
            .map(|s| s.offset + (vaddr - s.vaddr))
    }

    /// `len` bytes at a virtual address (file-backed part only).
    pub fn bytes_at(&self, vaddr: u64, len: u64) -> Option<&[u8]> {
        let seg = self
            .segments
            .iter()
            .find(|s| vaddr >= s.vaddr && vaddr - s.vaddr < s.filesz)?;
        let avail = seg.filesz - (vaddr - seg.vaddr);
        let len = len.min(avail);
        let off = (seg.offset + (vaddr - seg.vaddr)) as usize;
        self.data.get(off..off.checked_add(len as usize)?)
    }

    /// A pointer-sized value at `vaddr`, with dynamic relocations applied.
    pub fn read_ptr(&self, vaddr: u64) -> Option<u64> {
        if let Some(&v) = self.relative.get(&vaddr) {
            return Some(v);
        }
        let b = self.bytes_at(vaddr, 8)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }

    /// The bytes of the Go string whose header (`ptr, len`) is at `vaddr`.
    pub fn read_go_string(&self, vaddr: u64) -> Option<Vec<u8>> {
        let ptr = self.read_ptr(vaddr)?;
        let len = self.read_ptr(vaddr + 8)?;
        if len > 1 << 20 {
            return None;
        }
        let b = self.bytes_at(ptr, len)?;
        (b.len() as u64 == len).then(|| b.to_vec())
    }

    /// Addresses whose relative relocation produces `value`.
    pub fn relative_targets_with_value(&self, value: u64) -> Vec<u64> {
        self.relative
            .iter()
            .filter(|&(_, &v)| v == value)
            .map(|(&a, _)| a)
            .collect()
    }

    /// Apply relative relocations that fall in `[vaddr, vaddr+buf.len())`.
    pub fn apply_relocations(&self, vaddr: u64, buf: &mut [u8]) {
        if self.relative.is_empty() {
            return;
        }
        let end = vaddr + buf.len() as u64;
        for (&at, &val) in &self.relative {
            if at >= vaddr && at + 8 <= end {
                let o = (at - vaddr) as usize;
                buf[o..o + 8].copy_from_slice(&val.to_le_bytes());
            }
        }
    }

    /// Section data and address by exact name, decompressed.
    pub fn section(&self, name: &str) -> Option<(u64, Cow<'_, [u8]>)> {
        let file = self.object();
        let s = file.section_by_name(name)?;
        let addr = s.address();
        let data = s.uncompressed_data().ok()?;
        // Re-borrow from our own buffer for the uncompressed case so the
        // result does not borrow the temporary `file`.
        let data = match data {
            Cow::Borrowed(b) => {
                let start = b.as_ptr() as usize - self.data.as_ptr() as usize;
                Cow::Borrowed(&self.data[start..start + b.len()])
            }
            Cow::Owned(v) => Cow::Owned(v),
        };
        Some((addr, data))
    }

    /// Address and contents of the section whose name ends with `suffix`
    /// (`.gopclntab` is `.data.rel.ro.gopclntab` in some PIE builds).
    pub fn section_ending(&self, suffix: &str) -> Option<(u64, Cow<'_, [u8]>)> {
        let file = self.object();
        let name = file
            .sections()
            .filter_map(|s| s.name().ok().map(str::to_owned))
            .find(|n| n.ends_with(suffix))?;
        self.section(&name)
    }

    /// Address of the `.text` section.
    pub fn text_address(&self) -> Option<u64> {
        self.object().section_by_name(".text").map(|s| s.address())
    }

    /// Function symbols from `.symtab`: name -> (address, size).
    pub fn function_symbols(&self) -> HashMap<String, (u64, u64)> {
        let file = self.object();
        let mut m = HashMap::new();
        for s in file.symbols() {
            if s.kind() == object::SymbolKind::Text
                && let Ok(n) = s.name()
            {
                m.entry(n.to_owned()).or_insert((s.address(), s.size()));
            }
        }
        m
    }

    /// First file offset, a multiple of `align`, where `needle` starts.
    pub fn find_aligned(&self, needle: &[u8], align: usize) -> Option<usize> {
        (0..self.data.len())
            .step_by(align)
            .find(|&o| self.data[o..].starts_with(needle))
    }

    /// The whole file.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Virtual address of a file offset inside a loaded segment.
    pub fn vaddr_of_offset(&self, off: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| off >= s.offset && off - s.offset < s.filesz)
            .map(|s| s.vaddr + (off - s.offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(class: u8, machine: u16) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = class;
        h[5] = 1;
        h[6] = 1;
        h[16] = 2; // ET_EXEC
        h[18..20].copy_from_slice(&machine.to_le_bytes());
        h
    }

    #[test]
    fn other_formats_and_machines_are_told_apart() {
        let e = ExeImage::parse(b"#!/bin/sh\n".to_vec(), "x").unwrap_err();
        assert!(matches!(e, TargetError::NotElf(_)));
        let e = ExeImage::parse(header(2, elf::EM_AARCH64), "x").unwrap_err();
        assert!(matches!(e, TargetError::NotX86_64(_)));
        let e = ExeImage::parse(header(1, elf::EM_386), "x").unwrap_err();
        assert!(matches!(e, TargetError::NotX86_64(_)));
        // Right machine, but a header too broken to read.
        let mut h = header(2, elf::EM_X86_64);
        h.truncate(20);
        assert!(matches!(
            ExeImage::parse(h, "x").unwrap_err(),
            TargetError::NotElf(_)
        ));
    }
}
