use super::*;
use crate::error::Position;
use crate::osmap::OsFolder;
use crate::testkit::{encode_inf, inf_text, standard_drivers};

fn target(major: u32, minor: u32, build: u32, server: bool) -> WindowsTarget {
    WindowsTarget {
        major,
        minor,
        build,
        server,
        arch: Arch::Amd64,
    }
}

fn fake(name: &str, folder: OsFolder) -> (Vec<u8>, InfDriver) {
    let d = standard_drivers()
        .into_iter()
        .find(|d| d.name == name)
        .unwrap();
    let bytes = encode_inf(&inf_text(&d, folder, Arch::Amd64), d.encoding);
    let drv = Inf::parse(&bytes).unwrap().driver(Arch::Amd64).unwrap();
    (bytes, drv)
}

#[test]
fn viostor_utf16_field_by_field() {
    let (bytes, d) = fake("viostor", OsFolder::W2k19);
    assert_eq!(&bytes[..2], &[0xFF, 0xFE]);
    assert_eq!(d.encoding, Encoding::Utf16Le);
    let v = &d.version;
    assert_eq!(v.signature, "$Windows NT$");
    assert_eq!(v.class.as_deref(), Some("SCSIAdapter"));
    assert_eq!(
        v.class_guid.as_deref(),
        Some("{4D36E97B-E325-11CE-BFC1-08002BE10318}")
    );
    assert_eq!(v.provider.as_deref(), Some("Rehost Fake Virtio"));
    let dv = v.driver_ver.unwrap();
    assert_eq!(dv.date, (2024, 6, 1));
    assert_eq!(dv.version, Some([100, 95, 104, 26200]));
    assert_eq!(dv.to_string(), "06/01/2024,100.95.104.26200");
    assert_eq!(v.catalog_file.as_deref(), Some("viostor.cat"));

    assert_eq!(d.manufacturers.len(), 1);
    let m = &d.manufacturers[0];
    assert_eq!(m.name, "Rehost Fake Virtio");
    assert_eq!(m.models_section, "FAKEVIRT");
    assert_eq!(m.decorations.len(), 1);
    let deco = &m.decorations[0];
    assert_eq!(deco.text, "NTamd64.10.0...17763");
    assert_eq!(deco.arch, Some(Arch::Amd64));
    assert_eq!((deco.major, deco.minor), (Some(10), Some(0)));
    assert_eq!((deco.product_type, deco.suite_mask), (None, None));
    assert_eq!(deco.build, Some(17763));

    assert_eq!(d.models.len(), 2);
    let m0 = &d.models[0];
    assert_eq!(m0.section, "FAKEVIRT.NTamd64.10.0...17763");
    assert_eq!(m0.description, "Fake VirtIO Block Controller");
    assert_eq!(m0.install_section, "viostor_inst");
    assert_eq!(
        m0.hardware_ids,
        [
            "PCI\\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00",
            "PCI\\VEN_1AF4&DEV_1001"
        ]
    );
    // The second entry is split with a line continuation and ends in a comment.
    assert_eq!(
        d.models[1].hardware_ids,
        ["PCI\\VEN_1AF4&DEV_1042&SUBSYS_11001AF4&REV_01"]
    );

    assert_eq!(d.installs.len(), 1);
    let i = &d.installs[0];
    assert_eq!(i.base, "viostor_inst");
    assert_eq!(i.section, "viostor_inst");
    assert_eq!(
        i.copy_files,
        [CopyFile {
            name: "viostor.sys".into(),
            source: None,
            flags: 2,
            dest: Some(DestDir {
                dirid: 12,
                subdir: None
            }),
        }]
    );
    assert_eq!(
        i.copy_files[0]
            .dest
            .as_ref()
            .unwrap()
            .system_root_relative()
            .as_deref(),
        Some("System32\\drivers")
    );
    assert_eq!(
        i.add_reg,
        [AddReg {
            root: "HKR".into(),
            subkey: String::new(),
            value_name: Some("FakeTestFlag".into()),
            flags: 0x0001_0001,
            values: vec!["1".into()],
        }]
    );
    assert_eq!(
        i.hw_add_reg,
        [AddReg {
            root: "HKR".into(),
            subkey: "Interrupt Management\\MessageSignaledInterruptProperties".into(),
            value_name: Some("MSISupported".into()),
            flags: 0x0001_0001,
            values: vec!["1".into()],
        }]
    );
    assert_eq!(i.services.len(), 1);
    let s = &i.services[0];
    assert_eq!(s.name, "viostor");
    assert_eq!(s.flags, 2);
    assert_eq!(s.section, "viostor_Service_Inst");
    assert_eq!(
        s.display_name.as_deref(),
        Some("Fake VirtIO Block Controller Service")
    );
    assert_eq!(s.service_type, 1);
    assert_eq!(s.start_type, 0);
    assert_eq!(s.error_control, 1);
    assert_eq!(s.load_order_group.as_deref(), Some("SCSI miniport"));
    assert_eq!(s.binary.raw, "%12%\\viostor.sys");
    assert_eq!(s.binary.dirid, Some(12));
    assert_eq!(s.binary.path, "viostor.sys");
    assert_eq!(
        s.binary.system_root_relative().as_deref(),
        Some("System32\\drivers\\viostor.sys")
    );
    assert_eq!(
        s.binary.image_path().as_deref(),
        Some("\\SystemRoot\\System32\\drivers\\viostor.sys")
    );
    assert_eq!(s.add_reg.len(), 2);
    assert_eq!(s.add_reg[0].subkey, "Parameters\\PnpInterface");
    assert_eq!(s.add_reg[0].value_name.as_deref(), Some("5"));
    assert_eq!(s.add_reg[0].flags, 0x0001_0001);
    assert_eq!(s.add_reg[0].values, ["0x00000001"]);
    assert_eq!(s.add_reg[1].subkey, "Parameters");
    assert_eq!(s.add_reg[1].value_name.as_deref(), Some("BusType"));
    assert_eq!(d.source_disks_files, ["viostor.sys"]);
    assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    assert_eq!(d.services().len(), 1);
    assert_eq!(
        d.hardware_ids_for(&target(10, 0, 17763, true)),
        [
            "PCI\\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00",
            "PCI\\VEN_1AF4&DEV_1001",
            "PCI\\VEN_1AF4&DEV_1042&SUBSYS_11001AF4&REV_01"
        ]
    );
    assert!(d.hardware_ids_for(&target(10, 0, 14393, true)).is_empty());
}

