//! # vaultd node
//!
//! Moves bytes for the sans-IO [`protocol`]: the libp2p swarm ([`network`]), the coordinator
//! event loop ([`coordinator`]), one thread per coin processor ([`processor_task`]) joined by the
//! local bus ([`bus`]), the HTTP endpoint ([`api`]), the operator's control socket
//! ([`control`]) and the CLI ([`cli`]). All state is in RocksDB through [`storage`].

pub mod addresses;
pub mod announce;
pub mod api;
pub mod bus;
pub mod cli;
pub mod client;
pub mod config;
pub mod control;
pub mod coordinator;
pub mod core;
pub mod error;
#[cfg(feature = "fault-injection")]
pub(crate) mod faults;
pub mod freshness;
pub mod http_client;
pub mod inbound;
pub mod ip_limits;
pub mod metrics;
pub mod network;
pub mod outbox;
pub mod permissions;
pub mod policy;
pub mod processor_task;
pub mod rate;
pub mod redial;
pub mod status;
mod status_view;
pub mod token;
pub mod transport;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
};

use libp2p::Multiaddr;
use protocol::{
    keys::NodeKeys,
    network::NetworkDefinition,
    processor::Processor,
    vault::{VaultRecord, VaultStatus},
};
use serde::{Deserialize, Serialize};
use storage::{Identity, IdentityKey, IdentityValue, KeyShares, Secrets, Store, VaultKey, Vaults};
use tokio::sync::mpsc;
use tracing::info;

pub use client::{cluster_approvers, sign_and_wait, submit_sign, wait_sign, Approver, SignSpec};
pub use error::NodeError;

/// Largest network definition file read.
pub const MAX_DEFINITION_SIZE: u64 = 1024 * 1024;

/// Where the database lives inside the data directory.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("db")
}

/// Largest passphrase file read.
const MAX_PASSWORD_FILE: u64 = 4096;

/// The operator's choice of `--password-file FILE` or `--insecure-no-passphrase`.
pub fn secrets_from(
    password_file: Option<&Path>,
    insecure: bool,
    insecure_permissions: bool,
) -> Result<Secrets, NodeError> {
    match (password_file, insecure) {
        (Some(_), true) => Err(NodeError::Config(
            "give either --password-file or --insecure-no-passphrase, not both".into(),
        )),
        (None, true) => Ok(Secrets::Insecure),
        (None, false) => Err(NodeError::Config(
            "keys are encrypted at rest: give --password-file FILE \
             (or --insecure-no-passphrase for a local test cluster)"
                .into(),
        )),
        (Some(path), false) => {
            let bad =
                |e: String| NodeError::Config(format!("--password-file {}: {e}", path.display()));
            let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
            if meta.len() > MAX_PASSWORD_FILE {
                return Err(bad("over 4 KiB".into()));
            }
            permissions::check_private(path, "the passphrase file", insecure_permissions)?;
            let text = zeroize::Zeroizing::new(
                std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?,
            );
            let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
            if line.is_empty() {
                return Err(bad("the first line (the passphrase) is empty".into()));
            }
            Ok(Secrets::Passphrase(zeroize::Zeroizing::new(
                line.as_bytes().to_vec(),
            )))
        }
    }
}

/// Step 1: generate and persist the three keypairs; refuses to overwrite an identity.
pub fn init(data_dir: &Path, secrets: &Secrets) -> Result<protocol::keys::PublicKeys, NodeError> {
    permissions::make_private_dir(data_dir)?;
    let store = Store::open(&db_path(data_dir), secrets)?;
    if let Some(existing) = store.node_keys()? {
        return Err(NodeError::Config(format!(
            "{} already holds the identity {}; refusing to overwrite it",
            data_dir.display(),
            existing.validator_id()
        )));
    }
    let keys = NodeKeys::generate(&mut rand_core::OsRng)?;
    store.put::<Identity>(&IdentityKey::Node, &IdentityValue::Node(keys.clone()))?;
    token::ensure(data_dir)?;
    Ok(keys.public())
}

