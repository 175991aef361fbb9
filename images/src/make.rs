//! Turns a [`Plan`] into a raw disk image: partition table (sfdisk), boot code, then each
//! filesystem made in its own file and copied, sparsely, to its partition's offset.

use std::fmt::Write as _;
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::error::{Error, Result, io};
use crate::plan::{BootCode, Content, FsKind, FsSpec, Plan, Table};
use crate::tools;

const MIB: u64 = 1 << 20;
/// GRUB 2's MBR boot sector, from Debian's grub-pc-bin.
const GRUB_BOOT_IMG: &str = "/usr/lib/grub/i386-pc/boot.img";
/// How long to wait for an ntfs-3g mount to appear.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(20);

/// Builds `plan` into `out` (created), using `work` for intermediate files.
pub(crate) fn realise(plan: &Plan, out: &Path, work: &Path) -> Result<()> {
    if plan.needs_root() && !tools::is_root() {
        return Err(Error::NeedsRoot {
            image: plan.name.to_owned(),
            why: "NTFS content is copied in through an ntfs-3g mount (ntfscp cannot create directories)",
        });
    }
    for t in plan.tools() {
        tools::locate(t)?;
    }
    let disk = File::create(out).map_err(io(out))?;
    disk.set_len(plan.size_mib * MIB).map_err(io(out))?;
    drop(disk);
    partition(plan, out)?;
    let disk = std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .open(out)
        .map_err(io(out))?;
    match plan.boot_code {
        BootCode::None => {}
        BootCode::Grub => {
            let img = std::fs::read(GRUB_BOOT_IMG).map_err(io(GRUB_BOOT_IMG))?;
            let code = img.get(..440).ok_or_else(|| {
                Error::Invalid(format!("{GRUB_BOOT_IMG} is shorter than 440 bytes"))
            })?;
            disk.write_all_at(code, 0).map_err(io(out))?;
        }
        BootCode::Windows => disk
            .write_all_at(&crate::synth::windows_mbr_code(), 0)
            .map_err(io(out))?,
    }
    let mut n = 0u32;
    for p in &plan.parts {
        place(
            &p.content,
            &disk,
            out,
            p.start_mib * MIB,
            p.size_mib * MIB,
            work,
            &mut n,
        )?;
    }
    disk.sync_all().map_err(io(out))
}

fn partition(plan: &Plan, out: &Path) -> Result<()> {
    let gpt = matches!(plan.table, Table::Gpt { .. });
    // sfdisk numbers GPT entries 1, 2, … and MBR entries 1–4 then logical partitions from 5;
    // the plan's numbers (used in fstab and the expected facts) must agree.
    let mut want = 1;
    for p in &plan.parts {
        if !gpt && want <= 4 && p.number >= 5 {
            want = 5;
        }
        if p.number != want {
            return Err(Error::Invalid(format!(
                "{}: partition numbered {} but sfdisk will call it {want}",
                plan.name, p.number
            )));
        }
        want += 1;
    }
    let mut s = String::new();
    match &plan.table {
        Table::Mbr { signature } => {
            let _ = writeln!(s, "label: dos\nlabel-id: {signature:#010x}\nunit: sectors");
        }
        Table::Gpt { disk_guid } => {
            let _ = writeln!(
                s,
                "label: gpt\nlabel-id: {disk_guid}\nunit: sectors\nfirst-lba: 2048"
            );
        }
    }
    for p in &plan.parts {
        let _ = write!(
            s,
            "start={}, size={}, type={}",
            p.start_mib * 2048,
            p.size_mib * 2048,
            p.ptype.sfdisk(gpt)
        );
        if gpt {
            let _ = write!(s, ", uuid={}, name=\"{}\"", p.guid, p.name);
        } else if p.bootable {
            s.push_str(", bootable");
        }
        s.push('\n');
    }
    tools::run_with_input(
        tools::command(tools::SFDISK)?
            .arg("--no-reread")
            .arg("--no-tell-kernel")
            .arg(out),
        Some(s.as_bytes()),
    )?;
    Ok(())
}

