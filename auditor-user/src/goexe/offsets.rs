//! Offsets into Go runtime structures that the kernel side reads: DWARF
//! when the binary has it, else a table measured per Go release.
//!
//! Measured from the DWARF of binaries built with each toolchain:
//!
//! | Go        | `g.goid` | map writing marker          | iterator's map  |
//! |-----------|----------|-----------------------------|-----------------|
//! | 1.17–1.22 | 152      | `hmap.flags` 8, mask 4      | `hiter.h` 24    |
//! | 1.23      | 160      | `hmap.flags` 8, mask 4      | `hiter.h` 24    |
//! | 1.24      | 160      | `maps.Map.writing` 34, 0xff | `maps.Iter.m` 24|
//! | 1.25–1.27 | 152      | `maps.Map.writing` 34, 0xff | `maps.Iter.m` 24|
//!
//! `goid` moves twice: Go 1.23 added `g.syscallbp` after `syscallpc`
//! (+8), and Go 1.25 dropped `gobuf.ret` from `g.sched` (-8). Go 1.17 and
//! 1.18 share 1.19's `g` layout up to `goid` (same fields before it).

use std::borrow::Cow;

use gimli::{AttributeValue, EndianSlice, LittleEndian};
use object::{Object, ObjectSection};

use super::{GoVersion, RuntimeOffsets};

/// Classic `hashWriting` flag bit in `hmap.flags`.
const CLASSIC_WRITING_MASK: u8 = 4;
/// Swiss maps keep a whole byte (`Map.writing`) toggled by writers.
const SWISS_WRITING_MASK: u8 = 0xff;

/// Offsets for a version from the measured table. Versions newer than the
/// table reuse its last row (the caller reports that).
pub fn from_table(v: GoVersion, swiss: bool) -> Option<RuntimeOffsets> {
    if v.major != 1 || v.minor < 17 {
        return None;
    }
    let goid = match v.minor {
        17..=22 => 152,
        23 | 24 => 160,
        _ => 152,
    };
    let (writing, writing_mask, iter_map) = if swiss {
        (34, SWISS_WRITING_MASK, 24)
    } else {
        (8, CLASSIC_WRITING_MASK, 24)
    };
    Some(RuntimeOffsets {
        goid,
        writing,
        writing_mask,
        iter_map,
        from_dwarf: false,
    })
}

/// Offset of the map's hash seed in its header: classic `hmap.hash0`
/// (after `count`, `flags`, `B`, `noverflow`), Swiss `maps.Map.seed`
/// (after `used`). Both layouts are the same in every version of their
/// family; the kernel compares the low 32 bits to tell a new map at a freed
/// map's address from the old one.
pub const fn seed_offset(swiss: bool) -> u32 {
    if swiss { 8 } else { 12 }
}

/// Newest Go minor version whose offsets were measured for the table.
pub const TABLE_NEWEST_MINOR: u32 = 27;

/// Selects the [`DwarfOffsets`] field a struct member fills.
type FieldSlot = fn(&mut DwarfOffsets) -> &mut Option<u32>;

/// Member offsets found in DWARF (each may be missing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DwarfOffsets {
    pub goid: Option<u32>,
    pub hmap_flags: Option<u32>,
    pub hiter_h: Option<u32>,
    pub swiss_writing: Option<u32>,
    pub swiss_iter_m: Option<u32>,
}

impl DwarfOffsets {
    /// Complete offsets for the given map family, if all were found.
    pub fn resolve(&self, swiss: bool) -> Option<RuntimeOffsets> {
        let goid = self.goid?;
        let (writing, writing_mask, iter_map) = if swiss {
            (self.swiss_writing?, SWISS_WRITING_MASK, self.swiss_iter_m?)
        } else {
            (self.hmap_flags?, CLASSIC_WRITING_MASK, self.hiter_h?)
        };
        Some(RuntimeOffsets {
            goid,
            writing,
            writing_mask,
            iter_map,
            from_dwarf: true,
        })
    }
}

/// The binary's DWARF sections, uncompressed once for every reader (these
/// offsets, the package-level map variables); `None` when it has no
/// `.debug_info` (built with `-w`).
pub(crate) fn load_dwarf<'a>(
    file: &object::File<'a>,
) -> Option<gimli::DwarfSections<Cow<'a, [u8]>>> {
    file.section_by_name(".debug_info")?;
    let load = |id: gimli::SectionId| -> Result<Cow<'a, [u8]>, gimli::Error> {
        Ok(file
            .section_by_name(id.name())
            .and_then(|s| s.uncompressed_data().ok())
            .unwrap_or(Cow::Borrowed(&[])))
    };
    gimli::DwarfSections::load(load).ok()
}

/// A view of sections from [`load_dwarf`].
pub(crate) type Dwarf<'a> = gimli::Dwarf<EndianSlice<'a, LittleEndian>>;

