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