#[test]
fn vioscsi_ansi_field_by_field() {
    let (bytes, d) = fake("vioscsi", OsFolder::W2k22);
    assert!(bytes.contains(&0xA9), "the copyright sign is one ansi byte");
    assert_eq!(d.encoding, Encoding::Ansi);
    assert_eq!(
        d.models[0].description,
        "Fake VirtIO SCSI Controller, \"pass-through\""
    );
    assert_eq!(d.manufacturers[0].decorations[0].build, Some(20348));
    let s = &d.installs[0].services[0];
    // ServiceType and ErrorControl are %strkey% tokens in this file.
    assert_eq!((s.service_type, s.start_type, s.error_control), (1, 0, 1));
    assert_eq!(s.load_order_group.as_deref(), Some("SCSI miniport"));
    assert_eq!(
        d.version.driver_ver.unwrap().version,
        Some([100, 95, 104, 26201])
    );
}

#[test]
fn netkvm_and_balloon_services() {
    let (_, d) = fake("netkvm", OsFolder::W10);
    let s = &d.services()[0];
    assert_eq!((s.name.as_str(), s.start_type), ("netkvm", 3));
    assert_eq!(s.load_order_group.as_deref(), Some("NDIS"));
    assert_eq!(d.version.class.as_deref(), Some("Net"));
    let (_, d) = fake("balloon", OsFolder::W2k8R2);
    let s = &d.services()[0];
    assert_eq!(s.load_order_group, None);
    assert_eq!(d.manufacturers[0].decorations[0].text, "NTamd64.6.1");
    assert_eq!(d.hardware_ids_for(&target(6, 1, 7601, true)).len(), 3);
}

