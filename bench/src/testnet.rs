//! `vaultd-bench --testnet`: DKG and signing latency on a namespaced testnet
//! (`scripts/testnet.sh`) for each one-way delay and loss, beside what the delay alone should
//! add: the same set's figure at 0 ms plus the protocol's sequential rounds times the delay.

use std::path::Path;

use anyhow::{Context, Result};
use protocol::Coin;
use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, Shaping};

/// Sequential one-way message rounds of a DKG once the validators are connected: processor
/// key announcement, `EncryptedPublicKey`, `EncryptedKeyGenCommitment`, the commitments' echo,
/// `EncryptedKeyShare`, `PublicAddressAvailable` (docs/ARCHITECTURE.md).
pub const DKG_ROUNDS: u32 = 6;

/// Sequential one-way messages of a signature from the t-th approval until the originator
/// holds it: that approval's gossip to the originator, `SignRequest`, the preprocesses, the
/// preprocess set, the shares (docs/SIGNING.md). Every other validator has it one gossip hop
/// (`SignatureAvailable`) later.
pub const SIGN_ROUNDS: u32 = 5;

/// One testnet run: a set size, a coin set, a link shaping.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TestnetRow {
    pub n: usize,
    pub t: u16,
    pub coins: Vec<String>,
    pub delay_ms: f64,
    pub jitter_ms: f64,
    pub loss_pct: f64,
    /// From the first node's spawn to the last node's last vault active.
    pub dkg_s: f64,
    pub sign_p50_ms: f64,
    pub sign_p99_ms: f64,
    pub requests: usize,
    pub failed: usize,
    /// Why the run failed (its figures are then NaN).
    pub error: Option<String>,
}

impl TestnetRow {
    /// The figures at 0 ms and no loss for the same set and coins (the compute).
    pub fn compute<'a>(&self, rows: &'a [TestnetRow]) -> Option<&'a TestnetRow> {
        rows.iter().find(|r| {
            r.n == self.n
                && r.coins == self.coins
                && r.delay_ms == 0.0
                && r.loss_pct == 0.0
                && r.error.is_none()
        })
    }

    /// compute + DKG_ROUNDS × delay, seconds.
    pub fn expected_dkg_s(&self, rows: &[TestnetRow]) -> f64 {
        self.compute(rows).map_or(f64::NAN, |c| {
            c.dkg_s + f64::from(DKG_ROUNDS) * self.delay_ms / 1e3
        })
    }

    /// compute + SIGN_ROUNDS × delay, milliseconds.
    pub fn expected_sign_ms(&self, rows: &[TestnetRow]) -> f64 {
        self.compute(rows).map_or(f64::NAN, |c| {
            c.sign_p50_ms + f64::from(SIGN_ROUNDS) * self.delay_ms
        })
    }
}

/// What one sweep runs.
pub struct Sweep<'a> {
    pub root: &'a Path,
    pub bin_dir: &'a Path,
    pub work: &'a Path,
    pub sizes: &'a [usize],
    pub coin_sets: &'a [&'static [Coin]],
    pub delays_ms: &'a [f64],
    pub losses_pct: &'a [f64],
    pub requests: Option<usize>,
}

/// Every combination, smallest set first; a failed run is a row with its error.
pub fn sweep(s: &Sweep<'_>) -> Result<Vec<TestnetRow>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    for &n in s.sizes {
        for coins in s.coin_sets {
            for &loss_pct in s.losses_pct {
                for &delay_ms in s.delays_ms {
                    let names: Vec<String> = coins.iter().map(|c| c.to_string()).collect();
                    let requests = s.requests.unwrap_or(if n <= 16 { 20 } else { 10 });
                    let shaping = Shaping {
                        delay_ms,
                        jitter_ms: delay_ms / 10.0,
                        loss_pct,
                    };
                    eprintln!(
                        "==> testnet n = {n}, {}: delay {delay_ms} ms +- {} ms, loss {loss_pct} %",
                        names.join(" "),
                        shaping.jitter_ms
                    );
                    let dir = s
                        .work
                        .join(format!("n{n}-{}-d{delay_ms}-l{loss_pct}", names.join("-")));
                    let mut row = TestnetRow {
                        n,
                        t: protocol::network::default_threshold(n),
                        coins: names,
                        delay_ms,
                        jitter_ms: shaping.jitter_ms,
                        loss_pct,
                        dkg_s: f64::NAN,
                        sign_p50_ms: f64::NAN,
                        sign_p99_ms: f64::NAN,
                        requests,
                        failed: 0,
                        error: None,
                    };
                    match runtime.block_on(run_one(s, &dir, n, coins, &shaping, requests)) {
                        Ok((dkg_s, p50, p99, failed)) => {
                            eprintln!(
                                "    DKG {dkg_s:.2} s, sign p50 {p50:.0} ms, p99 {p99:.0} ms, {failed} failed"
                            );
                            row.dkg_s = dkg_s;
                            row.sign_p50_ms = p50;
                            row.sign_p99_ms = p99;
                            row.failed = failed;
                        }
                        Err(e) => {
                            eprintln!("    testnet run failed: {e:#}");
                            row.error = Some(format!("{e:#}"));
                        }
                    }
                    rows.push(row);
                }
            }
        }
    }
    Ok(rows)
}

/// One testnet: start it, time its DKG, sign `requests` one at a time, stop it.
async fn run_one(
    s: &Sweep<'_>,
    dir: &Path,
    n: usize,
    coins: &[Coin],
    shaping: &Shaping,
    requests: usize,
) -> Result<(f64, f64, f64, usize)> {
    let (mut cluster, started) = Cluster::testnet(s.root, s.bin_dir, dir, n, coins, shaping)
        .with_context(|| format!("testnet in {}", dir.display()))?;
    let dkg_s = cluster
        .wait_dkg(started, std::time::Duration::from_secs(60))
        .await?;
    let (_, failed, sent) = cluster.latency(requests).await?;
    let signed = cluster.signed_after(&sent)?;
    Ok((
        dkg_s,
        signed.quantile_ms(0.5),
        signed.quantile_ms(0.99),
        failed,
    ))
}
