//! The random operations on the NTFS system volume of the Windows builder images (issue 3), not
//! only on fresh `mkntfs` volumes: they run in a new subtree of the real volume, through the
//! partition table, interleaved with edits of files the builder made (moved into the subtree,
//! overwritten and restored, renamed, replaced and restored). After unmount the extracted
//! partition must pass `ntfsfix -n`, and `ntfsls`/`ntfscat` and our read-only reader must see
//! exactly the model.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use disk::open::Access;
use disk::partition::{Partition, read_table};
use disk::raw::RawFile;
use disk::{BlockRead, BlockWrite, Slice};

use super::{
    Model, Rng, check_fs, check_image, gp, have_tools, join, name_of, ntfscat, ntfsls, random_ops,
};
use crate::ntfs::NtfsFs;
use crate::write::{FsWrite, NewFileAttrs, WriteOptions};
use crate::{FileType, FsKind, FsRead, FsReadExt};

/// The new directory the random operations work in.
const SUBTREE: &str = "/rehost-random";
/// Random operations per chunk; an edit of a builder file comes before each chunk.
const CHUNK: usize = 60;
/// Chunks per image: 240 random operations in all.
const CHUNKS: usize = 4;

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// A sparse copy of builder image `name` in `dir`, or `None` (printed) without root.
fn image_copy(name: &str, dir: &Path) -> Option<PathBuf> {
    if images::needs_root(name).unwrap_or(true) && !is_root() {
        println!("skipping: building {name} needs root");
        return None;
    }
    let built = images::build(name).unwrap_or_else(|e| panic!("build {name}: {e}"));
    let copy = dir.join(format!("{name}.raw"));
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(&built)
        .arg(&copy)
        .status()
        .expect("run cp");
    assert!(st.success(), "cp {}", built.display());
    Some(copy)
}

/// The Windows system volume of `disk`: the NTFS partition holding `/Windows/System32`.
fn system_volume(name: &str, disk: &Arc<dyn BlockWrite>) -> (Partition, Arc<dyn BlockWrite>) {
    let table = read_table(&**disk).expect("partition table");
    table
        .partitions
        .into_iter()
        .find_map(|p| {
            let view: Arc<dyn BlockWrite> =
                Arc::new(Slice::new(disk.clone(), p.start, p.len).expect("partition view"));
            let read: Arc<dyn BlockRead> = view.clone();
            let ro = NtfsFs::open(read).ok()?;
            ro.exists(b"/Windows/System32")
                .unwrap_or(false)
                .then_some((p, view))
        })
        .unwrap_or_else(|| panic!("{name}: no windows system volume"))
}

/// Copies partition `p` of `img` into its own sparse file, for the ntfs-3g tools.
fn extract(img: &Path, p: &Partition, out: &Path) {
    use std::io::{Seek, SeekFrom, Write};
    let src = RawFile::open(img, Access::ReadOnly).expect("open");
    let mut f = std::fs::File::create(out).expect("create");
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < p.len {
        let n = usize::try_from((p.len - off).min(1 << 20)).expect("chunk fits");
        src.read_exact_at(p.start + off, &mut buf[..n])
            .expect("read");
        if buf[..n].iter().all(|&b| b == 0) {
            f.seek(SeekFrom::Current(i64::try_from(n).expect("chunk fits")))
                .expect("seek");
        } else {
            f.write_all(&buf[..n]).expect("write");
        }
        off += n as u64;
    }
    f.set_len(p.len).expect("size");
}

/// `dir` as `ntfsls -F` prints it: names, directories with a trailing `/`, no `$` metadata.
fn listing(fs: &dyn FsRead, dir: &str) -> BTreeSet<String> {
    fs.read_dir(&gp(dir))
        .unwrap_or_else(|e| panic!("read_dir {dir}: {e}"))
        .into_iter()
        .filter(|e| !e.name.starts_with(b"$"))
        .map(|e| {
            let name = String::from_utf8(e.name).expect("utf-8 name");
            if e.file_type == FileType::Directory {
                format!("{name}/")
            } else {
                name
            }
        })
        .collect()
}

