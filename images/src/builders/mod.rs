//! One module per image (the Windows images share one parametrised module).

pub(crate) mod debian12;
pub(crate) mod debian12_boot;
pub(crate) mod linux;
pub(crate) mod rhel7;
pub(crate) mod rhel9;
pub(crate) mod sles15;
pub(crate) mod ubuntu2204;
pub(crate) mod windows;

use windows::{win2008r2_bios, win2012r2_bios, win2016_uefi, win2019_bios, win2022_uefi};

use crate::error::Result;
use crate::expected::Expected;
use crate::plan::Plan;

/// A registered builder.
pub(crate) struct Builder {
    /// The builder module's source text (part of the cache key).
    pub(crate) source: &'static str,
    /// The facts its image must inspect to.
    pub(crate) expected: &'static Expected,
    /// Makes the plan.
    pub(crate) plan: fn() -> Result<Plan>,
}

/// Every builder, in [`crate::names`] order.
pub(crate) static BUILDERS: &[Builder] = &[
    Builder {
        source: debian12::SOURCE,
        expected: &debian12::EXPECTED,
        plan: debian12::plan,
    },
    Builder {
        source: rhel7::SOURCE,
        expected: &rhel7::EXPECTED,
        plan: rhel7::plan,
    },
    Builder {
        source: rhel9::SOURCE,
        expected: &rhel9::EXPECTED,
        plan: rhel9::plan,
    },
    Builder {
        source: ubuntu2204::SOURCE,
        expected: &ubuntu2204::EXPECTED,
        plan: ubuntu2204::plan,
    },
    Builder {
        source: ubuntu2204::SOURCE,
        expected: &ubuntu2204::EXPECTED_MBR,
        plan: ubuntu2204::plan_mbr,
    },
    Builder {
        source: sles15::SOURCE,
        expected: &sles15::EXPECTED,
        plan: sles15::plan,
    },
    Builder {
        source: windows::SOURCE,
        expected: win2008r2_bios::EXPECTED,
        plan: win2008r2_bios::plan,
    },
    Builder {
        source: windows::SOURCE,
        expected: win2012r2_bios::EXPECTED,
        plan: win2012r2_bios::plan,
    },
    Builder {
        source: windows::SOURCE,
        expected: win2016_uefi::EXPECTED,
        plan: win2016_uefi::plan,
    },
    Builder {
        source: windows::SOURCE,
        expected: win2019_bios::EXPECTED,
        plan: win2019_bios::plan,
    },
    Builder {
        source: windows::SOURCE,
        expected: win2022_uefi::EXPECTED,
        plan: win2022_uefi::plan,
    },
];

/// Source of the modules every builder's output depends on.
pub(crate) const COMMON_SOURCES: &[&str] = &[
    include_str!("linux.rs"),
    include_str!("../make.rs"),
    include_str!("../plan.rs"),
    include_str!("../tree.rs"),
    include_str!("../lvm.rs"),
    include_str!("../synth.rs"),
    include_str!("../hive.rs"),
    include_str!("../regf.rs"),
];