fn place(
    content: &Content,
    disk: &File,
    disk_path: &Path,
    offset: u64,
    size: u64,
    work: &Path,
    n: &mut u32,
) -> Result<()> {
    *n += 1;
    let img = work.join(format!("part{n}.img"));
    match content {
        Content::Empty => return Ok(()),
        Content::Fs(fs) => make_fs(fs, &img, size, offset / 512, work, *n)?,
        Content::Swap { uuid } => {
            sized(&img, size)?;
            tools::run(tools::command(tools::MKSWAP)?.arg("-U").arg(uuid).arg(&img))?;
        }
        Content::Lvm(vg) => {
            disk.write_all_at(&vg.pv_head(size), offset)
                .map_err(io(disk_path))?;
            for (i, lv) in vg.lvs.iter().enumerate() {
                let lv_size = lv.extents * vg.extent_mib * MIB;
                place(
                    &lv.content,
                    disk,
                    disk_path,
                    offset + vg.lv_offset(i),
                    lv_size,
                    work,
                    n,
                )?;
            }
            return Ok(());
        }
    }
    copy_sparse(&img, disk, disk_path, offset, size)?;
    std::fs::remove_file(&img).map_err(io(&img))
}

fn sized(path: &Path, size: u64) -> Result<()> {
    File::create(path)
        .and_then(|f| f.set_len(size))
        .map_err(io(path))
}

