//! Synthetic Windows guests for the Windows fixers' tests: a [`MemFs`] with SYSTEM and SOFTWARE
//! hives built by `hive::testkit`, and a matching inspection report.

#[cfg(test)]
use hive::ValueType;
#[cfg(test)]
use hive::testkit::HiveBuilder;
use inspect::report::{Report, WindowsReport};

#[cfg(test)]
use super::{multi_sz, sz};
#[cfg(test)]
use crate::testkit::MemFs;
use crate::testkit::{SyntheticOs, synthetic_report};

/// The Windows version of a synthetic guest.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WinVersion {
    pub(crate) major: u32,
    pub(crate) minor: u32,
    pub(crate) build: u32,
    pub(crate) product: &'static str,
}

#[cfg(test)]
pub(crate) const WIN2008R2: WinVersion = WinVersion {
    major: 6,
    minor: 1,
    build: 7601,
    product: "Windows Server 2008 R2 Standard",
};
#[cfg(test)]
pub(crate) const WIN2012R2: WinVersion = WinVersion {
    major: 6,
    minor: 3,
    build: 9600,
    product: "Windows Server 2012 R2 Standard",
};
#[cfg(test)]
pub(crate) const WIN2016: WinVersion = WinVersion {
    major: 10,
    minor: 0,
    build: 14393,
    product: "Windows Server 2016 Standard",
};
pub(crate) const WIN2019: WinVersion = WinVersion {
    major: 10,
    minor: 0,
    build: 17763,
    product: "Windows Server 2019 Standard",
};
#[cfg(test)]
pub(crate) const WIN2022: WinVersion = WinVersion {
    major: 10,
    minor: 0,
    build: 20348,
    product: "Windows Server 2022 Standard",
};

#[cfg(test)]
/// A SYSTEM hive like a VMware guest's: control set 1 with VMware services (vmci boot-start,
/// VMTools automatic, vmmouse as a Mouse class upper filter), LSI_SAS, partmgr, CrashControl
/// AutoReboot=1, and on 6.2+ a driver database with `oem0.inf`..`oem2.inf` in use.
pub(crate) fn system_hive(v: WinVersion) -> HiveBuilder {
    let cs = "ControlSet001";
    let dw = |n: u32| n.to_le_bytes();
    let mut b = HiveBuilder::new()
        .value("Select", "Current", ValueType::Dword, &dw(1))
        .value("Select", "Default", ValueType::Dword, &dw(1))
        .value(
            &format!("{cs}\\Services\\vmci"),
            "Start",
            ValueType::Dword,
            &dw(0),
        )
        .value(
            &format!("{cs}\\Services\\VMTools"),
            "Start",
            ValueType::Dword,
            &dw(2),
        )
        .value(
            &format!("{cs}\\Services\\vmmouse"),
            "Start",
            ValueType::Dword,
            &dw(3),
        )
        .value(
            &format!("{cs}\\Services\\vmxnet3ndis6"),
            "Start",
            ValueType::Dword,
            &dw(4),
        )
        .value(
            &format!("{cs}\\Services\\LSI_SAS"),
            "Start",
            ValueType::Dword,
            &dw(0),
        )
        .value(
            &format!("{cs}\\Services\\LSI_SAS"),
            "ImagePath",
            ValueType::ExpandSz,
            &sz("System32\\drivers\\lsi_sas.sys"),
        )
        .key(&format!("{cs}\\Services\\partmgr\\Parameters"))
        .value(
            &format!("{cs}\\Control\\CrashControl"),
            "AutoReboot",
            ValueType::Dword,
            &dw(1),
        )
        .value(
            &format!("{cs}\\Control\\Class\\{{4d36e96f-e325-11ce-bfc1-08002be10318}}"),
            "UpperFilters",
            ValueType::MultiSz,
            &multi_sz(&["vmmouse", "mouclass"]),
        )
        .value(
            &format!("{cs}\\Enum\\ACPI\\PNP0F13\\4&1"),
            "UpperFilters",
            ValueType::MultiSz,
            &multi_sz(&["vmmouse"]),
        );
    if (v.major, v.minor) >= (6, 2) {
        b = b
            .value("DriverDatabase", "OemInfMap", ValueType::Binary, &[0xe0])
            .value(
                "DriverDatabase",
                "SchemaVersion",
                ValueType::Dword,
                &dw(0x1_0000),
            )
            .value(
                "DriverDatabase\\DriverInfFiles\\oem1.inf",
                "",
                ValueType::MultiSz,
                &multi_sz(&["vmci.inf_amd64_5e38a278d114b813"]),
            );
    }
    b
}

#[cfg(test)]
/// A SOFTWARE hive with the version facts and the default `DevicePath`.
pub(crate) fn software_hive(v: WinVersion) -> Vec<u8> {
    let cv = "Microsoft\\Windows NT\\CurrentVersion";
    HiveBuilder::new()
        .value(cv, "ProductName", ValueType::Sz, &sz(v.product))
        .value(
            cv,
            "CurrentBuildNumber",
            ValueType::Sz,
            &sz(&v.build.to_string()),
        )
        .value(
            "Microsoft\\Windows\\CurrentVersion",
            "DevicePath",
            ValueType::ExpandSz,
            &sz("%SystemRoot%\\inf"),
        )
        .build()
}

#[cfg(test)]
/// A guest with `/Windows/System32/config/{SYSTEM,SOFTWARE}`, `System32/drivers`, `INF` (with
/// `oem0.inf` and `oem5.inf`) and, on 6.2+, `System32/DriverStore/FileRepository`.
pub(crate) fn guest(v: WinVersion, system: &[u8]) -> MemFs {
    let mut g = MemFs::new();
    g.add_file("/Windows/System32/config/SYSTEM", system)
        .add_file("/Windows/System32/config/SOFTWARE", &software_hive(v))
        .add_file("/Windows/System32/drivers/lsi_sas.sys", b"MZ")
        .add_file("/Windows/INF/machine.inf", b"")
        .add_file("/Windows/INF/oem0.inf", b"")
        .add_file("/Windows/INF/oem5.inf", b"");
    if (v.major, v.minor) >= (6, 2) {
        g.add_dir("/Windows/System32/DriverStore/FileRepository");
    }
    g
}

/// The inspection report of such a guest.
pub(crate) fn report(v: WinVersion) -> Report {
    let mut r = synthetic_report(&SyntheticOs::new("windows", v.major, v.minor));
    let os = &mut r.operating_systems[0];
    os.os_type = "windows".into();
    os.product_name = v.product.into();
    os.product_variant = Some("Server".into());
    os.build_id = Some(v.build.to_string());
    os.initramfs_generator = None;
    os.windows = Some(WindowsReport {
        systemroot: "/Windows".into(),
        current_control_set: Some("ControlSet001".into()),
        ..WindowsReport::default()
    });
    for d in &mut r.devices {
        if d.content == "ext4" {
            d.content = "ntfs".into();
        }
    }
    r
}
