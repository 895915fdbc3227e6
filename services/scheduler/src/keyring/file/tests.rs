//! The keyring file: sealing, rotation, destruction and crash safety.

use super::*;

fn master() -> MasterKey {
    MasterKey::from_bytes(&MasterKey::generate_bytes()).unwrap()
}

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("acc_{i:024}")).collect()
}

/// Every file of `dir` concatenated: what a copy of the directory holds.
fn dir_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            out.extend(std::fs::read(p).unwrap());
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn leftovers(dir: &Path) -> Vec<String> {
    [NEW_FILE, OLD_FILE]
        .iter()
        .filter(|f| dir.join(f).exists())
        .map(|f| f.to_string())
        .collect()
}

#[test]
fn keys_survive_reopening_and_are_sealed_per_account() {
    let dir = tempfile::tempdir().unwrap();
    let m = master();
    let ring = FileKeyring::open(dir.path(), MasterKeys::new(m.clone())).unwrap();
    let a = ring.create("acc_a").unwrap();
    let sealed = a.seal(b"x", b"Dentist");
    ring.create("acc_b").unwrap();
    assert!(matches!(ring.create("acc_a"), Err(VaultError::Exists(_))));
    assert!(matches!(ring.create("acc a"), Err(VaultError::BadId)));
    drop(ring);
    let ring = FileKeyring::open(dir.path(), MasterKeys::new(m.clone())).unwrap();
    assert_eq!(ring.account_ids(), vec!["acc_a", "acc_b"]);
    let again = ring.data_key("acc_a").unwrap();
    assert_eq!(again.open(b"x", &sealed).unwrap(), b"Dentist");
    assert!(ring.data_key("acc_c").is_none());
    // An entry moved to another account's line does not open.
    let text = std::fs::read_to_string(dir.path().join(KEYRING_FILE)).unwrap();
    let swapped = text.replace("acc_a ", "acc_x ");
    std::fs::write(dir.path().join(KEYRING_FILE), swapped).unwrap();
    let err = FileKeyring::open(dir.path(), MasterKeys::new(m)).unwrap_err();
    assert!(
        matches!(err, VaultError::WrongMasterKey { count: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("acc_x"), "{err}");
}

#[test]
fn the_id_key_is_made_once_survives_rotation_and_is_no_account() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (master(), master());
    let ring = FileKeyring::open(dir.path(), MasterKeys::new(old.clone())).unwrap();
    ring.create("acc_a").unwrap();
    let sealed = ring.id_cipher().unwrap().seal("alice@example.com");
    assert_eq!(ring.id_cipher().unwrap().seal("alice@example.com"), sealed);
    assert_eq!(ring.account_ids(), vec!["acc_a"]);
    assert!(ring.data_key(IDS_ENTRY).is_none());
    assert!(matches!(ring.create(IDS_ENTRY), Err(VaultError::BadId)));
    // Reconciling destroys keys of accounts the store lacks: never this one.
    assert_eq!(ring.destroy(&[IDS_ENTRY.to_string()]).unwrap(), 0);
    assert_eq!(ring.rotate(new.clone()).unwrap().account_keys, 1);
    drop(ring);
    let ring = FileKeyring::open(dir.path(), MasterKeys::new(new)).unwrap();
    assert_eq!(
        ring.id_cipher().unwrap().open(&sealed).unwrap(),
        "alice@example.com"
    );
    assert!(matches!(
        FileKeyring::open(dir.path(), MasterKeys::new(old)),
        Err(VaultError::WrongMasterKey { count: 2, .. })
    ));
}

#[cfg(unix)]
#[test]
fn the_keyring_file_is_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let ring = FileKeyring::open(dir.path(), MasterKeys::new(master())).unwrap();
    ring.create("acc_a").unwrap();
    ring.destroy(&["acc_a".into()]).unwrap();
    let mode = std::fs::metadata(dir.path().join(KEYRING_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_destroyed_key_leaves_no_byte_of_its_entry_in_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let m = master();
    let ring = FileKeyring::open(dir.path(), MasterKeys::new(m.clone())).unwrap();
    for id in ids(3) {
        ring.create(&id).unwrap();
    }
    let gone = ids(3)[1].clone();
    let entry = ring.entries().get(&gone).unwrap().sealed.clone();
    let encoded = b64().encode(&entry);
    assert!(contains(&dir_bytes(dir.path()), encoded.as_bytes()));
    assert_eq!(ring.destroy(std::slice::from_ref(&gone)).unwrap(), 1);
    assert_eq!(ring.destroy(std::slice::from_ref(&gone)).unwrap(), 0);
    let bytes = dir_bytes(dir.path());
    assert!(!contains(&bytes, encoded.as_bytes()));
    assert!(!contains(&bytes, &entry[..24]));
    assert!(leftovers(dir.path()).is_empty());
    let ring = FileKeyring::open(dir.path(), MasterKeys::new(m)).unwrap();
    assert_eq!(
        ring.account_ids(),
        vec![ids(3)[0].clone(), ids(3)[2].clone()]
    );
}

#[test]
fn a_crash_at_any_step_of_a_destroy_leaves_the_old_or_the_new_keyring_whole() {
    for stop in [
        Stop::AfterNewWritten,
        Stop::AfterLinked,
        Stop::AfterRenamed,
        Stop::MidWipe,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let m = master();
        let ring = FileKeyring::open(dir.path(), MasterKeys::new(m.clone())).unwrap();
        let mut keys = Vec::new();
        for id in ids(4) {
            let k = ring.create(&id).unwrap();
            keys.push((id.clone(), k.seal(id.as_bytes(), b"content")));
        }
        let gone = ids(4)[2].clone();
        let entry = b64().encode(&ring.entries().get(&gone).unwrap().sealed);
        ring.destroy_until(std::slice::from_ref(&gone), stop)
            .unwrap();
        drop(ring);
        assert!(!leftovers(dir.path()).is_empty(), "{stop:?} leaves files");

        let ring = FileKeyring::open(dir.path(), MasterKeys::new(m.clone())).unwrap();
        assert!(
            leftovers(dir.path()).is_empty(),
            "{stop:?}: {:?}",
            leftovers(dir.path())
        );
        // Every live key opens what it sealed.
        for (id, sealed) in keys.iter().filter(|(id, _)| *id != gone) {
            let k = ring
                .data_key(id)
                .unwrap_or_else(|| panic!("{stop:?} lost {id}"));
            assert_eq!(k.open(id.as_bytes(), sealed).unwrap(), b"content");
        }
        let renamed = matches!(stop, Stop::AfterRenamed | Stop::MidWipe);
        // Before the rename the old keyring stands (the destroy was not
        // acknowledged, and start-up reconciliation destroys the key
        // again); after it the key is gone from every file.
        assert_eq!(ring.data_key(&gone).is_some(), !renamed, "{stop:?}");
        if renamed {
            assert!(
                !contains(&dir_bytes(dir.path()), entry.as_bytes()),
                "{stop:?}"
            );
        }
        ring.destroy(std::slice::from_ref(&gone)).unwrap();
        assert!(
            !contains(&dir_bytes(dir.path()), entry.as_bytes()),
            "{stop:?}"
        );
    }
}

#[test]
fn a_line_torn_by_a_crash_during_an_append_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let m = master();
    let ring = FileKeyring::open(dir.path(), MasterKeys::new(m.clone())).unwrap();
    ring.create("acc_a").unwrap();
    drop(ring);
    let path = dir.path().join(KEYRING_FILE);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(b"acc_b QUJDREVGR0").unwrap();
    drop(f);
    let ring = FileKeyring::open(dir.path(), MasterKeys::new(m)).unwrap();
    assert_eq!(ring.account_ids(), vec!["acc_a"]);
    ring.create("acc_c").unwrap();
    assert!(std::fs::read_to_string(&path).unwrap().ends_with('\n'));
    assert!(!std::fs::read_to_string(&path).unwrap().contains("acc_b"));
}

#[test]
fn a_damaged_keyring_is_refused_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(KEYRING_FILE),
        format!("{HEADER}\nacc_a not-base64!\n"),
    )
    .unwrap();
    let err = FileKeyring::open(dir.path(), MasterKeys::new(master())).unwrap_err();
    assert!(matches!(err, VaultError::Corrupt { line: 2, .. }), "{err}");
}

