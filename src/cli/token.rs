//! `runyard token new NAME --scopes a,b [--types g,...] [--channels g,...]`: makes an API token,
//! prints it once and the `[[auth.tokens]]` lines to paste into `runyard.toml` (its SHA-256, never
//! the token). docs/auth.md.

use std::process::ExitCode;

use base64::Engine;
use clap::{Args, Subcommand};

use super::exit::Failure;
use crate::auth::tokens::{token_sha256, Authenticator};
use crate::config::{AuthConfig, TokenConfig};

/// `runyard token ...`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    cmd: TokenCmd,
}

#[derive(Debug, Subcommand)]
enum TokenCmd {
    /// Make a token: prints it once, then the config lines to paste (with its SHA-256 only).
    New(NewArgs),
}

/// Flags of `token new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// The token's name (shown in messages and logs instead of the token).
    name: String,
    /// Scopes, comma-separated: jobs:submit, jobs:read, jobs:cancel, schedules:write,
    /// signals:write, admin.
    #[arg(long, value_delimiter = ',', required = true)]
    scopes: Vec<String>,
    /// Job type globs the token is confined to, comma-separated (default: every type).
    #[arg(long, value_delimiter = ',')]
    types: Vec<String>,
    /// Channel globs the token is confined to, comma-separated (default: every channel).
    #[arg(long, value_delimiter = ',')]
    channels: Vec<String>,
}

/// Runs `runyard token`.
pub async fn run(a: TokenArgs) -> anyhow::Result<ExitCode> {
    let TokenCmd::New(n) = a.cmd;
    let token = format!(
        "ry_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
    );
    let entry = TokenConfig {
        name: n.name.trim().to_string(),
        sha256: token_sha256(&token),
        scopes: {
            // `--scopes jobs:read,jobs:read` is one scope, written once.
            let mut scopes: Vec<String> = Vec::new();
            for s in n.scopes.iter().map(|s| s.trim().to_string()) {
                if !scopes.contains(&s) {
                    scopes.push(s);
                }
            }
            scopes
        },
        types: (!n.types.is_empty()).then(|| n.types.clone()),
        channels: (!n.channels.is_empty()).then(|| n.channels.clone()),
    };
    // The same checks as `serve` makes at load.
    let check = AuthConfig {
        tokens: vec![entry.clone()],
        ..AuthConfig::default()
    };
    // A refused argument is a usage error (exit 2), named as the command line gives it.
    if let Err((key, message)) = Authenticator::new(&check) {
        let arg = match key.rsplit('.').next().unwrap_or("") {
            "name" => "NAME",
            "scopes" => "--scopes",
            "types" => "--types",
            "channels" => "--channels",
            _ => "token",
        };
        return Err(Failure::usage(format!("{arg}: {message}")));
    }
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let list = |v: &[String]| {
        format!(
            "[{}]",
            v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")
        )
    };
    println!("{token}");
    println!();
    println!("# The token above is shown once: store it now. Paste into runyard.toml:");
    println!("[[auth.tokens]]");
    println!("name = {}", q(&entry.name));
    println!("sha256 = {}", q(&entry.sha256));
    println!("scopes = {}", list(&entry.scopes));
    if let Some(t) = &entry.types {
        println!("types = {}", list(t));
    }
    if let Some(c) = &entry.channels {
        println!("channels = {}", list(c));
    }
    Ok(ExitCode::SUCCESS)
}
