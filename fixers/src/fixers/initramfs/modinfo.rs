//! Kernel module files: decompression by file name (`.ko`, `.ko.xz`, `.ko.zst`, `.ko.gz`) and the
//! facts depmod reads from the ELF object: the `.modinfo` section (NUL-separated `key=value`
//! strings, include/linux/moduleparam.h `MODULE_INFO`) and `__ksymtab_strings` (the names of the
//! symbols the module exports, kernel/module/main.c).

use std::io::Read;

use goblin::container::Ctx;
use goblin::elf::{Elf, SectionHeader};

use super::error::{Error, Result};

/// Largest module accepted, compressed or not (the biggest in-tree modules are ~20 MiB).
pub(crate) const MAX_MODULE_BYTES: u64 = 64 << 20;
/// Most `key=value` strings read from one `.modinfo`.
const MAX_MODINFO_STRINGS: usize = 16_384;
/// Most exported symbols read from one module.
const MAX_SYMBOLS: usize = 65_536;
/// Longest section name compared.
const MAX_SECTION_NAME: usize = 64;

/// Module file name suffixes kmod reads, longest first.
pub(crate) const MODULE_SUFFIXES: &[&str] = &[".ko.zst", ".ko.xz", ".ko.gz", ".ko"];

/// The module name a file name gives, with `-` turned into `_` as kmod does
/// (`virtio-rng.ko.xz` → `virtio_rng`); `None` if it is not a module file name.
pub(crate) fn module_name(file: &str) -> Option<String> {
    let base = file.rsplit('/').next()?;
    let stem = MODULE_SUFFIXES.iter().find_map(|s| base.strip_suffix(s))?;
    if stem.is_empty() {
        return None;
    }
    Some(underscores(stem))
}

/// `-` → `_`, kmod's normalisation of module names.
pub(crate) fn underscores(s: &str) -> String {
    s.replace('-', "_")
}

/// The ELF bytes of a module file, decompressed according to its name.
///
/// # Errors
/// [`Error::Corrupt`] for a damaged stream, [`Error::Limit`] past [`MAX_MODULE_BYTES`],
/// [`Error::Unsupported`] for a name that is not a module's.
pub(crate) fn decompress(file: &str, data: &[u8]) -> Result<Vec<u8>> {
    let bad =
        |e: &dyn std::fmt::Display| Error::corrupt("compressed module", 0, format!("{file}: {e}"));
    let read = |r: &mut dyn Read| -> Result<Vec<u8>> {
        let mut out = Vec::new();
        r.take(MAX_MODULE_BYTES.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|e| bad(&e))?;
        if out.len() as u64 > MAX_MODULE_BYTES {
            return Err(Error::limit("module size", MAX_MODULE_BYTES));
        }
        Ok(out)
    };
    if file.ends_with(".ko") {
        Ok(data.to_vec())
    } else if file.ends_with(".ko.xz") {
        read(&mut lzma_rust2::XzReader::new(data, true))
    } else if file.ends_with(".ko.zst") {
        let mut d = zstd::stream::read::Decoder::with_buffer(data).map_err(|e| bad(&e))?;
        read(&mut d)
    } else if file.ends_with(".ko.gz") {
        read(&mut flate2::read::MultiGzDecoder::new(data))
    } else {
        Err(Error::unsupported(
            "module file",
            format!("{file} is not .ko, .ko.xz, .ko.zst or .ko.gz"),
        ))
    }
}

/// What depmod needs from one module.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ModInfo {
    /// `name=` (or from the file name), normalised with [`underscores`].
    pub(crate) name: String,
    /// `depends=`: the modules whose symbols it uses.
    pub(crate) depends: Vec<String>,
    /// `alias=` patterns (fnmatch-style, e.g. `virtio:d00000002v*`).
    pub(crate) aliases: Vec<String>,
    /// `softdep=` values (`pre: a b post: c`).
    pub(crate) softdeps: Vec<String>,
    /// Exported symbol names.
    pub(crate) symbols: Vec<String>,
}

impl ModInfo {
    /// The `pre:` and `post:` module names of every softdep.
    pub(crate) fn softdep_modules(&self) -> Vec<String> {
        self.softdeps
            .iter()
            .flat_map(|s| s.split_whitespace())
            .filter(|w| !w.ends_with(':'))
            .map(underscores)
            .collect()
    }
}

fn section_name<'a>(elf: &'a [u8], strtab: &SectionHeader, off: usize) -> Option<&'a [u8]> {
    let start = usize::try_from(strtab.sh_offset).ok()?.checked_add(off)?;
    let end = usize::try_from(strtab.sh_offset)
        .ok()?
        .checked_add(usize::try_from(strtab.sh_size).ok()?)?;
    let s = elf.get(start..end.min(elf.len()))?;
    let n = s.iter().take(MAX_SECTION_NAME + 1).position(|&b| b == 0)?;
    s.get(..n)
}

