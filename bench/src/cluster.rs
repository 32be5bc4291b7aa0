//! A cluster of n real `vaultd` processes, each with its own RocksDB directory: on loopback,
//! started here, or a namespaced testnet `scripts/testnet.sh` started (`Cluster::testnet`).

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context, Result};
use protocol::Coin;
use vaultd::http_client;

use crate::{messages_for, Latencies};

/// One node of the cluster.
struct Node {
    /// The process, when this benchmark spawned it (a testnet's nodes are the script's).
    child: Option<Child>,
    pid: u32,
    api: String,
    /// The operator's API token (from its data directory).
    token: vaultd::token::ApiToken,
    log: PathBuf,
}

/// The running cluster; its processes are killed when it is dropped (a testnet is stopped
/// with `scripts/stop-cluster.sh`, which also removes its namespaces).
pub struct Cluster {
    nodes: Vec<Node>,
    coins: Vec<Coin>,
    /// The stop script and the testnet's directory.
    testnet: Option<(PathBuf, PathBuf)>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(child) = n.child.as_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if let Some((stop, dir)) = &self.testnet {
            let _ = Command::new("bash")
                .arg(stop)
                .arg(dir)
                .stdout(Stdio::null())
                .status();
        }
    }
}

/// A namespaced testnet's shaping (`scripts/testnet.sh` options).
pub struct Shaping {
    pub delay_ms: f64,
    pub jitter_ms: f64,
    pub loss_pct: f64,
}

/// Most nodes in one cluster.
pub const MAX_NODES: usize = 200;

/// Where the nodes listen: p2p on `base + i`, HTTP on `base + MAX_NODES + i`; the start-up
/// probe on the port after each range.
pub struct Ports {
    pub base: u16,
}

impl Ports {
    /// Ports one cluster takes (the next run starts after them).
    pub const STRIDE: u16 = 2 * MAX_NODES as u16 + 2;

    fn p2p(&self, i: usize) -> u16 {
        self.base + i as u16
    }

    fn api(&self, i: usize) -> u16 {
        self.base + MAX_NODES as u16 + i as u16
    }
}

impl Cluster {
    /// Initialise `n` validators in `dir` (emptied first) with a network definition for
    /// `coins`, start them, and return once all are spawned, with the wall-clock start time.
    pub fn start(
        bin: &Path,
        dir: &Path,
        n: usize,
        coins: &[Coin],
        ports: &Ports,
    ) -> Result<(Cluster, SystemTime)> {
        if n > MAX_NODES {
            bail!("at most {MAX_NODES} nodes per cluster");
        }
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
        }
        let mut peer_ids = Vec::new();
        for i in 0..n {
            let data = dir.join(format!("node{i}"));
            fs::create_dir_all(&data)?;
            peer_ids.push(init_node(bin, &data)?);
        }
        let p2p = |i: usize| ports.p2p(i);
        let api = |i: usize| ports.api(i);
        let mut toml = format!(
            "name = \"bench\"\nsession = 0\ncoins = [{}]\nbootstrap = [\"/ip4/127.0.0.1/tcp/{}/p2p/{}\"]\n",
            coins
                .iter()
                .map(|c| format!("\"{c}\""))
                .collect::<Vec<_>>()
                .join(", "),
            p2p(0),
            peer_ids[0]
        );
        for (i, id) in peer_ids.iter().enumerate() {
            toml.push_str(&format!(
                "\n[[validators]]\npeer_id = \"{id}\"\naddrs = [\"/ip4/127.0.0.1/tcp/{}\"]\n",
                p2p(i)
            ));
        }
        let network = dir.join("network.toml");
        fs::write(&network, toml)?;

