use proptest::prelude::*;
use rumor_core::bt::choker::*;
use rumor_core::time::{Duration, Instant};

fn stats() -> impl Strategy<Value = Vec<PeerStats>> {
    proptest::collection::vec(
        (
            any::<bool>(),
            proptest::option::of(0u64..200),
            proptest::option::of(0u64..200),
            0u64..200,
            0u64..1000,
            0u64..1000,
            0u32..64,
        ),
        0..30,
    )
    .prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (int, ams, last, conn, d, u, pieces))| PeerStats {
                key: i as u64,
                peer_interested: int,
                am_interested_since: ams.map(|s| Instant::ZERO + Duration::from_secs(s)),
                last_data_at: last.map(|s| Instant::ZERO + Duration::from_secs(s)),
                connected_at: Instant::ZERO + Duration::from_secs(conn),
                download_rate: d,
                upload_rate: u,
                peer_pieces: pieces,
                // What we sent it grows with its upload rate, so holders'
                // turns end by bytes as well as by time.
                uploaded: u * conn,
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn uninterested_peers_only_borrow_free_seeding_slots_and_never_more_than_the_slots_plus_one(
        rounds in proptest::collection::vec((stats(), any::<bool>(), 0u64..40), 1..10),
        seed in any::<u64>(),
    ) {
        let cfg = ChokerConfig::default();
        let mut c = Choker::new(cfg, Instant::ZERO, seed);
        let mut now = Instant::ZERO + Duration::from_secs(200);
        for (peers, seeding, dt) in rounds {
            now += Duration::from_secs(dt);
            let set = c.decide(now, seeding, &peers);
            prop_assert!(set.len() <= cfg.unchoke_slots + 1);
            let idle = set.iter().filter(|k| !peers.iter().any(|p| p.key == **k && p.peer_interested)).count();
            for k in &set {
                prop_assert!(peers.iter().any(|p| p.key == *k));
            }
            if idle > 0 {
                // Lent while seeding, and only slots no interested peer took.
                prop_assert!(seeding);
                prop_assert!(set.len() <= cfg.unchoke_slots);
            }
            let interested = peers.iter().filter(|p| p.peer_interested).count();
            if interested > 0 {
                prop_assert!(!set.is_empty());
            }
        }
    }
}
