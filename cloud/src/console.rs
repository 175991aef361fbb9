//! Judging a boot from what the guest printed: the serial console log and, when the guest prints
//! on the VGA text screen only, that screen's text.
//!
//! A [`Watch`] is fed lines in order and keeps what they prove: the milestones reached, the
//! guest-side probe line and the first named failure. Lines are untrusted guest output: each is
//! capped at [`MAX_LINE`] bytes and the tail kept for the report at [`TAIL_LINES`] lines.

use std::collections::VecDeque;

use serde::Serialize;

/// Longest console line kept (bytes); the rest of a longer line is dropped.
pub const MAX_LINE: usize = 4096;
/// How many of the last console lines a report keeps.
pub const TAIL_LINES: usize = 40;
/// The marker the guest-side probe prints (images' `rehost-probe.service`).
pub const PROBE_MARKER: &str = "REHOST-PROBE";
/// Most addresses, interfaces and modules kept from one probe line.
const MAX_PROBE_ITEMS: usize = 64;

/// How far the boot got. Later milestones imply the earlier ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Milestones {
    /// The bootloader ran (GRUB's `Booting`/`Loading Linux` lines, or a kernel line).
    pub bootloader: bool,
    /// The kernel started (its banner, the initramfs talking, or anything later).
    pub kernel_started: bool,
    /// The root filesystem was mounted (systemd's welcome, a target reached, or anything later).
    pub root_mounted: bool,
    /// A getty printed a login prompt.
    pub login_prompt: bool,
    /// The guest-side probe printed its marker line.
    pub probe_line: bool,
}

/// What the guest-side probe reported: `REHOST-PROBE root=<device> ip=<addresses>`, then the
/// optional `ifaces=<name:addr,…>` and `modules=<virtio modules,…>` (`none` for an empty list).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Probe {
    /// Source of `/` (`/dev/vda1`).
    pub root: String,
    /// The guest's global IPv4 addresses with prefix (`10.0.2.15/24`), on any interface.
    pub ip: Vec<String>,
    /// Interfaces and their IPv4 addresses with prefix, as `(name, address)`; `none` when an
    /// interface has no address.
    pub ifaces: Vec<(String, String)>,
    /// virtio modules loaded (`virtio_blk`, `virtio_net`, …).
    pub modules: Vec<String>,
    /// The line as printed (capped).
    pub line: String,
}

impl Probe {
    /// Parses the text after the marker. Unknown `key=value` fields are ignored (a newer probe
    /// may print more); a line without `root=` is not a probe line.
    #[must_use]
    pub fn parse(line: &str) -> Option<Self> {
        let at = line.find(PROBE_MARKER)?;
        // OK to slice: `at` and the marker's length fall on char boundaries of `line`.
        let rest = &line[at + PROBE_MARKER.len()..];
        let mut probe = Self {
            // From the marker on: a getty's prompt without a newline may precede it.
            line: line[at..].trim().to_owned(),
            ..Self::default()
        };
        let mut has_root = false;
        for field in rest.split_whitespace() {
            let Some((key, value)) = field.split_once('=') else {
                continue;
            };
            let items = || {
                value
                    .split(',')
                    .filter(|v| !v.is_empty() && *v != "none")
                    .take(MAX_PROBE_ITEMS)
            };
            match key {
                "root" => {
                    probe.root = value.to_owned();
                    has_root = true;
                }
                "ifaces" => {
                    probe.ifaces = items()
                        .map(|i| match i.split_once(':') {
                            Some((name, addr)) => (name.to_owned(), addr.to_owned()),
                            None => (i.to_owned(), "none".to_owned()),
                        })
                        .collect();
                }
                "ip" => probe.ip = items().map(str::to_owned).collect(),
                "modules" => probe.modules = items().map(str::to_owned).collect(),
                _ => {}
            }
        }
        has_root.then_some(probe)
    }

    /// The IPv4 addresses (with prefix) of interface `name`.
    #[must_use]
    pub fn addresses(&self, name: &str) -> Vec<&str> {
        self.ifaces
            .iter()
            .filter(|(n, a)| n == name && a != "none")
            .map(|(_, a)| a.as_str())
            .collect()
    }
}

