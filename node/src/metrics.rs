//! The node's Prometheus metrics, registered next to libp2p's in one registry.

use prometheus_client::{
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

type Labels = Vec<(String, String)>;

/// Metrics of the node.
#[derive(Clone)]
pub struct Metrics {
    /// Connected validators.
    pub peers_connected: Gauge,
    /// Validators of the definition without a connection.
    pub validators_missing: Gauge,
    /// Messages sent, by protocol and kind.
    pub messages_sent: Family<Labels, Counter>,
    /// Messages received and accepted, by protocol and kind.
    pub messages_received: Family<Labels, Counter>,
    /// Bytes sent, by protocol and kind.
    pub bytes_sent: Family<Labels, Counter>,
    /// Bytes received and accepted, by protocol and kind.
    pub bytes_received: Family<Labels, Counter>,
    /// Seconds from a processor's start (or its DKG attempt's) to its vault being active.
    pub dkg_duration: Family<Labels, Histogram, fn() -> Histogram>,
    /// Seconds from a signature request's acceptance here to its outcome.
    pub sign_duration: Family<Labels, Histogram, fn() -> Histogram>,
    /// DKG outcomes by coin and outcome (active, failed, excluded).
    pub dkg_outcomes: Family<Labels, Counter>,
    /// Size of the database's files.
    pub db_size: Gauge,
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
    /// Messages a processor rejected, per coin and validator at fault.
    pub peer_rejected: Family<Labels, Counter>,
    /// Signing ceremonies in progress, by coin.
    pub sign_ceremonies: Family<Labels, Gauge>,
    /// Validators left out of this node's current DKG chain, by coin, peer and reason (1 each).
    pub dkg_excluded: Family<Labels, Gauge>,
    /// Current DKG attempt, by coin.
    pub dkg_attempt: Family<Labels, Gauge>,
    /// Messages dropped by the per-peer rate limits, by protocol.
    pub rate_limited: Family<Labels, Counter>,
    /// Gossip messages gossipsub abandoned on their way to a slow peer (queue full or waited
    /// too long).
    pub gossip_dropped: Counter,
    /// Messages that found a processor's queue full, by coin: a stored one waited in the
    /// inbound table for room, a volatile one was turned away (its sender retries).
    pub bus_full: Family<Labels, Counter>,
    /// State-changing API requests refused for a missing or wrong token, by endpoint.
    pub api_unauthorized: Family<Labels, Counter>,
    /// Signature requests the operator's policy refused, by coin and rule.
    pub sign_policy_refused: Family<Labels, Counter>,
    /// Signing approvals, by coin and direction (`given` by this operator, `received` from
    /// other validators and verified).
    pub sign_approvals: Family<Labels, Counter>,
    /// Requests that expired unsigned (fewer than t approvals, or not signed in time), by coin.
    pub sign_expired: Family<Labels, Counter>,
}

fn duration_histogram() -> Histogram {
    // 10 ms .. ~328 s
    Histogram::new(exponential_buckets(0.01, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            peers_connected: Gauge::default(),
            validators_missing: Gauge::default(),
            messages_sent: Family::default(),
            messages_received: Family::default(),
            bytes_sent: Family::default(),
            bytes_received: Family::default(),
            messages_rejected: Family::default(),
            dkg_phase: Family::default(),
            outbox_len: Gauge::default(),
            sign_requests: Family::default(),
            sign_cheaters: Family::default(),
            peer_rejected: Family::default(),
            sign_ceremonies: Family::default(),
            dkg_excluded: Family::default(),
            dkg_attempt: Family::default(),
            rate_limited: Family::default(),
            gossip_dropped: Counter::default(),
            bus_full: Family::default(),
            api_unauthorized: Family::default(),
            sign_policy_refused: Family::default(),
            sign_approvals: Family::default(),
            sign_expired: Family::default(),
            dkg_duration: Family::new_with_constructor(duration_histogram),
            sign_duration: Family::new_with_constructor(duration_histogram),
            dkg_outcomes: Family::default(),
            db_size: Gauge::default(),
        }
    }
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
            "validators_missing",
            "Validators of the network definition without a connection",
            m.validators_missing.clone(),
        );
        r.register(
            "messages_sent",
            "Messages sent, by protocol (gossip, direct) and kind",
            m.messages_sent.clone(),
        );
        r.register(
            "messages_received",
            "Messages received and accepted, by protocol (gossip, direct) and kind",
            m.messages_received.clone(),
        );
        r.register_with_unit(
            "sent",
            "Bytes sent, by protocol and kind",
            prometheus_client::registry::Unit::Bytes,
            m.bytes_sent.clone(),
        );
        r.register_with_unit(
            "received",
            "Bytes received and accepted, by protocol and kind",
            prometheus_client::registry::Unit::Bytes,
            m.bytes_received.clone(),
        );
        r.register_with_unit(
            "dkg_duration",
            "Seconds from the start of a coin's DKG (or of its latest attempt) to an active vault",
            prometheus_client::registry::Unit::Seconds,
            m.dkg_duration.clone(),
        );
        r.register_with_unit(
            "sign_duration",
            "Seconds from accepting a signature request to its outcome, by coin and outcome",
            prometheus_client::registry::Unit::Seconds,
            m.sign_duration.clone(),
        );
        r.register(
            "dkg_outcomes",
            "DKG outcomes by coin and outcome (active, failed, excluded)",
            m.dkg_outcomes.clone(),
        );
        r.register_with_unit(
            "db_size",
            "Size of the database's table files",
            prometheus_client::registry::Unit::Bytes,
            m.db_size.clone(),
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
            "Signature requests originated here that finished, by coin, outcome and reason",
            m.sign_requests.clone(),
        );
        r.register(
            "sign_cheaters",
            "Invalid preprocesses or signature shares received, by coin and sending validator",
            m.sign_cheaters.clone(),
        );
        r.register(
            "peer_rejected",
            "Messages a processor rejected (forged, malformed, contradicting), by coin and the validator at fault",
            m.peer_rejected.clone(),
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
            "gossip_dropped",
            "Gossip messages abandoned on their way to a slow peer (its send queue was full, or they waited too long)",
            m.gossip_dropped.clone(),
        );
        r.register(
            "bus_full",
            "Messages that found a coin processor's queue full (stored ones wait in the inbound table; others are turned away and retried by their sender)",
            m.bus_full.clone(),
        );
        r.register(
            "sign_policy_refused",
            "Signature requests refused (429) by this node's --sign-policy, by coin and rule (max_messages, max_requests_per_hour)",
            m.sign_policy_refused.clone(),
        );
        r.register(
            "sign_approvals",
            "Signing approvals by coin and direction: given (this operator's, signed and announced) and received (another validator's, verified)",
            m.sign_approvals.clone(),
        );
        r.register(
            "sign_expired",
            "Signature requests that expired unsigned here (fewer than t approvals in time), by coin",
            m.sign_expired.clone(),
        );
        r.register(
            "api_unauthorized",
            "State-changing API requests refused (401) for a missing or wrong bearer token, by endpoint",
            m.api_unauthorized.clone(),
        );
        r.register(
            "dkg_attempt",
            "Current DKG attempt per coin (0 unless participants were left out)",
            m.dkg_attempt.clone(),
        );
        m
    }

    /// Count a request the signing policy refused.
    pub fn policy_refused(&self, coin: protocol::Coin, rule: &str) {
        self.sign_policy_refused
            .get_or_create(&vec![
                ("coin".into(), coin.to_string()),
                ("rule".into(), rule.into()),
            ])
            .inc();
    }

    /// Count an approval given or received.
    pub fn approval(&self, coin: protocol::Coin, direction: &str) {
        self.sign_approvals
            .get_or_create(&vec![
                ("coin".into(), coin.to_string()),
                ("direction".into(), direction.into()),
            ])
            .inc();
    }

    /// Count a request that expired unsigned.
    pub fn sign_expired(&self, coin: protocol::Coin) {
        self.sign_expired
            .get_or_create(&vec![("coin".into(), coin.to_string())])
            .inc();
    }

    /// Count a request refused for its token.
    pub fn unauthorized(&self, endpoint: &str) {
        self.api_unauthorized
            .get_or_create(&vec![("endpoint".into(), endpoint.into())])
            .inc();
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

    /// Count a message that found `coin`'s processor queue full.
    pub fn bus_full(&self, coin: protocol::Coin) {
        self.bus_full
            .get_or_create(&vec![("coin".to_string(), coin.to_string())])
            .inc();
    }

    /// Set a coin's DKG attempt.
    pub fn attempt(&self, coin: protocol::Coin, attempt: i64) {
        self.dkg_attempt
            .get_or_create(&vec![("coin".to_string(), coin.to_string())])
            .set(attempt);
    }

    /// Count a finished signature request: `outcome` (done, failed) and, for failures, why
    /// (`signers_unavailable`, `attempts_exhausted`, `other`).
    pub fn sign_outcome(&self, coin: protocol::Coin, outcome: &str, reason: &str) {
        self.sign_requests
            .get_or_create(&vec![
                ("coin".to_string(), coin.to_string()),
                ("outcome".to_string(), outcome.to_string()),
                ("reason".to_string(), reason.to_string()),
            ])
            .inc();
    }

    /// Count a message `coin`'s processor rejected, naming the validator at fault.
    pub fn peer_rejected(&self, coin: protocol::Coin, peer: &protocol::ValidatorId) {
        self.peer_rejected
            .get_or_create(&vec![
                ("coin".to_string(), coin.to_string()),
                ("peer".to_string(), peer.to_string()),
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

    /// Count a sent message of `len` bytes.
    pub fn sent(&self, protocol: &str, k: &str, len: usize) {
        let labels = vec![
            ("protocol".to_string(), protocol.to_string()),
            ("kind".to_string(), k.to_string()),
        ];
        self.messages_sent.get_or_create(&labels).inc();
        self.bytes_sent.get_or_create(&labels).inc_by(len as u64);
    }

    /// Count a received (accepted) message of `len` bytes.
    pub fn received(&self, protocol: &str, k: &str, len: usize) {
        let labels = vec![
            ("protocol".to_string(), protocol.to_string()),
            ("kind".to_string(), k.to_string()),
        ];
        self.messages_received.get_or_create(&labels).inc();
        self.bytes_received
            .get_or_create(&labels)
            .inc_by(len as u64);
    }

    /// A DKG ended here: `outcome` (active, failed, excluded) after `seconds`.
    pub fn dkg_outcome(&self, coin: protocol::Coin, outcome: &str, seconds: f64) {
        let coin_label = vec![("coin".to_string(), coin.to_string())];
        if outcome == "active" {
            self.dkg_duration
                .get_or_create(&coin_label)
                .observe(seconds);
        }
        self.dkg_outcomes
            .get_or_create(&vec![
                ("coin".to_string(), coin.to_string()),
                ("outcome".to_string(), outcome.to_string()),
            ])
            .inc();
    }

    /// A signature request originated here ended after `seconds`.
    pub fn sign_duration(&self, coin: protocol::Coin, outcome: &str, seconds: f64) {
        self.sign_duration
            .get_or_create(&vec![
                ("coin".to_string(), coin.to_string()),
                ("outcome".to_string(), outcome.to_string()),
            ])
            .observe(seconds);
    }

    /// Count a rejected message of `protocol` (gossip, direct), by why (`Rejection::label`).
    pub fn rejected(&self, protocol: &str, reason: &str) {
        self.messages_rejected
            .get_or_create(&vec![
                ("kind".to_string(), protocol.to_string()),
                ("reason".to_string(), reason.to_string()),
            ])
            .inc();
    }

    /// Set a coin's DKG phase.
    pub fn phase(&self, coin: protocol::Coin, value: i64) {
        self.dkg_phase
            .get_or_create(&vec![("coin".to_string(), coin.to_string())])
            .set(value);
    }
}

/// The registry's OpenMetrics exposition rewritten as Prometheus text format 0.0.4, which every
/// Prometheus and `promtool check metrics` read: a counter family `x` is named `x_total` (its
/// samples' name), an info family `x` becomes the gauge `x_info`, `unknown` is `untyped`, and the
/// `# UNIT`/`# EOF` lines (OpenMetrics only) go.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    use std::collections::HashMap;
    let mut rename: HashMap<&str, String> = HashMap::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            match rest.split_once(' ') {
                Some((name, "counter")) => {
                    rename.insert(name, format!("{name}_total"));
                }
                Some((name, "info")) => {
                    rename.insert(name, format!("{name}_info"));
                }
                _ => {}
            }
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let rewritten = if let Some(rest) = line.strip_prefix("# TYPE ") {
            match rest.split_once(' ') {
                Some((name, kind)) => {
                    let name = rename.get(name).map(String::as_str).unwrap_or(name);
                    let kind = match kind {
                        "info" => "gauge",
                        "unknown" => "untyped",
                        k => k,
                    };
                    format!("# TYPE {name} {kind}")
                }
                None => line.to_string(),
            }
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            match rest.split_once(' ') {
                Some((name, help)) => {
                    let name = rename.get(name).map(String::as_str).unwrap_or(name);
                    format!("# HELP {name} {help}")
                }
                None => line.to_string(),
            }
        } else {
            line.to_string()
        };
        out.push_str(&rewritten);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_becomes_prometheus_text() {
        let om = "# HELP vaultd_sent Bytes sent.\n# TYPE vaultd_sent counter\n# UNIT vaultd_sent bytes\n\
                  vaultd_sent_total{kind=\"a\"} 3\n# HELP x_build Build.\n# TYPE x_build info\n\
                  x_build_info{version=\"1\"} 1\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n# EOF\n";
        let text = to_prometheus_text(om);
        assert_eq!(
            text,
            "# HELP vaultd_sent_total Bytes sent.\n# TYPE vaultd_sent_total counter\n\
             vaultd_sent_total{kind=\"a\"} 3\n# HELP x_build_info Build.\n# TYPE x_build_info gauge\n\
             x_build_info{version=\"1\"} 1\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n"
        );
    }
}
