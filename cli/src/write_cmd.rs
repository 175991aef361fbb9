//! Support-engineer commands that change a guest: `rehost cp|rm|mkdir`, and the write session
//! that `rehost reg` shares with them.
//!
//! Every change follows one path (house style S19): a [`Step`] list is planned against a
//! read-only view of the guest, printed, and only then applied. `--dry-run` stops after the
//! plan and opens nothing for writing. A real run writes either through the transaction layer
//! (`disk::txn::Transaction`, undo file `IMAGE.rehost-undo`) or, with `--output NEW.qcow2`, into a
//! new qcow2 overlay whose backing file is the untouched image. A run that fails half-way is
//! rolled back (undo mode) or its overlay deleted (output mode), so a refusal or failure leaves
//! the image as it was. Exit codes: 0 done, 1 refused or failed (nothing changed), 2 usage.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use disk::BlockWrite;
use disk::detect::ImageFormat;
use disk::open::{Access, open};
use disk::txn::{State, Transaction};
use guestfs::write::{FsWriteExt, NewFileAttrs, WriteOptions, resolve_parent};
use guestfs::{FileType, FsRead, FsReadExt, GuestPath};

/// Largest local file `rehost cp` copies (it is held in memory, and so is the plan).
const CP_CAP: u64 = 1 << 30;
/// Most entries `rehost rm -r` removes in one run (a bound on the walk, house style S12).
const RM_MAX_ENTRIES: usize = 200_000;
/// Deepest directory tree `rehost rm -r` walks.
const RM_MAX_DEPTH: usize = 256;

/// How every writing command writes, for the `--help` texts.
macro_rules! how_writes_work {
    () => {
        "\
How writes work: the change is planned on a read-only view of the guest and printed first.
--dry-run stops there and opens nothing for writing. Otherwise DISK is changed in place through
rehost's transaction layer: the original of every block is saved to DISK.rehost-undo before it
is overwritten, `rehost undo DISK` restores the image byte for byte, and a run that fails or is
interrupted is rolled back. With --output NEW.qcow2, DISK is only read: NEW.qcow2 is created as a
qcow2 overlay whose backing file is DISK, and every change lands there.

A filesystem marked dirty (an ext4 journal needing recovery, an NTFS volume flagged dirty) is
refused unless --force; a hibernated Windows volume is always refused. A previous run's undo
file must be settled first: `rehost undo DISK` (restore) or `rehost undo --discard DISK` (keep).

Exit status: 0 done, 1 refused or failed (nothing was changed), 2 usage error."
    };
}

/// `rehost cp --help`.
pub(crate) const CP_ABOUT: &str = "Copy a local file into a guest.\n\n\
DISK:/PATH names the destination. If PATH is an existing directory or ends in '/', the file keeps
its local name inside it. An existing file has its contents replaced and keeps its owner, mode
and security labels (SELinux, NTFS ACLs); a new file gets the local file's permission bits or
--mode, owned by root.";
/// Examples for `rehost cp`.
pub(crate) const CP_EXAMPLES: &str = concat!(
    "Examples:
  rehost cp ./hosts vm.qcow2:/etc/hosts
  rehost cp --dry-run ./grub.cfg vm.raw:/boot/grub/
  rehost cp --output fixed.qcow2 ./50-cloud-init.yaml vm.raw:/etc/netplan/
  rehost cp --device /dev/sda1 ./shimx64.efi vm.raw:/EFI/BOOT/BOOTX64.EFI",
    "\n\n",
    how_writes_work!()
);
/// `rehost rm --help`.
pub(crate) const RM_ABOUT: &str = "Remove a guest file or symlink, or with -r a directory tree.\n\n\
A final symlink is removed, not followed. Mountpoints and the root cannot be removed.";
/// Examples for `rehost rm`.
pub(crate) const RM_EXAMPLES: &str = concat!(
    "Examples:
  rehost rm vm.raw:/etc/udev/rules.d/70-persistent-net.rules
  rehost rm -r --dry-run vm.raw:/etc/vmware-tools",
    "\n\n",
    how_writes_work!()
);
/// `rehost mkdir --help`.
pub(crate) const MKDIR_ABOUT: &str = "Create a guest directory (with -p, its missing parents too).";
/// Examples for `rehost mkdir`.
pub(crate) const MKDIR_EXAMPLES: &str = concat!(
    "Examples:
  rehost mkdir -p vm.raw:/etc/dracut.conf.d
  rehost mkdir --mode 700 vm.qcow2:/root/.ssh",
    "\n\n",
    how_writes_work!()
);

