//! Account data keys over real processes. Revocation makes an account's
//! data unreadable in the live store and in any copy of it taken before:
//! checked as a thief holding a backup would, by trying every key obtainable
//! from a store directory, a keyring and the master key on every sealed
//! value of the account, with the scheduler's own crypto. The master key
//! rotates online, and the scheduler then starts with the new key alone.

use std::path::Path;

use anyhow::{bail, Context, Result};
use base64::Engine;
use calbridge::pb;
use calbridge_e2e::{bin, dir_contains, timed_event, Stack};
use calbridge_scheduler::crypto::{DataKey, IdCipher, MasterKey, MasterKeys};
use calbridge_scheduler::keyring::{entry_aad, FileKeyring, KeyVault, VaultError, KEYRING_FILE};
use calbridge_scheduler::sealing::{calendar_aad, change_aad, cred_aad, event_aad, identity_aad};
use calbridge_scheduler::secrets::decode_key;
use calbridge_scheduler::store::Store;
use chrono::Utc;

/// Copies a directory tree.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// The master key the scheduler generated in local mode.
fn master_key(data_dir: &Path) -> Result<MasterKey> {
    let raw = std::fs::read(data_dir.join("master.key"))?;
    let key = decode_key(&raw).context("master.key holds a key")?;
    Ok(MasterKey::from_bytes(&key)?)
}

/// Every file's bytes under `path` (a file or a directory; missing: none).
fn all_bytes(path: &Path, out: &mut Vec<Vec<u8>>) -> Result<()> {
    if path.is_dir() {
        for entry in std::fs::read_dir(path)? {
            all_bytes(&entry?.path(), out)?;
        }
    } else if path.is_file() {
        out.push(std::fs::read(path)?);
    }
    Ok(())
}

/// Every data key of `accounts` that the files under `sources` yield with
/// the master key: each run of base64 text in them (the store keeps bytes
/// as base64 inside JSON records, the keyring as base64 lines) is decoded
/// and opened as a keyring entry and as a wrapped key of the first schema.
fn obtainable_keys(
    master: &MasterKey,
    sources: &[&Path],
    accounts: &[&str],
) -> Result<Vec<(String, DataKey)>> {
    let mut files = Vec::new();
    for s in sources {
        all_bytes(s, &mut files)?;
    }
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    let is_b64 = |b: &u8| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/';
    let mut keys = Vec::new();
    for bytes in &files {
        for run in bytes.split(|b| !is_b64(b)).filter(|r| r.len() >= 40) {
            let Ok(blob) = b64.decode(run) else { continue };
            for id in accounts {
                if let Ok(raw) = master.open_key(entry_aad(id).as_bytes(), &blob) {
                    keys.push((id.to_string(), DataKey::from_raw(&raw)));
                }
                if let Ok(k) = master.unwrap_data_key(id, &blob) {
                    keys.push((id.to_string(), k));
                }
            }
        }
    }
    Ok(keys)
}

/// One sealed value of an account, with the record key it is bound to.
struct Sealed {
    account: String,
    aad: String,
    bytes: Vec<u8>,
}

/// Every sealed value of `accounts` in the store at `dir`: credentials,
/// identity, calendar names, mirrored events, change-log snapshots.
fn sealed_values(
    dir: &Path,
    ids: IdCipher,
    tenant: &str,
    accounts: &[&str],
) -> Result<Vec<Sealed>> {
    let store = Store::open(dir, ids)?;
    let mut out = Vec::new();
    let mut push = |account: &str, aad: String, bytes: Vec<u8>| {
        if !bytes.is_empty() {
            out.push(Sealed {
                account: account.to_string(),
                aad,
                bytes,
            });
        }
    };
    for id in accounts {
        let acc = calbridge_scheduler::ids::AccountId::from(*id);
        let a = store.account(id)?.context("account in the store")?;
        push(id, cred_aad(&acc), a.sealed_credentials);
        push(id, identity_aad(&acc), a.sealed_identity);
        for c in store.calendars(&acc)? {
            push(id, calendar_aad(&acc, &c.calendar_id), c.sealed_name);
            for pid in store.event_ids(&acc, &c.calendar_id)? {
                if let Some(e) = store.event(&acc, &c.calendar_id, &pid)? {
                    push(id, event_aad(&acc, &c.calendar_id, &pid), e.sealed);
                }
            }
        }
    }
    for c in store.changes_after(
        &calbridge_scheduler::ids::TenantId::from(tenant),
        0,
        usize::MAX,
    )? {
        if accounts.contains(&c.account_id.as_str()) {
            let aad = change_aad(&c.account_id, &c.calendar_id, &c.provider_event_id);
            push(&c.account_id, aad, c.sealed_event);
        }
    }
    Ok(out)
}

/// The plaintexts of the sealed values that some obtainable key opens.
fn opened(keys: &[(String, DataKey)], sealed: &[Sealed], account: &str) -> Vec<Vec<u8>> {
    sealed
        .iter()
        .filter(|s| s.account == account)
        .filter_map(|s| {
            keys.iter()
                .find_map(|(_, k)| k.open(s.aad.as_bytes(), &s.bytes).ok())
        })
        .collect()
}

