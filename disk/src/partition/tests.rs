#![allow(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::cast_possible_truncation
)]

use std::sync::Arc;

use super::gpt::types;
use super::testutil::{
    FileDisk, GptEntrySpec, GptSpec, Rng, SectorDisk, fix_header_crc, have_tool, mbr_entry, run,
};
use super::*;
use crate::Error;
use crate::mem::MemDisk;
use crate::testkit::CountingDisk;

fn four_part_spec(ss: usize, sectors: u64) -> GptSpec {
    let mut s = GptSpec::new(ss, sectors);
    let fu = s.first_usable();
    let specs = [
        (0, types::BIOS_BOOT, 0u64, ""),
        (1, types::EFI_SYSTEM, 1 << 2, "EFI system"),
        (
            2,
            types::MICROSOFT_RESERVED,
            0,
            "Microsoft reserved partition",
        ),
        (4, types::LINUX_LVM, 1 << 63, "lvm"),
    ];
    for (i, (index, t, attrs, name)) in specs.into_iter().enumerate() {
        let mut unique = [0u8; 16];
        unique[0] = 0xA0 + index as u8;
        unique[15] = 0x5A;
        s.entries.push(GptEntrySpec {
            index,
            type_guid: t.0,
            unique,
            first: fu + 10 * i as u64,
            last: fu + 10 * i as u64 + 9,
            attrs,
            name,
        });
    }
    s
}

fn table(img: Vec<u8>) -> PartitionTable {
    read_table(&MemDisk::from_vec(img)).unwrap()
}

fn codes(t: &PartitionTable) -> Vec<&'static str> {
    t.notes.iter().map(|n| n.code).collect()
}

#[test]
fn hand_built_gpt_reads_field_by_field() {
    let s = four_part_spec(512, 256);
    let t = table(s.build());
    assert_eq!(t.kind, TableKind::Gpt);
    assert_eq!(t.sector_size, 512);
    assert!(t.notes.is_empty(), "{:?}", t.notes);
    assert_eq!(
        t.disk_guid.unwrap().to_string(),
        "04030201-0605-0807-090a-0b0c0d0e0f10"
    );
    assert_eq!(t.mbr_disk_signature, Some(0));
    assert_eq!(t.boot_code, vec![0u8; 440]);
    let nums: Vec<_> = t.partitions.iter().map(|p| p.number).collect();
    assert_eq!(nums, [1, 2, 3, 5]);
    let p = t.get(1).unwrap();
    assert!(p.is_bios_boot() && !p.is_esp() && !p.is_extended());
    assert_eq!((p.start, p.len), (34 * 512, 10 * 512));
    assert_eq!(
        p.part_uuid.as_deref(),
        Some("000000a0-0000-0000-0000-00000000005a")
    );
    assert_eq!(p.name, None);
    let p = t.get(2).unwrap();
    assert!(p.is_esp() && p.bootable);
    assert_eq!(p.name.as_deref(), Some("EFI system"));
    assert_eq!(p.attributes, 4);
    assert!(t.get(3).unwrap().is_microsoft_reserved());
    let p = t.get(5).unwrap();
    assert!(p.is_linux_lvm() && !p.bootable);
    assert_eq!(p.attributes, 1 << 63);
    assert_eq!(
        p.kind,
        PartitionType::Gpt {
            type_guid: types::LINUX_LVM
        }
    );
    assert_eq!((p.start, p.len), (64 * 512, 10 * 512));
}

#[test]
fn partition_view_reads_the_partition() {
    let s = four_part_spec(512, 256);
    let mut img = s.build();
    img[64 * 512..64 * 512 + 4].copy_from_slice(b"LVM!");
    let dev: Arc<dyn BlockRead> = Arc::new(MemDisk::from_vec(img));
    let t = read_table(&*dev).unwrap();
    let v = t.get(5).unwrap().view(dev.clone()).unwrap();
    assert_eq!(v.size(), 5120);
    let mut b = [0u8; 4];
    v.read_exact_at(0, &mut b).unwrap();
    assert_eq!(&b, b"LVM!");
    let mut p = t.get(5).unwrap().clone();
    p.len = 1 << 40;
    assert!(matches!(p.view(dev), Err(Error::OutOfBounds { .. })));
}

