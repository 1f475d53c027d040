//! Message Stream Encryption on a live connection (`--encryption`): runs
//! the core handshake machine ([`rumor_core::bt::mse`]) over a fresh
//! stream, then hands back a stream whose halves decrypt what is read and
//! encrypt what is written, so the peer layer above reads and writes
//! BitTorrent messages as if the connection were plain.
//!
//! The policy:
//!
//! * `prefer` (the default): an incoming connection may be plain or MSE
//!   (the first bytes tell: a plain handshake starts with 19 and
//!   `BitTorrent protocol`); MSE selects plaintext when the peer offers
//!   both (libtorrent's default: the handshake is obfuscated, the payload
//!   costs no cipher, about half the throughput on loopback) and RC4 when
//!   it offers only RC4; a dial offers both and, if the peer does not
//!   complete the handshake, dials again in plain;
//! * `require`: RC4 only, both ways; plain connections are refused;
//! * `off`: plain only; an MSE handshake is not recognised (the peer layer
//!   refuses it as `NotBitTorrent`), and no dial offers it.
//!
//! Limits: the whole handshake within [`super::peer_conn::HANDSHAKE_TIMEOUT`];
//! reads of [`READ_CHUNK`] bytes while it runs; a write half holds at most
//! one [`WRITE_CHUNK`] of ciphertext that the socket has not taken.

use super::peer_conn::{DIAL_TIMEOUT, HANDSHAKE_TIMEOUT};
use crate::rt::{self, ReadHalf, TcpStream, WriteHalf};
use futures::io::{AsyncRead, AsyncWrite};
use futures::{AsyncReadExt, AsyncWriteExt};
use rumor_core::bt::conn::CloseReason;
use rumor_core::bt::metainfo::InfoHash;
use rumor_core::bt::mse::{Config, Handshake, Keystream, Method, Methods, Outcome, Output, Secret};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

/// Bytes read at once while the handshake runs (more than any step but
/// the last; what is read past the handshake is kept, not lost).
pub const READ_CHUNK: usize = 4096;
/// Most plaintext a write half encrypts at once.
pub const WRITE_CHUNK: usize = 64 * 1024;

/// `--encryption`: which connections to take and make.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Encryption {
    /// Accept plain and encrypted; dial encrypted, then plain if that fails.
    #[default]
    Prefer,
    /// Only RC4-encrypted connections, both ways.
    Require,
    /// Only plain connections.
    Off,
}

/// What a connection task needs to negotiate: the policy and the torrent.
#[derive(Clone, Copy, Debug)]
pub struct Crypto {
    /// The policy.
    pub policy: Encryption,
    /// The torrent dialed for, and the only one served to incoming MSE.
    pub info_hash: InfoHash,
}

impl Crypto {
    /// Plain connections only (for a peer layer told nothing else).
    pub fn off() -> Crypto {
        Crypto { policy: Encryption::Off, info_hash: InfoHash::default() }
    }

    fn config(&self) -> Config {
        match self.policy {
            Encryption::Prefer => Config { methods: Methods::BOTH, allow_plain: true, prefer_rc4: false },
            Encryption::Require => Config { methods: Methods::RC4, allow_plain: false, prefer_rc4: true },
            Encryption::Off => Config { methods: Methods::NONE, allow_plain: true, prefer_rc4: false },
        }
    }
}

/// Fresh randomness for one handshake: the private key from the OS.
fn secret() -> Secret {
    Secret { private_key: super::entropy::secret_key(), pad_seed: super::entropy::seed() }
}

/// Negotiates on a connection just opened: `dialed` is the address we
/// dialed (`None` for one we accepted). The stream to use from now on, or
/// why the connection is over (a dial that could not be completed in any
/// allowed way reports [`CloseReason::DialFailed`]).
pub async fn negotiate(
    stream: TcpStream,
    dialed: Option<SocketAddr>,
    crypto: Crypto,
) -> Result<TcpStream, CloseReason> {
    if crypto.policy == Encryption::Off {
        return Ok(stream);
    }
    let Some(addr) = dialed else {
        let hs = Handshake::responder(crypto.config(), &[crypto.info_hash], secret());
        return match handshake(stream, hs).await {
            Ok(s) => Ok(s),
            Err(why) => {
                tracing::debug!("incoming encryption handshake: {why}");
                Err(CloseReason::HandshakeTimeout)
            }
        };
    };
    let hs = Handshake::initiator(crypto.config(), crypto.info_hash, secret(), Vec::new());
    match handshake(stream, hs).await {
        Ok(s) => Ok(s),
        Err(why) if crypto.policy == Encryption::Prefer => {
            // Many peers speak only plain BitTorrent and close on our key:
            // the same peer, dialed again, plain.
            tracing::debug!("peer {addr}: encryption handshake failed ({why}); dialing again in plain");
            match rt::timeout(DIAL_TIMEOUT, rt::connect(addr)).await {
                Ok(Ok(s)) => Ok(s),
                _ => Err(CloseReason::DialFailed),
            }
        }
        Err(why) => {
            tracing::debug!("peer {addr}: encryption handshake failed ({why}); encryption is required");
            Err(CloseReason::DialFailed)
        }
    }
}

