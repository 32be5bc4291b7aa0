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
            "DKG phase per coin: 1 key exchange, 2 commitments, 3 commitment echo, 4 shares, 5 confirming, 6 active, -1 failed",
            m.dkg_phase.clone(),
        );
        r.register(
            "outbox_requests",
            "Direct requests waiting for an acknowledgement",
            m.outbox_len.clone(),
        );
        m
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
