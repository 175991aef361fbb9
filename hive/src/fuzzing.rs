//! Fuzz harness bodies (house style S17): plain functions that must never panic on any input.
#![doc(hidden)]

use crate::hive::{Hive, HiveOptions};

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
