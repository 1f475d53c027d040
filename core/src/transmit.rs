//! The one shape every machine uses to ask for bytes to be sent.

/// One whole message a machine wants sent to `to`.
///
/// Every machine in this crate emits its sends as `Output::Transmit(Transmit
/// { to, bytes })`; only the address type differs (a gossip peer address, a
/// BitTorrent connection key, a DNS client). The adapter or the simulator
/// delivers `bytes` as one message: one datagram, or one frame on a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit<To, B = Vec<u8>> {
    /// Where the bytes go.
    pub to: To,
    /// The message, already encoded (and sealed, where the protocol seals).
    pub bytes: B,
}
