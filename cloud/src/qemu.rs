//! [`LocalQemu`]: boots a volume in `qemu-system-x86_64` on this host.
//!
//! The machine is the `pc` type (i440fx), chosen because its ACPI tables give every PCI slot a
//! hot-plug index, so a guest with predictable interface names calls the NIC in slot N `ensN`
//! (slot 3: `ens3`), which is what a network fixer has to predict. The disk's controller sits in
//! the first free slot from 4 up. The display is a standard VGA with no window: when the guest
//! prints on the VGA text console only (no `console=ttyS0`), the text screen is read through the
//! monitor (`xp` on 0xb8000), so failures before the serial console is up can still be named.
//! No guest code ever runs on the host: the guest runs inside qemu, and the host only reads the
//! serial log and the screen text.

use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::console::{LineSplitter, Watch};
use crate::error::{Error, Result, io};
use crate::options::{
    AccelChoice, BootOptions, DEFAULT_TIMEOUT_KVM, DEFAULT_TIMEOUT_TCG, DiskBus, Firmware,
    ImageFormat, Until, Volume,
};
use crate::{Accel, AccelUsed, BootAdapter, BootReport, Verdict};

/// Text-mode VGA frame buffer (IBM VGA text mode: 80x25 cells of character + attribute byte).
const VGA_TEXT_BASE: u64 = 0xb8000;
/// Columns of the VGA text screen.
const VGA_COLS: usize = 80;
/// Rows of the VGA text screen.
const VGA_ROWS: usize = 25;
/// How often the console log is read.
const POLL: Duration = Duration::from_millis(250);
/// How often the VGA screen is read.
const SCREEN_EVERY: Duration = Duration::from_secs(5);
/// How long one monitor command may take before it is abandoned.
const MONITOR_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes read from the monitor for one command (the screen dump is about 20 KiB).
const MONITOR_MAX: usize = 1 << 20;
/// Most bytes of qemu's standard error kept for a report.
const STDERR_MAX: usize = 4096;

/// Boots volumes with the local `qemu-system-x86_64`.
#[derive(Debug, Clone)]
pub struct LocalQemu {
    /// The emulator.
    pub qemu: PathBuf,
    /// OVMF code (read-only pflash) for UEFI boots.
    pub ovmf_code: PathBuf,
    /// OVMF variable store template; each boot gets its own copy.
    pub ovmf_vars: PathBuf,
}

impl Default for LocalQemu {
    fn default() -> Self {
        Self {
            qemu: find_on_path("qemu-system-x86_64")
                .unwrap_or_else(|| PathBuf::from("/usr/bin/qemu-system-x86_64")),
            ovmf_code: PathBuf::from("/usr/share/OVMF/OVMF_CODE_4M.fd"),
            ovmf_vars: PathBuf::from("/usr/share/OVMF/OVMF_VARS_4M.fd"),
        }
    }
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Decides which accelerator really works here, and why.
///
/// KVM is used only when `/dev/kvm` opens read-write *and* the host is not a PVM
/// (pagetable-based) nested hypervisor (`/sys/module/kvm_pvm`): there `/dev/kvm` exists but
/// cannot run ordinary guest kernels.
#[must_use]
pub fn detect_accel() -> AccelUsed {
    detect_accel_at(Path::new("/dev/kvm"), Path::new("/sys/module/kvm_pvm"))
}

fn detect_accel_at(dev_kvm: &Path, kvm_pvm: &Path) -> AccelUsed {
    if kvm_pvm.exists() {
        return AccelUsed {
            accel: Accel::Tcg,
            reason: format!(
                "{} present: KVM here is a pagetable-based nested hypervisor that cannot run \
                 ordinary guests",
                kvm_pvm.display()
            ),
        };
    }
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev_kvm)
    {
        Ok(_) => AccelUsed {
            accel: Accel::Kvm,
            reason: format!("{} is usable", dev_kvm.display()),
        },
        Err(e) => AccelUsed {
            accel: Accel::Tcg,
            reason: format!("{} not usable: {e}", dev_kvm.display()),
        },
    }
}