#[test]
fn strings_substitution_rules() {
    let text = "[Version]\nSignature=$Chicago$\nProvider=%A% and %% and %12% and %nope%\n\
                [Strings]\nA=\"from strings\"\n[Strings.0409]\nA=\"us english\"\nB=only-localized\n";
    let inf = Inf::parse(text.as_bytes()).unwrap();
    assert_eq!(inf.encoding(), Encoding::Utf8);
    assert_eq!(inf.string("a"), Some("from strings"));
    assert_eq!(inf.string("B"), Some("only-localized"));
    let mut w = Vec::new();
    let got = inf
        .subst("%A% and %% and %12% and %nope%", 3, &mut w)
        .unwrap();
    assert_eq!(got, "from strings and % and %12% and %nope%");
    assert_eq!(w, ["line 3: unknown string key %nope%"]);
}

#[test]
fn sections_merge_and_lines_split() {
    let text = "; comment\n[A]\nk = \"v;1\" , two ; trailing\n[a]\nx,,\"q\"\"q\"\n";
    let inf = Inf::parse(text.as_bytes()).unwrap();
    assert_eq!(inf.sections().len(), 1);
    let s = inf.section("A").unwrap();
    assert_eq!(s.line, 2);
    assert_eq!(s.lines[0].key.as_deref(), Some("k"));
    assert_eq!(s.lines[0].fields, ["v;1", "two"]);
    assert_eq!(s.lines[1].key, None);
    assert_eq!(s.lines[1].fields, ["x", "", "q\"q"]);
    assert_eq!(s.lines[1].line, 5);
}

#[test]
fn bomless_utf16_and_utf8_bom() {
    let text = "[Version]\r\nSignature=\"$Windows NT$\"\r\n";
    let le: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
    assert_eq!(Inf::parse(&le).unwrap().encoding(), Encoding::Utf16Le);
    let mut u8bom = vec![0xEF, 0xBB, 0xBF];
    u8bom.extend_from_slice(text.as_bytes());
    let inf = Inf::parse(&u8bom).unwrap();
    assert_eq!(inf.encoding(), Encoding::Utf8);
    assert_eq!(inf.section("version").unwrap().lines.len(), 1);
}

#[test]
fn target_os_matching() {
    let d = TargetOs::parse("NTamd64.10.0...17763", 1).unwrap();
    assert!(d.applies_to(&target(10, 0, 17763, true)));
    assert!(d.applies_to(&target(10, 0, 26100, false)));
    assert!(!d.applies_to(&target(10, 0, 14393, true)));
    assert!(!d.applies_to(&target(6, 3, 9600, true)));
    let mut x86 = target(10, 0, 20000, true);
    x86.arch = Arch::X86;
    assert!(!d.applies_to(&x86));
    let server = TargetOs::parse("NTamd64.6.3.3", 1).unwrap();
    assert_eq!(server.product_type, Some(3));
    assert!(server.applies_to(&target(6, 3, 9600, true)));
    assert!(!server.applies_to(&target(6, 3, 9600, false)));
    assert!(server.applies_to(&target(10, 0, 9600, true)));
    // A multi-byte character straddling byte 2 is an error, not a panic.
    let err = TargetOs::parse("aé.10", 7).unwrap_err();
    assert_eq!(
        err.as_corrupt().unwrap().detail(),
        "\"aé.10\" does not start with NT"
    );
    let any = TargetOs::parse("NT", 1).unwrap();
    assert_eq!(any.arch, None);
    assert!(any.applies_to(&x86));
}