#[test]
fn after_a_rotation_only_the_new_master_key_opens_the_keyring() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (master(), master());
    let ring = FileKeyring::open(dir.path(), MasterKeys::new(old.clone())).unwrap();
    let mut sealed = Vec::new();
    for id in ids(3) {
        sealed.push((
            id.clone(),
            ring.create(&id).unwrap().seal(b"x", id.as_bytes()),
        ));
    }
    let before = dir.path().join("before");
    std::fs::create_dir(&before).unwrap();
    std::fs::copy(dir.path().join(KEYRING_FILE), before.join(KEYRING_FILE)).unwrap();
    let transient = ring.new_transient_key("state");

    let r = ring.rotate(new.clone()).unwrap();
    assert_eq!(
        r,
        Rotation {
            account_keys: 3,
            rotated: true
        }
    );
    // Still the same keys in memory; pending records sealed before
    // open under the previous key.
    assert!(ring.open_transient_key("state", &transient.1).is_ok());
    assert_eq!(
        ring.rotate(new.clone()).unwrap(),
        Rotation {
            account_keys: 3,
            rotated: false
        }
    );
    ring.create("acc_after").unwrap();
    drop(ring);

    let ring = FileKeyring::open(dir.path(), MasterKeys::new(new.clone())).unwrap();
    for (id, s) in &sealed {
        assert_eq!(
            ring.data_key(id).unwrap().open(b"x", s).unwrap(),
            id.as_bytes()
        );
    }
    assert!(ring.data_key("acc_after").is_some());
    assert!(matches!(
        FileKeyring::open(dir.path(), MasterKeys::new(old.clone())),
        Err(VaultError::WrongMasterKey { count: 4, .. })
    ));
    // The copy from before the rotation does not open with the new key
    // alone, and does with the old one.
    assert!(matches!(
        FileKeyring::open(&before, MasterKeys::new(new)),
        Err(VaultError::WrongMasterKey { count: 3, .. })
    ));
    assert_eq!(
        FileKeyring::open(&before, MasterKeys::new(old))
            .unwrap()
            .account_ids(),
        ids(3)
    );
}