        // Above 64 validators on this machine's 2 cores a DKG phase can wait longer than the
        // default timeout (60 s) with nothing wrong: the set's operators would raise it too.
        let dkg_timeout = (n > 64).then(|| 3 * n as u64);
        let started = SystemTime::now();
        let mut nodes = Vec::new();
        for i in 0..n {
            let data = dir.join(format!("node{i}"));
            let log = data.join("node.log");
            let token = vaultd::token::read(&vaultd::token::path(&data))?;
            let child = spawn_node(bin, &data, &network, (p2p(i), api(i)), dkg_timeout, &log)?;
            nodes.push(Node {
                pid: child.id(),
                child: Some(child),
                api: format!("127.0.0.1:{}", api(i)),
                token,
                log,
            });
        }
        Ok((
            Cluster {
                nodes,
                coins: coins.to_vec(),
                testnet: None,
            },
            started,
        ))
    }

    /// `scripts/testnet.sh n` in `dir` (removed first) with `shaping`, the binaries of
    /// `bin_dir`, nodes logging JSON; returns once the script saw every vault active, with
    /// when it spawned the first node (from its `cluster.json`).
    pub fn testnet(
        root: &Path,
        bin_dir: &Path,
        dir: &Path,
        n: usize,
        coins: &[Coin],
        shaping: &Shaping,
    ) -> Result<(Cluster, SystemTime)> {
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
        }
        if let Some(parent) = dir.parent() {
            fs::create_dir_all(parent)?;
        }
        let names: Vec<String> = coins.iter().map(|c| c.to_string()).collect();
        let log = dir.with_extension("log");
        let out = Command::new("bash")
            .arg(root.join("scripts/testnet.sh"))
            .arg(n.to_string())
            .args(["--delay", &shaping.delay_ms.to_string()])
            .args(["--jitter", &shaping.jitter_ms.to_string()])
            .args(["--loss", &shaping.loss_pct.to_string()])
            .args(["--coins", &names.join(" ")])
            .arg("--dir")
            .arg(dir)
            .arg("--bin-dir")
            .arg(bin_dir)
            .args(["--detach", "--timeout", &(120 + 10 * n).to_string()])
            .env("VAULTD_LOG_FORMAT", "json")
            .env_remove("RUST_LOG")
            .stdout(fs::File::create(&log)?)
            .stderr(Stdio::piped())
            .output()
            .context("running scripts/testnet.sh")?;
        if !out.status.success() {
            bail!(
                "scripts/testnet.sh failed ({}): {}; its output in {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                log.display()
            );
        }
        let desc: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("cluster.json"))?)?;
        let started_ms = desc["started_at_ms"]
            .as_u64()
            .context("cluster.json has no started_at_ms")?;
        let mut nodes = Vec::new();
        for node in desc["nodes"]
            .as_array()
            .context("cluster.json has no nodes")?
        {
            let field = |k: &str| {
                node[k]
                    .as_str()
                    .map(str::to_string)
                    .with_context(|| format!("cluster.json: a node without {k}"))
            };
            let data = PathBuf::from(field("data_dir")?);
            nodes.push(Node {
                child: None,
                pid: node["pid"]
                    .as_u64()
                    .and_then(|p| u32::try_from(p).ok())
                    .context("cluster.json: a node without pid")?,
                api: field("api")?,
                token: vaultd::token::read(&vaultd::token::path(&data))?,
                log: PathBuf::from(field("log")?),
            });
        }
        Ok((
            Cluster {
                nodes,
                coins: coins.to_vec(),
                testnet: Some((root.join("scripts/stop-cluster.sh"), dir.to_path_buf())),
            },
            UNIX_EPOCH + Duration::from_millis(started_ms),
        ))
    }

    /// The CPU one node spends starting (RocksDB open, keys, processor threads, libp2p): a
    /// lone validator of a two-validator definition for `coins`, from its spawn to its first
    /// `/health` answer, all its threads (`/proc/PID/task/*/schedstat`). The other validator
    /// is never started, so nothing else runs.
    pub async fn startup_cpu_s(
        bin: &Path,
        dir: &Path,
        coins: &[Coin],
        ports: &Ports,
    ) -> Result<f64> {
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
        }
        let mut ids = Vec::new();
        for i in 0..2 {
            let data = dir.join(format!("node{i}"));
            fs::create_dir_all(&data)?;
            ids.push(init_node(bin, &data)?);
        }
        let (p2p, api) = (ports.p2p(2 * MAX_NODES), ports.p2p(2 * MAX_NODES + 1));
        let coins_toml: Vec<String> = coins.iter().map(|c| format!("\"{c}\"")).collect();
        let mut toml = format!(
            "name = \"probe\"\nsession = 0\ncoins = [{}]\nbootstrap = []\n",
            coins_toml.join(", ")
        );
        for id in &ids {
            toml.push_str(&format!(
                "\n[[validators]]\npeer_id = \"{id}\"\naddrs = []\n"
            ));
        }
        let network = dir.join("network.toml");
        fs::write(&network, toml)?;
        let data = dir.join("node0");
        let mut child = spawn_node(
            bin,
            &data,
            &network,
            (p2p, api),
            None,
            &data.join("node.log"),
        )?;
        let until = Instant::now() + Duration::from_secs(30);
        let addr = format!("127.0.0.1:{api}");
        let result = loop {
            if let Some(status) = child.try_wait()? {
                break Err(anyhow::anyhow!("start-up probe exited ({status})"));
            }
            if matches!(http_client::get(&addr, "/health").await, Ok((200, _))) {
                break task_cpu_s(child.id());
            }
            if Instant::now() > until {
                break Err(anyhow::anyhow!("start-up probe not ready in 30 s"));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let _ = child.kill();
        let _ = child.wait();
        result
    }

    /// Wait until every node reports every vault active; then the DKG time from `started` to
    /// the last "vault active" line of the nodes' logs (their own timestamps, so the polling
    /// interval does not count).
    pub async fn wait_dkg(&mut self, started: SystemTime, deadline: Duration) -> Result<f64> {
        let until = Instant::now() + deadline;
        let mut pending: Vec<usize> = (0..self.nodes.len()).collect();
        while !pending.is_empty() {
            if Instant::now() > until {
                bail!(
                    "{} nodes still without every vault active after {deadline:?}",
                    pending.len()
                );
            }
            let mut still = Vec::new();
            for i in pending {
                if let Some(status) = self.nodes[i].exited()? {
                    bail!(
                        "node {i} exited ({status}); see {}",
                        self.nodes[i].log.display()
                    );
                }
                if !self.all_active(i).await {
                    still.push(i);
                }
            }
            pending = still;
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        let start_us = started.duration_since(UNIX_EPOCH)?.as_micros() as i128;
        let mut last = start_us;
        for node in &self.nodes {
            let log = fs::read_to_string(&node.log)?;
            let active: Vec<i128> = log
                .lines()
                .filter(|l| l.contains("\"message\":\"vault active\""))
                .filter_map(log_time_us)
                .collect();
            if active.len() < self.coins.len() {
                bail!(
                    "{} logs {} vault activations",
                    node.log.display(),
                    active.len()
                );
            }
            last = last.max(active.into_iter().max().unwrap_or(start_us));
        }
        Ok((last - start_us) as f64 / 1e6)
    }

    async fn all_active(&self, i: usize) -> bool {
        let Ok((200, body)) = http_client::get(&self.nodes[i].api, "/status").await else {
            return false;
        };
        let Ok(status) = serde_json::from_str::<serde_json::Value>(&body) else {
            return false;
        };
        let active = status
            .get("vaults")
            .and_then(|v| v.as_array())
            .map(|vaults| {
                vaults
                    .iter()
                    .filter(|v| v.get("status").and_then(|s| s.as_str()) == Some("active"))
                    .count()
            })
            .unwrap_or(0);
        active >= self.coins.len()
    }

    /// Mean over the nodes of the bytes they sent (`vaultd_sent_bytes_total`, all labels).
    pub async fn bytes_sent_per_node(&self) -> Result<u64> {
        let mut total = 0u64;
        for node in &self.nodes {
            let (code, body) = http_client::get(&node.api, "/metrics").await?;
            if code != 200 {
                bail!("{} /metrics answered {code}", node.api);
            }
            total += body
                .lines()
                .filter(|l| l.starts_with("vaultd_sent_bytes_total"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>() as u64;
        }
        Ok(total / self.nodes.len() as u64)
    }

    /// CPU time the nodes used so far (user and system, all threads), seconds, summed over
    /// the nodes (`/proc/PID/stat`, in USER_HZ = 100 ticks per second on Linux).
    pub fn cpu_seconds(&self) -> Result<f64> {
        let mut ticks = 0u64;
        for node in &self.nodes {
            let stat = fs::read_to_string(format!("/proc/{}/stat", node.pid))?;
            // Fields after the command name (which is in parentheses and may hold spaces):
            // state is field 3, utime 14 and stime 15.
            let rest = stat
                .rsplit_once(')')
                .map(|(_, r)| r)
                .context("malformed /proc/PID/stat")?;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            for i in [11, 12] {
                ticks += fields
                    .get(i)
                    .and_then(|v| v.parse::<u64>().ok())
                    .context("no utime/stime in /proc/PID/stat")?;
            }
        }
        Ok(ticks as f64 / 100.0)
    }

    /// (median, max) over the nodes of a `/proc/PID/status` field in MiB (`VmRSS`, `VmHWM`).
    pub fn memory_mib(&self, field: &str) -> Result<(f64, f64)> {
        let mut values = Vec::new();
        for node in &self.nodes {
            let status = fs::read_to_string(format!("/proc/{}/status", node.pid))?;
            let kib = status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .with_context(|| format!("no {field} in /proc/{}/status", node.pid))?;
            values.push(kib / 1024.0);
        }
        values.sort_by(f64::total_cmp);
        Ok((values[values.len() / 2], values[values.len() - 1]))
    }

    /// Request `k`: approved (`POST /sign`) on t - 1 nodes starting at node `k mod n`, on coin
    /// `k mod coins`; the first node, the request id, and what the t-th approval needs.
    async fn approve(&self, k: usize) -> Result<(&Node, String, (vaultd::SignSpec, usize))> {
        let n = self.nodes.len();
        let t = usize::from(protocol::network::default_threshold(n));
        let coin = self.coins[k % self.coins.len()];
        let spec = vaultd::SignSpec {
            coin,
            messages: hex_messages(coin, k),
            session: None,
            reference: None,
        };
        let mut id = String::new();
        for j in 0..t - 1 {
            let node = &self.nodes[(k + j) % n];
            id = vaultd::submit_sign(&node.api, &node.token, &spec).await?;
        }
        Ok((&self.nodes[k % n], id, (spec, (k + t - 1) % n)))
    }

    /// Wait until the approvals' gossip is handled: the cluster's CPU time grows by less than
    /// 20 ms plus 2 ms per node (idle nodes' timers) in 200 ms (at most 30 s).
    async fn settle(&self) -> Result<()> {
        let until = Instant::now() + Duration::from_secs(30);
        let mut last = self.cpu_seconds()?;
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = self.cpu_seconds()?;
            if now - last < 0.02 + 0.002 * self.nodes.len() as f64 {
                break;
            }
            last = now;
        }
        Ok(())
    }

    /// The t-th approval of a request `approve` prepared: the one that lets it start.
    async fn approve_last(&self, last: &(vaultd::SignSpec, usize)) -> Result<String> {
        let node = &self.nodes[last.1];
        Ok(vaultd::submit_sign(&node.api, &node.token, &last.0).await?)
    }

    /// `count` requests one at a time, each approved on t nodes starting at the next one, on
    /// the next coin: from the t-th approval (the one that starts the ceremony) until the
    /// first approver's record is done; and each request's id with when its t-th approval
    /// was sent.
    pub async fn latency(
        &self,
        count: usize,
    ) -> Result<(Latencies, usize, Vec<(String, SystemTime)>)> {
        let mut latency = Latencies::default();
        let mut failed = 0;
        let mut sent = Vec::new();
        for k in 0..count {
            let (node, id, last) = self.approve(k).await?;
            self.settle().await?;
            let started = Instant::now();
            sent.push((id.clone(), SystemTime::now()));
            self.approve_last(&last).await?;
            let r = vaultd::wait_sign(
                &node.api,
                &id,
                Duration::from_millis(2),
                Duration::from_secs(120),
            )
            .await?;
            latency.push(started.elapsed());
            failed += usize::from(r.status != "done");
        }
        Ok((latency, failed, sent))
    }

    /// For each of `sent` (a request and when its t-th approval left), how long until the
    /// first node logged it signed: the originator, which aggregates (the nodes' own log
    /// timestamps; the others learn it one gossip hop later).
    pub fn signed_after(&self, sent: &[(String, SystemTime)]) -> Result<Latencies> {
        let mut first: std::collections::HashMap<String, i128> = Default::default();
        for node in &self.nodes {
            for line in fs::read_to_string(&node.log)?.lines() {
                if !line.contains("\"message\":\"signed\"") {
                    continue;
                }
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                let (Some(id), Some(at)) = (
                    v["fields"]["request"].as_str(),
                    v["timestamp"].as_str().and_then(rfc3339_us),
                ) else {
                    continue;
                };
                let e = first.entry(id.to_string()).or_insert(at);
                *e = (*e).min(at);
            }
        }
        let mut out = Latencies::default();
        for (id, at) in sent {
            let start = at.duration_since(UNIX_EPOCH)?.as_micros() as i128;
            let done = first
                .get(id)
                .with_context(|| format!("no node logged request {id} signed"))?;
            out.push(Duration::from_micros((*done - start).max(0) as u64));
        }
        Ok(out)
    }

    /// `count` requests approved by t - 1 validators each (spread over the nodes and coins);
    /// once the cluster is idle, their t-th approvals at once, then signatures per second
    /// until the last one is done; and how many failed.
    pub async fn throughput(&self, count: usize) -> Result<(f64, usize)> {
        let mut prepared = Vec::new();
        for k in 0..count {
            // Other messages than the latency run's: a request is named by its content.
            prepared.push(self.approve(crate::THROUGHPUT_FIRST + k).await?);
        }
        self.settle().await?;
        let started = Instant::now();
        let mut ids = Vec::new();
        for (node, id, last) in prepared {
            self.approve_last(&last).await?;
            ids.push((node, id));
        }
        let mut failed = 0;
        for (node, id) in ids {
            let r = vaultd::wait_sign(
                &node.api,
                &id,
                Duration::from_millis(10),
                Duration::from_secs(600),
            )
            .await?;
            failed += usize::from(r.status != "done");
        }
        Ok((count as f64 / started.elapsed().as_secs_f64(), failed))
    }
}

impl Node {
    /// Whether the process ended, and how.
    fn exited(&mut self) -> Result<Option<String>> {
        match self.child.as_mut() {
            Some(child) => Ok(child.try_wait()?.map(|s| s.to_string())),
            None => {
                Ok((!Path::new(&format!("/proc/{}", self.pid)).exists())
                    .then(|| "gone".to_string()))
            }
        }
    }
}

/// `vaultd init` a validator's data directory; its peer id.
fn init_node(bin: &Path, data: &Path) -> Result<String> {
    let out = Command::new(bin)
        .args(["init", "--insecure-no-passphrase", "--data-dir"])
        .arg(data)
        .output()
        .with_context(|| format!("running {} init", bin.display()))?;
    if !out.status.success() {
        bail!("vaultd init: {}", String::from_utf8_lossy(&out.stderr));
    }
    let keys: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let Some(peer_id) = keys.get("peer_id").and_then(|v| v.as_str()) else {
        bail!("vaultd init printed no peer_id");
    };
    Ok(peer_id.to_string())
}

/// Start `vaultd run` on `data` with `network`, p2p and HTTP on loopback `ports`, its JSON
/// log to `log`.
fn spawn_node(
    bin: &Path,
    data: &Path,
    network: &Path,
    (p2p, api): (u16, u16),
    dkg_timeout: Option<u64>,
    log: &Path,
) -> Result<Child> {
    Command::new(bin)
        .args(["run", "--insecure-no-passphrase", "--log-format", "json"])
        .arg("--data-dir")
        .arg(data)
        .arg("--network")
        .arg(network)
        .args(["--listen", &format!("/ip4/127.0.0.1/tcp/{p2p}")])
        .args(["--api", &format!("127.0.0.1:{api}")])
        .args(
            dkg_timeout
                .iter()
                .flat_map(|s| ["--dkg-timeout".to_string(), s.to_string()]),
        )
        // The node's own default filter, as an operator runs it.
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(fs::File::create(log)?)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))
}

