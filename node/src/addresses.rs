//! Which addresses a node tells its peers it can be reached on, and which addresses it takes
//! from what a peer says (identify). Sans-IO: plain functions over multiaddrs.
//!
//! * Never advertised: unspecified addresses (`0.0.0.0`, `::`, what `--listen` binds to, not an
//!   address anyone can dial), and loopback addresses when the node has any other address.
//!   A node that listens only on loopback (a local cluster) advertises its loopback
//!   addresses: only processes on its own host can reach them anyway.
//! * `--external-address` (the public address behind a NAT or a port forward) is advertised
//!   first, as given.
//! * Taken from a peer: at most [`MAX_PEER_ADDRS`] addresses; never unspecified ones; loopback
//!   ones only when the connection itself is on loopback (a peer on another host that says
//!   `127.0.0.1` names our own host, where it is not).

use libp2p::{multiaddr::Protocol, Multiaddr};

/// Addresses taken from one identify message of a peer (identify's own cap is its 4 KiB
/// message; a hostile validator would fill our address book with up to ~100).
pub const MAX_PEER_ADDRS: usize = 8;

/// How an address is reachable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    /// Not a dialable address (`0.0.0.0`, `::`).
    Unspecified,
    /// This host only.
    Loopback,
    /// Anything else (private networks included: a LAN or a testnet bridge is reachable).
    Routable,
}

fn scope(addr: &Multiaddr) -> Scope {
    for p in addr.iter() {
        match p {
            Protocol::Ip4(ip) if ip.is_unspecified() => return Scope::Unspecified,
            Protocol::Ip6(ip) if ip.is_unspecified() => return Scope::Unspecified,
            Protocol::Ip4(ip) if ip.is_loopback() => return Scope::Loopback,
            Protocol::Ip6(ip) if ip.is_loopback() => return Scope::Loopback,
            Protocol::Ip4(_) | Protocol::Ip6(_) => return Scope::Routable,
            // A DNS name resolves where it is dialled: `localhost` is loopback there too.
            Protocol::Dns(n) | Protocol::Dns4(n) | Protocol::Dns6(n) if n == "localhost" => {
                return Scope::Loopback
            }
            Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_) => return Scope::Routable,
            _ => {}
        }
    }
    Scope::Unspecified
}

/// Whether `addr` is a loopback address.
pub fn is_loopback(addr: &Multiaddr) -> bool {
    scope(addr) == Scope::Loopback
}

/// What the node advertises: the `external` addresses, then the `listening` ones (what the
/// swarm reported, i.e. each interface's address when bound to `0.0.0.0`) that peers can
/// dial, loopback ones only if nothing else is left. No duplicates; order kept.
pub fn advertised(external: &[Multiaddr], listening: &[Multiaddr]) -> Vec<Multiaddr> {
    let mut out: Vec<Multiaddr> = Vec::new();
    let push = |a: &Multiaddr, out: &mut Vec<Multiaddr>| {
        if !out.contains(a) {
            out.push(a.clone());
        }
    };
    for a in external.iter().chain(listening) {
        if scope(a) == Scope::Routable {
            push(a, &mut out);
        }
    }
    if out.is_empty() {
        for a in external.iter().chain(listening) {
            if scope(a) == Scope::Loopback {
                push(a, &mut out);
            }
        }
    }
    out
}

/// The addresses to keep of those a peer advertised, when our connection to it is on
/// `connection` (its remote address).
pub fn from_peer(connection: Option<&Multiaddr>, advertised: Vec<Multiaddr>) -> Vec<Multiaddr> {
    let local = connection.is_some_and(is_loopback);
    advertised
        .into_iter()
        .filter(|a| match scope(a) {
            Scope::Routable => true,
            Scope::Loopback => local,
            Scope::Unspecified => false,
        })
        .take(MAX_PEER_ADDRS)
        .collect()
}

