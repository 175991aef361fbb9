//! Developer tasks (`cargo xtask ...`): benchmarks against reference tools, fixture builds.

fn main() -> anyhow::Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    anyhow::bail!("unknown task {task:?}; tasks are added with the benchmarks")
}