/// Read and check a network definition file.
pub fn load_definition(path: &Path) -> Result<NetworkDefinition, NodeError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| NodeError::Config(format!("network file {}: {e}", path.display())))?;
    if meta.len() > MAX_DEFINITION_SIZE {
        return Err(NodeError::Config(format!(
            "network file {} is over 1 MiB",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| NodeError::Config(format!("network file {}: {e}", path.display())))?;
    let def = NetworkDefinition::from_toml(&text)
        .map_err(|e| NodeError::Config(format!("{}: {e}", path.display())))?;
    for (i, b) in def.bootstrap.iter().enumerate() {
        b.parse::<Multiaddr>()
            .map_err(|e| NodeError::Config(format!("{}: bootstrap[{i}]: {e}", path.display())))?;
    }
    Ok(def)
}

/// Settings of `vaultd run`.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Data directory (created by `vaultd init`).
    pub data_dir: PathBuf,
    /// Network definition file.
    pub network_file: PathBuf,
    /// libp2p listen addresses.
    pub listen: Vec<Multiaddr>,
    /// HTTP endpoint address.
    pub api: SocketAddr,
    /// Serve the API on an address other than loopback (it is then reachable from other
    /// hosts: reads without a token, state changes with it).
    pub api_allow_remote: bool,
    /// A second listener serving only `/metrics` and `/health`.
    pub metrics_listen: Option<SocketAddr>,
    /// Extra bootstrap addresses (besides the definition's).
    pub bootstrap: Vec<Multiaddr>,
    /// `--external-address`: what peers on other hosts dial (advertised first).
    pub external_addrs: Vec<Multiaddr>,
    /// How long a signing attempt waits for its signers before a retry with another set.
    pub sign_timeout: std::time::Duration,
    /// How long this operator's approvals of signing requests count.
    pub approval_ttl: std::time::Duration,
    /// How long a DKG phase may make no progress before this validator votes.
    pub dkg_timeout: std::time::Duration,
    /// How the keys are protected at rest.
    pub secrets: Secrets,
    /// Start even if the data directory is open to other users (warn only).
    pub insecure_permissions: bool,
    /// The operator's signing policy file (`--sign-policy`).
    pub sign_policy: Option<PathBuf>,
    /// Test-only malicious behaviour of every processor of this node.
    #[cfg(feature = "fault-injection")]
    pub sabotage: Option<protocol::sabotage::Sabotage>,
    /// Test-only: capacity of each processor's queue (`None`: [`bus::BUS_CAPACITY`]).
    #[cfg(feature = "fault-injection")]
    pub bus_capacity: Option<usize>,
}

/// What a running node writes to `DATA_DIR/run.json` once it listens.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunInfo {
    /// IDENTITY.
    pub peer_id: String,
    /// libp2p addresses with `/p2p/<id>`.
    pub p2p: Vec<String>,
    /// HTTP endpoint, host:port.
    pub api: String,
    /// Metrics listener, host:port, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
    /// Process id.
    pub pid: u32,
}