fn parent_of(p: &str) -> &str {
    match p.rsplit_once('/') {
        Some(("", _)) | None => "/",
        Some((dir, _)) => dir,
    }
}

/// The builder's files outside the subtree, as they must end up.
#[derive(Default)]
struct Outside {
    /// Path → contents, or `None` once moved away.
    files: BTreeMap<String, Option<Vec<u8>>>,
    /// The expected listing of every directory an edit touched.
    listings: BTreeMap<String, BTreeSet<String>>,
}

impl Outside {
    /// Records the listing of `dir` before the first edit in it.
    fn touch(&mut self, fs: &dyn FsRead, dir: &str) -> &mut BTreeSet<String> {
        self.listings
            .entry(dir.to_owned())
            .or_insert_with(|| listing(fs, dir))
    }

    /// Renames builder file `src` to `dst` (outside the subtree unless `model` takes it).
    fn rename(&mut self, fs: &dyn FsWrite, src: &str, dst: &str, model: Option<&mut Model>) {
        let data = fs.read_file(src.as_bytes(), 1 << 20).expect("read");
        self.touch(fs, parent_of(src)).remove(name_of(src));
        fs.rename(&gp(src), &gp(dst))
            .unwrap_or_else(|e| panic!("rename {src} -> {dst}: {e}"));
        self.files.insert(src.to_owned(), None);
        match model {
            Some(m) => {
                m.insert(dst.to_owned(), Some(data));
            }
            None => {
                self.touch(fs, parent_of(dst))
                    .insert(name_of(dst).to_owned());
                self.files.insert(dst.to_owned(), Some(data));
            }
        }
    }

    /// Checks files and listings through `fs` (the writer, or our reader after unmount).
    fn check(&self, fs: &dyn FsRead) {
        for (p, v) in &self.files {
            match v {
                Some(data) => assert!(
                    fs.read_file(p.as_bytes(), 1 << 20).expect("read") == *data,
                    "{p}: contents differ"
                ),
                None => assert!(
                    fs.lstat(&gp(p)).is_err_and(|e| e.is_not_found()),
                    "{p} is gone"
                ),
            }
        }
        for (d, want) in &self.listings {
            assert_eq!(listing(fs, d), *want, "listing of {d}");
        }
    }

    /// The same through `ntfsls` and `ntfscat` on the unmounted partition.
    fn check_tools(&self, img: &Path) {
        for (p, v) in &self.files {
            if let Some(data) = v {
                assert!(ntfscat(img, p) == *data, "ntfscat {p}: contents differ");
            }
        }
        for (d, want) in &self.listings {
            assert_eq!(ntfsls(img, d), *want, "ntfsls of {d}");
        }
    }
}

/// The edit of builder files made before chunk `chunk` of random operations.
fn edit_builder_files(
    fs: &dyn FsWrite,
    chunk: usize,
    outside: &mut Outside,
    model: &mut Model,
    rng: &mut Rng,
) {
    match chunk {
        // Moved into the subtree: from now on the random operations may change it.
        0 => outside.rename(
            fs,
            "/Windows/System32/drivers/disk.sys",
            &join(SUBTREE, "disk.sys"),
            Some(model),
        ),
        // Overwritten in place, then restored.
        1 => {
            let p = "/Windows/System32/drivers/pvscsi.sys";
            let orig = fs.read_file(p.as_bytes(), 1 << 20).expect("read");
            assert!(orig.len() > 500, "{p}: {} bytes", orig.len());
            let noise = rng.bytes(200);
            fs.write_at(&gp(p), 300, &noise).expect("overwrite");
            let mut want = orig.clone();
            want[300..500].copy_from_slice(&noise);
            assert!(fs.read_file(p.as_bytes(), 1 << 20).expect("read") == want);
            fs.write_at(&gp(p), 300, &orig[300..500]).expect("restore");
            outside.files.insert(p.to_owned(), Some(orig));
        }
        // Renamed to another of the builder's directories.
        2 => outside.rename(
            fs,
            "/Program Files/VMware/VMware Tools/vmtoolsd.exe",
            "/Program Files/VMware/vmtoolsd-rehost.exe",
            None,
        ),
        // Replaced by 200 KiB (no longer resident in its MFT record), then restored.
        _ => {
            let p = "/Windows/System32/ntoskrnl.exe";
            let orig = fs.read_file(p.as_bytes(), 1 << 20).expect("read");
            let big = rng.bytes(200 << 10);
            fs.write_file(&gp(p), &big, &NewFileAttrs::file())
                .expect("replace");
            assert!(fs.read_file(p.as_bytes(), 1 << 20).expect("read") == big);
            fs.write_file(&gp(p), &orig, &NewFileAttrs::file())
                .expect("restore");
            outside.files.insert(p.to_owned(), Some(orig));
        }
    }
}

