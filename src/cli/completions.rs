//! `runyard completions bash|zsh|fish|elvish|powershell`: the shell completion script, generated
//! from the command line's own definition (clap_complete).

use std::process::ExitCode;

use clap::{Args, CommandFactory};

/// `completions` flags.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    pub shell: clap_complete::Shell,
}

/// Prints the completion script on stdout, e.g. `runyard completions bash > /etc/bash_completion.d/runyard`.
pub fn run(a: CompletionsArgs) -> ExitCode {
    let mut cmd = super::Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "runyard", &mut std::io::stdout());
    ExitCode::SUCCESS
}
