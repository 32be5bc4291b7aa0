//! At most [`MAX_PENDING_PER_IP`] incoming connections still in their handshake per remote IP.
//! The allow-list can only act once the Noise handshake has told who the peer is, so before
//! that a stranger holding connections open in slow handshakes could take every one of the
//! node's pending-incoming slots (64, each held until the 10 s connection timeout) and keep
//! validators from connecting. Per IP it gets a few; the rest are refused at once. Loopback is
//! exempt: local clusters run every validator on 127.0.0.1.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::IpAddr,
    task::{Context, Poll},
};

use libp2p::{
    core::{transport::PortUse, Endpoint},
    multiaddr::Protocol,
    swarm::{
        behaviour::ListenFailure, dummy, ConnectionDenied, ConnectionId, FromSwarm,
        NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
    },
    Multiaddr, PeerId,
};

/// Incoming connections in their handshake per remote IP.
pub const MAX_PENDING_PER_IP: usize = 8;

/// Why a connection was refused.
#[derive(Debug)]
pub struct TooManyPending(pub IpAddr);

impl std::fmt::Display for TooManyPending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{MAX_PENDING_PER_IP} connections from {} already in their handshake",
            self.0
        )
    }
}

impl std::error::Error for TooManyPending {}

/// The behaviour (no protocol of its own).
#[derive(Default)]
pub struct Behaviour {
    per_ip: HashMap<IpAddr, usize>,
    pending: HashMap<ConnectionId, IpAddr>,
}

fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

impl Behaviour {
    fn done(&mut self, connection: &ConnectionId) {
        if let Some(ip) = self.pending.remove(connection) {
            if let Some(n) = self.per_ip.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_ip.remove(&ip);
                }
            }
        }
    }

    /// Connections in their handshake now.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(ip) = ip_of(remote).filter(|ip| !ip.is_loopback()) else {
            return Ok(());
        };
        let n = self.per_ip.entry(ip).or_default();
        if *n >= MAX_PENDING_PER_IP {
            return Err(ConnectionDenied::new(TooManyPending(ip)));
        }
        *n += 1;
        self.pending.insert(connection_id, ip);
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _peer: PeerId,
        _local: &Multiaddr,
        _remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.done(&connection_id);
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        if let FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) = event {
            self.done(&connection_id);
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_pending_handshakes_per_ip_then_refused_and_freed_as_they_end() {
        let mut b = Behaviour::default();
        let local: Multiaddr = "/ip4/10.0.0.1/tcp/4000".parse().unwrap();
        let from = |ip: &str| -> Multiaddr { format!("/ip4/{ip}/tcp/5000").parse().unwrap() };
        let ids: Vec<ConnectionId> = (0..=MAX_PENDING_PER_IP)
            .map(ConnectionId::new_unchecked)
            .collect();
        for id in &ids[..MAX_PENDING_PER_IP] {
            assert!(b
                .handle_pending_inbound_connection(*id, &local, &from("203.0.113.7"))
                .is_ok());
        }
        let refused = b
            .handle_pending_inbound_connection(
                ids[MAX_PENDING_PER_IP],
                &local,
                &from("203.0.113.7"),
            )
            .unwrap_err();
        assert!(
            format!("{refused:?}").contains("203.0.113.7"),
            "{refused:?}"
        );
        // Another address is not affected, nor is loopback.
        let other = ConnectionId::new_unchecked(1 << 40);
        assert!(b
            .handle_pending_inbound_connection(other, &local, &from("198.51.100.2"))
            .is_ok());
        for k in 0..100 {
            assert!(b
                .handle_pending_inbound_connection(
                    ConnectionId::new_unchecked((1 << 41) + k),
                    &local,
                    &from("127.0.0.1")
                )
                .is_ok());
        }
        // One handshake ends (established or failed): room for one more from that address.
        let _ = b.handle_established_inbound_connection(
            ids[0],
            PeerId::random(),
            &local,
            &from("203.0.113.7"),
        );
        assert!(b
            .handle_pending_inbound_connection(
                ids[MAX_PENDING_PER_IP],
                &local,
                &from("203.0.113.7")
            )
            .is_ok());
        assert_eq!(b.pending(), MAX_PENDING_PER_IP + 1);
    }
}
