//! `calbridge sandbox`: edits to the sandbox provider made "outside"
//! calbridge, as a user would make them in their calendar app.

use anyhow::Result;
use calbridge::pb;
use serde_json::json;

use super::Ctx;
use crate::cli::{EventFields, SandboxCommand, SandboxSubcommand};
use crate::client;
use crate::error::{Api, RpcResultExt};
use crate::output::{self, event_json};
use crate::timearg;

/// The event a put-event sends.
fn sandbox_event(
    fields: &EventFields,
    provider_id: Option<String>,
    rrule: Option<String>,
) -> Result<pb::Event> {
    let (start, end) = timearg::event_times(fields)?;
    let recurrence = rrule
        .map(|r| {
            let r = r.trim();
            if r.to_ascii_uppercase().starts_with("RRULE:") {
                r.to_string()
            } else {
                format!("RRULE:{r}")
            }
        })
        .into_iter()
        .collect();
    Ok(pb::Event {
        provider_event_id: provider_id.unwrap_or_default(),
        title: fields.title.clone(),
        start: Some(start),
        end: Some(end),
        status: pb::EventStatus::Confirmed as i32,
        transparency: pb::Transparency::Opaque as i32,
        recurrence,
        ..Default::default()
    })
}

pub(super) async fn run(ctx: &Ctx, cmd: SandboxCommand) -> Result<()> {
    let mut sandbox = client::sandbox(&cmd.sandbox).await?;
    let out = ctx.out;
    match cmd.command {
        SandboxSubcommand::CreateUser { user, password } => {
            let u = sandbox
                .create_user(pb::CreateSandboxUserRequest {
                    username: user,
                    password,
                })
                .await
                .rpc(Api::Sandbox)?;
            if out.json {
                out.json(&json!({ "username": u.username, "calendar_ids": u.calendar_ids }));
            } else {
                println!(
                    "sandbox user {} with calendars: {}",
                    u.username,
                    u.calendar_ids.join(", ")
                );
            }
        }
        SandboxSubcommand::Events { user, calendar } => {
            let r = sandbox
                .list_provider_events(pb::ListSandboxEventsRequest {
                    username: user,
                    calendar_id: calendar.unwrap_or_default(),
                })
                .await
                .rpc(Api::Sandbox)?;
            if out.json {
                out.json(&json!({ "events": r.events.iter().map(event_json).collect::<Vec<_>>() }));
            } else if r.events.is_empty() {
                println!("no events at the provider");
            } else {
                println!("{}", output::events_table(&r.events));
            }
        }
        SandboxSubcommand::PutEvent {
            user,
            calendar,
            provider_id,
            fields,
            rrule,
        } => {
            let event = sandbox_event(&fields, provider_id, rrule)?;
            let e = sandbox
                .put_event(pb::PutSandboxEventRequest {
                    username: user,
                    calendar_id: calendar.unwrap_or_default(),
                    event: Some(event),
                })
                .await
                .rpc(Api::Sandbox)?;
            if out.json {
                out.json(&event_json(&e));
            } else {
                println!("put the event at the provider:");
                println!("{}", output::event_details(&e));
            }
        }
        SandboxSubcommand::RemoveEvent {
            user,
            calendar,
            provider_id,
        } => {
            sandbox
                .remove_event(pb::RemoveSandboxEventRequest {
                    username: user,
                    calendar_id: calendar.unwrap_or_default(),
                    provider_event_id: provider_id.clone(),
                })
                .await
                .rpc(Api::Sandbox)?;
            if out.json {
                out.json(&json!({ "provider_event_id": provider_id, "removed": true }));
            } else {
                println!("removed event {provider_id} at the provider");
            }
        }
        SandboxSubcommand::Revoke { user } => {
            sandbox
                .revoke_user_access(pb::RevokeUserAccessRequest {
                    username: user.clone(),
                })
                .await
                .rpc(Api::Sandbox)?;
            if out.json {
                out.json(&json!({ "username": user, "revoked": true }));
            } else {
                println!("the provider now rejects {user}'s current credentials");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_rrule_gets_its_property_name() {
        let fields = EventFields {
            title: "Standup".into(),
            start: "2026-12-01T09:00:00Z".into(),
            end: "2026-12-01T09:15:00Z".into(),
            time_zone: None,
            all_day: false,
        };
        let e = sandbox_event(&fields, None, Some("FREQ=DAILY;COUNT=5".into())).unwrap();
        assert_eq!(e.recurrence, vec!["RRULE:FREQ=DAILY;COUNT=5"]);
        let e = sandbox_event(&fields, Some("p1".into()), Some("RRULE:FREQ=DAILY".into())).unwrap();
        assert_eq!(e.recurrence, vec!["RRULE:FREQ=DAILY"]);
        assert_eq!(e.provider_event_id, "p1");
    }
}
