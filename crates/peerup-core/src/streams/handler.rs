//! The per-connection half of [`super::Behaviour`]: negotiates inbound streams against the
//! registered protocols and opens outbound streams on request.

use std::collections::VecDeque;
use std::task::{Context, Poll};

use futures::future::{Ready, ready};
use libp2p::core::upgrade::{InboundUpgrade, ReadyUpgrade, UpgradeInfo};
use libp2p::swarm::handler::{
    ConnectionEvent, ConnectionHandler, ConnectionHandlerEvent, DialUpgradeError,
    FullyNegotiatedInbound, FullyNegotiatedOutbound, StreamUpgradeError, SubstreamProtocol,
};
use libp2p::{PeerId, Stream, StreamProtocol};

use super::{IncomingStream, OpenReply, OpenRequest, OpenStreamError, PathInfo, StreamControl};

/// Inbound upgrade over the protocols registered at the moment a stream arrives.
#[derive(Debug, Clone)]
pub(crate) struct Accept(Vec<StreamProtocol>);

impl UpgradeInfo for Accept {
    type Info = StreamProtocol;
    type InfoIter = std::vec::IntoIter<StreamProtocol>;

    fn protocol_info(&self) -> Self::InfoIter {
        self.0.clone().into_iter()
    }
}

impl InboundUpgrade<Stream> for Accept {
    type Output = (Stream, StreamProtocol);
    type Error = std::convert::Infallible;
    type Future = Ready<Result<Self::Output, Self::Error>>;

    fn upgrade_inbound(self, stream: Stream, protocol: StreamProtocol) -> Self::Future {
        ready(Ok((stream, protocol)))
    }
}

pub(crate) struct Handler {
    peer: PeerId,
    path: PathInfo,
    control: StreamControl,
    requests: VecDeque<OpenRequest>,
    in_flight: usize,
}

impl Handler {
    pub(super) fn new(peer: PeerId, path: PathInfo, control: StreamControl) -> Self {
        Self { peer, path, control, requests: VecDeque::new(), in_flight: 0 }
    }
}

impl ConnectionHandler for Handler {
    type FromBehaviour = OpenRequest;
    type ToBehaviour = ();
    type InboundProtocol = Accept;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = (StreamProtocol, OpenReply);

    fn listen_protocol(&self) -> SubstreamProtocol<Accept, ()> {
        SubstreamProtocol::new(Accept(self.control.protocols(&self.peer)), ())
    }

    fn connection_keep_alive(&self) -> bool {
        !self.requests.is_empty() || self.in_flight > 0
    }

    fn on_behaviour_event(&mut self, req: OpenRequest) {
        self.requests.push_back(req);
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, Self::OutboundOpenInfo, ()>> {
        match self.requests.pop_front() {
            Some(req) => {
                self.in_flight += 1;
                let upgrade = ReadyUpgrade::new(req.protocol.clone());
                Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                    protocol: SubstreamProtocol::new(upgrade, (req.protocol, req.reply)),
                })
            }
            None => Poll::Pending,
        }
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<'_, Accept, Self::OutboundProtocol, (), Self::OutboundOpenInfo>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: (stream, protocol),
                ..
            }) => self.control.deliver(IncomingStream {
                peer: self.peer,
                protocol,
                stream,
                path: self.path.clone(),
            }),
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: stream,
                info: (_, reply),
            }) => {
                self.in_flight = self.in_flight.saturating_sub(1);
                let _ = reply.send(Ok((stream, self.path.clone())));
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError {
                info: (protocol, reply),
                error,
            }) => {
                self.in_flight = self.in_flight.saturating_sub(1);
                let err = match error {
                    StreamUpgradeError::NegotiationFailed => OpenStreamError::Unsupported(protocol),
                    StreamUpgradeError::Timeout => OpenStreamError::Io("timed out".into()),
                    StreamUpgradeError::Io(e) => OpenStreamError::Io(e.to_string()),
                    StreamUpgradeError::Apply(never) => match never {},
                };
                let _ = reply.send(Err(err));
            }
            _ => {}
        }
    }
}
