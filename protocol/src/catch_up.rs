//! Catching up after a partition. Gossip published while validators were cut apart never
//! reaches the other side (gossipsub does not send it again once the cut heals, and a message
//! that waited 5 s in a stalled connection's queue is dropped), so a processor announces again:
//!
//! - its own approvals of requests still pending here, every [`REANNOUNCE_MS`] after the last
//!   time (an originator cut off from an approval gets it after the heal);
//! - the signatures of a request it originated and finished, when an approval of that request
//!   arrives (the approver is still waiting, so it missed `SignatureAvailable`), at most once
//!   per [`RESEND_MS`] per request, from a cache of the latest it originated (bounded in count
//!   and bytes; a restart empties it).
//!
//! Sans-IO: the caller passes the time (milliseconds of the processor's clock).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::messages::SignatureAvailable;

/// How long after our approval's last announcement it is announced again while pending.
pub const REANNOUNCE_MS: u64 = 15_000;
/// Least time between two resends of one request's signatures.
pub const RESEND_MS: u64 = 10_000;
/// Requests we originated whose signatures are kept for resending.
const MAX_SIGNED: usize = 256;
/// Bytes of messages and signatures kept for resending, at most.
const MAX_SIGNED_BYTES: usize = 4 << 20;

/// What this processor may announce again.
#[derive(Default)]
pub(crate) struct CatchUp {
    /// Request → when our approval of it was last announced.
    announced: BTreeMap<[u8; 32], u64>,
    /// Request we originated → its signatures, and when they were last sent.
    signed: BTreeMap<[u8; 32], (SignatureAvailable, u64)>,
    order: VecDeque<[u8; 32]>,
    bytes: usize,
}

fn size(a: &SignatureAvailable) -> usize {
    a.messages.iter().map(Vec::len).sum::<usize>()
        + a.signatures.iter().map(Vec::len).sum::<usize>()
}

impl CatchUp {
    /// Of the requests still pending that we approved (`ours`), those whose approval is due to
    /// be announced again at `now`. One not seen before counts as announced now (it was, when
    /// our operator approved it). Forgets requests no longer pending.
    pub(crate) fn approvals_due(&mut self, ours: &BTreeSet<[u8; 32]>, now: u64) -> Vec<[u8; 32]> {
        self.announced.retain(|id, _| ours.contains(id));
        let mut due = Vec::new();
        for id in ours {
            let last = self.announced.entry(*id).or_insert(now);
            if now.saturating_sub(*last) >= REANNOUNCE_MS {
                *last = now;
                due.push(*id);
            }
        }
        due
    }

    /// We originated `a` and announced it `now`.
    pub(crate) fn signed(&mut self, a: &SignatureAvailable, now: u64) {
        let bytes = size(a);
        if bytes > MAX_SIGNED_BYTES {
            return;
        }
        if let Some((old, _)) = self.signed.insert(a.id, (a.clone(), now)) {
            self.bytes -= size(&old);
        } else {
            self.order.push_back(a.id);
        }
        self.bytes += bytes;
        while self.order.len() > MAX_SIGNED || self.bytes > MAX_SIGNED_BYTES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some((a, _)) = self.signed.remove(&old) {
                self.bytes -= size(&a);
            }
        }
    }

    /// An approval of finished request `id` arrived at `now`: its signatures to announce
    /// again, if we originated it and did not send them in the last [`RESEND_MS`].
    pub(crate) fn resend(&mut self, id: &[u8; 32], now: u64) -> Option<SignatureAvailable> {
        let (a, last) = self.signed.get_mut(id)?;
        if now.saturating_sub(*last) < RESEND_MS {
            return None;
        }
        *last = now;
        Some(a.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Coin;

    fn available(id: u8, bytes: usize) -> SignatureAvailable {
        SignatureAvailable {
            coin: Coin::Btc,
            id: [id; 32],
            origin: crate::ValidatorId::from_ed25519(&[1; 32]),
            attempt: 0,
            vault: [0; 32],
            signers: Vec::new(),
            messages: vec![vec![0; bytes]],
            signatures: vec![vec![0; 64]],
            reference: None,
        }
    }

    #[test]
    fn our_pending_approvals_are_announced_again_every_15_s_until_they_finish() {
        let mut c = CatchUp::default();
        let ours: BTreeSet<[u8; 32]> = [[1; 32], [2; 32]].into();
        assert!(c.approvals_due(&ours, 1_000).is_empty(), "just announced");
        assert!(c.approvals_due(&ours, 15_999).is_empty());
        assert_eq!(c.approvals_due(&ours, 16_000).len(), 2);
        assert!(c.approvals_due(&ours, 20_000).is_empty());
        let left: BTreeSet<[u8; 32]> = [[2; 32]].into();
        assert_eq!(c.approvals_due(&left, 31_000), [[2; 32]]);
        assert_eq!(c.announced.len(), 1, "a finished request is forgotten");
    }

    #[test]
    fn signatures_are_resent_at_most_every_10_s_and_the_cache_is_bounded() {
        let mut c = CatchUp::default();
        c.signed(&available(1, 32), 0);
        assert!(c.resend(&[1; 32], 5_000).is_none(), "sent 5 s ago");
        assert!(c.resend(&[1; 32], 10_000).is_some());
        assert!(c.resend(&[1; 32], 15_000).is_none());
        assert!(c.resend(&[9; 32], 50_000).is_none(), "not ours");
        for k in 0..=255u8 {
            c.signed(&available(k, 32), 0);
        }
        assert!(c.signed.len() <= MAX_SIGNED);
        for k in 0..40u8 {
            c.signed(&available(k, 128 * 1024), 0);
        }
        assert!(c.bytes <= MAX_SIGNED_BYTES, "{} bytes kept", c.bytes);
        assert_eq!(
            c.bytes,
            c.signed.values().map(|(a, _)| size(a)).sum::<usize>()
        );
    }
}