fn section_data<'a>(elf: &'a [u8], sh: &SectionHeader, name: &str) -> Result<&'a [u8]> {
    let off = usize::try_from(sh.sh_offset).unwrap_or(usize::MAX);
    let len = usize::try_from(sh.sh_size).unwrap_or(usize::MAX);
    elf.get(off..off.saturating_add(len)).ok_or_else(|| {
        Error::corrupt(
            "elf section",
            sh.sh_offset,
            format!(
                "{name}: {len} bytes at {off:#x} run past the end of {} bytes",
                elf.len()
            ),
        )
    })
}

/// Reads the `.modinfo` and `__ksymtab_strings` sections of an (uncompressed) module.
/// `file` gives the name when `.modinfo` has none.
///
/// # Errors
/// [`Error::Corrupt`] if the ELF header or section table is damaged or there is no `.modinfo`.
pub(crate) fn parse(file: &str, elf: &[u8]) -> Result<ModInfo> {
    let bad = |offset: u64, e: &dyn std::fmt::Display| {
        Error::corrupt("elf header", offset, format!("{file}: {e}"))
    };
    let h = Elf::parse_header(elf).map_err(|e| bad(0, &e))?;
    let container = h.container().map_err(|e| bad(0, &e))?;
    let le = h.endianness().map_err(|e| bad(0, &e))?;
    let shoff = usize::try_from(h.e_shoff).unwrap_or(usize::MAX);
    let shdrs = SectionHeader::parse(elf, shoff, usize::from(h.e_shnum), Ctx::new(container, le))
        .map_err(|e| bad(h.e_shoff, &e))?;
    let strtab = shdrs.get(usize::from(h.e_shstrndx)).ok_or_else(|| {
        bad(
            0,
            &format!(
                "e_shstrndx {} out of range 0..{}",
                h.e_shstrndx,
                shdrs.len()
            ),
        )
    })?;
    let find = |want: &[u8]| {
        shdrs
            .iter()
            .find(|s| section_name(elf, strtab, s.sh_name) == Some(want))
    };
    let mi = find(b".modinfo").ok_or_else(|| {
        Error::corrupt(
            "elf section",
            h.e_shoff,
            format!("{file}: no .modinfo section"),
        )
    })?;
    let mut info = ModInfo::default();
    for kv in section_data(elf, mi, ".modinfo")?
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .take(MAX_MODINFO_STRINGS)
    {
        let Ok(kv) = std::str::from_utf8(kv) else {
            continue;
        };
        let Some((k, v)) = kv.split_once('=') else {
            continue;
        };
        match k {
            "name" => info.name = underscores(v),
            "depends" => info
                .depends
                .extend(v.split(',').filter(|d| !d.is_empty()).map(underscores)),
            "alias" => info.aliases.push(v.to_owned()),
            "softdep" => info.softdeps.push(v.to_owned()),
            _ => {}
        }
    }
    if info.name.is_empty() {
        info.name = module_name(file).unwrap_or_default();
    }
    if let Some(ks) = find(b"__ksymtab_strings") {
        info.symbols = section_data(elf, ks, "__ksymtab_strings")?
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .take(MAX_SYMBOLS)
            .filter_map(|s| std::str::from_utf8(s).ok())
            .map(str::to_owned)
            .collect();
    }
    Ok(info)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal relocatable x86-64 ELF holding `.modinfo` (and `__ksymtab_strings` if any).
    pub(crate) fn fake_module(modinfo: &str, ksyms: &[&str]) -> Vec<u8> {
        let shstr = b"\0.modinfo\0.shstrtab\0__ksymtab_strings\0";
        let mi = modinfo.replace('\n', "\0").into_bytes();
        let mut ks = Vec::new();
        for s in ksyms {
            ks.extend(s.as_bytes());
            ks.push(0);
        }
        let mi_off = 64usize;
        let ks_off = mi_off + mi.len();
        let ss_off = ks_off + ks.len();
        let sh_off = (ss_off + shstr.len() + 7) & !7;
        let mut b = vec![0u8; sh_off + 64 * 4];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2; // ELFCLASS64
        b[5] = 1; // little-endian
        b[6] = 1; // EV_CURRENT
        b[16..18].copy_from_slice(&1u16.to_le_bytes()); // ET_REL
        b[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        b[20..24].copy_from_slice(&1u32.to_le_bytes());
        b[40..48].copy_from_slice(&(sh_off as u64).to_le_bytes());
        b[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        b[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
        b[60..62].copy_from_slice(&4u16.to_le_bytes()); // e_shnum
        b[62..64].copy_from_slice(&2u16.to_le_bytes()); // e_shstrndx
        b[mi_off..ks_off].copy_from_slice(&mi);
        b[ks_off..ss_off].copy_from_slice(&ks);
        b[ss_off..ss_off + shstr.len()].copy_from_slice(shstr);
        // (name offset, type, offset, size); section 0 is the null one.
        for (i, (name, ty, off, size)) in [
            (1u32, 1u32, mi_off, mi.len()),
            (10, 3, ss_off, shstr.len()),
            (20, 1, ks_off, ks.len()),
        ]
        .into_iter()
        .enumerate()
        {
            let s = sh_off + 64 * (i + 1);
            b[s..s + 4].copy_from_slice(&name.to_le_bytes());
            b[s + 4..s + 8].copy_from_slice(&ty.to_le_bytes());
            b[s + 24..s + 32].copy_from_slice(&(off as u64).to_le_bytes());
            b[s + 32..s + 40].copy_from_slice(&(size as u64).to_le_bytes());
        }
        b
    }

    #[test]
    fn fake_module_parses() {
        let m = fake_module(
            "alias=virtio:d00000001v*\ndepends=net_failover,fail-over\nname=virtio_net\nsoftdep=pre: crc32c\nvermagic=6.1",
            &["virtnet_x", "virtnet_y"],
        );
        let i = parse("virtio_net.ko", &m).unwrap();
        assert_eq!(i.name, "virtio_net");
        assert_eq!(i.depends, ["net_failover", "fail_over"]);
        assert_eq!(i.aliases, ["virtio:d00000001v*"]);
        assert_eq!(i.softdeps, ["pre: crc32c"]);
        assert_eq!(i.softdep_modules(), ["crc32c"]);
        assert_eq!(i.symbols, ["virtnet_x", "virtnet_y"]);
        // No name= : from the file name.
        let m = fake_module("depends=", &[]);
        let i = parse("kernel/x/virtio-rng.ko.xz", &m).unwrap();
        assert_eq!(i.name, "virtio_rng");
        assert!(i.depends.is_empty());
    }

    #[test]
    fn validation_branches() {
        let good = fake_module("name=a", &[]);
        let e = parse("a.ko", &good[..10]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("corrupt elf header at offset 0x0: a.ko:"),
            "{e}"
        );
        // e_shstrndx out of range.
        let mut b = good.clone();
        b[62] = 9;
        assert_eq!(
            parse("a.ko", &b).unwrap_err().to_string(),
            "corrupt elf header at offset 0x0: a.ko: e_shstrndx 9 out of range 0..4"
        );
        // .modinfo renamed away.
        let mut b = good.clone();
        let p = b.windows(8).position(|w| w == b".modinfo").unwrap();
        b[p + 1] = b'x';
        let e = parse("a.ko", &b).unwrap_err();
        assert!(e.to_string().ends_with("a.ko: no .modinfo section"), "{e}");
        // .modinfo size past the end.
        let mut b = good.clone();
        let sh_off = usize::try_from(u64::from_le_bytes(b[40..48].try_into().unwrap())).unwrap();
        b[sh_off + 64 + 32..sh_off + 64 + 40].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let e = parse("a.ko", &b).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("corrupt elf section at offset 0x40: .modinfo:"),
            "{e}"
        );
    }

    #[test]
    fn names_and_decompression() {
        assert_eq!(
            module_name("a/b/virtio-blk.ko.zst").as_deref(),
            Some("virtio_blk")
        );
        assert_eq!(module_name("a/b/x.ko.gz").as_deref(), Some("x"));
        assert_eq!(module_name("a/b/x.o"), None);
        assert_eq!(module_name(".ko"), None);
        let m = fake_module("name=a", &[]);
        let z = zstd::stream::encode_all(&m[..], 3).unwrap();
        assert_eq!(decompress("a.ko.zst", &z).unwrap(), m);
        let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut g, &m).unwrap();
        assert_eq!(decompress("a.ko.gz", &g.finish().unwrap()).unwrap(), m);
        assert!(decompress("a.ko.xz", b"junk").is_err());
        assert!(matches!(
            decompress("a.o", &m),
            Err(Error::Unsupported { .. })
        ));
    }

    /// Real modules from the host's kernel, if installed, parse as `modinfo` reads them.
    #[test]
    fn host_modules_match_modinfo() {
        let Some((dir, kver)) = super::super::tests::host_kernel() else {
            return;
        };
        for name in ["virtio_net", "virtio_blk", "scsi_mod"] {
            let Some(rel) = super::super::tests::host_module_path(&dir, name) else {
                continue;
            };
            let raw = std::fs::read(dir.join(&rel)).unwrap();
            let i = parse(&rel, &decompress(&rel, &raw).unwrap()).unwrap();
            assert_eq!(i.name, name);
            let out = std::process::Command::new("modinfo")
                .args(["-k", &kver, "-F", "depends", name])
                .output();
            let Ok(out) = out else {
                println!("skipping: modinfo not found");
                return;
            };
            let want: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .trim()
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            assert_eq!(i.depends, want, "{name}");
            let out = std::process::Command::new("modinfo")
                .args(["-k", &kver, "-F", "alias", name])
                .output()
                .unwrap();
            let want: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_owned)
                .collect();
            assert_eq!(i.aliases, want, "{name}");
        }
    }
}
