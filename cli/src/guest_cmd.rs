//! Support-engineer commands on a guest's files: `rehost ls|cat|stat IMAGE:/path` and
//! `rehost undo IMAGE`. Reading never writes; `undo` writes only through the transaction layer's
//! own undo file.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, bail};
use disk::detect::ImageFormat;
use disk::open::{Access, open};
use guestfs::{FileType, FsRead, FsReadExt};

/// Largest file `rehost cat` prints (guest files are untrusted; a 100 GiB "log" is possible).
const CAT_CAP: u64 = 1 << 30;

/// Arguments shared by the commands that read a guest path.
#[derive(Debug, clap::Args)]
pub(crate) struct GuestPathArgs {
    /// `DISK:/PATH`, where DISK is an image file or NBD URI and PATH an absolute guest path
    /// (`/etc/fstab`, `/Windows/System32/config/SYSTEM`). Without `:/PATH`, the root.
    #[arg(value_name = "DISK:/PATH")]
    target: String,
    /// Read this device's filesystem (`/dev/sda2`, `/dev/rhel/root`) instead of the operating
    /// system's root with its mounts.
    #[arg(long, value_name = "DEVICE")]
    device: Option<String>,
    /// Image format, instead of detecting it: raw or qcow2.
    #[arg(long, value_name = "FORMAT", value_parser = crate::inspect_cmd::parse_format)]
    format: Option<ImageFormat>,
}

/// Splits `DISK:/PATH` at the last `:/` (NBD URIs contain `:` and `://`).
pub(crate) fn split_target(t: &str) -> (&str, &str) {
    match t.rfind(":/") {
        Some(i) if !t[i..].starts_with("://") => (&t[..i], &t[i + 1..]),
        _ => (t, "/"),
    }
}

fn view(args: &GuestPathArgs) -> anyhow::Result<(inspect::GuestView, String)> {
    let (disk_arg, path) = split_target(&args.target);
    let mut opts = crate::open_options();
    if let Some(f) = args.format {
        opts = opts.format(f);
    }
    let opened = open(disk_arg, &opts).with_context(|| format!("cannot open {disk_arg}"))?;
    let v = inspect::guest_view(opened.read(), args.device.as_deref())
        .with_context(|| format!("cannot read the files of {disk_arg}"))?;
    Ok((v, path.to_owned()))
}

fn type_char(t: FileType) -> char {
    match t {
        FileType::Directory => 'd',
        FileType::Symlink => 'l',
        FileType::CharDevice => 'c',
        FileType::BlockDevice => 'b',
        FileType::Fifo => 'p',
        FileType::Socket => 's',
        FileType::Regular | FileType::Other => '-',
    }
}