/// Paths under `dir` (itself included) that others may read: directories
/// not 0700, files not 0600.
fn not_owner_only(dir: &Path, out: &mut Vec<String>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode != 0o700 {
        out.push(format!("{} {mode:o}", dir.display()));
    }
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        if p.is_dir() {
            not_owner_only(&p, out)?;
        } else {
            let mode = std::fs::metadata(&p)?.permissions().mode() & 0o777;
            if mode != 0o600 {
                out.push(format!("{} {mode:o}", p.display()));
            }
        }
    }
    Ok(())
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

async fn upsert(
    client: &mut calbridge_e2e::SchedulerClient,
    account: &str,
    calendar: &str,
    title: &str,
) -> Result<()> {
    client
        .upsert_event(pb::UpsertEventRequest {
            provider_event_id: String::new(),
            account_id: account.into(),
            calendar_id: calendar.into(),
            client_event_id: "ev-1".into(),
            event: Some(timed_event(
                title,
                Utc::now() + chrono::Duration::days(1),
                30,
            )),
            expected_version: String::new(),
            hold_id: String::new(),
        })
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_copy_of_the_store_taken_before_revocation_cannot_open_the_revoked_account() -> Result<()>
{
    let mut stack = Stack::start().await?;
    let (tenant, key) = stack.tenant("revocation").await?;
    let mut client = stack.client(Some(&key)).await?;
    let password = "revocation-Pa55word!";
    let title = "Salary review with Ottoline Brackenbury";
    let (revoked, calendar) = stack
        .sandbox_account(&mut client, "ottoline@example.com", password)
        .await?;
    let (kept, kept_calendar) = stack
        .sandbox_account(&mut client, "kept@example.com", "kept-Pa55word!")
        .await?;
    upsert(&mut client, &revoked, &calendar, title).await?;
    upsert(&mut client, &kept, &kept_calendar, "Kept meeting").await?;

    // A backup of the whole data directory while both accounts are live.
    drop(client);
    assert!(stack.scheduler.terminate().await?, "clean stop");
    let backup = tempfile::tempdir()?;
    copy_dir(stack.dir.path(), backup.path())?;
    stack.restart_scheduler().await?;
    let mut client = stack.client(Some(&key)).await?;
    let a = client
        .revoke_account(pb::RevokeAccountRequest {
            account_id: revoked.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(a.status(), pb::AccountStatus::Revoked);
    drop(client);
    assert!(stack.scheduler.terminate().await?, "clean stop");

    let live = stack.dir.path();
    let master = master_key(live)?;
    let accounts = [revoked.as_str(), kept.as_str()];
    // The account's sealed values as the backup holds them (read from a
    // copy of it: opening a store writes to it).
    let opened_copy = tempfile::tempdir()?;
    copy_dir(&backup.path().join("store"), opened_copy.path())?;
    // The store's id key never changes: the live keyring's opens the copy.
    let ids = FileKeyring::open(live, MasterKeys::new(master.clone()))?.id_cipher()?;
    let sealed = sealed_values(opened_copy.path(), ids, &tenant, &accounts)?;
    let of_revoked = sealed.iter().filter(|s| s.account == revoked).count();
    assert!(
        of_revoked >= 4,
        "credentials, identity, calendars, events: {of_revoked}"
    );

    // The backup's store with the backup's keyring (same age) and the
    // master key: everything live then, the revoked account included.
    let keys = obtainable_keys(
        &master,
        &[
            &backup.path().join("store"),
            &backup.path().join(KEYRING_FILE),
        ],
        &accounts,
    )?;
    let then = opened(&keys, &sealed, &revoked);
    assert_eq!(then.len(), of_revoked, "a same-age backup opens everything");
    assert!(then.iter().any(|p| contains(p, password.as_bytes())));
    assert!(then.iter().any(|p| contains(p, title.as_bytes())));

    // The backup's store with the current keyring: only the live account.
    let keys = obtainable_keys(
        &master,
        &[&backup.path().join("store"), &live.join(KEYRING_FILE)],
        &accounts,
    )?;
    assert!(
        opened(&keys, &sealed, &revoked).is_empty(),
        "the pre-revocation store copy yields the revoked account's data key: {:?}",
        keys.iter().map(|(id, _)| id).collect::<Vec<_>>()
    );
    assert!(
        !opened(&keys, &sealed, &kept).is_empty(),
        "the live account still opens"
    );

    // Nor does the live store, with anything else in the data directory.
    let keys = obtainable_keys(&master, &[live], &accounts)?;
    assert!(opened(&keys, &sealed, &revoked).is_empty());
    assert!(keys.iter().all(|(id, _)| *id == kept));

    // The revoked account's sealed key is in no live file, in any form.
    let backup_ring = std::fs::read_to_string(backup.path().join(KEYRING_FILE))?;
    let line = backup_ring
        .lines()
        .find(|l| l.starts_with(&format!("{revoked} ")))
        .context("the backup's keyring holds the revoked account's key")?;
    let entry = line.split_once(' ').context("entry")?.1;
    let entry_bytes = base64::engine::general_purpose::STANDARD_NO_PAD.decode(entry)?;
    for needle in [entry.as_bytes(), &entry_bytes[..]] {
        assert!(
            !dir_contains(live, needle)?,
            "the sealed key is still on disk"
        );
    }
    for secret in [password, title] {
        assert!(
            !dir_contains(live, secret.as_bytes())?,
            "{secret:?} in plaintext"
        );
    }
    // Nor is the user's e-mail address (in calendar ids and the like) in
    // the store's keys or records.
    for email in ["ottoline@example.com", "kept@example.com"] {
        assert!(
            !dir_contains(&live.join("store"), email.as_bytes())?,
            "{email} in clear in the store"
        );
    }
    // The data directory, the store and the keyring are the owner's alone.
    let mut open_to_others = Vec::new();
    not_owner_only(live, &mut open_to_others)?;
    assert!(open_to_others.is_empty(), "{open_to_others:?}");
    Ok(())
}

/// Runs the CLI's `admin rotate-master-key --json` against the stack.
async fn rotate_with_cli(stack: &Stack) -> Result<serde_json::Value> {
    let out = tokio::process::Command::new(bin("calbridge"))
        .args(["admin", "rotate-master-key", "--json"])
        .env("CALBRIDGE_SERVER", stack.scheduler.url())
        .env(
            "CALBRIDGE_ADMIN_TOKEN_FILE",
            stack.dir.path().join("admin.token"),
        )
        .env_remove("CALBRIDGE_ADMIN_TOKEN")
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "calbridge admin rotate-master-key failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_master_key_rotates_online_and_the_scheduler_restarts_with_the_new_key_alone(
) -> Result<()> {
    let mut stack = Stack::start().await?;
    let (_, key) = stack.tenant("rotation").await?;
    let mut client = stack.client(Some(&key)).await?;
    let (account, calendar) = stack
        .sandbox_account(&mut client, "rota@example.com", "rota-Pa55word!")
        .await?;
    upsert(&mut client, &account, &calendar, "Before the rotation").await?;
    let dir = stack.dir.path().to_path_buf();
    let before = tempfile::tempdir()?;
    std::fs::copy(dir.join(KEYRING_FILE), before.path().join(KEYRING_FILE))?;
    let old = master_key(&dir)?;

    // The operator replaces the key file's content, then asks for the
    // rotation; the scheduler keeps serving throughout.
    let new_bytes = MasterKey::generate_bytes();
    std::fs::write(dir.join("master.key"), hex_of(&new_bytes))?;
    let r = rotate_with_cli(&stack).await?;
    assert_eq!(r["rotated"], true, "{r}");
    assert_eq!(r["account_keys"], 1, "{r}");
    let r = rotate_with_cli(&stack).await?;
    assert_eq!(
        r["rotated"], false,
        "the same key again changes nothing: {r}"
    );
    let (second, second_calendar) = stack
        .sandbox_account(&mut client, "rota2@example.com", "rota2-Pa55word!")
        .await?;
    upsert(&mut client, &second, &second_calendar, "After the rotation").await?;

    // Restarted with the new key alone (local mode reads master.key), every
    // account still opens: events, and credentials for a sync.
    drop(client);
    assert!(stack.scheduler.terminate().await?, "clean stop");
    stack.restart_scheduler().await?;
    let mut client = stack.client(Some(&key)).await?;
    for (acc, cal, title) in [
        (&account, &calendar, "Before the rotation"),
        (&second, &second_calendar, "After the rotation"),
    ] {
        let from = Utc::now();
        let events = client
            .list_events(pb::ListEventsRequest {
                account_id: acc.clone(),
                calendar_id: cal.clone(),
                window: Some(pb::TimeWindow {
                    start: Some(calbridge::time::to_timestamp(from)),
                    end: Some(calbridge::time::to_timestamp(
                        from + chrono::Duration::days(3),
                    )),
                }),
                ..Default::default()
            })
            .await?
            .into_inner()
            .events;
        assert!(events.iter().any(|e| e.title == title), "{events:?}");
        calbridge_e2e::sync_now_and_wait(&mut client, acc, "").await?;
    }
    let accounts = calbridge_e2e::accounts(&mut client).await?;
    assert_eq!(accounts.len(), 2);
    assert!(accounts
        .iter()
        .all(|a| a.status() == pb::AccountStatus::Active && !a.provider_account_id.is_empty()));

    // The keyring copied before the rotation opens with the old key only.
    let new = MasterKey::from_bytes(&new_bytes)?;
    assert!(matches!(
        FileKeyring::open(before.path(), MasterKeys::new(new)),
        Err(VaultError::WrongMasterKey { .. })
    ));
    let ring = FileKeyring::open(before.path(), MasterKeys::new(old))?;
    assert_eq!(ring.account_ids(), vec![account.clone()]);
    Ok(())
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