#[test]
fn models_for_picks_the_most_specific_decoration() {
    let text = "[Version]\nSignature=\"$Windows NT$\"\n[Manufacturer]\n\
                V=M,NTamd64.6.3,NTamd64.10.0...17763,NTx86\n\
                [M.NTamd64.6.3]\nold=i,PCI\\OLD\n[M.NTamd64.10.0...17763]\nnew=i,PCI\\NEW\n\
                [M.NTx86]\nx86=i,PCI\\X86\n[i]\n";
    let inf = Inf::parse(text.as_bytes()).unwrap();
    let d = inf.driver(Arch::Amd64).unwrap();
    assert_eq!(d.models.len(), 2, "the x86 models are not read for amd64");
    assert_eq!(d.hardware_ids_for(&target(6, 3, 9600, true)), ["PCI\\OLD"]);
    assert_eq!(
        d.hardware_ids_for(&target(10, 0, 17763, true)),
        ["PCI\\NEW"]
    );
    assert_eq!(
        d.hardware_ids_for(&target(10, 0, 14393, true)),
        ["PCI\\OLD"]
    );
    assert!(d.hardware_ids_for(&target(6, 1, 7601, true)).is_empty());
    let d = inf.driver(Arch::X86).unwrap();
    assert_eq!(d.models[0].hardware_ids, ["PCI\\X86"]);
    assert_eq!(d.installs[0].section, "i");
}

#[test]
fn decorated_install_sections_win() {
    let text = "[Version]\nSignature=\"$Windows NT$\"\n[Manufacturer]\nV=M\n[M]\nd=i,PCI\\X\n\
                [i]\n[i.NT]\n[i.NTamd64]\nCopyFiles=@a.sys\n[i.NTamd64.Services]\nAddService=s,,svc\n\
                [svc]\nServiceType=1\nStartType=3\nErrorControl=0\nServiceBinary=C:\\x.sys\n";
    let d = Inf::parse(text.as_bytes())
        .unwrap()
        .driver(Arch::Amd64)
        .unwrap();
    let i = &d.installs[0];
    assert_eq!(i.section, "i.NTamd64");
    assert_eq!(i.copy_files[0].name, "a.sys");
    assert_eq!(i.copy_files[0].dest, None);
    let s = &i.services[0];
    assert_eq!(s.flags, 0);
    assert_eq!(s.binary.dirid, None);
    assert_eq!(s.binary.image_path(), None);
    let d = Inf::parse(text.as_bytes())
        .unwrap()
        .driver(Arch::X86)
        .unwrap();
    assert_eq!(d.installs[0].section, "i.NT");
    assert!(d.installs[0].services.is_empty());
}

/// A small valid INF; the validation tests change one line of it.
const GOOD: &str = "[Version]
Signature=\"$Windows NT$\"
Class=SCSIAdapter
ClassGuid={4D36E97B-E325-11CE-BFC1-08002BE10318}
Provider=%V%
DriverVer=06/01/2024,1.2.3.4
CatalogFile=x.cat
[DestinationDirs]
DefaultDestDir=12
[Manufacturer]
%V%=M,NTamd64.10.0...17763
[M.NTamd64.10.0...17763]
%D%=x_inst,PCI\\VEN_1AF4&DEV_1001
[x_inst]
CopyFiles=x_files
[x_files]
x.sys
[x_inst.Services]
AddService=x,2,x_svc
[x_svc]
ServiceType=1
StartType=0
ErrorControl=1
ServiceBinary=%12%\\x.sys
[Strings]
V=\"Vendor\"
D=\"Device\"
";

fn with_line(n: usize, new: &str) -> String {
    GOOD.lines()
        .enumerate()
        .map(|(i, l)| if i + 1 == n { new } else { l })
        .collect::<Vec<_>>()
        .join("\n")
}

fn error_of(text: &str) -> (&'static str, Position, String) {
    let err = Inf::parse(text.as_bytes())
        .and_then(|i| i.driver(Arch::Amd64))
        .unwrap_err();
    let c = err
        .as_corrupt()
        .unwrap_or_else(|| panic!("not corrupt: {err}"));
    (c.structure(), c.position(), c.detail().to_owned())
}

