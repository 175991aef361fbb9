//! Small synthetic binaries with real headers: PE32+ executables and drivers, a Windows-style MBR
//! stand-in, a Linux bzImage header, kernel-module ELF objects with `.modinfo`, and newc cpio
//! archives. They carry the fields inspection reads and nothing else (they do not run).

/// PE subsystem: native (drivers, PE/COFF spec "Windows Subsystem").
pub(crate) const SUBSYSTEM_NATIVE: u16 = 1;
/// PE subsystem: Windows console (`cmd.exe`).
pub(crate) const SUBSYSTEM_CONSOLE: u16 = 3;
/// PE subsystem: EFI application (boot loaders).
pub(crate) const SUBSYSTEM_EFI_APPLICATION: u16 = 10;
/// PE machine: x86-64 (PE/COFF spec "Machine Types", IMAGE_FILE_MACHINE_AMD64).
const MACHINE_AMD64: u16 = 0x8664;
/// PE32+ optional-header magic.
const PE32_PLUS_MAGIC: u16 = 0x20b;
/// Where the PE signature starts (`e_lfanew`).
const PE_OFFSET: usize = 0x80;
/// File and section alignment of our images.
const FILE_ALIGN: usize = 0x200;

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// A minimal x86-64 PE32+ image: DOS header, PE signature, COFF header, PE32+ optional header with
/// 16 empty data directories, and one `.text` section whose code returns 0. `tag` is embedded in
/// the section so files differ.
pub(crate) fn pe64(subsystem: u16, tag: &str) -> Vec<u8> {
    let mut b = vec![0u8; 2 * FILE_ALIGN];
    // DOS header (PE/COFF spec "MS-DOS Stub"): magic and e_lfanew at 0x3c.
    b[0..2].copy_from_slice(b"MZ");
    put32(&mut b, 0x3c, 0x80);
    let stub = b"This program cannot be run in DOS mode.\r\r\n$";
    b[0x4e..0x4e + stub.len()].copy_from_slice(stub);
    // PE signature and COFF file header.
    let p = PE_OFFSET;
    b[p..p + 4].copy_from_slice(b"PE\0\0");
    let c = p + 4;
    put16(&mut b, c, MACHINE_AMD64);
    put16(&mut b, c + 2, 1); // NumberOfSections
    put32(&mut b, c + 4, 0x6553_f100); // TimeDateStamp, fixed
    put16(&mut b, c + 16, 240); // SizeOfOptionalHeader (PE32+ with 16 directories)
    put16(&mut b, c + 18, 0x0022); // EXECUTABLE_IMAGE | LARGE_ADDRESS_AWARE
    // Optional header, PE32+.
    let o = c + 20;
    put16(&mut b, o, PE32_PLUS_MAGIC);
    b[o + 2] = 14; // linker major
    put32(&mut b, o + 4, 0x200); // SizeOfCode
    put32(&mut b, o + 16, 0x1000); // AddressOfEntryPoint
    put32(&mut b, o + 20, 0x1000); // BaseOfCode
    put64(&mut b, o + 24, 0x1_4000_0000); // ImageBase
    put32(&mut b, o + 32, 0x1000); // SectionAlignment
    put32(&mut b, o + 36, 0x200); // FileAlignment
    put16(&mut b, o + 40, 10); // OS version major
    put16(&mut b, o + 44, 10); // image version major
    put16(
        &mut b,
        o + 48,
        if subsystem == SUBSYSTEM_EFI_APPLICATION {
            0
        } else {
            6
        },
    ); // subsystem major
    put32(&mut b, o + 56, 0x2000); // SizeOfImage
    put32(&mut b, o + 60, 0x200); // SizeOfHeaders
    put16(&mut b, o + 68, subsystem);
    put16(&mut b, o + 70, 0x8160); // DllCharacteristics: high-entropy VA, dynamic base, NX, TS aware
    put64(&mut b, o + 72, 0x10_0000); // stack reserve
    put64(&mut b, o + 80, 0x1000); // stack commit
    put64(&mut b, o + 88, 0x10_0000); // heap reserve
    put64(&mut b, o + 96, 0x1000); // heap commit
    put32(&mut b, o + 108, 16); // NumberOfRvaAndSizes
    // Section table.
    let s = o + 240;
    b[s..s + 8].copy_from_slice(b".text\0\0\0");
    put32(&mut b, s + 8, 0x100); // VirtualSize
    put32(&mut b, s + 12, 0x1000); // VirtualAddress
    put32(&mut b, s + 16, 0x200); // SizeOfRawData
    put32(&mut b, s + 20, 0x200); // PointerToRawData
    put32(&mut b, s + 36, 0x6000_0020); // CODE | EXECUTE | READ
    // Code: xor eax, eax; ret. Then the tag.
    b[FILE_ALIGN..FILE_ALIGN + 3].copy_from_slice(&[0x31, 0xc0, 0xc3]);
    let tag = tag.as_bytes();
    let n = tag.len().min(0x1f0);
    b[FILE_ALIGN + 16..FILE_ALIGN + 16 + n].copy_from_slice(&tag[..n]);
    b
}

