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
