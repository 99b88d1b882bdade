//! Go build information from an ELF file read as a stream, once.
//!
//! Go 1.18 and later put a 32-byte header at a 16-byte-aligned address in the binary's
//! writable data: `\xff Go buildinf:`, the pointer size, a flags byte, and (when the flags'
//! bit 2 is set) the toolchain version and the module information right after it as
//! varint-prefixed strings. Go's own reader (`debug/buildinfo`) finds the header through the
//! `.go.buildinfo` section, or at the start of the first writable segment. Section headers
//! are at the end of an ELF file, past everything a one-pass reader could still use, so this
//! reader takes the program headers from the file's first bytes and searches the writable
//! `PT_LOAD` segments for a header that decodes (an external linker may put the section well
//! into the segment: 113 KiB in Debian's docker-registry). A binary that imports
//! `debug/buildinfo` also holds the magic in its data, not followed by a valid header, which is
//! why every candidate is decoded before it is taken.
//!
//! Bounded: the program headers must lie in the first [`limits::ELF_HEAD`] bytes, and at most
//! [`limits::ELF_DATA`] bytes of writable segments are searched.

use std::io::{self, Read};

use super::parse::{cut, Parsed};
use super::{limits, GoBinary, GoModule};

const MAGIC: &[u8] = b"\xff Go buildinf:";
const PT_LOAD: u64 = 1;
const PF_W: u64 = 2;
const MAX_DEPS: usize = 20_000;

/// A writable segment's place in the file and in memory.
#[derive(Debug, Clone, Copy)]
struct Segment {
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

/// The writable loadable segments of the ELF file whose first bytes are `head`, by offset;
/// None when `head` is not an ELF header whose program headers it holds.
fn writable_segments(head: &[u8]) -> Option<Vec<Segment>> {
    if head.len() < 64 || &head[..4] != b"\x7fELF" {
        return None;
    }
    let wide = match head[4] {
        1 => false,
        2 => true,
        _ => return None,
    };
    let big = match head[5] {
        1 => false,
        2 => true,
        _ => return None,
    };
    let u16_at = |b: &[u8], o: usize| -> Option<u64> {
        let s: [u8; 2] = b.get(o..o + 2)?.try_into().ok()?;
        Some(if big {
            u16::from_be_bytes(s)
        } else {
            u16::from_le_bytes(s)
        } as u64)
    };
    let u32_at = |b: &[u8], o: usize| -> Option<u64> {
        let s: [u8; 4] = b.get(o..o + 4)?.try_into().ok()?;
        Some(if big {
            u32::from_be_bytes(s)
        } else {
            u32::from_le_bytes(s)
        } as u64)
    };
    let u64_at = |b: &[u8], o: usize| -> Option<u64> {
        let s: [u8; 8] = b.get(o..o + 8)?.try_into().ok()?;
        Some(if big {
            u64::from_be_bytes(s)
        } else {
            u64::from_le_bytes(s)
        })
    };
    let (phoff, phentsize, phnum, min_ent) = if wide {
        (
            u64_at(head, 0x20)?,
            u16_at(head, 0x36)?,
            u16_at(head, 0x38)?,
            56,
        )
    } else {
        (
            u32_at(head, 0x1c)?,
            u16_at(head, 0x2a)?,
            u16_at(head, 0x2c)?,
            32,
        )
    };
    if phentsize < min_ent || phnum == 0 {
        return None;
    }
    let end = phoff.checked_add(phentsize.checked_mul(phnum)?)?;
    if end > head.len() as u64 {
        return None;
    }
    let mut out = Vec::new();
    for i in 0..phnum {
        let p = &head[(phoff + i * phentsize) as usize..(phoff + (i + 1) * phentsize) as usize];
        let (ptype, flags, offset, vaddr, filesz) = if wide {
            (
                u32_at(p, 0)?,
                u32_at(p, 4)?,
                u64_at(p, 8)?,
                u64_at(p, 16)?,
                u64_at(p, 32)?,
            )
        } else {
            (
                u32_at(p, 0)?,
                u32_at(p, 24)?,
                u32_at(p, 4)?,
                u32_at(p, 8)?,
                u32_at(p, 16)?,
            )
        };
        if ptype == PT_LOAD && flags & PF_W != 0 && filesz > 0 {
            out.push(Segment {
                offset,
                vaddr,
                filesz,
            });
        }
    }
    out.sort_by_key(|s| s.offset);
    Some(out)
}

/// An unsigned LEB128 varint at the start of `b`: its value and length.
fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut x = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        if i == 9 && byte > 1 {
            return None;
        }
        x |= ((byte & 0x7f) as u64) << (7 * i);
        if byte < 0x80 {
            return Some((x, i + 1));
        }
    }
    None
}

