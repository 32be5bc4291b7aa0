//! Micro-benchmarks of the paths every message takes: the envelope, the snow seal, and a
//! processor handling a whole ceremony's messages.
//!
//! `cargo bench -p vaultd-protocol --bench hot_paths` (`cargo test` runs each once).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use protocol::{
    keys::NodeKeys,
    local::{self, LocalNetwork},
    messages::{self, GeneralMessage, SignRequest},
    seal::{self, SealContext, SealKind},
    Coin,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn keys(n: usize) -> Vec<NodeKeys> {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    (0..n)
        .map(|_| NodeKeys::generate(&mut rng).expect("keys"))
        .collect()
}

fn envelope(c: &mut Criterion) {
    let k = keys(16);
    // A SignRequest of a 16-validator network: 11 signers, one sighash.
    let msg = GeneralMessage::SignRequest(SignRequest {
        coin: Coin::Btc,
        id: [7; 32],
        attempt: 0,
        origin: k[0].validator_id(),
        vault: [9; 32],
        signers: k.iter().take(11).map(|k| k.validator_id()).collect(),
        messages: vec![vec![1; 32]],
        signature: vec![3; 64],
    });
    let bytes = messages::encode(&msg).expect("encode");
    c.bench_function("envelope encode SignRequest (t = 11)", |b| {
        b.iter(|| messages::encode(&msg).expect("encode"))
    });
    c.bench_function("envelope decode SignRequest (t = 11)", |b| {
        b.iter(|| messages::decode::<GeneralMessage>(&bytes).expect("decode"))
    });
}

fn sealing(c: &mut Criterion) {
    let k = keys(2);
    let (a, b) = (k[0].validator_id(), k[1].validator_id());
    let ctx = SealContext {
        network: "bench",
        coin: Coin::Btc,
        kind: SealKind::SignatureShare,
        from: &a,
        to: &b,
        context: [5; 32],
    };
    // About a DKG share's or a preprocess's size.
    let payload = vec![0x42u8; 512];
    let sealed = seal::seal(
        &k[0].processor_messaging,
        &k[1].processor_messaging.public,
        &ctx,
        &payload,
    )
    .expect("seal");
    c.bench_function("snow seal 512 B", |bench| {
        bench.iter(|| {
            seal::seal(
                &k[0].processor_messaging,
                &k[1].processor_messaging.public,
                &ctx,
                &payload,
            )
            .expect("seal")
        })
    });
    c.bench_function("snow open 512 B", |bench| {
        bench.iter(|| seal::open(&k[1].processor_messaging, &ctx, &sealed).expect("open"))
    });
}

fn handling(c: &mut Criterion) {
    let k = keys(4);
    let def = local::definition("bench", &k, &[Coin::Btc]);
    let mut group = c.benchmark_group("message handling");
    group.sample_size(10);
    group.bench_function(
        "DKG, 4 validators, BTC (every message of every processor)",
        |b| {
            b.iter_batched(
                || LocalNetwork::new(def.clone(), &k).expect("network"),
                |mut net| net.start().expect("dkg"),
                BatchSize::LargeInput,
            )
        },
    );
    let mut net = LocalNetwork::new(def.clone(), &k).expect("network");
    net.start().expect("dkg");
    net.tick(1_000).expect("tick");
    let mut counter = 0u64;
    group.bench_function("signing ceremony, 3 of 4, BTC (every message)", |b| {
        b.iter(|| {
            counter += 1;
            // A new message each time: a request is named by its content.
            let mut message = vec![1u8; 32];
            message[..8].copy_from_slice(&counter.to_be_bytes());
            let approvers = net.approvers_from(0);
            net.request(&approvers, Coin::Btc, vec![message])
                .expect("request");
            net.run().expect("ceremony");
        })
    });
    group.finish();
}

criterion_group!(benches, envelope, sealing, handling);
criterion_main!(benches);
