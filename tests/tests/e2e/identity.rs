//! Account identity is exact: two provider users whose ids differ only in
//! letter case (CalDAV principal URLs are case-sensitive, as two Radicale
//! users show; the sandbox's user names are too) are two accounts.
//! Connecting as the second never lands on the first's account, and
//! re-authorising an account needs the very same provider user.

use std::io::Write;

use anyhow::{anyhow, Result};
use calbridge::pb;
use calbridge_e2e::caldav::{connect, CaldavStack, DavServer, ServerKind};
use calbridge_e2e::scripted::{stack, Provider};
use calbridge_e2e::{accounts, timed_event, wait_synced, SchedulerClient, Stack};
use chrono::Utc;

async fn connect_password(
    c: &mut SchedulerClient,
    user: &str,
    password: &str,
) -> Result<pb::Account> {
    Ok(
        c.connect_password_account(pb::ConnectPasswordAccountRequest {
            provider: pb::Provider::Sandbox as i32,
            server_url: String::new(),
            username: user.into(),
            password: password.into(),
            access_level: pb::AccessLevel::ReadWrite as i32,
        })
        .await?
        .into_inner(),
    )
}

async fn account(c: &mut SchedulerClient, id: &str) -> Result<pb::Account> {
    Ok(c.get_account(pb::GetAccountRequest {
        account_id: id.into(),
    })
    .await?
    .into_inner())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_password_user_whose_id_differs_only_in_case_gets_an_account_of_their_own() -> Result<()>
{
    let stack = Stack::start().await?;
    let (_, key) = stack.tenant("identity").await?;
    let mut c = stack.client(Some(&key)).await?;
    let (ada, ada_cal) = stack
        .sandbox_account(&mut c, "ada@example.com", "pw-ada-1")
        .await?;

    // Another user of the same provider, whose id differs only in case,
    // with a password of their own.
    let other = connect_password(&mut c, "ADA@example.com", "pw-other-2").await?;
    assert_ne!(other.account_id, ada, "landed on the first user's account");
    assert_eq!(other.provider_account_id, "ADA@example.com");
    wait_synced(&mut c, &other.account_id).await?;
    assert_eq!(accounts(&mut c).await?.len(), 2);

    // The first account kept its identity and credentials: it still
    // writes as the first user.
    let first = account(&mut c, &ada).await?;
    assert_eq!(first.provider_account_id, "ada@example.com");
    assert_eq!(first.status, pb::AccountStatus::Active as i32);
    c.upsert_event(pb::UpsertEventRequest {
        provider_event_id: String::new(),
        account_id: ada.clone(),
        calendar_id: ada_cal.clone(),
        client_event_id: "whose".into(),
        event: Some(timed_event(
            "Whose",
            Utc::now() + chrono::Duration::days(1),
            30,
        )),
        expected_version: String::new(),
        hold_id: String::new(),
    })
    .await?;
    let mut sandbox = stack.sandbox().await?;
    for (user, has) in [("ada@example.com", true), ("ADA@example.com", false)] {
        let events = sandbox
            .list_provider_events(pb::ListSandboxEventsRequest {
                username: user.into(),
                calendar_id: String::new(),
            })
            .await?
            .into_inner()
            .events;
        assert_eq!(
            events.iter().any(|e| e.client_event_id == "whose"),
            has,
            "{user}: {events:?}"
        );
    }

    // Each user reconnecting lands on their own account.
    assert_eq!(
        connect_password(&mut c, "ada@example.com", "pw-ada-1")
            .await?
            .account_id,
        ada
    );
    assert_eq!(
        connect_password(&mut c, "ADA@example.com", "pw-other-2")
            .await?
            .account_id,
        other.account_id
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn reauthorising_as_a_user_whose_id_differs_only_in_case_is_refused() -> Result<()> {
    let (stack, scripted) = stack(
        Provider {
            lifetime_s: 3600,
            identity: "ada@oauth.example".into(),
            ..Default::default()
        },
        &[],
    )
    .await?;
    let (_, key) = stack.tenant("identity-oauth").await?;
    let mut c = stack.client(Some(&key)).await?;
    let ada = scripted.connect(&mut c, "").await?;
    wait_synced(&mut c, &ada.account_id).await?;

    // Someone else signs in on the consent screen of a re-authorisation
    // of ada's account.
    scripted.p().identity = "ADA@oauth.example".into();
    let e = scripted
        .connect(&mut c, &ada.account_id)
        .await
        .expect_err("another user re-authorised the account");
    let status = e
        .downcast_ref::<tonic::Status>()
        .ok_or_else(|| anyhow!("not a gRPC status: {e}"))?;
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    let kept = account(&mut c, &ada.account_id).await?;
    assert_eq!(kept.provider_account_id, "ada@oauth.example");
    assert_eq!(kept.status, pb::AccountStatus::Active as i32);

    // That user connecting on their own gets an account of their own.
    let other = scripted.connect(&mut c, "").await?;
    assert_ne!(other.account_id, ada.account_id);
    assert_eq!(other.provider_account_id, "ADA@oauth.example");

    // The same user re-authorises their account.
    scripted.p().identity = "ada@oauth.example".into();
    let again = scripted.connect(&mut c, &ada.account_id).await?;
    assert_eq!(again.account_id, ada.account_id);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn two_radicale_users_whose_principals_differ_only_in_case_are_two_accounts() -> Result<()> {
    let server = DavServer::start(ServerKind::Radicale).await?;
    assert_eq!(server.username, "user");
    // A second user, "User": Radicale keeps its principal apart (/User/).
    std::fs::OpenOptions::new()
        .append(true)
        .open(server.dir().join("htpasswd"))?
        .write_all(b"User:pw-Other-2\n")?;
    let stack = CaldavStack::start(1).await?;
    let (_, key) = stack.tenant("caldav-identity").await?;
    let mut c = stack.client(Some(&key)).await?;
    let first = connect(&mut c, &server, &server.password).await?;
    wait_synced(&mut c, &first.account_id).await?;
    assert!(first.provider_account_id.ends_with("/user/"), "{first:?}");

    let second = c
        .connect_password_account(pb::ConnectPasswordAccountRequest {
            provider: pb::Provider::Caldav as i32,
            server_url: server.base.clone(),
            username: "User".into(),
            password: "pw-Other-2".into(),
            access_level: pb::AccessLevel::ReadWrite as i32,
        })
        .await?
        .into_inner();
    assert_ne!(
        second.account_id, first.account_id,
        "took over the first account"
    );
    assert!(second.provider_account_id.ends_with("/User/"), "{second:?}");
    assert_eq!(
        first.provider_account_id.to_ascii_lowercase(),
        second.provider_account_id.to_ascii_lowercase()
    );
    let kept = account(&mut c, &first.account_id).await?;
    assert_eq!(kept.provider_account_id, first.provider_account_id);
    assert_eq!(kept.status, pb::AccountStatus::Active as i32);
    assert_eq!(
        connect(&mut c, &server, &server.password).await?.account_id,
        first.account_id
    );
    Ok(())
}