/// A named way a boot fails, recognised on the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// `Kernel panic - not syncing`.
    KernelPanic,
    /// The initramfs gave up on the root device and dropped to its shell (initramfs-tools'
    /// `(initramfs)`, dracut's emergency shell).
    InitramfsShell,
    /// systemd's emergency or rescue mode (root mounted, something else failed hard).
    EmergencyMode,
    /// The firmware found nothing to boot (SeaBIOS `No bootable device`, OVMF falling back to
    /// its built-in shell).
    NoBootableDevice,
}

impl FailureKind {
    /// Stable name (`kernel-panic`, `initramfs-shell`, `emergency-mode`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::KernelPanic => "kernel-panic",
            Self::InitramfsShell => "initramfs-shell",
            Self::EmergencyMode => "emergency-mode",
            Self::NoBootableDevice => "no-bootable-device",
        }
    }
}

/// A failure and the line that shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// What failed.
    pub kind: FailureKind,
    /// The console line that names it (for `InitramfsShell`, the `ALERT!` or `Gave up` line when
    /// one was seen: it names the missing device).
    pub line: String,
}

/// What a line proves.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Bootloader,
    Kernel,
    Root,
    Login,
    Probe(Probe),
    Fail(FailureKind),
    Nothing,
}

/// Whether `line` shows a getty's login prompt: `HOST login:` at its end, or followed by other
/// output on the same line (the prompt has no newline, so the next message joins it).
fn has_login_prompt(line: &str) -> bool {
    let t = line.trim();
    if t == "login:" || t.ends_with(" login:") {
        return true;
    }
    t.split_once(" login: ").is_some_and(|(host, _)| {
        // A host name, not "Last login: …" (printed after a login, which rehost never does).
        host != "Last"
            && !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    })
}

/// Classifies one console line (escape sequences already stripped).
fn classify(line: &str) -> Seen {
    let t = line.trim();
    if t.contains(PROBE_MARKER) {
        return Probe::parse(t).map_or(Seen::Nothing, Seen::Probe);
    }
    if t.contains("No bootable device")
        || t.contains("starting Boot0002 \"EFI Internal Shell\"")
        || t.starts_with("UEFI Interactive Shell")
    {
        return Seen::Fail(FailureKind::NoBootableDevice);
    }
    if t.contains("Kernel panic - not syncing") {
        return Seen::Fail(FailureKind::KernelPanic);
    }
    if t.starts_with("(initramfs)")
        || t.contains("Dropping to a shell")
        || t.contains("dracut:/#")
        || t.contains("Entering emergency mode. Exit the shell to continue")
    {
        return Seen::Fail(FailureKind::InitramfsShell);
    }
    if t.contains("You are in emergency mode") || t.contains("You are in rescue mode") {
        return Seen::Fail(FailureKind::EmergencyMode);
    }
    if has_login_prompt(t) {
        return Seen::Login;
    }
    // systemd also runs inside dracut initramfs images, so only lines that follow the switch to
    // the real root count as "root mounted".
    let in_initrd = t.contains("Initramfs") || t.contains("initrd");
    if (t.contains("Welcome to ") && !in_initrd)
        || t.contains("Switching root")
        || t.contains("Multi-User System")
        || t.contains("Login Prompts")
        || (t.contains("EXT4-fs (") && t.contains("mounted filesystem"))
        || (t.contains("XFS (") && t.contains("Ending clean mount"))
    {
        return Seen::Root;
    }
    if t.contains("Linux version ")
        || t.contains("systemd[1]:")
        || t.contains("Reached target")
        || t.contains("Run /init as init process")
        || t.contains("Gave up waiting for root")
        || t.contains("Begin: Loading essential drivers")
        || t.contains("dracut-")
    {
        return Seen::Kernel;
    }
    if t.starts_with("Booting `") || t.starts_with("Loading Linux ") || t.contains("GNU GRUB") {
        return Seen::Bootloader;
    }
    Seen::Nothing
}

/// Removes ANSI/VT100 escape sequences and control characters (except tab) from `raw`, caps it at
/// [`MAX_LINE`] bytes.
#[must_use]
pub fn clean_line(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len().min(MAX_LINE));
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if out.len() >= MAX_LINE {
            break;
        }
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte(0x40..=0x7e); other escapes: ESC + one char.
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&d) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
            continue;
        }
        if c.is_control() && c != '\t' {
            continue;
        }
        out.push(c);
    }
    out
}