/// Length of a plain handshake up to the end of its infohash: pstrlen,
/// "BitTorrent protocol", 8 reserved bytes, 20 of infohash.
const PLAIN_THROUGH_INFO_HASH: usize = 48;

/// Takes an incoming connection on a listener shared by many torrents
/// (the node's session): runs the responder side of the handshake with
/// every torrent in `served` as a possible `SKEY` (`prefer`: plain or MSE,
/// `require`: MSE with RC4 only, `off`: plain only), and for a plain
/// connection reads on to its infohash. Hands back the stream, from which
/// the peer's BitTorrent handshake is read again from its first byte (so
/// the torrent's peer layer sees a plain connection), and the torrent it
/// is for; or why it was refused. All within [`HANDSHAKE_TIMEOUT`].
pub async fn accept_routed(
    stream: TcpStream,
    served: &[InfoHash],
    policy: Encryption,
) -> Result<(TcpStream, InfoHash), String> {
    let crypto = Crypto { policy, info_hash: InfoHash::default() };
    let route = async move {
        let mut stream = stream;
        let outcome = if policy == Encryption::Off {
            Outcome { method: Method::None, info_hash: None, send: None, receive: None, leftover: Vec::new() }
        } else {
            drive(&mut stream, Handshake::responder(crypto.config(), served, secret())).await?
        };
        if let Some(ih) = outcome.info_hash {
            return Ok((wrap(stream, outcome), ih));
        }
        // Plain: the infohash is in the handshake's first 48 bytes.
        let mut head = outcome.leftover;
        let mut buf = [0u8; PLAIN_THROUGH_INFO_HASH];
        while head.len() < PLAIN_THROUGH_INFO_HASH {
            let n = stream.read(&mut buf[..PLAIN_THROUGH_INFO_HASH - head.len()]).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the peer closed the connection".into());
            }
            head.extend_from_slice(&buf[..n]);
        }
        if !head.starts_with(b"\x13BitTorrent protocol") {
            return Err("not a BitTorrent handshake".into());
        }
        let ih = InfoHash(head[28..48].try_into().expect("48 bytes read"));
        if !served.contains(&ih) {
            return Err(format!("a torrent we do not have ({ih})"));
        }
        let (read, write) = stream.into_split();
        let read: ReadHalf = Box::new(CipherRead { inner: read, prefix: head, at: 0, keystream: None });
        Ok((TcpStream { read, write }, ih))
    };
    match rt::timeout(HANDSHAKE_TIMEOUT, route).await {
        Ok(r) => r,
        Err(_) => Err("timed out".into()),
    }
}

/// Runs `hs` over `stream` within the handshake deadline, then wraps it.
async fn handshake(mut stream: TcpStream, hs: Handshake) -> Result<TcpStream, String> {
    match rt::timeout(HANDSHAKE_TIMEOUT, drive(&mut stream, hs)).await {
        Ok(Ok(outcome)) => Ok(wrap(stream, outcome)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("timed out".into()),
    }
}

async fn drive(stream: &mut TcpStream, mut hs: Handshake) -> Result<Outcome, String> {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        loop {
            match hs.poll_output() {
                Output::Transmit(b) => stream.write_all(&b).await.map_err(|e| e.to_string())?,
                Output::Done(o) => return Ok(o),
                Output::Failed(e) => return Err(e.to_string()),
                Output::Pending => break,
            }
        }
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the peer closed the connection".into());
        }
        hs.receive(&buf[..n]);
    }
}

/// The stream carrying the outcome: payload already received comes first,
/// and with RC4 both halves go through the keystreams.
fn wrap(stream: TcpStream, o: Outcome) -> TcpStream {
    if o.method != Method::None {
        tracing::debug!("encryption handshake done: {:?}", o.method);
    }
    let (read, write) = stream.into_split();
    let read: ReadHalf = if o.leftover.is_empty() && o.receive.is_none() {
        read
    } else {
        Box::new(CipherRead { inner: read, prefix: o.leftover, at: 0, keystream: o.receive })
    };
    let write: WriteHalf = match o.send {
        None => write,
        Some(k) => Box::new(CipherWrite { inner: write, keystream: k, pending: Vec::new(), at: 0, accepted: 0 }),
    };
    TcpStream { read, write }
}

