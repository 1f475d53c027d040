//! What a peer connection tells a machine: the one input type the torrent
//! machine ([`super::torrent`]) and the metadata fetch ([`super::magnet`])
//! share, so an adapter's connection task produces the same thing whichever
//! machine it serves (both machines' `Input` has a `Peer(PeerInput)` arm
//! and `From<PeerInput>`).

use bytes::Bytes;

pub use super::picker::PeerKey;

/// Something that happened on one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerInput {
    /// A connection to a peer is up (either direction). The adapter picks
    /// `peer`, unique among live connections.
    Connected {
        /// Connection handle.
        peer: PeerKey,
    },
    /// Bytes arrived from `peer` (the handshake included), as the socket
    /// gave them: any split of the stream is fine.
    Bytes {
        /// Connection handle.
        peer: PeerKey,
        /// The bytes.
        bytes: Bytes,
    },
    /// The connection closed, or a dial never came up (then `peer` was
    /// never [`PeerInput::Connected`], and the machine ignores it). Not
    /// needed after the machine itself asked for the disconnect.
    Closed {
        /// Connection handle.
        peer: PeerKey,
        /// Why, as the adapter saw it (machines treat every reason alike;
        /// the adapter's peer book tells them apart).
        reason: CloseReason,
    },
}

impl PeerInput {
    /// The connection this is about.
    pub fn peer(&self) -> PeerKey {
        match self {
            PeerInput::Connected { peer } | PeerInput::Bytes { peer, .. } | PeerInput::Closed { peer, .. } => *peer,
        }
    }
}

/// Why a connection closed, from the adapter's side of the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed its end (end of stream).
    Hangup,
    /// A read or a write failed (reset, broken pipe...).
    Io,
    /// The dial failed or timed out: there never was a connection.
    DialFailed,
    /// The peer sent no handshake within the adapter's deadline.
    HandshakeTimeout,
    /// The adapter closed it for its own reasons (pause, stop, a send
    /// queue over its hard limit).
    Local,
}
