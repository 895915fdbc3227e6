//! `calbridge events`: listing, reading, upserting and deleting events.

use anyhow::Result;
use calbridge::pb;
use chrono::{Duration, Utc};
use serde_json::json;

use super::Ctx;
use crate::cli::{EventRef, EventsCommand, UpsertArgs};
use crate::error::{Api, RpcResultExt};
use crate::output::{self, event_json};
use crate::timearg;

pub(super) async fn run(ctx: &Ctx, cmd: EventsCommand) -> Result<()> {
    match cmd {
        EventsCommand::List {
            account,
            calendar,
            window,
        } => {
            let window =
                timearg::window(&window, Utc::now(), Duration::days(1), Duration::days(30))?;
            list(ctx, account, calendar, window).await
        }
        EventsCommand::Get(r) => get(ctx, r).await,
        EventsCommand::Upsert(args) => upsert(ctx, *args).await,
        EventsCommand::Delete {
            event,
            expected_version,
        } => {
            let r = ctx
                .scheduler()
                .await?
                .delete_event(pb::DeleteEventRequest {
                    account_id: event.account,
                    calendar_id: event.calendar,
                    client_event_id: event.id.unwrap_or_default(),
                    provider_event_id: event.provider_id.unwrap_or_default(),
                    expected_version: expected_version.unwrap_or_default(),
                })
                .await
                .rpc(Api::Scheduler)?;
            if ctx.out.json {
                ctx.out
                    .json(&json!({ "outcome": r.outcome().as_str_name() }));
            } else {
                println!(
                    "{}",
                    match r.outcome() {
                        pb::WriteOutcome::AlreadyGone => "the event was already gone",
                        _ => "deleted the event",
                    }
                );
            }
            Ok(())
        }
    }
}

async fn list(ctx: &Ctx, account: String, calendar: String, window: pb::TimeWindow) -> Result<()> {
    let mut client = ctx.scheduler().await?;
    let mut events = Vec::new();
    let mut as_of = None;
    let mut page_token = String::new();
    loop {
        let r = client
            .list_events(pb::ListEventsRequest {
                account_id: account.clone(),
                calendar_id: calendar.clone(),
                window: Some(window),
                page_size: 1000,
                page_token,
            })
            .await
            .rpc(Api::Scheduler)?;
        events.extend(r.events);
        as_of = as_of.or(r.as_of);
        if r.next_page_token.is_empty() {
            break;
        }
        page_token = r.next_page_token;
    }
    if ctx.out.json {
        ctx.out.json(&json!({
            "window": {
                "start": output::ts(window.start.as_ref()),
                "end": output::ts(window.end.as_ref()),
            },
            "as_of": output::ts(as_of.as_ref()),
            "events": events.iter().map(event_json).collect::<Vec<_>>(),
        }));
    } else {
        if events.is_empty() {
            println!(
                "no events between {} and {}",
                output::ts_cell(window.start.as_ref()),
                output::ts_cell(window.end.as_ref())
            );
        } else {
            println!("{}", output::events_table(&events));
        }
        match output::ts(as_of.as_ref()) {
            Some(t) => println!("as of {t}"),
            None => println!("this calendar has not finished its first sync yet"),
        }
    }
    Ok(())
}

async fn get(ctx: &Ctx, r: EventRef) -> Result<()> {
    let e = ctx
        .scheduler()
        .await?
        .get_event(pb::GetEventRequest {
            account_id: r.account,
            calendar_id: r.calendar,
            client_event_id: r.id.unwrap_or_default(),
            provider_event_id: r.provider_id.unwrap_or_default(),
        })
        .await
        .rpc(Api::Scheduler)?;
    if ctx.out.json {
        ctx.out.json(&event_json(&e));
    } else {
        println!("{}", output::event_details(&e));
    }
    Ok(())
}

/// The event an upsert sends.
fn upsert_event(args: &UpsertArgs) -> Result<pb::Event> {
    let (start, end) = timearg::event_times(&args.fields)?;
    Ok(pb::Event {
        title: args.fields.title.clone(),
        description: args.description.clone().unwrap_or_default(),
        location: args.location.clone().unwrap_or_default(),
        start: Some(start),
        end: Some(end),
        status: if args.tentative {
            pb::EventStatus::Tentative
        } else {
            pb::EventStatus::Confirmed
        } as i32,
        transparency: if args.transparent {
            pb::Transparency::Transparent
        } else {
            pb::Transparency::Opaque
        } as i32,
        attendees: args
            .attendees
            .iter()
            .map(|email| pb::Attendee {
                email: email.clone(),
                ..Default::default()
            })
            .collect(),
        recurrence: args.recurrence.clone(),
        ..Default::default()
    })
}

async fn upsert(ctx: &Ctx, args: UpsertArgs) -> Result<()> {
    let event = upsert_event(&args)?;
    let r = ctx
        .scheduler()
        .await?
        .upsert_event(pb::UpsertEventRequest {
            account_id: args.account,
            calendar_id: args.calendar,
            client_event_id: args.id.unwrap_or_default(),
            event: Some(event),
            expected_version: args.expected_version.unwrap_or_default(),
            hold_id: String::new(),
            provider_event_id: args.provider_id.unwrap_or_default(),
        })
        .await
        .rpc(Api::Scheduler)?;
    if ctx.out.json {
        ctx.out.json(&json!({
            "outcome": r.outcome().as_str_name(),
            "event": r.event.as_ref().map(event_json),
        }));
    } else {
        println!(
            "{}",
            match r.outcome() {
                pb::WriteOutcome::Created => "created the event",
                pb::WriteOutcome::Updated => "updated the event",
                pb::WriteOutcome::Unchanged => "the event already had this content",
                _ => "wrote the event",
            }
        );
        if let Some(e) = &r.event {
            println!("{}", output::event_details(e));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn upsert_flags_become_an_event() {
        let cli = Cli::try_parse_from([
            "calbridge",
            "events",
            "upsert",
            "--account",
            "a",
            "--calendar",
            "c",
            "--id",
            "x",
            "--title",
            "Lunch",
            "--start",
            "2026-12-01T12:00",
            "--end",
            "2026-12-01T13:00",
            "--time-zone",
            "Europe/Paris",
            "--attendee",
            "bo@example.com",
            "--tentative",
        ])
        .unwrap();
        let Command::Events(EventsCommand::Upsert(args)) = cli.command else {
            panic!("not an upsert");
        };
        let e = upsert_event(&args).unwrap();
        assert_eq!(e.title, "Lunch");
        assert_eq!(e.status(), pb::EventStatus::Tentative);
        assert_eq!(e.transparency(), pb::Transparency::Opaque);
        assert_eq!(e.attendees[0].email, "bo@example.com");
        assert_eq!(
            output::event_time_cell(e.start.as_ref()),
            "2026-12-01T12:00:00+01:00"
        );
    }
}
