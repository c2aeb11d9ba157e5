//! Packs at their boundaries, driven by a raw agent: references to a chunk while it waits
//! in the pack being filled, while its pack is being written, and after; chunks spread over
//! several packs; every chunk read back intact.

use tidemark_core::chunk;
use tidemark_core::ids::ChunkId;
use tidemark_proto::upload_part_message::Msg;
use tidemark_proto::{
    BeginBackupRequest, EncodedChunk, FinishBackupRequest, PartCheck, PartHeader, PartTrailer,
    UploadPartMessage,
};
use tidemark_tests::fleet::{Fleet, FleetOpts};

/// `len` bytes that do not compress (xorshift), so packs fill at a known pace.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn msg(m: Msg) -> UploadPartMessage {
    UploadPartMessage { msg: Some(m) }
}

#[test]
fn references_across_pack_boundaries_store_and_read_back() {
    let f = Fleet::build(&FleetOpts {
        label: "packs",
        s3: true,
        ..Default::default()
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut agent =
        tidemark_tests::fleet::raw_agent_client(&f.pki, &f.controller.url, "agent:db1", &rt);
    let backup = rt
        .block_on(agent.begin_backup(BeginBackupRequest {
            instance: "demo-pg".into(),
            kind: "logical".into(),
            parts: vec!["db:app".into()],
            ..Default::default()
        }))
        .unwrap()
        .into_inner()
        .backup_id;

    // Chunk 0, a reference to it at once (it waits in the pack being filled), 20 MiB of
    // other chunks (the first pack is written and a second fills), a reference to chunk 0
    // again (its pack may still be being written), then one to chunk 19 (in the pack
    // being filled).
    let chunks: Vec<Vec<u8>> = (0..21).map(|i| noise(i + 1, 1 << 20)).collect();
    let mut order: Vec<(usize, bool)> = vec![(0, true), (0, false)];
    order.extend((1..21).map(|i| (i, true)));
    order.extend([(0, false), (19, false)]);
    let mut msgs = vec![msg(Msg::Header(PartHeader {
        backup_id: backup,
        part: "db:app".into(),
        format: "sql".into(),
    }))];
    let mut stream = Vec::new();
    for &(i, with_data) in &order {
        let plain = &chunks[i];
        stream.extend_from_slice(plain);
        msgs.push(msg(Msg::Chunk(EncodedChunk {
            id: ChunkId::of(plain).0.to_vec(),
            raw_len: plain.len() as u32,
            data: if with_data {
                chunk::encode(plain)
            } else {
                Vec::new()
            },
        })));
    }
    msgs.push(msg(Msg::Trailer(PartTrailer {
        stream_sha256: ChunkId::of(&stream).0.to_vec(),
        raw_bytes: stream.len() as u64,
        chunk_count: order.len() as u64,
    })));
    let stored = rt
        .block_on(agent.upload_part(tokio_stream::iter(msgs)))
        .unwrap()
        .into_inner();
    assert_eq!(stored.chunks, 24);
    assert_eq!(stored.new_chunks, 21);
    rt.block_on(agent.finish_backup(FinishBackupRequest {
        backup_id: backup,
        checks: vec![PartCheck {
            part: "db:app".into(),
            ok: true,
            detail: "raw upload".into(),
        }],
        ..Default::default()
    }))
    .unwrap();

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
