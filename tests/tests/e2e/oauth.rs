//! The scheduler's side of OAuth against a scripted OAuth adapter served by
//! the test (a real gRPC server the real scheduler process calls): states
//! are single-use and bound to the exact redirect URI and the tenant, the
//! PKCE verifier reaches the exchange, access tokens are refreshed ahead of
//! expiry and rotated refresh tokens are persisted (across a restart),
//! `invalid_grant` makes the account REAUTH_REQUIRED with the mirror kept
//! until it is authorised again, and the HTTP callback endpoint completes
//! the flow and sends the browser on (an error redirect, which anyone can
//! forge, leaves the pending state alone). Tokens never reach the disk in
//! clear.

use std::time::Duration;

use anyhow::{anyhow, Result};
use calbridge::pb::{self, ChangeKind};
use calbridge_e2e::scripted::{stack, Provider, CALENDAR, REDIRECT};
use calbridge_e2e::{dir_contains, eventually, free_port, wait_synced, SchedulerClient};
use tonic::Status;

fn violation_field(s: &Status) -> Option<String> {
    tonic_types::StatusExt::get_details_bad_request(s)
        .and_then(|b| b.field_violations.first().map(|v| v.field.clone()))
}

async fn begin(c: &mut SchedulerClient, redirect: &str, account: &str) -> Result<String> {
    Ok(c.begin_authorization(pb::BeginAuthorizationRequest {
        provider: pb::Provider::Google as i32,
        access_level: pb::AccessLevel::ReadWrite as i32,
        redirect_uri: redirect.into(),
        login_hint: String::new(),
        account_id: account.into(),
    })
    .await?
    .into_inner()
    .state)
}

async fn complete(
    c: &mut SchedulerClient,
    state: &str,
    code: &str,
    redirect: &str,
) -> Result<pb::Account, Status> {
    c.complete_authorization(pb::CompleteAuthorizationRequest {
        state: state.into(),
        code: code.into(),
        redirect_uri: redirect.into(),
    })
    .await
    .map(|r| r.into_inner())
}

fn provider(lifetime_s: i64, rotate: bool) -> Provider {
    Provider {
        lifetime_s,
        rotate,
        ..Default::default()
    }
}

/// A stack whose scheduler completes consent redirects itself at an HTTP
/// callback and then sends the browser to
/// `https://platform.example/connected`.
struct CallbackStack {
    stack: calbridge_e2e::Stack,
    scripted: calbridge_e2e::scripted::Scripted,
    /// A client of a new tenant.
    c: SchedulerClient,
    /// An HTTP client that does not follow redirects (the browser).
    http: reqwest::Client,
    /// The callback's URL.
    callback: String,
}

