//! The in-process limit: all n validators' processors in this process (no network, no disk),
//! joined by [`protocol::local::LocalNetwork`], on one thread.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use protocol::{
    keys::NodeKeys, local::LocalNetwork, network::NetworkDefinition, vault::SignStatus, Coin,
};

use rand_core::OsRng;

use crate::{messages_for, Latencies, THROUGHPUT_FIRST};

/// What one in-process run measured.
pub struct InProcess {
    /// From creating the processors to every vault active, seconds.
    pub dkg_s: f64,
    /// Encoded bytes each validator sent during the DKG (mean).
    pub dkg_bytes_per_node: u64,
    /// One request at a time, start to every validator's record done.
    pub latency: Latencies,
    /// Signatures per second with `throughput_requests` in flight.
    pub sign_per_s: f64,
}

impl InProcess {
    /// No in-process run (`--cluster-only`): its figures are NaN.
    pub fn skipped() -> InProcess {
        InProcess {
            dkg_s: f64::NAN,
            dkg_bytes_per_node: 0,
            latency: Latencies::default(),
            sign_per_s: f64::NAN,
        }
    }
}

/// A definition of `n` fresh validators for `coins` (threshold: the default, 2n/3 + 1).
pub fn definition(n: usize, coins: &[Coin]) -> Result<(NetworkDefinition, Vec<NodeKeys>)> {
    let keys = (0..n)
        .map(|_| NodeKeys::generate(&mut OsRng))
        .collect::<Result<Vec<_>, _>>()
        .context("generating keys")?;
    let def = protocol::local::definition("bench", &keys, coins);
    Ok((def, keys))
}

/// Run the DKG for `coins` among `n` validators, then sign.
pub fn run(
    n: usize,
    coins: &[Coin],
    latency_requests: usize,
    throughput_requests: usize,
) -> Result<InProcess> {
    let (def, keys) = definition(n, coins)?;
    let started = Instant::now();
    let mut net = LocalNetwork::new(def, &keys)?;
    net.start()?;
    let dkg_s = started.elapsed().as_secs_f64();
    if !net.all_active() {
        bail!("in-process DKG did not activate every vault");
    }
    let dkg_bytes_per_node = (0..n).map(|i| net.bytes_sent(i)).sum::<u64>() / n as u64;
    // Every validator sees every other as reachable before requests arrive.
    net.tick(1_000)?;

    let mut latency = Latencies::default();
    for k in 0..latency_requests {
        let (origin, coin) = (k % n, coins[k % coins.len()]);
        let started = Instant::now();
        let id = net.request(&net.approvers_from(origin), coin, messages_for(coin, k))?;
        net.run()?;
        latency.push(started.elapsed());
        done(&net, origin, coin, &id)?;
    }

    let started = Instant::now();
    let mut ids = Vec::new();
    for k in 0..throughput_requests {
        let (origin, coin) = (k % n, coins[k % coins.len()]);
        // Other messages than the latency run's: a request is named by its content.
        let messages = messages_for(coin, THROUGHPUT_FIRST + k);
        let id = net.request(&net.approvers_from(origin), coin, messages)?;
        ids.push((origin, coin, id));
    }
    net.run()?;
    let elapsed = started.elapsed().as_secs_f64();
    for (origin, coin, id) in &ids {
        done(&net, *origin, *coin, id)?;
    }
    Ok(InProcess {
        dkg_s,
        dkg_bytes_per_node,
        latency,
        sign_per_s: throughput_requests as f64 / elapsed,
    })
}

fn done(net: &LocalNetwork, origin: usize, coin: Coin, id: &[u8; 32]) -> Result<()> {
    match net.record(origin, coin, id) {
        Some(r) if r.status == SignStatus::Done => Ok(()),
        Some(r) => bail!("in-process request failed: {:?}", r.reason),
        None => bail!("in-process request left no record"),
    }
}
