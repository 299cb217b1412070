//! The Go runtime's own function table (`.gopclntab`): function entries,
//! names, and the pc-value tables for file and line. It survives
//! `-ldflags=-s -w`, so it is how stripped binaries are understood.
//!
//! Three layouts are handled, told apart by the header magic:
//! - `0xfffffffa` (Go 1.16–1.17): functab entries are full addresses.
//! - `0xfffffff0` (Go 1.18–1.19): entries are 32-bit offsets from `textStart`.
//! - `0xfffffff1` (Go 1.20+): as 1.18, `_func` gained `startLine` (unused here).
//!
//! Go 1.22+ writes `textStart = 0` in PIE binaries (the table lives in
//! read-only memory and is not relocated; the runtime takes text start from
//! its module data instead), so the caller supplies the `.text` address as
//! a fallback.

use std::collections::HashMap;

/// Layout generation of a pclntab.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PclnVersion {
    /// Go 1.16–1.17.
    Go116,
    /// Go 1.18–1.19.
    Go118,
    /// Go 1.20 and later.
    Go120,
}

impl PclnVersion {
    /// The layout a header magic number announces.
    pub fn from_magic(magic: u32) -> Option<Self> {
        match magic {
            0xffff_fffa => Some(Self::Go116),
            0xffff_fff0 => Some(Self::Go118),
            0xffff_fff1 => Some(Self::Go120),
            _ => None,
        }
    }
}

/// Why a pclntab could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PclnError {
    #[error("pclntab too short")]
    Truncated,
    #[error("unknown pclntab magic {0:#x} (Go older than 1.16 or not Go)")]
    BadMagic(u32),
    #[error("pclntab header is inconsistent: {0}")]
    Corrupt(&'static str),
}

/// One function of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FuncRecord {
    /// Address of the first instruction (as linked).
    pub entry: u64,
    /// Address of the next function's entry (includes alignment padding).
    pub end: u64,
    /// Offset of the `_func` record in the table.
    func_off: u32,
}

/// A parsed pclntab. Owns a copy of the table bytes so it can outlive the
/// executable image it came from.
#[derive(Debug)]
pub struct PcLnTab {
    data: Vec<u8>,
    version: PclnVersion,
    ptr_size: usize,
    quantum: u32,
    text_start: u64,
    funcname_off: usize,
    cu_off: usize,
    filetab_off: usize,
    pctab_off: usize,
    functab_off: usize,
    funcs: Vec<FuncRecord>,
}

