//! The benchmark scenario's request, answered and timed server side.

use super::*;

const WEEK: i64 = 7 * 86_400_000;

/// Seeds `people` as accounts of tenant "t", shifted by whole weeks so
/// the scenario lies in the future; returns the request.
fn seed_scenario(s: &Shared, n: usize) -> pb::QueryAvailabilityRequest {
    let (req, people, now) = engine::scenario(n, 42);
    let weeks = (now_ms() - now) / WEEK + 1;
    let shift = weeks * WEEK;
    let mut ids = Vec::new();
    for (i, p) in people.iter().enumerate() {
        let id = format!("acc_{i:024}");
        let account = AccountRecord {
            sealed_credentials: vec![7; 120],
            sealed_identity: vec![9; 60],
            identity_hash: "h".repeat(64),
            ..AccountRecord::for_test(&id)
        };
        let cal = CalendarRecord {
            calendar_id: "primary".into(),
            sealed_name: vec![3; 40],
            primary: true,
            read_only: false,
            time_zone: p.time_zone().name().into(),
            synced: true,
            color: "#123456".into(),
        };
        s.store
            .put_account_with_calendars(&account, &[cal], 0)
            .unwrap();
        let puts: Vec<MirrorPut> = p
            .busy()
            .iter()
            .enumerate()
            .map(|(k, b)| {
                let (start_ms, end_ms, all_day) = match b.span {
                    engine::BusySpan::Timed { start_ms, end_ms } => {
                        (start_ms + shift, end_ms + shift, None)
                    }
                    engine::BusySpan::AllDay { start, end } => {
                        use chrono::Datelike;
                        let (a, b) = (
                            start + chrono::Duration::weeks(weeks),
                            end + chrono::Duration::weeks(weeks),
                        );
                        let ms = |d: NaiveDate| {
                            engine::local_to_utc(
                                p.time_zone(),
                                d.and_time(NaiveTime::MIN),
                                engine::Edge::Start,
                            )
                        };
                        (
                            ms(a),
                            ms(b),
                            Some((a.num_days_from_ce(), b.num_days_from_ce())),
                        )
                    }
                };
                let busy = match b.status {
                    engine::BusyStatus::Busy => pb::BusyStatus::Busy,
                    engine::BusyStatus::Tentative => pb::BusyStatus::Tentative,
                    engine::BusyStatus::OutOfOffice => pb::BusyStatus::OutOfOffice,
                    engine::BusyStatus::Free => pb::BusyStatus::Unspecified,
                };
                MirrorPut {
                    provider_event_id: format!("ev{k}").into(),
                    record: EventRecord {
                        series: false,
                        version: "1".into(),
                        start_ms,
                        end_ms,
                        busy,
                        client_event_id: None,
                        all_day,
                        written_hash: None,
                        sealed: vec![1; 200],
                    },
                    previous_start_ms: None,
                    previous_client_id: None,
                }
            })
            .collect();
        let st = crate::store::SyncRecord {
            cursor: "c".repeat(40),
            last_success_ms: Some(now_ms()),
            ..Default::default()
        };
        s.store
            .apply_sync_page(&PageCommit {
                tenant: &crate::ids::TenantId::from("t"),
                account: &crate::ids::AccountId::from(id.as_str()),
                calendar: &crate::ids::CalendarId::from("primary"),
                puts: &puts,
                removes: &[],
                state: &st,
                changes: &[],
                now_ms: 0,
            })
            .unwrap();
        let wh = scenario_hours(p, weeks).unwrap();
        s.store
            .put_working_hours(&TenantId::from("t"), &format!("wh{i}"), &wh.encode_to_vec())
            .unwrap();
        ids.push((id, p.max_events_per_day(), p.max_events_per_week()));
    }
    let member = |i: usize| pb::AvailabilityMember {
        account_id: ids[i].0.clone(),
        working_hours_id: format!("wh{i}"),
        max_events_per_day: ids[i].1,
        max_events_per_week: ids[i].2,
        ..Default::default()
    };
    scenario_request(&req, member, shift)
}

/// Server-side time of `QueryAvailability` on the benchmark scenario
/// (`HN` participants, default 50; `HR` runs), without gRPC and without
/// a sync loop competing: `cargo test --release -p calbridge-scheduler
/// --lib server_side_timing -- --ignored --nocapture`.
#[test]
#[ignore]
fn server_side_timing() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (n, runs) = (env("HN", 50), env("HR", 200));
    let dir = tempfile::tempdir().unwrap();
    let s = Shared::for_test(dir.path());
    let req = seed_scenario(&s, n);
    let t = std::time::Instant::now();
    let first = query(&s, &TenantId::from("t"), &req).unwrap();
    let cold = t.elapsed();
    let mut times: Vec<std::time::Duration> = (0..runs)
        .map(|_| {
            let t = std::time::Instant::now();
            assert_eq!(query(&s, &TenantId::from("t"), &req).unwrap(), first);
            t.elapsed()
        })
        .collect();
    times.sort();
    println!(
        "request {} bytes, response {} bytes",
        req.encoded_len(),
        first.encoded_len()
    );
    let (kept, intervals) = s.availability_cache.usage();
    println!(
        "{n} participants, {} slots: first {cold:?}, then p50 {:?} p99 {:?}; \
         cache: {kept} participants, {intervals} intervals ({} + {} + 2 x {} bytes each)",
        first.slots.len(),
        times[times.len() / 2],
        times[times.len() * 99 / 100],
        std::mem::size_of::<engine::BusyInterval>(),
        std::mem::size_of::<Source>(),
        std::mem::size_of::<(i64, i64)>(),
    );
}
