//! Test-only malicious behaviours (feature `fault-injection`, never in a release build).
//!
//! A sabotaged processor runs the honest state machine and then rewrites what it emits, with its
//! own real keys, so that what its peers receive is exactly what a malicious validator could
//! send: properly sealed and signed, but wrong.

use crate::{
    dkg,
    keygen::{address_body, payload_body, KeyGen, ADDRESS_DOMAIN, COMMITMENT_DOMAIN, SHARE_DOMAIN},
    messages::{
        BlameEvidence, EncryptedKeyGenCommitmentOut, EncryptedKeyShareOut, KeyGenPayload,
        KeyGenRelayOut, ProcessorMessage,
    },
    party::Party,
    processor::{Output, Processor},
    seal::SealKind,
    ValidatorId,
};

/// What a malicious validator does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sabotage {
    /// Sends the lowest-indexed other participant commitments from another polynomial (signed).
    Equivocate,
    /// Sends the lowest-indexed other participant a share of another polynomial, properly
    /// encrypted and signed: it decrypts, but does not match its commitments.
    BadShare,
    /// Accuses the first participant whose (valid) share it received, without a proof, and
    /// (as its accusation claims it has no key) never confirms the group key.
    FalseAccusation,
    /// Replaces every sealed DKG payload it sends with random bytes (relays included), and
    /// publishes no share.
    Garbage,
    /// With its own approval of a request, gossips approvals in the other participants' names
    /// (signed with its own key) and announces the request with itself and t - 1 others as
    /// signers, as if they had approved.
    ForgeApprovals,
    /// Confirms (signs) a group key other than the one its DKG computed.
    WrongGroupKey,
    /// Never sends its commitments to the lowest-indexed other participant (everyone else gets
    /// them), nor relays anything to it.
    WithholdCommitment,
    /// Never sends its share to the lowest-indexed other participant, and never answers that
    /// participant's complaint.
    WithholdShare,
}

impl std::str::FromStr for Sabotage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "equivocate" => Ok(Sabotage::Equivocate),
            "bad-share" => Ok(Sabotage::BadShare),
            "false-accusation" => Ok(Sabotage::FalseAccusation),
            "garbage" => Ok(Sabotage::Garbage),
            "forge-approvals" => Ok(Sabotage::ForgeApprovals),
            "wrong-group-key" => Ok(Sabotage::WrongGroupKey),
            "withhold-commitment" => Ok(Sabotage::WithholdCommitment),
            "withhold-share" => Ok(Sabotage::WithholdShare),
            other => Err(format!(
                "unknown sabotage {other:?} (equivocate, bad-share, false-accusation, garbage, forge-approvals, wrong-group-key, withhold-commitment, withhold-share)"
            )),
        }
    }
}

impl Processor {
    /// `request` announced with this validator as its originator, signed with its real key
    /// (whatever its content): what a hostile validator can put on the general partition.
    pub fn originate_as_self(
        &mut self,
        mut request: crate::messages::SignRequest,
    ) -> crate::messages::SignRequest {
        let (party, _) = self.dkg_parts();
        request.origin = party.me().clone();
        crate::signing::sign_request(party, request)
    }