/// Accumulates what console lines prove about a boot.
#[derive(Debug, Clone, Default)]
pub struct Watch {
    reached: Milestones,
    probe: Option<Probe>,
    failure: Option<Failure>,
    /// The `ALERT!`/`Gave up` line, kept to name the missing root device.
    root_complaint: Option<String>,
    tail: VecDeque<String>,
    /// Lines matching the caller's `--expect` pattern (first one kept).
    expected: Option<String>,
    pattern: Option<regex::Regex>,
}

impl Watch {
    /// A watch with nothing seen; `pattern` is an extra success pattern (`--expect`).
    #[must_use]
    pub fn new(pattern: Option<regex::Regex>) -> Self {
        Self {
            pattern,
            ..Self::default()
        }
    }

    /// Feeds one serial-console line.
    pub fn line(&mut self, raw: &str) {
        let line = clean_line(raw);
        if line.trim().is_empty() {
            return;
        }
        self.note(&line);
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }

    /// Feeds the lines of a VGA text screen (they count for milestones and failures, but do not
    /// enter the serial tail).
    pub fn screen(&mut self, lines: &[String]) {
        for l in lines {
            let l = clean_line(l);
            if !l.trim().is_empty() {
                self.note(&l);
            }
        }
    }

    fn note(&mut self, line: &str) {
        if self.expected.is_none() && self.pattern.as_ref().is_some_and(|p| p.is_match(line)) {
            self.expected = Some(line.trim().to_owned());
        }
        if line.contains("Gave up waiting for root") || line.contains("ALERT!") {
            // Keep the ALERT line over "Gave up": it names the device.
            if self.root_complaint.is_none() || line.contains("ALERT!") {
                self.root_complaint = Some(line.trim().to_owned());
            }
        }
        let seen = classify(line);
        if has_login_prompt(line) && seen != Seen::Login {
            // A prompt joined by the next output (the probe line) on one line.
            self.note_seen(&Seen::Login, line);
        }
        self.note_seen(&seen, line);
    }

    fn note_seen(&mut self, seen: &Seen, line: &str) {
        let r = &mut self.reached;
        match seen.clone() {
            Seen::Bootloader => r.bootloader = true,
            Seen::Kernel => {
                r.bootloader = true;
                r.kernel_started = true;
            }
            Seen::Root => {
                r.bootloader = true;
                r.kernel_started = true;
                r.root_mounted = true;
            }
            Seen::Login => {
                *r = Milestones {
                    probe_line: r.probe_line,
                    ..Milestones {
                        bootloader: true,
                        kernel_started: true,
                        root_mounted: true,
                        login_prompt: true,
                        probe_line: false,
                    }
                };
            }
            Seen::Probe(c) => {
                r.bootloader = true;
                r.kernel_started = true;
                r.root_mounted = true;
                r.probe_line = true;
                if self.probe.is_none() {
                    self.probe = Some(c);
                }
            }
            Seen::Fail(FailureKind::NoBootableDevice) => {
                if self.failure.is_none() {
                    self.failure = Some(Failure {
                        kind: FailureKind::NoBootableDevice,
                        line: line.trim().to_owned(),
                    });
                }
            }
            Seen::Fail(kind) => {
                r.bootloader = true;
                r.kernel_started = true;
                if kind == FailureKind::EmergencyMode {
                    r.root_mounted = true;
                }
                if self.failure.is_none() {
                    self.failure = Some(Failure {
                        kind,
                        line: line.trim().to_owned(),
                    });
                }
            }
            Seen::Nothing => {}
        }
    }

    /// Milestones reached so far.
    #[must_use]
    pub fn reached(&self) -> Milestones {
        self.reached
    }

    /// The probe line, if printed.
    #[must_use]
    pub fn probe(&self) -> Option<&Probe> {
        self.probe.as_ref()
    }

    /// The first named failure, with the most telling line (the initramfs' `ALERT!` line names
    /// the device it waited for).
    #[must_use]
    pub fn failure(&self) -> Option<Failure> {
        let mut f = self.failure.clone()?;
        if f.kind == FailureKind::InitramfsShell
            && let Some(c) = &self.root_complaint
        {
            f.line.clone_from(c);
        }
        Some(f)
    }

    /// The first line that matched the caller's pattern.
    #[must_use]
    pub fn expected(&self) -> Option<&str> {
        self.expected.as_deref()
    }

    /// The last serial lines, oldest first.
    #[must_use]
    pub fn tail(&self) -> Vec<String> {
        self.tail.iter().cloned().collect()
    }
}

