//! `dbmazz spool ...`: the spool inspection tool.

use std::path::PathBuf;

/// `dbmazz spool` arguments.
#[derive(Debug, clap::Args)]
pub struct SpoolArgs {
    /// The spool directory.
    #[arg(long, env = "SPOOL_DIR")]
    pub dir: PathBuf,
}

/// Runs an inspection command.
pub fn run(
    _args: &SpoolArgs,
    _out: &mut dyn std::io::Write,
) -> Result<(), crate::spool::SpoolError> {
    Ok(())
}
