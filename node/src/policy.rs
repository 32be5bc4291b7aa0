//! The operator's signing policy (`--sign-policy FILE`, optional): per coin, the most messages
//! in one request and the most requests per hour this node accepts on its API. A request past
//! either is refused (429) with the rule it broke, logged and counted; the policy is read at
//! start, so a change takes effect at the next restart.
//!
//! ```toml
//! [BTC]
//! max_messages = 4
//! max_requests_per_hour = 100
//! ```

use std::{
    collections::{BTreeMap, VecDeque},
    path::Path,
    str::FromStr,
    time::{Duration, Instant},
};

use protocol::Coin;
use serde::Deserialize;

use crate::error::NodeError;

/// Largest policy file read.
const MAX_POLICY_FILE: u64 = 64 * 1024;
const HOUR: Duration = Duration::from_secs(3600);

/// One coin's limits (absent: no limit beyond the protocol's own).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoinPolicy {
    /// Most messages in one request.
    pub max_messages: Option<usize>,
    /// Most requests accepted in any hour.
    pub max_requests_per_hour: Option<u32>,
}

/// Which limit a request broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyRule {
    /// Too many messages in one request.
    #[error("{count} messages; this node's policy allows at most {max} per {coin} request")]
    Messages {
        /// Coin.
        coin: Coin,
        /// Messages in the request.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Too many requests in the last hour.
    #[error("this node's policy allows at most {max} {coin} requests per hour; try again later")]
    Rate {
        /// Coin.
        coin: Coin,
        /// The limit.
        max: u32,
    },
}

impl PolicyRule {
    /// The metric label of the rule.
    pub fn label(&self) -> &'static str {
        match self {
            PolicyRule::Messages { .. } => "max_messages",
            PolicyRule::Rate { .. } => "max_requests_per_hour",
        }
    }
}

/// The policy and what it has accepted in the last hour.
#[derive(Clone, Debug, Default)]
pub struct SignPolicy {
    coins: BTreeMap<Coin, CoinPolicy>,
    /// When each coin's requests of the last hour were accepted (at most its hourly limit).
    accepted: BTreeMap<Coin, VecDeque<Instant>>,
}

impl SignPolicy {
    /// A policy of these limits.
    pub fn new(coins: BTreeMap<Coin, CoinPolicy>) -> Self {
        SignPolicy {
            coins,
            accepted: BTreeMap::new(),
        }
    }

    /// Read a policy file; errors name the file and the key.
    pub fn load(path: &Path) -> Result<Self, NodeError> {
        let err =
            |what: String| NodeError::Config(format!("sign policy {}: {what}", path.display()));
        let text = crate::config::read_capped(path, MAX_POLICY_FILE, "over 64 KiB").map_err(err)?;
        Self::parse(&text).map_err(err)
    }

    /// Parse a policy.
    pub fn parse(text: &str) -> Result<Self, String> {
        let table: BTreeMap<String, CoinPolicy> =
            toml::from_str(text).map_err(|e| e.to_string())?;
        let mut coins = BTreeMap::new();
        for (ticker, policy) in table {
            let coin = Coin::from_str(&ticker).map_err(|_| format!("unknown coin [{ticker}]"))?;
            coins.insert(coin, policy);
        }
        Ok(SignPolicy::new(coins))
    }

    /// Whether a request of `messages` messages for `coin` may be accepted at `now`; if so it
    /// is counted against the hourly limit.
    pub fn admit(&mut self, coin: Coin, messages: usize, now: Instant) -> Result<(), PolicyRule> {
        let Some(policy) = self.coins.get(&coin) else {
            return Ok(());
        };
        if let Some(max) = policy.max_messages {
            if messages > max {
                return Err(PolicyRule::Messages {
                    coin,
                    count: messages,
                    max,
                });
            }
        }
        if let Some(max) = policy.max_requests_per_hour {
            let accepted = self.accepted.entry(coin).or_default();
            while accepted
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= HOUR)
            {
                accepted.pop_front();
            }
            if accepted.len() >= max as usize {
                return Err(PolicyRule::Rate { coin, max });
            }
            accepted.push_back(now);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_coin_refuse_with_the_rule_and_the_hour_slides() {
        let mut p = SignPolicy::parse(
            "[BTC]\nmax_messages = 2\nmax_requests_per_hour = 2\n[SOL]\nmax_messages = 1\n",
        )
        .unwrap();
        let t0 = Instant::now();
        assert_eq!(
            p.admit(Coin::Btc, 3, t0),
            Err(PolicyRule::Messages {
                coin: Coin::Btc,
                count: 3,
                max: 2
            })
        );
        assert!(p.admit(Coin::Btc, 2, t0).is_ok());
        assert!(p.admit(Coin::Btc, 1, t0 + Duration::from_secs(10)).is_ok());
        let refused = p.admit(Coin::Btc, 1, t0 + Duration::from_secs(20));
        assert_eq!(
            refused,
            Err(PolicyRule::Rate {
                coin: Coin::Btc,
                max: 2
            })
        );
        assert_eq!(refused.unwrap_err().label(), "max_requests_per_hour");
        // A refused request is not counted; an hour after the first, one slot is free again.
        assert!(p.admit(Coin::Btc, 1, t0 + HOUR).is_ok());
        assert!(p.admit(Coin::Btc, 1, t0 + HOUR).is_err());
        // Other coins have their own limits, or none.
        assert!(p.admit(Coin::Sol, 2, t0).is_err());
        assert!(p.admit(Coin::Eth, 64, t0).is_ok());
    }

    #[test]
    fn a_wrong_policy_names_the_key() {
        assert!(SignPolicy::parse("[DOGE]\nmax_messages = 1\n")
            .unwrap_err()
            .contains("DOGE"));
        assert!(SignPolicy::parse("[BTC]\nmax_msgs = 1\n")
            .unwrap_err()
            .contains("max_msgs"));
        assert!(SignPolicy::parse("[BTC]\nmax_messages = -1\n").is_err());
    }
}
