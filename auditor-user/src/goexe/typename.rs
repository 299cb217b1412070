//! Names of Go types from their runtime descriptors, e.g. the `*maptype`
//! a map function receives in RAX becomes `map[string]int`.
//!
//! A type descriptor (`runtime._type`, `internal/abi.Type` from Go 1.21)
//! keeps its name as `str`, a 32-bit offset from the module's `types`
//! base, at byte 40 in every release from 1.17 to 1.27. The base is a field
//! of the runtime's `moduledata`, which is found without symbols: it is the
//! only data word pointing at the pclntab header whose `minpc` (byte 160)
//! is the first function's entry. `types` sits at byte 280 before Go 1.20
//! and 296 from 1.20 (the coverage counters `covctrs/ecovctrs` were added);
//! `etypes` follows it, except in Go 1.27 where `typedesclen` comes first.
//! Name bytes: one flag byte, a varint length, the text; a type with
//! `tflagExtraStar` (2) is stored with a leading `*` to drop.

use std::{collections::HashMap, fs::File, os::unix::fs::FileExt, path::Path, sync::Mutex};

use super::{
    elf::{ExeImage, Segment},
    pclntab::{PcLnTab, PclnVersion, uvarint},
};

/// Offset of `str` (name offset) in a type descriptor.
const TYPE_STR_OFF: u64 = 40;
/// Offset of `tflag`.
const TYPE_TFLAG_OFF: u64 = 20;
const TFLAG_EXTRA_STAR: u8 = 2;
/// Offset of `minpc` in `moduledata`.
const MD_MINPC: u64 = 160;

/// What is taken from the runtime's `moduledata`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ModuleData {
    /// `[types, etypes)`: type descriptors and names.
    pub types: (u64, u64),
    /// Base of funcdata offsets (Go 1.18+; `None` for 1.17).
    pub gofunc: Option<u64>,
}

/// Find `moduledata` and read the fields the auditor uses.
pub(crate) fn find_moduledata(
    img: &ExeImage,
    pclntab_addr: u64,
    tab: &PcLnTab,
) -> Option<ModuleData> {
    let first_entry = tab.funcs().first()?.entry;
    let types_off = if tab.version() == PclnVersion::Go120 {
        296
    } else {
        280
    };
    let needle = pclntab_addr.to_le_bytes();
    let mut candidates: Vec<u64> = img.relative_targets_with_value(pclntab_addr);
    for s in &img.segments {
        let Some(bytes) = img.bytes_at(s.vaddr, s.filesz) else {
            continue;
        };
        for (i, w) in bytes.chunks_exact(8).enumerate() {
            if w == needle {
                candidates.push(s.vaddr + 8 * i as u64);
            }
        }
    }
    candidates.into_iter().find_map(|md| {
        if img.read_ptr(md + MD_MINPC)? != first_entry {
            return None;
        }
        let types = img.read_ptr(md + types_off)?;
        let next = img.read_ptr(md + types_off + 8)?;
        // Go 1.27 put `typedesclen` between `types` and `etypes`: a length,
        // not an address, so it is below `types`. It also added
        // `itaboffset, itabsize` before `rodata, gofunc`.
        let (etypes, gofunc_at) = if next >= types {
            (next, types_off + 24)
        } else {
            (img.read_ptr(md + types_off + 16)?, types_off + 48)
        };
        if types == 0 || types > etypes {
            return None;
        }
        // Go 1.16-1.17 (old table layout) had no gofunc field.
        let gofunc = (tab.version() != PclnVersion::Go116)
            .then(|| img.read_ptr(md + gofunc_at))
            .flatten()
            .filter(|&g| img.file_offset(g).is_some());
        Some(ModuleData {
            types: (types, etypes),
            gofunc,
        })
    })
}

/// Decode a Go `name` (flag byte, varint length, bytes).
pub fn decode_name(b: &[u8]) -> Option<&str> {
    let (len, n) = uvarint(b.get(1..)?)?;
    let start = 1 + n;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    std::str::from_utf8(b.get(start..end)?).ok()
}

/// Reads type names from an executable on demand (the file stays open, so
/// `/proc/PID/exe` keeps working after the process is gone).
pub struct TypeNamer {
    file: File,
    segments: Vec<Segment>,
    types: (u64, u64),
    cache: Mutex<HashMap<u64, Option<String>>>,
}

impl std::fmt::Debug for TypeNamer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypeNamer")
            .field("types", &self.types)
            .finish()
    }
}

impl TypeNamer {
    pub(crate) fn new(path: &Path, img: &ExeImage, types: (u64, u64)) -> Option<Self> {
        Some(Self {
            file: File::open(path).ok()?,
            segments: img.segments.clone(),
            types,
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn read(&self, vaddr: u64, len: usize) -> Option<Vec<u8>> {
        let s = self
            .segments
            .iter()
            .find(|s| vaddr >= s.vaddr && vaddr - s.vaddr < s.filesz)?;
        let avail = (s.filesz - (vaddr - s.vaddr)) as usize;
        let mut buf = vec![0; len.min(avail)];
        self.file
            .read_exact_at(&mut buf, s.offset + (vaddr - s.vaddr))
            .ok()?;
        Some(buf)
    }

    /// Name of the type whose descriptor is at link-time address `addr`.
    pub fn type_name(&self, addr: u64) -> Option<String> {
        if let Some(hit) = self.cache.lock().ok()?.get(&addr) {
            return hit.clone();
        }
        let name = self.resolve(addr);
        if let Ok(mut c) = self.cache.lock() {
            c.insert(addr, name.clone());
        }
        name
    }

    fn resolve(&self, addr: u64) -> Option<String> {
        let (types, etypes) = self.types;
        if addr < types || addr >= etypes {
            return None;
        }
        let hdr = self.read(addr, 48)?;
        let tflag = *hdr.get(TYPE_TFLAG_OFF as usize)?;
        let off = i32::from_le_bytes(
            hdr.get(TYPE_STR_OFF as usize..TYPE_STR_OFF as usize + 4)?
                .try_into()
                .ok()?,
        );
        let name_addr = types.checked_add_signed(i64::from(off))?;
        // Longest names are long composite types; 4 KiB is plenty.
        let raw = self.read(name_addr, 4096)?;
        let name = decode_name(&raw)?;
        let name = if tflag & TFLAG_EXTRA_STAR != 0 {
            name.strip_prefix('*').unwrap_or(name)
        } else {
            name
        };
        Some(name.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_decode_with_varint_length() {
        assert_eq!(
            decode_name(b"\x01\x0emap[string]int"),
            Some("map[string]int")
        );
        let mut long = vec![0u8, 0x80 | 0x2c, 0x01];
        long.extend(std::iter::repeat_n(b'a', 172));
        assert_eq!(decode_name(&long).map(str::len), Some(172));
        assert_eq!(decode_name(b"\x00\x05abc"), None);
    }
}
