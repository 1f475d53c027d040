//! The client's one source of randomness: a generator seeded from the
//! operating system once, from which every seed (the machines', the peer
//! book's jitter) and every peer id is drawn. The core machines take
//! seeds, not entropy, so a run is replayable from them; only this file
//! asks the OS.

use rumor_core::bt::wire::PeerId;
use rumor_core::rand::Rng;
use std::sync::{Mutex, OnceLock};

fn rng() -> &'static Mutex<Rng> {
    static RNG: OnceLock<Mutex<Rng>> = OnceLock::new();
    RNG.get_or_init(|| {
        let mut seed = [0u8; 8];
        // Without OS entropy the seeds are predictable, not wrong: the
        // time still differs from run to run.
        if getrandom::fill(&mut seed).is_err() {
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            seed = (t.as_nanos() as u64 ^ std::process::id() as u64).to_le_bytes();
        }
        Mutex::new(Rng::new(u64::from_le_bytes(seed)))
    })
}

/// A fresh 64-bit seed for a machine.
pub fn seed() -> u64 {
    rng().lock().unwrap_or_else(|p| p.into_inner()).next_u64()
}

/// A fresh private key for an encryption handshake, straight from the
/// operating system (a key from the seeded generator would be as guessable
/// as its 64-bit seed).
pub fn secret_key() -> [u8; 20] {
    let mut k = [0u8; 20];
    if getrandom::fill(&mut k).is_err() {
        // No OS entropy: obfuscation still works, secrecy is weak.
        rng().lock().unwrap_or_else(|p| p.into_inner()).fill(&mut k);
    }
    k
}

/// A fresh peer id: our client prefix (Azureus style) and 12 random
/// characters.
pub fn peer_id() -> PeerId {
    let mut id = *b"-RM0001-000000000000";
    let mut r = [0u8; 12];
    rng().lock().unwrap_or_else(|p| p.into_inner()).fill(&mut r);
    for (d, b) in id[8..].iter_mut().zip(r) {
        *d = b"0123456789abcdefghijklmnopqrstuvwxyz"[b as usize % 36];
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_ids_carry_our_prefix_and_differ() {
        let (a, b) = (peer_id(), peer_id());
        assert_eq!(&a[..8], b"-RM0001-");
        assert_ne!(a, b);
        assert_ne!(seed(), seed());
    }
}