#[test]
fn good_base_inf_parses() {
    let d = Inf::parse(GOOD.as_bytes())
        .unwrap()
        .driver(Arch::Amd64)
        .unwrap();
    assert_eq!(d.services()[0].name, "x");
    assert_eq!(d.models[0].description, "Device");
    assert_eq!(d.installs[0].copy_files[0].dest.as_ref().unwrap().dirid, 12);
}

#[test]
fn every_validation_branch() {
    let cases: Vec<(String, &str, usize, &str)> = vec![
        (
            with_line(1, "[Other]"),
            "inf version section",
            1,
            "no [Version] section",
        ),
        (
            with_line(2, "Foo=1"),
            "inf version section",
            1,
            "no Signature",
        ),
        (
            with_line(2, "Signature=\"$Win95$\""),
            "inf version section",
            2,
            "signature \"$Win95$\" is not one of \"$Windows NT$\", \"$Chicago$\"",
        ),
        (
            with_line(4, "ClassGuid={4D36E97B-E325-11CE-BFC1}"),
            "inf version section",
            4,
            "class guid \"{4D36E97B-E325-11CE-BFC1}\" is not of the form {xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}",
        ),
        (
            with_line(6, "DriverVer=13/01/2024,1.2.3.4"),
            "inf driverver",
            6,
            "month \"13\" in \"13/01/2024\" out of range 1..=12",
        ),
        (
            with_line(6, "DriverVer=01/32/2024"),
            "inf driverver",
            6,
            "day \"32\" in \"01/32/2024\" out of range 1..=31",
        ),
        (
            with_line(6, "DriverVer=2024-01-01"),
            "inf driverver",
            6,
            "date \"2024-01-01\" is not mm/dd/yyyy",
        ),
        (
            with_line(6, "DriverVer=01/01/2024,1.2.3.70000"),
            "inf driverver",
            6,
            "version part \"70000\" in \"1.2.3.70000\" out of range 0..=65535",
        ),
        (
            with_line(6, "DriverVer=01/01/2024,1.2.3.4.5"),
            "inf driverver",
            6,
            "version \"1.2.3.4.5\" has 5 parts, expected 1..=4",
        ),
        (
            with_line(9, "DefaultDestDir=abc"),
            "inf destinationdirs section",
            9,
            "dirid \"abc\" is not a number",
        ),
        (
            with_line(10, "[NoManufacturer]"),
            "inf manufacturer section",
            1,
            "no [Manufacturer] section",
        ),
        (
            with_line(11, "%V%="),
            "inf manufacturer section",
            11,
            "entry names no models section",
        ),
        (
            with_line(11, "%V%=M,XXamd64.10.0"),
            "inf target os decoration",
            11,
            "\"XXamd64.10.0\" does not start with NT",
        ),
        (
            with_line(11, "%V%=M,NTmips"),
            "inf target os decoration",
            11,
            "unknown architecture \"mips\" in \"NTmips\", expected x86, amd64 or arm64",
        ),
        (
            with_line(11, "%V%=M,NTamd64.ten"),
            "inf target os decoration",
            11,
            "major version \"ten\" in \"NTamd64.ten\" is not a number",
        ),
        (
            with_line(11, "%V%=M,NTamd64.1.2.3.4.5.6"),
            "inf target os decoration",
            11,
            "\"NTamd64.1.2.3.4.5.6\" has 7 parts, at most 6",
        ),
        (
            with_line(12, "[M.NTamd64.6.3]"),
            "inf models section",
            10,
            "models section [M.NTamd64.10.0...17763] named by [Manufacturer] is missing",
        ),
        (
            with_line(13, "%D%=x_inst"),
            "inf models section",
            13,
            "entry \"Device\" in [M.NTamd64.10.0...17763] names no hardware id",
        ),
        (
            with_line(13, "%D%=,PCI\\X"),
            "inf models section",
            13,
            "entry in [M.NTamd64.10.0...17763] names no install section",
        ),
        (
            with_line(14, "[y_inst]"),
            "inf ddinstall section",
            10,
            "install section [x_inst] named by a model is missing",
        ),
        (
            with_line(14, "[x_inst"),
            "inf section header",
            14,
            "no closing bracket in \"[x_inst\"",
        ),
        (
            with_line(14, "[x_inst] junk"),
            "inf section header",
            14,
            "text after the section header \"[x_inst] junk\"",
        ),
        (
            with_line(14, "[ ]"),
            "inf section header",
            14,
            "empty section name",
        ),
        (
            with_line(15, "CopyFiles=y_files"),
            "inf copyfiles directive",
            15,
            "copyfiles section [y_files] is missing",
        ),
        (
            with_line(17, "x.sys,,,zz"),
            "inf copyfiles section",
            17,
            "flags \"zz\" is not a number",
        ),
        (
            with_line(17, ",y.sys"),
            "inf copyfiles section",
            17,
            "entry names no file",
        ),
        (
            with_line(19, "AddService=x,2,y_svc"),
            "inf addservice directive",
            19,
            "service-install section [y_svc] is missing",
        ),
        (
            with_line(19, "AddService=x,2"),
            "inf addservice directive",
            19,
            "service x names no service-install section",
        ),
        (
            with_line(19, "AddService=,2,x_svc"),
            "inf addservice directive",
            19,
            "no service name",
        ),
        (
            with_line(19, "AddService=x,two,x_svc"),
            "inf addservice directive",
            19,
            "flags \"two\" is not a number",
        ),
        (
            with_line(21, "Foo=1"),
            "inf service-install section",
            20,
            "[x_svc] has no ServiceType",
        ),
        (
            with_line(22, "StartType=5"),
            "inf service-install section",
            22,
            "StartType \"5\" out of range 0..=4",
        ),
        (
            with_line(23, "ErrorControl=abc"),
            "inf service-install section",
            23,
            "ErrorControl \"abc\" out of range 0..=3",
        ),
        (
            with_line(24, "Foo=1"),
            "inf service-install section",
            20,
            "[x_svc] has no ServiceBinary",
        ),
        (
            with_line(26, "V=\"Vendor"),
            "inf line",
            26,
            "unterminated quoted string in \"V=\\\"Vendor\"",
        ),
        (
            format!("x=1\n{GOOD}"),
            "inf line",
            1,
            "line outside any section",
        ),
        (
            format!("{GOOD}x=\\"),
            "inf line",
            28,
            "line continuation at the end of the file",
        ),
        (
            with_line(3, &format!("Class={}", "a".repeat(MAX_LINE_CHARS))),
            "inf line",
            3,
            "logical line longer than 4096 characters",
        ),
        (
            with_line(3, &format!("Class={}", ",".repeat(MAX_FIELDS))),
            "inf line",
            3,
            "more than 256 fields",
        ),
    ];
    for (text, structure, line, detail) in cases {
        let got = error_of(&text);
        assert_eq!(
            got,
            (structure, Position::Line(line), detail.to_owned()),
            "{text}"
        );
    }
}

