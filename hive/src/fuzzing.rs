//! Fuzz harness bodies (house style S17): plain functions that must never panic on any input.
#![doc(hidden)]

use crate::hive::{Hive, HiveOptions};
use crate::key_node::FileTime;
use crate::key_value::ValueType;

/// Parses `data` as a primary hive (dirty hives allowed), walks every key, reads every value
/// through every accessor, looks a path up and exports the whole tree.
pub fn fuzz_hive(data: &[u8]) {
    let Ok(hive) = HiveOptions::new().allow_dirty(true).open(data.to_vec()) else {
        return;
    };
    exercise(&hive);
}

/// Opens `primary` with `log` as its `.LOG1`, replaying it if the hive is dirty.
pub fn fuzz_hive_with_log(primary: &[u8], log: &[u8]) {
    if let Ok(hive) = Hive::open_with_logs(primary.to_vec(), Some(log.to_vec()), None) {
        exercise(&hive);
    }
}

fn exercise(hive: &Hive) {
    let _ = hive.is_dirty();
    let _ = hive.open_path(r"ControlSet001\Services\viostor");
    let Ok(root) = hive.root() else { return };
    let _ = root.walk(|_, key| {
        let _ = key.class_name();
        let _ = key.security_descriptor();
        let _ = key.last_written().unix_seconds();
        let _ = key.value("");
        // Errors in one key's values must not stop the walk: keep exercising the rest.
        if let Ok(values) = key.values() {
            for v in values {
                let _ = (
                    v.as_string(),
                    v.as_multi_string(),
                    v.as_dword(),
                    v.as_qword(),
                );
            }
        }
        Ok(())
    });
    let _ = root.export_reg(r"HKEY_LOCAL_MACHINE\FUZZ");
}

/// Opens `data` as a clean hive, applies a fixed set of edits (new keys and values of several
/// sizes, replacing, deleting values and a subtree, a .reg import), writes the hive, re-reads
/// and walks it, and diffs it against the original. Must never panic.
pub fn fuzz_write(data: &[u8]) {
    let Ok(before) = Hive::from_bytes(data.to_vec()) else {
        return;
    };
    let Ok(mut w) = Hive::from_bytes(data.to_vec()).and_then(Hive::into_mut) else {
        return;
    };
    w.set_timestamp(FileTime(0x01db_0000_0000_0000));
    let svc = r"ControlSet001\Services\viostor";
    let _ = w.create_key(r"ControlSet001\Services\viostor\Parameters");
    let _ = w.set_value(svc, "Start", ValueType::Dword, &[0; 4]);
    let _ = w.set_value(svc, "ImagePath", ValueType::ExpandSz, &[0x61; 40]);
    let _ = w.set_value(svc, "Big", ValueType::Binary, &[0x5a; 20_000]);
    let _ = w.set_value("Select", "Current", ValueType::Dword, &[2, 0, 0, 0]);
    let _ = w.set_value(r"Types", "big", ValueType::Binary, &[1; 100]);
    let _ = w.delete_value("Types", "multi");
    let _ = w.delete_value(svc, "Big");
    let _ = w.delete_key(r"ControlSet001\Enum");
    let _ = w.delete_key("Many");
    let _ = w.apply_reg(
        "Windows Registry Editor Version 5.00\n\n[-HKLM\\SYSTEM\\Types]\n\n\
         [HKLM\\SYSTEM\\Select]\n\"Default\"=dword:00000001\n@=-\n",
        r"HKEY_LOCAL_MACHINE\SYSTEM",
    );
    let out = w.into_bytes();
    if let Ok(after) = Hive::from_bytes(out) {
        exercise(&after);
        let _ = crate::diff_reg(&before, &after, r"HKEY_LOCAL_MACHINE\SYSTEM");
    }
}

/// Parses `data` (lossily decoded as UTF-8) as a .reg file and applies it to a small hive
/// under the prefix `HKEY_LOCAL_MACHINE\SYSTEM`, then re-reads the result. Must never panic.
pub fn fuzz_reg(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::parse_reg(&text);
    let Ok(mut w) = Hive::from_bytes(small_hive()).and_then(Hive::into_mut) else {
        return;
    };
    if w.apply_reg(&text, r"HKEY_LOCAL_MACHINE\SYSTEM").is_ok()
        && let Ok(h) = Hive::from_bytes(w.into_bytes())
    {
        exercise(&h);
    }
}

/// A minimal valid hive (base block, one bin with an "sk" cell and a root "nk"), built here
/// so the harness does not need the test kit.
pub(crate) fn small_hive() -> Vec<u8> {
    use crate::base_block::{BASE_BLOCK_SIZE, checksum};
    let mut f = vec![0u8; BASE_BLOCK_SIZE + 4096];
    let mut put = |at: usize, b: &[u8]| {
        if let Some(d) = f.get_mut(at..at + b.len()) {
            d.copy_from_slice(b);
        }
    };
    put(0, b"regf");
    for (at, v) in [
        (4, 1u32),
        (8, 1),
        (20, 1),
        (24, 5),
        (32, 1),
        (36, 0x50),
        (40, 4096),
    ] {
        put(at, &v.to_le_bytes());
    }
    let bin = BASE_BLOCK_SIZE;
    put(bin, b"hbin");
    put(bin + 8, &4096u32.to_le_bytes());
    // "sk" cell at 0x20: 48 bytes, self-linked, one reference, a 20-byte NULL-DACL descriptor.
    let sk = bin + 0x20;
    put(sk, &(-48i32).to_le_bytes());
    put(sk + 4, b"sk");
    for (at, v) in [(8, 0x20u32), (12, 0x20), (16, 1), (20, 20)] {
        put(sk + at, &v.to_le_bytes());
    }
    put(sk + 24, &[1, 0, 0x04, 0x80]);
    // Root "nk" cell at 0x50: 80 + 4 ("ROOT") bytes, rounded to 88.
    let nk = bin + 0x50;
    put(nk, &(-88i32).to_le_bytes());
    put(nk + 4, b"nk");
    put(nk + 6, &0x2cu16.to_le_bytes());
    for (at, v) in [
        (20, u32::MAX),
        (32, u32::MAX),
        (36, u32::MAX),
        (44, u32::MAX),
    ] {
        put(nk + at, &v.to_le_bytes());
    }
    put(nk + 48, &0x20u32.to_le_bytes());
    put(nk + 52, &u32::MAX.to_le_bytes());
    put(nk + 76, &4u16.to_le_bytes());
    put(nk + 80, b"ROOT");
    // The rest of the bin is one free cell.
    put(bin + 0xa8, &(4096i32 - 0xa8).to_le_bytes());
    let sum = checksum(&f);
    if let Some(d) = f.get_mut(508..512) {
        d.copy_from_slice(&sum.to_le_bytes());
    }
    f
}
