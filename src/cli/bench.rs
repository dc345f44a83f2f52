//! `runyard bench`: placeholder replaced below.
use clap::Args;
use std::process::ExitCode;
/// Bench flags.
#[derive(Debug, Args)]
pub struct BenchArgs {}
/// Runs the benchmark.
pub async fn run(_a: BenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet")
}