/// A read half that first yields `prefix`, then decrypts what it reads.
struct CipherRead {
    inner: ReadHalf,
    prefix: Vec<u8>,
    at: usize,
    keystream: Option<Keystream>,
}

impl AsyncRead for CipherRead {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.at < this.prefix.len() {
            let n = buf.len().min(this.prefix.len() - this.at);
            buf[..n].copy_from_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(n));
        }
        let n = ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if let Some(k) = &mut this.keystream {
            k.apply(&mut buf[..n]);
        }
        Poll::Ready(Ok(n))
    }

    fn poll_read_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.at < self.prefix.len() {
            // The prefix goes first, into the first buffer with room (a
            // short read: the caller reads again).
            return match bufs.iter_mut().find(|b| !b.is_empty()) {
                Some(b) => self.poll_read(cx, b),
                None => Poll::Ready(Ok(0)),
            };
        }
        let this = &mut *self;
        let n = ready!(Pin::new(&mut this.inner).poll_read_vectored(cx, bufs))?;
        if let Some(k) = &mut this.keystream {
            // The keystream runs over the buffers in order, as the bytes
            // came.
            let mut left = n;
            for b in bufs.iter_mut() {
                let m = left.min(b.len());
                k.apply(&mut b[..m]);
                left -= m;
                if left == 0 {
                    break;
                }
            }
        }
        Poll::Ready(Ok(n))
    }
}

/// A write half that encrypts. RC4 is a stream: once bytes are encrypted
/// they must reach the socket, so a write reports them taken only when the
/// socket took all their ciphertext. After `Pending` the caller calls
/// again with the same bytes (as `write_all` does, like any TLS stream),
/// and gets the count it was promised.
struct CipherWrite {
    inner: WriteHalf,
    keystream: Keystream,
    /// Ciphertext not yet taken by the socket; `pending[..at]` was.
    pending: Vec<u8>,
    at: usize,
    /// How many of the caller's bytes were encrypted into `pending` and
    /// not yet reported written (0: take new bytes).
    accepted: usize,
}

