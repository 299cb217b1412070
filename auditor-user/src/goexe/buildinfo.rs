//! The Go build information blob (`\xff Go buildinf:`, section
//! `.go.buildinfo`): toolchain version, main module path and build settings.
//!
//! Two encodings exist. Go 1.18+ sets flag bit 1 and stores both strings
//! inline after the 32-byte header as varint-length strings. Older
//! toolchains store two pointers (to Go string headers) after the 16-byte
//! magic; in PIE binaries those pointers are dynamic relocations, so the
//! caller resolves them (see `ExeImage::read_go_string`).

use super::GoVersion;
use super::pclntab::uvarint;

/// The 14-byte magic the blob starts with.
pub const MAGIC: &[u8; 14] = b"\xff Go buildinf:";

/// Framing the linker puts around the module info string (16 bytes each).
const MODINFO_START: &[u8] = b"\x30\x77\xaf\x0c\x92\x74\x08\x02\x41\xe1\xc1\x07\xe6\xd6\x18\xe6";
const MODINFO_END: &[u8] = b"\xf9\x32\x43\x31\x86\x18\x20\x72\x00\x82\x42\x10\x41\x16\xd8\xf2";

/// What the blob says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildInfo {
    /// Raw toolchain string, e.g. `go1.27.3` or `go1.24.0 X:nocoverageredesign`.
    pub go_version: String,
    /// Path of the main module (`mod` line), else of the main package (`path`).
    pub module_path: Option<String>,
    /// `build` settings (`-buildmode`, `GOEXPERIMENT`, ...).
    pub settings: Vec<(String, String)>,
    /// Module paths of the dependencies linked in (`dep` lines), as the
    /// program's import paths name them (a `=>` replacement keeps the
    /// original path in symbol names, so the replacement is not listed).
    pub deps: Vec<String>,
}

/// What the module info text says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModInfo {
    /// Path of the main module (`mod` line), else of the main package.
    pub module_path: Option<String>,
    pub settings: Vec<(String, String)>,
    pub deps: Vec<String>,
}

/// Why the blob could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildInfoError {
    #[error("no Go build info magic")]
    NoMagic,
    #[error("Go build info truncated")]
    Truncated,
    #[error("Go build info pointer could not be resolved")]
    BadPointer,
}

fn varint_string(d: &[u8]) -> Option<(&[u8], usize)> {
    let (len, n) = uvarint(d)?;
    let end = n.checked_add(usize::try_from(len).ok()?)?;
    Some((d.get(n..end)?, end))
}

/// Parse a blob starting at the magic. `read_go_string(addr)` returns the
/// bytes of the Go string whose header (`ptr, len`) is at virtual address
/// `addr`; only the pre-1.18 pointer format uses it.
pub fn parse(
    blob: &[u8],
    read_go_string: &dyn Fn(u64) -> Option<Vec<u8>>,
) -> Result<BuildInfo, BuildInfoError> {
    if !blob.starts_with(MAGIC) {
        return Err(BuildInfoError::NoMagic);
    }
    let ptr_size = *blob.get(14).ok_or(BuildInfoError::Truncated)? as usize;
    let flags = *blob.get(15).ok_or(BuildInfoError::Truncated)?;
    let (version, modinfo) = if flags & 2 != 0 {
        let rest = blob.get(32..).ok_or(BuildInfoError::Truncated)?;
        let (v, n) = varint_string(rest).ok_or(BuildInfoError::Truncated)?;
        let (m, _) = varint_string(&rest[n..]).ok_or(BuildInfoError::Truncated)?;
        (v.to_vec(), m.to_vec())
    } else {
        let big_endian = flags & 1 != 0;
        let ptr = |off: usize| -> Option<u64> {
            let b = blob.get(off..off + ptr_size)?;
            Some(match (ptr_size, big_endian) {
                (8, false) => u64::from_le_bytes(b.try_into().ok()?),
                (8, true) => u64::from_be_bytes(b.try_into().ok()?),
                (4, false) => u64::from(u32::from_le_bytes(b.try_into().ok()?)),
                (4, true) => u64::from(u32::from_be_bytes(b.try_into().ok()?)),
                _ => return None,
            })
        };
        let vp = ptr(16).ok_or(BuildInfoError::Truncated)?;
        let mp = ptr(16 + ptr_size).ok_or(BuildInfoError::Truncated)?;
        let v = read_go_string(vp).ok_or(BuildInfoError::BadPointer)?;
        let m = read_go_string(mp).unwrap_or_default();
        (v, m)
    };
    let ModInfo {
        module_path,
        settings,
        deps,
    } = parse_modinfo(&modinfo);
    Ok(BuildInfo {
        go_version: String::from_utf8_lossy(&version).into_owned(),
        module_path,
        settings,
        deps,
    })
}

