//! `engram tenant …`: bearer tokens that authenticate one tenant on the TCP
//! listener (and so on `/mcp` over HTTP). A running daemon rereads the
//! folder whenever it changes; no restart is needed.

use std::path::{Path, PathBuf};

use anyhow::Context;
use engram_config::Paths;
use engram_ops::TenantId;

/// What `engram tenant` does.
#[derive(Debug, clap::Subcommand)]
pub enum TenantCommand {
    /// Print TENANT's token, creating it first if it has none.
    Token {
        /// The tenant (1-128 letters, digits, `-`, `_`, `.` or `:`).
        tenant: TenantId,
        /// Replace the token with a new one; the old one stops working.
        #[arg(long)]
        rotate: bool,
    },
    /// Delete TENANT's token: requests bearing it are refused from now on.
    /// The tenant's data stays.
    Revoke {
        /// The tenant.
        tenant: TenantId,
    },
    /// List the tenants that have a token.
    List,
}

/// Runs `engram tenant COMMAND`.
pub fn run(paths: &Paths, command: TenantCommand) -> anyhow::Result<()> {
    let dir = &paths.tenant_tokens_dir;
    match command {
        TenantCommand::Token { tenant, rotate } => {
            let file = token_file(dir, &tenant);
            if rotate {
                rotate_token(&file)?;
            } else {
                create_private_dir(dir)?;
            }
            let token = engram_api::server::load_or_create_token(&file)
                .with_context(|| format!("cannot provide a token for tenant {tenant}"))?;
            println!("{token}");
        }
        TenantCommand::Revoke { tenant } => {
            let file = token_file(dir, &tenant);
            match std::fs::remove_file(&file) {
                Ok(()) => eprintln!("revoked the token of tenant {tenant}"),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    anyhow::bail!("tenant {tenant} has no token (no {})", file.display())
                }
                Err(err) => return Err(err).with_context(|| format!("cannot delete {}", file.display())),
            }
        }
        TenantCommand::List => {
            let entries = match std::fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(err) => return Err(err).with_context(|| format!("cannot read {}", dir.display())),
            };
            let mut tenants: Vec<String> = entries
                .filter_map(Result::ok)
                .filter_map(|entry| entry.file_name().to_str()?.strip_suffix(".token").map(str::to_owned))
                .collect();
            tenants.sort();
            for tenant in tenants {
                println!("{tenant}");
            }
        }
    }
    Ok(())
}

fn token_file(dir: &Path, tenant: &TenantId) -> PathBuf {
    dir.join(format!("{tenant}.token"))
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// Deletes the old token, so that the next read creates a new one.
fn rotate_token(file: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(file) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            create_private_dir(file.parent().unwrap_or(Path::new(".")))
        }
        Err(err) => Err(err).with_context(|| format!("cannot replace {}", file.display())),
    }
}