/// A varint-prefixed string at the start of `b`, and what follows it.
fn var_string(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let (n, k) = uvarint(b)?;
    let rest = &b[k..];
    let n = usize::try_from(n).ok().filter(|n| *n <= rest.len())?;
    Some(rest.split_at(n))
}

/// What a candidate header at the start of `b` says.
enum Header {
    /// Go 1.18+: the version and the module information.
    Inline(String, String),
    /// Go 1.17 and older: pointers to strings elsewhere in the file.
    Pointers,
}

fn decode(b: &[u8]) -> Option<Header> {
    if b.len() < 32 || !b.starts_with(MAGIC) || !matches!(b[14], 4 | 8) {
        return None;
    }
    if b[15] & 2 == 0 {
        return (b[15] <= 1).then_some(Header::Pointers);
    }
    let (vers, rest) = var_string(&b[32..])?;
    let (module, _) = var_string(rest)?;
    let vers = std::str::from_utf8(vers).ok()?;
    if vers.is_empty() || vers.len() > 256 || !(vers.starts_with("go") || vers.starts_with("devel"))
    {
        return None;
    }
    // The module information is framed by 16-byte sentinels (cmd/go's infoStart, infoEnd),
    // which are not text.
    let b = module;
    let module = if b.len() >= 33 && b[b.len() - 17] == b'\n' {
        String::from_utf8_lossy(&b[16..b.len() - 16]).into_owned()
    } else {
        String::new()
    };
    Some(Header::Inline(vers.to_string(), module))
}

/// A Go-quoted build setting's key or value, unquoted (the escapes `strconv.Quote` writes for
/// text; others are kept as they are).
fn unquote(s: &str) -> String {
    let Some(inner) = s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) else {
        return s.to_string();
    };
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(o) => out.push(o),
            None => out.push('\\'),
        }
    }
    out
}

/// One `mod`/`dep`/`=>` line's fields.
fn module(fields: &str) -> Option<GoModule> {
    let mut f = fields.split('\t');
    let path = f.next().filter(|p| !p.is_empty())?;
    Some(GoModule {
        path: cut(path),
        version: cut(f.next().unwrap_or("")),
        sum: f.next().filter(|s| !s.is_empty()).map(cut),
        replace: None,
    })
}

/// The module information a Go binary embeds (the text `go version -m` prints).
pub(super) fn parse_modinfo(go_version: &str, text: &str) -> GoBinary {
    let mut b = GoBinary {
        go_version: cut(go_version),
        ..Default::default()
    };
    // Which module a `=>` line replaces: the main one, or the last dep.
    let mut last_is_main = false;
    for line in text.lines() {
        let Some((word, rest)) = line.split_once('\t') else {
            continue;
        };
        match word {
            "path" => b.path = Some(cut(rest)),
            "mod" => {
                b.main = module(rest);
                last_is_main = true;
            }
            "dep" if b.deps.len() < MAX_DEPS => {
                if let Some(m) = module(rest) {
                    b.deps.push(m);
                    last_is_main = false;
                }
            }
            "=>" => {
                let target = if last_is_main {
                    b.main.as_mut()
                } else {
                    b.deps.last_mut()
                };
                if let (Some(t), Some(r)) = (target, module(rest)) {
                    t.replace = Some(Box::new(r));
                }
            }
            "build" if b.settings.len() < 256 => {
                // key=value, either of which may be quoted.
                let (k, v) = if let Some(quoted) = rest.strip_prefix('"') {
                    // The closing quote and '=' end the key: `"k"=v`.
                    match quoted.find("\"=") {
                        Some(j) => (&rest[..j + 2], &rest[j + 3..]),
                        None => (rest, ""),
                    }
                } else {
                    rest.split_once('=').unwrap_or((rest, ""))
                };
                b.settings.push((cut(&unquote(k)), cut(&unquote(v))));
            }
            _ => {}
        }
    }
    b
}

