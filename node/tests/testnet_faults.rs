//! Faults across hosts on the namespaced testnet (`scripts/testnet.sh`): the set cut in two for
//! 30 s during a DKG and again during a stream of signing requests, then healed; and one
//! validator on a far, lossy link. Skipped, saying why, where network namespaces cannot be
//! made (a failure instead under `VAULTD_REQUIRE_NETNS=1`, as in CI).

mod common;

use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use common::{
    chain_accepts,
    netns::{self, get_json, Testnet},
    sign_finished, vault, wait_for,
};
use serde_json::Value;

const COINS: [&str; 3] = ["BTC", "ETH", "SOL"];
/// How long each cut lasts.
const CUT: Duration = Duration::from_secs(30);

/// One testnet at a time: each takes a free subnet and many processes.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A node of the testnet: its API and its operator's token.
struct Api {
    addr: String,
    token: vaultd::token::ApiToken,
}

fn apis(dir: &Path) -> Vec<Api> {
    netns::cluster(dir)["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| Api {
            addr: n["api"].as_str().unwrap().to_string(),
            token: vaultd::token::read(&vaultd::token::path(Path::new(
                n["data_dir"].as_str().unwrap(),
            )))
            .unwrap(),
        })
        .collect()
}

/// Request `k`'s message for `coin`: a 32-byte digest, or a 100-byte Solana message.
fn message(coin: &str, k: u32) -> Vec<u8> {
    let mut m = vec![0xa5u8; if coin == "SOL" { 100 } else { 32 }];
    m[..4].copy_from_slice(&k.to_be_bytes());
    m[4..7].copy_from_slice(coin.as_bytes());
    m
}

fn spec(coin: &str, msg: &[u8]) -> vaultd::SignSpec {
    vaultd::SignSpec {
        coin: coin.parse().unwrap(),
        messages: vec![hex::encode(msg)],
        session: None,
        reference: None,
    }
}

fn active_vaults(status: &Value) -> usize {
    status["vaults"].as_array().map_or(0, |vs| {
        vs.iter().filter(|v| v["status"] == "active").count()
    })
}

