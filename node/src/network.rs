//! The libp2p side: one composed behaviour (allow-list, connection limits, gossipsub,
//! request-response, identify, Kademlia, ping) over TCP + Noise + Yamux, and the codec of the
//! direct (request-response) protocol.
//!
//! * General-partition announcements travel on gossipsub with signed messages (strict
//!   validation), one topic per network and coin: `/vaultd/{network}/{coin}/general/4`.
//! * Every Out-to-In forward of steps 7 to 18 travels on the request-response protocol
//!   `/vaultd/{network}/direct/4`, whose payloads are themselves sealed with snow.
//! * Only the validators of the network definition may keep a connection (allow-list, checked
//!   after the Noise handshake authenticates the PeerId).
//! * The trailing number is the wire version: 2 added `SignApproval` and the originator in
//!   signature shares (a request needs t approvals), so nodes of version 1 and 2 do not mix.

use std::{io, time::Duration};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{
    allow_block_list, connection_limits, gossipsub, identify, identity, kad, noise, ping,
    request_response::{self, ProtocolSupport},
    swarm::NetworkBehaviour,
    tcp, yamux, PeerId, StreamProtocol, Swarm, SwarmBuilder, Transport as _,
};
use protocol::{messages::MAX_MESSAGE_SIZE, Coin};

use crate::error::NodeError;

/// Largest response body.
pub const MAX_RESPONSE_SIZE: u64 = 4096;
/// Request-response timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The composed behaviour. Gating behaviours come first: the derive stops at the first denial.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Only validators.
    pub allow: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
    /// A few handshakes at once per remote IP (before the allow-list can know the peer).
    pub pending_per_ip: crate::ip_limits::Behaviour,
    /// Connection caps.
    pub limits: connection_limits::Behaviour,
    /// General partition.
    pub gossipsub: gossipsub::Behaviour,
    /// Direct forwards.
    pub direct: request_response::Behaviour<DirectCodec>,
    /// Address exchange.
    pub identify: identify::Behaviour,
    /// Peer discovery on a private protocol name.
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    /// Liveness.
    pub ping: ping::Behaviour,
}

/// What identify tells peers this node runs: `vaultd/<version>`.
pub fn agent_version() -> String {
    format!("vaultd/{}", env!("CARGO_PKG_VERSION"))
}

/// The gossip topic of a network's coin.
pub fn coin_topic(network: &str, coin: Coin) -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new(format!("/vaultd/{network}/{coin}/general/4"))
}

/// The direct protocol name.
pub fn direct_protocol(network: &str) -> Result<StreamProtocol, NodeError> {
    StreamProtocol::try_from_owned(format!("/vaultd/{network}/direct/4"))
        .map_err(|e| NodeError::Config(format!("protocol name: {e}")))
}

/// Request-response codec: raw envelope bytes, read to end of stream with a cap checked before
/// allocation grows past it. Decoding (and its errors) happens in the coordinator, which can
/// log and answer with the reason.
#[derive(Clone, Default)]
pub struct DirectCodec;

async fn read_capped<T: AsyncRead + Unpin + Send>(io: &mut T, cap: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    io.take(cap + 1).read_to_end(&mut buf).await?;
    if buf.is_empty() {
        // No envelope is empty. A stream closed before its first byte is a request or answer
        // the other side gave up on (its timeout fired under load, its connection went away):
        // an I/O failure, retried like one, not a malformed message from a hostile peer.
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "stream closed before any byte",
        ));
    }
    if buf.len() as u64 > cap {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message over {cap} bytes"),
        ));
    }
    Ok(buf)
}

impl request_response::Codec for DirectCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_capped(io, MAX_MESSAGE_SIZE as u64).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_capped(io, MAX_RESPONSE_SIZE).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&req).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&res).await?;
        io.close().await
    }
}

/// A gossip message's id: its author's peer id and its sequence number, as raw bytes.
/// gossipsub's default is the same pair as text (the author in base58, the number in decimal),
/// computed for every copy received. Every message is signed and checked before its id is
/// computed (`ValidationMode::Strict`), so both parts are present and the author is genuine.
/// The ids travel in IHAVE/IWANT: every node of a network must use this one.
fn gossip_message_id(message: &gossipsub::Message) -> gossipsub::MessageId {
    let mut id = message.source.map(|p| p.to_bytes()).unwrap_or_default();
    id.extend_from_slice(&message.sequence_number.unwrap_or_default().to_be_bytes());
    gossipsub::MessageId::new(&id)
}

