use super::*;
use crate::catalog::test_catalog;

fn chunk(n: u8) -> (ChunkId, Vec<u8>) {
    let body = vec![n; 1000];
    (ChunkId::of(&body), body)
}

#[tokio::test]
async fn a_new_store_gets_a_kek_file_and_its_chunks_read_back_after_a_restart() {
    let (cat, tmp) = test_catalog().await;
    let dir = tmp.path().join("keys");
    assert!(Keyring::open(&cat, false, &dir).await.unwrap().is_none());
    let ring = Keyring::open(&cat, true, &dir).await.unwrap().unwrap();
    assert!(dir.join("kek-1.key").exists());
    let (id, body) = chunk(7);
    let sealed = ring.seal_chunk(&id, &body);
    assert_eq!(&sealed[..4], b"TMX1");
    assert!(!sealed.windows(32).any(|w| w == &body[..32]));
    assert_ne!(
        sealed,
        ring.seal_chunk(&id, &body),
        "a fresh nonce each time"
    );

    let again = Keyring::open(&cat, true, &dir).await.unwrap().unwrap();
    assert_eq!(again.open_chunk(&id, sealed.clone()).unwrap(), body);

    // Under another chunk's name, damaged, or plaintext: refused, each with its reason.
    let (other, _) = chunk(8);
    let e = again.open_chunk(&other, sealed.clone()).unwrap_err();
    assert!(e.contains("authentication"), "{e}");
    let mut flipped = sealed.clone();
    flipped[100] ^= 0x10;
    assert!(again.open_chunk(&id, flipped).is_err());
    let mut renamed_key = sealed.clone();
    renamed_key[7] = 9;
    let e = again.open_chunk(&id, renamed_key).unwrap_err();
    assert!(e.contains("data key 9"), "{e}");
    let e = again.open_chunk(&id, body.clone()).unwrap_err();
    assert!(e.contains("not sealed"), "{e}");

    // Turning encryption off now would strand the sealed chunks.
    let e = Keyring::open(&cat, false, &dir)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("enabled = true"), "{e}");
}

#[tokio::test]
async fn rotation_rewraps_so_old_and_new_chunks_read_with_only_the_new_kek() {
    let (cat, tmp) = test_catalog().await;
    let dir = tmp.path().join("keys");
    let ring = Keyring::open(&cat, true, &dir).await.unwrap().unwrap();
    let (old_id, old_body) = chunk(1);
    let old = ring.seal_chunk(&old_id, &old_body);

    let r = ring.rotate(&cat).await.unwrap();
    assert_eq!((r.kek, r.rewrapped, r.data_key), (2, 1, 2));
    assert_eq!(ring.active_data_key(), 2);
    let (new_id, new_body) = chunk(2);
    let new = ring.seal_chunk(&new_id, &new_body);
    assert_eq!(&new[4..8], &2u32.to_be_bytes());
    let keks = cat.keks().await.unwrap();
    assert!(keks[0].retired_at.is_some() && keks[1].retired_at.is_none());
    assert!(cat.data_keys().await.unwrap().iter().all(|d| d.kek_id == 2));

    // The retired KEK is no longer needed by anything.
    std::fs::remove_file(dir.join("kek-1.key")).unwrap();
    let reopened = Keyring::open(&cat, true, &dir).await.unwrap().unwrap();
    assert_eq!(reopened.open_chunk(&old_id, old).unwrap(), old_body);
    assert_eq!(reopened.open_chunk(&new_id, new).unwrap(), new_body);
    assert_eq!(reopened.active_data_key(), 2);

    // A second rotation carries both data keys forward.
    let r = reopened.rotate(&cat).await.unwrap();
    assert_eq!((r.kek, r.rewrapped, r.data_key), (3, 2, 3));
}

/// Two controllers on one catalog: a rotation on one is taken up by the other once it has
/// the new KEK file, and the missing file is named until then.
#[tokio::test]
async fn a_rotation_on_another_controller_is_taken_up() {
    let (cat, tmp) = test_catalog().await;
    let other_cat = cat.another_controller().await.unwrap();
    let (dir_a, dir_b) = (tmp.path().join("keys-a"), tmp.path().join("keys-b"));
    let a = Keyring::open(&cat, true, &dir_a).await.unwrap().unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    std::fs::copy(dir_a.join("kek-1.key"), dir_b.join("kek-1.key")).unwrap();
    let b = Keyring::open(&other_cat, true, &dir_b)
        .await
        .unwrap()
        .unwrap();
    assert!(!b.refresh(&other_cat).await.unwrap(), "nothing new");

    let r = a.rotate(&cat).await.unwrap();
    let (id, body) = chunk(3);
    let sealed = a.seal_chunk(&id, &body);
    assert!(b.open_chunk(&id, sealed.clone()).is_err(), "not yet");
    let e = b.refresh(&other_cat).await.unwrap_err().to_string();
    assert!(e.contains(&format!("kek-{}.key", r.kek)), "{e}");
    // B still seals with the key it has, which A reads.
    let (id2, body2) = chunk(4);
    assert_eq!(
        a.open_chunk(&id2, b.seal_chunk(&id2, &body2)).unwrap(),
        body2
    );

    let name = format!("kek-{}.key", r.kek);
    std::fs::copy(dir_a.join(&name), dir_b.join(&name)).unwrap();
    assert!(b.refresh(&other_cat).await.unwrap());
    assert_eq!(b.active_data_key(), r.data_key);
    assert_eq!(b.open_chunk(&id, sealed).unwrap(), body);
}

#[tokio::test]
async fn a_wrong_or_missing_kek_file_is_named() {
    let (cat, tmp) = test_catalog().await;
    let dir = tmp.path().join("keys");
    Keyring::open(&cat, true, &dir).await.unwrap().unwrap();
    let path = dir.join("kek-1.key");
    let real = std::fs::read(&path).unwrap();

    std::fs::remove_file(&path).unwrap();
    kek::create(&dir, 1, &RawKey::random()).unwrap();
    let e = Keyring::open(&cat, true, &dir)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("kek-1.key is not key-encryption key 1") && e.contains("fingerprint"),
        "{e}"
    );

    std::fs::remove_file(&path).unwrap();
    let e = Keyring::open(&cat, true, &dir)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("kek-1.key") && e.contains("No such file"), "{e}");

    std::fs::write(&path, real).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = Keyring::open(&cat, true, &dir)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("chmod 600"), "{e}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(Keyring::open(&cat, true, &dir).await.unwrap().is_some());
}

#[tokio::test]
async fn an_operator_provided_kek_is_adopted() {
    let (cat, tmp) = test_catalog().await;
    let dir = tmp.path().join("keys");
    let mine = RawKey::random();
    kek::create(&dir, 1, &mine).unwrap();
    Keyring::open(&cat, true, &dir).await.unwrap().unwrap();
    assert_eq!(
        cat.keks().await.unwrap()[0].fingerprint,
        kek::fingerprint(&mine)
    );
}