/// 440 bytes standing in for the Windows MBR boot code: our own few instructions, then the three
/// error messages at the offsets Windows Vista and later use (0x163..), with their offsets
/// (minus 0x100) in bytes 0x1b5..0x1b7, which is how tools recognise a Windows MBR.
pub(crate) fn windows_mbr_code() -> [u8; 440] {
    let mut b = [0u8; 440];
    // cli; xor ax,ax; mov ss,ax; mov sp,0x7c00; sti; hlt; jmp $-1
    let code = [
        0xfa, 0x33, 0xc0, 0x8e, 0xd0, 0xbc, 0x00, 0x7c, 0xfb, 0xf4, 0xeb, 0xfd,
    ];
    b[..code.len()].copy_from_slice(&code);
    let msgs: [&[u8]; 3] = [
        b"Invalid partition table",
        b"Error loading operating system",
        b"Missing operating system",
    ];
    let mut at = 0x163;
    let mut offs = [0u8; 3];
    for (i, m) in msgs.iter().enumerate() {
        offs[i] = u8::try_from(at - 0x100).unwrap_or(0);
        b[at..at + m.len()].copy_from_slice(m);
        at += m.len() + 1;
    }
    b[0x1b5..0x1b8].copy_from_slice(&offs);
    b
}

/// A file with a Linux x86 boot-protocol header (Documentation/arch/x86/boot.rst): boot flag
/// 0xAA55 at 0x1fe, `HdrS` at 0x202, protocol 2.15, and `kernel_version` (0x20e) pointing at
/// `version` (the string `file` prints). No kernel code.
pub(crate) fn bzimage(version: &str) -> Vec<u8> {
    let mut b = vec![0u8; 0x800];
    b[0x1f1] = 4; // setup_sects
    put16(&mut b, 0x1fe, 0xaa55);
    b[0x202..0x206].copy_from_slice(b"HdrS");
    put16(&mut b, 0x206, 0x020f);
    let at = 0x400;
    put16(&mut b, 0x20e, u16::try_from(at - 0x200).unwrap_or(0));
    b[at..at + version.len()].copy_from_slice(version.as_bytes());
    b
}

/// An x86-64 relocatable ELF object holding only a `.modinfo` section with `key=value` strings,
/// which is what `modinfo` and module catalogs read from a `.ko`.
pub(crate) fn kmod(name: &str, kver: &str, alias: &str) -> Vec<u8> {
    let modinfo = format!(
        "license=GPL\0description=synthetic {name} for rehost tests\0alias={alias}\0depends=virtio,virtio_ring\0\
         retpoline=Y\0intree=Y\0name={name}\0vermagic={kver} SMP mod_unload modversions \0"
    );
    let shstrtab = b"\0.modinfo\0.shstrtab\0";
    let mi_off = 64usize;
    let ss_off = mi_off + modinfo.len();
    let sh_off = (ss_off + shstrtab.len()).div_ceil(8) * 8;
    let mut b = vec![0u8; sh_off + 3 * 64];
    b[0..4].copy_from_slice(b"\x7fELF");
    b[4] = 2; // ELFCLASS64
    b[5] = 1; // little endian
    b[6] = 1; // EV_CURRENT
    put16(&mut b, 16, 1); // ET_REL
    put16(&mut b, 18, 62); // EM_X86_64
    put32(&mut b, 20, 1);
    put64(&mut b, 40, sh_off as u64);
    put16(&mut b, 52, 64); // e_ehsize
    put16(&mut b, 58, 64); // e_shentsize
    put16(&mut b, 60, 3); // e_shnum
    put16(&mut b, 62, 2); // e_shstrndx
    b[mi_off..ss_off].copy_from_slice(modinfo.as_bytes());
    b[ss_off..ss_off + shstrtab.len()].copy_from_slice(shstrtab);
    for (i, (name_off, kind, flags, off, size)) in [
        (1u32, 1u32, 2u64, mi_off, modinfo.len()),
        (10, 3, 0, ss_off, shstrtab.len()),
    ]
    .into_iter()
    .enumerate()
    {
        let h = sh_off + 64 * (i + 1);
        put32(&mut b, h, name_off);
        put32(&mut b, h + 4, kind);
        put64(&mut b, h + 8, flags);
        put64(&mut b, h + 24, off as u64);
        put64(&mut b, h + 32, size as u64);
        put64(&mut b, h + 48, 1); // sh_addralign
    }
    b
}

/// A newc ("070701") cpio archive of regular files, as in an uncompressed initramfs.
pub(crate) fn cpio_newc(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut entry = |ino: usize, name: &str, mode: u32, data: &[u8]| {
        let header = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0,
            0,
            1,
            crate::tree::FIXED_EPOCH,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out.extend_from_slice(data);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    };
    for (i, (name, data)) in files.iter().enumerate() {
        entry(i + 1, name, 0o100_644, data);
    }
    entry(0, "TRAILER!!!", 0, &[]);
    out
}

