//! The network definition (step 6's signer list): which validators exist, which coins get a
//! vault, the threshold, and where to bootstrap. Read from a TOML file; every validator of the
//! network uses the same file.

use std::{collections::BTreeSet, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::{
    error::{ProtocolError, Result},
    ids::{Coin, ValidatorId},
};

/// Most validators a network may have (bounds every per-validator structure).
pub const MAX_VALIDATORS: usize = 256;

/// The file format.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkFile {
    name: String,
    #[serde(default)]
    session: u32,
    coins: Vec<String>,
    #[serde(default)]
    threshold: Option<u16>,
    #[serde(default)]
    bootstrap: Vec<String>,
    validators: Vec<ValidatorEntry>,
}

/// One validator of the network.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ValidatorEntry {
    /// Its PeerId (base58).
    pub peer_id: String,
    /// Optional multiaddrs where it listens.
    #[serde(default)]
    pub addrs: Vec<String>,
}

/// A checked network definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkDefinition {
    /// Network name, part of every topic and protocol name.
    pub name: String,
    /// Validator-set session number.
    pub session: u32,
    /// Coins with a vault.
    pub coins: Vec<Coin>,
    /// Threshold t.
    pub threshold: u16,
    /// Bootstrap multiaddrs (checked by the node).
    pub bootstrap: Vec<String>,
    /// Validators sorted by PeerId bytes; the position + 1 is the DKG participant index.
    pub validators: Vec<ValidatorId>,
    /// Listen addresses given per validator, same order.
    pub validator_addrs: Vec<Vec<String>>,
}

/// Default threshold: floor(2n/3) + 1.
pub fn default_threshold(n: usize) -> u16 {
    u16::try_from((2 * n) / 3 + 1).unwrap_or(u16::MAX)
}

