//! Sign admission (`POST /sign`): which vault a request is for, whether this node can approve
//! it now, and its id (a hash of its content, `protocol::approvals::request_id`). An admitted
//! request goes to the vault's processor as this operator's approval; the processor persists
//! and announces it, then answers the API. The refusals are typed; `api.rs` maps each to its
//! HTTP status.

use protocol::{messages::SignatureRequested, Coin};
use tracing::info;

use super::{Action, Core, Io, Target};

/// Longest client reference accepted (bytes).
pub use protocol::approvals::MAX_REFERENCE;

/// A signature request from the HTTP endpoint.
#[derive(Clone, Debug)]
pub struct SignRequest {
    /// Coin.
    pub coin: Coin,
    /// Messages (already hex-decoded).
    pub messages: Vec<Vec<u8>>,
    /// Session of the vault to sign with (`None`: the current one).
    pub session: Option<u32>,
    /// The client's reference (for example the transaction's id), part of the id.
    pub reference: Option<String>,
}

/// An admitted request: the vault that signs it, and what its processor is handed.
#[derive(Clone, Debug)]
pub struct Admitted {
    /// The vault's DKG context.
    pub vault: [u8; 32],
    /// The approval for the processor (its id computed from the content).
    pub msg: SignatureRequested,
}

/// What the driver knows of one processor that could take a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetView {
    /// The processor.
    pub target: Target,
    /// Its vault's session.
    pub session: u32,
    /// Whether its vault can sign.
    pub can_sign: bool,
    /// Requests already waiting there.
    pub queued: usize,
    /// Its vault's DKG context, once computed.
    pub vault: Option<[u8; 32]>,
    /// Whether its queue has room for one more message.
    pub has_room: bool,
}

/// Why the node refused a signature request (`api.rs` maps each to its HTTP status).
#[derive(Debug, thiserror::Error)]
pub enum SignRefusal {
    /// The coin is not one of the network's.
    #[error("{0} has no vault in this network")]
    UnknownCoin(Coin),
    /// No vault of that session (current or retiring) here.
    #[error("no {coin} vault of session {session} here")]
    UnknownSession {
        /// Coin.
        coin: Coin,
        /// Session asked for.
        session: u32,
    },
    /// The vault's DKG has not finished.
    #[error("the {0} vault is not active yet")]
    NotActive(Coin),
    /// The messages are not what the coin's format signs.
    #[error("{0}")]
    InvalidMessages(String),
    /// Too many requests of this coin already wait.
    #[error("{queued} {coin} requests already wait; try again later")]
    Queued {
        /// Coin.
        coin: Coin,
        /// How many wait.
        queued: usize,
    },
    /// The coin's processor queue is full.
    #[error("the {0} processor is busy; try again later")]
    Busy(Coin),
    /// The coin's processor has stopped.
    #[error("the {0} processor has stopped")]
    Stopped(Coin),
    /// The operator's signing policy does not allow it (`--sign-policy`).
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyRule),
    /// The client's reference is too long or not printable.
    #[error("reference: {0}")]
    InvalidReference(String),
    /// The processor refused it (its reason).
    #[error("{0}")]
    Refused(String),
    /// The request could not be stored.
    #[error("storage: {0}")]
    Storage(#[from] storage::StorageError),
}

/// Decide on `request` of network `network` given the coin's processors (`targets`); the
/// processor to hand it to, and what.
pub fn admit(
    request: &SignRequest,
    targets: &[TargetView],
    coins: &[Coin],
    current_session: u32,
    max_queued: usize,
    network: &str,
) -> Result<(Target, Admitted), SignRefusal> {
    let coin = request.coin;
    if !coins.contains(&coin) {
        return Err(SignRefusal::UnknownCoin(coin));
    }
    if let Some(r) = &request.reference {
        if r.len() > MAX_REFERENCE {
            return Err(SignRefusal::InvalidReference(format!(
                "{} bytes; at most {MAX_REFERENCE}",
                r.len()
            )));
        }
        if r.chars().any(char::is_control) {
            return Err(SignRefusal::InvalidReference(
                "control characters are not allowed".into(),
            ));
        }
    }
    let session = request.session.unwrap_or(current_session);
    let view = targets.iter().find(|t| t.session == session);
    let view = match view {
        Some(v) => v,
        None if session == current_session => return Err(SignRefusal::Stopped(coin)),
        None => return Err(SignRefusal::UnknownSession { coin, session }),
    };
    if !view.can_sign {
        return Err(SignRefusal::NotActive(coin));
    }
    protocol::signing::check_messages(coin, &request.messages)
        .map_err(SignRefusal::InvalidMessages)?;
    if view.queued >= max_queued {
        return Err(SignRefusal::Queued {
            coin,
            queued: view.queued,
        });
    }
    let vault = view.vault.ok_or(SignRefusal::NotActive(coin))?;
    // Only the event loop sends on the topic: room now is room when the request is placed.
    if !view.has_room {
        return Err(SignRefusal::Busy(coin));
    }
    let id = protocol::approvals::request_id(
        network,
        coin,
        &vault,
        &request.messages,
        request.reference.as_deref(),
    );
    let msg = SignatureRequested {
        id,
        messages: request.messages.clone(),
        reference: request.reference.clone(),
    };
    Ok((view.target, Admitted { vault, msg }))
}

/// The answer to a request, given what its placement became: a processor that has stopped or
/// is busy has not taken it (the stored record is resumed at the next start).
pub fn finish(
    result: Result<[u8; 32], SignRefusal>,
    placed: &super::Placements,
) -> Result<[u8; 32], SignRefusal> {
    let id = result?;
    if let Some(coin) = placed.gone() {
        return Err(SignRefusal::Stopped(coin));
    }
    if let Some(coin) = placed.busy() {
        return Err(SignRefusal::Busy(coin));
    }
    Ok(id)
}

impl Core {
    /// `POST /sign`: an admitted request goes to its vault's processor as this operator's
    /// approval; the processor stores it (synced) before it answers with the id, so an
    /// approval the API confirmed is never lost, even across a crash.
    pub(super) fn on_sign<I: Io>(
        &mut self,
        request: SignRequest,
        targets: Vec<TargetView>,
        reply: I::SignReply,
        now: std::time::Instant,
        out: &mut Vec<Action<I>>,
    ) {
        let admitted = admit(
            &request,
            &targets,
            &self.def.coins,
            self.def.session,
            self.max_queued,
            &self.def.name,
        );
        // The policy counts only what would otherwise be accepted.
        let admitted = admitted.and_then(|a| {
            self.policy
                .admit(request.coin, request.messages.len(), now)
                .map_err(|rule| {
                    self.metrics.policy_refused(request.coin, rule.label());
                    tracing::warn!(coin = %request.coin, rule = rule.label(), reason = %rule, "refused a signature request by policy");
                    SignRefusal::Policy(rule)
                })?;
            Ok(a)
        });
        let (target, admitted) = match admitted {
            Ok(a) => a,
            Err(refusal) => {
                if matches!(refusal, SignRefusal::Busy(_)) {
                    self.metrics.bus_full(request.coin);
                }
                out.push(Action::SignReply {
                    reply,
                    result: Err(refusal),
                });
                return;
            }
        };
        let coin = request.coin;
        info!(%coin, request = %hex::encode(admitted.msg.id), "signature requested");
        out.push(Action::Approve {
            coin,
            target,
            msg: admitted.msg,
            reply,
        });
    }
}