/// Files of one run, all inside a private temporary directory unless the caller named the log.
#[derive(Debug, Clone)]
pub struct RunPaths {
    /// Serial console log.
    pub serial_log: PathBuf,
    /// Monitor (HMP) socket.
    pub monitor: PathBuf,
    /// This boot's copy of the OVMF variable store.
    pub ovmf_vars: PathBuf,
}

/// Doubles commas: qemu's option syntax uses `,` as separator and `,,` for a literal comma.
fn esc(s: &str) -> String {
    s.replace(',', ",,")
}

impl LocalQemu {
    /// The qemu arguments (without the program) for one boot.
    ///
    /// # Errors
    /// [`Error::Usage`] for invalid options.
    pub fn command_line(
        &self,
        volume: &Volume,
        opts: &BootOptions,
        paths: &RunPaths,
        accel: Accel,
    ) -> Result<Vec<String>> {
        opts.validate()?;
        let mut a: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| (*s).to_owned()));
        let (accel_name, cpu) = match accel {
            Accel::Kvm => ("kvm", "host"),
            Accel::Tcg => ("tcg", "max"),
        };
        push(&["-nodefaults", "-no-user-config", "-no-reboot"]);
        push(&["-machine", &format!("pc,accel={accel_name}"), "-cpu", cpu]);
        push(&["-m", &opts.memory_mib.to_string()]);
        push(&["-smp", &opts.cpus.to_string()]);
        push(&["-display", "none", "-vga", "std"]);
        if opts.firmware == Firmware::Uefi {
            push(&[
                "-drive",
                &format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={}",
                    esc(&self.ovmf_code.to_string_lossy())
                ),
                "-drive",
                &format!(
                    "if=pflash,format=raw,unit=1,file={}",
                    esc(&paths.ovmf_vars.to_string_lossy())
                ),
            ]);
        }
        // The NIC first, in its fixed slot, so nothing else can take that slot.
        let netdev = match opts.dhcp_start {
            Some(a) => format!("user,id=net0,dhcpstart={a}"),
            None => "user,id=net0".to_owned(),
        };
        push(&[
            "-netdev",
            &netdev,
            "-device",
            &format!(
                "virtio-net-pci,netdev=net0,mac={},addr={:#x}",
                opts.mac, opts.nic_slot
            ),
        ]);
        let (file, format) = match volume {
            Volume::File { path, format } => (
                esc(&path.to_string_lossy()),
                match format {
                    ImageFormat::Raw => "raw",
                    ImageFormat::Qcow2 => "qcow2",
                },
            ),
            Volume::Nbd { uri } => (esc(uri), "raw"),
        };
        let snapshot = if opts.snapshot { "on" } else { "off" };
        push(&[
            "-drive",
            &format!("file={file},format={format},if=none,id=disk0,snapshot={snapshot}"),
        ]);
        let slot = if opts.nic_slot == 4 { 5 } else { 4 };
        match opts.disk_bus {
            DiskBus::VirtioBlk => push(&[
                "-device",
                &format!("virtio-blk-pci,drive=disk0,addr={slot:#x},bootindex=1"),
            ]),
            DiskBus::VirtioScsi => push(&[
                "-device",
                &format!("virtio-scsi-pci,id=scsi0,addr={slot:#x}"),
                "-device",
                "scsi-hd,drive=disk0,bus=scsi0.0,bootindex=1",
            ]),
            DiskBus::Sata => push(&[
                "-device",
                &format!("ahci,id=ahci0,addr={slot:#x}"),
                "-device",
                "ide-hd,drive=disk0,bus=ahci0.0,bootindex=1",
            ]),
            DiskBus::Ide => push(&["-device", "ide-hd,drive=disk0,bus=ide.0,unit=0,bootindex=1"]),
        }
        push(&[
            "-chardev",
            &format!(
                "file,id=ser0,path={}",
                esc(&paths.serial_log.to_string_lossy())
            ),
            "-serial",
            "chardev:ser0",
            "-monitor",
            &format!(
                "unix:{},server=on,wait=off",
                esc(&paths.monitor.to_string_lossy())
            ),
        ]);
        Ok(a)
    }

    fn check_installed(&self, firmware: Firmware) -> Result<()> {
        if !self.qemu.is_file() {
            return Err(Error::Missing {
                what: "qemu-system-x86_64",
                path: self.qemu.clone(),
                package: "qemu-system-x86",
            });
        }
        if firmware == Firmware::Uefi {
            for (what, p) in [
                ("OVMF code", &self.ovmf_code),
                ("OVMF variables", &self.ovmf_vars),
            ] {
                if !p.is_file() {
                    return Err(Error::Missing {
                        what,
                        path: p.clone(),
                        package: "ovmf",
                    });
                }
            }
        }
        Ok(())
    }
}