/// CPU seconds of every live thread of process `pid` (nanoseconds in `schedstat`).
fn task_cpu_s(pid: u32) -> Result<f64> {
    let mut ns = 0u64;
    for task in fs::read_dir(format!("/proc/{pid}/task"))? {
        let stat = fs::read_to_string(task?.path().join("schedstat"))?;
        ns += stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .context("malformed schedstat")?;
    }
    Ok(ns as f64 / 1e9)
}

fn hex_messages(coin: Coin, k: usize) -> Vec<String> {
    messages_for(coin, k).iter().map(hex::encode).collect()
}

/// The `timestamp` of a JSON log line (`2026-11-24T10:00:00.123456Z`), microseconds since the
/// epoch.
fn log_time_us(line: &str) -> Option<i128> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    rfc3339_us(v.get("timestamp")?.as_str()?)
}

fn rfc3339_us(s: &str) -> Option<i128> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.splitn(3, ':').map(|x| x.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    let micros: i64 = format!("{frac:0<6}").get(..6)?.parse().ok()?;
    // Days from the civil date (proleptic Gregorian), Howard Hinnant's algorithm.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3_600 + mm * 60 + ss;
    Some(secs as i128 * 1_000_000 + micros as i128)
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_timestamps_parse_to_the_epoch() {
        assert_eq!(super::rfc3339_us("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            super::rfc3339_us("2026-11-24T10:00:01.5Z"),
            Some(1_795_514_401_500_000)
        );
        assert_eq!(super::rfc3339_us("2026-11-24 10:00:01Z"), None);
    }
}
