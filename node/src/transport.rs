//! TCP that dials every connection from a port of its own, never from the listening port.
//!
//! libp2p's TCP transport binds outgoing connections to the listening port by default (port
//! reuse, for NAT hole punching, which vaultd does not do). Between two validators that dial
//! each other that makes both dials the same TCP 4-tuple: when one side cannot accept inbound
//! connections (a firewall drops its SYNs), its peer's dial hangs in SYN_SENT for the kernel's
//! two minutes of retries, and every dial the firewalled validator makes meanwhile meets it as a
//! TCP simultaneous open, where both ends believe they dialled and the libp2p handshake fails.
//! Measured on the namespaced testnet: an outbound-only validator reached one peer only after
//! 140 s and the DKG voted it out. A fresh port per dial makes the two dials distinct.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use libp2p::{
    core::transport::{DialOpts, ListenerId, PortUse, Transport, TransportError, TransportEvent},
    tcp, Multiaddr,
};

/// [`tcp::tokio::Transport`] with [`PortUse::New`] for every dial.
pub struct FreshPortTcp(pub tcp::tokio::Transport);

impl Transport for FreshPortTcp {
    type Output = <tcp::tokio::Transport as Transport>::Output;
    type Error = <tcp::tokio::Transport as Transport>::Error;
    type ListenerUpgrade = <tcp::tokio::Transport as Transport>::ListenerUpgrade;
    type Dial = <tcp::tokio::Transport as Transport>::Dial;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        self.0.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.0.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        self.0.dial(
            addr,
            DialOpts {
                port_use: PortUse::New,
                ..opts
            },
        )
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        Pin::new(&mut self.0).poll(cx)
    }
}
