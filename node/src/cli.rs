//! The `vaultd` command line.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand};
use libp2p::Multiaddr;
use protocol::Coin;

/// vaultd: a validator node that creates and holds threshold multisignature vaults.
#[derive(Debug, Parser)]
#[command(name = "vaultd", version, about, long_about = None)]
pub struct Cli {
    /// TOML file with settings of `vaultd run` (keys are the long flags with `_` for `-`, e.g.
    /// `dkg_timeout = 60`, `listen = ["/ip4/0.0.0.0/tcp/30555"]`). Precedence: flags, then
    /// `VAULTD_*` environment variables, then this file, then the defaults.
    #[arg(long, env = "VAULTD_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Log format on stderr: `text` (human-readable) or `json` (one object per line). Levels
    /// come from `RUST_LOG` (e.g. `info,vaultd=debug`).
    #[arg(long, env = "VAULTD_LOG_FORMAT", global = true, default_value = "text")]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The passphrase that protects the keys and key shares at rest.
#[derive(Debug, Clone, clap::Args)]
pub struct SecretsArgs {
    /// File whose first line is the passphrase that encrypts this node's keys and key shares
    /// (Argon2id + XChaCha20-Poly1305). Keep it readable by the operator only.
    #[arg(long, env = "VAULTD_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// Store keys and key shares unencrypted: local clusters and tests only.
    #[arg(
        long,
        env = "VAULTD_INSECURE_NO_PASSPHRASE",
        conflicts_with = "password_file"
    )]
    pub insecure_no_passphrase: bool,
    /// Start even if the data directory or the passphrase file can be read by group or others
    /// (a warning instead of a refusal).
    #[arg(long, env = "VAULTD_INSECURE_PERMISSIONS")]
    pub insecure_permissions: bool,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Step 1: generate this validator's keypairs in a new data directory and print the public
    /// parts as JSON. Refuses to overwrite an existing identity.
    Init {
        /// Data directory.
        #[arg(long, env = "VAULTD_DATA_DIR")]
        data_dir: PathBuf,
        /// How the keys are protected at rest.
        #[command(flatten)]
        secrets: SecretsArgs,
    },
    /// Run the validator.
    Run {
        /// Data directory (from `vaultd init`).
        #[arg(long, env = "VAULTD_DATA_DIR")]
        data_dir: PathBuf,
        /// Network definition (TOML).
        #[arg(long, env = "VAULTD_NETWORK")]
        network: PathBuf,
        /// How the keys are protected at rest (as chosen at `init`).
        #[command(flatten)]
        secrets: SecretsArgs,
        /// libp2p listen address (repeatable; comma-separated in the environment).
        #[arg(
            long,
            env = "VAULTD_LISTEN",
            value_delimiter = ',',
            default_value = "/ip4/0.0.0.0/tcp/30555"
        )]
        listen: Vec<Multiaddr>,
        /// HTTP endpoint address (status, health, metrics; `POST /sign` with the API token).
        /// A loopback address unless `--api-allow-remote` is given.
        #[arg(long, env = "VAULTD_API", default_value = "127.0.0.1:8555")]
        api: SocketAddr,
        /// Allow `--api` on an address other hosts can reach. Reads (status, metrics, results)
        /// are then open to them; state changes still need the token.
        #[arg(long, env = "VAULTD_API_ALLOW_REMOTE")]
        api_allow_remote: bool,
        /// Also serve `/metrics` and `/health`, and nothing else, on this address (e.g. for a
        /// Prometheus server on another host).
        #[arg(long, env = "VAULTD_METRICS_LISTEN")]
        metrics_listen: Option<SocketAddr>,
        /// Extra bootstrap multiaddr with /p2p/<peer id> (repeatable; comma-separated in the
        /// environment).
        #[arg(long, env = "VAULTD_BOOTSTRAP", value_delimiter = ',')]
        bootstrap: Vec<Multiaddr>,
        /// The address validators on other hosts dial to reach this one, e.g. its public IP and
        /// port when it listens on 0.0.0.0 behind a port forward (repeatable; comma-separated in
        /// the environment). Advertised first; loopback and 0.0.0.0 are never advertised.
        #[arg(long = "external-address", env = "VAULTD_EXTERNAL_ADDRESS", value_delimiter = ',', value_parser = crate::addresses::parse_external)]
        external_address: Vec<Multiaddr>,
        /// TOML file of this operator's signing policy: per coin, `max_messages` per request and
        /// `max_requests_per_hour` (past them `POST /sign` answers 429). Read at start.
        #[arg(long, env = "VAULTD_SIGN_POLICY")]
        sign_policy: Option<PathBuf>,
        /// Seconds a signing attempt waits for its signers before retrying with another set.
        #[arg(long, env = "VAULTD_SIGN_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
        sign_timeout: u64,
        /// Seconds this operator's approval of a signing request counts: a request that fewer
        /// than t validators approved in that time expires, naming who approved.
        #[arg(long, env = "VAULTD_APPROVAL_TTL", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=604800))]
        approval_ttl: u64,
        /// Seconds a DKG phase may make no progress before this validator votes to run the next
        /// attempt without the participants it still waits for.
        #[arg(long, env = "VAULTD_DKG_TIMEOUT", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400))]
        dkg_timeout: u64,
        /// Print the settings this command would run with (after flags, environment and config
        /// file) and exit.
        #[arg(long)]
        print_config: bool,
        /// Test-only malicious behaviour (equivocate, bad-share, false-accusation, garbage,
        /// forge-approvals, wrong-group-key).
        #[cfg(feature = "fault-injection")]
        #[arg(long, env = "VAULTD_SABOTAGE", hide = true)]
        sabotage: Option<protocol::sabotage::Sabotage>,
        /// Test-only: capacity of each processor's queue (default 4096).
        #[cfg(feature = "fault-injection")]
        #[arg(long, hide = true, value_parser = clap::value_parser!(u16).range(1..))]
        bus_capacity: Option<u16>,
    },
    /// Ask a running validator to sign messages with a coin's vault; waits and prints one
    /// signature (hex) per message.
    Sign {
        /// A node's HTTP endpoint, host:port (repeatable: the request is approved on each, in
        /// order; give each one's token with a `--data-dir` or `--token-file` in the same order).
        #[arg(long = "api", env = "VAULTD_API", value_delimiter = ',')]
        apis: Vec<String>,
        /// A node's data directory (its `api-token` file is used); repeatable, one per `--api`.
        #[arg(long = "data-dir")]
        data_dirs: Vec<PathBuf>,
        /// An API token file (instead of `DATA_DIR/api-token`); repeatable, one per `--api`.
        #[arg(
            long = "token-file",
            env = "VAULTD_API_TOKEN_FILE",
            conflicts_with = "data_dirs"
        )]
        token_files: Vec<PathBuf>,
        /// The `cluster.json` of `scripts/local-cluster.sh`: approve on its first
        /// `--approvals` nodes (default: the threshold t), with their tokens.
        #[arg(long, conflicts_with_all = ["apis", "data_dirs", "token_files"])]
        cluster: Option<PathBuf>,
        /// With `--cluster`: on how many of its nodes to approve.
        #[arg(long, requires = "cluster")]
        approvals: Option<usize>,
        /// Coin (BTC, ETH, SOL).
        #[arg(long)]
        coin: Coin,
        /// Message, hex (repeatable; all are signed in one ceremony). BTC: a 32-byte BIP341
        /// sighash; ETH: a 32-byte digest; SOL: the transaction message bytes.
        #[arg(long = "message", required = true)]
        messages: Vec<String>,
        /// The client's reference (for example the transaction's id): part of the request id,
        /// so every operator approving the same transaction approves the same request.
        #[arg(long)]
        reference: Option<String>,
        /// Seconds to wait for the signatures.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        /// Sign with the vault of this (earlier, retiring) validator-set session instead of the
        /// current one.
        #[arg(long)]
        session: Option<u32>,
    },
    /// Replace the API token of a data directory (a running node uses the new one at once;
    /// the old one stops working).
    RotateToken {
        /// Data directory.
        #[arg(long, env = "VAULTD_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Step 4: replace a coin processor's messaging key on a running node; every peer forgets
    /// the old key and uses the new one.
    RotateKey {
        /// Data directory of the running node.
        #[arg(long, env = "VAULTD_DATA_DIR")]
        data_dir: PathBuf,
        /// Coin (BTC, ETH, SOL).
        #[arg(long)]
        coin: Coin,
    },
    /// Print a running node's status: peers (address, latency), vaults per coin and session,
    /// ceremonies in progress, who was left out and why, recent failures.
    Status {
        /// The node's HTTP endpoint, host:port.
        #[arg(long, env = "VAULTD_API", default_value = "127.0.0.1:8555")]
        api: String,
        /// Print the raw status document (JSON) instead.
        #[arg(long)]
        json: bool,
    },
    /// List a running node's peers: every validator, connected or missing, address and latency.
    Peers {
        /// The node's HTTP endpoint, host:port.
        #[arg(long, env = "VAULTD_API", default_value = "127.0.0.1:8555")]
        api: String,
    },
}
