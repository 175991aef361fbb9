//! Running the external tools the builders use, and recording their versions for the cache key.

use std::ffi::OsStr;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// An external program and the Debian package that provides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Tool {
    /// Program name, looked up on `PATH` (plus the sbin directories).
    pub(crate) program: &'static str,
    /// Debian package.
    pub(crate) package: &'static str,
    /// Argument that prints the version.
    pub(crate) version_arg: &'static str,
}

pub(crate) const SFDISK: Tool = Tool {
    program: "sfdisk",
    package: "fdisk",
    version_arg: "--version",
};
pub(crate) const MKE2FS: Tool = Tool {
    program: "mke2fs",
    package: "e2fsprogs",
    version_arg: "-V",
};
pub(crate) const MKFS_XFS: Tool = Tool {
    program: "mkfs.xfs",
    package: "xfsprogs",
    version_arg: "-V",
};
pub(crate) const MKFS_BTRFS: Tool = Tool {
    program: "mkfs.btrfs",
    package: "btrfs-progs",
    version_arg: "--version",
};
pub(crate) const MKFS_VFAT: Tool = Tool {
    program: "mkfs.vfat",
    package: "dosfstools",
    version_arg: "--help",
};
pub(crate) const MCOPY: Tool = Tool {
    program: "mcopy",
    package: "mtools",
    version_arg: "--version",
};
pub(crate) const MKNTFS: Tool = Tool {
    program: "mkntfs",
    package: "ntfs-3g",
    version_arg: "-V",
};
pub(crate) const NTFS_3G: Tool = Tool {
    program: "ntfs-3g",
    package: "ntfs-3g",
    version_arg: "--version",
};
pub(crate) const MKSWAP: Tool = Tool {
    program: "mkswap",
    package: "util-linux",
    version_arg: "--version",
};
pub(crate) const HIVEXREGEDIT: Tool = Tool {
    program: "hivexregedit",
    package: "libhivex-bin",
    version_arg: "--version",
};
pub(crate) const MMD: Tool = Tool {
    program: "mmd",
    package: "mtools",
    version_arg: "--version",
};
pub(crate) const XZ: Tool = Tool {
    program: "xz",
    package: "xz-utils",
    version_arg: "--version",
};
pub(crate) const ZSTD: Tool = Tool {
    program: "zstd",
    package: "zstd",
    version_arg: "--version",
};
pub(crate) const PYTHON3: Tool = Tool {
    program: "python3",
    package: "python3",
    version_arg: "--version",
};
pub(crate) const QEMU_IMG: Tool = Tool {
    program: "qemu-img",
    package: "qemu-utils",
    version_arg: "--version",
};

/// Directories searched besides `PATH`: the sbin tools are not on a normal user's `PATH`.
const EXTRA_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// Returns the full path of `tool`, or [`Error::ToolMissing`].
pub(crate) fn locate(tool: Tool) -> Result<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(EXTRA_DIRS.iter().map(std::path::PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(tool.program);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(Error::ToolMissing {
        tool: tool.program.to_owned(),
        package: tool.package,
    })
}

/// A command for `tool`, located on `PATH` or in the sbin directories.
pub(crate) fn command(tool: Tool) -> Result<Command> {
    Ok(Command::new(locate(tool)?))
}

/// The tool's identity for the cache key: the first line of its version output (stdout, else
/// stderr) and a digest of the program file itself, since some tools (`mkfs.vfat`,
/// `hivexregedit`) print no version.
pub(crate) fn version(tool: Tool) -> Result<String> {
    use sha2::Digest as _;
    let path = locate(tool)?;
    let out = Command::new(&path)
        .arg(tool.version_arg)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
    let text = if out.stdout.iter().any(|b| !b.is_ascii_whitespace()) {
        out.stdout
    } else {
        out.stderr
    };
    let text = String::from_utf8_lossy(&text);
    let first = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_owned();
    let bytes = std::fs::read(&path).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    let digest = sha2::Sha256::digest(&bytes);
    let short: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    Ok(format!("{}: {first} (sha256 {short})", tool.program))
}

/// Runs `cmd` with stdin `input`, returns its stdout, or [`Error::ToolFailed`] with its stderr.
pub(crate) fn run_with_input(cmd: &mut Command, input: Option<&[u8]>) -> Result<Vec<u8>> {
    use std::io::Write as _;
    let line = describe(cmd);
    tracing::debug!(command = %line, "running");
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| Error::Io {
        path: line.clone().into(),
        source,
    })?;
    if let Some(data) = input {
        // OK to expect: stdin was set to piped just above.
        let mut stdin = child.stdin.take().expect("stdin is piped");
        stdin.write_all(data).map_err(|source| Error::Io {
            path: line.clone().into(),
            source,
        })?;
    }
    let out = child.wait_with_output().map_err(|source| Error::Io {
        path: line.clone().into(),
        source,
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: String = err
            .chars()
            .rev()
            .take(2000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(Error::ToolFailed {
            command: line,
            status: out.status.to_string(),
            stderr: tail.trim().to_owned(),
        });
    }
    Ok(out.stdout)
}

/// Runs `cmd`, returns its stdout.
pub(crate) fn run(cmd: &mut Command) -> Result<Vec<u8>> {
    run_with_input(cmd, None)
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&OsStr::to_string_lossy(a));
    }
    s
}

/// Whether we run as root (uid 0).
pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}
