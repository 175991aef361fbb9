//! One module per image (the Windows images share one parametrised module).

pub(crate) mod debian12;
pub(crate) mod linux;

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
pub(crate) static BUILDERS: &[Builder] = &[Builder {
    source: debian12::SOURCE,
    expected: &debian12::EXPECTED,
    plan: debian12::plan,
}];

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
