//! Tests of `windows-firstboot` over synthetic guests (hives built with `hive::testkit`), with
//! `hive::Hive` and `hivexregedit` reading the result back.

use std::collections::BTreeSet;
use std::process::Command;

use hive::testkit::HiveBuilder;
use hive::{Hive, ValueType};

use super::super::testkit::{WIN2008R2, WIN2019, WinVersion, guest, report, system_hive};
use super::super::{multi_sz, sz};
use super::*;
use crate::testkit::MemFs;
use crate::{Origin, Plan, PlanOptions, Recipe, apply, plan};

const SYSTEM: &str = "/Windows/System32/config/SYSTEM";
const SOFTWARE: &str = "/Windows/System32/config/SOFTWARE";
const STATIC_GUID: &str = "{6A1B2C3D-0000-4000-8000-00000000000B}";
const DHCP_GUID: &str = "{1A1B2C3D-0000-4000-8000-00000000000A}";
const TOOLS_CODE: &str = "{9D1B9B6A-5A51-4E3B-9A8C-5C3D0C1E2F00}";

fn recipe(steps: &str) -> Recipe {
    let text = format!(
        "schema = 1\nname = \"w\"\ndescription = \"d\"\n[match]\nos_type = \"windows\"\n{steps}"
    );
    Recipe::parse(&text, Origin::Inline).unwrap()
}

fn firstboot(extra: &str) -> Recipe {
    recipe(&format!("[[step]]\nfixer = \"windows-firstboot\"\n{extra}"))
}

/// A VMware guest's SYSTEM hive plus two Tcpip interfaces: one DHCP, one static with two
/// addresses, a gateway and two DNS servers.
fn system_with_interfaces(v: WinVersion) -> HiveBuilder {
    let base = "ControlSet001\\Services\\Tcpip\\Parameters\\Interfaces";
    let s = format!("{base}\\{STATIC_GUID}");
    let d = format!("{base}\\{DHCP_GUID}");
    system_hive(v)
        .value(&d, "EnableDHCP", ValueType::Dword, &1u32.to_le_bytes())
        .value(&d, "IPAddress", ValueType::MultiSz, &multi_sz(&["0.0.0.0"]))
        .value(&s, "EnableDHCP", ValueType::Dword, &0u32.to_le_bytes())
        .value(
            &s,
            "IPAddress",
            ValueType::MultiSz,
            &multi_sz(&["192.168.10.20", "192.168.10.21"]),
        )
        .value(
            &s,
            "SubnetMask",
            ValueType::MultiSz,
            &multi_sz(&["255.255.255.0", "255.255.0.0"]),
        )
        .value(
            &s,
            "DefaultGateway",
            ValueType::MultiSz,
            &multi_sz(&["192.168.10.1"]),
        )
        .value(
            &s,
            "NameServer",
            ValueType::Sz,
            &sz("192.168.10.53,10.0.0.53"),
        )
}

/// A SOFTWARE hive with VMware Tools as an MSI product (64-bit view), a 32-bit copy of the
/// same entry, a non-MSI Xen entry and an unrelated product.
fn software_with_tools(v: WinVersion) -> Vec<u8> {
    let cv = "Microsoft\\Windows NT\\CurrentVersion";
    let un = "Microsoft\\Windows\\CurrentVersion\\Uninstall";
    HiveBuilder::new()
        .value(cv, "ProductName", ValueType::Sz, &sz(v.product))
        .value(
            cv,
            "CurrentBuildNumber",
            ValueType::Sz,
            &sz(&v.build.to_string()),
        )
        .value(
            &format!("{un}\\{}", TOOLS_CODE.to_ascii_lowercase()),
            "DisplayName",
            ValueType::Sz,
            &sz("VMware Tools"),
        )
        .value(
            &format!("WOW6432Node\\{un}\\{TOOLS_CODE}"),
            "DisplayName",
            ValueType::Sz,
            &sz("VMware Tools"),
        )
        .value(
            &format!("{un}\\XenTools"),
            "DisplayName",
            ValueType::Sz,
            &sz("Citrix XenServer Tools 6.5"),
        )
        .value(
            &format!("{un}\\{{11111111-2222-3333-4444-555555555555}}"),
            "DisplayName",
            ValueType::Sz,
            &sz("Some Database"),
        )
        .value(
            &format!("{cv}\\NetworkCards\\7"),
            "ServiceName",
            ValueType::Sz,
            &sz(STATIC_GUID),
        )
        .build()
}

fn full_guest(v: WinVersion) -> MemFs {
    let mut g = guest(v, &system_with_interfaces(v).build());
    g.add_file(SOFTWARE, &software_with_tools(v))
        .add_file("/Windows/Drivers/VirtIO/netkvm.inf", b"[Version]")
        .add_file("/Windows/Drivers/VirtIO/netkvm.sys", b"MZ")
        .add_file("/Windows/Drivers/VirtIO/Balloon.inf", b"[Version]")
        .add_file("/Windows/Drivers/VirtIO/bad&name.inf", b"[Version]");
    g
}