/// A running qemu: killed (and reaped) when dropped, so no emulator outlives its boot.
struct Running {
    child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl BootAdapter for LocalQemu {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn boot(&self, volume: &Volume, opts: &BootOptions) -> Result<BootReport> {
        opts.validate()?;
        self.check_installed(opts.firmware)?;
        let accel = match opts.accel {
            AccelChoice::Auto => detect_accel(),
            AccelChoice::Kvm => AccelUsed {
                accel: Accel::Kvm,
                reason: "asked for".to_owned(),
            },
            AccelChoice::Tcg => AccelUsed {
                accel: Accel::Tcg,
                reason: "asked for".to_owned(),
            },
        };
        let timeout = opts.timeout.unwrap_or(match accel.accel {
            Accel::Kvm => DEFAULT_TIMEOUT_KVM,
            Accel::Tcg => DEFAULT_TIMEOUT_TCG,
        });
        let dir = tempfile::Builder::new()
            .prefix("rehost-boot-")
            .tempdir()
            .map_err(io("temporary directory"))?;
        let paths = RunPaths {
            serial_log: opts
                .log_path
                .clone()
                .unwrap_or_else(|| dir.path().join("serial.log")),
            monitor: dir.path().join("monitor.sock"),
            ovmf_vars: dir.path().join("OVMF_VARS.fd"),
        };
        if opts.firmware == Firmware::Uefi {
            std::fs::copy(&self.ovmf_vars, &paths.ovmf_vars)
                .map_err(io(self.ovmf_vars.display().to_string()))?;
        }
        // Start from an empty log so an old run's lines cannot count for this one.
        std::fs::write(&paths.serial_log, b"")
            .map_err(io(paths.serial_log.display().to_string()))?;
        let args = self.command_line(volume, opts, &paths, accel.accel)?;
        let stderr_path = dir.path().join("qemu.stderr");
        let stderr =
            std::fs::File::create(&stderr_path).map_err(io(stderr_path.display().to_string()))?;
        tracing::debug!(qemu = %self.qemu.display(), ?args, "starting");
        let start = Instant::now();
        let child = Command::new(&self.qemu)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(io(self.qemu.display().to_string()))?;
        let mut running = Running { child };
        let mut watch = Watch::new(opts.expect.clone());
        let mut log = Tail::open(&paths.serial_log)?;
        let mut splitter = LineSplitter::default();
        let mut screen: Vec<String> = Vec::new();
        let mut last_screen = Instant::now();
        let mut first_success: Option<Instant> = None;
        let mut exited = None;
        let verdict = loop {
            for l in splitter.push(&log.read_new()?) {
                watch.line(&l);
            }
            // A login prompt ends without a newline: judge the pending text too.
            let partial = splitter.partial();
            let mut trial = watch.clone();
            if !partial.trim().is_empty() {
                trial.line(&partial);
            }
            if last_screen.elapsed() >= SCREEN_EVERY {
                last_screen = Instant::now();
                if let Some(s) = read_screen(&paths.monitor) {
                    watch.screen(&s);
                    trial.screen(&s);
                    screen = s;
                }
            }
            if let Some(f) = trial.failure() {
                break Verdict::from(f.kind);
            }
            if success(&trial, opts, &mut first_success) {
                watch = trial;
                break Verdict::Booted;
            }
            if let Ok(Some(status)) = running.child.try_wait() {
                exited = Some(status);
                for l in splitter.push(&log.read_new()?) {
                    watch.line(&l);
                }
                break Verdict::QemuExited;
            }
            if start.elapsed() >= timeout {
                break Verdict::Timeout;
            }
            std::thread::sleep(POLL);
        };
        let elapsed = start.elapsed();
        if verdict != Verdict::Booted && exited.is_none() {
            // The screen at the end often says why (the initramfs shell on the VGA console).
            if let Some(s) = read_screen(&paths.monitor) {
                watch.screen(&s);
                screen = s;
            }
        }
        // Power off: the guest is judged; nothing it does from here on matters.
        drop(running);
        let partial = splitter.partial();
        if verdict != Verdict::Booted && !partial.trim().is_empty() {
            watch.line(&partial);
        }
        let verdict = match (verdict, watch.failure()) {
            (Verdict::Timeout | Verdict::QemuExited, Some(f)) => Verdict::from(f.kind),
            (v, _) => v,
        };
        let qemu_stderr = read_capped(&stderr_path);
        let booted = verdict == Verdict::Booted;
        Ok(BootReport {
            adapter: self.name(),
            volume: volume.describe(),
            booted,
            verdict,
            failure: watch.failure(),
            reached: watch.reached(),
            probe: watch.probe().cloned(),
            expected_line: watch.expected().map(str::to_owned),
            accel,
            firmware: opts.firmware,
            disk_bus: opts.disk_bus,
            elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            timeout_s: timeout.as_secs(),
            log_path: opts.log_path.clone(),
            console_tail: watch.tail(),
            screen: if booted { Vec::new() } else { screen },
            qemu_exit: exited.map(|s| s.to_string()),
            qemu_stderr: if booted || qemu_stderr.trim().is_empty() {
                None
            } else {
                Some(qemu_stderr)
            },
            command: std::iter::once(self.qemu.display().to_string())
                .chain(args)
                .collect(),
        })
    }
}

/// Whether the boot counts as done and successful now.
fn success(w: &Watch, opts: &BootOptions, first: &mut Option<Instant>) -> bool {
    if opts.expect.is_some() {
        return w.expected().is_some();
    }
    let r = w.reached();
    match opts.until {
        Until::Login => r.login_prompt,
        Until::Probe => r.probe_line,
        Until::Any => {
            if r.login_prompt && r.probe_line {
                return true;
            }
            if r.login_prompt || r.probe_line {
                let t = first.get_or_insert_with(Instant::now);
                return t.elapsed() >= opts.settle;
            }
            false
        }
    }
}

/// Reads a file's new bytes as it grows.
struct Tail {
    file: std::fs::File,
    path: PathBuf,
    pos: u64,
}

impl Tail {
    fn open(path: &Path) -> Result<Self> {
        Ok(Self {
            file: std::fs::File::open(path).map_err(io(path.display().to_string()))?,
            path: path.to_path_buf(),
            pos: 0,
        })
    }

