//! Describe against behaviour: each capability an adapter claims works,
//! and each it disclaims is answered UNIMPLEMENTED — and only then.

use anyhow::{Context, Result};
use calbridge::pb::{self, provider_credentials::Secret};
use calbridge_e2e::timed_event;
use tonic::Code;

use super::{at, code, window, Case};
use crate::fixtures::Fixture;

/// Describe names the fixture's provider and usable limits; sign-in, push,
/// native free/busy and incremental sync each behave as it says.
pub(crate) async fn describe_matches_what_the_adapter_answers<F: Fixture>() -> Result<()> {
    let mut c = Case::<F>::start().await?;
    let caps = c
        .adapter
        .describe(pb::DescribeRequest {})
        .await?
        .into_inner();
    assert_eq!(caps.provider(), F::PROVIDER, "{caps:?}");
    assert!(caps.max_page_size > 0, "{caps:?}");
    assert!(caps.poll_interval_seconds > 0, "{caps:?}");

    // Sign-in: the fixture signed in the only way the adapter offers.
    let oauth_calls = [
        code(
            &c.adapter
                .build_authorization_url(pb::BuildAuthorizationUrlRequest {
                    access_level: pb::AccessLevel::ReadWrite as i32,
                    redirect_uri: "http://127.0.0.1:9/oauth/callback".into(),
                    state: "conformance-state".into(),
                    code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
                    login_hint: String::new(),
                })
                .await,
        ),
        code(
            &c.adapter
                .refresh_credentials(pb::RefreshCredentialsRequest {
                    credentials: Some(c.creds.clone()),
                })
                .await,
        ),
    ];
    let password = c
        .adapter
        .check_password(pb::CheckPasswordRequest {
            server_url: String::new(),
            username: "someone".into(),
            password: "not-the-password".into(),
            access_level: pb::AccessLevel::ReadWrite as i32,
        })
        .await;
    if caps.oauth {
        assert!(
            matches!(c.creds.secret, Some(Secret::Oauth(_))),
            "{:?}",
            c.creds.access_level
        );
        assert_eq!(oauth_calls, [Code::Ok, Code::Ok], "OAuth is claimed");
        assert_eq!(code(&password), Code::Unimplemented, "{password:?}");
    } else {
        assert!(matches!(c.creds.secret, Some(Secret::Password(_))));
        assert_eq!(oauth_calls, [Code::Unimplemented; 2], "OAuth is disclaimed");
        let exchange = c
            .adapter
            .exchange_code(pb::ExchangeCodeRequest::default())
            .await;
        assert_eq!(code(&exchange), Code::Unimplemented, "{exchange:?}");
        assert_ne!(code(&password), Code::Unimplemented, "{password:?}");
    }

    // Push.
    let watch = c
        .adapter
        .start_watch(pb::StartWatchRequest {
            credentials: Some(c.creds.clone()),
            calendar_id: c.calendar.clone(),
            channel_id: "conformance-channel-1".into(),
            channel_token: "conformance-token".into(),
            callback_endpoint: format!("http://127.0.0.1:{}", c.f.scheduler_port()),
            ttl_seconds: 600,
        })
        .await;
    if caps.push {
        let channel = watch
            .context("push is claimed, StartWatch failed")?
            .into_inner();
        assert_eq!(channel.channel_id, "conformance-channel-1");
        assert!(!channel.resource_id.is_empty(), "{channel:?}");
        c.adapter
            .stop_watch(pb::StopWatchRequest {
                credentials: Some(c.creds.clone()),
                channel_id: channel.channel_id,
                resource_id: channel.resource_id,
            })
            .await?;
    } else {
        assert_eq!(code(&watch), Code::Unimplemented, "{watch:?}");
    }

    // Native free/busy, asked as the scheduler does: for FREE_BUSY
    // accounts.
    let created = c
        .create("busy-1", timed_event("Busy", at(3, 9), 30))
        .await?;
    let busy_creds = c.f.credentials(pb::AccessLevel::FreeBusy).await?;
    let busy = c
        .adapter
        .query_free_busy(pb::ProviderFreeBusyRequest {
            credentials: Some(busy_creds),
            calendar_ids: vec![c.calendar.clone()],
            window: Some(window()),
        })
        .await;
    if caps.native_free_busy {
        let busy = busy
            .context("native free/busy is claimed")?
            .into_inner()
            .busy;
        let start = calbridge::time::to_timestamp(at(3, 9));
        assert!(
            busy.iter().any(|b| b.start.as_ref() == Some(&start)),
            "{busy:?}"
        );
    } else {
        assert_eq!(code(&busy), Code::Unimplemented, "{busy:?}");
    }

    // Incremental sync: with nothing changed, a settled cursor answers an
    // empty page of changes; without it, every sync is a listing.
    let (_, settled) = c.listing_and_settled_cursor().await?;
    let idle = c.sync(&settled, 0).await?;
    if caps.incremental_sync {
        for p in &idle {
            assert!(
                !p.full_listing && p.upserted.is_empty() && p.deleted.is_empty(),
                "{p:?}"
            );
        }
    } else {
        assert!(idle.iter().all(|p| p.full_listing), "{idle:?}");
        assert!(super::find(&idle, &created.provider_event_id).is_some());
    }
    c.finish().await
}

/// A recurring series is written when Describe says `recurrence_writes`
/// (and then synced as linked instances), and refused UNIMPLEMENTED, with
/// nothing written, when it does not.
pub(crate) async fn series_writes_follow_the_recurrence_capability<F: Fixture>() -> Result<()> {
    let mut c = Case::<F>::start().await?;
    let caps = c
        .adapter
        .describe(pb::DescribeRequest {})
        .await?
        .into_inner();
    let before = c.f.provider_event_ids().await?;
    let mut series = timed_event("Daily sync", at(2, 8), 15);
    series.recurrence = vec!["RRULE:FREQ=DAILY;COUNT=3".into()];
    let request = c.create_request("series-1", series);
    let answer = c.adapter.create_event(request).await;
    if caps.recurrence_writes {
        let master = answer
            .context("recurrence writes are claimed")?
            .into_inner()
            .event
            .context("CreateEvent answered no event")?;
        let listing = c.sync("", 0).await?;
        let instances: Vec<&pb::Event> = listing
            .iter()
            .flat_map(|p| &p.upserted)
            .filter(|e| {
                e.recurrence_link
                    .as_ref()
                    .is_some_and(|l| l.series_event_id == master.provider_event_id)
            })
            .collect();
        assert_eq!(instances.len(), 3, "{listing:?}");
    } else {
        assert_eq!(code(&answer), Code::Unimplemented, "{answer:?}");
        assert_eq!(
            c.f.provider_event_ids().await?,
            before,
            "nothing was written"
        );
    }
    c.finish().await
}