#[test]
fn damaged_primary_header_uses_backup() {
    let s = four_part_spec(512, 256);
    let good = table(s.build());
    let mut img = s.build();
    img[512 + 40] ^= 0xFF; // first_usable_lba, so the header CRC fails
    let t = table(img);
    assert_eq!(t.partitions, good.partitions);
    assert_eq!(codes(&t), [notes::GPT_BACKUP_USED]);
    assert!(
        t.notes[0]
            .message
            .starts_with("primary gpt unusable (corrupt gpt header at 0x200: header_crc32 0x"),
        "{}",
        t.notes[0].message
    );
    assert!(
        t.notes[0]
            .message
            .ends_with("used the backup header at lba 255 (byte 0x1fe00)")
    );
}

#[test]
fn damaged_primary_array_uses_backup_at_alternate_lba() {
    let s = four_part_spec(512, 256);
    let good = table(s.build());
    let mut img = s.build();
    img[2 * 512 + 1] ^= 1;
    let t = table(img);
    assert_eq!(t.partitions, good.partitions);
    assert_eq!(codes(&t), [notes::GPT_BACKUP_USED]);
    assert!(
        t.notes[0]
            .message
            .contains("corrupt gpt entry array at 0x400: partition_entry_array_crc32"),
        "{}",
        t.notes[0].message
    );
}

#[test]
fn missing_primary_with_protective_mbr_uses_backup() {
    let s = four_part_spec(512, 256);
    let mut img = s.build();
    img[512..1024].fill(0);
    let t = table(img);
    assert_eq!(t.kind, TableKind::Gpt);
    assert_eq!(t.partitions.len(), 4);
    assert_eq!(codes(&t), [notes::GPT_BACKUP_USED]);
}

#[test]
fn both_headers_damaged_is_the_primary_error() {
    let s = four_part_spec(512, 256);
    let mut img = s.build();
    img[512 + 24] = 7; // my_lba
    img[255 * 512 + 60] ^= 1;
    let e = read_table(&MemDisk::from_vec(img)).unwrap_err();
    let c = e.as_corrupt().unwrap();
    assert_eq!((c.structure(), c.offset()), ("gpt header", 512));
    assert!(c.detail().starts_with("header_crc32"), "{e}");
}

#[test]
fn damaged_backup_and_grown_disk_are_noted() {
    let s = four_part_spec(512, 256);
    let mut img = s.build();
    img[255 * 512 + 60] ^= 1;
    let t = table(img);
    assert_eq!(t.partitions.len(), 4);
    assert_eq!(codes(&t), [notes::GPT_BACKUP_DAMAGED]);
    assert!(
        t.notes[0]
            .message
            .starts_with("backup header at lba 255 is unusable: corrupt gpt header at 0x1fe00")
    );

    let mut img = s.build();
    img.resize(512 * 512, 0);
    let t = table(img);
    assert_eq!(t.partitions.len(), 4);
    assert_eq!(codes(&t), [notes::GPT_BACKUP_NOT_AT_END]);
    assert_eq!(
        t.notes[0].message,
        "alternate_lba 255 is not the last lba 511 (the disk may have been resized)"
    );
}

#[test]
fn hybrid_and_missing_protective_mbr() {
    let s = four_part_spec(512, 256);
    let mut img = s.build();
    img[462..478].copy_from_slice(&mbr_entry(0x80, 0x0C, 44, 10));
    let t = table(img);
    assert_eq!(t.kind, TableKind::Gpt);
    assert_eq!(codes(&t), [notes::GPT_HYBRID_MBR]);
    assert_eq!(
        t.notes[0].message,
        "the mbr has 1 partition(s) besides the 0xee entry"
    );

    let mut img = s.build();
    img[510] = 0;
    let t = table(img);
    assert_eq!(t.kind, TableKind::Gpt);
    assert_eq!(t.mbr_disk_signature, None);
    assert_eq!(codes(&t), [notes::GPT_NO_PROTECTIVE_MBR]);

    // A valid MBR without an 0xEE entry wins over a GPT header, as in Linux.
    let mut img = s.build();
    img[446..462].copy_from_slice(&mbr_entry(0, 0x83, 34, 100));
    let t = table(img);
    assert_eq!(t.kind, TableKind::Mbr);
    assert_eq!(codes(&t), [notes::GPT_IGNORED]);
    assert_eq!(t.partitions.len(), 1);
}