/// Build the swarm for `network` with the validator's identity, allowing only `validators`.
/// Peers a Kademlia lookup asks at once: its `k` (20), every peer a lookup would ask.
const KAD_PARALLELISM: std::num::NonZeroUsize = std::num::NonZeroUsize::MIN.saturating_add(19);

pub fn build_swarm(
    keypair: identity::Keypair,
    network: &str,
    validators: &[PeerId],
) -> Result<Swarm<Behaviour>, NodeError> {
    build_swarm_with(keypair, network, validators, GossipTweak::default())
}

/// What a test's hostile swarm changes in its gossipsub (the attacker's own side only).
#[derive(Default)]
pub struct GossipTweak {
    /// Sign what it publishes with this key instead of the connection's identity.
    pub author: Option<identity::Keypair>,
    /// Keep what it received for this many heartbeats (gossipsub keeps 5) and advertise all of
    /// it (IHAVE) at every heartbeat to every peer outside its one-peer mesh: whoever forgot a
    /// message asks for it (IWANT) and gets the author's original signed frame again.
    pub advertise_for: Option<usize>,
}

/// [`build_swarm`] with a test's [`GossipTweak`] (test-only).
#[cfg(feature = "fault-injection")]
pub fn build_hostile_swarm(
    keypair: identity::Keypair,
    network: &str,
    validators: &[PeerId],
    tweak: GossipTweak,
) -> Result<Swarm<Behaviour>, NodeError> {
    build_swarm_with(keypair, network, validators, tweak)
}