fn u32_at(d: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        d.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn uptr_at(d: &[u8], off: usize, ptr_size: usize) -> Option<u64> {
    match ptr_size {
        8 => Some(u64::from_le_bytes(
            d.get(off..off.checked_add(8)?)?.try_into().ok()?,
        )),
        4 => u32_at(d, off).map(u64::from),
        _ => None,
    }
}

fn cstr_at(d: &[u8], off: usize) -> Option<&str> {
    let rest = d.get(off..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    std::str::from_utf8(&rest[..end]).ok()
}

/// Reads an unsigned LEB128 varint; returns the value and the bytes used.
pub(crate) fn uvarint(d: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, &b) in d.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

impl PcLnTab {
    /// Parse a little-endian pclntab. `text_fallback` is used when the header's
    /// `textStart` is zero (Go 1.22+ PIE).
    pub fn parse(data: Vec<u8>, text_fallback: u64) -> Result<Self, PclnError> {
        let magic = u32_at(&data, 0).ok_or(PclnError::Truncated)?;
        let version = PclnVersion::from_magic(magic).ok_or(PclnError::BadMagic(magic))?;
        let (pad, quantum, ptr_size) = (
            data.get(4..6).ok_or(PclnError::Truncated)?,
            *data.get(6).ok_or(PclnError::Truncated)?,
            *data.get(7).ok_or(PclnError::Truncated)? as usize,
        );
        if pad != [0, 0] {
            return Err(PclnError::Corrupt("header padding not zero"));
        }
        if ptr_size != 8 && ptr_size != 4 {
            return Err(PclnError::Corrupt("pointer size"));
        }
        if quantum == 0 {
            return Err(PclnError::Corrupt("instruction quantum"));
        }
        let word =
            |i: usize| uptr_at(&data, 8 + i * ptr_size, ptr_size).ok_or(PclnError::Truncated);
        let nfunc = word(0)? as usize;
        let (text_start, first_off) = match version {
            PclnVersion::Go116 => (0, 2),
            _ => (word(2)?, 3),
        };
        let text_start = if version != PclnVersion::Go116 && text_start == 0 {
            text_fallback
        } else {
            text_start
        };
        let off = |i: usize| -> Result<usize, PclnError> {
            let v = word(first_off + i)? as usize;
            if v > data.len() {
                return Err(PclnError::Corrupt("table offset past end"));
            }
            Ok(v)
        };
        let funcname_off = off(0)?;
        let cu_off = off(1)?;
        let filetab_off = off(2)?;
        let pctab_off = off(3)?;
        let functab_off = off(4)?;

        // nfunc+1 entries: the last one is the end of the last function.
        let entry_size = if version == PclnVersion::Go116 {
            2 * ptr_size
        } else {
            8
        };
        let needed = nfunc
            .checked_add(1)
            .and_then(|n| n.checked_mul(entry_size))
            .and_then(|n| n.checked_add(functab_off))
            .ok_or(PclnError::Corrupt("function count"))?;
        if needed > data.len() {
            return Err(PclnError::Truncated);
        }
        // `None` when an entry lies past the end of the address space.
        let read_entry = |i: usize| -> Option<(u64, u64)> {
            let at = functab_off + i * entry_size;
            if version == PclnVersion::Go116 {
                Some((
                    uptr_at(&data, at, ptr_size).unwrap_or(0),
                    uptr_at(&data, at + ptr_size, ptr_size).unwrap_or(0),
                ))
            } else {
                Some((
                    text_start.checked_add(u64::from(u32_at(&data, at).unwrap_or(0)))?,
                    u64::from(u32_at(&data, at + 4).unwrap_or(0)),
                ))
            }
        };
        let mut funcs = Vec::with_capacity(nfunc);
        for i in 0..nfunc {
            let corrupt = || PclnError::Corrupt("function record");
            let (entry, func_off) = read_entry(i).ok_or_else(corrupt)?;
            let (end, _) = read_entry(i + 1).ok_or_else(corrupt)?;
            let func_off = (functab_off as u64)
                .checked_add(func_off)
                .ok_or_else(corrupt)?;
            if func_off >= data.len() as u64 || end < entry {
                return Err(corrupt());
            }
            funcs.push(FuncRecord {
                entry,
                end,
                func_off: func_off as u32,
            });
        }
        if funcs.windows(2).any(|w| w[0].entry > w[1].entry) {
            return Err(PclnError::Corrupt("function table not sorted"));
        }
        Ok(Self {
            data,
            version,
            ptr_size,
            quantum: u32::from(quantum),
            text_start,
            funcname_off,
            cu_off,
            filetab_off,
            pctab_off,
            functab_off,
            funcs,
        })
    }

    /// Layout generation.
    pub fn version(&self) -> PclnVersion {
        self.version
    }

    /// Start of the text the entries are relative to.
    pub fn text_start(&self) -> u64 {
        self.text_start
    }

    /// All functions, sorted by entry address.
    pub fn funcs(&self) -> &[FuncRecord] {
        &self.funcs
    }

    /// Offset of a `_func` field counted in 32-bit words after the entry.
    fn field(&self, f: &FuncRecord, word: usize) -> Option<u32> {
        let base = if self.version == PclnVersion::Go116 {
            self.ptr_size
        } else {
            4
        };
        u32_at(&self.data, f.func_off as usize + base + 4 * word)
    }

    /// The function's name, e.g. `runtime.mapassign_fast64`.
    pub fn name(&self, f: &FuncRecord) -> Option<&str> {
        let nameoff = self.field(f, 0)? as usize;
        cstr_at(&self.data, self.funcname_off.checked_add(nameoff)?)
    }

    /// Index of the function containing `pc`.
    pub fn find(&self, pc: u64) -> Option<usize> {
        let i = self.funcs.partition_point(|f| f.entry <= pc);
        let i = i.checked_sub(1)?;
        (pc < self.funcs[i].end).then_some(i)
    }

    /// Map from function name to index (for the catalogue look-ups).
    pub fn name_index(&self) -> HashMap<&str, usize> {
        let mut m = HashMap::with_capacity(self.funcs.len());
        for (i, f) in self.funcs.iter().enumerate() {
            if let Some(n) = self.name(f) {
                m.entry(n).or_insert(i);
            }
        }
        m
    }

    /// Evaluate the pc-value table at `table_off` (relative to the pctab)
    /// for `pc` in function `f`.
    fn pcvalue(&self, f: &FuncRecord, table_off: u32, pc: u64) -> Option<i64> {
        if table_off == 0 {
            return None;
        }
        let mut d = self
            .data
            .get(self.pctab_off.checked_add(table_off as usize)?..)?;
        let mut val: i64 = -1;
        let mut cur = f.entry;
        let mut first = true;
        loop {
            let (uv, n) = uvarint(d)?;
            d = &d[n..];
            if uv == 0 && !first {
                return None;
            }
            first = false;
            // Zig-zag coded value delta.
            let delta = if uv & 1 != 0 {
                -((uv >> 1) as i64) - 1
            } else {
                (uv >> 1) as i64
            };
            val = val.wrapping_add(delta);
            let (pcd, n) = uvarint(d)?;
            d = &d[n..];
            cur = cur.checked_add(pcd.checked_mul(u64::from(self.quantum))?)?;
            if pc < cur {
                return Some(val);
            }
            if cur >= f.end {
                return None;
            }
        }
    }

    /// Size of the fixed part of `_func`, before the pcdata offsets.
    fn func_fixed_size(&self) -> usize {
        match self.version {
            // entry uintptr, 8 x 32-bit fields, funcID, pad[2], nfuncdata
            PclnVersion::Go116 => self.ptr_size + 36,
            // entryoff, 8 x 32-bit fields, funcID, flag, pad, nfuncdata
            PclnVersion::Go118 => 40,
            // as 1.18 plus startLine
            PclnVersion::Go120 => 44,
        }
    }

    /// Offset (relative to the runtime's `gofunc` base) of funcdata `idx`.
    /// Go 1.18+ only: earlier tables hold pointers.
    fn funcdata_off(&self, f: &FuncRecord, idx: usize) -> Option<u32> {
        if self.version == PclnVersion::Go116 {
            return None;
        }
        let npcdata = self.field(f, 6)? as usize;
        let fixed = f.func_off as usize + self.func_fixed_size();
        let nfuncdata = *self.data.get(fixed - 1)? as usize;
        if idx >= nfuncdata {
            return None;
        }
        let off = u32_at(&self.data, fixed + 4 * npcdata + 4 * idx)?;
        (off != u32::MAX).then_some(off)
    }

    /// Value of pc-data table `idx` at `pc`.
    fn pcdata_value(&self, f: &FuncRecord, idx: usize, pc: u64) -> Option<i64> {
        let npcdata = self.field(f, 6)? as usize;
        if idx >= npcdata {
            return None;
        }
        let fixed = f.func_off as usize + self.func_fixed_size();
        let table = u32_at(&self.data, fixed + 4 * idx)?;
        self.pcvalue(f, table, pc)
    }

    /// The innermost call inlined at `pc` in `f`, if any: the inlined
    /// function's name and the address of an instruction at its call site
    /// (in the enclosing function). `gofunc` reads bytes at an offset from
    /// the runtime's `gofunc` base.
    pub fn inlined_call(
        &self,
        f: &FuncRecord,
        pc: u64,
        gofunc: &dyn Fn(u64, usize) -> Option<Vec<u8>>,
    ) -> Option<(&str, u64)> {
        // PCDATA_InlTreeIndex and FUNCDATA_InlTree (same in 1.16-1.27).
        const PCDATA_INL_TREE_INDEX: usize = 2;
        const FUNCDATA_INL_TREE: usize = 3;
        let ix = self.pcdata_value(f, PCDATA_INL_TREE_INDEX, pc)?;
        if ix < 0 {
            return None;
        }
        let tree = self.funcdata_off(f, FUNCDATA_INL_TREE)?;
        // inlinedCall: Go 1.20+ {funcID u8, pad[3], nameOff i32, parentPc i32,
        // startLine i32}; Go 1.18-1.19 {parent i16, funcID u8, pad u8,
        // file i32, line i32, func_ i32, parentPc i32}.
        let (size, name_at, parent_at) = if self.version == PclnVersion::Go120 {
            (16, 4, 8)
        } else {
            (20, 12, 16)
        };
        let at = (ix as u64)
            .checked_mul(size)?
            .checked_add(u64::from(tree))?;
        let rec = gofunc(at, size as usize)?;
        let word = |at: usize| -> Option<i32> {
            Some(i32::from_le_bytes(rec.get(at..at + 4)?.try_into().ok()?))
        };
        let nameoff = usize::try_from(word(name_at)?).ok()?;
        let parent_pc = f.entry.checked_add(u64::try_from(word(parent_at)?).ok()?)?;
        if parent_pc >= f.end {
            return None;
        }
        let name = cstr_at(&self.data, self.funcname_off.checked_add(nameoff)?)?;
        Some((name, parent_pc))
    }

    /// Source file and line of `pc` inside function `f`.
    pub fn file_line(&self, f: &FuncRecord, pc: u64) -> Option<(&str, u32)> {
        let pcfile = self.field(f, 4)?;
        let pcln = self.field(f, 5)?;
        let cu = self.field(f, 7)? as usize;
        let file_no = self.pcvalue(f, pcfile, pc)?;
        let line = self.pcvalue(f, pcln, pc)?;
        if file_no < 0 || line < 0 {
            return None;
        }
        let slot = self
            .cu_off
            .checked_add(cu.checked_add(file_no as usize)?.checked_mul(4)?)?;
        let file_off = u32_at(&self.data, slot)?;
        if file_off == u32::MAX {
            return None;
        }
        let file = cstr_at(&self.data, self.filetab_off.checked_add(file_off as usize)?)?;
        Some((file, line as u32))
    }

    /// Offset of the function table (diagnostics).
    pub fn functab_offset(&self) -> usize {
        self.functab_off
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn zigzag(d: i64) -> u64 {
        if d < 0 {
            (((-d - 1) as u64) << 1) | 1
        } else {
            (d as u64) << 1
        }
    }

    /// pc-value table from (value, pc_len) runs.
    fn pctable(runs: &[(i64, u64)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut prev = -1;
        for &(v, len) in runs {
            put_uvarint(&mut out, zigzag(v - prev));
            put_uvarint(&mut out, len);
            prev = v;
        }
        out.push(0);
        out
    }

    /// A Go 1.20-layout table with two functions at text+0x0 and text+0x40,
    /// one file per function, ending at text+0x60.
    pub(crate) fn synthetic_go120(text: u64) -> Vec<u8> {
        let names = b"main.first\0main.second\0".to_vec();
        let cutab: Vec<u8> = [0u32, 8].iter().flat_map(|v| v.to_le_bytes()).collect();
        let filetab = b"/a.go\0\0\0/b.go\0".to_vec();
        let mut pctab = vec![0u8]; // offset 0 means "no table"
        let f1_file = pctab.len();
        pctab.extend(pctable(&[(0, 0x40)]));
        let f1_line = pctab.len();
        pctab.extend(pctable(&[(10, 0x10), (11, 0x30)]));
        let f2_file = pctab.len();
        pctab.extend(pctable(&[(0, 0x20)]));
        let f2_line = pctab.len();
        pctab.extend(pctable(&[(20, 0x20)]));

        let header_len = 8 + 8 * 8;
        let funcname_off = header_len;
        let cu_off = funcname_off + names.len();
        let filetab_off = cu_off + cutab.len();
        let pctab_off = filetab_off + filetab.len();
        let functab_off = pctab_off + pctab.len();
        // functab: 3 entries (2 funcs + end), then two _func records.
        let func_rec = |entry: u32, nameoff: u32, pcfile: usize, pcln: usize, cu: u32| {
            let mut r = Vec::new();
            for v in [entry, nameoff, 0, 0, 0, pcfile as u32, pcln as u32, 0, cu] {
                r.extend(v.to_le_bytes());
            }
            r.extend([0u8; 8]); // startLine, funcID, flag, pad, nfuncdata
            r
        };
        let rec1 = func_rec(0, 0, f1_file, f1_line, 0);
        let rec2 = func_rec(0x40, 11, f2_file, f2_line, 1);
        let ft_len = 3 * 8;
        let mut functab = Vec::new();
        for (e, f) in [(0u32, ft_len), (0x40, ft_len + rec1.len()), (0x60, 0)] {
            functab.extend(e.to_le_bytes());
            functab.extend((f as u32).to_le_bytes());
        }

        let mut d = Vec::new();
        d.extend(0xffff_fff1u32.to_le_bytes());
        d.extend([0, 0, 1, 8]);
        for v in [
            2u64,
            2,
            text,
            funcname_off as u64,
            cu_off as u64,
            filetab_off as u64,
        ] {
            d.extend(v.to_le_bytes());
        }
        d.extend((pctab_off as u64).to_le_bytes());
        d.extend((functab_off as u64).to_le_bytes());
        assert_eq!(d.len(), header_len);
        d.extend(names);
        d.extend(cutab);
        d.extend(filetab);
        d.extend(pctab);
        d.extend(functab);
        d.extend(rec1);
        d.extend(rec2);
        d
    }

    #[test]
    fn uvarint_reads_multi_byte_values() {
        assert_eq!(uvarint(&[0x01]), Some((1, 1)));
        assert_eq!(uvarint(&[0xac, 0x02]), Some((300, 2)));
        assert_eq!(uvarint(&[0x80]), None);
    }

    #[test]
    fn go120_table_resolves_names_files_and_lines() {
        let t = PcLnTab::parse(synthetic_go120(0x401000), 0).unwrap();
        assert_eq!(t.version(), PclnVersion::Go120);
        assert_eq!(t.funcs().len(), 2);
        let i = t.find(0x401045).unwrap();
        let f = t.funcs()[i];
        assert_eq!(t.name(&f), Some("main.second"));
        assert_eq!((f.entry, f.end), (0x401040, 0x401060));
        assert_eq!(t.file_line(&f, 0x401045), Some(("/b.go", 20)));
        let f0 = t.funcs()[t.find(0x401000).unwrap()];
        assert_eq!(t.file_line(&f0, 0x40100f), Some(("/a.go", 10)));
        assert_eq!(t.file_line(&f0, 0x401010), Some(("/a.go", 11)));
        assert_eq!(t.find(0x401060), None);
        assert_eq!(t.find(0x400fff), None);
        assert_eq!(t.name_index().get("main.first"), Some(&0));
    }

    #[test]
    fn zero_text_start_uses_fallback() {
        let t = PcLnTab::parse(synthetic_go120(0), 0x500000).unwrap();
        assert_eq!(t.text_start(), 0x500000);
        assert_eq!(t.funcs()[1].entry, 0x500040);
    }

    #[test]
    fn rejects_old_or_foreign_magic_and_truncation() {
        let mut d = synthetic_go120(0x1000);
        d[0..4].copy_from_slice(&0xffff_fffbu32.to_le_bytes());
        assert_eq!(
            PcLnTab::parse(d, 0).unwrap_err(),
            PclnError::BadMagic(0xffff_fffb)
        );
        let d = synthetic_go120(0x1000);
        assert!(PcLnTab::parse(d[..100].to_vec(), 0).is_err());
        assert_eq!(
            PcLnTab::parse(vec![0xf1, 0xff], 0).unwrap_err(),
            PclnError::Truncated
        );
    }

    #[test]
    fn entries_past_the_address_space_are_corrupt_not_a_panic() {
        // Go 1.16 layout: a function offset near u64::MAX (found by fuzzing).
        // The 1.16 header has no textStart: shift the five offsets down a word.
        let mut d = synthetic_go120(0x1000);
        d[0..4].copy_from_slice(&0xffff_fffau32.to_le_bytes());
        d.copy_within(32..72, 24);
        let functab_off = u64::from_le_bytes(d[56..64].try_into().unwrap()) as usize;
        d[functab_off..functab_off + 16].fill(0);
        d[functab_off + 8..functab_off + 16].copy_from_slice(&(u64::MAX - 8).to_le_bytes());
        assert_eq!(
            PcLnTab::parse(d, 0).unwrap_err(),
            PclnError::Corrupt("function record")
        );
        // Go 1.20 layout: textStart plus a 32-bit entry offset wraps.
        let d = synthetic_go120(u64::MAX - 0x10);
        assert_eq!(
            PcLnTab::parse(d, 0).unwrap_err(),
            PclnError::Corrupt("function record")
        );
    }

    #[test]
    fn huge_file_number_is_no_file_not_a_panic() {
        // Found by fuzzing: a pc-file table whose value times 4 overflows.
        let mut d = synthetic_go120(0x1000);
        let at = |o: usize| u64::from_le_bytes(d[o..o + 8].try_into().unwrap()) as usize;
        let (pctab_off, functab_off) = (at(56), at(64));
        let table = d.len() - pctab_off;
        d.extend(pctable(&[(1 << 62, 0x40)]));
        // pcfile of the first _func (after the 3-entry functab).
        let pcfile = functab_off + 24 + 4 + 4 * 4;
        d[pcfile..pcfile + 4].copy_from_slice(&(table as u32).to_le_bytes());
        let t = PcLnTab::parse(d, 0).unwrap();
        assert_eq!(t.file_line(&t.funcs()[0], 0x1001), None);
    }

    #[test]
    fn huge_inline_tree_index_is_no_call_not_a_panic() {
        // Found by fuzzing: an inline-tree index whose record offset
        // overflows. Give the first function a new _func with 3 pcdata
        // tables (the third, the tree index, is 2^62) and 4 funcdata.
        let mut d = synthetic_go120(0x1000);
        let at = |d: &[u8], o: usize| u64::from_le_bytes(d[o..o + 8].try_into().unwrap()) as usize;
        let (pctab_off, functab_off) = (at(&d, 56), at(&d, 64));
        let table = (d.len() - pctab_off) as u32;
        d.extend(pctable(&[(1 << 62, 0x40)]));
        let func = (d.len() - functab_off) as u32;
        for v in [0u32, 0, 0, 0, 0, 0, 0, 3, 0, 0] {
            d.extend(v.to_le_bytes());
        }
        d.extend([0, 0, 0, 4]); // funcID, flag, pad, nfuncdata
        for v in [0u32, 0, table, 0, 0, 0, 0] {
            d.extend(v.to_le_bytes());
        }
        d[functab_off + 4..functab_off + 8].copy_from_slice(&func.to_le_bytes());
        let t = PcLnTab::parse(d, 0).unwrap();
        let f = t.funcs()[0];
        assert_eq!(t.inlined_call(&f, 0x1001, &|_, n| Some(vec![0; n])), None);
    }

    #[test]
    fn corrupt_offsets_never_panic() {
        let base = synthetic_go120(0x1000);
        for i in 0..base.len() {
            for v in [0x00u8, 0xff, 0x7f] {
                let mut d = base.clone();
                d[i] = v;
                if let Ok(t) = PcLnTab::parse(d, 0x1000) {
                    for f in t.funcs() {
                        let _ = t.name(f);
                        let _ = t.file_line(f, f.entry + 1);
                    }
                }
            }
        }
    }
}
