//! The binary seeds (protobuf-encoded requests) are made here, so they stay
//! readable as code and follow the proto: the test fails when a committed
//! seed differs from what this file makes. Rewrite them with
//! `CALBRIDGE_WRITE_SEEDS=1 cargo test -p calbridge-fuzz-targets --test seeds`.

use std::path::Path;

use calbridge::pb;
use calbridge_fuzz_targets::api::KINDS;
use calbridge_fuzz_targets::availability::AvailabilityCase;
use prost::Message;
use prost_types::Timestamp;

/// 2026-01-05T00:00:00Z (a Monday), seconds.
const MONDAY: i64 = 1_767_571_200;
const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;

fn ts(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

fn window(start: i64, end: i64) -> Option<pb::TimeWindow> {
    Some(pb::TimeWindow {
        start: ts(start),
        end: ts(end),
    })
}

fn instant(seconds: i64, zone: &str) -> Option<pb::EventTime> {
    Some(pb::EventTime {
        value: Some(pb::event_time::Value::Instant(Timestamp {
            seconds,
            nanos: 0,
        })),
        time_zone: zone.into(),
    })
}

fn date(d: &str) -> Option<pb::EventTime> {
    Some(pb::EventTime {
        value: Some(pb::event_time::Value::Date(d.into())),
        time_zone: String::new(),
    })
}

fn timed_event() -> pb::Event {
    pb::Event {
        title: "Quarterly planning".into(),
        description: "Agenda:\n1. Numbers; 2. Hiring, \"maybe\"".into(),
        location: "Room 4, Berlin".into(),
        start: instant(MONDAY + 9 * HOUR, "Europe/Berlin"),
        end: instant(MONDAY + 10 * HOUR + 1800, "Europe/Berlin"),
        status: pb::EventStatus::Confirmed as i32,
        transparency: pb::Transparency::Opaque as i32,
        attendees: vec![
            pb::Attendee {
                email: "ana@example.com".into(),
                display_name: "Ana Müller".into(),
                response_status: pb::ResponseStatus::Accepted as i32,
                optional: false,
            },
            pb::Attendee {
                email: "bo@example.org".into(),
                optional: true,
                ..Default::default()
            },
        ],
        organizer: Some(pb::Organizer {
            email: "ana@example.com".into(),
            display_name: "Ana Müller".into(),
        }),
        ..Default::default()
    }
}

fn upsert(event: pb::Event) -> pb::UpsertEventRequest {
    pb::UpsertEventRequest {
        provider_event_id: String::new(),
        account_id: "acc_7f3a9c".into(),
        calendar_id: "/user/calendars/work/".into(),
        client_event_id: "planning-2026-q1".into(),
        event: Some(event),
        expected_version: String::new(),
        hold_id: String::new(),
    }
}

fn credentials() -> Option<pb::ProviderCredentials> {
    Some(pb::ProviderCredentials {
        provider_account_id: "https://caldav.example.com/user/".into(),
        secret: Some(pb::provider_credentials::Secret::Password(
            pb::PasswordCredentials {
                server_url: "https://caldav.example.com/".into(),
                username: "user".into(),
                password: "pw".into(),
            },
        )),
        access_level: pb::AccessLevel::ReadWrite as i32,
    })
}

/// An `api_requests` input: the kind's index, then the request.
fn request(kind: &str, m: &impl Message) -> Vec<u8> {
    let k = KINDS.iter().position(|k| *k == kind).expect("a known kind") as u8;
    let mut out = vec![k];
    m.encode(&mut out).expect("a Vec grows");
    out
}

fn api_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let all_day = pb::Event {
        title: "Offsite".into(),
        start: date("2026-03-02"),
        end: date("2026-03-04"),
        transparency: pb::Transparency::Transparent as i32,
        ..Default::default()
    };
    let series = pb::Event {
        title: "Stand-up".into(),
        start: instant(MONDAY + 8 * HOUR, "America/New_York"),
        end: instant(MONDAY + 8 * HOUR + 900, "America/New_York"),
        recurrence: vec![
            "RRULE:FREQ=WEEKLY;BYDAY=MO,WE,FR;UNTIL=20260331T000000Z".into(),
            "EXDATE;TZID=America/New_York:20260112T030000".into(),
        ],
        ..Default::default()
    };
    let invalid = pb::UpsertEventRequest {
        provider_event_id: String::new(),
        account_id: String::new(),
        calendar_id: "cal\u{0007}".into(),
        client_event_id: "x".repeat(300),
        event: Some(pb::Event {
            start: instant(MONDAY + 10 * HOUR, "Mars/Olympus"),
            end: date("2026-13-01"),
            attendees: vec![pb::Attendee {
                email: "no-at-sign".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        expected_version: "v".repeat(257),
        hold_id: String::new(),
    };
    vec![
        (
            "upsert-timed.bin",
            request("UpsertEventRequest", &upsert(timed_event())),
        ),
        (
            "upsert-all-day.bin",
            request("UpsertEventRequest", &upsert(all_day)),
        ),
        (
            "upsert-series.bin",
            request("UpsertEventRequest", &upsert(series)),
        ),
        (
            "upsert-invalid.bin",
            request("UpsertEventRequest", &invalid),
        ),
        (
            "list-events.bin",
            request(
                "ListEventsRequest",
                &pb::ListEventsRequest {
                    account_id: "acc_7f3a9c".into(),
                    calendar_id: "primary".into(),
                    window: window(MONDAY, MONDAY + 7 * DAY),
                    page_size: 250,
                    page_token: "MTc2NzU3MTIwMDAwMDpldnQx".into(),
                },
            ),
        ),
        (
            "query-free-busy.bin",
            request(
                "QueryFreeBusyRequest",
                &pb::QueryFreeBusyRequest {
                    account_ids: vec!["acc_7f3a9c".into(), "acc_11b2".into()],
                    window: window(MONDAY, MONDAY + 30 * DAY),
                },
            ),
        ),
        (
            "delete-event.bin",
            request(
                "DeleteEventRequest",
                &pb::DeleteEventRequest {
                    account_id: "acc_7f3a9c".into(),
                    calendar_id: "/user/calendars/work/".into(),
                    client_event_id: String::new(),
                    provider_event_id: "/user/calendars/work/a%20b.ics#20260105T080000Z".into(),
                    expected_version: "\"etag-1\"".into(),
                },
            ),
        ),
        (
            "provider-create-event.bin",
            request(
                "ProviderCreateEventRequest",
                &pb::ProviderCreateEventRequest {
                    credentials: credentials(),
                    calendar_id: "/user/calendars/work/".into(),
                    event: Some(timed_event()),
                    idempotency_key: "7c1e4a52-1d7b-4a3e-9f7e-2d55c3a1b0aa".into(),
                },
            ),
        ),
        (
            "provider-free-busy.bin",
            request(
                "ProviderFreeBusyRequest",
                &pb::ProviderFreeBusyRequest {
                    credentials: credentials(),
                    calendar_ids: vec!["/user/calendars/work/".into(), "primary".into()],
                    window: window(MONDAY, MONDAY + 14 * DAY),
                },
            ),
        ),
    ]
}

fn hours(zone: &str, start: &str, end: &str) -> pb::WorkingHours {
    pb::WorkingHours {
        time_zone: zone.into(),
        weekly: (1..=5)
            .map(|weekday| pb::WeeklyRule {
                weekday,
                start: start.into(),
                end: end.into(),
            })
            .collect(),
        overrides: vec![pb::DateOverride {
            date: "2026-01-07".into(),
            ranges: vec![pb::LocalRange {
                start: "13:00".into(),
                end: "24:00".into(),
            }],
        }],
    }
}

fn member(id: &str, h: Option<pb::WorkingHours>) -> pb::AvailabilityMember {
    pb::AvailabilityMember {
        account_id: id.into(),
        working_hours: h,
        max_events_per_day: if id == "acc_c" { 3 } else { 0 },
        ..Default::default()
    }
}

fn groups() -> Vec<pb::ParticipantGroup> {
    vec![
        pb::ParticipantGroup {
            members: vec![
                member("acc_a", Some(hours("Europe/London", "09:00", "17:00"))),
                member("acc_b", Some(hours("America/New_York", "08:30", "16:30"))),
            ],
            required: 0,
        },
        pb::ParticipantGroup {
            members: vec![
                member(
                    "acc_c",
                    Some(hours("Australia/Lord_Howe", "10:00", "18:00")),
                ),
                member("acc_d", None),
                member("acc_a", None),
            ],
            required: 2,
        },
    ]
}

fn busy() -> Vec<pb::AccountFreeBusy> {
    let interval = |s: i64, e: i64, status: pb::BusyStatus, cal: &str| pb::BusyInterval {
        start: ts(s),
        end: ts(e),
        status: status as i32,
        calendar_id: cal.into(),
    };
    vec![
        pb::AccountFreeBusy {
            account_id: "acc_a".into(),
            busy: vec![
                interval(
                    MONDAY + 9 * HOUR,
                    MONDAY + 10 * HOUR,
                    pb::BusyStatus::Busy,
                    "w",
                ),
                interval(
                    MONDAY + 26 * HOUR,
                    MONDAY + 27 * HOUR,
                    pb::BusyStatus::Tentative,
                    "w",
                ),
            ],
            as_of: None,
        },
        pb::AccountFreeBusy {
            account_id: "acc_c".into(),
            busy: vec![interval(
                MONDAY + 2 * DAY,
                MONDAY + 3 * DAY,
                pb::BusyStatus::OutOfOffice,
                "all-day",
            )],
            as_of: None,
        },
    ]
}

fn query(format: pb::AvailabilityFormat) -> pb::QueryAvailabilityRequest {
    pb::QueryAvailabilityRequest {
        groups: groups(),
        duration_minutes: 45,
        periods: vec![window(MONDAY, MONDAY + 5 * DAY).expect("a window")],
        buffer_before_minutes: 10,
        buffer_after_minutes: 5,
        start_interval_minutes: 15,
        minimum_notice_minutes: 60,
        tentative_is_busy: true,
        format: format as i32,
        max_results: 50,
        max_staleness_seconds: 0,
    }
}

fn availability_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let case = |c: AvailabilityCase| c.encode_to_vec();
    let sequenced = pb::QuerySequencedAvailabilityRequest {
        steps: vec![
            pb::SequenceStep {
                groups: groups()[..1].to_vec(),
                duration_minutes: 30,
                ..Default::default()
            },
            pb::SequenceStep {
                groups: groups()[1..].to_vec(),
                duration_minutes: 60,
                buffer_before_minutes: 5,
                min_gap_minutes: 15,
                max_gap_minutes: 240,
                ..Default::default()
            },
        ],
        periods: vec![window(MONDAY, MONDAY + 3 * DAY).expect("a window")],
        start_interval_minutes: 30,
        minimum_notice_minutes: 0,
        tentative_is_busy: false,
        max_results: 20,
        max_staleness_seconds: 0,
    };
    let mut bad = query(pb::AvailabilityFormat::Slots);
    bad.groups[0].members[0].working_hours = Some(pb::WorkingHours {
        time_zone: "Nowhere/City".into(),
        weekly: vec![pb::WeeklyRule {
            weekday: 8,
            start: "17:00".into(),
            end: "09:00".into(),
        }],
        overrides: vec![pb::DateOverride {
            date: "2026-02-30".into(),
            ranges: vec![],
        }],
    });
    vec![
        (
            "query-slots.bin",
            case(AvailabilityCase {
                query: Some(query(pb::AvailabilityFormat::Slots)),
                busy: busy(),
                ..Default::default()
            }),
        ),
        (
            "query-periods.bin",
            case(AvailabilityCase {
                query: Some(query(pb::AvailabilityFormat::Periods)),
                busy: busy(),
                ..Default::default()
            }),
        ),
        (
            "sequenced.bin",
            case(AvailabilityCase {
                sequenced: Some(sequenced),
                busy: busy(),
                ..Default::default()
            }),
        ),
        (
            "explain.bin",
            case(AvailabilityCase {
                explain: Some(pb::ExplainAvailabilityRequest {
                    query: Some(query(pb::AvailabilityFormat::OverlappingSlots)),
                    slot: window(MONDAY + 9 * HOUR, MONDAY + 9 * HOUR + 2700),
                }),
                busy: busy(),
                ..Default::default()
            }),
        ),
        (
            "query-invalid-hours.bin",
            case(AvailabilityCase {
                query: Some(bad),
                ..Default::default()
            }),
        ),
    ]
}

#[test]
fn binary_seeds_are_the_ones_this_file_makes() {
    let write = std::env::var_os("CALBRIDGE_WRITE_SEEDS").is_some();
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds");
    let mut stale = Vec::new();
    for (target, files) in [
        ("api_requests", api_seeds()),
        ("availability", availability_seeds()),
    ] {
        let dir = seeds.join(target);
        for (name, bytes) in files {
            let path = dir.join(name);
            if write {
                std::fs::create_dir_all(&dir).expect("a seed directory");
                std::fs::write(&path, &bytes).expect("a written seed");
            } else if std::fs::read(&path).ok().as_deref() != Some(bytes.as_slice()) {
                stale.push(format!("{target}/{name}"));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "seeds missing or stale (rewrite them, see this file's doc): {stale:?}"
    );
}