/// A `--external-address` an operator gave, checked: dialable (not unspecified nor a bare
/// `/p2p/...`) and without the `/p2p/<id>` suffix, which identify adds itself.
pub fn parse_external(s: &str) -> Result<Multiaddr, String> {
    let mut addr: Multiaddr = s
        .parse()
        .map_err(|e| format!("--external-address {s}: {e}"))?;
    if let Some(Protocol::P2p(_)) = addr.iter().last() {
        addr.pop();
    }
    if scope(&addr) == Scope::Unspecified {
        return Err(format!(
            "--external-address {s}: not an address peers can dial (give the public IP or DNS name and port, e.g. /ip4/203.0.113.7/tcp/30555)"
        ));
    }
    if !addr.iter().any(|p| matches!(p, Protocol::Tcp(_))) {
        return Err(format!(
            "--external-address {s}: no /tcp/<port> (vaultd listens on TCP)"
        ));
    }
    Ok(addr)
}

/// Longest agent version shown for a peer.
pub const MAX_AGENT_LEN: usize = 64;

/// A peer's agent version as the status page shows it: printable ASCII only, at most
/// [`MAX_AGENT_LEN`] characters (a peer chooses the string; it must not break a terminal or a
/// log line).
pub fn agent_for_display(agent: &str) -> String {
    agent
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(MAX_AGENT_LEN)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_node_on_all_interfaces_advertises_its_external_and_interface_addresses_not_loopback() {
        let listening = [
            a("/ip4/127.0.0.1/tcp/30555"),
            a("/ip4/10.77.0.3/tcp/30555"),
            a("/ip6/::1/tcp/30555"),
        ];
        let external = [a("/ip4/203.0.113.7/tcp/30555")];
        assert_eq!(
            advertised(&external, &listening),
            [
                a("/ip4/203.0.113.7/tcp/30555"),
                a("/ip4/10.77.0.3/tcp/30555")
            ]
        );
        // Unspecified is never advertised, even alone.
        assert!(advertised(&[], &[a("/ip4/0.0.0.0/tcp/1")]).is_empty());
    }

    #[test]
    fn a_node_on_loopback_only_advertises_loopback() {
        let listening = [a("/ip4/127.0.0.1/tcp/40101")];
        assert_eq!(advertised(&[], &listening), listening);
        assert_eq!(
            advertised(&listening, &listening),
            listening,
            "no duplicates"
        );
    }

    #[test]
    fn loopback_from_a_peer_on_another_host_is_dropped_and_the_count_is_capped() {
        let said = vec![
            a("/ip4/127.0.0.1/tcp/1"),
            a("/ip4/0.0.0.0/tcp/1"),
            a("/ip4/10.77.0.4/tcp/1"),
            a("/dns4/validator.example.org/tcp/1"),
        ];
        let remote = a("/ip4/10.77.0.4/tcp/53211");
        assert_eq!(
            from_peer(Some(&remote), said.clone()),
            [
                a("/ip4/10.77.0.4/tcp/1"),
                a("/dns4/validator.example.org/tcp/1")
            ]
        );
        let local = a("/ip4/127.0.0.1/tcp/53211");
        assert_eq!(from_peer(Some(&local), said.clone()).len(), 3);
        assert_eq!(
            from_peer(None, said).len(),
            2,
            "unknown connection: not local"
        );
        let many: Vec<Multiaddr> = (1..=100)
            .map(|p| a(&format!("/ip4/10.0.0.1/tcp/{p}")))
            .collect();
        assert_eq!(from_peer(Some(&remote), many).len(), MAX_PEER_ADDRS);
    }

    #[test]
    fn an_external_address_must_be_dialable() {
        let id = "12D3KooWNthqQf1inHUQj9AJyFHu9Yx5Tta2CVLLARUPTvgaWh7q";
        assert_eq!(
            parse_external(&format!("/ip4/203.0.113.7/tcp/30555/p2p/{id}")).unwrap(),
            a("/ip4/203.0.113.7/tcp/30555")
        );
        assert!(parse_external("/dns4/v1.example.org/tcp/30555").is_ok());
        for bad in [
            "/ip4/0.0.0.0/tcp/30555",
            "/ip4/203.0.113.7/udp/1",
            "nonsense",
        ] {
            let e = parse_external(bad).unwrap_err();
            assert!(e.contains("--external-address"), "{e}");
        }
    }

    #[test]
    fn a_peers_agent_is_shown_printable_and_short() {
        assert_eq!(agent_for_display("vaultd/0.1.0"), "vaultd/0.1.0");
        assert_eq!(agent_for_display("x\u{1b}[2J\n"), "x?[2J?");
        assert_eq!(agent_for_display(&"a".repeat(1000)).len(), MAX_AGENT_LEN);
    }
}