#[test]
fn invalid_entry_is_skipped_with_note() {
    let mut s = four_part_spec(512, 256);
    s.entries[3].last = 250; // past last_usable_lba 222
    let t = table(s.build());
    assert_eq!(t.partitions.len(), 3);
    assert_eq!(codes(&t), [notes::GPT_ENTRY_INVALID]);
    assert_eq!(
        t.notes[0].message,
        "entry 5 spans lba 64..=250, outside the usable range 34..=222; skipped"
    );
    let mut s = four_part_spec(512, 256);
    s.entries[0].first = 40;
    s.entries[0].last = 39;
    let t = table(s.build());
    assert_eq!(t.partitions.len(), 3);
    assert_eq!(codes(&t), [notes::GPT_ENTRY_INVALID]);
}

#[test]
fn gpt_with_4k_sectors() {
    let s = four_part_spec(4096, 64);
    let img = s.build();
    // 128 entries of 128 bytes take 4 sectors of 4 KiB.
    assert_eq!(s.first_usable(), 6);
    let t = read_table(&SectorDisk(MemDisk::from_vec(img.clone()), 4096)).unwrap();
    assert_eq!(t.kind, TableKind::Gpt);
    assert_eq!(t.sector_size, 4096);
    assert!(t.notes.is_empty(), "{:?}", t.notes);
    let p = t.get(2).unwrap();
    assert_eq!((p.start, p.len), (16 * 4096, 10 * 4096));

    // The same image on a device that says 512: found at 4 KiB and noted.
    let t2 = read_table(&MemDisk::from_vec(img.clone())).unwrap();
    assert_eq!(t2.sector_size, 4096);
    assert_eq!(t2.partitions, t.partitions);
    assert_eq!(codes(&t2), [notes::SECTOR_SIZE_4096]);
    assert_eq!(
        t2.notes[0].message,
        "gpt header found at lba 1 of 4096-byte sectors; the device reports 512"
    );

    // And the 4 KiB backup works too.
    let mut img = img;
    img[4096 + 50] ^= 1;
    let t3 = read_table(&SectorDisk(MemDisk::from_vec(img), 4096)).unwrap();
    assert_eq!(t3.partitions, t.partitions);
    assert_eq!(codes(&t3), [notes::GPT_BACKUP_USED]);
    assert!(t3.notes[0].message.contains("lba 63 (byte 0x3f000)"));
}

#[test]
fn gpt_with_512_sectors_on_a_4k_device_and_bad_sector_sizes() {
    let img = four_part_spec(512, 256).build();
    let want = table(img.clone()).partitions;
    let t = read_table(&SectorDisk(MemDisk::from_vec(img.clone()), 4096)).unwrap();
    assert_eq!(t.sector_size, 512);
    assert_eq!(t.partitions, want);
    assert_eq!(codes(&t), [notes::SECTOR_SIZE_512]);
    for bad in [0, 1, 520, 1 << 17] {
        let t = read_table(&SectorDisk(MemDisk::from_vec(img.clone()), bad)).unwrap();
        assert_eq!(t.sector_size, 512);
        assert_eq!(t.partitions, want);
        assert_eq!(codes(&t), [notes::SECTOR_SIZE_INVALID], "{bad}");
        assert_eq!(
            t.notes[0].message,
            format!("the device reports {bad}-byte sectors; using 512")
        );
    }
}

#[test]
fn reads_are_bounded() {
    let s = four_part_spec(512, 256);
    let d = CountingDisk::new(MemDisk::from_vec(s.build()));
    read_table(&d).unwrap();
    // sector 0, two signature probes, primary header + array, backup header.
    assert_eq!(d.bytes(), 512 + 8 + 512 + 16384 + 512);
}

// ---------------------------------------------------------------------------------------------
// Differential tests against the reference tools.

fn sparse_file(dir: &tempfile::TempDir, name: &str, size: u64) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::File::create(&p).unwrap().set_len(size).unwrap();
    p
}

fn sfdisk_json(path: &std::path::Path) -> serde_json::Value {
    let out = run("sfdisk", &["--json", path.to_str().unwrap()]);
    serde_json::from_str(&out).unwrap()
}

fn node_number(node: &serde_json::Value) -> u32 {
    let s = node.as_str().unwrap();
    let digits: String = s
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    digits.parse().unwrap()
}