#[test]
fn addreg_validation() {
    let text = format!("{GOOD}[x_inst]\nAddReg=x_reg\n[x_reg]\nHKXX,,v,0,1\n");
    assert_eq!(
        error_of(&text),
        (
            "inf addreg section",
            Position::Line(31),
            "registry root \"HKXX\" is not one of HKR, HKLM, HKCR, HKCU, HKU".to_owned()
        )
    );
    let text = format!("{GOOD}[x_inst]\nAddReg=x_reg\n[x_reg]\nHKR,,v,nine,1\n");
    assert_eq!(error_of(&text).2, "flags \"nine\" is not a number");
    let text = format!("{GOOD}[x_inst]\nAddReg=x_none\n");
    assert_eq!(
        error_of(&text),
        (
            "inf addreg directive",
            Position::Line(29),
            "addreg section [x_none] is missing".to_owned()
        )
    );
    // An `=` inside an unquoted value is not a key.
    let text = format!("{GOOD}[x_inst]\nAddReg=x_reg\n[x_reg]\nHKR,,v,0,a=b\n");
    let d = Inf::parse(text.as_bytes())
        .unwrap()
        .driver(Arch::Amd64)
        .unwrap();
    assert_eq!(d.installs[0].add_reg[0].values, ["a=b"]);
}

