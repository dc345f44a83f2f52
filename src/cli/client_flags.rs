//! The client commands' `--server` and `--token` before the command (`runyard --server URL jobs`),
//! as kubectl, celery and redis-cli users type them: they were refused there (`unexpected
//! argument '--server' found`) and taken only after it.
//!
//! clap's own way: the two are global arguments of `runyard` with the ids of the commands' own
//! (`ServerArg`'s `server` and `token`, bench's `server`). clap does not add a global argument to a
//! command that has its own of that id, and hands the value given before the command to it: one
//! definition per command, its help, environment variable and default intact. Given on both sides,
//! the one after the command wins (clap keeps the command's own when both came from the command
//! line); either beats the environment. They carry no environment variable or default here: those
//! would be handed down too (bench, without `--server`, would no longer start its own server).
//!
//! clap adds them to the commands that have none of their own (`serve`, `worker`, `completions`,
//! ...; bench has no `--token`): hidden there, and refused by [`parse`] (exit 2), as no such
//! command would use them: `runyard --server URL serve` is no server of its own in disguise.

use clap::{Args, CommandFactory, Parser};

use super::{Cli, Cmd};

/// `runyard`'s own `--server` and `--token`, handed to the command (hidden: each command that
/// takes them shows its own in its help; `runyard --help` says they may come first).
#[derive(Debug, Args)]
pub struct ClientFlags {
    // Handed to the command's own `--server` (`ServerArg`, bench's); the doc line is what shell
    // completions show.
    /// Base URL of the runyard server, for the commands that talk to one.
    #[arg(long, global = true, hide = true, value_name = "URL")]
    server: Option<String>,
    // Handed to the command's own `--token` (`ServerArg`).
    /// API token or JWT, for the commands that talk to a server (prefer `RUNYARD_TOKEN`).
    #[arg(long, global = true, hide = true)]
    token: Option<String>,
}

/// What `runyard --help` says of them.
pub const HELP: &str = "The client commands' --server and --token may also come before the \
                        command: `runyard --server URL jobs` is `runyard jobs --server URL`.";

/// Which of the two a command takes.
#[derive(Debug, Clone, Copy)]
enum Takes {
    /// The client commands (`ServerArg`).
    Both,
    /// `bench`: its own `--server` (the server to measure); it sends no token.
    ServerOnly,
    Neither,
}

/// The command's name and which of the two it takes.
fn takes(command: &Cmd) -> (&'static str, Takes) {
    use Takes::{Both, Neither, ServerOnly};
    match command {
        Cmd::Serve(_) => ("serve", Neither),
        Cmd::Worker(_) => ("worker", Neither),
        Cmd::Completions(_) => ("completions", Neither),
        Cmd::Bench(_) => ("bench", ServerOnly),
        Cmd::BenchBareServer => ("bench-bare-server", Neither),
        Cmd::Token(_) => ("token", Neither),
        Cmd::Launch(_) => ("launch", Neither),
        Cmd::Backup(_) => ("backup", Neither),
        Cmd::Submit(_)
        | Cmd::Status(_)
        | Cmd::Logs(_)
        | Cmd::Cancel(_)
        | Cmd::Retry(_)
        | Cmd::Jobs(_)
        | Cmd::Schedules(_)
        | Cmd::Signal(_)
        | Cmd::Files(_) => ("", Both),
    }
}

/// The command line as clap reads it, or a usage error naming a flag given to a command that
/// would not use it.
pub fn parse() -> Result<Cli, clap::Error> {
    Cli::try_parse().and_then(refuse_where_unused)
}

/// `cli`, or the usage error of [`parse`]. The values here are what clap found on the command
/// line, before or after the command (for a command with its own, also its environment variable
/// or default: such a command takes them).
fn refuse_where_unused(cli: Cli) -> Result<Cli, clap::Error> {
    let flags = &cli.client_flags;
    let (command, takes) = takes(&cli.command);
    let unused = match takes {
        Takes::Both => None,
        Takes::ServerOnly => flags.token.as_ref().map(|_| "--token"),
        Takes::Neither => {
            (flags.server.as_ref().map(|_| "--server")).or(flags.token.as_ref().map(|_| "--token"))
        }
    };
    let Some(flag) = unused else { return Ok(cli) };
    Err(Cli::command().error(
        clap::error::ErrorKind::ArgumentConflict,
        format!(
            "{flag} is for the commands that talk to a server (submit, status, logs, cancel, \
             retry, jobs, schedules, signal, files{}); `{command}` does not take it",
            if flag == "--server" { ", bench" } else { "" }
        ),
    ))
}
