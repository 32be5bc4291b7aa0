//! The node's Prometheus metrics, registered next to libp2p's in one registry.

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

type Labels = Vec<(String, String)>;

/// Metrics of the node.
#[derive(Clone, Default)]
pub struct Metrics {
    /// Connected validators.
    pub peers_connected: Gauge,
    /// Messages sent, by kind.
    pub messages_sent: Family<Labels, Counter>,
    /// Messages received, by kind.
    pub messages_received: Family<Labels, Counter>,
    /// Messages rejected, by kind (or "undecodable").
    pub messages_rejected: Family<Labels, Counter>,
    /// DKG phase per coin (1 key exchange .. 6 active, -1 failed).
    pub dkg_phase: Family<Labels, Gauge>,
    /// Direct requests waiting for an acknowledgement.
    pub outbox_len: Gauge,
    /// Signature requests this node originated that finished, by coin and outcome.
    pub sign_requests: Family<Labels, Counter>,
    /// Signers caught sending an invalid preprocess or share, by coin and peer.
    pub sign_cheaters: Family<Labels, Counter>,
    /// Signing ceremonies in progress, by coin.
    pub sign_ceremonies: Family<Labels, Gauge>,
    /// Validators left out of this node's current DKG chain, by coin, peer and reason (1 each).
    pub dkg_excluded: Family<Labels, Gauge>,
    /// Current DKG attempt, by coin.
    pub dkg_attempt: Family<Labels, Gauge>,
    /// Messages dropped by the per-peer rate limits, by protocol.
    pub rate_limited: Family<Labels, Counter>,
}

fn kind(kind: &str) -> Labels {
    vec![("kind".to_string(), kind.to_string())]
}

impl Metrics {
    /// Register under `vaultd_`.
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics::default();
        let r = registry.sub_registry_with_prefix("vaultd");
        r.register(
            "peers_connected",
            "Validators with an open connection",
            m.peers_connected.clone(),
        );
        r.register(
            "messages_sent",
            "Messages sent, by kind",
            m.messages_sent.clone(),
        );
        r.register(
            "messages_received",
            "Messages received, by kind",
            m.messages_received.clone(),
        );
        r.register(
            "messages_rejected",
            "Messages rejected, by kind",
            m.messages_rejected.clone(),
        );
        r.register(
            "dkg_phase",
            "DKG phase per coin: 1 key exchange, 2 commitments, 3 commitment echo, 4 shares, 5 confirming, 6 active, -1 failed, -2 left out",
            m.dkg_phase.clone(),
        );
        r.register(
            "outbox_requests",
            "Direct requests waiting for an acknowledgement",
            m.outbox_len.clone(),
        );
        r.register(
            "sign_requests",
            "Signature requests originated here that finished, by coin and outcome",
            m.sign_requests.clone(),
        );
        r.register(
            "sign_cheaters",
            "Invalid preprocesses or signature shares received, by coin and sending validator",
            m.sign_cheaters.clone(),
        );
        r.register(
            "sign_ceremonies",
            "Signing ceremonies in progress, by coin",
            m.sign_ceremonies.clone(),
        );
        r.register(
            "dkg_excluded",
            "Validators left out of a DKG attempt, by coin, peer and reason (silent_*, invalid_commitments, equivocation, invalid_share, false_accusation)",
            m.dkg_excluded.clone(),
        );
        r.register(
            "rate_limited",
            "Messages or connections dropped by the per-peer rate limits, by protocol (gossip, direct, connection)",
            m.rate_limited.clone(),
        );
        r.register(
            "dkg_attempt",
            "Current DKG attempt per coin (0 unless participants were left out)",
            m.dkg_attempt.clone(),
        );
        m
    }

    /// Mark a validator left out of a DKG attempt.
    pub fn excluded(&self, coin: protocol::Coin, e: &protocol::vault::Exclusion) {
        self.dkg_excluded
            .get_or_create(&vec![
                ("coin".to_string(), coin.to_string()),
                ("peer".to_string(), e.validator.to_string()),
                ("reason".to_string(), e.reason.label().to_string()),
            ])
            .set(1);
    }

    /// Count a message dropped by a rate limit.
    pub fn limited(&self, protocol: &str) {
        self.rate_limited
            .get_or_create(&vec![("protocol".to_string(), protocol.to_string())])
            .inc();
    }

    /// Set a coin's DKG attempt.
    pub fn attempt(&self, coin: protocol::Coin, attempt: i64) {
        self.dkg_attempt
            .get_or_create(&vec![("coin".to_string(), coin.to_string())])
            .set(attempt);
    }

    /// Count a finished signature request.
    pub fn sign_outcome(&self, coin: protocol::Coin, outcome: &str) {
        self.sign_requests
            .get_or_create(&vec![
                ("coin".to_string(), coin.to_string()),
                ("outcome".to_string(), outcome.to_string()),
            ])
            .inc();
    }

    /// Count a cheater report.
    pub fn cheater(&self, coin: protocol::Coin, peer: &protocol::ValidatorId) {
        self.sign_cheaters
            .get_or_create(&vec![
                ("coin".to_string(), coin.to_string()),
                ("peer".to_string(), peer.to_string()),
            ])
            .inc();
    }

    /// Set the number of ceremonies in progress.
    pub fn ceremonies(&self, coin: protocol::Coin, n: i64) {
        self.sign_ceremonies
            .get_or_create(&vec![("coin".to_string(), coin.to_string())])
            .set(n);
    }

    /// Count a sent message.
    pub fn sent(&self, k: &str) {
        self.messages_sent.get_or_create(&kind(k)).inc();
    }

    /// Count a received message.
    pub fn received(&self, k: &str) {
        self.messages_received.get_or_create(&kind(k)).inc();
    }

    /// Count a rejected message.
    pub fn rejected(&self, k: &str) {
        self.messages_rejected.get_or_create(&kind(k)).inc();
    }

    /// Set a coin's DKG phase.
    pub fn phase(&self, coin: protocol::Coin, value: i64) {
        self.dkg_phase
            .get_or_create(&vec![("coin".to_string(), coin.to_string())])
            .set(value);
    }
}
