//! The command line, as clap derive types. Handlers live in [`crate::cmd`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Reach a TCP service behind NAT from anywhere: peer to peer, end-to-end encrypted, no accounts.
#[derive(Debug, Parser)]
#[command(name = "peerup", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// Config file [default: ./peerup.yaml, ~/.config/peerup/config.yaml, /etc/peerup/config.yaml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// `--json` for query commands.
#[derive(Debug, Clone, Copy, Args)]
pub struct JsonFlag {
    /// Print machine-readable JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an identity, config and authorized_keys
    Init(InitArgs),
    /// Print this node's peer ID
    Whoami(JsonFlag),
    /// Show this node's identity, relays, authorized peers and services (offline)
    Status(JsonFlag),
    /// Manage the peers allowed to connect (authorized_keys)
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Check or print the config
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage the local services exposed to peers
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Manage the relays this node uses
    #[command(subcommand)]
    Relay(RelayCommand),
    /// Run the node (default: `daemon start`), or talk to the running one
    Daemon {
        #[command(subcommand)]
        command: Option<DaemonCommand>,
    },
    /// Reach a peer's service on a local port: 127.0.0.1:<LOCAL_PORT> (0 picks a free port)
    Proxy {
        /// Peer ID, or a name from the config's names:
        target: String,
        /// The service name on that peer (e.g. ssh)
        service: String,
        /// Local port to listen on
        local_port: u16,
    },
    /// Measure round trips to a peer and show the path (DIRECT or RELAYED)
    Ping {
        /// Peer ID or name
        target: String,
        /// Number of pings (0 = until Ctrl-C)
        #[arg(short = 'c', long, visible_short_alias = 'n', default_value_t = 4)]
        count: u32,
        /// Time between pings (e.g. 1s, 500ms)
        #[arg(long, default_value = "1s", value_parser = parse_interval)]
        interval: std::time::Duration,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show the hops to a peer (direct, or via a relay) with their round trips
    Traceroute {
        /// Peer ID or name
        target: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Resolve a name from the config's names: to a peer ID
    Resolve {
        /// The name (or a peer ID)
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Make a one-time pairing code for another machine (shows it, then waits for the join)
    Invite(InviteArgs),
    /// Pair with the machine that made a code: both sides authorize each other and name each other
    Join(JoinArgs),
    /// Compare a short authentication string with a peer and mark it verified
    Verify {
        /// Peer ID or name
        target: String,
        /// Mark the peer verified without asking (after comparing the code out of band)
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Explain this machine's connectivity (NAT, CGNAT, relays, reservation, grade, local faults)
    Doctor(DoctorArgs),
    /// Run a relay and two nodes on loopback and tunnel a service through them
    Demo,
    /// Print version information
    Version(JsonFlag),
}

/// `peerup doctor`.
#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub json: JsonFlag,
    /// Skip the UPnP gateway search (an SSDP multicast on the LAN)
    #[arg(long)]
    pub no_upnp: bool,
}

#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// Run the node in the foreground: relay reservations, services, the API socket
    Start,
    /// Ask the running daemon for its status
    Status(JsonFlag),
    /// List the running daemon's services
    Services(JsonFlag),
    /// List the peers the running daemon is connected to
    Peers(JsonFlag),
    /// List the running daemon's connections and their paths
    Paths(JsonFlag),
    /// Open a local proxy listener in the running daemon
    Connect {
        /// Peer ID or name
        #[arg(long)]
        peer: String,
        /// The service name
        #[arg(long)]
        service: String,
        /// Where to listen, ip:port (a loopback address unless --allow-non-loopback)
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// Allow a --listen address other machines can reach: whoever connects uses the service
        #[arg(long)]
        allow_non_loopback: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Ping a peer through the running daemon
    Ping {
        /// Peer ID or name
        target: String,
        /// Number of pings (1-100)
        #[arg(short = 'c', long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=100))]
        count: u32,
        /// Time between pings (e.g. 1s, 500ms)
        #[arg(long, default_value = "1s", value_parser = parse_interval)]
        interval: std::time::Duration,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Close a proxy opened with `daemon connect`
    Disconnect {
        /// The proxy's id (proxy-N)
        id: String,
    },
    /// Stop the running daemon
    Stop,
}

fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    match crate::config::units::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be greater than zero".into()),
        Err(e) => Err(e),
    }
}

#[derive(Debug, Args)]
pub struct InviteArgs {
    /// This machine's name, offered to the joiner (as in Go peer-up) [default: the host name]
    #[arg(long, value_name = "N")]
    pub name: Option<String>,
    /// Your own name for the joiner in names: [default: the name it offers]
    #[arg(long, value_name = "N")]
    pub save_as: Option<String>,
    /// How long the code works (at most 1h)
    #[arg(long, default_value = "10m", value_parser = parse_interval)]
    pub ttl: std::time::Duration,
    /// Print only the code on stdout (progress goes to stderr)
    #[arg(long)]
    pub non_interactive: bool,
}

#[derive(Debug, Args)]
pub struct JoinArgs {
    /// The code [default: $PEERUP_INVITE_CODE, else a line from stdin]
    pub code: Option<String>,
    /// This machine's name, offered to the inviter (as in Go peer-up) [default: the host name]
    #[arg(long, value_name = "N")]
    pub name: Option<String>,
    /// Your own name for the inviter in names: [default: the name it offers]
    #[arg(long, value_name = "N")]
    pub save_as: Option<String>,
    /// Never prompt
    #[arg(long)]
    pub non_interactive: bool,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Folder for config.yaml, identity.key and authorized_keys [default: ~/.config/peerup]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Private network namespace (a DNS label); peers must share it
    #[arg(long, value_name = "NS")]
    pub network: Option<String>,
    /// Relay address: a multiaddr, or IP[:PORT] together with --relay-peer-id
    #[arg(long, value_name = "ADDR")]
    pub relay: Option<String>,
    /// The relay's peer ID, for a short IP[:PORT] relay address
    #[arg(long, value_name = "ID")]
    pub relay_peer_id: Option<String>,
    /// Never prompt; fail if something is missing
    #[arg(long)]
    pub non_interactive: bool,
}

/// Where the authorized_keys file is, when not the config's.
#[derive(Debug, Clone, Args)]
pub struct AuthFile {
    /// authorized_keys file [default: security.authorized_keys_file of the config]
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Authorize a peer
    Add {
        /// The peer ID (12D3KooW...)
        peer_id: String,
        /// A note kept after '#' on the peer's line
        #[arg(long)]
        comment: Option<String>,
        /// End the authorization: an RFC 3339 time or a duration from now (e.g. 30d)
        #[arg(long, value_name = "WHEN")]
        expires: Option<String>,
        #[command(flatten)]
        file: AuthFile,
    },
    /// List authorized peers
    List {
        #[command(flatten)]
        file: AuthFile,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Remove a peer
    Remove {
        /// The peer ID
        peer_id: String,
        #[command(flatten)]
        file: AuthFile,
    },
    /// Check every line of an authorized_keys file
    Validate {
        /// The file [default: the config's]
        path: Option<PathBuf>,
        #[command(flatten)]
        file: AuthFile,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check the config and report every invalid value
    Validate,
    /// Print the config with defaults filled in and paths resolved, its archives and any pending apply
    Show,
    /// Restore a last-known-good config (archived on every successful daemon start)
    Rollback(RollbackArgs),
    /// Replace the config with FILE after checking it; reverted unless confirmed in time
    Apply(ApplyArgs),
    /// Keep the config of a pending apply (stops the automatic revert)
    Confirm,
}

/// `config rollback` and `relay config rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Which archive: 1 = newest … 5 = oldest
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub to: u8,
    /// List the archives instead
    #[arg(long, conflicts_with = "to")]
    pub list: bool,
    #[command(flatten)]
    pub json: JsonFlag,
}

/// `config apply` and `relay config apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The new config file
    pub file: PathBuf,
    /// Revert unless `config confirm` comes within this time (e.g. 5m, 30s)
    #[arg(long, value_name = "D", default_value = "5m", value_parser = parse_interval)]
    pub confirm_timeout: std::time::Duration,
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Expose a local TCP service to authorized peers
    Add {
        /// Service name (a DNS label, e.g. ssh)
        name: String,
        /// Local address to forward to, host:port (e.g. localhost:22)
        address: String,
        /// Protocol ID (kept for Go peer-up compatibility; peerup uses /peerup/<name>/1.0.0)
        #[arg(long)]
        protocol: Option<String>,
    },
    /// List services
    List(JsonFlag),
    /// Remove a service
    Remove {
        /// Service name
        name: String,
    },
    /// Enable a service
    Enable {
        /// Service name
        name: String,
    },
    /// Disable a service without removing it
    Disable {
        /// Service name
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RelayCommand {
    /// Add relay addresses to the config
    Add {
        /// Multiaddrs, or IP[:PORT] together with --peer-id
        #[arg(required = true)]
        addresses: Vec<String>,
        /// The relay's peer ID, for short addresses
        #[arg(long, value_name = "ID")]
        peer_id: Option<String>,
    },
    /// List configured relays
    List(JsonFlag),
    /// Check a relay server's config (relay-server.yaml)
    #[command(subcommand)]
    Config(RelayConfigCommand),
    /// Relay server: make pairing codes for a group whose members all authorize each other
    Pair {
        /// Codes (members) in the group, 1-8
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=8))]
        count: u8,
        /// How long the codes work (at most 1h)
        #[arg(long, default_value = "1h", value_parser = parse_interval)]
        ttl: std::time::Duration,
        /// How long members stay authorized on the relay, at most 3650 days [default: no expiry]
        #[arg(long, value_parser = parse_interval)]
        expires: Option<std::time::Duration>,
        /// List the active groups instead
        #[arg(long, conflicts_with = "revoke")]
        list: bool,
        /// Revoke a group (its unused codes stop working)
        #[arg(long, value_name = "GROUP")]
        revoke: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Relay server: write relay-server.yaml, the relay key and its authorized_keys into a folder
    Setup {
        /// Folder for the relay's files [default: the --config file's folder, else .]
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Replace the existing files with fresh ones (a new identity, no authorized peers),
        /// after a snapshot of them in <DIR>/backups/<UTC date_time>/
        #[arg(long)]
        fresh: bool,
        /// Never prompt (setup never prompts; accepted for scripts)
        #[arg(long)]
        non_interactive: bool,
    },
    /// Relay server: run it (config: --config, default ./relay-server.yaml)
    Serve,
    /// Relay server: print its peer ID and public addresses
    Info(JsonFlag),
    /// Relay server: allow a peer to use this relay
    Authorize {
        /// The peer ID
        peer_id: String,
        /// A note kept on the peer's line
        #[arg(long)]
        comment: Option<String>,
    },
    /// Relay server: remove a peer
    Deauthorize {
        /// The peer ID
        peer_id: String,
    },
    /// Relay server: list the peers allowed to use it
    ListPeers(JsonFlag),
    /// Print version information (as `peerup version`)
    Version(JsonFlag),
    /// Remove a relay address
    Remove {
        /// The exact multiaddr to remove
        address: String,
        /// Allow removing the last relay
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum RelayConfigCommand {
    /// Check the relay config [default: ./relay-server.yaml] and report every invalid value
    Validate,
    /// Restore a last-known-good relay config (archived on every successful `relay serve`)
    Rollback(RollbackArgs),
    /// Replace the relay config with FILE after checking it; reverted unless confirmed in time
    Apply(ApplyArgs),
    /// Keep the relay config of a pending apply (stops the automatic revert)
    Confirm,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_may_follow_positionals() {
        let cli = Cli::try_parse_from([
            "peerup",
            "auth",
            "add",
            "ID",
            "--comment",
            "x",
            "--config",
            "c.yaml",
        ])
        .unwrap();
        assert_eq!(cli.config, Some(PathBuf::from("c.yaml")));
        match cli.command {
            Command::Auth(AuthCommand::Add { comment, .. }) => {
                assert_eq!(comment.as_deref(), Some("x"))
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn apply_flags_in_any_position() {
        for args in [
            &["peerup", "config", "apply", "new.yaml", "--confirm-timeout", "30s"][..],
            &["peerup", "config", "apply", "--confirm-timeout", "30s", "new.yaml"][..],
            &[
                "peerup",
                "--config",
                "c.yaml",
                "config",
                "apply",
                "--confirm-timeout=30s",
                "new.yaml",
            ],
            &[
                "peerup",
                "config",
                "--config",
                "c.yaml",
                "apply",
                "new.yaml",
                "--confirm-timeout",
                "30s",
            ],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            match cli.command {
                Command::Config(ConfigCommand::Apply(a)) => {
                    assert_eq!(a.file, PathBuf::from("new.yaml"), "{args:?}");
                    assert_eq!(a.confirm_timeout, std::time::Duration::from_secs(30));
                }
                other => panic!("{args:?} parsed as {other:?}"),
            }
        }
        let e = Cli::try_parse_from(["peerup", "config", "apply", "x", "--confirm-timeout", "0s"]);
        assert!(e.is_err(), "a zero timeout is refused");
    }

    /// Duration flags take Go's syntax, as Go peer-up's flags do (`.5s` and `+2m` included).
    #[test]
    fn duration_flags_take_go_durations() {
        assert_eq!(parse_interval("1.5m"), Ok(std::time::Duration::from_secs(90)));
        assert_eq!(parse_interval(".5s"), Ok(std::time::Duration::from_millis(500)));
        assert_eq!(parse_interval("+2m"), Ok(std::time::Duration::from_secs(120)));
        assert!(parse_interval("0").is_err());
    }
}
