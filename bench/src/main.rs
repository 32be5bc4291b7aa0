//! `vaultd-bench`: DKG and signing in one process (the limit) against a cluster of real
//! `vaultd` processes on loopback, for several validator-set sizes, in one run.
//!
//! `scripts/bench.sh` builds and runs it; the results go to `docs/BENCHMARKS.md` (between its
//! generated-section markers), `docs/benchmarks.svg` and `docs/benchmarks.json`.

mod bare;
mod cluster;
mod inprocess;
mod report;
mod testnet;
mod testnet_report;

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context, Result};
use clap::Parser;
use protocol::Coin;
use serde::{Deserialize, Serialize};

/// Benchmarks of vaultd's DKG and signing: the in-process limit against a cluster.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Validator-set sizes (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "4,16,32,64,128")]
    sizes: Vec<usize>,
    /// Small sets and few requests (sizes 4 and 7 unless --sizes is given): checks that
    /// everything runs in about a minute.
    #[arg(long)]
    quick: bool,
    /// The vaultd binary the cluster runs.
    #[arg(long)]
    bin: PathBuf,
    /// Where the cluster's nodes live (emptied per run).
    #[arg(long, default_value = "target/bench")]
    work: PathBuf,
    /// Report to write: its generated section is replaced (the file is created if missing);
    /// the plot (.svg) and the raw results (.json) are written next to it.
    #[arg(long, default_value = "docs/BENCHMARKS.md")]
    out: PathBuf,
    /// First port: run k of the cluster uses p2p ports PORT+200k+i and HTTP PORT+200k+100+i.
    #[arg(long, default_value_t = 47000)]
    base_port: u16,
    /// Requests signed one at a time for the latency.
    #[arg(long)]
    latency_requests: Option<usize>,
    /// Requests in flight at once for the throughput.
    #[arg(long)]
    throughput_requests: Option<usize>,
    /// Only the in-process limit (for profiling it); nothing is written.
    #[arg(long)]
    in_process_only: bool,
    /// Only the cluster (for profiling it, or checking a large set quickly): no bare limit, no
    /// in-process run; nothing is written.
    #[arg(long, conflicts_with = "in_process_only")]
    cluster_only: bool,
    /// Which coin sets to run: `one` (BTC), `all` (BTC, ETH, SOL), or both (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "one,all")]
    coin_sets: Vec<CoinSet>,
    /// The namespaced testnet instead (`scripts/testnet.sh`, needs root): DKG and signing
    /// latency for each of --delays and --losses (sizes 4, 16 and 32 unless --sizes is given);
    /// writes its own section of the report, `testnet.svg` and `testnet.json`. Runs from the
    /// repository's top directory; vaultd-linkdelay must sit next to --bin.
    #[arg(long, conflicts_with_all = ["in_process_only", "cluster_only"])]
    testnet: bool,
    /// One-way delays of the testnet's links, ms (jitter 10 % of each).
    #[arg(long, value_delimiter = ',', default_value = "0,25,50,100")]
    delays: Vec<f64>,
    /// Random loss of the testnet's links, percent.
    #[arg(long, value_delimiter = ',', default_value = "0,1")]
    losses: Vec<f64>,
    /// How the binaries were built (written into the report).
    #[arg(long, default_value = "release")]
    profile: String,
}

/// Largest set that also runs with every coin.
const MAX_ALL_COINS: usize = 64;

/// A coin set of the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum CoinSet {
    /// BTC alone.
    One,
    /// BTC, ETH and SOL.
    All,
}

impl CoinSet {
    fn coins(self) -> &'static [Coin] {
        match self {
            CoinSet::One => &[Coin::Btc],
            CoinSet::All => &[Coin::Btc, Coin::Eth, Coin::Sol],
        }
    }
}

/// Signing latencies.
#[derive(Default)]
pub struct Latencies(Vec<Duration>);

impl Latencies {
    fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    /// The `q` quantile (nearest rank), milliseconds.
    fn quantile_ms(&self, q: f64) -> f64 {
        let mut v: Vec<f64> = self.0.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        if v.is_empty() {
            return f64::NAN;
        }
        v.sort_by(f64::total_cmp);
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1]
    }
}

/// The messages of request `k`: one per request, in the coin's format (a 32-byte sighash, or
/// a Solana transaction message of 100 bytes), all different.
/// The first request number of a throughput run (the latency run uses those below it).
pub const THROUGHPUT_FIRST: usize = 1 << 20;