fn mode_string(t: FileType, mode: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(type_char(t));
    for shift in [6u32, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// `rehost ls`: a long listing of a guest directory (symlinks shown, not followed).
pub(crate) fn ls(args: &GuestPathArgs) -> anyhow::Result<ExitCode> {
    let (v, path) = view(args)?;
    let md =
        v.fs.stat_path(path.as_bytes())
            .with_context(|| format!("{}:{path}", v.root))?;
    let mut out = std::io::stdout().lock();
    if md.file_type != FileType::Directory {
        writeln!(
            out,
            "{} {:>10} {path}",
            mode_string(md.file_type, md.mode),
            md.size
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut entries =
        v.fs.read_dir_path(path.as_bytes())
            .with_context(|| format!("{}:{path}", v.root))?;
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let dir = guestfs::resolve(&v.fs, path.as_bytes(), guestfs::Follow::Final)?;
    for e in entries {
        let name = String::from_utf8_lossy(&e.name).into_owned();
        let p = dir.join_name(&e.name)?;
        match v.fs.lstat(&p) {
            Ok(m) => {
                let link = if m.file_type == FileType::Symlink {
                    v.fs.read_link(&p)
                        .map(|t| format!(" -> {}", String::from_utf8_lossy(&t)))
                        .unwrap_or_default()
                } else {
                    String::new()
                };
                writeln!(
                    out,
                    "{} {:>5} {:>5} {:>12} {name}{link}",
                    mode_string(m.file_type, m.mode),
                    m.uid,
                    m.gid,
                    m.size
                )?;
            }
            Err(err) => writeln!(out, "?????????? {name} ({err})")?,
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `rehost cat`: a guest file's bytes on standard output.
pub(crate) fn cat(args: &GuestPathArgs) -> anyhow::Result<ExitCode> {
    let (v, path) = view(args)?;
    let data =
        v.fs.read_file(path.as_bytes(), CAT_CAP)
            .with_context(|| format!("{}:{path}", v.root))?;
    let mut out = std::io::stdout().lock();
    out.write_all(&data)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `rehost stat`: a guest file's metadata (as JSON with `--json`).
pub(crate) fn stat(args: &GuestPathArgs, json: bool) -> anyhow::Result<ExitCode> {
    let (v, path) = view(args)?;
    let md =
        v.fs.lstat_path(path.as_bytes())
            .with_context(|| format!("{}:{path}", v.root))?;
    let target = if md.file_type == FileType::Symlink {
        v.fs.read_link_path(path.as_bytes())
            .ok()
            .map(|t| String::from_utf8_lossy(&t).into_owned())
    } else {
        None
    };
    let mut out = std::io::stdout().lock();
    if json {
        let v = serde_json::json!({
            "device": v.root,
            "path": path,
            "type": format!("{:?}", md.file_type).to_lowercase(),
            "size": md.size,
            "mode": format!("{:04o}", md.mode),
            "uid": md.uid,
            "gid": md.gid,
            "mtime": md.mtime,
            "ino": md.ino,
            "nlink": md.nlink,
            "symlink_target": target,
        });
        serde_json::to_writer(&mut out, &v)?;
        writeln!(out)?;
    } else {
        writeln!(out, "  device: {}", v.root)?;
        writeln!(out, "    path: {path}")?;
        writeln!(out, "    type: {:?}", md.file_type)?;
        writeln!(out, "    size: {}", md.size)?;
        writeln!(
            out,
            "    mode: {} ({:04o})",
            mode_string(md.file_type, md.mode),
            md.mode
        )?;
        writeln!(out, "     uid: {}  gid: {}", md.uid, md.gid)?;
        writeln!(out, "   mtime: {}", md.mtime)?;
        writeln!(out, "   inode: {}  links: {}", md.ino, md.nlink)?;
        if let Some(t) = target {
            writeln!(out, "  target: {t}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `rehost undo`.
#[derive(Debug, clap::Args)]
pub(crate) struct UndoArgs {
    /// The image a rehost command changed (its undo file is IMAGE.rehost-undo).
    #[arg(value_name = "IMAGE")]
    image: std::path::PathBuf,
    /// Delete the undo file instead of applying it: the changes become permanent.
    #[arg(long, conflicts_with = "dry_run")]
    discard: bool,
    /// Show what the undo file holds and what would be restored; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Use this undo file instead of IMAGE.rehost-undo.
    #[arg(long, value_name = "FILE")]
    undo_file: Option<std::path::PathBuf>,
}

/// `rehost undo`: restore an image byte for byte from its undo file, or discard the file.
pub(crate) fn undo(args: &UndoArgs) -> anyhow::Result<ExitCode> {
    let undo_file = args
        .undo_file
        .clone()
        .unwrap_or_else(|| disk::txn::undo_path_for(&args.image));
    if !undo_file.exists() {
        bail!(
            "{} has no undo file ({} does not exist)",
            args.image.display(),
            undo_file.display()
        );
    }
    let info = disk::txn::info(&undo_file).with_context(|| {
        format!(
            "undo file {} is damaged; nothing was changed",
            undo_file.display()
        )
    })?;
    let mut out = std::io::stdout().lock();
    let state = format!("{:?}", info.state).to_lowercase();
    if args.dry_run {
        writeln!(
            out,
            "{}: {} saved block(s), {} bytes of originals, transaction {state}{}",
            undo_file.display(),
            info.records,
            info.saved_bytes,
            if info.torn_tail {
                " (torn last record ignored)"
            } else {
                ""
            }
        )?;
        writeln!(
            out,
            "would restore {} to its state before that transaction",
            args.image.display()
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.discard {
        std::fs::remove_file(&undo_file)
            .with_context(|| format!("cannot remove {}", undo_file.display()))?;
        writeln!(
            out,
            "discarded {}; the changes to {} are permanent",
            undo_file.display(),
            args.image.display()
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let path = args.image.to_str().context("image path is not UTF-8")?;
    let opened = open(path, &crate::open_options().access(Access::ReadWrite))
        .with_context(|| format!("cannot open {path} for writing"))?;
    let dev = opened
        .write()
        .context("image opened without write access")?;
    let n = disk::txn::undo(&*dev, &undo_file).with_context(|| format!("cannot undo {path}"))?;
    writeln!(
        out,
        "restored {n} block(s) of {path} from {}",
        undo_file.display()
    )?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_at_the_last_colon_slash() {
        assert_eq!(
            split_target("disk.img:/etc/fstab"),
            ("disk.img", "/etc/fstab")
        );
        assert_eq!(split_target("disk.img"), ("disk.img", "/"));
        assert_eq!(
            split_target("nbd://host:10809/vol:/etc/hosts"),
            ("nbd://host:10809/vol", "/etc/hosts")
        );
        assert_eq!(split_target("nbd://host/vol"), ("nbd://host/vol", "/"));
        assert_eq!(split_target("/a:b/c.img:/x"), ("/a:b/c.img", "/x"));
    }

    #[test]
    fn modes() {
        assert_eq!(mode_string(FileType::Directory, 0o755), "drwxr-xr-x");
        assert_eq!(mode_string(FileType::Regular, 0o640), "-rw-r-----");
        assert_eq!(mode_string(FileType::Symlink, 0o777), "lrwxrwxrwx");
    }
}