impl CipherWrite {
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.at < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.at += n;
        }
        self.pending.clear();
        self.at = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for CipherWrite {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.accepted == 0 {
            if buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            let n = buf.len().min(WRITE_CHUNK);
            this.pending.extend_from_slice(&buf[..n]);
            this.keystream.apply(&mut this.pending);
            this.accepted = n;
        }
        ready!(this.poll_pending(cx))?;
        Poll::Ready(Ok(std::mem::take(&mut this.accepted)))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumor_core::bt::mse::Output;
    use std::sync::{Arc, Mutex};

    /// Two matching keystreams: what an initiator encrypts with and what
    /// its responder decrypts with, from a real handshake in memory.
    fn keystreams() -> (Keystream, Keystream) {
        let config = Config { methods: Methods::RC4, allow_plain: false, prefer_rc4: true };
        let ih = InfoHash([3; 20]);
        let mut a = Handshake::initiator(config, ih, Secret { private_key: [1; 20], pad_seed: 1 }, Vec::new());
        let mut b = Handshake::responder(config, &[ih], Secret { private_key: [2; 20], pad_seed: 2 });
        fn pump(from: &mut Handshake, to: &mut Handshake, done: &mut Option<rumor_core::bt::mse::Outcome>) {
            loop {
                match from.poll_output() {
                    Output::Transmit(bytes) => to.receive(&bytes),
                    Output::Done(o) => *done = Some(o),
                    Output::Failed(e) => panic!("{e}"),
                    Output::Pending => return,
                }
            }
        }
        let (mut oa, mut ob) = (None, None);
        for _ in 0..10 {
            pump(&mut a, &mut b, &mut oa);
            pump(&mut b, &mut a, &mut ob);
        }
        let (oa, ob) = (oa.expect("initiator done"), ob.expect("responder done"));
        (oa.send.expect("rc4"), ob.receive.expect("rc4"))
    }

    /// A socket that takes at most `max` bytes a call, and every third
    /// call is not ready.
    struct Choppy {
        got: Arc<Mutex<Vec<u8>>>,
        max: usize,
        calls: usize,
    }

    impl AsyncWrite for Choppy {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            self.calls += 1;
            if self.calls % 3 == 2 {
                return Poll::Pending;
            }
            let n = buf.len().min(self.max);
            self.got.lock().unwrap().extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncRead for Choppy {
        fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
            self.calls += 1;
            if self.calls % 3 == 2 {
                return Poll::Pending;
            }
            let mut got = self.got.lock().unwrap();
            let n = buf.len().min(self.max).min(got.len());
            buf[..n].copy_from_slice(&got[..n]);
            got.drain(..n);
            Poll::Ready(Ok(n))
        }
        fn poll_read_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &mut [io::IoSliceMut<'_>],
        ) -> Poll<io::Result<usize>> {
            self.calls += 1;
            if self.calls % 3 == 2 {
                return Poll::Pending;
            }
            // Across the buffers, as readv does.
            let mut got = self.got.lock().unwrap();
            let mut n = 0;
            for b in bufs.iter_mut() {
                let m = b.len().min(self.max - n).min(got.len());
                b[..m].copy_from_slice(&got[..m]);
                got.drain(..m);
                n += m;
            }
            Poll::Ready(Ok(n))
        }
    }

    fn messages() -> Vec<Vec<u8>> {
        (0..50u32).map(|i| (0..(i * 37 % 300) as u8).map(|b| b ^ i as u8).collect()).collect()
    }

    #[test]
    fn the_writer_puts_every_byte_on_the_wire_once_whatever_the_socket_takes() {
        let (send, mut receive) = keystreams();
        let wire = Arc::new(Mutex::new(Vec::new()));
        let socket = Choppy { got: wire.clone(), max: 7, calls: 0 };
        let mut w = CipherWrite { inner: Box::new(socket), keystream: send, pending: Vec::new(), at: 0, accepted: 0 };
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut plain = Vec::new();
        for (i, m) in messages().iter().enumerate() {
            // As write_all does: after Pending, the same bytes again.
            let mut at = 0;
            while at < m.len() {
                match Pin::new(&mut w).poll_write(&mut cx, &m[at..]) {
                    Poll::Ready(Ok(n)) => at += n,
                    Poll::Ready(Err(e)) => panic!("{e}"),
                    Poll::Pending => continue,
                }
            }
            if i % 5 == 0 {
                while Pin::new(&mut w).poll_flush(&mut cx).is_pending() {}
            }
            plain.extend_from_slice(m);
        }
        let mut wire = wire.lock().unwrap().clone();
        assert_eq!(wire.len(), plain.len(), "every byte on the wire, once");
        receive.apply(&mut wire);
        assert_eq!(wire, plain);
    }

    #[test]
    fn the_reader_yields_the_leftover_then_decrypts_the_rest() {
        let (mut send, receive) = keystreams();
        let plain: Vec<u8> = messages().concat();
        let mut cipher = plain.clone();
        send.apply(&mut cipher);
        let socket = Choppy { got: Arc::new(Mutex::new(cipher)), max: 11, calls: 0 };
        let leftover = b"already decrypted".to_vec();
        let mut r = CipherRead { inner: Box::new(socket), prefix: leftover.clone(), at: 0, keystream: Some(receive) };
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut got = Vec::new();
        let mut buf = [0u8; 5];
        while got.len() < leftover.len() + plain.len() {
            match Pin::new(&mut r).poll_read(&mut cx, &mut buf) {
                Poll::Ready(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Poll::Ready(Err(e)) => panic!("{e}"),
                Poll::Pending => continue,
            }
        }
        assert_eq!(got, [leftover, plain].concat());
    }

    #[test]
    fn a_vectored_read_decrypts_across_its_buffers_in_order() {
        let (mut send, receive) = keystreams();
        let plain: Vec<u8> = messages().concat();
        let mut cipher = plain.clone();
        send.apply(&mut cipher);
        let socket = Choppy { got: Arc::new(Mutex::new(cipher)), max: 23, calls: 0 };
        let leftover = b"already decrypted".to_vec();
        let mut r = CipherRead { inner: Box::new(socket), prefix: leftover.clone(), at: 0, keystream: Some(receive) };
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut got = Vec::new();
        let (mut a, mut b, mut c) = ([0u8; 3], [0u8; 0], [0u8; 13]);
        while got.len() < leftover.len() + plain.len() {
            let mut bufs = [io::IoSliceMut::new(&mut a), io::IoSliceMut::new(&mut b), io::IoSliceMut::new(&mut c)];
            match Pin::new(&mut r).poll_read_vectored(&mut cx, &mut bufs) {
                Poll::Ready(Ok(n)) => {
                    let all = [&a[..], &b[..], &c[..]].concat();
                    got.extend_from_slice(&all[..n]);
                }
                Poll::Ready(Err(e)) => panic!("{e}"),
                Poll::Pending => continue,
            }
        }
        assert_eq!(got, [leftover, plain].concat());
    }
}