/// Split the module info text into the main module path, build settings
/// and dependency modules.
pub fn parse_modinfo(raw: &[u8]) -> ModInfo {
    let mut s = raw;
    if s.len() >= 33 && s.starts_with(MODINFO_START) && s.ends_with(MODINFO_END) {
        s = &s[16..s.len() - 16];
    }
    let text = String::from_utf8_lossy(s);
    let mut path = None;
    let mut module = None;
    let mut settings = Vec::new();
    let mut deps: Vec<String> = Vec::new();
    for line in text.lines() {
        let mut parts = line.split('\t');
        match parts.next() {
            Some("path") => path = parts.next().map(str::to_owned),
            Some("mod") => module = parts.next().map(str::to_owned),
            Some("dep") => {
                if let Some(d) = parts.next().filter(|d| !d.is_empty())
                    && !deps.iter().any(|x| x == d)
                {
                    deps.push(d.to_owned());
                }
            }
            Some("build") => {
                if let Some((k, v)) = parts.next().and_then(|kv| kv.split_once('=')) {
                    settings.push((k.to_owned(), v.to_owned()));
                }
            }
            _ => {}
        }
    }
    ModInfo {
        module_path: module.or(path).filter(|p| !p.is_empty()),
        settings,
        deps,
    }
}

/// Parse `go1.21.13`, `go1.22rc1`, `go1.24.0 X:...`, `devel go1.23-abc`.
pub fn parse_go_version(s: &str) -> Option<GoVersion> {
    let s = s.trim();
    let s = s.strip_prefix("devel ").unwrap_or(s);
    let s = s.strip_prefix("go")?;
    let s = s.split([' ', '-', '+']).next()?;
    let mut nums = s.split('.').map(|p| {
        let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().ok()
    });
    let major = nums.next()??;
    let minor = nums.next().flatten().unwrap_or(0);
    let patch = nums.next().flatten().unwrap_or(0);
    Some(GoVersion {
        major,
        minor,
        patch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(flags: u8) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.push(8);
        b.push(flags);
        b
    }

    #[test]
    fn inline_format_gives_version_and_module() {
        let mut b = header(2);
        b.resize(32, 0);
        let ver = b"go1.27.3";
        b.push(ver.len() as u8);
        b.extend(ver);
        let mut m = MODINFO_START.to_vec();
        m.extend(b"path\texample.com/app\nmod\texample.com/app\t(devel)\t\ndep\tgithub.com/lib/pq\tv1.10.9\th1:x=\ndep\tgolang.org/x/sync\tv0.8.0\th1:y=\n=>\t../sync\t(devel)\t\nbuild\t-buildmode=pie\nbuild\tGOEXPERIMENT=noswissmap\n");
        m.extend(MODINFO_END);
        b.push(((m.len() & 0x7f) as u8) | 0x80);
        b.push((m.len() >> 7) as u8);
        b.extend(&m);
        let bi = parse(&b, &|_| None).unwrap();
        assert_eq!(bi.go_version, "go1.27.3");
        assert_eq!(bi.module_path.as_deref(), Some("example.com/app"));
        assert_eq!(bi.deps, ["github.com/lib/pq", "golang.org/x/sync"]);
        assert!(
            bi.settings
                .contains(&("GOEXPERIMENT".into(), "noswissmap".into()))
        );
    }

    #[test]
    fn pointer_format_resolves_through_reader() {
        let mut b = header(0);
        b.extend(0x1000u64.to_le_bytes());
        b.extend(0x2000u64.to_le_bytes());
        let read = |addr: u64| match addr {
            0x1000 => Some(b"go1.17.13".to_vec()),
            0x2000 => Some(b"path\tcmd/x\n".to_vec()),
            _ => None,
        };
        let bi = parse(&b, &read).unwrap();
        assert_eq!(bi.go_version, "go1.17.13");
        assert_eq!(bi.module_path.as_deref(), Some("cmd/x"));
        let none = |_: u64| None;
        assert_eq!(parse(&b, &none).unwrap_err(), BuildInfoError::BadPointer);
    }

    #[test]
    fn rejects_missing_magic_and_truncation() {
        assert_eq!(
            parse(b"hello", &|_| None).unwrap_err(),
            BuildInfoError::NoMagic
        );
        let mut b = header(2);
        b.resize(32, 0);
        b.push(50);
        assert_eq!(parse(&b, &|_| None).unwrap_err(), BuildInfoError::Truncated);
    }

    #[test]
    fn mutated_blobs_never_panic() {
        let mut b = header(2);
        b.resize(32, 0);
        b.extend([8]);
        b.extend(b"go1.27.3");
        b.extend([4]);
        b.extend(b"path");
        for i in 14..b.len() {
            for v in [0u8, 0x80, 0xff] {
                let mut m = b.clone();
                m[i] = v;
                let _ = parse(&m, &|_| Some(vec![0xff; 3]));
                let _ = parse(&m[..i], &|_| None);
            }
        }
    }

    #[test]
    fn go_version_strings() {
        let v = |a, b, c| {
            Some(GoVersion {
                major: a,
                minor: b,
                patch: c,
            })
        };
        assert_eq!(parse_go_version("go1.21.13"), v(1, 21, 13));
        assert_eq!(parse_go_version("go1.22rc1"), v(1, 22, 0));
        assert_eq!(
            parse_go_version("go1.24.0 X:nocoverageredesign"),
            v(1, 24, 0)
        );
        assert_eq!(parse_go_version("devel go1.23-abcdef"), v(1, 23, 0));
        assert_eq!(parse_go_version("go1.19"), v(1, 19, 0));
        assert_eq!(parse_go_version("1.19"), None);
    }
}