/// Copies `src` into `dst` at `offset`, skipping all-zero 64 KiB blocks so the output stays sparse.
fn copy_sparse(src: &Path, dst: &File, dst_path: &Path, offset: u64, limit: u64) -> Result<()> {
    let f = File::open(src).map_err(io(src))?;
    let len = f.metadata().map_err(io(src))?.len();
    if len > limit {
        return Err(Error::Invalid(format!(
            "{} is {len} bytes, more than its {limit}-byte slot",
            src.display()
        )));
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = 0u64;
    while at < len {
        let want = usize::try_from((len - at).min(buf.len() as u64)).unwrap_or(buf.len());
        f.read_exact_at(&mut buf[..want], at).map_err(io(src))?;
        if buf[..want].iter().any(|b| *b != 0) {
            dst.write_all_at(&buf[..want], offset + at)
                .map_err(io(dst_path))?;
        }
        at += want as u64;
    }
    Ok(())
}

/// Makes filesystem `fs` in a new file `img` of `size` bytes.
fn make_fs(
    fs: &FsSpec,
    img: &Path,
    size: u64,
    start_sector: u64,
    work: &Path,
    n: u32,
) -> Result<()> {
    let stage = work.join(format!("stage{n}"));
    std::fs::create_dir(&stage).map_err(io(&stage))?;
    sized(img, size)?;
    match fs.kind {
        FsKind::Ext4 => {
            fs.tree.materialise(&stage, work)?;
            let mut cmd = tools::command(tools::MKE2FS)?;
            cmd.env("E2FSPROGS_FAKE_TIME", crate::tree::FIXED_EPOCH.to_string())
                .args([
                    "-q", "-F", "-t", "ext4", "-b", "4096", "-U", fs.uuid, "-L", fs.label,
                ])
                .arg("-E")
                .arg(format!("root_owner=0:0,hash_seed={}", fs.uuid))
                .arg("-d")
                .arg(&stage)
                .arg(img);
            tools::run(&mut cmd)?;
        }
        FsKind::Xfs | FsKind::XfsRhel7 => {
            let files = work.join(format!("proto{n}"));
            std::fs::create_dir(&files).map_err(io(&files))?;
            let proto = fs.tree.protofile(&files, work)?;
            let proto_path = work.join(format!("proto{n}.txt"));
            std::fs::write(&proto_path, proto).map_err(io(&proto_path))?;
            let mut cmd = tools::command(tools::MKFS_XFS)?;
            cmd.args(["-q", "-f", "-L", fs.label]);
            if fs.kind == FsKind::XfsRhel7 {
                // What RHEL 7.9's mkfs.xfs made: v5 with crc, no finobt/reflink/rmapbt/bigtime/inobtcount.
                cmd.arg("-m").arg(format!(
                    "uuid={},crc=1,finobt=0,reflink=0,rmapbt=0,bigtime=0,inobtcount=0",
                    fs.uuid
                ));
                cmd.args(["-i", "sparse=0"]);
            } else {
                cmd.arg("-m").arg(format!("uuid={}", fs.uuid));
            }
            cmd.arg("-p").arg(&proto_path).arg(img);
            tools::run(&mut cmd)?;
        }
        FsKind::Btrfs => {
            fs.tree.materialise(&stage, work)?;
            let mut cmd = tools::command(tools::MKFS_BTRFS)?;
            cmd.args(["-q", "-f", "-U", fs.uuid, "-L", fs.label])
                .arg("--rootdir")
                .arg(&stage)
                .arg(img);
            tools::run(&mut cmd)?;
        }
        FsKind::Vfat => {
            fs.tree.materialise(&stage, work)?;
            let volid: String = fs.uuid.chars().filter(|c| *c != '-').collect();
            let mut cmd = tools::command(tools::MKFS_VFAT)?;
            cmd.args(["-F", "32", "-s", "1", "--invariant", "-i", &volid]);
            if !fs.label.is_empty() {
                cmd.args(["-n", fs.label]);
            }
            tools::run(cmd.arg(img))?;
            for (path, node) in fs.tree.entries() {
                let tool = match node {
                    crate::tree::Node::Dir { .. } => tools::MMD,
                    crate::tree::Node::File { .. } => tools::MCOPY,
                    crate::tree::Node::Symlink { .. } => {
                        return Err(Error::Invalid(format!("vfat cannot hold symlink {path}")));
                    }
                };
                let mut cmd = tools::command(tool)?;
                // mtools takes new directories' times from SOURCE_DATE_EPOCH when set.
                cmd.env("MTOOLS_SKIP_CHECK", "1")
                    .env("SOURCE_DATE_EPOCH", crate::tree::FIXED_EPOCH.to_string())
                    .arg("-i")
                    .arg(img);
                if tool == tools::MCOPY {
                    cmd.arg("-m").arg(stage.join(path));
                }
                tools::run(cmd.arg(format!("::/{path}")))?;
            }
        }
        FsKind::Ntfs => {
            let mut cmd = tools::command(tools::MKNTFS)?;
            cmd.args([
                "-F", "-f", "-q", "-T", "-H", "255", "-S", "63", "-L", fs.label,
            ])
            .arg("-p")
            .arg(start_sector.to_string())
            .arg(img);
            tools::run(&mut cmd)?;
            if !fs.uuid.is_empty() {
                set_ntfs_serial(img, fs.uuid)?;
            }
            fs.tree.materialise(&stage, work)?;
            let mnt = work.join(format!("mnt{n}"));
            std::fs::create_dir(&mnt).map_err(io(&mnt))?;
            let mount = NtfsMount::new(img, &mnt)?;
            let mut cp = Command::new("cp");
            cp.arg("-r")
                .arg("--no-preserve=all")
                .arg(format!("{}/.", stage.display()))
                .arg(&mnt);
            let copied = tools::run(&mut cp);
            mount.finish()?;
            copied?;
        }
    }
    std::fs::remove_dir_all(&stage).map_err(io(&stage))
}

/// Offset of the volume serial number in the NTFS boot sector (u64 LE; mkntfs picks a random
/// one and has no option for it).
const NTFS_SERIAL_OFFSET: u64 = 0x48;

/// Writes `serial` (16 hex digits, as blkid prints it) into the boot sector and its backup in
/// the volume's last sector.
fn set_ntfs_serial(img: &Path, serial: &str) -> Result<()> {
    let value = u64::from_str_radix(serial, 16)
        .map_err(|_| Error::Invalid(format!("ntfs serial {serial:?} is not 16 hex digits")))?;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(img)
        .map_err(io(img))?;
    let len = f.metadata().map_err(io(img))?.len();
    for sector in [0, len / 512 - 1] {
        f.write_all_at(&value.to_le_bytes(), sector * 512 + NTFS_SERIAL_OFFSET)
            .map_err(io(img))?;
    }
    Ok(())
}

/// An ntfs-3g FUSE mount of an image file, unmounted (and its daemon reaped) on `finish` or drop.
struct NtfsMount {
    child: Option<Child>,
    mnt: PathBuf,
}

impl NtfsMount {
    fn new(img: &Path, mnt: &Path) -> Result<Self> {
        let child = tools::command(tools::NTFS_3G)?
            .arg("-o")
            .arg("no_detach")
            .arg(img)
            .arg(mnt)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(io(img))?;
        let mut me = Self {
            child: Some(child),
            mnt: mnt.to_path_buf(),
        };
        let start = Instant::now();
        while !me.mounted()? {
            if let Some(Ok(Some(status))) = me.child.as_mut().map(Child::try_wait) {
                me.child = None;
                return Err(Error::ToolFailed {
                    command: format!("ntfs-3g {} {}", img.display(), mnt.display()),
                    status: status.to_string(),
                    stderr: String::new(),
                });
            }
            if start.elapsed() > MOUNT_TIMEOUT {
                return Err(Error::Invalid(format!(
                    "ntfs-3g mount of {} did not appear",
                    img.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(me)
    }

    fn mounted(&self) -> Result<bool> {
        let info =
            std::fs::read_to_string("/proc/self/mountinfo").map_err(io("/proc/self/mountinfo"))?;
        let want = self.mnt.to_string_lossy();
        Ok(info.lines().any(|l| l.split(' ').nth(4) == Some(&*want)))
    }

    fn finish(mut self) -> Result<()> {
        self.unmount()
    }

    fn unmount(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let res = tools::run(Command::new("umount").arg(&self.mnt));
        if res.is_err() {
            let _ = child.kill();
        }
        let status = child.wait().map_err(io(&self.mnt))?;
        res?;
        if !status.success() {
            return Err(Error::ToolFailed {
                command: "ntfs-3g (after unmount)".to_owned(),
                status: status.to_string(),
                stderr: String::new(),
            });
        }
        Ok(())
    }
}

impl Drop for NtfsMount {
    fn drop(&mut self) {
        let _ = self.unmount();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Part, PartType};

    fn part(number: u32, start_mib: u64, ptype: PartType) -> Part {
        Part {
            number,
            start_mib,
            size_mib: 1,
            ptype,
            name: "",
            guid: "",
            bootable: false,
            content: Content::Empty,
        }
    }

    #[test]
    fn partition_numbers_must_match_sfdisk() {
        if tools::locate(tools::SFDISK).is_err() {
            eprintln!("skipping: sfdisk not found");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("d.img");
        let mut plan = Plan {
            name: "t",
            size_mib: 8,
            table: Table::Mbr { signature: 1 },
            boot_code: BootCode::None,
            parts: vec![part(1, 1, PartType::Linux), part(3, 2, PartType::Linux)],
        };
        let err = realise(&plan, &out, dir.path()).unwrap_err();
        assert!(
            matches!(err, Error::Invalid(ref m) if m == "t: partition numbered 3 but sfdisk will call it 2"),
            "{err}"
        );
        // Logical partitions start at 5 after the extended container.
        plan.parts = vec![
            part(1, 1, PartType::Linux),
            part(2, 2, PartType::Extended),
            part(5, 3, PartType::Swap),
        ];
        plan.parts[1].size_mib = 4;
        realise(&plan, &out, dir.path()).unwrap();
        assert_eq!(std::fs::metadata(&out).unwrap().len(), 8 << 20);
    }

    #[test]
    fn copy_sparse_refuses_oversized_source() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::write(&src, vec![1u8; 4096]).unwrap();
        let dst_path = dir.path().join("dst");
        let dst = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&dst_path)
            .unwrap();
        let err = copy_sparse(&src, &dst, &dst_path, 0, 1024).unwrap_err();
        assert!(
            matches!(err, Error::Invalid(ref m) if m.ends_with("is 4096 bytes, more than its 1024-byte slot")),
            "{err}"
        );
        copy_sparse(&src, &dst, &dst_path, 512, 4096).unwrap();
        let mut back = vec![0u8; 4608];
        dst.read_exact_at(&mut back, 0).unwrap();
        assert!(back[..512].iter().all(|b| *b == 0));
        assert!(back[512..].iter().all(|b| *b == 1));
    }
}
