//! Availability over gRPC against the mirror: slots avoid busy time and
//! respect working hours in each participant's zone; explain names the
//! blocking event; holds block later queries and are consumed by the upsert
//! that confirms them; sequences chain steps; bad input names the field.

use anyhow::Result;
use calbridge::pb;
use calbridge_e2e::{timed_event, Stack};
use chrono::{Datelike, Duration, TimeZone, Utc, Weekday};
use tonic::Code;
use tonic_types::StatusExt;

fn ms(t: &Option<prost_types::Timestamp>) -> i64 {
    let t = t.as_ref().expect("timestamp");
    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
}

fn window(start: chrono::DateTime<Utc>, end: chrono::DateTime<Utc>) -> pb::TimeWindow {
    pb::TimeWindow {
        start: Some(calbridge::time::to_timestamp(start)),
        end: Some(calbridge::time::to_timestamp(end)),
    }
}

fn weekdays(zone: &str, start: &str, end: &str) -> pb::WorkingHours {
    pb::WorkingHours {
        time_zone: zone.into(),
        weekly: (1..=5)
            .map(|d| pb::WeeklyRule {
                weekday: d,
                start: start.into(),
                end: end.into(),
            })
            .collect(),
        overrides: vec![],
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn availability_answers_from_the_mirror_with_explain_holds_and_sequences() -> Result<()> {
    let stack = Stack::start().await?;
    let (_, key) = stack.tenant("avail").await?;
    let mut c = stack.client(Some(&key)).await?;
    let (ada, ada_cal) = stack
        .sandbox_account(&mut c, "ada@example.com", "pw-ada-1")
        .await?;
    let (bob, _) = stack
        .sandbox_account(&mut c, "bob@example.com", "pw-bob-1")
        .await?;

    // Next Wednesday, whole day UTC, is the search period.
    let mut day = Utc::now().date_naive() + Duration::days(7);
    while day.weekday() != Weekday::Wed {
        day += Duration::days(1);
    }
    let at = |h: u32, m: u32| Utc.from_utc_datetime(&day.and_hms_opt(h, m, 0).unwrap());
    // Ada (London, UTC+0 in winter; the test accepts either offset by
    // reading the slots, not assuming them) is busy 10:00-11:00 UTC.
    let busy = c
        .upsert_event(pb::UpsertEventRequest {
            provider_event_id: String::new(),
            account_id: ada.clone(),
            calendar_id: ada_cal.clone(),
            client_event_id: "ada-busy".into(),
            event: Some(timed_event("Busy", at(10, 0), 60)),
            expected_version: String::new(),
            hold_id: String::new(),
        })
        .await?
        .into_inner()
        .event
        .unwrap();
    c.put_working_hours(pb::PutWorkingHoursRequest {
        working_hours_id: "london-9-17".into(),
        hours: Some(weekdays("Europe/London", "09:00", "17:00")),
    })
    .await?;
    let member = |account: &str, stored: bool| pb::AvailabilityMember {
        account_id: account.into(),
        working_hours_id: if stored {
            "london-9-17".into()
        } else {
            String::new()
        },
        working_hours: if stored {
            None
        } else {
            Some(weekdays("America/New_York", "09:00", "17:00"))
        },
        ..Default::default()
    };
    let query = pb::QueryAvailabilityRequest {
        groups: vec![pb::ParticipantGroup {
            members: vec![member(&ada, true), member(&bob, false)],
            required: 0,
        }],
        duration_minutes: 30,
        periods: vec![window(at(0, 0), at(23, 59))],
        start_interval_minutes: 15,
        format: pb::AvailabilityFormat::OverlappingSlots as i32,
        max_results: 1000,
        ..Default::default()
    };
    let slots = c.query_availability(query.clone()).await?.into_inner();
    assert!(
        !slots.slots.is_empty(),
        "London and New York overlap on a Wednesday"
    );
    let london = chrono_tz::Europe::London;
    let new_york = chrono_tz::America::New_York;
    for s in &slots.slots {
        let (start, end) = (ms(&s.start), ms(&s.end));
        assert_eq!(end - start, 30 * 60_000);
        assert_eq!(start % (15 * 60_000), 0, "on the 15-minute grid");
        assert!(
            end <= at(10, 0).timestamp_millis() || start >= at(11, 0).timestamp_millis(),
            "avoids Ada's event"
        );
        for tz in [london, new_york] {
            let local_start = tz.timestamp_millis_opt(start).unwrap();
            let local_end = tz.timestamp_millis_opt(end - 1).unwrap();
            use chrono::Timelike;
            assert!(
                local_start.hour() >= 9 && local_end.hour() < 17,
                "inside working hours in {tz}"
            );
        }
        assert_eq!(s.available_account_ids.len(), 2);
    }
    assert_eq!(
        slots.freshness.len(),
        4,
        "primary and team calendars (read-only holidays are not synced by default)"
    );
    assert!(slots.freshness.iter().all(|f| f.as_of.is_some()));

    // Explain a slot on top of Ada's event.
    let why = c
        .explain_availability(pb::ExplainAvailabilityRequest {
            query: Some(query.clone()),
            slot: Some(window(at(10, 0), at(10, 30))),
        })
        .await?
        .into_inner();
    assert!(!why.offered);
    let ada_why = why
        .participants
        .iter()
        .find(|p| p.account_id == ada)
        .unwrap();
    assert!(ada_why
        .blockers
        .iter()
        .any(|b| b.reason == pb::UnavailableReason::BusyEvent as i32
            && b.provider_event_id == busy.provider_event_id));

    // A hold blocks the first offered slot for later queries...
    let first = slots.slots[0].clone();
    let hold = c
        .create_hold(pb::CreateHoldRequest {
            account_ids: vec![bob.clone()],
            slot: Some(pb::TimeWindow {
                start: first.start,
                end: first.end,
            }),
            ttl_minutes: 10,
        })
        .await?
        .into_inner();
    let after = c.query_availability(query.clone()).await?.into_inner();
    assert!(
        after.slots.iter().all(|s| ms(&s.start) != ms(&first.start)),
        "the held slot is not offered"
    );
    let why = c
        .explain_availability(pb::ExplainAvailabilityRequest {
            query: Some(query.clone()),
            slot: Some(pb::TimeWindow {
                start: first.start,
                end: first.end,
            }),
        })
        .await?
        .into_inner();
    let bob_why = why
        .participants
        .iter()
        .find(|p| p.account_id == bob)
        .unwrap();
    assert!(bob_why.blockers.iter().any(|b| b.hold_id == hold.hold_id));
    // ...and the upsert that confirms it consumes it.
    let (_, bob_cal) = {
        let cals = c
            .list_calendars(pb::ListCalendarsRequest {
                account_id: bob.clone(),
            })
            .await?
            .into_inner()
            .calendars;
        (
            bob.clone(),
            cals.into_iter().find(|c| c.primary).unwrap().calendar_id,
        )
    };
    let start = chrono::DateTime::from_timestamp_millis(ms(&first.start)).unwrap();
    c.upsert_event(pb::UpsertEventRequest {
        provider_event_id: String::new(),
        account_id: bob.clone(),
        calendar_id: bob_cal,
        client_event_id: "confirmed".into(),
        event: Some(timed_event("Confirmed", start, 30)),
        expected_version: String::new(),
        hold_id: hold.hold_id.clone(),
    })
    .await?;
    assert!(c
        .list_holds(pb::ListHoldsRequest {})
        .await?
        .into_inner()
        .holds
        .is_empty());

    // Sequences: two 30-minute steps, 0-60 minutes apart.
    let step = |members: Vec<pb::AvailabilityMember>, min_gap, max_gap| pb::SequenceStep {
        groups: vec![pb::ParticipantGroup {
            members,
            required: 0,
        }],
        duration_minutes: 30,
        min_gap_minutes: min_gap,
        max_gap_minutes: max_gap,
        ..Default::default()
    };
    let seqs = c
        .query_sequenced_availability(pb::QuerySequencedAvailabilityRequest {
            steps: vec![
                step(vec![member(&ada, true)], 0, 0),
                step(vec![member(&bob, false)], 0, 60),
            ],
            periods: vec![window(at(0, 0), at(23, 59))],
            max_results: 5,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(!seqs.sequences.is_empty());
    for s in &seqs.sequences {
        let gap = ms(&s.steps[1].start) - ms(&s.steps[0].end);
        assert!((0..=60 * 60_000).contains(&gap), "gap {gap}");
    }

    // Bad input names the field.
    let mut bad = query.clone();
    bad.duration_minutes = 0;
    bad.groups[0].members[0].working_hours_id = "nope".into();
    let s = c.query_availability(bad).await.expect_err("bad input");
    assert_eq!(s.code(), Code::InvalidArgument);
    let fields: Vec<String> = s
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default();
    assert!(
        fields
            .iter()
            .any(|f| f == "groups[0].members[0].working_hours_id"),
        "{fields:?}"
    );
    let mut bad = query.clone();
    bad.duration_minutes = 0;
    let s = c.query_availability(bad).await.expect_err("zero duration");
    let fields: Vec<String> = s
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default();
    assert_eq!(fields, vec!["duration_minutes"]);
    Ok(())
}