    /// Up to 1 MiB of bytes appended since the last call.
    fn read_new(&mut self) -> Result<Vec<u8>> {
        const CHUNK: u64 = 1 << 20;
        let what = || self.path.display().to_string();
        self.file
            .seek(SeekFrom::Start(self.pos))
            .map_err(io(what()))?;
        let mut buf = Vec::new();
        (&mut self.file)
            .take(CHUNK)
            .read_to_end(&mut buf)
            .map_err(io(what()))?;
        self.pos = self
            .pos
            .saturating_add(u64::try_from(buf.len()).unwrap_or(u64::MAX));
        Ok(buf)
    }
}

fn read_capped(path: &Path) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let start = bytes.len().saturating_sub(STDERR_MAX);
    String::from_utf8_lossy(bytes.get(start..).unwrap_or_default())
        .trim()
        .to_owned()
}

/// Sends one HMP command and returns what the monitor printed up to its next prompt.
fn monitor_command(sock: &Path, command: &str) -> std::io::Result<String> {
    let mut s = UnixStream::connect(sock)?;
    s.set_read_timeout(Some(MONITOR_TIMEOUT))?;
    s.set_write_timeout(Some(MONITOR_TIMEOUT))?;
    read_until_prompt(&mut s)?;
    s.write_all(command.as_bytes())?;
    s.write_all(b"\n")?;
    read_until_prompt(&mut s)
}

