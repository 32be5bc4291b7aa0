//! Secrets at rest: the values of the secret tables (`identity`, `key_shares`) are sealed with
//! XChaCha20-Poly1305 under a key derived from the operator's passphrase with Argon2id. The
//! salt, the KDF parameters and a check value live in the `meta` column family, in the clear;
//! without the passphrase the database reveals no key, share or entropy.
//!
//! A data directory is either encrypted (`--password-file`) or explicitly insecure
//! (`--insecure-no-passphrase`, for local clusters); the choice is made once, at `init`, and
//! recorded, so a node never silently starts the other way.

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::{
    aead::{Aead, KeyInit, Payload},
    XChaCha20Poly1305, XNonce,
};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{Result, StorageError};

/// How the node's secrets are protected, as the operator asked.
#[derive(Clone)]
pub enum Secrets {
    /// Stored as they are (local clusters and tests only).
    Insecure,
    /// Sealed under a key derived from this passphrase.
    Passphrase(Zeroizing<Vec<u8>>),
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secrets::Insecure => write!(f, "Insecure"),
            Secrets::Passphrase(_) => write!(f, "Passphrase(<secret>)"),
        }
    }
}

/// What the `meta` column family records about the secrets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecretsRecord {
    /// Initialised with `--insecure-no-passphrase`.
    Insecure,
    /// Initialised with a passphrase, before the KDF parameters were bound to the check
    /// (directories made then still open; new ones are [`SecretsRecord::Bound`]).
    Passphrase {
        /// Argon2id salt.
        salt: [u8; 16],
        /// Memory (KiB).
        m_cost: u32,
        /// Iterations.
        t_cost: u32,
        /// Lanes.
        p_cost: u32,
        /// A known plaintext sealed under the key: tells a wrong passphrase apart.
        check: Vec<u8>,
    },
    /// Initialised with a passphrase; the check is sealed with the salt and the KDF parameters
    /// as associated data, so a record whose parameters were altered (to weaken the KDF) does
    /// not open.
    Bound {
        /// Argon2id salt.
        salt: [u8; 16],
        /// Memory (KiB).
        m_cost: u32,
        /// Iterations.
        t_cost: u32,
        /// Lanes.
        p_cost: u32,
        /// A known plaintext sealed under the key, bound to the four fields above.
        check: Vec<u8>,
    },
}

/// Argon2id parameters of new data directories: 64 MiB, 3 passes, one lane (above OWASP's
/// minimum of 19 MiB and 2 passes; RFC 9106's second recommendation is 64 MiB and 3 passes).
const M_COST: u32 = 64 * 1024;
const T_COST: u32 = 3;
const P_COST: u32 = 1;
const CHECK: &[u8] = b"vaultd secrets v1";
const CHECK_AAD: &[u8] = b"meta/secrets";

/// The associated data of a [`SecretsRecord::Bound`] check: the record's own fields.
fn bound_aad(salt: &[u8; 16], m_cost: u32, t_cost: u32, p_cost: u32) -> Vec<u8> {
    let mut aad = CHECK_AAD.to_vec();
    aad.extend_from_slice(b"/argon2id");
    aad.extend_from_slice(salt);
    for v in [m_cost, t_cost, p_cost] {
        aad.extend_from_slice(&v.to_le_bytes());
    }
    aad
}

/// Marker byte of a sealed value (plain values start with the schema version, 1).
pub(crate) const SEALED: u8 = 0x80;

/// The key that seals secret values.
pub(crate) struct Sealer {
    cipher: XChaCha20Poly1305,
}

fn derive(
    passphrase: &[u8],
    salt: &[u8; 16],
    m_cost: u32,
    t_cost: u32,
    p_cost: u32,
) -> Result<Sealer> {
    let params = Params::new(m_cost, t_cost, p_cost, Some(32))
        .map_err(|e| StorageError::Secrets(format!("KDF parameters: {e}")))?;
    let mut key = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase, salt, key.as_mut())
        .map_err(|e| StorageError::Secrets(format!("key derivation: {e}")))?;
    let cipher = XChaCha20Poly1305::new_from_slice(key.as_ref())
        .map_err(|_| StorageError::Secrets("key length".into()))?;
    Ok(Sealer { cipher })
}

impl Sealer {
    /// A new record and its sealer, for a fresh data directory.
    pub(crate) fn create(passphrase: &[u8]) -> Result<(SecretsRecord, Sealer)> {
        let mut salt = [0u8; 16];
        OsRng.fill_bytes(&mut salt);
        let sealer = derive(passphrase, &salt, M_COST, T_COST, P_COST)?;
        let check = sealer.seal(&bound_aad(&salt, M_COST, T_COST, P_COST), CHECK)?;
        let record = SecretsRecord::Bound {
            salt,
            m_cost: M_COST,
            t_cost: T_COST,
            p_cost: P_COST,
            check,
        };
        Ok((record, sealer))
    }

