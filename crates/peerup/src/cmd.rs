//! One module per top-level command; [`run`] dispatches to them.

mod auth;
mod config_cmd;
mod daemon;
mod demo;
mod doctor;
mod init;
mod pair;
mod ping;
mod proxy;
mod relay;
mod service;
mod status;
mod verify;

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::cli::{Cli, Command};
use crate::outln;

/// What every command may need from the global flags.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// `--config`, if given.
    pub config: Option<PathBuf>,
}

impl Ctx {
    /// The explicit config path, if any.
    pub fn config_path(&self) -> Option<&Path> {
        self.config.as_deref()
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let ctx = Ctx { config: cli.config };
    match cli.command {
        Command::Init(args) => init::run(&args, &ctx),
        Command::Whoami(json) => status::whoami(json, &ctx),
        Command::Status(json) => status::run(json, &ctx),
        Command::Auth(cmd) => auth::run(cmd, &ctx),
        Command::Config(cmd) => config_cmd::run(cmd, &ctx),
        Command::Service(cmd) => service::run(cmd, &ctx),
        Command::Relay(cmd) => relay::run(cmd, &ctx),
        Command::Daemon { command } => daemon::dispatch(command, &ctx),
        Command::Proxy { target, service, local_port } => {
            proxy::run(&target, &service, local_port, &ctx)
        }
        Command::Ping { target, count, interval, json } => {
            ping::ping(&target, count, interval, json.json, &ctx)
        }
        Command::Traceroute { target, json } => ping::traceroute(&target, json.json, &ctx),
        Command::Resolve { name, json } => ping::resolve(&name, json.json, &ctx),
        Command::Invite(args) => pair::invite(&args, &ctx),
        Command::Join(args) => pair::join(&args, &ctx),
        Command::Verify { target, yes, json } => verify::run(&target, yes, json.json, &ctx),
        Command::Doctor(args) => doctor::run(&args, &ctx),
        Command::Demo => demo::run(),
        Command::Version(json) => version("peerup", json.json),
    }
}

#[derive(serde::Serialize)]
struct VersionInfo {
    version: &'static str,
    os: &'static str,
    arch: &'static str,
}

/// `peerup version` and `peerup relay version` (`name` starts the line, as in Go).
fn version(name: &str, json: bool) -> Result<()> {
    let v = VersionInfo {
        version: env!("CARGO_PKG_VERSION"),
        os: std::env::consts::OS,
        arch: std::env::consts::ARCH,
    };
    if json {
        return crate::output::json(&v);
    }
    outln!("{name} {} ({}/{})", v.version, v.os, v.arch)?;
    Ok(())
}