/// A command-line mistake: exit code 2 instead of 1.
#[derive(Debug)]
pub(crate) struct UsageError(pub(crate) String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Runs a write command: a refusal or failure prints `rehost: …` and exits 1; usage errors and
/// broken pipes go to `main` (exit 2 and 0).
pub(crate) fn exit_code(r: anyhow::Result<ExitCode>) -> anyhow::Result<ExitCode> {
    match r {
        Ok(c) => Ok(c),
        Err(e) if e.downcast_ref::<UsageError>().is_some() || crate::is_broken_pipe(&e) => Err(e),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "rehost: {e:#}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Options every writing command takes.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct WriteOpts {
    /// Print what would be written (files and sizes; registry changes as .reg) and stop.
    /// Nothing is opened for writing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Write even to a filesystem marked dirty (unclean unmount, journal needing recovery).
    /// Hibernated Windows volumes are refused regardless. For `reg`, also drop a hive's pending
    /// log data that its .LOG1/.LOG2 files cannot replay.
    #[arg(long)]
    pub(crate) force: bool,
    /// Leave DISK untouched: create NEW.qcow2, a qcow2 overlay backed by DISK, and write every
    /// change there. Without it, DISK is changed in place and DISK.rehost-undo keeps the
    /// originals for `rehost undo`.
    #[arg(long, value_name = "NEW.qcow2")]
    pub(crate) output: Option<PathBuf>,
    /// Replace the --output file if it exists.
    #[arg(long, requires = "output")]
    pub(crate) overwrite: bool,
    /// Journal the originals to FILE instead of DISK.rehost-undo (needed for NBD targets).
    #[arg(long, value_name = "FILE", conflicts_with = "output")]
    pub(crate) undo_file: Option<PathBuf>,
    /// Change this device's filesystem (`/dev/sda1`) instead of the operating system's root
    /// with its mounts.
    #[arg(long, value_name = "DEVICE")]
    pub(crate) device: Option<String>,
    /// Image format, instead of detecting it: raw or qcow2.
    #[arg(long, value_name = "FORMAT", value_parser = crate::inspect_cmd::parse_format)]
    pub(crate) format: Option<ImageFormat>,
    /// Print the plan and the outcome as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// One planned change, by guest path.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    /// Create a file, or replace an existing file's contents (its attributes are kept).
    WriteFile {
        path: String,
        data: Vec<u8>,
        mode: u32,
        /// Size of the file being replaced, if it exists.
        replaces: Option<u64>,
    },
    /// Create one directory.
    Mkdir { path: String, mode: u32 },
    /// Remove a file or symlink.
    Unlink { path: GuestPath, size: u64 },
    /// Remove an empty directory.
    Rmdir { path: GuestPath },
    /// Replace a registry hive with an edited copy; `reg` is the change as .reg text.
    EditHive {
        path: String,
        data: Vec<u8>,
        old_size: u64,
        reg: String,
    },
}

impl Step {
    fn describe(&self) -> String {
        match self {
            Self::WriteFile {
                path,
                data,
                replaces: None,
                mode,
            } => format!("create {path} ({} bytes, mode {mode:04o})", data.len()),
            Self::WriteFile {
                path,
                data,
                replaces: Some(old),
                ..
            } => format!("replace {path} ({} bytes, was {old})", data.len()),
            Self::Mkdir { path, mode } => format!("mkdir {path} (mode {mode:04o})"),
            Self::Unlink { path, size } => format!("remove {path} ({size} bytes)"),
            Self::Rmdir { path } => format!("rmdir {path}"),
            Self::EditHive {
                path,
                data,
                old_size,
                ..
            } => format!("edit hive {path} ({} bytes, was {old_size})", data.len()),
        }
    }

    fn to_json(&self) -> serde_json::Value {
        match self {
            Self::WriteFile {
                path,
                data,
                mode,
                replaces,
            } => serde_json::json!({
                "op": if replaces.is_some() { "replace" } else { "create" },
                "path": path, "size": data.len(), "mode": format!("{mode:04o}"),
                "old_size": replaces,
            }),
            Self::Mkdir { path, mode } => {
                serde_json::json!({"op": "mkdir", "path": path, "mode": format!("{mode:04o}")})
            }
            Self::Unlink { path, size } => {
                serde_json::json!({"op": "remove", "path": path.to_string(), "size": size})
            }
            Self::Rmdir { path } => serde_json::json!({"op": "rmdir", "path": path.to_string()}),
            Self::EditHive {
                path,
                data,
                old_size,
                reg,
            } => serde_json::json!({
                "op": "edit-hive", "path": path, "size": data.len(), "old_size": old_size,
                "reg": reg,
            }),
        }
    }

    fn apply(&self, fs: &guestfs::MountsRw) -> guestfs::Result<()> {
        match self {
            Self::WriteFile {
                path, data, mode, ..
            } => fs.write_file_path(path.as_bytes(), data, &NewFileAttrs::with_mode(*mode)),
            Self::Mkdir { path, mode } => {
                fs.mkdir_path(path.as_bytes(), &NewFileAttrs::with_mode(*mode))
            }
            Self::Unlink { path, .. } => guestfs::write::FsWrite::unlink(fs, path),
            Self::Rmdir { path } => guestfs::write::FsWrite::rmdir(fs, path),
            Self::EditHive { path, data, .. } => {
                fs.write_file_path(path.as_bytes(), data, &NewFileAttrs::file())
            }
        }
    }
}

/// The disk part of `DISK:/PATH`, and the guest path.
pub(crate) fn split_disk_path(target: &str) -> anyhow::Result<(&str, &str)> {
    let (disk, path) = crate::guest_cmd::split_target(target);
    if path == "/" && !target.ends_with(":/") {
        return Err(UsageError(format!(
            "{target:?} names no guest path; write DISK:/PATH, such as disk.img:/etc/hosts"
        ))
        .into());
    }
    Ok((disk, path))
}

/// Prints the plan and, unless `--dry-run`, applies it. `plan` is called once, on a read-only
/// view of the guest; its steps are then applied to the writable view.
pub(crate) fn run_plan(
    disk_arg: &str,
    opts: &WriteOpts,
    plan: impl FnOnce(&dyn FsRead, &str) -> anyhow::Result<Vec<Step>>,
) -> anyhow::Result<ExitCode> {
    if opts.output.is_some() && disk::nbd::is_nbd_uri(disk_arg) {
        return Err(UsageError(
            "--output needs an image file as the source, not an NBD export".into(),
        )
        .into());
    }
    let undo_file = if opts.output.is_some() {
        None
    } else {
        Some(undo_path(disk_arg, opts)?)
    };
    if !opts.dry_run
        && let Some(u) = &undo_file
    {
        check_undo_file(disk_arg, u)?;
    }

    // Plan against a read-only view: refusals (missing parents, dirty hives) happen here, before
    // anything is opened for writing.
    let mut ro = crate::open_options();
    if let Some(f) = opts.format {
        ro = ro.format(f);
    }
    let opened = open(disk_arg, &ro).with_context(|| format!("cannot open {disk_arg}"))?;
    let format = opened.format();
    let view = inspect::guest_view(opened.read(), opts.device.as_deref())
        .with_context(|| format!("cannot read the files of {disk_arg}"))?;
    let steps = plan(&view.fs, &view.root)?;
    drop(view);
    drop(opened);

    let mode = match (&opts.output, opts.dry_run) {
        (_, true) => "dry-run",
        (Some(_), false) => "output",
        (None, false) => "undo",
    };
    let mut out = std::io::stdout().lock();
    if !opts.json {
        for s in &steps {
            let verb = if opts.dry_run { "would " } else { "" };
            writeln!(out, "{verb}{}", s.describe())?;
            if let Step::EditHive { reg, .. } = s {
                out.write_all(reg.as_bytes())?;
            }
        }
    }
    if opts.dry_run || steps.is_empty() {
        if opts.json {
            print_json(
                &mut out,
                disk_arg,
                mode,
                &steps,
                opts,
                undo_file.as_deref(),
                false,
            )?;
        } else if steps.is_empty() {
            writeln!(out, "nothing to change")?;
        } else {
            writeln!(out, "dry run: nothing was written")?;
        }
        return Ok(ExitCode::SUCCESS);
    }

    let wopts = WriteOptions::new().force(opts.force);
    let device = opts.device.as_deref();
    match (&opts.output, &undo_file) {
        (Some(output), _) => {
            let source = Path::new(disk_arg);
            let ov = disk::overlay::create_overlay(
                source,
                output,
                &disk::overlay::OverlayOptions::new()
                    .overwrite(opts.overwrite)
                    .source_format(format),
            )
            .with_context(|| format!("cannot create {}", output.display()))?;
            let dev: Arc<dyn BlockWrite> = Arc::new(ov);
            if let Err(e) = apply_steps(dev, device, wopts, &steps) {
                let _ = std::fs::remove_file(output);
                return Err(e.context(format!(
                    "{} was removed; {disk_arg} was not changed",
                    output.display()
                )));
            }
        }
        (None, Some(undo)) => {
            let opened = open(
                disk_arg,
                &crate::open_options()
                    .format(format)
                    .access(Access::ReadWrite),
            )
            .with_context(|| format!("cannot open {disk_arg} for writing"))?;
            let raw = opened
                .write()
                .context("image opened without write access")?;
            drop(opened);
            let txn: Arc<Transaction<dyn BlockWrite>> = Arc::new(
                Transaction::begin(raw.clone(), undo)
                    .with_context(|| format!("cannot start a transaction on {disk_arg}"))?,
            );
            if let Err(e) = apply_steps(txn.clone(), device, wopts, &steps) {
                drop(txn);
                return Err(match disk::txn::undo(&*raw, undo) {
                    Ok(_) => {
                        // The image is as it was: this run's undo file has nothing left to do.
                        let _ = std::fs::remove_file(undo);
                        e.context(format!("rolled back; {disk_arg} was not changed"))
                    }
                    Err(u) => e.context(format!(
                        "rolling back failed too ({u:#}); run `rehost undo {disk_arg}`"
                    )),
                });
            }
            let txn = Arc::try_unwrap(txn).map_err(|_| {
                anyhow::anyhow!("internal error: the guest filesystems outlived the write")
            })?;
            txn.commit()
                .with_context(|| format!("cannot commit the changes to {disk_arg}"))?;
        }
        (None, None) => unreachable!("undo mode always has an undo file"),
    }
    if opts.json {
        print_json(
            &mut out,
            disk_arg,
            mode,
            &steps,
            opts,
            undo_file.as_deref(),
            true,
        )?;
    } else if let Some(o) = &opts.output {
        writeln!(
            out,
            "wrote {} change(s) to {} ({disk_arg} unchanged)",
            steps.len(),
            o.display()
        )?;
    } else {
        let how = match (&opts.undo_file, &undo_file) {
            (Some(_), Some(u)) => format!("rehost undo --undo-file {} {disk_arg}", u.display()),
            _ => format!("rehost undo {disk_arg}"),
        };
        writeln!(
            out,
            "committed {} change(s); `{how}` restores the original",
            steps.len()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_json(
    out: &mut impl Write,
    disk_arg: &str,
    mode: &str,
    steps: &[Step],
    opts: &WriteOpts,
    undo_file: Option<&Path>,
    written: bool,
) -> anyhow::Result<()> {
    let v = serde_json::json!({
        "image": disk_arg,
        "mode": mode,
        "written": written,
        "output": opts.output.as_ref().map(|p| p.display().to_string()),
        "undo_file": undo_file.filter(|_| written).map(|p| p.display().to_string()),
        "changes": steps.iter().map(Step::to_json).collect::<Vec<_>>(),
    });
    serde_json::to_writer(&mut *out, &v)?;
    writeln!(out)?;
    Ok(())
}

/// Opens the guest on `dev` for writing, applies `steps` and flushes every filesystem. All
/// filesystem objects are dropped before returning, so the caller owns `dev` again.
fn apply_steps(
    dev: Arc<dyn BlockWrite>,
    device: Option<&str>,
    wopts: WriteOptions,
    steps: &[Step],
) -> anyhow::Result<()> {
    let view = inspect::guest_view_rw(dev, device, wopts)
        .context("cannot open the guest's files for writing")?;
    for s in steps {
        s.apply(&view.fs)
            .with_context(|| format!("cannot {}", s.describe()))?;
    }
    view.fs
        .flush_all()
        .context("cannot flush the guest filesystems")?;
    Ok(())
}

fn undo_path(disk_arg: &str, opts: &WriteOpts) -> anyhow::Result<PathBuf> {
    if let Some(u) = &opts.undo_file {
        return Ok(u.clone());
    }
    if disk::nbd::is_nbd_uri(disk_arg) {
        return Err(UsageError(
            "an NBD target needs --undo-file FILE: there is no directory next to an export to \
             keep DISK.rehost-undo in"
                .into(),
        )
        .into());
    }
    Ok(disk::txn::undo_path_for(Path::new(disk_arg)))
}

/// Refuses to start while an earlier run's undo file could still be needed: an interrupted run
/// must be rolled back first, and a committed one is the only way back to the original, so it
/// is not replaced silently (`rehost undo` restores it, `rehost undo --discard` accepts it).
fn check_undo_file(disk_arg: &str, undo: &Path) -> anyhow::Result<()> {
    if !undo.exists() {
        return Ok(());
    }
    let info = disk::txn::info(undo).with_context(|| {
        format!(
            "undo file {} is damaged; nothing was changed (inspect it with `rehost undo --dry-run {disk_arg}`)",
            undo.display()
        )
    })?;
    match info.state {
        State::Open => anyhow::bail!(
            "{} records an interrupted run; run `rehost undo {disk_arg}` to roll it back first; \
             nothing was changed",
            undo.display()
        ),
        State::Committed => anyhow::bail!(
            "{} holds the originals of an earlier change; run `rehost undo {disk_arg}` to \
             restore them or `rehost undo --discard {disk_arg}` to keep that change, then retry; \
             nothing was changed",
            undo.display()
        ),
        State::RolledBack => Ok(()),
    }
}

// ---- cp ---------------------------------------------------------------------------------------

/// Arguments of `rehost cp`.
#[derive(Debug, clap::Args)]
pub(crate) struct CpArgs {
    /// The local file to copy.
    #[arg(value_name = "LOCAL")]
    local: PathBuf,
    /// Where to put it: `DISK:/PATH`. An existing directory (or a PATH ending in `/`) receives
    /// the file under its local name; an existing file has its contents replaced (owner, mode
    /// and security labels kept).
    #[arg(value_name = "DISK:/PATH")]
    target: String,
    /// Permission bits of a new file (octal), instead of the local file's.
    #[arg(long, value_name = "OCTAL", value_parser = parse_mode)]
    mode: Option<u32>,
    #[command(flatten)]
    write: WriteOpts,
}

pub(crate) fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{s:?} is not an octal mode in 0..=7777"))
}

/// `rehost cp LOCAL DISK:/PATH`.
pub(crate) fn cp(args: &CpArgs) -> anyhow::Result<ExitCode> {
    let (disk_arg, path) = split_disk_path(&args.target)?;
    let md = std::fs::metadata(&args.local)
        .with_context(|| format!("cannot read {}", args.local.display()))?;
    if !md.is_file() {
        return Err(UsageError(format!(
            "{} is not a regular file (cp copies one file)",
            args.local.display()
        ))
        .into());
    }
    if md.len() > CP_CAP {
        anyhow::bail!(
            "{} is {} bytes, more than the limit of {CP_CAP}",
            args.local.display(),
            md.len()
        );
    }
    let data = std::fs::read(&args.local)
        .with_context(|| format!("cannot read {}", args.local.display()))?;
    let mode = args.mode.unwrap_or_else(|| {
        use std::os::unix::fs::PermissionsExt;
        md.permissions().mode() & 0o7777
    });
    let local_name = args
        .local
        .file_name()
        .and_then(|n| n.to_str())
        .context("the local file name is not UTF-8")?
        .to_owned();
    let path = path.to_owned();
    run_plan(disk_arg, &args.write, |fs, root| {
        let mut dest = path.clone();
        let is_dir = path.ends_with('/')
            || fs
                .stat_path(path.as_bytes())
                .is_ok_and(|m| m.file_type == FileType::Directory);
        if is_dir {
            dest = format!("{}/{local_name}", path.trim_end_matches('/'));
        }
        let (parent, name) = resolve_parent(fs, dest.as_bytes())
            .with_context(|| format!("{root}:{dest}: the parent directory cannot be used"))?;
        let full = parent.join_name(&name)?;
        let replaces = match guestfs::resolve(fs, &full.to_bytes(), guestfs::Follow::Final)
            .and_then(|p| fs.lstat(&p))
        {
            Ok(m) if m.file_type == FileType::Regular => Some(m.size),
            Ok(m) => anyhow::bail!("{root}:{dest} exists and is a {:?}", m.file_type),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(anyhow::Error::new(e).context(format!("{root}:{dest}"))),
        };
        Ok(vec![Step::WriteFile {
            path: dest,
            data: data.clone(),
            mode,
            replaces,
        }])
    })
}

// ---- mkdir ------------------------------------------------------------------------------------

/// Arguments of `rehost mkdir`.
#[derive(Debug, clap::Args)]
pub(crate) struct MkdirArgs {
    /// The directory to create: `DISK:/PATH`.
    #[arg(value_name = "DISK:/PATH")]
    target: String,
    /// Create missing parents too; an existing directory is not an error.
    #[arg(short, long)]
    parents: bool,
    /// Permission bits (octal).
    #[arg(long, value_name = "OCTAL", value_parser = parse_mode, default_value = "755")]
    mode: u32,
    #[command(flatten)]
    write: WriteOpts,
}

/// `rehost mkdir [-p] DISK:/PATH`.
pub(crate) fn mkdir(args: &MkdirArgs) -> anyhow::Result<ExitCode> {
    let (disk_arg, path) = split_disk_path(&args.target)?;
    let path = path.to_owned();
    let (parents, mode) = (args.parents, args.mode);
    run_plan(disk_arg, &args.write, |fs, root| {
        let mut steps = Vec::new();
        let mut prefix = String::new();
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        let mut missing = false;
        for (i, c) in comps.iter().enumerate() {
            prefix.push('/');
            prefix.push_str(c);
            let last = i + 1 == comps.len();
            if missing {
                steps.push(Step::Mkdir {
                    path: prefix.clone(),
                    mode,
                });
                continue;
            }
            match fs.stat_path(prefix.as_bytes()) {
                Ok(m) if m.file_type == FileType::Directory => {
                    if last && !parents {
                        anyhow::bail!("{root}:{prefix}: already exists");
                    }
                }
                Ok(_) => anyhow::bail!("{root}:{prefix}: exists and is not a directory"),
                Err(e) if e.is_not_found() => {
                    if !last && !parents {
                        anyhow::bail!(
                            "{root}:{prefix}: not found (use -p to create missing parents)"
                        );
                    }
                    missing = true;
                    steps.push(Step::Mkdir {
                        path: prefix.clone(),
                        mode,
                    });
                }
                Err(e) => return Err(anyhow::Error::new(e).context(format!("{root}:{prefix}"))),
            }
        }
        Ok(steps)
    })
}

// ---- rm ---------------------------------------------------------------------------------------

/// Arguments of `rehost rm`.
#[derive(Debug, clap::Args)]
pub(crate) struct RmArgs {
    /// The file, symlink or (with -r) directory to remove: `DISK:/PATH`. A final symlink is
    /// removed, not followed.
    #[arg(value_name = "DISK:/PATH")]
    target: String,
    /// Remove a directory and everything below it.
    #[arg(short, long)]
    recursive: bool,
    #[command(flatten)]
    write: WriteOpts,
}

/// `rehost rm [-r] DISK:/PATH`.
pub(crate) fn rm(args: &RmArgs) -> anyhow::Result<ExitCode> {
    let (disk_arg, path) = split_disk_path(&args.target)?;
    let path = path.to_owned();
    let recursive = args.recursive;
    run_plan(disk_arg, &args.write, |fs, root| {
        let (parent, name) =
            resolve_parent(fs, path.as_bytes()).with_context(|| format!("{root}:{path}"))?;
        let full = parent.join_name(&name)?;
        if full.is_root() {
            anyhow::bail!("refusing to remove the root directory");
        }
        let md = fs.lstat(&full).with_context(|| format!("{root}:{path}"))?;
        let mut steps = Vec::new();
        if md.file_type == FileType::Directory {
            if !recursive {
                anyhow::bail!(
                    "{root}:{path}: is a directory (use -r to remove it and its contents)"
                );
            }
            walk_rm(fs, &full, 0, &mut steps)?;
        } else {
            steps.push(Step::Unlink {
                path: full,
                size: md.size,
            });
        }
        Ok(steps)
    })
}

/// Plans the removal of `dir`'s contents, then of `dir` (children first).
fn walk_rm(
    fs: &dyn FsRead,
    dir: &GuestPath,
    depth: usize,
    steps: &mut Vec<Step>,
) -> anyhow::Result<()> {
    if depth > RM_MAX_DEPTH {
        anyhow::bail!("{dir}: deeper than {RM_MAX_DEPTH} levels; remove it in parts");
    }
    let mut entries = fs.read_dir(dir).with_context(|| dir.to_string())?;
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    for e in entries {
        if steps.len() >= RM_MAX_ENTRIES {
            anyhow::bail!("more than {RM_MAX_ENTRIES} entries to remove; remove it in parts");
        }
        let p = dir.join_name(&e.name)?;
        let md = fs.lstat(&p).with_context(|| p.to_string())?;
        if md.file_type == FileType::Directory {
            walk_rm(fs, &p, depth + 1, steps)?;
        } else {
            steps.push(Step::Unlink {
                path: p,
                size: md.size,
            });
        }
    }
    steps.push(Step::Rmdir { path: dir.clone() });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_as_octal() {
        assert_eq!(parse_mode("644"), Ok(0o644));
        assert_eq!(parse_mode("0o4755"), Ok(0o4755));
        assert!(parse_mode("9").is_err());
        assert!(parse_mode("17777").is_err());
    }

    #[test]
    fn steps_describe_themselves() {
        let s = Step::WriteFile {
            path: "/etc/x".into(),
            data: vec![0; 123],
            mode: 0o644,
            replaces: None,
        };
        assert_eq!(s.describe(), "create /etc/x (123 bytes, mode 0644)");
        let s = Step::WriteFile {
            path: "/etc/x".into(),
            data: vec![0; 3],
            mode: 0o644,
            replaces: Some(9),
        };
        assert_eq!(s.describe(), "replace /etc/x (3 bytes, was 9)");
        assert_eq!(s.to_json()["op"], "replace");
        let p = GuestPath::parse(b"/a/b").unwrap();
        assert_eq!(Step::Rmdir { path: p.clone() }.describe(), "rmdir /a/b");
        assert_eq!(
            Step::Unlink { path: p, size: 5 }.to_json(),
            serde_json::json!({"op": "remove", "path": "/a/b", "size": 5})
        );
    }

    #[test]
    fn targets_need_a_path() {
        assert!(split_disk_path("disk.img").is_err());
        assert_eq!(split_disk_path("disk.img:/").unwrap(), ("disk.img", "/"));
        assert_eq!(
            split_disk_path("d.img:/etc/x").unwrap(),
            ("d.img", "/etc/x")
        );
    }
}