async fn callback_stack(tenant: &str) -> Result<CallbackStack> {
    let listen = format!("127.0.0.1:{}", free_port());
    let (stack, scripted) = stack(
        provider(3600, false),
        &[
            "--oauth-callback-listen",
            &listen,
            "--oauth-return-url",
            "https://platform.example/connected",
        ],
    )
    .await?;
    let (_, key) = stack.tenant(tenant).await?;
    let c = stack.client(Some(&key)).await?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    Ok(CallbackStack {
        stack,
        scripted,
        c,
        http,
        callback: format!("http://{listen}/oauth/callback"),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn states_are_single_use_and_bound_to_redirect_uri_and_tenant() -> Result<()> {
    let (mut stack, scripted) = stack(provider(3600, false), &[]).await?;
    let (_, key) = stack.tenant("oauth-a").await?;
    let (_, other_key) = stack.tenant("oauth-b").await?;
    let mut c = stack.client(Some(&key)).await?;
    let mut other = stack.client(Some(&other_key)).await?;

    // Bad requests name the field.
    for (provider, redirect, field) in [
        (pb::Provider::Caldav, REDIRECT, "provider"),
        (pb::Provider::Google, "", "redirect_uri"),
        (pb::Provider::Google, "/relative", "redirect_uri"),
    ] {
        let e = c
            .begin_authorization(pb::BeginAuthorizationRequest {
                provider: provider as i32,
                access_level: pb::AccessLevel::ReadWrite as i32,
                redirect_uri: redirect.into(),
                ..Default::default()
            })
            .await
            .expect_err("bad request accepted");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert_eq!(violation_field(&e).as_deref(), Some(field), "{e:?}");
    }

    // A wrong redirect URI is refused (checked before the state is taken,
    // so the mistake does not use it up).
    let state = begin(&mut c, REDIRECT, "").await?;
    let code = scripted.p().consent(&state)?;
    let e = complete(&mut c, &state, &code, "https://evil.example/cb")
        .await
        .expect_err("wrong redirect accepted");
    assert_eq!(violation_field(&e).as_deref(), Some("redirect_uri"));

    // Another tenant cannot complete this tenant's state.
    let e = complete(&mut other, &state, &code, REDIRECT)
        .await
        .expect_err("other tenant accepted");
    assert_eq!(violation_field(&e).as_deref(), Some("state"));

    // The right one works once: the adapter checked the PKCE verifier.
    let a = complete(&mut c, &state, &code, REDIRECT).await?;
    assert_eq!(a.status, pb::AccountStatus::Active as i32);
    assert_eq!(a.provider_account_id, "ada@oauth.example");
    let e = complete(&mut c, &state, &code, REDIRECT)
        .await
        .expect_err("replayed state accepted");
    assert_eq!(violation_field(&e).as_deref(), Some("state"));
    wait_synced(&mut c, &a.account_id).await?;

    // Tokens and the verifier are sealed on disk.
    stack.scheduler.kill9().await;
    assert!(!dir_contains(stack.dir.path(), b"s3cr3t-token-value")?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_refreshed_ahead_of_expiry_and_rotations_survive_a_restart() -> Result<()> {
    // Tokens live 60 s and are refreshed 300 s ahead: every use refreshes,
    // and every refresh rotates the refresh token (old ones stop working).
    let (mut stack, scripted) = stack(provider(60, true), &[]).await?;
    let (_, key) = stack.tenant("oauth-refresh").await?;
    let mut c = stack.client(Some(&key)).await?;
    let a = scripted.connect(&mut c, "").await?;
    wait_synced(&mut c, &a.account_id).await?;
    eventually(Duration::from_secs(30), "three refreshes", || async {
        (scripted.p().refreshes >= 3).then_some(())
    })
    .await?;

    stack.scheduler.kill9().await;
    stack.restart_scheduler().await?;
    let mut c = stack.client(Some(&key)).await?;
    let before = scripted.p().refreshes;
    eventually(
        Duration::from_secs(30),
        "refreshes after restart",
        || async { (scripted.p().refreshes >= before + 2).then_some(()) },
    )
    .await?;
    let acc = c
        .get_account(pb::GetAccountRequest {
            account_id: a.account_id.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(acc.status, pb::AccountStatus::Active as i32, "{acc:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_grant_needs_reauthorisation_and_keeps_the_mirror() -> Result<()> {
    let (stack, scripted) = stack(provider(60, false), &[]).await?;
    let (_, key) = stack.tenant("oauth-reauth").await?;
    let mut c = stack.client(Some(&key)).await?;
    let a = scripted.connect(&mut c, "").await?;
    wait_synced(&mut c, &a.account_id).await?;
    let cursor = c
        .get_change_cursor(pb::GetChangeCursorRequest {})
        .await?
        .into_inner()
        .cursor;

    scripted.p().refuse_refresh = true;
    let change = eventually(Duration::from_secs(30), "REAUTH_REQUIRED", || {
        let mut c = c.clone();
        let cursor = cursor.clone();
        async move {
            c.list_changes(pb::ListChangesRequest {
                cursor,
                page_size: 100,
            })
            .await
            .ok()?
            .into_inner()
            .changes
            .into_iter()
            .find(|ch| ch.kind == ChangeKind::AccountStatus as i32)
        }
    })
    .await?;
    assert_eq!(
        change.account_status,
        pb::AccountStatus::ReauthRequired as i32
    );
    let events = |c: &mut SchedulerClient| {
        let mut c = c.clone();
        let account_id = a.account_id.clone();
        async move {
            Ok::<_, anyhow::Error>(
                c.list_events(pb::ListEventsRequest {
                    account_id,
                    calendar_id: CALENDAR.into(),
                    window: Some(pb::TimeWindow {
                        start: Some(calbridge::time::to_timestamp(chrono::Utc::now())),
                        end: Some(calbridge::time::to_timestamp(
                            chrono::Utc::now() + chrono::Duration::days(7),
                        )),
                    }),
                    ..Default::default()
                })
                .await?
                .into_inner()
                .events,
            )
        }
    };
    assert_eq!(events(&mut c).await?.len(), 1, "the mirror is kept");

    // A re-authorisation of the same account brings it back.
    scripted.p().refuse_refresh = false;
    let again = scripted.connect(&mut c, &a.account_id).await?;
    assert_eq!(again.account_id, a.account_id);
    assert_eq!(again.status, pb::AccountStatus::Active as i32);
    assert_eq!(events(&mut c).await?.len(), 1);
    let refreshes = scripted.p().refreshes;
    eventually(Duration::from_secs(30), "sync resumes", || async {
        (scripted.p().refreshes > refreshes).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_http_callback_completes_and_sends_the_browser_on() -> Result<()> {
    let CallbackStack {
        stack: _stack,
        scripted,
        mut c,
        http,
        callback,
    } = callback_stack("oauth-http").await?;

    // No redirect URI given: the callback endpoint is the redirect.
    let state = begin(&mut c, "", "").await?;
    assert_eq!(scripted.p().consents[&state].1, callback);
    let code = scripted.p().consent(&state)?;
    let r = http
        .get(&callback)
        .query(&[("state", &state), ("code", &code)])
        .send()
        .await?;
    assert_eq!(r.status(), 302);
    let location = r.headers()["location"].to_str()?.to_string();
    let account_id = location
        .strip_prefix("https://platform.example/connected?account_id=")
        .ok_or_else(|| anyhow!("unexpected location {location}"))?;
    let a = c
        .get_account(pb::GetAccountRequest {
            account_id: account_id.into(),
        })
        .await?
        .into_inner();
    assert_eq!(a.status, pb::AccountStatus::Active as i32);

    // The same redirect again: the state is used up.
    let r = http
        .get(&callback)
        .query(&[("state", &state), ("code", &code)])
        .send()
        .await?;
    assert_eq!(
        r.headers()["location"].to_str()?,
        "https://platform.example/connected?error=invalid_request"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn no_error_redirect_wrong_code_or_other_tenant_can_burn_a_pending_state() -> Result<()> {
    let CallbackStack {
        stack,
        scripted,
        mut c,
        http,
        callback,
    } = callback_stack("oauth-burn").await?;

    // Anyone who saw the consent URL knows the state and can send an error
    // redirect with it, before the user's own redirect arrives.
    let state = begin(&mut c, "", "").await?;
    let code = scripted.p().consent(&state)?;
    for _ in 0..2 {
        let r = http
            .get(&callback)
            .query(&[("state", state.as_str()), ("error", "access_denied")])
            .send()
            .await?;
        assert_eq!(
            r.headers()["location"].to_str()?,
            "https://platform.example/connected?error=access_denied_or_failed"
        );
    }

    // Nor a made-up code at the callback, nor another tenant or a wrong
    // redirect URI at CompleteAuthorization.
    let r = http
        .get(&callback)
        .query(&[("state", state.as_str()), ("code", "made-up")])
        .send()
        .await?;
    assert_eq!(
        r.headers()["location"].to_str()?,
        "https://platform.example/connected?error=invalid_grant"
    );
    let (_, other_key) = stack.tenant("oauth-burn-other").await?;
    let mut other = stack.client(Some(&other_key)).await?;
    let e = complete(&mut other, &state, "made-up", &callback)
        .await
        .expect_err("another tenant's state");
    assert_eq!(violation_field(&e).as_deref(), Some("state"));
    let e = complete(&mut c, &state, "made-up", "https://elsewhere.example/cb")
        .await
        .expect_err("a wrong redirect URI");
    assert_eq!(violation_field(&e).as_deref(), Some("redirect_uri"));

    // The user's redirect still completes the authorisation, once.
    let r = http
        .get(&callback)
        .query(&[("state", &state), ("code", &code)])
        .send()
        .await?;
    let location = r.headers()["location"].to_str()?.to_string();
    let account_id = location
        .strip_prefix("https://platform.example/connected?account_id=")
        .ok_or_else(|| anyhow!("the state was burnt: {location}"))?;
    let a = c
        .get_account(pb::GetAccountRequest {
            account_id: account_id.into(),
        })
        .await?
        .into_inner();
    assert_eq!(a.status, pb::AccountStatus::Active as i32);
    let e = complete(&mut c, &state, &code, &callback)
        .await
        .expect_err("a completed state accepted again");
    assert_eq!(violation_field(&e).as_deref(), Some("state"));
    Ok(())
}