#[test]
fn gpt_matches_sgdisk_and_sfdisk() {
    if !have_tool("sgdisk") || !have_tool("sfdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = sparse_file(&dir, "gpt.img", 32 << 20);
    let p = path.to_str().unwrap();
    run(
        "sgdisk",
        &[
            "-n",
            "1:2048:+1M",
            "-t",
            "1:ef02",
            "-c",
            "1:bios",
            "-n",
            "2:0:+8M",
            "-t",
            "2:ef00",
            "-c",
            "2:EFI System",
            "-A",
            "2:set:2",
            "-n",
            "4:0:+4M",
            "-t",
            "4:8e00",
            "-n",
            "3:0:0",
            "-t",
            "3:8300",
            "-c",
            "3:root ü",
            p,
        ],
    );
    let t = read_table(&FileDisk::open(&path)).unwrap();
    assert_eq!(t.kind, TableKind::Gpt);
    assert!(t.notes.is_empty(), "{:?}", t.notes);
    let j = sfdisk_json(&path);
    let pt = &j["partitiontable"];
    assert_eq!(pt["label"], "gpt");
    assert_eq!(
        t.disk_guid.unwrap().to_string().to_uppercase(),
        pt["id"].as_str().unwrap()
    );
    let parts = pt["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 4);
    assert_eq!(t.partitions.len(), 4);
    for jp in parts {
        let n = node_number(&jp["node"]);
        let p = t.get(n).unwrap();
        assert_eq!(p.start, jp["start"].as_u64().unwrap() * 512, "part {n}");
        assert_eq!(p.len, jp["size"].as_u64().unwrap() * 512, "part {n}");
        let PartitionType::Gpt { type_guid } = p.kind else {
            panic!("not gpt")
        };
        assert_eq!(
            type_guid.to_string().to_uppercase(),
            jp["type"].as_str().unwrap()
        );
        assert_eq!(
            p.part_uuid.as_ref().unwrap().to_uppercase(),
            jp["uuid"].as_str().unwrap()
        );
        assert_eq!(p.name.as_deref(), jp["name"].as_str(), "part {n}");
    }
    assert!(t.get(1).unwrap().is_bios_boot());
    assert!(t.get(2).unwrap().is_esp() && t.get(2).unwrap().bootable);
    assert!(t.get(4).unwrap().is_linux_lvm());
    assert_eq!(t.get(3).unwrap().name.as_deref(), Some("root ü"));

    // Now damage the primary header on disk: the backup written by sgdisk is used.
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0xAB; 8], 512 + 40).unwrap();
    let t2 = read_table(&FileDisk::open(&path)).unwrap();
    assert_eq!(t2.partitions, t.partitions);
    assert_eq!(codes(&t2), [notes::GPT_BACKUP_USED]);
}

#[test]
fn mbr_with_logicals_matches_sfdisk() {
    if !have_tool("sfdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = sparse_file(&dir, "mbr.img", 64 << 20);
    let script = "label: dos\nlabel-id: 0x1a2b3c4d\n\
        start=2048, size=8192, type=83, bootable\n\
        start=10240, size=100000, type=5\n\
        start=112640, size=4096, type=ef\n\
        start=118784, size=2048, type=c\n\
        size=8192, type=82\n\
        size=16384, type=8e\n\
        size=4096, type=7\n";
    let mut child = std::process::Command::new("sfdisk")
        .arg(&path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), script.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());

    let t = read_table(&FileDisk::open(&path)).unwrap();
    assert_eq!(t.kind, TableKind::Mbr);
    assert!(t.notes.is_empty(), "{:?}", t.notes);
    assert_eq!(t.mbr_disk_signature, Some(0x1a2b_3c4d));
    let j = sfdisk_json(&path);
    let pt = &j["partitiontable"];
    assert_eq!(pt["label"], "dos");
    assert_eq!(pt["id"], "0x1a2b3c4d");
    let parts = pt["partitions"].as_array().unwrap();
    assert_eq!(t.partitions.len(), parts.len());
    let nums: Vec<_> = t.partitions.iter().map(|p| p.number).collect();
    assert_eq!(nums, [1, 2, 3, 4, 5, 6, 7]);
    for jp in parts {
        let n = node_number(&jp["node"]);
        let p = t.get(n).unwrap();
        assert_eq!(p.start, jp["start"].as_u64().unwrap() * 512, "part {n}");
        assert_eq!(p.len, jp["size"].as_u64().unwrap() * 512, "part {n}");
        let PartitionType::Mbr(ty) = p.kind else {
            panic!("not mbr")
        };
        assert_eq!(format!("{ty:x}"), jp["type"].as_str().unwrap(), "part {n}");
        assert_eq!(p.bootable, jp["bootable"].as_bool().unwrap_or(false));
        assert_eq!(p.part_uuid, Some(format!("1a2b3c4d-{n:02x}")));
    }
    assert!(t.get(2).unwrap().is_extended());
    assert!(t.get(6).unwrap().is_linux_lvm());
    assert!(t.get(3).unwrap().is_esp());
}

