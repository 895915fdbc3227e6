//! The sandbox adapter served for real on 127.0.0.1: sign-in, writes, sync,
//! error codes, health, and push notifications delivered to a fake
//! scheduler callback.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use tokio::sync::{mpsc, oneshot};
use tonic::transport::{Channel, Server};
use tonic::{Code, Request, Response, Status};

use calbridge::pb::adapter_callback_server::{AdapterCallback, AdapterCallbackServer};
use calbridge::pb::calendar_adapter_client::CalendarAdapterClient;
use calbridge::pb::sandbox_control_client::SandboxControlClient;
use calbridge::pb::{self, AccessLevel};
use calbridge::time::{instant, to_timestamp};
use calbridge_adapter_sandbox::Config;

struct Callback(mpsc::UnboundedSender<pb::ProviderNotification>);

#[tonic::async_trait]
impl AdapterCallback for Callback {
    async fn notify_provider_change(
        &self,
        request: Request<pb::ProviderNotification>,
    ) -> Result<Response<pb::ProviderNotificationAck>, Status> {
        let _ = self.0.send(request.into_inner());
        Ok(Response::new(pb::ProviderNotificationAck {}))
    }
}

struct Running {
    channel: Channel,
    stop: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start() -> Running {
    let bound = calbridge_runtime::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = bound.addr;
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(calbridge_adapter_sandbox::serve(
        bound,
        Config::new(addr),
        async move {
            let _ = stopped.await;
        },
    ));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Running {
        channel,
        stop,
        server,
    }
}

fn window() -> pb::TimeWindow {
    pb::TimeWindow {
        start: Some(to_timestamp(
            Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        )),
        end: Some(to_timestamp(
            Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap(),
        )),
    }
}

fn meeting(title: &str, day: u32) -> pb::Event {
    pb::Event {
        title: title.into(),
        start: Some(instant(
            Utc.with_ymd_and_hms(2026, 1, day, 9, 0, 0).unwrap(),
            "",
        )),
        end: Some(instant(
            Utc.with_ymd_and_hms(2026, 1, day, 10, 0, 0).unwrap(),
            "",
        )),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_signed_in_user_writes_syncs_and_gets_push_notifications() {
    let running = start().await;
    let mut adapter = CalendarAdapterClient::new(running.channel.clone());
    let mut control = SandboxControlClient::new(running.channel.clone());

    let caps = adapter
        .describe(pb::DescribeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(caps.provider(), pb::Provider::Sandbox);
    assert!(caps.push && caps.incremental_sync && !caps.oauth);
    assert_eq!(caps.poll_interval_seconds, 30);

    let mut health = tonic_health::pb::health_client::HealthClient::new(running.channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: calbridge::services::SANDBOX_CONTROL.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.status, 1, "SERVING");

    let user = "grace@example.com";
    let credentials = adapter
        .check_password(pb::CheckPasswordRequest {
            username: user.into(),
            password: "pw".into(),
            access_level: AccessLevel::ReadWrite as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(credentials.provider_account_id, user);
    let wrong = adapter
        .check_password(pb::CheckPasswordRequest {
            username: user.into(),
            password: "nope".into(),
            access_level: AccessLevel::ReadWrite as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert!(!wrong.message().contains("nope"));

    let calendars = adapter
        .list_calendars(pb::ListProviderCalendarsRequest {
            credentials: Some(credentials.clone()),
        })
        .await
        .unwrap()
        .into_inner()
        .calendars;
    let primary = calendars[0].calendar_id.clone();
    assert!(calendars[0].primary);

    // A fake scheduler callback, and a channel on the primary calendar.
    let (tx, mut notifications) = mpsc::unbounded_channel();
    let cb = calbridge_runtime::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let cb_addr = cb.addr;
    tokio::spawn(
        Server::builder()
            .add_service(AdapterCallbackServer::new(Callback(tx)))
            .serve_with_incoming(cb.incoming),
    );
    let watch = adapter
        .start_watch(pb::StartWatchRequest {
            credentials: Some(credentials.clone()),
            calendar_id: primary.clone(),
            channel_id: "chan-1".into(),
            channel_token: "tok".into(),
            callback_endpoint: format!("http://{cb_addr}"),
            ttl_seconds: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(watch.resource_id, primary);

    let created = adapter
        .create_event(pb::ProviderCreateEventRequest {
            credentials: Some(credentials.clone()),
            calendar_id: primary.clone(),
            event: Some(meeting("Standup", 5)),
            idempotency_key: "k1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!created.already_existed);
    let n = tokio::time::timeout(Duration::from_secs(10), notifications.recv())
        .await
        .expect("a notification within 10 s")
        .unwrap();
    assert_eq!(
        (
            n.channel_id.as_str(),
            n.channel_token.as_str(),
            n.resource_state.as_str()
        ),
        ("chan-1", "tok", "exists")
    );

    // An outside edit notifies too.
    control
        .put_event(pb::PutSandboxEventRequest {
            username: user.into(),
            calendar_id: String::new(),
            event: Some(meeting("Dentist", 6)),
        })
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(10), notifications.recv())
        .await
        .expect("a notification within 10 s")
        .unwrap();
    assert_eq!(n.message_number, 2);

    let page = adapter
        .sync_events(pb::SyncEventsRequest {
            credentials: Some(credentials.clone()),
            calendar_id: primary.clone(),
            cursor: String::new(),
            window: Some(window()),
            page_size: 0,
            busy_only: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(page.full_listing && !page.more);
    assert_eq!(page.upserted.len(), 2);

    let stale = adapter
        .update_event(pb::ProviderUpdateEventRequest {
            credentials: Some(credentials.clone()),
            calendar_id: primary.clone(),
            provider_event_id: created.event.as_ref().unwrap().provider_event_id.clone(),
            event: Some(meeting("Standup", 7)),
            expected_version: "v0".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    assert_eq!(
        stale
            .metadata()
            .get(calbridge::metadata::CURRENT_VERSION)
            .and_then(|v| v.to_str().ok()),
        Some(created.event.as_ref().unwrap().version.as_str())
    );

    let expired = adapter
        .sync_events(pb::SyncEventsRequest {
            credentials: Some(credentials.clone()),
            calendar_id: primary.clone(),
            cursor: "garbage".into(),
            window: Some(window()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(expired.code(), Code::OutOfRange);

    control
        .revoke_user_access(pb::RevokeUserAccessRequest {
            username: user.into(),
        })
        .await
        .unwrap();
    let revoked = adapter
        .list_calendars(pb::ListProviderCalendarsRequest {
            credentials: Some(credentials.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(revoked.code(), Code::Unauthenticated);

    let oauth = adapter
        .build_authorization_url(pb::BuildAuthorizationUrlRequest::default())
        .await
        .unwrap_err();
    assert_eq!(oauth.code(), Code::Unimplemented);

    running.stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running.server)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
}