pub fn messages_for(coin: Coin, k: usize) -> Vec<Vec<u8>> {
    let len = if coin == Coin::Sol { 100 } else { 32 };
    let mut m = vec![0u8; len];
    m[..8].copy_from_slice(&(k as u64).to_be_bytes());
    m[8] = coin.id();
    m[9..].iter_mut().for_each(|b| *b = 0xa5);
    vec![m]
}

/// One row of results: a set size and a coin set.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    pub n: usize,
    pub t: u16,
    pub coins: Vec<String>,
    pub inproc_dkg_s: f64,
    pub cluster_dkg_s: f64,
    /// CPU seconds all the cluster's nodes used from their start to every vault active (the
    /// in-process DKG runs on one thread: its CPU time is its wall time).
    #[serde(default)]
    pub cluster_dkg_cpu_s: f64,
    pub inproc_dkg_bytes_per_node: u64,
    pub cluster_dkg_bytes_per_node: u64,
    pub inproc_sign_p50_ms: f64,
    pub inproc_sign_p99_ms: f64,
    pub inproc_sign_per_s: f64,
    pub cluster_sign_p50_ms: f64,
    pub cluster_sign_p99_ms: f64,
    pub cluster_sign_per_s: f64,
    pub cluster_sign_failed: usize,
    pub idle_rss_median_mib: f64,
    pub idle_rss_max_mib: f64,
    /// The largest idle node's private memory (`RssAnon`: heap, stacks, RocksDB's memtables),
    /// without the executable's and libraries' pages that all nodes share.
    #[serde(default)]
    pub idle_anon_max_mib: f64,
    pub peak_rss_max_mib: f64,
    pub cluster_total_bytes_per_node: u64,
    pub latency_requests: usize,
    pub throughput_requests: usize,
    /// The bare limit (dkg-pedpop and modular-frost alone, thread CPU): one vault per coin.
    #[serde(default)]
    pub bare_dkg_cpu_s: f64,
    /// The bare limit: one signature by t signers (averaged over the coins).
    #[serde(default)]
    pub bare_sign_cpu_s: f64,
    /// The bare figures per curve.
    #[serde(default)]
    pub bare: bare::Bare,
    /// Cores the machine gave this run.
    #[serde(default)]
    pub cores: usize,
    /// CPU of one node's own start-up (spawn to its first `/health` answer), seconds.
    #[serde(default)]
    pub node_startup_cpu_s: f64,
    /// Why the cluster run failed (its figures are then NaN).
    #[serde(default)]
    pub cluster_error: Option<String>,
}