/// The Go build information of the ELF file `r` (`size` bytes), read as it streams by; None
/// for a file that is not an ELF file or holds no build information.
pub(super) fn scan(r: &mut impl Read, size: u64) -> io::Result<Option<Parsed>> {
    // Fewer than 4 bytes left is no ELF file (an entry whose data a pass sharing the tar has
    // read already: the pull's paths keep etc/passwd's).
    let mut head = Vec::with_capacity(4);
    r.by_ref().take(4).read_to_end(&mut head)?;
    if head != b"\x7fELF" {
        return Ok(None);
    }
    r.by_ref()
        .take((limits::ELF_HEAD as u64).min(size) - 4)
        .read_to_end(&mut head)?;
    let Some(segments) = writable_segments(&head) else {
        return Ok(None);
    };
    let mut pos = head.len() as u64;
    let mut budget = limits::ELF_DATA;
    for seg in segments {
        if budget == 0 || seg.offset >= size {
            break;
        }
        let want = seg.filesz.min(size - seg.offset).min(budget);
        budget -= want;
        let mut buf = Vec::new();
        if seg.offset < head.len() as u64 {
            let end = (seg.offset + want).min(head.len() as u64);
            buf.extend_from_slice(&head[seg.offset as usize..end as usize]);
        }
        let have_to = seg.offset + buf.len() as u64;
        if have_to < pos && (buf.len() as u64) < want {
            // Overlaps what was already read past the head: segments do not overlap in files
            // a linker made.
            continue;
        }
        if have_to > pos {
            io::copy(&mut r.by_ref().take(have_to - pos), &mut io::sink())?;
            pos = have_to;
        }
        let more = want - buf.len() as u64;
        let before = buf.len();
        r.by_ref().take(more).read_to_end(&mut buf)?;
        pos += (buf.len() - before) as u64;
        // Candidates sit at 16-byte-aligned addresses.
        let mut i = ((16 - seg.vaddr % 16) % 16) as usize;
        while i + 32 <= buf.len() {
            if buf[i] == 0xff && buf[i..].starts_with(MAGIC) {
                match decode(&buf[i..]) {
                    Some(Header::Inline(vers, modinfo)) => {
                        return Ok(Some(Parsed::Go(Box::new(parse_modinfo(&vers, &modinfo)))));
                    }
                    Some(Header::Pointers) => return Ok(Some(Parsed::OldGo)),
                    None => {}
                }
            }
            i += 16;
        }
    }
    Ok(None)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A minimal little-endian ELF64 file with one writable segment holding `data` at
    /// `data_off`, its address 16-aligned at `vaddr`.
    pub(crate) fn elf_with(data: &[u8], vaddr: u64) -> Vec<u8> {
        let data_off = 0x1000u64;
        let mut f = vec![0u8; data_off as usize];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        f[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        f[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        let p = 64;
        f[p..p + 4].copy_from_slice(&(PT_LOAD as u32).to_le_bytes());
        f[p + 4..p + 8].copy_from_slice(&((PF_W | 4) as u32).to_le_bytes());
        f[p + 8..p + 16].copy_from_slice(&data_off.to_le_bytes());
        f[p + 16..p + 24].copy_from_slice(&vaddr.to_le_bytes());
        f[p + 32..p + 40].copy_from_slice(&(data.len() as u64).to_le_bytes());
        f.extend_from_slice(data);
        f
    }

    pub(crate) fn blob(vers: &str, modinfo: &str) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.push(8);
        b.push(2);
        b.resize(32, 0);
        // Sentinels that are not UTF-8, as Go's are.
        let mut framed = vec![0xfa; 16];
        framed.extend_from_slice(modinfo.as_bytes());
        framed.extend_from_slice(&[0xf9; 16]);
        for s in [vers.as_bytes(), &framed[..]] {
            let mut n = s.len() as u64;
            loop {
                let byte = (n & 0x7f) as u8;
                n >>= 7;
                if n == 0 {
                    b.push(byte);
                    break;
                }
                b.push(byte | 0x80);
            }
            b.extend_from_slice(s);
        }
        b
    }

    #[test]
    fn finds_the_header_past_a_decoy_and_parses_the_modules() {
        let modinfo = "path\texample.com/hello\nmod\texample.com/hello\t(devel)\t\ndep\texample.com/dep\tv0.0.0\n=>\t../dep\t\ndep\tgolang.org/x/text\tv0.3.7\th1:abc=\nbuild\t-compiler=gc\nbuild\t\"-ldflags\"=\"-s -w\"\nbuild\tCGO_ENABLED=0\n";
        // A decoy first: the magic as debug/buildinfo's own variable holds it, followed by
        // junk; then a misaligned copy; then the real header.
        let mut data = MAGIC.to_vec();
        data.resize(48, 0x41);
        data.extend_from_slice(b"\x00");
        data.extend_from_slice(MAGIC);
        data.resize(64, 0);
        data.extend_from_slice(&blob("go1.19.8", modinfo));
        let elf = elf_with(&data, 0x40_0000);
        let Some(Parsed::Go(b)) = scan(&mut &elf[..], elf.len() as u64).unwrap() else {
            panic!("no build info found");
        };
        assert_eq!(b.go_version, "go1.19.8");
        assert_eq!(b.path.as_deref(), Some("example.com/hello"));
        let main = b.main.unwrap();
        assert_eq!(
            (main.path.as_str(), main.version.as_str()),
            ("example.com/hello", "(devel)")
        );
        assert_eq!(b.deps.len(), 2);
        assert_eq!(b.deps[0].replace.as_ref().unwrap().path, "../dep");
        assert_eq!(b.deps[1].sum.as_deref(), Some("h1:abc="));
        assert_eq!(
            b.settings,
            vec![
                ("-compiler".to_string(), "gc".to_string()),
                ("-ldflags".to_string(), "-s -w".to_string()),
                ("CGO_ENABLED".to_string(), "0".to_string()),
            ]
        );
        // An unaligned address for the same bytes: nothing is aligned where the header is.
        let elf = elf_with(&data, 0x40_0008);
        assert_eq!(scan(&mut &elf[..], elf.len() as u64).unwrap(), None);
    }

    #[test]
    fn hostile_headers_are_refused_without_panics() {
        // Lengths past the end, varints that never end, huge counts of program headers.
        let mut bad = MAGIC.to_vec();
        bad.extend_from_slice(&[8, 2]);
        bad.resize(32, 0);
        bad.extend_from_slice(&[0xff; 12]);
        let elf = elf_with(&bad, 0x1000);
        assert_eq!(scan(&mut &elf[..], elf.len() as u64).unwrap(), None);
        let mut elf = elf_with(&blob("go1.20", "x"), 0x1000);
        elf[0x38..0x3a].copy_from_slice(&u16::MAX.to_le_bytes());
        assert_eq!(scan(&mut &elf[..], elf.len() as u64).unwrap(), None);
        // The pointer form of Go 1.17 and older is recognized, and said to be unread.
        let mut old = MAGIC.to_vec();
        old.extend_from_slice(&[8, 0]);
        old.resize(32, 0x11);
        let elf = elf_with(&old, 0x1000);
        assert_eq!(
            scan(&mut &elf[..], elf.len() as u64).unwrap(),
            Some(Parsed::OldGo)
        );
        // A segment said to be far larger than the file.
        let mut elf = elf_with(&blob("go1.20", "x"), 0x1000);
        elf[64 + 32..64 + 40].copy_from_slice(&u64::MAX.to_le_bytes());
        let got = scan(&mut &elf[..], elf.len() as u64).unwrap();
        assert!(matches!(got, Some(Parsed::Go(_))));
        assert_eq!(uvarint(&[0xff; 11]), None);
    }
}
