//! Helpers to run real `vaultd` processes on loopback.

#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod netns;

pub const BIN: &str = env!("CARGO_BIN_EXE_vaultd");

/// Poll `cond` every 100 ms until it holds or `deadline` passes.
pub async fn wait_for<F, Fut>(what: &str, deadline: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Run the `vaultd` CLI with `args` and `--data-dir dir`; panics with its stderr on failure.
pub fn cli(args: &[&str], dir: &Path) -> Value {
    let out = Command::new(BIN)
        .env("VAULTD_INSECURE_NO_PASSPHRASE", "true")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "vaultd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `vaultd rotate-token` for `dir`; panics on failure; what it printed (stdout and stderr).
pub fn rotate_token(dir: &Path) -> String {
    let out = Command::new(BIN)
        .args(["rotate-token", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "vaultd rotate-token: {printed}");
    printed
}

pub fn init(dir: &Path) -> String {
    cli(&["init"], dir)["peer_id"].as_str().unwrap().to_string()
}

/// `n` fresh validators under `root`: their initialised data directories (`node1`..), their
/// peer ids, and `root/network.toml` naming all of them for `coins`.
pub fn fresh_validators(
    root: &Path,
    n: usize,
    coins: &[&str],
) -> (Vec<PathBuf>, Vec<String>, PathBuf) {
    let dirs: Vec<PathBuf> = (1..=n).map(|i| root.join(format!("node{i}"))).collect();
    let ids: Vec<String> = dirs.iter().map(|d| init(d)).collect();
    let network = root.join("network.toml");
    write_network(&network, &ids, coins);
    (dirs, ids, network)
}

pub fn write_network(path: &Path, peer_ids: &[String], coins: &[&str]) {
    let mut s = format!(
        "name = \"it\"\nsession = 0\ncoins = [{}]\n",
        coins
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for p in peer_ids {
        s.push_str(&format!("[[validators]]\npeer_id = \"{p}\"\n"));
    }
    std::fs::write(path, s).unwrap();
}

pub struct Node {
    pub dir: PathBuf,
    pub child: Child,
    pub api: String,
    /// The metrics listener, when started with `--metrics-listen`.
    pub metrics_api: Option<String>,
    /// The operator's API token (`DATA_DIR/api-token`).
    pub token: vaultd::token::ApiToken,
    pub p2p: String,
    pub peer_id: String,
}

impl Node {
    pub async fn start(dir: &Path, network: &Path, bootstrap: Option<&str>) -> Node {
        Node::start_with(dir, network, bootstrap, &[]).await
    }

    /// Start with extra `vaultd run` arguments (e.g. `--dkg-timeout 3`, `--sabotage bad-share`).
    pub async fn start_with(
        dir: &Path,
        network: &Path,
        bootstrap: Option<&str>,
        extra: &[&str],
    ) -> Node {
        let _ = std::fs::remove_file(dir.join("run.json"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("node.log"))
            .unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["run", "--data-dir"])
            .arg(dir)
            .arg("--network")
            .arg(network)
            .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .env("VAULTD_SIGN_TIMEOUT", "5")
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(b) = bootstrap {
            cmd.args(["--bootstrap", b]);
        }
        cmd.args(extra);
        if !extra.contains(&"--password-file") {
            cmd.env("VAULTD_INSECURE_NO_PASSPHRASE", "true");
        }
        let mut child = cmd.spawn().unwrap();
        let run = dir.join("run.json");
        let pid = child.id();
        let start = Instant::now();
        loop {
            if let Ok(bytes) = std::fs::read(&run) {
                if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
                    if v["pid"].as_u64() == Some(u64::from(pid)) {
                        return Node {
                            dir: dir.to_path_buf(),
                            api: v["api"].as_str().unwrap().to_string(),
                            metrics_api: v["metrics"].as_str().map(str::to_string),
                            token: vaultd::token::read(&vaultd::token::path(dir)).unwrap(),
                            p2p: v["p2p"][0].as_str().unwrap().to_string(),
                            peer_id: v["peer_id"].as_str().unwrap().to_string(),
                            child,
                        };
                    }
                }
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("vaultd exited with {status}: {}", log_of(dir));
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "vaultd did not start: {}",
                log_of(dir)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn status(&self) -> Option<Value> {
        let (code, body) = vaultd::http_client::get(&self.api, "/status").await.ok()?;
        (code == 200)
            .then(|| serde_json::from_str(&body).ok())
            .flatten()
    }

    /// `POST path` with this node's API token; (status code, body).
    pub async fn post(&self, path: &str, body: &str) -> (u16, String) {
        vaultd::http_client::post_json_authorized(&self.api, path, body, &self.token)
            .await
            .unwrap()
    }

    pub async fn metrics(&self) -> String {
        vaultd::http_client::get(&self.api, "/metrics")
            .await
            .unwrap()
            .1
    }

    /// Fault injection: cut this node's links to `cut`, delay those to `delayed` (replacing
    /// earlier faults; empty lists heal).
    pub async fn links(&self, cut: &[&str], delayed: &[&str], delay_ms: u64) {
        let req = vaultd::control::ControlRequest::Links {
            cut: cut.iter().map(|s| s.to_string()).collect(),
            delayed: delayed.iter().map(|s| s.to_string()).collect(),
            delay_ms,
            lose_from: Vec::new(),
            lose_kind: None,
        };
        let reply = vaultd::control::request(&self.dir, &req).await.unwrap();
        assert!(reply.ok, "{:?}", reply.error);
    }

    /// Test-only fault: lose the next gossip message of `kind` authored by each of `from`.
    pub async fn lose_first(&self, from: &[&str], kind: &str) {
        let req = vaultd::control::ControlRequest::Links {
            cut: Vec::new(),
            delayed: Vec::new(),
            delay_ms: 0,
            lose_from: from.iter().map(|s| s.to_string()).collect(),
            lose_kind: Some(kind.to_string()),
        };
        let reply = vaultd::control::request(&self.dir, &req).await.unwrap();
        assert!(reply.ok, "{:?}", reply.error);
    }

    /// Test-only fault: `coin`'s processor takes no command (stalled) or is released.
    pub async fn stall(&self, coin: &str, stalled: bool) {
        let req = vaultd::control::ControlRequest::StallProcessor {
            coin: coin.parse().unwrap(),
            stalled,
        };
        let reply = vaultd::control::request(&self.dir, &req).await.unwrap();
        assert!(reply.ok, "{:?}", reply.error);
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn log(&self) -> String {
        log_of(&self.dir)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
}

/// Whether every vault of a status document is active.
pub fn all_active(status: &Value, coins: usize) -> bool {
    status["vaults"]
        .as_array()
        .is_some_and(|v| v.len() == coins && v.iter().all(|v| v["status"] == "active"))
}

pub async fn wait_all_active(nodes: &[&Node], coins: usize, deadline: Duration) {
    let start = Instant::now();
    loop {
        let mut done = true;
        for n in nodes {
            match n.status().await {
                Some(s) if all_active(&s, coins) => {}
                _ => done = false,
            }
        }
        if done {
            return;
        }
        if start.elapsed() > deadline {
            let mut report = String::new();
            for n in nodes {
                report.push_str(&format!(
                    "\n--- {} status: {:?}\n--- log tail:\n",
                    n.peer_id,
                    n.status().await
                ));
                let log = n.log();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                report.push_str(&tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
            }
            panic!("vaults not active after {deadline:?}:{report}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The vault of `coin` in a `/status` document (panics if there is none).
pub fn vault<'a>(status: &'a Value, coin: &str) -> &'a Value {
    status["vaults"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["coin"] == coin)
        .unwrap()
}

/// The chain's own check, independent of modular-frost.
pub fn chain_accepts(coin: &str, vault: &Value, msg: &[u8], sig: &[u8]) -> bool {
    use sha3::Digest as _;
    let secp = secp256k1::Secp256k1::new();
    let group_key = hex::decode(vault["group_key"].as_str().unwrap()).unwrap();
    match coin {
        "BTC" => {
            let (_, _, program) =
                bech32::segwit::decode(vault["address"].as_str().unwrap()).unwrap();
            let key = secp256k1::XOnlyPublicKey::from_slice(&program).unwrap();
            let Ok(sig) = secp256k1::schnorr::Signature::from_slice(sig) else {
                return false;
            };
            let msg = secp256k1::Message::from_digest(msg.try_into().unwrap());
            secp.verify_schnorr(&sig, &msg, &key).is_ok()
        }
        "ETH" => {
            // R' = s·G − c·P; accept iff c == keccak256(address(R') ‖ v ‖ px ‖ m).
            let p = secp256k1::PublicKey::from_slice(&group_key).unwrap();
            let (Ok(c), Ok(s)) = (
                secp256k1::Scalar::from_be_bytes(sig[..32].try_into().unwrap()),
                secp256k1::SecretKey::from_slice(&sig[32..]),
            ) else {
                return false;
            };
            let sg = secp256k1::PublicKey::from_secret_key(&secp, &s);
            let cp = p.mul_tweak(&secp, &c).unwrap().negate(&secp);
            let Ok(r) = sg.combine(&cp) else {
                return false;
            };
            let address = &sha3::Keccak256::digest(&r.serialize_uncompressed()[1..])[12..];
            let mut h = sha3::Keccak256::new();
            h.update(address);
            h.update([27 + group_key[0] - 2]);
            h.update(&group_key[1..]);
            h.update(msg);
            h.finalize()[..] == sig[..32]
        }
        "SOL" => {
            let key =
                ed25519_dalek::VerifyingKey::from_bytes(&group_key.try_into().unwrap()).unwrap();
            let sig = ed25519_dalek::Signature::from_bytes(sig.try_into().unwrap());
            key.verify_strict(msg, &sig).is_ok()
        }
        _ => unreachable!(),
    }
}

/// The value of the Prometheus counter line that starts with `series` (0 when absent).
pub fn counter(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// `GET /sign/{id}` on `api`: the request's record, if that node knows it.
pub async fn sign_record(api: &str, id: &str) -> Option<Value> {
    match vaultd::http_client::get(api, &format!("/sign/{id}")).await {
        Ok((200, body)) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

/// Wait (polling, until `deadline`) for `id` to be finished on `api`; its record.
pub async fn sign_finished(api: &str, id: &str, deadline: Duration) -> Value {
    let start = Instant::now();
    loop {
        if let Some(r) = sign_record(api, id).await {
            if r["status"] != "pending" {
                return r;
            }
        }
        assert!(
            start.elapsed() < deadline,
            "request {id} on {api} still pending after {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Subscribe `swarm` (a test's own, speaking with a validator's identity) to every coin topic
/// of `def`, dial `nodes`, and wait until each of them subscribed towards it on every topic.
pub async fn join_topics(
    swarm: &mut libp2p::Swarm<vaultd::network::Behaviour>,
    def: &protocol::network::NetworkDefinition,
    nodes: &[&Node],
) -> Vec<libp2p::gossipsub::IdentTopic> {
    use futures::StreamExt;
    use libp2p::{gossipsub, swarm::SwarmEvent, Multiaddr};
    use vaultd::network::{self, BehaviourEvent};
    let topics: Vec<_> = def
        .coins
        .iter()
        .map(|c| network::coin_topic(&def.name, *c))
        .collect();
    for t in &topics {
        swarm.behaviour_mut().gossipsub.subscribe(t).unwrap();
    }
    for n in nodes {
        swarm.dial(n.p2p.parse::<Multiaddr>().unwrap()).unwrap();
    }
    let mut subscribed = std::collections::BTreeSet::new();
    let want = nodes.len() * topics.len();
    tokio::time::timeout(Duration::from_secs(30), async {
        while subscribed.len() < want {
            if let SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(
                gossipsub::Event::Subscribed { peer_id, topic },
            )) = swarm.select_next_some().await
            {
                subscribed.insert((peer_id, topic));
            }
        }
    })
    .await
    .expect("the nodes subscribed towards the test's swarm");
    topics
}