/// Run a validator until `shutdown` resolves.
pub async fn run(
    cfg: RunConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    let def = load_definition(&cfg.network_file)?;
    let policy = match &cfg.sign_policy {
        Some(path) => policy::SignPolicy::load(path)?,
        None => policy::SignPolicy::default(),
    };
    permissions::check_private(
        &cfg.data_dir,
        "the data directory",
        cfg.insecure_permissions,
    )?;
    let store = Arc::new(Store::open(&db_path(&cfg.data_dir), &cfg.secrets)?);
    let keys = store.node_keys()?.ok_or_else(|| {
        NodeError::Config(format!(
            "{} is not initialised: run `vaultd init --data-dir {}` first",
            cfg.data_dir.display(),
            cfg.data_dir.display()
        ))
    })?;
    let me = keys.validator_id();
    if !def.is_validator(&me) {
        return Err(NodeError::Config(format!(
            "this node ({me}) is not a validator of network {:?}",
            def.name
        )));
    }
    info!(peer_id = %me, network = %def.name, validators = def.validators.len(), threshold = def.threshold, coins = ?def.coins, "starting vaultd");

    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = metrics::Metrics::register(&mut registry);
    let keypair = network::keypair_from_secret(&keys.coordinator_secret)?;
    // Vaults of earlier sessions this validator holds a share of: they keep signing (retiring),
    // so their participants stay allowed even if the new definition removed them.
    let retiring_records: Vec<VaultRecord> = store
        .vaults()?
        .into_iter()
        .filter(|v| {
            def.coins.contains(&v.coin)
                && v.session < def.session
                && v.status == VaultStatus::Active
                && v.participants.contains(&me)
        })
        .collect();
    let mut allowed = def.validators.clone();
    for v in &retiring_records {
        for p in &v.participants {
            if !allowed.contains(p) {
                allowed.push(p.clone());
            }
        }
    }
    for &coin in &def.coins {
        prune_nonce_markers(&store, coin, &allowed)?;
    }
    let validators = allowed
        .iter()
        .map(network::peer_id_of)
        .collect::<Result<Vec<_>, _>>()?;
    let mut swarm = network::build_swarm(keypair, &def.name, &validators)?;
    let libp2p_metrics = libp2p::metrics::Metrics::new(&mut registry);
    for addr in &cfg.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| NodeError::Network(format!("listen on {addr}: {e}")))?;
    }
    if !cfg.api.ip().is_loopback() && !cfg.api_allow_remote {
        return Err(NodeError::Config(format!(
            "--api {} is not a loopback address: other hosts could reach the API; pass \
             --api-allow-remote to serve it there (state changes still need the token), or use \
             --metrics-listen for a scrape-only listener",
            cfg.api
        )));
    }
    let (token_file, made) = token::ensure(&cfg.data_dir)?;
    if made {
        info!(file = %token_file.display(), "created the API token file (this data directory had none)");
    }
    let listener = tokio::net::TcpListener::bind(cfg.api)
        .await
        .map_err(|e| NodeError::Config(format!("api address {}: {e}", cfg.api)))?;
    let api_addr = listener.local_addr()?;
    info!(api = %api_addr, "HTTP endpoint up");
    let metrics_listener = match cfg.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| NodeError::Config(format!("metrics address {addr}: {e}")))?,
        ),
        None => None,
    };
    let metrics_addr = match &metrics_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    if let Some(addr) = metrics_addr {
        info!(metrics = %addr, "metrics endpoint up");
    }

    let status = Arc::new(RwLock::new(status::Status::default()));
    let (sign_tx, sign_rx) = mpsc::channel(256);
    let state = api::ApiState {
        status: status.clone(),
        registry: Arc::new(Mutex::new(registry)),
        sign: sign_tx,
        store: store.clone(),
        token_file,
        metrics: metrics.clone(),
    };
    let signing = protocol::signing::SigningConfig {
        attempt_timeout_ms: u64::try_from(cfg.sign_timeout.as_millis()).unwrap_or(u64::MAX),
        approval_ttl_s: cfg.approval_ttl.as_secs().max(1),
        ..Default::default()
    };
    if let Some(l) = metrics_listener {
        let router = api::metrics_router(state.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(l, router).await {
                tracing::error!(error = %e, "metrics endpoint stopped");
            }
        });
    }
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, api::router(state)).await {
            tracing::error!(error = %e, "HTTP endpoint stopped");
        }
    });

    // The local bus: one bounded channel per coin topic towards its processor (the coordinator
    // never waits on it), one shared back (a processor waits while it is full).
    #[cfg(feature = "fault-injection")]
    let capacity = cfg.bus_capacity.unwrap_or(bus::BUS_CAPACITY);
    #[cfg(not(feature = "fault-injection"))]
    let capacity = bus::BUS_CAPACITY;
    let (events_tx, events_rx) = mpsc::channel(bus::BUS_CAPACITY);
    let env = ProcessorEnv {
        me: &me,
        store: &store,
        events: &events_tx,
        metrics: &metrics,
        capacity,
    };
    let snapshots: processor_task::Snapshots = Arc::new(RwLock::new(BTreeMap::new()));
    let mut topics = BTreeMap::new();
    // This session's DKG randomness has its own root (stored before first use, other sessions'
    // deleted), not the one drawn at `init`.
    let session_keys = NodeKeys {
        dkg_entropy: store.session_entropy(def.session)?,
        ..keys.clone()
    };
    for coin in def.coins.clone() {
        let messaging = store.messaging_key(coin, &keys)?;
        let vault = store.get::<Vaults>(&VaultKey {
            coin,
            session: def.session,
        })?;
        let mut processor = Processor::new(def.clone(), coin, &session_keys, messaging, vault)?;
        processor.set_signing_config(signing);
        processor.set_dkg_timeout(u64::try_from(cfg.dkg_timeout.as_millis()).unwrap_or(u64::MAX));
        if processor.vault().is_some() {
            let share = store.get::<KeyShares>(&VaultKey {
                coin,
                session: def.session,
            })?;
            match share {
                Some(share) => processor.set_key_share(&share.keys)?,
                None => {
                    tracing::warn!(%coin, "active vault without a stored key share; it cannot sign")
                }
            }
        }
        let topic = start_processor(
            processor,
            &env,
            snapshots.clone(),
            #[cfg(feature = "fault-injection")]
            cfg.sabotage,
        )?;
        topics.insert(coin, topic);
    }
    let mut retiring = Vec::new();
    for record in retiring_records {
        let coin = record.coin;
        let old = NetworkDefinition {
            session: record.session,
            coins: vec![coin],
            threshold: record.threshold,
            validators: record.participants.clone(),
            validator_addrs: vec![Vec::new(); record.participants.len()],
            ..def.clone()
        };
        let share = store.get::<KeyShares>(&VaultKey {
            coin,
            session: record.session,
        })?;
        let Some(share) = share else {
            tracing::warn!(%coin, session = record.session, "retiring vault without a stored key share; it cannot sign");
            continue;
        };
        let messaging = store.messaging_key(coin, &keys)?;
        let mut processor =
            Processor::retiring(old, &keys, messaging, record.clone(), &share.keys)?;
        processor.set_signing_config(signing);
        let snapshots: processor_task::Snapshots = Arc::new(RwLock::new(BTreeMap::new()));
        let topic = start_processor(
            processor,
            &env,
            snapshots.clone(),
            #[cfg(feature = "fault-injection")]
            None,
        )?;
        info!(%coin, session = record.session, address = %record.address, "retiring vault still signs");
        retiring.push(bus::RetiringVault {
            record,
            topic,
            snapshots,
        });
    }
    drop(events_tx);

    let (control_tx, control_rx) = mpsc::channel(16);
    control::serve(&cfg.data_dir, control_tx)?;

    let mut bootstrap: Vec<Multiaddr> = def
        .bootstrap
        .iter()
        .filter_map(|b| b.parse().ok())
        .collect();
    bootstrap.extend(cfg.bootstrap.iter().cloned());
    let run_file = cfg.data_dir.join("run.json");
    let peer_id = *swarm.local_peer_id();
    let on_listening: coordinator::OnListening = Box::new(move |addrs| {
        let info = RunInfo {
            peer_id: peer_id.to_string(),
            p2p: addrs.iter().map(|a| format!("{a}/p2p/{peer_id}")).collect(),
            api: api_addr.to_string(),
            metrics: metrics_addr.map(|a| a.to_string()),
            pid: std::process::id(),
        };
        match serde_json::to_vec_pretty(&info) {
            Ok(bytes) => {
                let tmp = run_file.with_extension("json.tmp");
                if let Err(e) =
                    std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, &run_file))
                {
                    tracing::warn!(error = %e, "cannot write run.json");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot encode run.json"),
        }
    });
    let core = core::Core::new(core::CoreParts {
        peer_records: store.peers()?.into_iter().collect(),
        def,
        me,
        local_peer: *swarm.local_peer_id(),
        coordinator_key: keys.coordinator_public(),
        bootstrap,
        retiring: retiring.iter().map(|r| r.record.clone()).collect(),
        signing,
        dkg_timeout: cfg.dkg_timeout,
        metrics: metrics.clone(),
        policy,
    })?;
    let coordinator = coordinator::Coordinator::new(coordinator::CoordinatorParts {
        core,
        store,
        swarm,
        libp2p_metrics,
        metrics,
        bus: topics,
        retiring,
        from_processors: events_rx,
        control: control_rx,
        sign_requests: sign_rx,
        snapshots,
        status,
        on_listening: Some(on_listening),
        external_addrs: cfg.external_addrs.clone(),
    });
    let result = coordinator.run(shutdown).await;
    let _ = std::fs::remove_file(control::socket_path(&cfg.data_dir));
    result
}