/// A compilation unit of [`Dwarf`].
pub(crate) type DwarfUnit<'a> = gimli::Unit<EndianSlice<'a, LittleEndian>>;
/// A node of a unit's entry tree (the entry and its children) of a
/// [`Dwarf`] borrowing `'d`.
pub(crate) type DwarfNode<'abbrev, 'unit, 'tree, 'd> =
    gimli::EntriesTreeNode<'abbrev, 'unit, 'tree, EndianSlice<'d, LittleEndian>>;

/// Call `f` with every top-level entry of every unit (types, variables:
/// Go emits both as children of the unit's root); units or trees that
/// cannot be read are skipped.
pub(crate) fn for_each_top_level_entry<'d>(
    dwarf: &Dwarf<'d>,
    mut f: impl FnMut(&DwarfUnit<'d>, DwarfNode<'_, '_, '_, 'd>),
) {
    let mut units = dwarf.units();
    while let Ok(Some(header)) = units.next() {
        let Ok(unit) = dwarf.unit(header) else {
            continue;
        };
        let Ok(mut tree) = unit.entries_tree(None) else {
            continue;
        };
        let Ok(root) = tree.root() else { continue };
        let mut children = root.children();
        while let Ok(Some(node)) = children.next() {
            f(&unit, node);
        }
    }
}

/// Read the member offsets from the binary's DWARF.
pub(crate) fn from_dwarf(dwarf: &Dwarf<'_>) -> DwarfOffsets {
    let mut out = DwarfOffsets::default();
    for_each_top_level_entry(dwarf, |unit, node| {
        let e = node.entry();
        if e.tag() != gimli::DW_TAG_structure_type {
            return;
        }
        let name = match e.attr_value(gimli::DW_AT_name) {
            Ok(Some(v)) => dwarf.attr_string(unit, v).ok(),
            _ => None,
        };
        let Some(name) = name else { return };
        let wanted: &[(&str, FieldSlot)] = match &*name {
            b"runtime.g" => &[("goid", |o| &mut o.goid)],
            b"runtime.hmap" => &[("flags", |o| &mut o.hmap_flags)],
            b"runtime.hiter" => &[("h", |o| &mut o.hiter_h)],
            b"internal/runtime/maps.Map" => &[("writing", |o| &mut o.swiss_writing)],
            b"internal/runtime/maps.Iter" => &[("m", |o| &mut o.swiss_iter_m)],
            _ => return,
        };
        let mut members = node.children();
        while let Ok(Some(m)) = members.next() {
            let me = m.entry();
            if me.tag() != gimli::DW_TAG_member {
                continue;
            }
            let Some(mname) = me
                .attr_value(gimli::DW_AT_name)
                .ok()
                .flatten()
                .and_then(|v| dwarf.attr_string(unit, v).ok())
            else {
                continue;
            };
            for (field, slot) in wanted {
                if *mname == *field.as_bytes() {
                    let off = match me.attr_value(gimli::DW_AT_data_member_location) {
                        Ok(Some(AttributeValue::Udata(n))) => Some(n),
                        Ok(Some(v)) => v.udata_value(),
                        _ => None,
                    };
                    if let Some(off) = off.and_then(|o| u32::try_from(o).ok()) {
                        *slot(&mut out) = Some(off);
                    }
                }
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(minor: u32) -> GoVersion {
        GoVersion {
            major: 1,
            minor,
            patch: 0,
        }
    }

    #[test]
    fn table_tracks_goid_moves() {
        assert_eq!(from_table(v(17), false).unwrap().goid, 152);
        assert_eq!(from_table(v(22), false).unwrap().goid, 152);
        assert_eq!(from_table(v(23), false).unwrap().goid, 160);
        assert_eq!(from_table(v(24), true).unwrap().goid, 160);
        assert_eq!(from_table(v(25), true).unwrap().goid, 152);
        assert_eq!(from_table(v(27), true).unwrap().goid, 152);
        assert!(from_table(v(16), false).is_none());
    }

    #[test]
    fn table_map_family_fields() {
        let c = from_table(v(19), false).unwrap();
        assert_eq!((c.writing, c.writing_mask, c.iter_map), (8, 4, 24));
        let s = from_table(v(26), true).unwrap();
        assert_eq!((s.writing, s.writing_mask, s.iter_map), (34, 0xff, 24));
        assert!(!s.from_dwarf);
    }

    #[test]
    fn dwarf_offsets_resolve_only_when_complete() {
        let d = DwarfOffsets {
            goid: Some(152),
            hmap_flags: Some(8),
            hiter_h: Some(24),
            ..Default::default()
        };
        assert!(d.resolve(false).unwrap().from_dwarf);
        assert!(d.resolve(true).is_none());
    }
}
