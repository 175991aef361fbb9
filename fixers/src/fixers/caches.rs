//! `caches`: deletes device caches that name the source's disks and would mislead the target
//! (LVM's devices file rejects PVs whose device IDs changed; stale blkid caches).

use super::{FixContext, Fixer, Outcome, ParamSpec, Params};
use crate::{Change, Result};

pub(crate) struct Caches;

/// The cache files removed.
const CACHE_FILES: &[&str] = &[
    "/etc/lvm/devices/system.devices",
    "/etc/blkid/blkid.tab",
    "/etc/blkid.tab",
];

impl Fixer for Caches {
    fn name(&self) -> &'static str {
        "caches"
    }

    fn description(&self) -> &'static str {
        "delete the LVM devices file and blkid caches, which name the source's disks"
    }

    fn params(&self) -> &'static [ParamSpec] {
        &[]
    }

    fn plan(&self, ctx: &FixContext<'_>, _params: &Params) -> Result<Outcome> {
        let mut out = Outcome::default();
        for f in CACHE_FILES {
            // Not followed: a cache path that is a symlink is removed as a link only.
            let Ok(p) = guestfs::resolve(ctx.fs, f.as_bytes(), guestfs::Follow::NotFinal) else {
                continue;
            };
            let md = match ctx.fs.lstat(&p) {
                Ok(m) => m,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            let old = if md.file_type == guestfs::FileType::Regular {
                guestfs::FsReadExt::read_file(ctx.fs, &p.to_bytes(), super::MAX_FILE_BYTES as u64)?
            } else if md.file_type == guestfs::FileType::Symlink {
                Vec::new()
            } else {
                continue;
            };
            out.changes.push(Change::DeleteFile {
                path: p.to_string(),
                old,
            });
            out.notes.push(format!("delete {p}"));
        }
        Ok(out)
    }
}
