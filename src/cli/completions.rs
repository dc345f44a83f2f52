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
    // `--server` and `--token` before the command are clap globals (`client_flags.rs`): global,
    // clap would offer them after every command, `serve` and `worker` too, where they are
    // refused. Here they stay `runyard`'s own; each command that takes them has its own.
    let mut cmd = super::Cli::command()
        .mut_arg("server", |a| a.global(false))
        .mut_arg("token", |a| a.global(false));
    clap_complete::generate(a.shell, &mut cmd, "runyard", &mut std::io::stdout());
    ExitCode::SUCCESS
}
