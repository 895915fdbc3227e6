//! What the benchmarks that query availability share: the engine's
//! scenario seeded as sandbox users over the API.

use anyhow::Result;
use calbridge::pb;
use calbridge_e2e::{wait_synced, SandboxClient, SchedulerClient};
use calbridge_scheduler::availability::{BusySpan, BusyStatus, ParticipantData};

/// A seeded participant: account id, and its meeting limits per day and
/// per week.
pub(crate) type Member = (String, u32, u32);

/// Seeds each of `people` as a sandbox user `p{i}@example.com` holding its
/// busy blocks (moved `weeks` later, `shift_ms` for timed ones), connects
/// it at FREE_BUSY, stores its working hours as `wh{i}`, and waits until
/// every account has synced.
pub(crate) async fn seed(
    c: &mut SchedulerClient,
    sandbox: &mut SandboxClient,
    people: &[ParticipantData],
    shift_ms: i64,
    weeks: i64,
) -> Result<Vec<Member>> {
    let mut members = Vec::with_capacity(people.len());
    for (i, p) in people.iter().enumerate() {
        let user = format!("p{i}@example.com");
        sandbox
            .create_user(pb::CreateSandboxUserRequest {
                username: user.clone(),
                password: "pw".into(),
            })
            .await?;
        for b in p.busy() {
            let (start, end) = match b.span {
                BusySpan::Timed { start_ms, end_ms } => (
                    calbridge::time::instant(
                        chrono::DateTime::from_timestamp_millis(start_ms + shift_ms).unwrap(),
                        "UTC",
                    ),
                    calbridge::time::instant(
                        chrono::DateTime::from_timestamp_millis(end_ms + shift_ms).unwrap(),
                        "UTC",
                    ),
                ),
                BusySpan::AllDay { start, end } => (
                    calbridge::time::date(start + chrono::Duration::weeks(weeks)),
                    calbridge::time::date(end + chrono::Duration::weeks(weeks)),
                ),
            };
            let mut e = pb::Event {
                title: "Busy".into(),
                start: Some(start),
                end: Some(end),
                ..Default::default()
            };
            match b.status {
                BusyStatus::Tentative => e.status = pb::EventStatus::Tentative as i32,
                BusyStatus::OutOfOffice => e.event_type = pb::EventType::OutOfOffice as i32,
                BusyStatus::Free => e.transparency = pb::Transparency::Transparent as i32,
                BusyStatus::Busy => {}
            }
            sandbox
                .put_event(pb::PutSandboxEventRequest {
                    username: user.clone(),
                    calendar_id: String::new(),
                    event: Some(e),
                })
                .await?;
        }
        let account = c
            .connect_password_account(pb::ConnectPasswordAccountRequest {
                provider: pb::Provider::Sandbox as i32,
                server_url: String::new(),
                username: user,
                password: "pw".into(),
                access_level: pb::AccessLevel::FreeBusy as i32,
            })
            .await?
            .into_inner()
            .account_id;
        c.put_working_hours(pb::PutWorkingHoursRequest {
            working_hours_id: format!("wh{i}"),
            hours: Some(
                calbridge_scheduler::meetings::scenario_hours(p, weeks)
                    .expect("scenario has working hours"),
            ),
        })
        .await?;
        members.push((account, p.max_events_per_day(), p.max_events_per_week()));
    }
    for (account, _, _) in &members {
        wait_synced(c, account).await?;
    }
    Ok(members)
}