#[test]
fn encoding_errors() {
    let err = Inf::parse(&[0xFF, 0xFE, b'a', 0, b'b']).unwrap_err();
    let c = err.as_corrupt().unwrap();
    assert_eq!(
        (c.structure(), c.position(), c.detail()),
        (
            "inf utf-16 text",
            Position::Offset(4),
            "odd length 3 for utf-16 text"
        )
    );
    let err = Inf::parse(&[0xFF, 0xFE, b'a', 0, 0x00, 0xD8]).unwrap_err();
    let c = err.as_corrupt().unwrap();
    assert_eq!(
        (c.structure(), c.position(), c.detail()),
        (
            "inf utf-16 text",
            Position::Offset(4),
            "unpaired surrogate 0xd800"
        )
    );
    let err = Inf::parse(b"[Version]\0\n").unwrap_err();
    let c = err.as_corrupt().unwrap();
    assert_eq!(
        (c.structure(), c.position(), c.detail()),
        ("inf text", Position::Offset(9), "nul byte in 8-bit text")
    );
    let err = Inf::parse(&[0xEF, 0xBB, 0xBF, b'a', 0xFF]).unwrap_err();
    assert_eq!(
        err.as_corrupt().unwrap().detail(),
        "invalid utf-8 after a utf-8 byte-order mark"
    );
    let err = Inf::parse(&[0xFE, 0xFF, 0, b'a']).unwrap_err();
    assert_eq!(err.to_string(), "unsupported inf: utf-16 big-endian text");
    let big = vec![b' '; MAX_INF_BYTES + 1];
    let err = Inf::parse(&big).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "unsupported inf: {} bytes, limit {MAX_INF_BYTES}",
            MAX_INF_BYTES + 1
        )
    );
}

#[test]
fn corrupt_display_names_file_and_line() {
    let err = Inf::parse(with_line(22, "StartType=5").as_bytes())
        .and_then(|i| i.driver(Arch::Amd64))
        .unwrap_err()
        .in_file("viostor/2k19/amd64/viostor.inf");
    assert_eq!(
        err.to_string(),
        "corrupt inf service-install section in viostor/2k19/amd64/viostor.inf at line 22: StartType \"5\" out of range 0..=4"
    );
}

#[test]
fn limits_are_unsupported_errors() {
    let mut text = String::new();
    for i in 0..=10_000 {
        text.push_str(&format!("[s{i}]\n"));
    }
    let err = Inf::parse(text.as_bytes()).unwrap_err();
    assert_eq!(err.to_string(), "unsupported inf: more than 10000 sections");

    let mut text = String::from("[Version]\nSignature=$Chicago$\n[Manufacturer]\n");
    for _ in 0..=MAX_ITEMS {
        text.push_str("V=M\n");
    }
    text.push_str("[M]\n");
    let err = Inf::parse(text.as_bytes())
        .unwrap()
        .driver(Arch::Amd64)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsupported inf: more than 4096 manufacturers"
    );

    let mut text = String::from("[Version]\nSignature=$Chicago$\n[Manufacturer]\nV=M\n[M]\n");
    for i in 0..=MAX_ITEMS {
        text.push_str(&format!("d=i{i},PCI\\X\n"));
    }
    let err = Inf::parse(text.as_bytes())
        .unwrap()
        .driver(Arch::Amd64)
        .unwrap_err();
    assert_eq!(err.to_string(), "unsupported inf: more than 4096 models");
}
