//! Swarm events become core events: connections, gossip, requests and the answers to ours
//! (matched to the core's tokens), identify and ping.

use libp2p::{gossipsub, identify, kad, metrics::Recorder, request_response, swarm::SwarmEvent};
use tracing::{debug, info};

use super::{Coordinator, Libp2p};
use crate::{core::Event, error::NodeError, network::BehaviourEvent};

impl Coordinator {
    pub(super) fn on_swarm_event(
        &mut self,
        ev: SwarmEvent<BehaviourEvent>,
    ) -> Result<(), NodeError> {
        self.libp2p_metrics.record(&ev);
        let event = match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "listening");
                self.listen_addrs.push(address);
                self.advertise();
                if let Some(f) = self.on_listening.take() {
                    f(&self.listen_addrs);
                }
                return Ok(());
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                info!(%address, "no longer listening");
                self.listen_addrs.retain(|a| a != &address);
                self.advertise();
                return Ok(());
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                connection_id,
                endpoint,
                ..
            } => Event::Connected {
                peer: peer_id,
                connection: connection_id,
                addr: endpoint.get_remote_address().clone(),
                first: num_established.get() == 1,
            },
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                cause,
                ..
            } => {
                info!(peer = %peer_id, cause = ?cause, "disconnected");
                Event::Disconnected { peer: peer_id }
            }
            SwarmEvent::IncomingConnectionError {
                error,
                send_back_addr,
                ..
            } => {
                debug!(addr = %send_back_addr, error = %error, "incoming connection failed");
                return Ok(());
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(peer = ?peer_id, error = %error, "outgoing connection failed");
                return Ok(());
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(ev)) => {
                self.libp2p_metrics.record(&ev);
                match ev {
                    gossipsub::Event::Message {
                        propagation_source,
                        message_id,
                        message,
                    } => Event::Gossip {
                        source: propagation_source,
                        id: message_id,
                        author: message.source,
                        seq: message.sequence_number,
                        topic: message.topic,
                        data: message.data,
                    },
                    gossipsub::Event::Subscribed { peer_id, topic } => Event::Subscribed {
                        peer: peer_id,
                        topic,
                    },
                    gossipsub::Event::SlowPeer {
                        peer_id,
                        failed_messages,
                    } => Event::SlowPeer {
                        peer: peer_id,
                        dropped: failed_messages.priority + failed_messages.non_priority,
                    },
                    _ => return Ok(()),
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Direct(ev)) => match self.on_direct_event(ev) {
                Some(event) => event,
                None => return Ok(()),
            },
            SwarmEvent::Behaviour(BehaviourEvent::Identify(ev)) => {
                self.libp2p_metrics.record(&ev);
                match ev {
                    identify::Event::Received { peer_id, info, .. } => Event::Identified {
                        peer: peer_id,
                        addrs: info.listen_addrs,
                        agent: info.agent_version,
                    },
                    _ => return Ok(()),
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(ev)) => {
                self.libp2p_metrics.record(&ev);
                match ev {
                    // Our lookup of the validators closest to us answered: the ones we miss
                    // are dialled now rather than at their next backoff.
                    kad::Event::OutboundQueryProgressed {
                        result: kad::QueryResult::GetClosestPeers(Ok(ok)),
                        ..
                    } => Event::Discovered {
                        peers: ok.peers.into_iter().map(|p| p.peer_id).collect(),
                    },
                    _ => return Ok(()),
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ev)) => {
                self.libp2p_metrics.record(&ev);
                if let Err(e) = &ev.result {
                    debug!(peer = %ev.peer, error = %e, "ping failed; closing connection");
                }
                Event::Ping {
                    peer: ev.peer,
                    connection: ev.connection,
                    rtt: ev.result.ok(),
                }
            }
            _ => return Ok(()),
        };
        self.event(event)
    }

    /// Tell identify what to advertise now: the external addresses and the listen addresses
    /// peers can dial (`addresses::advertised`).
    pub(super) fn advertise(&mut self) {
        let now = crate::addresses::advertised(&self.external_addrs, &self.listen_addrs);
        for gone in self.advertised.iter().filter(|a| !now.contains(a)) {
            self.swarm.remove_external_address(gone);
        }
        for new in now.iter().filter(|a| !self.advertised.contains(a)) {
            info!(address = %new, "advertising");
            self.swarm.add_external_address(new.clone());
        }
        self.advertised = now;
    }

    fn on_direct_event(
        &mut self,
        ev: request_response::Event<Vec<u8>, Vec<u8>>,
    ) -> Option<Event<Libp2p>> {
        match ev {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => Some(Event::Request {
                    peer,
                    bytes: request,
                    channel,
                }),
                request_response::Message::Response {
                    request_id,
                    response,
                } => Some(Event::Response {
                    token: self.in_flight.remove(&request_id)?,
                    peer,
                    answer: Ok(response),
                }),
            },
            request_response::Event::OutboundFailure {
                request_id,
                error,
                peer,
                ..
            } => Some(Event::Response {
                token: self.in_flight.remove(&request_id)?,
                peer,
                answer: Err(error.to_string()),
            }),
            request_response::Event::InboundFailure { peer, error, .. } => {
                debug!(%peer, error = %error, "inbound request failed");
                None
            }
            request_response::Event::ResponseSent { .. } => None,
        }
    }
}