/// Every node has every vault active with the same key per coin; those keys.
async fn one_key_per_coin(apis: &[Api]) -> Vec<String> {
    let mut keys: Option<Vec<String>> = None;
    for (i, a) in apis.iter().enumerate() {
        let s = get_json(&a.addr, "/status").await.unwrap();
        let mine: Vec<String> = COINS
            .iter()
            .map(|c| {
                let v = vault(&s, c);
                assert_eq!(v["status"], "active", "node {i} {c}: {v:#}");
                v["group_key"].as_str().unwrap().to_string()
            })
            .collect();
        match &keys {
            Some(k) => assert_eq!(k, &mine, "node {i} holds other keys"),
            None => keys = Some(mine),
        }
    }
    keys.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30_s_partition_during_a_dkg_and_during_a_signing_stream_heals_with_nothing_lost() {
    if !netns::usable("the partition test") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("testnet");
    let _guard = Testnet(dir.clone());
    // 100 ms one way: a DKG's rounds take long enough to cut it in the middle.
    let script_log = std::fs::File::create(tmp.path().join("testnet.log")).unwrap();
    let mut start = netns::testnet_command(
        &dir,
        &["4", "--delay", "100", "--detach", "--timeout", "300"],
    )
    .stdout(script_log.try_clone().unwrap())
    .stderr(script_log)
    .stdin(Stdio::null())
    .spawn()
    .unwrap();

    // Cut once validator 1 is past the key exchange of its first vault: nobody can have a
    // vault active before validator 1 confirms, so this is the middle of the DKG.
    wait_for(
        "validator 1's DKG to be past the key exchange",
        Duration::from_secs(120),
        || async {
            if !dir.join("cluster.json").exists() {
                return false;
            }
            let api = apis(&dir).remove(0).addr;
            get_json(&api, "/status").await.is_some_and(|s| {
                s["vaults"].as_array().is_some_and(|vs| {
                    vs.iter()
                        .any(|v| v["status"] == "pending" && v["phase"] != "KeyExchange")
                })
            })
        },
    )
    .await;
    netns::partition(&dir, &["1 2"]);
    let cut_at = Instant::now();
    let nodes = apis(&dir);
    // Neither side holds t = 3 validators: no vault becomes active anywhere while cut.
    while cut_at.elapsed() < CUT {
        for (i, a) in nodes.iter().enumerate() {
            if let Some(s) = get_json(&a.addr, "/status").await {
                assert_eq!(
                    active_vaults(&s),
                    0,
                    "node {i} finished a DKG while cut: {s:#}"
                );
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    netns::partition(&dir, &["--heal"]);
    let healed = Instant::now();
    // testnet.sh returns once every node has every vault active.
    let status = tokio::task::spawn_blocking(move || start.wait())
        .await
        .unwrap()
        .unwrap();
    let log = std::fs::read_to_string(tmp.path().join("testnet.log")).unwrap_or_default();
    assert!(status.success(), "testnet.sh failed after the heal:\n{log}");
    eprintln!("every vault active {:?} after the heal", healed.elapsed());
    let keys = one_key_per_coin(&nodes).await;
    for (i, a) in nodes.iter().enumerate() {
        let s = get_json(&a.addr, "/status").await.unwrap();
        for c in COINS {
            let v = vault(&s, c);
            assert_eq!(
                v["participants"].as_array().map(Vec::len),
                Some(4),
                "node {i} {c}: nobody is left out by a cut that healed: {v:#}"
            );
        }
    }

    // A stream of requests, one every 500 ms for 50 s, each approved on 3 of the 4 (so on
    // both sides of the cut); 10 s in, the set is cut in two for 30 s. Every approval is
    // accepted by its node (202) and every request ends signed on every node.
    let mut requests: Vec<(&str, Vec<u8>, String)> = Vec::new();
    let stream = Instant::now();
    let (mut cut, mut heal_at) = (false, None);
    let mut k = 0u32;
    while stream.elapsed() < Duration::from_secs(50) {
        if !cut && stream.elapsed() >= Duration::from_secs(10) {
            netns::partition(&dir, &["1 2"]);
            cut = true;
            heal_at = Some(Instant::now() + CUT);
        }
        if heal_at.is_some_and(|at| Instant::now() >= at) {
            netns::partition(&dir, &["--heal"]);
            heal_at = None;
        }
        let coin = COINS[k as usize % COINS.len()];
        let msg = message(coin, k);
        let mut id = String::new();
        for j in 0..3 {
            let a = &nodes[(k as usize + j) % nodes.len()];
            id = vaultd::submit_sign(&a.addr, &a.token, &spec(coin, &msg))
                .await
                .unwrap_or_else(|e| panic!("request {k} on {}: {e}", a.addr));
        }
        requests.push((coin, msg, id));
        k += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if heal_at.is_some() {
        netns::partition(&dir, &["--heal"]);
    }
    let statuses: Vec<Value> = {
        let mut v = Vec::new();
        for a in &nodes {
            v.push(get_json(&a.addr, "/status").await.unwrap());
        }
        v
    };
    let done_from = Instant::now();
    for (coin, msg, id) in &requests {
        for (i, a) in nodes.iter().enumerate() {
            let r = sign_finished(&a.addr, id, Duration::from_secs(240)).await;
            assert_eq!(r["status"], "done", "node {i}, {coin} request {id}: {r:#}");
            let sig = hex::decode(r["signatures"][0].as_str().unwrap()).unwrap();
            assert!(
                chain_accepts(coin, vault(&statuses[i], coin), msg, &sig),
                "node {i}: {coin} request {id}"
            );
        }
    }
    eprintln!(
        "{} requests, all signed on every node {:?} after the stream ended",
        requests.len(),
        done_from.elapsed()
    );
    // The vaults are the ones the DKG made.
    assert_eq!(one_key_per_coin(&nodes).await, keys);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validator_on_a_far_lossy_link_takes_part_or_is_voted_out_while_the_rest_finish() {
    if !netns::usable("the far-validator test") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("testnet");
    let _guard = Testnet(dir.clone());
    // Five validators 25 ms apart; validator 5's link: 200 ms one way, 5 % loss.
    let out = netns::testnet_command(
        &dir,
        &[
            "5",
            "--delay",
            "25",
            "--link",
            "5:200:5",
            "--detach",
            "--timeout",
            "300",
        ],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "testnet.sh failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let nodes = apis(&dir);
    let cluster = netns::cluster(&dir);
    let far = cluster["nodes"][4]["peer_id"].as_str().unwrap().to_string();
    // Its round trip shows the link: 200 + 25 ms one way each.
    let s1 = get_json(&nodes[0].addr, "/status").await.unwrap();
    let seen = s1["validators"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["peer_id"] == far.as_str())
        .cloned()
        .unwrap();
    assert!(seen["rtt_ms"].as_f64().unwrap_or(0.0) >= 200.0, "{seen:#}");

    // On the four others, every vault is active with one key; the far validator either holds
    // a share (and its own vault is active too) or was left out by votes everyone shows.
    let mut keys = Vec::new();
    for (i, a) in nodes[..4].iter().enumerate() {
        let s = get_json(&a.addr, "/status").await.unwrap();
        let mine: Vec<String> = COINS
            .iter()
            .map(|c| {
                let v = vault(&s, c);
                assert_eq!(v["status"], "active", "node {i} {c}");
                let took_part = v["participants"]
                    .as_array()
                    .unwrap()
                    .contains(&Value::from(far.as_str()));
                let voted_out = v["excluded"]
                    .as_array()
                    .is_some_and(|e| e.iter().any(|x| x["peer"] == far.as_str()));
                assert!(took_part != voted_out, "node {i} {c}: {v:#}");
                v["group_key"].as_str().unwrap().to_string()
            })
            .collect();
        keys.push(mine);
    }
    assert!(keys.windows(2).all(|w| w[0] == w[1]), "{keys:?}");
    let far_status = get_json(&nodes[4].addr, "/status").await.unwrap();
    for c in COINS {
        let v = vault(&s1, c);
        if v["participants"]
            .as_array()
            .unwrap()
            .contains(&Value::from(far.as_str()))
        {
            let mine = vault(&far_status, c);
            assert_eq!(
                mine["status"], "active",
                "the far validator's {c}: {mine:#}"
            );
            assert_eq!(mine["group_key"], v["group_key"]);
        }
    }

    // The rest sign: a request per coin approved on t = 4 validators other than the far one.
    for (k, coin) in COINS.iter().enumerate() {
        let msg = message(coin, 1000 + k as u32);
        let mut id = String::new();
        for a in &nodes[..4] {
            id = vaultd::submit_sign(&a.addr, &a.token, &spec(coin, &msg))
                .await
                .unwrap();
        }
        let r = sign_finished(&nodes[0].addr, &id, Duration::from_secs(120)).await;
        assert_eq!(r["status"], "done", "{coin}: {r:#}");
        let sig = hex::decode(r["signatures"][0].as_str().unwrap()).unwrap();
        assert!(chain_accepts(coin, vault(&s1, coin), &msg, &sig), "{coin}");
    }
}