impl Row {
    fn failed(n: usize, error: String) -> Row {
        Row {
            n,
            t: 0,
            coins: Vec::new(),
            inproc_dkg_s: f64::NAN,
            cluster_dkg_s: f64::NAN,
            cluster_dkg_cpu_s: f64::NAN,
            inproc_dkg_bytes_per_node: 0,
            cluster_dkg_bytes_per_node: 0,
            inproc_sign_p50_ms: f64::NAN,
            inproc_sign_p99_ms: f64::NAN,
            inproc_sign_per_s: f64::NAN,
            cluster_sign_p50_ms: f64::NAN,
            cluster_sign_p99_ms: f64::NAN,
            cluster_sign_per_s: f64::NAN,
            cluster_sign_failed: 0,
            idle_rss_median_mib: f64::NAN,
            idle_rss_max_mib: f64::NAN,
            idle_anon_max_mib: f64::NAN,
            peak_rss_max_mib: f64::NAN,
            cluster_total_bytes_per_node: 0,
            latency_requests: 0,
            throughput_requests: 0,
            bare_dkg_cpu_s: f64::NAN,
            bare_sign_cpu_s: f64::NAN,
            bare: bare::Bare::default(),
            cores: 0,
            node_startup_cpu_s: f64::NAN,
            cluster_error: Some(error),
        }
    }
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    if args.testnet {
        return testnet_main(args);
    }
    if args.quick && args.sizes == [4, 16, 32, 64, 128] {
        args.sizes = vec![4, 7];
    }
    if args
        .sizes
        .iter()
        .any(|n| !(2..=cluster::MAX_NODES).contains(n))
    {
        bail!(
            "--sizes: each size must be between 2 and {}",
            cluster::MAX_NODES
        );
    }
    if !args.bin.is_file() {
        bail!(
            "--bin {}: no such file (build vaultd first)",
            args.bin.display()
        );
    }
    // A signature costs O(t²) across the set: fewer requests for the large sets keep a whole
    // run within about half an hour on 2 cores.
    let latency_requests = |n: usize| {
        args.latency_requests.unwrap_or(match n {
            _ if args.quick => 10,
            0..=16 => 50,
            17..=32 => 20,
            _ => 4,
        })
    };
    let throughput_requests = |n: usize| {
        args.throughput_requests.unwrap_or(match n {
            _ if args.quick => 40,
            0..=16 => 200,
            17..=32 => 60,
            _ => 12,
        })
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let mut rows = Vec::new();
    let mut run = 0u16;
    for &n in &args.sizes {
        let t = protocol::network::default_threshold(n);
        eprintln!("==> n = {n}: the bare limit (dkg-pedpop and modular-frost alone)");
        // Best of two DKGs up to n = 64; the larger ones take minutes each.
        // Above 64 validators, one coin only: a three-coin DKG there takes most of an hour.
        let sets: Vec<CoinSet> = args
            .coin_sets
            .iter()
            .copied()
            .filter(|s| n <= MAX_ALL_COINS || *s == CoinSet::One)
            .collect();
        let used: Vec<Coin> = sets.iter().flat_map(|s| s.coins()).copied().collect();
        let bare = if args.cluster_only {
            bare::Bare::default()
        } else {
            bare::Bare::measure(n as u16, t, if n <= 64 { 2 } else { 1 }, &used)
                .with_context(|| format!("bare limit, n = {n}"))?
        };
        eprintln!(
            "    DKG secp256k1 {:.2} s, ed25519 {:.2} s; signature {:.1} ms, {:.1} ms (CPU)",
            bare.secp256k1.dkg_cpu_s,
            bare.ed25519.dkg_cpu_s,
            bare.secp256k1.sign_cpu_s * 1e3,
            bare.ed25519.sign_cpu_s * 1e3
        );
        for coins in sets.iter().map(|s| s.coins()) {
            let names: Vec<String> = coins.iter().map(|c| c.to_string()).collect();
            eprintln!("==> n = {n}, {}: in process", names.join(" "));
            let (latency_requests, throughput_requests) =
                (latency_requests(n), throughput_requests(n));
            let inproc = if args.cluster_only {
                inprocess::InProcess::skipped()
            } else {
                inprocess::run(n, coins, latency_requests, throughput_requests)
                    .with_context(|| format!("in-process run, n = {n}"))?
            };
            eprintln!(
                "    DKG {:.2} s, sign p50 {:.1} ms, {:.1}/s",
                inproc.dkg_s,
                inproc.latency.quantile_ms(0.5),
                inproc.sign_per_s
            );
            if args.in_process_only {
                continue;
            }
            eprintln!("==> n = {n}, {}: cluster", names.join(" "));
            let ports = cluster::Ports {
                base: args
                    .base_port
                    .checked_add(run * cluster::Ports::STRIDE)
                    .context("--base-port too high")?,
            };
            run += 1;
            let dir = args.work.join(format!("n{n}-{}", names.join("-")));
            // A cluster that fails (a DKG past its deadline, a node that exits) is a result
            // too: it is reported, and the other sizes still run.
            let row = match runtime
                .block_on(cluster_run(
                    &args,
                    &dir,
                    n,
                    coins,
                    &ports,
                    latency_requests,
                    throughput_requests,
                ))
                .with_context(|| format!("logs in {}", dir.display()))
            {
                Ok(row) => row,
                Err(e) => {
                    eprintln!("    cluster run failed: {e:#}");
                    Row::failed(n, format!("{e:#}"))
                }
            };
            let row = Row {
                n,
                t: protocol::network::default_threshold(n),
                coins: names,
                inproc_dkg_s: inproc.dkg_s,
                inproc_dkg_bytes_per_node: inproc.dkg_bytes_per_node,
                inproc_sign_p50_ms: inproc.latency.quantile_ms(0.5),
                inproc_sign_p99_ms: inproc.latency.quantile_ms(0.99),
                inproc_sign_per_s: inproc.sign_per_s,
                latency_requests,
                throughput_requests,
                bare_dkg_cpu_s: bare.dkg_cpu_s(coins),
                bare_sign_cpu_s: bare.sign_cpu_s(coins),
                bare,
                cores,
                ..row
            };
            eprintln!(
                "    DKG {:.2} s ({:.2}x in-process; CPU {:.2} s, {:.2}x bare), sign p50 {:.1} ms ({:.2}x bare), {:.1}/s ({:.2}x bare limit), idle RSS {:.1} MiB",
                row.cluster_dkg_s,
                row.cluster_dkg_s / row.inproc_dkg_s,
                row.cluster_dkg_cpu_s,
                row.cluster_dkg_cpu_s / row.bare_dkg_cpu_s,
                row.cluster_sign_p50_ms,
                row.cluster_sign_p50_ms / 1e3 / row.bare_sign_cpu_s,
                row.cluster_sign_per_s,
                row.cluster_sign_per_s * row.bare_sign_cpu_s / cores as f64,
                row.idle_rss_max_mib
            );
            rows.push(row);
        }
    }
    if args.in_process_only || args.cluster_only {
        return Ok(());
    }
    let machine = report::machine(&args.profile);
    report::write(&args.out, &machine, &rows, &args.profile, args.quick)?;
    println!("{}", report::bare_table(&rows));
    println!("{}", report::table(&rows));
    println!("{}", report::targets(&rows));
    eprintln!("report: {}", args.out.display());
    Ok(())
}

/// `--testnet`: the sweep over sizes, coin sets, losses and delays, then its report.
fn testnet_main(mut args: Args) -> Result<()> {
    if args.sizes == [4, 16, 32, 64, 128] {
        args.sizes = vec![4, 16, 32];
    }
    let root = std::env::current_dir()?;
    if !root.join("scripts/testnet.sh").is_file() {
        bail!("--testnet runs from the repository's top directory (no scripts/testnet.sh here)");
    }
    let bin_dir = args
        .bin
        .parent()
        .context("--bin has no directory")?
        .to_path_buf();
    let coin_sets: Vec<&'static [Coin]> = args.coin_sets.iter().map(|s| s.coins()).collect();
    let rows = testnet::sweep(&testnet::Sweep {
        root: &root,
        bin_dir: &bin_dir,
        work: &args.work.join("testnet"),
        sizes: &args.sizes,
        coin_sets: &coin_sets,
        delays_ms: &args.delays,
        losses_pct: &args.losses,
        requests: args.latency_requests,
    })?;
    let machine = report::machine(&args.profile);
    let command = format!(
        "scripts/bench.sh{} --testnet",
        if args.profile == "dev" { " --dev" } else { "" }
    );
    testnet_report::write(&args.out, &machine, &rows, &command)?;
    println!("{}", testnet_report::table(&rows));
    println!("{}", testnet_report::targets(&rows));
    eprintln!("report: {}", args.out.display());
    Ok(())
}

/// Start a cluster, time its DKG, measure it idle, sign, stop it.
async fn cluster_run(
    args: &Args,
    dir: &std::path::Path,
    n: usize,
    coins: &[Coin],
    ports: &cluster::Ports,
    latency_requests: usize,
    throughput_requests: usize,
) -> Result<Row> {
    let startup = cluster::Cluster::startup_cpu_s(&args.bin, &dir.join("probe"), coins, ports)
        .await
        .context("start-up probe")?;
    let (mut cluster, started) =
        cluster::Cluster::start(&args.bin, &dir.join("cluster"), n, coins, ports)?;
    let deadline = Duration::from_secs(120 + 10 * n as u64);
    let dkg_s = cluster.wait_dkg(started, deadline).await?;
    let dkg_cpu_s = cluster.cpu_seconds()?;
    let dkg_bytes = cluster.bytes_sent_per_node().await?;
    // Idle: vaults active, nothing in flight, the allocator settled.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (idle_median, idle_max) = cluster.memory_mib("VmRSS")?;
    let (_, idle_anon_max) = cluster.memory_mib("RssAnon")?;
    let (latency, failed_l, _) = cluster.latency(latency_requests).await?;
    let (sign_per_s, failed_t) = cluster.throughput(throughput_requests).await?;
    let (_, peak) = cluster.memory_mib("VmHWM")?;
    let total_bytes = cluster.bytes_sent_per_node().await?;
    Ok(Row {
        n,
        t: 0,
        coins: Vec::new(),
        inproc_dkg_s: 0.0,
        cluster_dkg_s: dkg_s,
        cluster_dkg_cpu_s: dkg_cpu_s,
        inproc_dkg_bytes_per_node: 0,
        cluster_dkg_bytes_per_node: dkg_bytes,
        inproc_sign_p50_ms: 0.0,
        inproc_sign_p99_ms: 0.0,
        inproc_sign_per_s: 0.0,
        cluster_sign_p50_ms: latency.quantile_ms(0.5),
        cluster_sign_p99_ms: latency.quantile_ms(0.99),
        cluster_sign_per_s: sign_per_s,
        cluster_sign_failed: failed_l + failed_t,
        idle_rss_median_mib: idle_median,
        idle_rss_max_mib: idle_max,
        idle_anon_max_mib: idle_anon_max,
        peak_rss_max_mib: peak,
        cluster_total_bytes_per_node: total_bytes,
        latency_requests,
        throughput_requests,
        bare_dkg_cpu_s: 0.0,
        bare_sign_cpu_s: 0.0,
        bare: bare::Bare::default(),
        cores: 0,
        node_startup_cpu_s: startup,
        cluster_error: None,
    })
}
