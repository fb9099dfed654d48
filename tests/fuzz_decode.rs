//! Issue 14: decoders of on-disk and on-wire records over arbitrary bytes
//! (proptest, 2000 cases each, run as ordinary tests in CI): they return
//! Ok or Err, never panic. Each also starts from a valid encoding with a
//! few bytes changed, so the fuzz reaches past the first length check.

use proptest::prelude::*;
use shardfs::ec::ShardHeader;
use shardfs::fs::schema::{dec, Inode};
use shardfs::pool::{new_id, validate, StripeLoc, Superblock, FORMAT_VERSION, NO_MEMBER};

fn cfg() -> ProptestConfig {
    ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn mutate(mut b: Vec<u8>, edits: &[(usize, u8)], cut: usize) -> Vec<u8> {
    for &(at, v) in edits {
        if !b.is_empty() {
            let i = at % b.len();
            b[i] = v;
        }
    }
    let keep = b.len().saturating_sub(cut % 8);
    b.truncate(keep);
    b
}

fn superblock() -> Superblock {
    let ids: Vec<String> = (0..6).map(|_| new_id()).collect();
    Superblock {
        magic: "shardfs".into(),
        format_version: FORMAT_VERSION,
        pool_id: new_id(),
        member_id: ids[0].clone(),
        member_index: 0,
        members: ids,
        k: 4,
        m: 2,
        shard_size: 4096,
        inline_max: 2048,
        meta_replicas: vec![0, 1, 2],
        created: 0,
        domains: Vec::new(),
        meta_epoch: 0,
        classes: Vec::new(),
    }
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn superblock_decode_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..512),
                                      edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
                                      cut in any::<usize>()) {
        let _ = Superblock::decode(&raw);
        let _ = Superblock::decode(&mutate(superblock().encode(), &edits, cut));
    }

    #[test]
    fn shard_header_open_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..512),
                                      edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
                                      cut in any::<usize>()) {
        let _ = ShardHeader::open_header(&raw);
        // a plausible start: the magic and version of a real header
        let mut b = raw.clone();
        if b.len() >= 14 {
            b[..8].copy_from_slice(b"SHRDFS01");
        }
        let _ = ShardHeader::open_header(&mutate(b, &edits, cut));
    }

    #[test]
    fn inode_and_stripe_records_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..256),
                                            members in proptest::collection::vec(any::<u16>(), 0..10),
                                            len in any::<u32>()) {
        let _ = dec::<Inode>("inode", &raw);
        if let Ok(loc) = StripeLoc::decode(&raw) {
            let _ = validate::stripe_loc(&loc, 6, 6, 16384);
        }
        let loc = StripeLoc { generation: 1, len, members: members.clone(), patches: Vec::new(), places: Vec::new() };
        let r = validate::stripe_loc(&loc, 6, 6, 16384);
        let fits = members.len() == 6
            && members.iter().all(|&m| m == NO_MEMBER || m < 6)
            && len as u64 <= 16384;
        prop_assert_eq!(r.is_ok(), fits);
    }

    #[test]
    fn control_frame_parse_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..256),
                                        s in "\\{\"v\":[0-9]{1,3},\"cmd\":\"[a-z_]{0,12}\"[^}]{0,40}\\}") {
        let _ = shardfs::control::server::parse_request(&raw);
        let _ = shardfs::control::server::parse_request(s.as_bytes());
    }
}