    /// The sealer of an existing record, if `passphrase` is the right one.
    pub(crate) fn unlock(record: &SecretsRecord, passphrase: &[u8]) -> Result<Sealer> {
        let (salt, m_cost, t_cost, p_cost, check, aad) = match record {
            SecretsRecord::Bound {
                salt,
                m_cost,
                t_cost,
                p_cost,
                check,
            } => (
                salt,
                m_cost,
                t_cost,
                p_cost,
                check,
                bound_aad(salt, *m_cost, *t_cost, *p_cost),
            ),
            SecretsRecord::Passphrase {
                salt,
                m_cost,
                t_cost,
                p_cost,
                check,
            } => (salt, m_cost, t_cost, p_cost, check, CHECK_AAD.to_vec()),
            SecretsRecord::Insecure => {
                return Err(StorageError::Secrets(
                    "this data directory was initialised without a passphrase \
                     (--insecure-no-passphrase); run it the same way"
                        .into(),
                ))
            }
        };
        // Bound what a tampered record could make us spend.
        if *m_cost > 4 * 1024 * 1024 || *t_cost > 64 || *p_cost > 16 {
            return Err(StorageError::Secrets(
                "the recorded KDF parameters are out of range".into(),
            ));
        }
        let sealer = derive(passphrase, salt, *m_cost, *t_cost, *p_cost)?;
        match sealer.open(&aad, check) {
            Ok(plain) if plain.as_slice() == CHECK => Ok(sealer),
            _ => Err(StorageError::Secrets(
                "wrong passphrase for this data directory (or its recorded KDF parameters \
                 were altered)"
                    .into(),
            )),
        }
    }

    /// `SEALED ‖ nonce ‖ ciphertext`, bound to `aad` (column family and key).
    pub(crate) fn seal(&self, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; 24];
        OsRng.fill_bytes(&mut nonce);
        let ct = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad })
            .map_err(|_| StorageError::Secrets("sealing failed".into()))?;
        let mut out = Vec::with_capacity(1 + 24 + ct.len());
        out.push(SEALED);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Open what [`Sealer::seal`] produced.
    pub(crate) fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let bad = || StorageError::Secrets("a sealed value failed to open".into());
        let (&marker, rest) = sealed.split_first().ok_or_else(bad)?;
        if marker != SEALED || rest.len() < 24 {
            return Err(bad());
        }
        let (nonce, ct) = rest.split_at(24);
        self.cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
            .map(Zeroizing::new)
            .map_err(|_| bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_records_bind_strong_parameters_and_old_ones_still_open() {
        let (record, _) = Sealer::create(b"pass").unwrap();
        let SecretsRecord::Bound {
            salt,
            m_cost,
            t_cost,
            p_cost,
            check,
        } = record.clone()
        else {
            panic!("a new record binds its parameters");
        };
        assert_eq!((m_cost, t_cost, p_cost), (64 * 1024, 3, 1));
        assert!(Sealer::unlock(&record, b"pass").is_ok());
        assert!(Sealer::unlock(&record, b"other").is_err());
        // Weakened parameters (and a weaker check to go with them) do not open.
        let weakened = SecretsRecord::Bound {
            salt,
            m_cost: 8,
            t_cost: 1,
            p_cost,
            check: check.clone(),
        };
        assert!(Sealer::unlock(&weakened, b"pass").is_err());
        let relabelled = SecretsRecord::Passphrase {
            salt,
            m_cost,
            t_cost,
            p_cost,
            check,
        };
        assert!(
            Sealer::unlock(&relabelled, b"pass").is_err(),
            "a bound check does not open as an unbound one"
        );
        // A directory made before the change: 19 MiB, 2 passes, check without the parameters.
        let legacy_salt = [7u8; 16];
        let sealer = derive(b"pass", &legacy_salt, 19 * 1024, 2, 1).unwrap();
        let legacy = SecretsRecord::Passphrase {
            salt: legacy_salt,
            m_cost: 19 * 1024,
            t_cost: 2,
            p_cost: 1,
            check: sealer.seal(CHECK_AAD, CHECK).unwrap(),
        };
        let opened = Sealer::unlock(&legacy, b"pass").unwrap();
        let sealed = opened.seal(b"aad", b"secret").unwrap();
        assert_eq!(sealer.open(b"aad", &sealed).unwrap().as_slice(), b"secret");
    }
}
