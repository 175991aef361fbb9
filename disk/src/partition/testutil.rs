//! Test helpers: hand-built MBR/GPT images and a file-backed device for tool-made images.

#![allow(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::cast_possible_truncation
)]

use std::os::unix::fs::FileExt;

use crate::block::BlockRead;
use crate::{Error, Result};

/// A 16-byte MBR record.
pub(crate) fn mbr_entry(status: u8, os_type: u8, start: u32, size: u32) -> [u8; 16] {
    let mut e = [0u8; 16];
    e[0] = status;
    e[4] = os_type;
    e[8..12].copy_from_slice(&start.to_le_bytes());
    e[12..16].copy_from_slice(&size.to_le_bytes());
    e
}

/// One entry for [`GptSpec`].
#[derive(Clone)]
pub(crate) struct GptEntrySpec {
    pub(crate) index: usize,
    pub(crate) type_guid: [u8; 16],
    pub(crate) unique: [u8; 16],
    pub(crate) first: u64,
    pub(crate) last: u64,
    pub(crate) attrs: u64,
    pub(crate) name: &'static str,
}

/// A GPT to build by hand.
pub(crate) struct GptSpec {
    pub(crate) ss: usize,
    pub(crate) sectors: u64,
    pub(crate) entries: Vec<GptEntrySpec>,
    pub(crate) num_entries: u32,
    pub(crate) entry_size: u32,
    pub(crate) disk_guid: [u8; 16],
}

impl GptSpec {
    pub(crate) fn new(ss: usize, sectors: u64) -> Self {
        Self {
            ss,
            sectors,
            entries: Vec::new(),
            num_entries: 128,
            entry_size: 128,
            disk_guid: *b"\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10",
        }
    }

    fn array_sectors(&self) -> u64 {
        (u64::from(self.num_entries) * u64::from(self.entry_size)).div_ceil(self.ss as u64)
    }

    pub(crate) fn first_usable(&self) -> u64 {
        2 + self.array_sectors()
    }
    pub(crate) fn last_usable(&self) -> u64 {
        self.sectors - 2 - self.array_sectors()
    }

    fn entry_array(&self) -> Vec<u8> {
        let es = self.entry_size as usize;
        let mut a = vec![0u8; self.num_entries as usize * es];
        for e in &self.entries {
            let b = &mut a[e.index * es..e.index * es + 128];
            b[0..16].copy_from_slice(&e.type_guid);
            b[16..32].copy_from_slice(&e.unique);
            b[32..40].copy_from_slice(&e.first.to_le_bytes());
            b[40..48].copy_from_slice(&e.last.to_le_bytes());
            b[48..56].copy_from_slice(&e.attrs.to_le_bytes());
            for (i, u) in e.name.encode_utf16().enumerate() {
                b[56 + 2 * i..58 + 2 * i].copy_from_slice(&u.to_le_bytes());
            }
        }
        a
    }

    /// A header sector for `my_lba`/`alt_lba` with its entries at `entry_lba`.
    pub(crate) fn header(&self, my_lba: u64, alt_lba: u64, entry_lba: u64) -> Vec<u8> {
        let mut h = vec![0u8; self.ss];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&my_lba.to_le_bytes());
        h[32..40].copy_from_slice(&alt_lba.to_le_bytes());
        h[40..48].copy_from_slice(&self.first_usable().to_le_bytes());
        h[48..56].copy_from_slice(&self.last_usable().to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid);
        h[72..80].copy_from_slice(&entry_lba.to_le_bytes());
        h[80..84].copy_from_slice(&self.num_entries.to_le_bytes());
        h[84..88].copy_from_slice(&self.entry_size.to_le_bytes());
        let crc = crc32fast::hash(&self.entry_array());
        h[88..92].copy_from_slice(&crc.to_le_bytes());
        fix_header_crc(&mut h);
        h
    }

    /// The whole disk: protective MBR, primary header and array, backup array and header.
    pub(crate) fn build(&self) -> Vec<u8> {
        let ss = self.ss;
        let mut img = vec![0u8; self.sectors as usize * ss];
        let pmbr = mbr_entry(
            0,
            0xEE,
            1,
            u32::try_from(self.sectors - 1).unwrap_or(u32::MAX),
        );
        img[446..462].copy_from_slice(&pmbr);
        img[510] = 0x55;
        img[511] = 0xAA;
        let last = self.sectors - 1;
        let arr = self.entry_array();
        let backup_arr_lba = last - self.array_sectors();
        img[ss..2 * ss].copy_from_slice(&self.header(1, last, 2));
        img[2 * ss..2 * ss + arr.len()].copy_from_slice(&arr);
        let b = backup_arr_lba as usize * ss;
        img[b..b + arr.len()].copy_from_slice(&arr);
        img[last as usize * ss..].copy_from_slice(&self.header(last, 1, backup_arr_lba));
        img
    }
}

/// Recomputes the CRC of a header sector (header_size from the sector itself, capped at 512).
pub(crate) fn fix_header_crc(h: &mut [u8]) {
    let size = (u32::from_le_bytes(h[12..16].try_into().unwrap()) as usize).clamp(16, h.len());
    h[16..20].fill(0);
    let crc = crc32fast::hash(&h[..size]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
}

/// A read-only file as a device, for images made by external tools.
pub(crate) struct FileDisk {
    file: std::fs::File,
    size: u64,
}

impl FileDisk {
    pub(crate) fn open(path: &std::path::Path) -> Self {
        let file = std::fs::File::open(path).unwrap();
        let size = file.metadata().unwrap().len();
        Self { file, size }
    }
}

impl BlockRead for FileDisk {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        crate::block::check_range(self.size, offset, buf.len() as u64)?;
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| Error::io(offset, e))
    }
}

/// A device that reports a chosen logical sector size.
pub(crate) struct SectorDisk<D>(pub(crate) D, pub(crate) u32);

impl<D: BlockRead> BlockRead for SectorDisk<D> {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.0.read_exact_at(offset, buf)
    }
    fn logical_sector_size(&self) -> u32 {
        self.1
    }
}

/// Whether an external tool can be run; prints the house-style skip line if not.
pub(crate) fn have_tool(name: &str) -> bool {
    let ok = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        println!("skipping: {name} not found");
    }
    ok
}

/// Runs a command, panicking with its stderr if it fails; returns stdout.
pub(crate) fn run(cmd: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A tiny fixed-seed PRNG (xorshift64*), so mutations are the same on every run.
pub(crate) struct Rng(pub(crate) u64);
impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}