    /// Rewrite what the honest machine emitted (and add to it).
    pub fn sabotage(&mut self, how: Sabotage, out: Vec<Output>) -> Vec<Output> {
        if how == Sabotage::ForgeApprovals {
            let participants = self.vault().map(|v| v.participants.clone());
            let (party, _) = self.dkg_parts();
            return forge_approvals(party, &participants.unwrap_or_default(), out);
        }
        let (party, keygen) = self.dkg_parts();
        let attempt = keygen.attempt();
        let params = *attempt.params();
        let (coin, me) = (party.coin(), party.me());
        let victim = attempt.participants().iter().find(|v| *v != me).cloned();
        let other_entropy = other_entropy(&params.context);
        let reseal = |kind, to: &ValidatorId, bytes, signature| {
            let payload = postcard::to_stdvec(&KeyGenPayload { bytes, signature }).ok()?;
            party.seal_with(kind, to, params.context, &payload).ok()
        };
        let mut result = Vec::with_capacity(out.len());
        for o in out {
            let Output::Bus(msg) = o else {
                result.push(o);
                continue;
            };
            let msg = match (how, msg) {
                (Sabotage::Equivocate, ProcessorMessage::EncryptedKeyGenCommitmentOut(mut m))
                    if Some(&m.to) == victim.as_ref() =>
                {
                    if let Ok(other) = dkg::commitments(coin.curve(), &other_entropy, &params) {
                        let sig = party.signer().sign(
                            COMMITMENT_DOMAIN,
                            &payload_body(coin, &m.context, me, None, &other),
                        );
                        if let Some(sealed) = reseal(SealKind::KeyGenCommitment, &m.to, other, sig)
                        {
                            m.sealed = sealed;
                        }
                    }
                    ProcessorMessage::EncryptedKeyGenCommitmentOut(m)
                }
                (Sabotage::BadShare, ProcessorMessage::EncryptedKeyShareOut(mut m))
                    if Some(&m.to) == victim.as_ref() =>
                {
                    let shares = dkg::secret_shares(
                        coin.curve(),
                        &other_entropy,
                        &params,
                        keygen.commitments(),
                    );
                    let l = attempt.member_index(&m.to);
                    if let Some(share) = shares.ok().and_then(|s| s.get(&l?).cloned()) {
                        let sig = party.signer().sign(
                            SHARE_DOMAIN,
                            &payload_body(coin, &m.context, me, Some(&m.to), &share),
                        );
                        if let Some(sealed) = reseal(SealKind::KeyShare, &m.to, share, sig) {
                            m.sealed = sealed;
                        }
                    }
                    ProcessorMessage::EncryptedKeyShareOut(m)
                }
                (Sabotage::Garbage, ProcessorMessage::EncryptedKeyGenCommitmentOut(mut m)) => {
                    m.sealed = garbage(&m.context, m.sealed.len());
                    ProcessorMessage::EncryptedKeyGenCommitmentOut(m)
                }
                (Sabotage::Garbage, ProcessorMessage::EncryptedKeyShareOut(mut m)) => {
                    m.sealed = garbage(&m.context, m.sealed.len());
                    ProcessorMessage::EncryptedKeyShareOut(m)
                }
                (Sabotage::Garbage, ProcessorMessage::KeyGenRelayOut(mut m)) => {
                    m.sealed = garbage(&m.context, m.sealed.len());
                    ProcessorMessage::KeyGenRelayOut(m)
                }
                // Its shares only ever left as garbage: it publishes none either.
                (Sabotage::Garbage, ProcessorMessage::KeyGenShareAnswer(_)) => continue,
                (Sabotage::FalseAccusation, ProcessorMessage::PublicAddressAvailable(_)) => {
                    continue
                }
                (
                    Sabotage::WithholdCommitment,
                    ProcessorMessage::EncryptedKeyGenCommitmentOut(EncryptedKeyGenCommitmentOut {
                        ref to,
                        ..
                    })
                    | ProcessorMessage::KeyGenRelayOut(KeyGenRelayOut { ref to, .. }),
                ) if Some(to) == victim.as_ref() => continue,
                (
                    Sabotage::WithholdShare,
                    ProcessorMessage::EncryptedKeyShareOut(EncryptedKeyShareOut { ref to, .. }),
                ) if Some(to) == victim.as_ref() => continue,
                (Sabotage::WithholdShare, ProcessorMessage::KeyGenShareAnswer(_)) => continue,
                (Sabotage::WrongGroupKey, ProcessorMessage::PublicAddressAvailable(mut a)) => {
                    if let Some(b) = a.group_key.last_mut() {
                        *b ^= 1;
                    }
                    a.signature = party.signer().sign(ADDRESS_DOMAIN, &address_body(&a));
                    ProcessorMessage::PublicAddressAvailable(a)
                }
                (_, other) => other,
            };
            result.push(Output::Bus(msg));
        }
        if how == Sabotage::FalseAccusation {
            accuse_falsely(party, keygen, &mut result);
        }
        result
    }
}

/// Next to each approval of ours: approvals in the other participants' names, and the request
/// announced with signers that never approved it.
fn forge_approvals(party: &Party, participants: &[ValidatorId], out: Vec<Output>) -> Vec<Output> {
    use crate::messages::{SignApproval, SignRequest};
    let me = party.me();
    let t = usize::from(party.def().threshold);
    let mut result = Vec::with_capacity(out.len());
    let mut forged = Vec::new();
    for o in &out {
        let Output::Bus(ProcessorMessage::SignApproval(a)) = o else {
            continue;
        };
        let messages = out.iter().find_map(|o| match o {
            Output::Persist(crate::processor::Persist::SignRecord { record, .. })
                if record.id == a.id =>
            {
                Some(record.messages.clone())
            }
            _ => None,
        });
        for v in participants.iter().filter(|v| *v != me) {
            let mut f = SignApproval {
                approver: v.clone(),
                ..a.clone()
            };
            f.signature = party.signer().sign(
                b"SignApproval",
                &postcard::to_stdvec(&f).unwrap_or_default(),
            );
            forged.push(Output::Bus(ProcessorMessage::SignApproval(f)));
        }
        let signers: Vec<ValidatorId> = participants
            .iter()
            .filter(|v| {
                *v == me
                    || participants
                        .iter()
                        .filter(|p| *p != me)
                        .take(t - 1)
                        .any(|p| p == *v)
            })
            .cloned()
            .collect();
        let request = SignRequest {
            coin: a.coin,
            id: a.id,
            attempt: 0,
            origin: me.clone(),
            vault: a.vault,
            signers,
            messages: messages.unwrap_or_default(),
            signature: Vec::new(),
        };
        forged.push(Output::Bus(ProcessorMessage::SignRequest(
            crate::signing::sign_request(party, request),
        )));
    }
    result.extend(out);
    result.extend(forged);
    result
}

/// Accuse the first participant whose (valid) share we received, once per attempt.
fn accuse_falsely(party: &Party, keygen: &mut KeyGen, out: &mut Vec<Output>) {
    let Some((l, share, Some(sig))) = keygen.shares().next() else {
        return;
    };
    let Some(v) = keygen.attempt().member_at(l).cloned() else {
        return;
    };
    let evidence = BlameEvidence::InvalidShare {
        accused: v,
        share: share.clone(),
        share_signature: sig.clone(),
        proof: None,
    };
    if keygen.mark_accused_falsely() {
        keygen.publish_blame(party, evidence, out);
    }
}

/// Entropy of "another polynomial", different per attempt.
fn other_entropy(context: &[u8; 32]) -> [u8; 32] {
    let mut e = [0u8; 32];
    for (i, b) in e.iter_mut().enumerate() {
        *b = (i as u8) ^ 0xa5;
    }
    e[..8].copy_from_slice(&context[..8]);
    e
}

fn garbage(seed: &[u8; 32], len: usize) -> Vec<u8> {
    (0..len.max(1))
        .map(|i| seed[i % 32].wrapping_mul(31).wrapping_add(i as u8))
        .collect()
}