fn read_until_prompt(s: &mut UnixStream) -> std::io::Result<String> {
    const PROMPT: &[u8] = b"(qemu) ";
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    let deadline = Instant::now() + MONITOR_TIMEOUT;
    while !out.ends_with(PROMPT) {
        if out.len() > MONITOR_MAX || Instant::now() > deadline {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "monitor prompt not seen",
            ));
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The VGA text screen, or `None` when the monitor is not answering or the adapter is in a
/// graphics mode (the text buffer then reads as 0xff bytes or holds no text).
fn read_screen(monitor: &Path) -> Option<Vec<String>> {
    let cells = VGA_COLS * VGA_ROWS;
    let out = monitor_command(monitor, &format!("xp /{cells}xh {VGA_TEXT_BASE:#x}")).ok()?;
    parse_screen(&out)
}

/// Decodes `xp /2000xh 0xb8000` output: lines `00000000000b8000: 0x0720 0x0741 …`, each
/// halfword a cell with the character in its low byte.
pub(crate) fn parse_screen(out: &str) -> Option<Vec<String>> {
    let cells = VGA_COLS * VGA_ROWS;
    let mut chars: Vec<u8> = Vec::with_capacity(cells);
    for line in out.lines() {
        let line = crate::console::clean_line(line);
        let Some((addr, values)) = line.split_once(':') else {
            continue;
        };
        if addr.len() != 16 || !addr.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        for v in values.split_whitespace() {
            let Some(hex) = v.strip_prefix("0x") else {
                continue;
            };
            let Ok(cell) = u16::from_str_radix(hex, 16) else {
                continue;
            };
            if chars.len() < cells {
                chars.push(cell.to_le_bytes()[0]);
            }
        }
    }
    if chars.len() < cells || chars.iter().all(|&c| c == 0xff || c == 0) {
        return None;
    }
    let printable = chars.iter().filter(|c| c.is_ascii_graphic()).count();
    if printable == 0 {
        return None;
    }
    let mut rows: Vec<String> = chars
        .chunks(VGA_COLS)
        .map(|row| {
            row.iter()
                .map(|&c| {
                    if c.is_ascii_graphic() {
                        char::from(c)
                    } else {
                        ' '
                    }
                })
                .collect::<String>()
                .trim_end()
                .to_owned()
        })
        .collect();
    while rows.last().is_some_and(String::is_empty) {
        rows.pop();
    }
    Some(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FailureKind;

    fn paths() -> RunPaths {
        RunPaths {
            serial_log: PathBuf::from("/run/x/serial.log"),
            monitor: PathBuf::from("/run/x/mon.sock"),
            ovmf_vars: PathBuf::from("/run/x/VARS.fd"),
        }
    }

    fn q() -> LocalQemu {
        LocalQemu {
            qemu: PathBuf::from("/usr/bin/qemu-system-x86_64"),
            ovmf_code: PathBuf::from("/usr/share/OVMF/OVMF_CODE_4M.fd"),
            ovmf_vars: PathBuf::from("/usr/share/OVMF/OVMF_VARS_4M.fd"),
        }
    }

    fn raw(p: &str) -> Volume {
        Volume::File {
            path: PathBuf::from(p),
            format: ImageFormat::Raw,
        }
    }

    #[test]
    fn default_command_line_virtio_bios_tcg() {
        let a = q()
            .command_line(
                &raw("/img/d.raw"),
                &BootOptions::default(),
                &paths(),
                Accel::Tcg,
            )
            .unwrap();
        let expected = [
            "-nodefaults",
            "-no-user-config",
            "-no-reboot",
            "-machine",
            "pc,accel=tcg",
            "-cpu",
            "max",
            "-m",
            "1024",
            "-smp",
            "1",
            "-display",
            "none",
            "-vga",
            "std",
            "-netdev",
            "user,id=net0",
            "-device",
            "virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56,addr=0x3",
            "-drive",
            "file=/img/d.raw,format=raw,if=none,id=disk0,snapshot=on",
            "-device",
            "virtio-blk-pci,drive=disk0,addr=0x4,bootindex=1",
            "-chardev",
            "file,id=ser0,path=/run/x/serial.log",
            "-serial",
            "chardev:ser0",
            "-monitor",
            "unix:/run/x/mon.sock,server=on,wait=off",
        ];
        assert_eq!(a, expected);
    }

    #[test]
    fn uefi_kvm_scsi_qcow2_and_escaping() {
        let opts = BootOptions {
            nic_slot: 4,
            dhcp_start: Some(std::net::Ipv4Addr::new(10, 0, 2, 50)),
            mac: "00:50:56:9a:12:34".into(),
            snapshot: false,
            ..BootOptions::default()
        }
        .firmware(Firmware::Uefi)
        .disk_bus(DiskBus::VirtioScsi);
        let vol = Volume::File {
            path: PathBuf::from("/img/a,b.qcow2"),
            format: ImageFormat::Qcow2,
        };
        let a = q().command_line(&vol, &opts, &paths(), Accel::Kvm).unwrap();
        let s = a.join(" ");
        assert!(s.contains("-machine pc,accel=kvm -cpu host"));
        assert!(s.contains(
            "-drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd"
        ));
        assert!(s.contains("-drive if=pflash,format=raw,unit=1,file=/run/x/VARS.fd"));
        assert!(s.contains("-netdev user,id=net0,dhcpstart=10.0.2.50 -device virtio-net-pci,netdev=net0,mac=00:50:56:9a:12:34,addr=0x4"));
        assert!(s.contains("file=/img/a,,b.qcow2,format=qcow2,if=none,id=disk0,snapshot=off"));
        // The disk controller moves out of the NIC's slot.
        assert!(s.contains("-device virtio-scsi-pci,id=scsi0,addr=0x5"));
        assert!(s.contains("-device scsi-hd,drive=disk0,bus=scsi0.0,bootindex=1"));
    }

    #[test]
    fn sata_ide_and_nbd() {
        let nbd = Volume::Nbd {
            uri: "nbd://gw:10809/vol1".into(),
        };
        let a = q()
            .command_line(
                &nbd,
                &BootOptions::default().disk_bus(DiskBus::Sata),
                &paths(),
                Accel::Tcg,
            )
            .unwrap()
            .join(" ");
        assert!(a.contains("file=nbd://gw:10809/vol1,format=raw,if=none,id=disk0,snapshot=on"));
        assert!(a.contains(
            "-device ahci,id=ahci0,addr=0x4 -device ide-hd,drive=disk0,bus=ahci0.0,bootindex=1"
        ));
        let a = q()
            .command_line(
                &raw("/d"),
                &BootOptions::default().disk_bus(DiskBus::Ide),
                &paths(),
                Accel::Tcg,
            )
            .unwrap()
            .join(" ");
        assert!(a.contains("-device ide-hd,drive=disk0,bus=ide.0,unit=0,bootindex=1"));
        assert!(!a.contains("pflash"));
        let bad = BootOptions {
            nic_slot: 1,
            ..BootOptions::default()
        };
        assert!(matches!(
            q().command_line(&raw("/d"), &bad, &paths(), Accel::Tcg),
            Err(Error::Usage(_))
        ));
    }

    #[test]
    fn accel_detection() {
        let dir = tempfile::tempdir().unwrap();
        let pvm = dir.path().join("kvm_pvm");
        let dev = dir.path().join("kvm");
        std::fs::write(&dev, b"").unwrap();
        let a = detect_accel_at(&dev, &pvm);
        assert_eq!(a.accel, Accel::Kvm);
        std::fs::create_dir(&pvm).unwrap();
        let a = detect_accel_at(&dev, &pvm);
        assert_eq!(a.accel, Accel::Tcg);
        assert!(a.reason.contains("kvm_pvm present"));
        std::fs::remove_dir(&pvm).unwrap();
        let a = detect_accel_at(&dir.path().join("none"), &pvm);
        assert_eq!(a.accel, Accel::Tcg);
        assert!(a.reason.contains("not usable"), "{}", a.reason);
    }

    /// A stand-in for qemu: a shell script that writes `serial` to the serial log named on its
    /// command line, then runs `then` (e.g. `sleep 30`, `exit 3`).
    fn fake_qemu(dir: &Path, serial: &str, then: &str) -> LocalQemu {
        let script = dir.join("fake-qemu");
        let body = format!(
            "#!/bin/sh\nlog=''\nfor a in \"$@\"; do case \"$a\" in file,id=ser0,path=*) log=\"${{a#file,id=ser0,path=}}\";; esac; done\nprintf '%s' '{serial}' >> \"$log\"\n{then}\n"
        );
        std::fs::write(&script, body).unwrap();
        let mut perm = std::fs::metadata(&script).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(&script, perm).unwrap();
        LocalQemu {
            qemu: script,
            ..q()
        }
    }

    fn run_fake(serial: &str, then: &str, opts: BootOptions) -> BootReport {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("d.raw");
        std::fs::write(&img, [0u8; 512]).unwrap();
        let opts = BootOptions {
            accel: AccelChoice::Tcg,
            ..opts
        }
        .log_path(dir.path().join("serial.log"));
        fake_qemu(dir.path(), serial, then)
            .boot(&Volume::parse(img.to_str().unwrap()).unwrap(), &opts)
            .unwrap()
    }

    #[test]
    fn boot_loop_success_by_probe_line() {
        let r = run_fake(
            "Welcome to Debian!\nREHOST-PROBE root=/dev/vda1 ip=10.0.2.15/24 ifaces=ens3:10.0.2.15/24 modules=virtio_blk\n",
            "exec sleep 30",
            BootOptions::default()
                .until(Until::Probe)
                .timeout(Duration::from_secs(60)),
        );
        assert!(r.booted);
        assert_eq!(r.verdict, Verdict::Booted);
        assert_eq!(r.probe.unwrap().root, "/dev/vda1");
        assert!(r.reached.root_mounted);
        assert_eq!(r.qemu_exit, None);
        assert_eq!(r.accel.accel, Accel::Tcg);
        assert_eq!(r.accel.reason, "asked for");
    }

    #[test]
    fn boot_loop_login_prompt_without_newline() {
        let r = run_fake(
            "Debian GNU/Linux 12 host ttyS0\n\nhost login: ",
            "exec sleep 30",
            BootOptions::default()
                .until(Until::Login)
                .timeout(Duration::from_secs(60)),
        );
        assert!(r.booted);
        assert!(r.reached.login_prompt);
        assert!(!r.reached.probe_line);
        assert_eq!(r.console_tail.last().unwrap(), "host login: ");
    }

    #[test]
    fn boot_loop_named_failure_ends_early() {
        let r = run_fake(
            "[    2.0] Kernel panic - not syncing: VFS: Unable to mount root fs\n",
            "exec sleep 30",
            BootOptions::default().timeout(Duration::from_secs(60)),
        );
        assert!(!r.booted);
        assert_eq!(r.verdict, Verdict::KernelPanic);
        assert_eq!(r.failure.unwrap().kind, FailureKind::KernelPanic);
        assert_eq!(
            r.console_tail,
            vec!["[    2.0] Kernel panic - not syncing: VFS: Unable to mount root fs"]
        );
    }

    #[test]
    fn boot_loop_qemu_exit_and_timeout() {
        let r = run_fake(
            "",
            "echo 'qemu-system-x86_64: -device foo: no such device' >&2; exit 1",
            BootOptions::default().timeout(Duration::from_secs(60)),
        );
        assert!(!r.booted);
        assert_eq!(r.verdict, Verdict::QemuExited);
        assert_eq!(r.qemu_exit.as_deref(), Some("exit status: 1"));
        assert_eq!(
            r.qemu_stderr.as_deref(),
            Some("qemu-system-x86_64: -device foo: no such device")
        );
        let r = run_fake(
            "Loading Linux 6.1.0 ...\n",
            "exec sleep 30",
            BootOptions::default().timeout(Duration::from_secs(1)),
        );
        assert_eq!(r.verdict, Verdict::Timeout);
        assert!(r.reached.bootloader && !r.reached.kernel_started);
        assert_eq!(r.timeout_s, 1);
    }

    #[test]
    fn missing_qemu_and_ovmf_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("d.raw");
        std::fs::write(&img, [0u8; 512]).unwrap();
        let vol = Volume::parse(img.to_str().unwrap()).unwrap();
        let none = LocalQemu {
            qemu: dir.path().join("no-qemu"),
            ..q()
        };
        let e = none.boot(&vol, &BootOptions::default()).unwrap_err();
        assert!(matches!(
            e,
            Error::Missing {
                what: "qemu-system-x86_64",
                ..
            }
        ));
        let fake = LocalQemu {
            ovmf_code: dir.path().join("no-ovmf"),
            ..fake_qemu(dir.path(), "", "exit 0")
        };
        let e = fake
            .boot(&vol, &BootOptions::default().firmware(Firmware::Uefi))
            .unwrap_err();
        assert!(matches!(
            e,
            Error::Missing {
                what: "OVMF code",
                package: "ovmf",
                ..
            }
        ));
    }

    /// Builds monitor output for a screen whose rows are `rows`.
    fn xp_output(rows: &[&str]) -> String {
        let mut cells = vec![0x0720u16; VGA_COLS * VGA_ROWS];
        for (r, text) in rows.iter().enumerate() {
            for (c, b) in text.bytes().enumerate() {
                cells[r * VGA_COLS + c] = 0x0700 | u16::from(b);
            }
        }
        let mut out = String::from("xp /2000xh 0xb8000\r\n");
        for (i, chunk) in cells.chunks(8).enumerate() {
            out.push_str(&format!("{:016x}:", VGA_TEXT_BASE + 16 * i as u64));
            for c in chunk {
                out.push_str(&format!(" 0x{c:04x}"));
            }
            out.push_str("\r\n");
        }
        out.push_str("(qemu) ");
        out
    }

    #[test]
    fn screen_parsing() {
        let rows =
            parse_screen(&xp_output(&["Loading Linux 6.1.0 ...", "", "(initramfs)"])).unwrap();
        assert_eq!(rows, vec!["Loading Linux 6.1.0 ...", "", "(initramfs)"]);
        // A graphics mode reads as 0xff everywhere.
        let ff = xp_output(&[]).replace("0x0720", "0xffff");
        assert_eq!(parse_screen(&ff), None);
        // Blank or truncated screens are not screens.
        assert_eq!(parse_screen(&xp_output(&[])), None);
        assert_eq!(parse_screen("garbage\n0000: 0x41"), None);
    }
}