/// Compresses `data` with `xz` or `zstd` (deterministic for the same input and tool version),
/// for `.ko.xz` / `.ko.zst` module files.
pub(crate) fn compress(tool: crate::tools::Tool, data: &[u8]) -> crate::Result<Vec<u8>> {
    crate::tools::run_with_input(crate::tools::command(tool)?.arg("-c"), Some(data))
}

/// Creates an empty rpm database with the sqlite backend's schema (rpm 4.16+
/// `lib/backend/sqlite.c`: a `Packages` table of header blobs plus one table per index), in
/// rollback-journal mode so it can be opened read-only from a read-only filesystem. librpm (as
/// used by libguestfs inspection) refuses a directory without a database it can open.
pub(crate) fn rpmdb(dst: &std::path::Path) -> crate::Result<()> {
    const SCRIPT: &str = r#"
import sqlite3, sys
text = ["Name", "Basenames", "Group", "Requirename", "Providename", "Conflictname",
        "Obsoletename", "Triggername", "Dirnames", "Sha1header", "Filetriggername",
        "Transfiletriggername", "Recommendname", "Suggestname", "Supplementname", "Enhancename"]
blob = ["Installtid", "Sigmd5"]
key_only = {"Name", "Group", "Sha1header"}
c = sqlite3.connect(sys.argv[1])
c.execute("PRAGMA journal_mode=DELETE")
c.execute("CREATE TABLE 'Packages' (hnum INTEGER PRIMARY KEY AUTOINCREMENT,blob BLOB NOT NULL)")
for t in text + blob:
    kind = "BLOB" if t in blob else "TEXT"
    c.execute(f"CREATE TABLE '{t}' (key '{kind}' NOT NULL, hnum INTEGER NOT NULL, idx INTEGER NOT NULL, "
              f"FOREIGN KEY (hnum) REFERENCES 'Packages'(hnum))")
    if t in text:
        c.execute(f"CREATE INDEX '{t}_key_idx' ON '{t}'(key ASC)")
        if t not in key_only:
            c.execute(f"CREATE INDEX '{t}_hnum_idx' ON '{t}'(hnum ASC)")
c.commit()
c.close()
"#;
    crate::tools::run(
        crate::tools::command(crate::tools::PYTHON3)?
            .arg("-c")
            .arg(SCRIPT)
            .arg(dst),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pe_parses_with_goblin() {
        for (sub, name) in [
            (SUBSYSTEM_CONSOLE, "cmd.exe"),
            (SUBSYSTEM_NATIVE, "pvscsi.sys"),
            (SUBSYSTEM_EFI_APPLICATION, "bootx64.efi"),
        ] {
            let bytes = pe64(sub, name);
            let pe = goblin::pe::PE::parse(&bytes).unwrap();
            assert!(pe.is_64);
            assert_eq!(
                pe.header.coff_header.machine,
                goblin::pe::header::COFF_MACHINE_X86_64
            );
            let oh = pe.header.optional_header.unwrap();
            assert_eq!(oh.windows_fields.subsystem, sub);
            assert_eq!(pe.sections.len(), 1);
        }
    }

    #[test]
    fn kmod_parses_with_goblin() {
        let b = kmod("virtio_blk", "6.1.0-18-amd64", "virtio:d00000002v*");
        let elf = goblin::elf::Elf::parse(&b).unwrap();
        assert_eq!(elf.header.e_machine, goblin::elf::header::EM_X86_64);
        let sh = elf
            .section_headers
            .iter()
            .find(|s| elf.shdr_strtab.get_at(s.sh_name) == Some(".modinfo"))
            .unwrap();
        let data =
            &b[usize::try_from(sh.sh_offset).unwrap()..][..usize::try_from(sh.sh_size).unwrap()];
        let text = String::from_utf8_lossy(data);
        assert!(text.contains("name=virtio_blk\0"));
        assert!(text.contains("vermagic=6.1.0-18-amd64 "));
    }

    #[test]
    fn bzimage_header_fields() {
        let b = bzimage("6.1.0-18-amd64 (debian-kernel@lists.debian.org) #1");
        assert_eq!(&b[0x202..0x206], b"HdrS");
        let off = usize::from(u16::from_le_bytes([b[0x20e], b[0x20f]])) + 0x200;
        assert!(b[off..].starts_with(b"6.1.0-18-amd64 "));
    }

    #[test]
    fn windows_mbr_message_offsets() {
        let b = windows_mbr_code();
        let first = usize::from(b[0x1b5]) + 0x100;
        assert!(b[first..].starts_with(b"Invalid partition table\0"));
        let last = usize::from(b[0x1b7]) + 0x100;
        assert!(b[last..].starts_with(b"Missing operating system\0"));
    }

    #[test]
    fn cpio_has_trailer_and_alignment() {
        let c = cpio_newc(&[("conf/initramfs.conf", b"MODULES=most\n")]);
        assert!(c.starts_with(b"070701"));
        assert_eq!(c.len() % 4, 0);
        assert!(c.windows(10).any(|w| w == b"TRAILER!!!"));
        assert!(c.windows(19).any(|w| w == b"conf/initramfs.conf"));
    }
}