fn field(field: &str, reason: impl Into<String>) -> ProtocolError {
    ProtocolError::Definition {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// Name the key an error points at (`key` on the line of the span), with the line number.
fn toml_error(text: &str, e: &toml::de::Error) -> ProtocolError {
    let located = e.span().and_then(|span| {
        let start = span.start.min(text.len());
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let line_no = text[..start].matches('\n').count() + 1;
        let key = text[line_start..line_end]
            .split_once('=')
            .map(|(k, _)| k.trim().to_string())?;
        Some(format!("{key} (line {line_no})"))
    });
    field(
        &located.unwrap_or_else(|| "(file)".into()),
        e.message().to_string(),
    )
}

impl NetworkDefinition {
    /// Parse and check a TOML network definition.
    pub fn from_toml(text: &str) -> Result<Self> {
        let file: NetworkFile = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        if file.name.is_empty()
            || file.name.len() > 64
            || !file
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(field("name", "1 to 64 characters of [A-Za-z0-9-_.]"));
        }
        let mut coins = Vec::new();
        for (i, c) in file.coins.iter().enumerate() {
            let coin =
                Coin::from_str(c).map_err(|e| field(&format!("coins[{i}]"), e.to_string()))?;
            if coins.contains(&coin) {
                return Err(field(
                    &format!("coins[{i}]"),
                    format!("{coin} listed twice"),
                ));
            }
            coins.push(coin);
        }
        if coins.is_empty() {
            return Err(field("coins", "at least one coin"));
        }
        coins.sort();
        let n = file.validators.len();
        if !(2..=MAX_VALIDATORS).contains(&n) {
            return Err(field(
                "validators",
                format!("2 to {MAX_VALIDATORS} validators, got {n}"),
            ));
        }
        let mut entries = Vec::with_capacity(n);
        let mut seen = BTreeSet::new();
        for (i, v) in file.validators.iter().enumerate() {
            let id = ValidatorId::from_str(&v.peer_id)
                .map_err(|e| field(&format!("validators[{i}].peer_id"), e.to_string()))?;
            if !seen.insert(id.clone()) {
                return Err(field(&format!("validators[{i}].peer_id"), "listed twice"));
            }
            entries.push((id, v.addrs.clone()));
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        // Below a majority, two disjoint sets of t validators could each vote, exclude and
        // sign on their own.
        let majority = n / 2 + 1;
        let threshold = match file.threshold {
            Some(t) if usize::from(t) < majority || usize::from(t) > n => {
                return Err(field(
                    "threshold",
                    format!(
                        "{t} with {n} validators; it must be a majority, between {majority} and {n}"
                    ),
                ))
            }
            Some(t) => t,
            None => default_threshold(n),
        };
        let (validators, validator_addrs) = entries.into_iter().unzip();
        Ok(NetworkDefinition {
            name: file.name,
            session: file.session,
            coins,
            threshold,
            bootstrap: file.bootstrap,
            validators,
            validator_addrs,
        })
    }

    /// Render as TOML (used by the local-cluster tooling).
    pub fn to_toml(&self) -> String {
        let file = NetworkFile {
            name: self.name.clone(),
            session: self.session,
            coins: self.coins.iter().map(|c| c.ticker().to_string()).collect(),
            threshold: Some(self.threshold),
            bootstrap: self.bootstrap.clone(),
            validators: self
                .validators
                .iter()
                .zip(&self.validator_addrs)
                .map(|(v, a)| ValidatorEntry {
                    peer_id: v.to_string(),
                    addrs: a.clone(),
                })
                .collect(),
        };
        toml::to_string(&file).unwrap_or_default()
    }

    /// Number of validators.
    pub fn n(&self) -> u16 {
        u16::try_from(self.validators.len()).unwrap_or(u16::MAX)
    }

    /// Whether `id` is a validator.
    pub fn is_validator(&self, id: &ValidatorId) -> bool {
        self.validators.binary_search(id).is_ok()
    }

    /// The 1-based DKG participant index of `id`.
    pub fn participant_index(&self, id: &ValidatorId) -> Option<u16> {
        self.validators
            .binary_search(id)
            .ok()
            .and_then(|i| u16::try_from(i + 1).ok())
    }

    /// The validator with participant index `i`.
    pub fn validator_at(&self, i: u16) -> Option<&ValidatorId> {
        usize::from(i)
            .checked_sub(1)
            .and_then(|i| self.validators.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u8) -> String {
        ValidatorId::from_ed25519(&[i; 32]).to_string()
    }

    fn file(extra: &str, validators: usize) -> String {
        let mut s = format!("name = \"t\"\ncoins = [\"BTC\", \"SOL\"]\n{extra}\n");
        for i in 0..validators {
            s.push_str(&format!(
                "[[validators]]\npeer_id = \"{}\"\n",
                id(i as u8 + 1)
            ));
        }
        s
    }

    #[test]
    fn parses_and_defaults_threshold() {
        let d = NetworkDefinition::from_toml(&file("", 4)).unwrap();
        assert_eq!(d.threshold, 3);
        assert_eq!(d.n(), 4);
        assert!(d.validators.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(default_threshold(64), 43);
        let again = NetworkDefinition::from_toml(&d.to_toml()).unwrap();
        assert_eq!(again, d);
    }

    #[test]
    fn errors_name_the_field() {
        let e = NetworkDefinition::from_toml(&file("threshold = 9", 4)).unwrap_err();
        assert!(e.to_string().contains("threshold"), "{e}");
        // Not a majority: two disjoint quorums could each act alone.
        for (t, n) in [(2, 4), (3, 7), (1, 3), (0, 2)] {
            let e =
                NetworkDefinition::from_toml(&file(&format!("threshold = {t}"), n)).unwrap_err();
            assert!(e.to_string().contains("threshold"), "{e}");
            assert!(e.to_string().contains("majority"), "{e}");
        }
        for (t, n) in [(3, 4), (4, 7), (2, 3), (2, 2)] {
            let d = NetworkDefinition::from_toml(&file(&format!("threshold = {t}"), n)).unwrap();
            assert_eq!(d.threshold, t);
        }
        let e = NetworkDefinition::from_toml(&file("", 1)).unwrap_err();
        assert!(e.to_string().contains("validators"), "{e}");
        let e = NetworkDefinition::from_toml("name = 5").unwrap_err();
        assert!(e.to_string().contains("name"), "{e}");
        let bad = file("", 2).replace(&id(2), "xyz0");
        let e = NetworkDefinition::from_toml(&bad).unwrap_err();
        assert!(e.to_string().contains("validators[1].peer_id"), "{e}");
        let e = NetworkDefinition::from_toml(&file("colour = 1", 2)).unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
    }
}