// ---------------------------------------------------------------------------------------------
// Mutation tests (house style S17).

/// Most bytes `read_table` may read: sector 0, two probes, three header+array attempts
/// (primary and two backup candidates) and one backup check, or a full EBR chain.
const READ_CAP: u64 = 4096
    + 16
    + 3 * (4096 + super::gpt::MAX_ENTRY_ARRAY_BYTES)
    + 4096
    + 4 * (super::mbr::MAX_LOGICAL_PARTITIONS as u64 + 1) * 512;

fn mbr_seed() -> Vec<u8> {
    let mut img = vec![0u8; 128 * 512];
    let put = |img: &mut Vec<u8>, lba: usize, es: &[[u8; 16]]| {
        for (i, e) in es.iter().enumerate() {
            img[lba * 512 + 446 + 16 * i..lba * 512 + 462 + 16 * i].copy_from_slice(e);
        }
        img[lba * 512 + 510] = 0x55;
        img[lba * 512 + 511] = 0xAA;
    };
    put(
        &mut img,
        0,
        &[mbr_entry(0x80, 0x83, 1, 20), mbr_entry(0, 0x0F, 30, 90)],
    );
    put(
        &mut img,
        30,
        &[mbr_entry(0, 0x83, 1, 9), mbr_entry(0, 0x05, 10, 20)],
    );
    put(
        &mut img,
        40,
        &[mbr_entry(0, 0x8e, 1, 9), mbr_entry(0, 0x05, 20, 20)],
    );
    put(&mut img, 50, &[mbr_entry(0, 0x07, 1, 9)]);
    img
}

fn mutate(seed: &[u8], rng: &mut Rng, hot: usize, fix_gpt: bool) -> Vec<u8> {
    let mut m = seed.to_vec();
    match rng.below(8) {
        0 => m.truncate(rng.below(seed.len())),
        _ => {
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(hot.min(m.len()));
                m[at] ^= 1 << rng.below(8);
                if rng.below(4) == 0 {
                    m[at] = [0, 0xFF, 0x80, 0x05, 0xEE][rng.below(5)];
                }
            }
        }
    }
    if fix_gpt && m.len() >= 1024 && rng.below(2) == 0 {
        // Make the header checksum right again so the field checks behind it are reached.
        let ss = 512;
        if let Ok(arr) = m.get(2 * ss..34 * ss).ok_or(()) {
            let crc = crc32fast::hash(arr);
            m[512 + 88..512 + 92].copy_from_slice(&crc.to_le_bytes());
        }
        fix_header_crc(&mut m[512..1024]);
    }
    m
}

#[test]
fn mutations_never_panic_and_reads_stay_bounded() {
    let gpt = four_part_spec(512, 256).build();
    let gpt4k = four_part_spec(4096, 64).build();
    let mbr = mbr_seed();
    for seed in [&gpt, &gpt4k, &mbr] {
        fuzzing::fuzz_read_table(seed);
        assert!(read_table(&MemDisk::from_vec(seed.clone())).is_ok());
    }
    let mut rng = Rng(0x5EED_0001);
    let mut max_bytes = 0;
    for i in 0..1000 {
        let (seed, hot, fix) = match i % 3 {
            0 => (&gpt, 34 * 512, true),
            1 => (&gpt4k, 3 * 4096, false),
            _ => (&mbr, 51 * 512, false),
        };
        let m = mutate(seed, &mut rng, hot, fix);
        fuzzing::fuzz_read_table(&m);
        let d = CountingDisk::new(MemDisk::from_vec(m));
        let _ = read_table(&d);
        assert!(
            d.bytes() <= READ_CAP,
            "mutation {i} read {} bytes",
            d.bytes()
        );
        assert!(
            d.reads() <= 4 * 140,
            "mutation {i} made {} reads",
            d.reads()
        );
        max_bytes = max_bytes.max(d.bytes());
    }
    assert!(max_bytes > 0);
}