/// Splits a growing byte stream into lines: bytes go in as they arrive, complete lines come out.
/// A line longer than [`MAX_LINE`] is cut there (the rest is emitted as further lines).
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Adds bytes; returns the lines they complete (without `\n`, lossily decoded).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' || self.pending.len() >= MAX_LINE {
                out.push(String::from_utf8_lossy(&self.pending).into_owned());
                self.pending.clear();
                if b == b'\n' {
                    continue;
                }
            }
            self.pending.push(b);
        }
        out
    }

    /// The unterminated rest (a login prompt has no newline after it).
    #[must_use]
    pub fn partial(&self) -> String {
        String::from_utf8_lossy(&self.pending).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(text: &str) -> Watch {
        let mut w = Watch::new(None);
        for l in text.lines() {
            w.line(l);
        }
        w
    }

    // Recorded: debian12-boot after a fix, serial console on (trimmed, escapes kept).
    const FIXED: &str = "\u{1b}[2J\u{1b}[01;01H\u{1b}[=3h\u{1b}[2J\u{1b}[01;01H\r
[    0.000000] Linux version 6.1.0-50-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.158-1 (2025-11-09)\r
[    1.923456] Run /init as init process\r
Begin: Loading essential drivers ... done.\r
[    4.101010] EXT4-fs (vda1): mounted filesystem with ordered data mode. Quota mode: none.\r
\r
Welcome to \u{1b}[1mDebian GNU/Linux 12 (bookworm)\u{1b}[0m!\r
\r
[\u{1b}[0;32m  OK  \u{1b}[0m] Reached target \u{1b}[0;1;39mgetty.target\u{1b}[0m - Login Prompts.\r
\r
Debian GNU/Linux 12 debian12-boot ttyS0\r
\r
debian12-boot login: REHOST-PROBE root=/dev/vda1 ip=10.0.2.15/24 ifaces=ens3:10.0.2.15/24 modules=virtio,virtio_blk,virtio_net,virtio_pci\r
";

    #[test]
    fn fixed_boot_reaches_every_milestone_and_parses_the_probe() {
        let w = feed(FIXED);
        assert_eq!(
            w.reached(),
            Milestones {
                bootloader: true,
                kernel_started: true,
                root_mounted: true,
                login_prompt: true,
                probe_line: true,
            }
        );
        let c = w.probe().unwrap();
        assert_eq!(c.root, "/dev/vda1");
        assert_eq!(c.ip, vec!["10.0.2.15/24"]);
        assert_eq!(
            c.ifaces,
            vec![("ens3".to_owned(), "10.0.2.15/24".to_owned())]
        );
        assert_eq!(c.addresses("ens3"), vec!["10.0.2.15/24"]);
        assert_eq!(
            c.modules,
            vec!["virtio", "virtio_blk", "virtio_net", "virtio_pci"]
        );
        assert!(w.failure().is_none());
        // Escapes and carriage returns are gone from the tail.
        assert!(
            w.tail()
                .iter()
                .all(|l| !l.contains('\u{1b}') && !l.contains('\r'))
        );
        assert!(
            w.tail()
                .iter()
                .any(|l| l == "Welcome to Debian GNU/Linux 12 (bookworm)!")
        );
    }

    // Recorded: the getty's prompt has no newline, so the probe line joins it.
    #[test]
    fn login_prompt_joined_by_the_probe_line() {
        let w = feed(
            "Debian GNU/Linux 12 debian12-boot ttyS0\r\n\r\ndebian12-boot login: REHOST-PROBE root=/dev/sda1 ip=none ifaces=ens3:none modules=virtio,virtio_net\r\n",
        );
        let r = w.reached();
        assert!(r.login_prompt && r.probe_line && r.root_mounted);
        let c = w.probe().unwrap();
        assert_eq!(
            c.line,
            "REHOST-PROBE root=/dev/sda1 ip=none ifaces=ens3:none modules=virtio,virtio_net"
        );
        assert_eq!(c.root, "/dev/sda1");
        assert!(c.ip.is_empty());
        // Not prompts: words before "login:" with spaces, or "login:" inside a sentence.
        assert!(!has_login_prompt("Last login: Sun Nov 22 on ttyS0"));
        assert!(!has_login_prompt("pam: failed login: x"));
        assert!(has_login_prompt("host login:"));
    }

    #[test]
    fn login_prompt_alone_is_a_milestone() {
        let mut w = feed("Debian GNU/Linux 12 debian12-boot ttyS0\r\n\r\n");
        w.line("debian12-boot login: ");
        let r = w.reached();
        assert!(r.login_prompt && r.root_mounted && r.kernel_started && r.bootloader);
        assert!(!r.probe_line);
        // A probe after the prompt keeps the prompt.
        w.line("REHOST-PROBE root=/dev/sda1 ip=none ifaces=ens3:none modules=none");
        let r = w.reached();
        assert!(r.login_prompt && r.probe_line);
        let c = w.probe().unwrap();
        assert_eq!(c.ifaces, vec![("ens3".to_owned(), "none".to_owned())]);
        assert!(c.addresses("ens3").is_empty());
        assert!(c.modules.is_empty());
    }

    // Recorded: the VGA screen of debian12-boot unfixed on virtio-blk (serial shows nothing).
    const STUCK_SCREEN: &[&str] = &[
        "  Booting `Debian GNU/Linux'",
        "",
        "Loading Linux 6.1.0-50-amd64 ...",
        "Loading initial ramdisk ...",
        "Gave up waiting for root file system device.  Common problems:",
        " - Boot args (cat /proc/cmdline)",
        "   - Check rootdelay= (did the system wait long enough?)",
        " - Missing modules (cat /proc/modules; ls /dev)",
        "ALERT!  /dev/sda1 does not exist.  Dropping to a shell!",
        "(initramfs)",
    ];

    #[test]
    fn initramfs_shell_on_screen_names_the_missing_device() {
        let mut w = Watch::new(None);
        w.screen(
            &STUCK_SCREEN
                .iter()
                .map(|s| (*s).to_owned())
                .collect::<Vec<_>>(),
        );
        let r = w.reached();
        assert!(r.bootloader && r.kernel_started);
        assert!(!r.root_mounted && !r.login_prompt && !r.probe_line);
        let f = w.failure().unwrap();
        assert_eq!(f.kind, FailureKind::InitramfsShell);
        assert_eq!(f.kind.as_str(), "initramfs-shell");
        assert_eq!(
            f.line,
            "ALERT!  /dev/sda1 does not exist.  Dropping to a shell!"
        );
        assert!(w.tail().is_empty());
    }

    #[test]
    fn only_the_bootloader_is_not_a_kernel() {
        let mut w = Watch::new(None);
        w.screen(
            &STUCK_SCREEN[..4]
                .iter()
                .map(|s| (*s).to_owned())
                .collect::<Vec<_>>(),
        );
        assert_eq!(
            w.reached(),
            Milestones {
                bootloader: true,
                ..Milestones::default()
            }
        );
        assert!(w.failure().is_none());
    }

    #[test]
    fn panic_dracut_and_emergency_are_named() {
        let w = feed(
            "[    2.1] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)",
        );
        assert_eq!(w.failure().unwrap().kind, FailureKind::KernelPanic);
        let w = feed(
            "dracut-initqueue[200]: Warning: Could not boot.\nEntering emergency mode. Exit the shell to continue.\ndracut:/#",
        );
        assert_eq!(w.failure().unwrap().kind, FailureKind::InitramfsShell);
        assert_eq!(
            w.failure().unwrap().line,
            "Entering emergency mode. Exit the shell to continue."
        );
        let w = feed(
            "Welcome to Debian\nYou are in emergency mode. After logging in, type \"journalctl -xb\"",
        );
        let f = w.failure().unwrap();
        assert_eq!(f.kind, FailureKind::EmergencyMode);
        assert!(w.reached().root_mounted);
        // The first failure wins.
        let w = feed("(initramfs)\nKernel panic - not syncing: Attempted to kill init!");
        assert_eq!(w.failure().unwrap().kind, FailureKind::InitramfsShell);
    }

    // Recorded: OVMF with an MBR-only disk (serial), SeaBIOS with an empty disk (VGA screen).
    #[test]
    fn firmware_without_a_boot_device() {
        let w = feed(
            "BdsDxe: failed to load Boot0001 \"UEFI Misc Device\" from PciRoot(0x0)/Pci(0x4,0x0): Not Found\nBdsDxe: starting Boot0002 \"EFI Internal Shell\" from Fv(7CB8BDC9-F8EB-4F34-AAEA-3EE4AF6516A1)/FvFile(7C04A583-9E3E-4F1C-AD65-E05268D0B4D1)\nUEFI Interactive Shell v2.2\nShell> ",
        );
        let f = w.failure().unwrap();
        assert_eq!(f.kind, FailureKind::NoBootableDevice);
        assert_eq!(f.kind.as_str(), "no-bootable-device");
        assert!(f.line.starts_with("BdsDxe: starting Boot0002"));
        assert_eq!(w.reached(), Milestones::default());
        let mut w = Watch::new(None);
        w.screen(&[
            "SeaBIOS (version 1.16.3-debian-1.16.3-2~bpo12+1)".to_owned(),
            "No bootable device.  Retrying in 60 seconds.".to_owned(),
        ]);
        assert_eq!(w.failure().unwrap().kind, FailureKind::NoBootableDevice);
    }

    #[test]
    fn probe_line_variants() {
        assert!(Probe::parse("REHOST-PROBE ip=10.0.2.15/24 ifaces=ens3:none").is_none());
        // The minimal form: root and ip only.
        let c = Probe::parse("REHOST-PROBE root=/dev/vda1 ip=10.0.2.50/24").unwrap();
        assert_eq!(c.root, "/dev/vda1");
        assert_eq!(c.ip, vec!["10.0.2.50/24"]);
        assert!(c.ifaces.is_empty() && c.modules.is_empty());
        assert!(Probe::parse("no marker root=/dev/sda1").is_none());
        let c = Probe::parse(
            "noise REHOST-PROBE root=/dev/vda1 ip=10.0.2.15/24,,10.0.2.16/24 extra=1 ifaces=ens3:10.0.2.15/24,ens3:10.0.2.16/24,eth1 modules=",
        )
        .unwrap();
        assert_eq!(c.root, "/dev/vda1");
        assert_eq!(c.ip, vec!["10.0.2.15/24", "10.0.2.16/24"]);
        assert_eq!(c.addresses("ens3"), vec!["10.0.2.15/24", "10.0.2.16/24"]);
        assert_eq!(c.ifaces[2], ("eth1".to_owned(), "none".to_owned()));
        assert!(c.modules.is_empty());
        // Items are capped.
        let many: Vec<String> = (0..1000).map(|i| format!("m{i}")).collect();
        let c = Probe::parse(&format!(
            "REHOST-PROBE root=x ip={0} modules={0}",
            many.join(",")
        ))
        .unwrap();
        assert_eq!(c.modules.len(), MAX_PROBE_ITEMS);
        assert_eq!(c.ip.len(), MAX_PROBE_ITEMS);
    }

    #[test]
    fn expect_pattern_records_first_match() {
        let mut w = Watch::new(Some(regex::Regex::new("hello (world|there)").unwrap()));
        w.line("say hello there");
        w.line("say hello world");
        assert_eq!(w.expected(), Some("say hello there"));
    }

    #[test]
    fn tail_is_bounded_and_lines_capped() {
        let mut w = Watch::new(None);
        for i in 0..100 {
            w.line(&format!("line {i}"));
        }
        let t = w.tail();
        assert_eq!(t.len(), TAIL_LINES);
        assert_eq!(t[0], "line 60");
        assert_eq!(t[TAIL_LINES - 1], "line 99");
        let long = "x".repeat(MAX_LINE * 3);
        assert_eq!(clean_line(&long).len(), MAX_LINE);
        assert_eq!(clean_line("a\u{1b}[0;32mb\u{1b}c\u{7}d\te"), "abd\te");
    }

    #[test]
    fn splitter_keeps_partial_lines() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"abc\ndef"), vec!["abc"]);
        assert_eq!(s.partial(), "def");
        assert_eq!(s.push(b"\n"), vec!["def"]);
        assert_eq!(s.partial(), "");
        let long = vec![b'y'; MAX_LINE + 10];
        let lines = s.push(&long);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].len(), MAX_LINE);
        assert_eq!(s.partial().len(), 10);
    }

    #[test]
    fn hostile_bytes_never_panic() {
        // Deterministic xorshift; random bytes through the splitter and the watch.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut s = LineSplitter::default();
        let mut w = Watch::new(None);
        for _ in 0..1000 {
            let mut buf = Vec::with_capacity(256);
            for _ in 0..256 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.push(x.to_le_bytes()[0]);
            }
            buf.extend_from_slice(b"REHOST-PROBE root=\x1b[ ip=,none ifaces=:,:: modules=,\n");
            for l in s.push(&buf) {
                w.line(&l);
            }
        }
        assert!(w.tail().len() <= TAIL_LINES);
        assert!(w.probe().is_some());
    }
}