fn build_swarm_with(
    keypair: identity::Keypair,
    network: &str,
    validators: &[PeerId],
    tweak: GossipTweak,
) -> Result<Swarm<Behaviour>, NodeError> {
    let direct = direct_protocol(network)?;
    let kad_protocol = StreamProtocol::try_from_owned(format!("/vaultd/{network}/kad/1"))
        .map_err(|e| NodeError::Config(format!("protocol name: {e}")))?;
    let mut gossip_config = gossipsub::ConfigBuilder::default();
    let (mesh_n, mesh_n_low, mesh_n_high, mesh_outbound_min) = match tweak.advertise_for {
        Some(h) => {
            gossip_config.history_length(h).history_gossip(h);
            (1, 1, 1, 0)
        }
        None => (4, 2, 8, 1),
    };
    let gossip_config = gossip_config
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .max_transmit_size(MAX_MESSAGE_SIZE + 16 * 1024)
        .mesh_n(mesh_n)
        .mesh_n_low(mesh_n_low)
        .mesh_n_high(mesh_n_high)
        .mesh_outbound_min(mesh_outbound_min)
        .heartbeat_interval(Duration::from_millis(700))
        .heartbeat_initial_delay(Duration::from_millis(100))
        .flood_publish(true)
        .message_id_fn(gossip_message_id)
        // gossipsub abandons a message that waited in a connection's send queue for 5 s
        // (published) or 1 s (forwarded): kept, since longer waits let the queues fill under
        // load (docs/BENCHMARKS.md). What is abandoned is counted (`SlowPeer`), and a validator
        // that misses an announcement asks for it again.
        .build()
        .map_err(|e| NodeError::Config(format!("gossipsub: {e}")))?;
    let mut swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        // TCP + Noise + Yamux as `with_tcp` builds it, dialling from fresh ports
        // (`transport.rs` says why).
        .with_other_transport(
            |key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                Ok(crate::transport::FreshPortTcp(tcp::tokio::Transport::new(
                    tcp::Config::default().nodelay(true),
                ))
                .upgrade(libp2p::core::upgrade::Version::V1Lazy)
                .authenticate(noise::Config::new(key)?)
                .multiplex(yamux::Config::default()))
            },
        )
        .map_err(|e| NodeError::Network(format!("transport: {e}")))?
        .with_behaviour(
            |key| -> Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
                let peer_id = key.public().to_peer_id();
                // A lookup asks `parallelism` peers at a time, and each ask needs a connection
                // first (TCP, Noise, Yamux: two to three round trips). With the default of 3, a
                // node that knows only the bootstrap met the other 15 of a 16-validator set in
                // five waves, about 2 s at 50 ms one way; asking every validator the bootstrap
                // named at once connects the set in one wave. A lookup still asks at most its 20
                // closest peers in all.
                let mut kad_config = kad::Config::new(kad_protocol);
                kad_config.set_parallelism(KAD_PARALLELISM);
                let mut kad = kad::Behaviour::with_config(
                    peer_id,
                    kad::store::MemoryStore::new(peer_id),
                    kad_config,
                );
                kad.set_mode(Some(kad::Mode::Server));
                let author = tweak.author.clone().unwrap_or_else(|| key.clone());
                let gossipsub = gossipsub::Behaviour::new(
                    gossipsub::MessageAuthenticity::Signed(author),
                    gossip_config,
                )?;
                // gossipsub's own metrics have no help text (promtool rejects them); libp2p's
                // metrics recorder (registered by the node) covers gossip events instead.
                Ok(Behaviour {
                    allow: allow_block_list::Behaviour::default(),
                    pending_per_ip: Default::default(),
                    limits: connection_limits::Behaviour::new(
                        connection_limits::ConnectionLimits::default()
                            .with_max_pending_incoming(Some(64))
                            .with_max_established_incoming(Some(512))
                            .with_max_established_per_peer(Some(2)),
                    ),
                    gossipsub,
                    direct: request_response::Behaviour::with_codec(
                        DirectCodec,
                        [(direct, ProtocolSupport::Full)],
                        request_response::Config::default()
                            .with_request_timeout(REQUEST_TIMEOUT)
                            .with_max_concurrent_streams(256),
                    ),
                    // Identify tells a peer only our advertised (external) addresses, chosen
                    // in `addresses.rs`, and names vaultd and its version; its own address book
                    // is off, so what a peer says reaches dialing only through that filter.
                    identify: identify::Behaviour::new(
                        identify::Config::new(
                            format!("/vaultd/{}/1", env!("CARGO_PKG_VERSION")),
                            key.public(),
                        )
                        .with_agent_version(agent_version())
                        .with_hide_listen_addrs(true)
                        .with_cache_size(0),
                    ),
                    kad,
                    ping: ping::Behaviour::new(
                        ping::Config::new().with_interval(Duration::from_secs(15)),
                    ),
                })
            },
        )
        .map_err(|e| NodeError::Network(format!("behaviour: {e}")))?
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(Duration::from_secs(3600))
                // Every request-response message opens a substream. With multistream-select's
                // V1 the dialer waits for the listener to confirm the protocol before sending:
                // one round trip per message before its first byte moves. V1Lazy sends the
                // message right behind its one proposed protocol (same wire format; a peer that
                // refuses the protocol fails the stream as before).
                .with_substream_upgrade_protocol_override(libp2p::core::upgrade::Version::V1Lazy)
        })
        .build();
    for v in validators {
        swarm.behaviour_mut().allow.allow_peer(*v);
    }
    Ok(swarm)
}

/// The libp2p identity of a validator from its coordinator secret.
pub fn keypair_from_secret(secret: &[u8; 32]) -> Result<identity::Keypair, NodeError> {
    let mut bytes = *secret;
    identity::Keypair::ed25519_from_bytes(&mut bytes)
        .map_err(|e| NodeError::Config(format!("coordinator key: {e}")))
}

/// The PeerId of a validator id (same bytes).
pub fn peer_id_of(v: &protocol::ValidatorId) -> Result<PeerId, NodeError> {
    PeerId::from_bytes(v.as_bytes()).map_err(|e| NodeError::Config(format!("peer id {v}: {e}")))
}

/// The validator id of a PeerId.
pub fn validator_of(p: &PeerId) -> Result<protocol::ValidatorId, NodeError> {
    protocol::ValidatorId::from_bytes(&p.to_bytes()).map_err(|e| NodeError::Config(e.to_string()))
}