#[test]
fn entries_under_the_previous_master_key_are_resealed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (master(), master());
    let ring = FileKeyring::open(dir.path(), MasterKeys::new(old.clone())).unwrap();
    let s = ring.create("acc_a").unwrap().seal(b"x", b"y");
    drop(ring);
    // Without the previous key the keyring is refused, naming the fix.
    let err = FileKeyring::open(dir.path(), MasterKeys::new(new.clone())).unwrap_err();
    assert!(
        err.to_string().contains("previous_master_key_file"),
        "{err}"
    );
    let both = MasterKeys {
        current: new.clone(),
        previous: Some(old),
    };
    drop(FileKeyring::open(dir.path(), both).unwrap());
    let ring = FileKeyring::open(dir.path(), MasterKeys::new(new)).unwrap();
    assert_eq!(
        ring.data_key("acc_a").unwrap().open(b"x", &s).unwrap(),
        b"y"
    );
}

#[test]
fn importing_keeps_held_keys_and_refuses_different_ones() {
    let dir = tempfile::tempdir().unwrap();
    let ring = FileKeyring::open(dir.path(), MasterKeys::new(master())).unwrap();
    let (_, raw) = DataKey::generate();
    let (_, other) = DataKey::generate();
    let batch = [("acc_a".to_string(), raw.clone())];
    assert_eq!(ring.import(&batch).unwrap(), 1);
    assert_eq!(ring.import(&batch).unwrap(), 0);
    assert!(matches!(
        ring.import(&[("acc_a".to_string(), other)]),
        Err(VaultError::Conflict(_))
    ));
    let sealed = DataKey::from_raw(&raw).seal(b"x", b"y");
    assert_eq!(
        ring.data_key("acc_a").unwrap().open(b"x", &sealed).unwrap(),
        b"y"
    );
}