/// Delete the nonce markers of `coin`'s requests that finished before a crash kept their
/// deletion from being written (`validators`: every possible originator, of every vault).
fn prune_nonce_markers(
    store: &Store,
    coin: protocol::Coin,
    validators: &[protocol::ValidatorId],
) -> Result<(), NodeError> {
    let stale = protocol::signing::stale_markers(
        &store.nonces_used(coin)?,
        &store.pending_sign_requests(coin)?,
        validators,
    );
    if stale.is_empty() {
        return Ok(());
    }
    let mut b = storage::Batch::new();
    for (id, attempt) in &stale {
        b.delete::<storage::NoncesUsed>(&storage::NonceKey {
            coin,
            id: *id,
            attempt: *attempt,
        });
    }
    store.write(b)?;
    tracing::info!(%coin, markers = stale.len(), "pruned the nonce markers of finished requests");
    Ok(())
}

/// What every processor thread of this node starts with.
struct ProcessorEnv<'a> {
    me: &'a protocol::ValidatorId,
    store: &'a Arc<Store>,
    events: &'a mpsc::Sender<bus::ProcessorEvent>,
    metrics: &'a metrics::Metrics,
    /// Capacity of its queue.
    capacity: usize,
}

/// Give `processor` its signing state from disk (the attempts already preprocessed, this node's
/// pending requests for its vault, past cheater reports) and start its thread; its bus topic.
fn start_processor(
    mut processor: Processor,
    env: &ProcessorEnv,
    snapshots: processor_task::Snapshots,
    #[cfg(feature = "fault-injection")] sabotage: Option<protocol::sabotage::Sabotage>,
) -> Result<bus::Topic, NodeError> {
    let ProcessorEnv {
        me,
        store,
        events,
        metrics,
        capacity,
    } = *env;
    let coin = processor.coin();
    processor.restore_signing(
        store.nonces_used(coin)?,
        store.pending_sign_requests(coin)?,
        store.cheaters(coin)?,
    );
    let (tx, rx) = mpsc::channel(capacity);
    processor_task::ProcessorTask {
        processor,
        store: store.clone(),
        commands: rx,
        events: events.clone(),
        snapshots,
        metrics: metrics.clone(),
        #[cfg(feature = "fault-injection")]
        sabotage,
        timers: Default::default(),
        rejections: Default::default(),
    }
    .spawn()?;
    Ok(bus::Topic::new(me, coin, tx))
}