fn run(r: &Recipe, v: WinVersion, g: &MemFs) -> crate::Result<Plan> {
    let rep = report(v);
    plan(
        r,
        &rep,
        &rep.operating_systems[0],
        g,
        &PlanOptions::default(),
    )
}

fn created(p: &Plan, path: &str) -> String {
    p.changes()
        .find_map(|c| match c {
            Change::CreateFile {
                path: q, content, ..
            } if q == path => Some(String::from_utf8(content.clone()).unwrap()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{path} not created"))
}

fn system_after(p: &Plan) -> (Vec<u8>, Vec<u8>, String) {
    p.changes()
        .find_map(|c| match c {
            Change::EditHive {
                path,
                old,
                new,
                reg,
            } if path == SYSTEM => Some((old.clone(), new.clone(), reg.clone())),
            _ => None,
        })
        .expect("SYSTEM edited")
}

#[test]
fn registers_the_hook_and_plans_its_files() {
    let g = full_guest(WIN2019);
    let p = run(&firstboot(""), WIN2019, &g).unwrap();
    let paths: Vec<&str> = p.changes().map(Change::path).collect();
    assert_eq!(
        paths,
        vec![
            "/Windows/rehost",
            "/Windows/rehost/firstboot.cmd",
            "/Windows/rehost/nic.ps1",
            SYSTEM
        ]
    );
    assert!(matches!(
        p.changes().next(),
        Some(Change::Mkdir { mode: 0o755, .. })
    ));
    // The registry values, read back with our reader.
    let (old, new, reg) = system_after(&p);
    let h = Hive::from_bytes(new).unwrap();
    let setup = h.open_path("Setup").unwrap().expect("Setup key");
    let st = setup.value("SetupType").unwrap().unwrap();
    assert_eq!((st.kind, st.as_dword()), (ValueType::Dword, Some(2)));
    let cl = setup.value("CmdLine").unwrap().unwrap();
    assert_eq!(cl.kind, ValueType::Sz);
    assert_eq!(
        cl.as_string().unwrap(),
        "cmd.exe /c %SystemRoot%\\rehost\\firstboot.cmd"
    );
    assert_eq!(setup.values().unwrap().len(), 2, "nothing else in Setup");
    // Only the Setup key differs from the hive before.
    assert_eq!(
        reg,
        format!(
            "{}\n\n[HKEY_LOCAL_MACHINE\\SYSTEM\\Setup]\n\"CmdLine\"=\"cmd.exe /c %SystemRoot%\\\\rehost\\\\firstboot.cmd\"\n\"SetupType\"=dword:00000002\n",
            hive::REG_HEADER
        ),
        "{reg}"
    );
    assert!(
        Hive::from_bytes(old)
            .unwrap()
            .open_path("Setup")
            .unwrap()
            .is_none()
    );
    // The summary names every step.
    let human = p.render_human();
    for s in [
        "install driver package Balloon.inf",
        "install driver package netkvm.inf",
        &format!("uninstall VMware Tools {TOOLS_CODE}"),
        "bring offline disks online",
        &format!("static IP of interface {STATIC_GUID} to virtio NIC 1"),
        "driver package \"bad_name.inf\" has an odd name, not installed",
        "Citrix XenServer Tools 6.5 is not a windows installer product (XenTools), not uninstalled",
    ] {
        assert!(human.contains(s), "{s} missing in {human}");
    }
    assert!(!human.contains("Some Database"), "{human}");
    assert_eq!(created(&p, "/Windows/rehost/nic.ps1"), nic_ps1());
}

/// Every label a `goto` or `call :` names in a cmd script, and every label defined.
fn labels(script: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut used = BTreeSet::new();
    let mut defined = BTreeSet::new();
    for line in script.lines() {
        let l = line.trim();
        if let Some(d) = l.strip_prefix(':') {
            defined.insert(d.to_ascii_lowercase());
            continue;
        }
        for (kw, skip_colon) in [("goto ", true), ("call :", false)] {
            let mut rest = l;
            while let Some(i) = rest.find(kw) {
                let after = &rest[i + kw.len()..];
                let name: String = after
                    .trim_start_matches(if skip_colon { ":" } else { "" })
                    .chars()
                    .take_while(|c| {
                        c.is_ascii_alphanumeric() || *c == '_' || *c == '%' || *c == '~'
                    })
                    .collect();
                if name != "eof" && !name.contains('%') && !name.is_empty() {
                    used.insert(name.to_ascii_lowercase());
                }
                rest = after;
            }
        }
    }
    (used, defined)
}

#[test]
fn the_script_is_crlf_ascii_bounded_and_removes_itself() {
    let g = full_guest(WIN2019);
    let p = run(&firstboot(""), WIN2019, &g).unwrap();
    let s = created(&p, "/Windows/rehost/firstboot.cmd");
    // CRLF everywhere, ASCII only, no bare LF or CR.
    assert!(s.is_ascii());
    assert!(s.ends_with("\r\n"));
    assert_eq!(s.matches('\n').count(), s.matches("\r\n").count());
    assert_eq!(s.matches('\r').count(), s.matches("\r\n").count());
    let t = created(&p, "/Windows/rehost/nic.ps1");
    assert_eq!(t.matches('\n').count(), t.matches("\r\n").count());
    let lines: Vec<&str> = s.lines().collect();
    let pos = |needle: &str| {
        lines
            .iter()
            .position(|l| *l == needle)
            .unwrap_or_else(|| panic!("line {needle:?} missing in\n{s}"))
    };
    // Disarmed before the first step; re-armed only under :rearm.
    let disarm = pos(
        "\"%REG%\" add \"HKLM\\SYSTEM\\Setup\" /v SetupType /t REG_DWORD /d 0 /f >>\"%LOG%\" 2>&1",
    );
    let first_step = lines
        .iter()
        .position(|l| l.starts_with("call :attempt "))
        .unwrap();
    assert!(disarm < first_step);
    let rearm = pos(
        "\"%REG%\" add \"HKLM\\SYSTEM\\Setup\" /v SetupType /t REG_DWORD /d 2 /f >>\"%LOG%\" 2>&1",
    );
    assert!(rearm > pos(":rearm"));
    assert_eq!(
        lines.iter().filter(|l| l.contains("/d 2 /f")).count(),
        1,
        "one re-arm"
    );
    assert_eq!(pos("if %PENDING% gtr 0 goto rearm"), first_step + 5);
    // The steps, in order.
    let attempts: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("call :attempt "))
        .copied()
        .collect();
    assert_eq!(
        attempts,
        vec![
            "call :attempt s01 \"install driver package Balloon.inf\"",
            "call :attempt s02 \"install driver package netkvm.inf\"",
            &format!("call :attempt s03 \"uninstall VMware Tools {TOOLS_CODE}\""),
            "call :attempt s04 \"bring offline disks online\"",
            &format!("call :attempt s05 \"static IP of interface {STATIC_GUID} to virtio NIC 1\""),
        ]
    );
    // Each command, as run.
    for l in [
        "\"%SystemRoot%\\System32\\pnputil.exe\" /add-driver \"%SystemRoot%\\Drivers\\VirtIO\\netkvm.inf\" /install >>\"%LOG%\" 2>&1",
        "\"%SystemRoot%\\System32\\pnputil.exe\" /add-driver \"%SystemRoot%\\Drivers\\VirtIO\\Balloon.inf\" /install >>\"%LOG%\" 2>&1",
        "call :codes 0 259 1641 3010",
        &format!(
            "start \"\" /wait \"%SystemRoot%\\System32\\msiexec.exe\" /x {TOOLS_CODE} /qn /norestart REBOOT=ReallySuppress /l*v \"%RH%\\msi-s03.log\""
        ),
        "call :codes 0 1605 1614 1641 3010",
        "\"%SystemRoot%\\System32\\diskpart.exe\" /s \"%RH%\\diskpart.txt\" >>\"%LOG%\" 2>&1",
        ">\"%RH%\\diskpart.txt\" echo select disk %DN%",
        ">>\"%RH%\\diskpart.txt\" echo online disk noerr",
        ">>\"%RH%\\diskpart.txt\" echo attributes disk clear readonly noerr",
        "if errorlevel 1 goto s04_done",
        "if %DN% lss 16 goto s04_next",
        ">\"%RH%\\diskpart.txt\" echo san policy=OnlineAll",
        "call :codes 0",
        "for /f \"usebackq delims=\" %%A in (`%PS% -NoProfile -NonInteractive -ExecutionPolicy Bypass -File %RH%\\nic.ps1 0`) do set \"NIC=%%A\"",
        "netsh interface ip set address name=\"%NIC%\" source=static address=192.168.10.20 mask=255.255.255.0 gateway=192.168.10.1 gwmetric=1 >>\"%LOG%\" 2>&1",
        "netsh interface ip add address name=\"%NIC%\" address=192.168.10.21 mask=255.255.0.0 >>\"%LOG%\" 2>&1",
        "netsh interface ip set dns name=\"%NIC%\" source=static address=192.168.10.53 register=primary validate=no >>\"%LOG%\" 2>&1",
        "netsh interface ip add dns name=\"%NIC%\" address=10.0.0.53 index=2 validate=no >>\"%LOG%\" 2>&1",
        &format!(
            ">>\"%LOG%\" echo [%DATE% %TIME%] static interface {STATIC_GUID} (192.168.10.20 mask 255.255.255.0, 192.168.10.21 mask 255.255.0.0) to virtio NIC 1: \"%NIC%\""
        ),
    ] {
        pos(l);
    }
    assert!(!s.contains("bad&name"), "odd names never reach the script");
    assert!(
        !s.contains("-File %RH%\\trust.ps1")
            && !p.changes().any(|c| c.path().ends_with("trust.ps1")),
        "windows 10+ packages are WHQL or attestation signed"
    );
    // Bounded attempts: markers .1 to .3, checked before, written before the step runs.
    for l in [
        "if exist \"%STATE%\\%~1.done\" goto :eof",
        "if exist \"%STATE%\\%~1.3\" goto attempt_given_up",
        "set N=3",
        "if not exist \"%STATE%\\%~1.2\" set N=2",
        "if not exist \"%STATE%\\%~1.1\" set N=1",
        ">\"%STATE%\\%~1.%N%\" echo attempt",
        "if %N% lss 3 set /a PENDING+=1",
    ] {
        pos(l);
    }
    assert!(pos(">\"%STATE%\\%~1.%N%\" echo attempt") < pos("call :%~1"));
    // Self-removal: the values before the fix (both absent) restored, state and helpers gone,
    // the script deleted, the log kept.
    assert_eq!(
        lines.iter().find(|l| l.starts_with("rem rehost-restore ")),
        Some(&"rem rehost-restore SetupType=absent CmdLine=absent")
    );
    let done = pos("call :log \"every step done or given up: removing the first-boot hook\"");
    for l in [
        "\"%REG%\" delete \"HKLM\\SYSTEM\\Setup\" /v CmdLine /f >>\"%LOG%\" 2>&1",
        "\"%REG%\" delete \"HKLM\\SYSTEM\\Setup\" /v SetupType /f >>\"%LOG%\" 2>&1",
        "if exist \"%STATE%\\\" rmdir /s /q \"%STATE%\"",
        "if exist \"%RH%\\nic.ps1\" del /f /q \"%RH%\\nic.ps1\"",
        "if exist \"%RH%\\diskpart.txt\" del /f /q \"%RH%\\diskpart.txt\"",
        "(goto) 2>nul & del /f /q \"%~f0\"",
    ] {
        assert!(pos(l) > done && pos(l) < pos(":rearm"), "{l}");
    }
    assert!(!s.contains("firstboot.log\" del") && !s.contains("del /f /q \"%LOG%\""));
    // Static checks in place of a cmd.exe parser: every label used is defined, each defined
    // once; no line has unbalanced parentheses or an odd number of quotes; no backward goto
    // outside the :codes loop (so no loop over boots inside one run).
    let (used, defined) = labels(&s);
    assert!(
        used.is_subset(&defined),
        "undefined: {:?}",
        used.difference(&defined)
    );
    let defs: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with(':'))
        .copied()
        .collect();
    assert_eq!(defs.len(), defined.len(), "labels defined once: {defs:?}");
    for l in &lines {
        if l.starts_with("rem ") {
            continue;
        }
        assert_eq!(l.matches('(').count(), l.matches(')').count(), "{l}");
        assert_eq!(l.matches('"').count() % 2, 0, "{l}");
    }
    for (i, l) in lines.iter().enumerate() {
        // `goto X` anywhere on the line (also after `if ...`).
        let Some(t) = l.split("goto ").nth(1).map(str::trim) else {
            continue;
        };
        if t == ":eof" {
            continue;
        }
        let target = pos(&format!(":{t}"));
        // The :codes loop shifts its arguments away; the disk loop is bounded by its counter.
        let bounded =
            t == "codes" || (t.ends_with("_next") && l.starts_with("if %DN% lss 16 goto "));
        assert!(target > i || bounded, "backward goto {t} at line {i}");
    }
    // Log messages go through `echo` unquoted: none may hold a redirection or command separator.
    for l in lines.iter().filter_map(|l| l.strip_prefix("call :log \"")) {
        assert!(!l.contains(['<', '>', '|', '&', '^']), "{l}");
    }
    // The re-armed CmdLine is exactly what planning writes (and detects as ours).
    let rearm_cmd = lines
        .iter()
        .find(|l| l.contains("/v CmdLine /t REG_SZ /d \"cmd.exe"))
        .unwrap();
    assert!(
        rearm_cmd
            .replace("%%", "%")
            .contains(&format!("/d \"{CMDLINE}\" /f")),
        "{rearm_cmd}"
    );
}

#[test]
fn legacy_pnputil_and_no_dns_validation_flag_before_2012() {
    let mut g = full_guest(WIN2008R2);
    g.add_dir("/Windows/rehost");
    let p = run(&firstboot(""), WIN2008R2, &g).unwrap();
    let s = created(&p, "/Windows/rehost/firstboot.cmd");
    assert!(s.contains(
        "\"%SystemRoot%\\System32\\pnputil.exe\" -i -a \"%SystemRoot%\\Drivers\\VirtIO\\netkvm.inf\" >>\"%LOG%\" 2>&1\r\n"
    ));
    assert!(!s.contains("/add-driver"));
    // Red Hat-signed packages: their publisher is trusted first, by a PowerShell helper.
    let trust = s
        .find("call :attempt s01 \"trust the publishers of the staged driver packages\"")
        .unwrap();
    assert!(
        trust
            < s.find("call :attempt s02 \"install driver package Balloon.inf\"")
                .unwrap()
    );
    assert!(s.contains(
        "\r\n:s01\r\nif not exist \"%PS%\" goto s01_nops\r\n%PS% -NoProfile -NonInteractive -ExecutionPolicy Bypass -File %RH%\\trust.ps1 %SystemRoot%\\Drivers\\VirtIO >>\"%LOG%\" 2>&1\r\nset RC=%ERRORLEVEL%\r\ncall :codes 0\r\n"
    ));
    assert!(s.contains("if exist \"%RH%\\trust.ps1\" del /f /q \"%RH%\\trust.ps1\"\r\n"));
    let t = created(&p, "/Windows/rehost/trust.ps1");
    assert_eq!(t, trust_ps1());
    assert_eq!(t.matches('\n').count(), t.matches("\r\n").count());
    for l in [
        "$store = New-Object System.Security.Cryptography.X509Certificates.X509Store 'TrustedPublisher', 'LocalMachine'",
        "    $cert = (Get-AuthenticodeSignature -FilePath $cat.FullName).SignerCertificate",
        "        $store.Add($cert)",
        "exit $failed",
    ] {
        assert!(t.lines().any(|x| x.trim_end_matches('\r') == l), "{l}");
    }
    // PowerShell braces balance.
    assert_eq!(t.matches('{').count(), t.matches('}').count());
    // 2008 R2 (6.1): netsh's default DNS validation.
    assert!(s.contains("register=primary >>"));
    assert!(!s.contains("validate=no"));
    assert!(
        !p.changes().any(|c| matches!(c, Change::Mkdir { .. })),
        "the folder exists"
    );
    let ip = StaticIp {
        guid: STATIC_GUID.into(),
        addresses: vec![("10.0.0.2".parse().unwrap(), "255.0.0.0".parse().unwrap())],
        gateways: vec![],
        dns: vec!["10.0.0.1".parse().unwrap()],
    };
    let step = static_ip_step("s09".into(), 0, &ip, false);
    assert!(step.body.contains(&"netsh interface ip set address name=\"%NIC%\" source=static address=10.0.0.2 mask=255.0.0.0 >>\"%LOG%\" 2>&1".to_owned()));
    assert!(step.body.contains(&"netsh interface ip set dns name=\"%NIC%\" source=static address=10.0.0.1 register=primary >>\"%LOG%\" 2>&1".to_owned()));
}

#[test]
fn static_ip_extraction_keeps_static_interfaces_only() {
    let v = WIN2019;
    let base = "ControlSet001\\Services\\Tcpip\\Parameters\\Interfaces";
    let second = "{0A1B2C3D-0000-4000-8000-00000000000C}";
    let sys = system_with_interfaces(v)
        .value(
            &format!("{base}\\{second}"),
            "EnableDHCP",
            ValueType::Dword,
            &0u32.to_le_bytes(),
        )
        .value(
            &format!("{base}\\{second}"),
            "IPAddress",
            ValueType::MultiSz,
            &multi_sz(&["10.1.1.5", "bogus&x"]),
        )
        .value(
            &format!("{base}\\{second}"),
            "SubnetMask",
            ValueType::MultiSz,
            &multi_sz(&["255.255.255.0"]),
        )
        .value(
            &format!("{base}\\{second}"),
            "NameServer",
            ValueType::Sz,
            &sz("10.1.1.1 10.1.1.2"),
        )
        .value(
            &format!("{base}\\not-a-guid"),
            "EnableDHCP",
            ValueType::Dword,
            &0u32.to_le_bytes(),
        )
        .build();
    let g = guest(v, &sys);
    let mut g2 = g.clone();
    g2.add_file(SOFTWARE, &software_with_tools(v));
    let rep = report(v);
    let os = &rep.operating_systems[0];
    let ctx = FixContext {
        fs: &g2,
        report: &rep,
        os,
    };
    let h = HiveEdit::open_required(&ctx, SYSTEM, SYSTEM_PREFIX).unwrap();
    let sw = HiveEdit::open_required(&ctx, SOFTWARE, SOFTWARE_PREFIX).unwrap();
    let mut notes = Vec::new();
    let ips = static_ips(&h, Some(&sw), "ControlSet001", &mut notes).unwrap();
    // NetworkCards lists STATIC_GUID, so it comes first although its GUID sorts later.
    assert_eq!(
        ips,
        vec![
            StaticIp {
                guid: STATIC_GUID.into(),
                addresses: vec![
                    (
                        "192.168.10.20".parse().unwrap(),
                        "255.255.255.0".parse().unwrap()
                    ),
                    (
                        "192.168.10.21".parse().unwrap(),
                        "255.255.0.0".parse().unwrap()
                    ),
                ],
                gateways: vec!["192.168.10.1".parse().unwrap()],
                dns: vec![
                    "192.168.10.53".parse().unwrap(),
                    "10.0.0.53".parse().unwrap()
                ],
            },
            StaticIp {
                guid: second.into(),
                addresses: vec![(
                    "10.1.1.5".parse().unwrap(),
                    "255.255.255.0".parse().unwrap()
                )],
                gateways: vec![],
                dns: vec!["10.1.1.1".parse().unwrap(), "10.1.1.2".parse().unwrap()],
            },
        ]
    );
    assert_eq!(
        notes,
        vec![format!(
            "interface {second}: \"bogus_x\" is not an IPv4 address, left out"
        )]
    );
    // Without SOFTWARE the order is by GUID.
    let mut notes = Vec::new();
    let ips = static_ips(&h, None, "ControlSet001", &mut notes).unwrap();
    let order: Vec<&str> = ips.iter().map(|s| s.guid.as_str()).collect();
    assert_eq!(order, vec![second, STATIC_GUID]);
    // Two static interfaces: two steps, NIC 1 and NIC 2, in that order.
    let p = run(&firstboot(""), v, &g2).unwrap();
    let s = created(&p, "/Windows/rehost/firstboot.cmd");
    let a = s
        .find(&format!(
            "static IP of interface {STATIC_GUID} to virtio NIC 1"
        ))
        .unwrap();
    let b = s
        .find(&format!("static IP of interface {second} to virtio NIC 2"))
        .unwrap();
    assert!(a < b);
    assert!(s.contains("-File %RH%\\nic.ps1 1`"));
    // An address without a mask is left out with a note.
    let mut notes = Vec::new();
    let one = ipv4s(&["1.2.3.4".into(), "0.0.0.0".into()], &mut notes, "x");
    assert_eq!(one, vec![Ipv4Addr::new(1, 2, 3, 4)]);
    assert!(notes.is_empty());
}

#[test]
fn tools_product_codes_come_from_the_uninstall_keys() {
    let v = WIN2019;
    let mut g = guest(v, &system_hive(v).build());
    g.add_file(SOFTWARE, &software_with_tools(v));
    let rep = report(v);
    let ctx = FixContext {
        fs: &g,
        report: &rep,
        os: &rep.operating_systems[0],
    };
    let sw = HiveEdit::open_required(&ctx, SOFTWARE, SOFTWARE_PREFIX).unwrap();
    let mut notes = Vec::new();
    let products = tool_products(&sw, &mut notes).unwrap();
    assert_eq!(
        products,
        vec![Product {
            code: TOOLS_CODE.into(),
            name: "VMware Tools".into()
        }],
        "the 64-bit and 32-bit entries are one product"
    );
    assert_eq!(
        notes,
        vec![
            "Citrix XenServer Tools 6.5 is not a windows installer product (XenTools), not uninstalled"
        ]
    );
    assert_eq!(
        guid("{9d1b9b6a-5a51-4e3b-9a8c-5c3d0c1e2f00}").as_deref(),
        Some(TOOLS_CODE)
    );
    assert_eq!(guid("9d1b9b6a-5a51-4e3b-9a8c-5c3d0c1e2f00"), None);
    assert_eq!(guid("{9d1b9b6a-5a51-4e3b-9a8c-5c3d0c1e2f0}"), None);
    assert_eq!(guid("{9d1b9b6a-5a51-4e3b-9a8c-5c3d0c1e2fg0}"), None);
    // remove_tools = false: no uninstall step.
    let p = run(&firstboot("remove_tools = false\n"), v, &g).unwrap();
    assert!(!created(&p, "/Windows/rehost/firstboot.cmd").contains("msiexec"));
}

#[test]
fn planning_again_after_apply_plans_nothing() {
    for v in [WIN2008R2, WIN2019] {
        let mut g = full_guest(v);
        let r = firstboot("");
        let p = run(&r, v, &g).unwrap();
        assert_eq!(apply(&p, &mut g).unwrap(), p.changes().count());
        let again = run(&r, v, &g).unwrap();
        assert!(again.is_empty(), "{}", again.render_human());
        assert!(
            again.steps[0].summary.contains("first boot already runs"),
            "{}",
            again.steps[0].summary
        );
        // The restore line still holds the values from before the first run.
        let s =
            String::from_utf8(g.file("/Windows/rehost/firstboot.cmd").unwrap().to_vec()).unwrap();
        assert!(s.contains("rem rehost-restore SetupType=absent CmdLine=absent\r\n"));
    }
}

#[test]
fn earlier_values_are_restored_and_foreign_hooks_refused() {
    let v = WIN2019;
    // An installed system's usual values: SetupType 0, CmdLine empty.
    let sys = system_hive(v)
        .value("Setup", "SetupType", ValueType::Dword, &0u32.to_le_bytes())
        .value("Setup", "CmdLine", ValueType::Sz, &sz(""))
        .value(
            "Setup",
            "SystemSetupInProgress",
            ValueType::Dword,
            &0u32.to_le_bytes(),
        )
        .build();
    let g = guest(v, &sys);
    let p = run(&firstboot(""), v, &g).unwrap();
    let s = created(&p, "/Windows/rehost/firstboot.cmd");
    assert!(s.contains("rem rehost-restore SetupType=dword:0 CmdLine=sz:\r\n"));
    assert!(s.contains(
        "\"%REG%\" add \"HKLM\\SYSTEM\\Setup\" /v CmdLine /t REG_SZ /d \"\" /f >>\"%LOG%\" 2>&1\r\n\"%REG%\" add \"HKLM\\SYSTEM\\Setup\" /v SetupType /t REG_DWORD /d 0 /f >>\"%LOG%\" 2>&1\r\nif exist"
    ));
    assert_eq!(
        parse_restore(&s),
        Some((Restore::Dword(0), Restore::Sz(String::new())))
    );
    assert_eq!(
        parse_restore("rem rehost-restore SetupType=dword:x CmdLine=absent"),
        None
    );
    assert_eq!(
        parse_restore("rem rehost-restore SetupType=absent CmdLine=sz:a&b"),
        None
    );
    assert_eq!(
        parse_restore("rem rehost-restore SetupType=dword:0 CmdLine=expand_sz:%x%"),
        None
    );
    // Somebody else's pending setup command.
    let sys = system_hive(v)
        .value("Setup", "SetupType", ValueType::Dword, &1u32.to_le_bytes())
        .value("Setup", "CmdLine", ValueType::Sz, &sz("setup.exe -oobe"))
        .build();
    let e = run(&firstboot(""), v, &guest(v, &sys)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unsupported windows guest: HKLM\\SYSTEM\\Setup SetupType is 1 with CmdLine \"setup.exe -oobe\": another setup command is pending and the first-boot step would replace it"
    );
    let sys = system_hive(v)
        .value(
            "Setup",
            "SystemSetupInProgress",
            ValueType::Dword,
            &1u32.to_le_bytes(),
        )
        .build();
    let e = run(&firstboot(""), v, &guest(v, &sys)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unsupported windows guest: windows setup is in progress (SystemSetupInProgress=1): the setup command hook is in use"
    );
    let sys = system_hive(v)
        .value(
            "Setup",
            "OOBEInProgress",
            ValueType::Dword,
            &1u32.to_le_bytes(),
        )
        .build();
    let e = run(&firstboot(""), v, &guest(v, &sys)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unsupported windows guest: windows setup is in progress (OOBEInProgress=1): the setup command hook is in use"
    );
    // A CmdLine that cannot be written back safely is restored empty, with a note.
    let sys = system_hive(v)
        .value("Setup", "CmdLine", ValueType::Sz, &sz("a & b"))
        .build();
    let p = run(&firstboot(""), v, &guest(v, &sys)).unwrap();
    assert!(
        p.steps[0]
            .summary
            .contains("Setup CmdLine \"a _ b\" cannot be written back by a script")
    );
    assert!(created(&p, "/Windows/rehost/firstboot.cmd").contains("CmdLine=sz:\r\n"));
}

#[test]
fn steps_can_be_turned_off() {
    let v = WIN2019;
    let g = full_guest(v);
    let p = run(
        &firstboot("drivers = false\nremove_tools = false\ndisks = false\nstatic_ip = false\n"),
        v,
        &g,
    )
    .unwrap();
    assert!(p.is_empty());
    assert_eq!(p.steps[0].summary, "no first-boot steps to run");
    let p = run(&firstboot("disks = false\nstatic_ip = false\n"), v, &g).unwrap();
    let paths: Vec<&str> = p.changes().map(Change::path).collect();
    assert_eq!(
        paths,
        vec!["/Windows/rehost", "/Windows/rehost/firstboot.cmd", SYSTEM]
    );
    let s = created(&p, "/Windows/rehost/firstboot.cmd");
    assert!(
        !s.contains("-File %RH%\\nic.ps1") && !s.contains("diskpart.exe"),
        "{s}"
    );
}

/// The shipped recipe's order: virtio-win stages the packages, firstboot sees them through the
/// plan overlay and installs each one.
#[test]
fn sees_the_packages_virtio_win_stages() {
    let src = tempfile::tempdir().unwrap();
    drivers::testkit::FakeTree::standard()
        .write_iso_layout(src.path())
        .unwrap();
    let v = WIN2019;
    let g = guest(v, &system_hive(v).build());
    let r = recipe("[[step]]\nfixer = \"virtio-win\"\n[[step]]\nfixer = \"windows-firstboot\"\n");
    let mut o = PlanOptions::default();
    let mut t = toml::Table::new();
    t.insert(
        "virtio_win".into(),
        toml::Value::String(src.path().display().to_string()),
    );
    o.overrides.insert("virtio-win".into(), t);
    let rep = report(v);
    let p = plan(&r, &rep, &rep.operating_systems[0], &g, &o).unwrap();
    let staged: Vec<String> = p
        .changes()
        .filter_map(|c| match c {
            Change::CreateFile { path, .. } => path
                .strip_prefix("/Windows/Drivers/VirtIO/")
                .filter(|n| n.ends_with(".inf"))
                .map(str::to_owned),
            _ => None,
        })
        .collect();
    assert!(!staged.is_empty());
    let s = created(&p, "/Windows/rehost/firstboot.cmd");
    for inf in &staged {
        assert!(
            s.contains(&format!(
                "/add-driver \"%SystemRoot%\\Drivers\\VirtIO\\{inf}\" /install"
            )),
            "{inf}"
        );
    }
    assert!(
        !s.contains("viostor.inf"),
        "the boot driver is installed already"
    );
    // Two EditHive changes of SYSTEM: virtio-win's and ours, ours on top of it.
    let edits = p
        .changes()
        .filter(|c| matches!(c, Change::EditHive { path, .. } if path == SYSTEM))
        .count();
    assert_eq!(edits, 2);
}

/// Every key and value of the edited SYSTEM hive as `hivexregedit --export` prints it.
#[test]
fn hivexregedit_reparses_the_edited_system_hive() {
    let g = full_guest(WIN2019);
    let p = run(&firstboot(""), WIN2019, &g).unwrap();
    let (_, new, _) = system_after(&p);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("SYSTEM");
    std::fs::write(&f, &new).unwrap();
    let out = match Command::new("hivexregedit")
        .arg("--export")
        .arg(&f)
        .arg("\\")
        .output()
    {
        Ok(o) => o,
        Err(_) => {
            println!("skipping: hivexregedit not found");
            return;
        }
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let setup = text
        .split("\n\n")
        .find(|b| b.starts_with("[\\Setup]"))
        .unwrap_or_else(|| panic!("no [\\Setup] in {text}"));
    let mut lines: Vec<&str> = setup.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        vec![
            // hivexregedit writes REG_SZ as hex(1) of the UTF-16LE bytes.
            &format!(
                "\"CmdLine\"=hex(1):{}",
                sz(CMDLINE)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(",")
            )[..],
            "\"SetupType\"=dword:00000002",
            "[\\Setup]",
        ]
    );
    assert!(text.contains("[\\ControlSet001\\Services\\Tcpip\\Parameters\\Interfaces\\{6A1B2C3D-0000-4000-8000-00000000000B}]"));
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// Hostile SYSTEM and SOFTWARE hives (byte flips and truncations of valid ones) give a plan
/// or an error, never a panic (house style S17), through the fuzz harness body.
#[test]
fn mutated_hives_never_panic() {
    let v = WIN2019;
    let system = system_with_interfaces(v).build();
    let software = software_with_tools(v);
    // The seeds are valid: they plan the full script.
    let mut g = MemFs::new();
    g.add_file(SYSTEM, &system)
        .add_file(SOFTWARE, &software)
        .add_file("/Windows/Drivers/VirtIO/netkvm.inf", b"");
    let p = run(&firstboot(""), v, &g).unwrap();
    assert_eq!(p.changes().count(), 4);
    fuzz_firstboot(&system, &software);
    let mut seed = 0x5eed_f00d_u64;
    for i in 0..1000u32 {
        let (mut sys, mut sw) = (system.clone(), software.clone());
        let target = if i % 2 == 0 { &mut sys } else { &mut sw };
        if i % 10 == 9 {
            let len = usize::try_from(xorshift(&mut seed) % target.len() as u64).unwrap();
            target.truncate(len);
        } else {
            for _ in 0..1 + xorshift(&mut seed) % 4 {
                let at = usize::try_from(xorshift(&mut seed) % target.len() as u64).unwrap();
                target[at] ^= u8::try_from(xorshift(&mut seed) & 0xff).unwrap() | 1;
            }
        }
        fuzz_firstboot(&sys, &sw);
    }
}

/// The real SYSTEM hive of dissect.regf 3.14's tests (fetched by `tests/windows.rs`), where
/// `Setup` holds what an installed Windows has: `SetupType` 0, `CmdLine` an empty REG_SZ,
/// `OOBEInProgress` 0, and many other values that must stay as they are.
#[test]
fn on_the_real_system_hive() {
    let home = std::env::var_os("HOME").unwrap_or_default();
    let f = std::path::Path::new(&home).join(".cache/rehost/fixtures/dissect-regf-3.14/SYSTEM");
    let Ok(real) = std::fs::read(&f) else {
        println!(
            "skipping: {} not fetched (tests/windows.rs fetches it)",
            f.display()
        );
        return;
    };
    let v = WIN2019;
    let mut g = guest(v, &real);
    let p = run(&firstboot(""), v, &g).unwrap();
    let s = created(&p, "/Windows/rehost/firstboot.cmd");
    assert!(s.contains("rem rehost-restore SetupType=dword:0 CmdLine=sz:\r\n"));
    let (old, new, reg) = system_after(&p);
    let (before, after) = (
        Hive::from_bytes(old).unwrap(),
        Hive::from_bytes(new).unwrap(),
    );
    let values = |h: &Hive| {
        let mut v: Vec<(String, ValueType, Vec<u8>)> = h
            .open_path("Setup")
            .unwrap()
            .unwrap()
            .values()
            .unwrap()
            .into_iter()
            .map(|v| (v.name.clone(), v.kind, v.data))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let (vb, va) = (values(&before), values(&after));
    assert_eq!(vb.len(), va.len(), "no value added or removed");
    for (b, a) in vb.iter().zip(&va) {
        match b.0.as_str() {
            "SetupType" => assert_eq!(
                (a.1, a.2.clone()),
                (ValueType::Dword, 2u32.to_le_bytes().to_vec())
            ),
            "CmdLine" => assert_eq!((a.1, a.2.clone()), (ValueType::Sz, sz(CMDLINE))),
            _ => assert_eq!(a, b, "{} unchanged", b.0),
        }
    }
    assert_eq!(reg.matches("\n\"").count(), 2, "{reg}");
    apply(&p, &mut g).unwrap();
    assert!(run(&firstboot(""), v, &g).unwrap().is_empty());
}