#[test]
fn random_operations_on_windows_builder_system_volumes() {
    if !have_tools() {
        return;
    }
    for (name, seed) in [
        ("win2019-bios", 0x7769_6e32_3031_3962),
        ("win2016-uefi", 0x7769_6e32_3031_3675),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let Some(img) = image_copy(name, dir.path()) else {
            return;
        };
        let disk: Arc<dyn BlockWrite> =
            Arc::new(RawFile::open(&img, Access::ReadWrite).expect("open"));
        let (part, view) = system_volume(name, &disk);
        let fs = crate::open_rw(view, WriteOptions::new()).expect("open_rw");
        assert_eq!(fs.info().kind, FsKind::Ntfs);

        let mut outside = Outside::default();
        outside
            .touch(&*fs, "/")
            .insert(format!("{}/", name_of(SUBTREE)));
        fs.mkdir(&gp(SUBTREE), &NewFileAttrs::dir())
            .expect("mkdir subtree");
        let mut model = Model::new();
        let mut rng = Rng(seed);
        // A starting tree, so the operations have files to change from the first step.
        for (i, d) in ["", "/d0", "/d1"].into_iter().enumerate() {
            let d = format!("{SUBTREE}{d}");
            if d != SUBTREE {
                fs.mkdir(&gp(&d), &NewFileAttrs::dir()).expect("mkdir");
                model.insert(d.clone(), None);
            }
            for f in 0..4 {
                let p = join(&d, &format!("f{}", 3 * f + i));
                let len = rng.idx(40_000);
                let data = rng.bytes(len);
                fs.write_file(&gp(&p), &data, &NewFileAttrs::file())
                    .expect("write");
                model.insert(p, Some(data));
            }
        }
        let mut counts = [0usize; super::OPS];
        let file_count = |m: &Model| m.values().filter(|v| v.is_some()).count();
        let mut peak = 0;
        for chunk in 0..CHUNKS {
            edit_builder_files(&*fs, chunk, &mut outside, &mut model, &mut rng);
            let done = random_ops(&*fs, SUBTREE, &mut model, CHUNK, &mut rng);
            for (c, d) in counts.iter_mut().zip(done) {
                *c += d;
            }
            peak = peak.max(file_count(&model));
        }
        assert!(
            counts.iter().all(|&c| c >= 5),
            "{name}: every operation ran: {counts:?}"
        );
        let files = file_count(&model);
        assert!(
            files >= 1 && peak >= 5,
            "{name}: {files} files left, at most {peak} after a chunk"
        );
        check_fs(&*fs, SUBTREE, &model);
        outside.check(&*fs);
        fs.flush().expect("flush");
        drop(fs);
        drop(disk);

        let vol = dir.path().join("part.img");
        extract(&img, &part, &vol);
        check_image(&vol, SUBTREE, &model, usize::MAX);
        outside.check_tools(&vol);
        let ro = NtfsFs::open(Arc::new(
            RawFile::open(&vol, Access::ReadOnly).expect("open"),
        ))
        .expect("reader");
        check_fs(&ro, SUBTREE, &model);
        outside.check(&ro);
        println!(
            "{name}: {} random operations {counts:?}, {files} files (at most {peak}) and {} directories in {SUBTREE}",
            CHUNK * CHUNKS,
            model.len() - files
        );
    }
}
