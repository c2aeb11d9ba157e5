//! Packs at their boundaries, driven by a raw agent: references to a chunk while it waits
//! in the pack being filled, while its pack is being written, and after; chunks spread over
//! several packs; every chunk read back intact.

use tidemark_core::ids::ChunkId;
use tidemark_tests::fleet::{Fleet, FleetOpts};
use tidemark_tests::raw_agent::{RawAgent, noise};

#[test]
fn references_across_pack_boundaries_store_and_read_back() {
    let f = Fleet::build(&FleetOpts {
        label: "packs",
        s3: true,
        ..Default::default()
    });
    let mut agent = RawAgent::connect(&f);
    let backup = agent.begin();

    // Chunk 0, a reference to it at once (it waits in the pack being filled), 20 MiB of
    // other chunks (the first pack is written and a second fills), a reference to chunk 0
    // again (its pack may still be being written), then one to chunk 19 (in the pack
    // being filled).
    let chunks: Vec<Vec<u8>> = (0..21).map(|i| noise(i + 1, 1 << 20)).collect();
    let mut order: Vec<(usize, bool)> = vec![(0, true), (0, false)];
    order.extend((1..21).map(|i| (i, true)));
    order.extend([(0, false), (19, false)]);
    let sent: Vec<(&[u8], bool)> = order
        .iter()
        .map(|&(i, with_data)| (chunks[i].as_slice(), with_data))
        .collect();
    let stored = agent.upload(backup, &sent, || {}).unwrap();
    assert_eq!(stored.chunks, 24);
    assert_eq!(stored.new_chunks, 21);
    agent.finish(backup).unwrap();

    // 21 MiB of incompressible chunks make two packs (16 MiB, then the rest).
    let places: Vec<_> = chunks
        .iter()
        .map(|c| f.controller.chunk_place(&ChunkId::of(c).to_hex()))
        .collect();
    let mut packs: Vec<&str> = places.iter().map(|p| p.pack.as_str()).collect();
    packs.dedup();
    assert_eq!(packs.len(), 2, "{places:?}");
    for p in &packs {
        assert!(f.pack_path(p).exists(), "{p}");
    }
    assert_eq!(f.controller.pack_chunks(packs[0]).len(), 16);

    // Every chunk reads back from its pack and checks out.
    let v = f.admin.json(&["verify", "--instance", "demo-pg"]);
    assert_eq!(v["bad"].as_array().unwrap().len(), 0, "{v}");
    assert!(v["chunks_checked"].as_u64().unwrap() >= 21, "{v}");
    let b = f.admin.json(&["backups", "show", &backup.to_string()]);
    assert_eq!(b["status"], "complete", "{b}");
    f.dir.keep_if_asked();
}
