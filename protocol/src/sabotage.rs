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
    /// Most of the above at once, for the one-hostile-validator run: on the definition's last
    /// coin it confirms a wrong group key (and is voted out of that vault); on the others it
    /// withholds its commitments from one participant and, with each approval of its own,
    /// forges the others' approvals and the request's signer set, announces a forged result
    /// for the request, and announces [`FLOOD`] signed requests nobody approved.
    Hostile,
}

/// Requests a [`Sabotage::Hostile`] validator announces with each approval of its own.
pub const FLOOD: usize = 50;

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
            "hostile" => Ok(Sabotage::Hostile),
            other => Err(format!(
                "unknown sabotage {other:?} (equivocate, bad-share, false-accusation, garbage, forge-approvals, wrong-group-key, withhold-commitment, withhold-share, hostile)"
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
        if how == Sabotage::Hostile {
            let (party, _) = self.dkg_parts();
            if party.def().coins.last() == Some(&party.coin()) {
                return self.sabotage(Sabotage::WrongGroupKey, out);
            }
            let out = self.sabotage(Sabotage::WithholdCommitment, out);
            let out = self.sabotage(Sabotage::ForgeApprovals, out);
            let (party, _) = self.dkg_parts();
            return forge_results_and_flood(party, out);
        }
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
                    if let Some(share) = shares.ok().and_then(|(_, s)| s.get(&l?).cloned()) {
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

/// Next to each approval of ours: a result for its request over other messages, and
/// [`FLOOD`] signed requests (valid ids, our own signature) that nobody approved.
fn forge_results_and_flood(party: &Party, out: Vec<Output>) -> Vec<Output> {
    use crate::messages::{SignRequest, SignatureAvailable};
    let me = party.me();
    let t = usize::from(party.def().threshold);
    let mut extra = Vec::new();
    for o in &out {
        let Output::Bus(ProcessorMessage::SignApproval(a)) = o else {
            continue;
        };
        if a.approver != *me {
            continue; // one of our own forgeries
        }
        extra.push(Output::Bus(ProcessorMessage::SignatureAvailable(
            SignatureAvailable {
                coin: a.coin,
                id: a.id,
                origin: me.clone(),
                attempt: 0,
                vault: a.vault,
                signers: vec![me.clone()],
                messages: vec![vec![0x66; 32]],
                signatures: vec![vec![7; 64]],
                reference: None,
            },
        )));
        let signers: Vec<ValidatorId> = party.def().validators.iter().take(t).cloned().collect();
        for k in 0..FLOOD {
            let mut digest = a.id;
            digest[24..].copy_from_slice(&(k as u64).to_be_bytes());
            let messages = vec![digest.to_vec()];
            let id =
                crate::approvals::request_id(&party.def().name, a.coin, &a.vault, &messages, None);
            let request = SignRequest {
                coin: a.coin,
                id,
                attempt: 0,
                origin: me.clone(),
                vault: a.vault,
                signers: signers.clone(),
                messages,
                signature: Vec::new(),
            };
            extra.push(Output::Bus(ProcessorMessage::SignRequest(
                crate::signing::sign_request(party, request),
            )));
        }
    }
    let mut result = out;
    result.extend(extra);
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
