//! Faults between the adapters and their providers: while a fault proxy in
//! front of Radicale answers a seeded share of requests with 5xx, 429 with
//! `Retry-After`, a connection held past the adapter's HTTP timeout, a
//! reset, a truncated body or a slow body (some after Radicale did the
//! work), and the fake Google fails calls with its own fault options (5xx,
//! 429 with `Retry-After`, rate-limit 403s) behind a proxy that adds
//! timeouts, resets, truncated and slow bodies, platform writes and
//! outside edits go on. Then the faults stop: every mirror must converge
//! exactly to its provider, every acknowledged write be there once, every
//! feed be gapless, duplicate-free and echo-free (the checker of
//! `calbridge_e2e::invariants`), and no request answered with
//! `Retry-After` may have come back earlier than it said (from the
//! proxies' logs).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use calbridge_e2e::fault_proxy::{
    requests_inside_retry_after, retried_after_retry_after, retry_after_violations, FaultKind,
    FaultPlan,
};
use calbridge_e2e::invariants::{self, Ledger};
use calbridge_e2e::proxied::{ProxiedOptions, ProxiedStack};
use calbridge_e2e::soak::load::{self, Counters, Tenant, WriterJob};
use calbridge_fake_google::control::Fault;
use calbridge_fake_google::FakeConfig;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

const USER: &str = "faulty@gmail.example";

/// How long the faults last, with load running.
const FAULTY: Duration = Duration::from_secs(8);

/// CalDAV requests that many operations send identically (zone lookups,
/// read-backs): a repetition of one is not necessarily a retry.
const DAV_SHARED: &[&str] = &["PROPFIND", "GET"];

#[tokio::test(flavor = "multi_thread")]
async fn after_provider_faults_stop_every_mirror_converges_exactly_with_each_write_once(
) -> Result<()> {
    let seed: u64 = std::env::var("CALBRIDGE_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_260_612);
    let mut rng = StdRng::seed_from_u64(seed);
    let stack = ProxiedStack::start(ProxiedOptions {
        seed,
        caldav_flags: vec!["--http-timeout-seconds".into(), "2".into()],
        google_flags: vec![
            "--http-timeout-seconds".into(),
            "2".into(),
            "--requests-per-minute-per-user".into(),
            "1000000".into(),
        ],
        scheduler_toml: "write_timeout_seconds = 30\n\
            [sync]\npoll_interval_seconds = 1\nbackoff_base_ms = 200\nbackoff_max_seconds = 2\n"
            .into(),
        google_users: vec![USER.into()],
        fake: FakeConfig {
            quota_per_user_per_minute: 1_000_000,
            quota_per_project_per_minute: 1_000_000,
            ..FakeConfig::default()
        },
        log_filter: "info".into(),
    })
    .await?;
    let connector = stack.connector();
    let counters = Arc::new(Counters::default());
    let mut ledger = Ledger::default();
    ledger.add_calendar("dav", stack.dav_calendar());
    let gkey = format!("google:{USER}");
    ledger.add_calendar(&gkey, stack.google_calendar(USER));
    let mut tenants = Vec::new();
    let mut jobs = Vec::new();
    for (name, google) in [("dav-tenant", false), ("google-tenant", true)] {
        let (id, key) = stack.tenant(name).await?;
        let tenant = Tenant { id, key };
        let user = google.then_some(USER);
        let (account, calendar) = load::reconnect(&connector, &tenant, user, &counters).await?;
        let cal_key = if google { gkey.as_str() } else { "dav" };
        ledger.add_account(&account, &tenant.id, cal_key, &calendar);
        // Three writers per account, each with client ids of its own.
        for w in 0..3 {
            jobs.push(WriterJob {
                url: connector.scheduler_url.clone(),
                tenant: tenant.clone(),
                prefix: format!("{name}-w{w}-"),
                account: (account.clone(), calendar.clone()),
                caldav: !google,
                live: Vec::new(),
                next: 0,
                cap: 6,
                revoked: Arc::new(AtomicBool::new(false)),
                // Only the scheduler's own retries and polls reach the
                // providers (the Retry-After check is about them).
                sync_now: false,
            });
        }
        tenants.push(tenant);
    }
    let ledger = Arc::new(Mutex::new(ledger));
    let base = (chrono::Utc::now() + chrono::Duration::days(1))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc();

    // Faults on, load on.
    stack.dav_proxy.set_faults(Some(FaultPlan {
        rate: 0.25,
        kinds: FaultKind::ALL.to_vec(),
        retry_after_seconds: 1,
        hold: Duration::from_secs(3),
        slow_piece_delay: Duration::from_millis(100),
    }));
    stack.google_proxy.set_faults(Some(FaultPlan {
        rate: 0.2,
        kinds: vec![
            FaultKind::Timeout,
            FaultKind::Reset,
            FaultKind::Truncated,
            FaultKind::SlowBody,
        ],
        retry_after_seconds: 1,
        hold: Duration::from_secs(3),
        slow_piece_delay: Duration::from_millis(100),
    }));
    let (stop_tx, stop_rx) = watch::channel(false);
    let google_faults = {
        let (control, stop, mut rng) = (
            stack.control.clone(),
            stop_rx.clone(),
            StdRng::seed_from_u64(rng.gen()),
        );
        tokio::spawn(async move {
            let mut injected = 0u32;
            while !*stop.borrow() {
                let (status, reason, retry_after_seconds) = match rng.gen_range(0..4) {
                    0 => (500, "backendError", None),
                    1 => (503, "backendError", None),
                    2 => (429, "rateLimitExceeded", Some(1)),
                    _ => (403, "rateLimitExceeded", None),
                };
                control
                    .inject_fault(&Fault {
                        status,
                        reason: reason.into(),
                        retry_after_seconds,
                        count: 1,
                        path_contains: None,
                    })
                    .await?;
                injected += 1;
                tokio::time::sleep(Duration::from_millis(rng.gen_range(300..1000))).await;
            }
            Ok::<u32, anyhow::Error>(injected)
        })
    };
    let mut writers = Vec::new();
    for job in jobs {
        writers.push(tokio::spawn(load::writer(
            job,
            ledger.clone(),
            counters.clone(),
            StdRng::seed_from_u64(rng.gen()),
            base,
            stop_rx.clone(),
        )));
    }
    let dav_editor = tokio::spawn(load::dav_editor(
        stack.dav.clone(),
        "dav".into(),
        Vec::new(),
        0,
        12,
        ledger.clone(),
        counters.clone(),
        StdRng::seed_from_u64(rng.gen()),
        base,
        stop_rx.clone(),
    ));
    let google_editor = tokio::spawn(load::google_editor(
        stack.control.clone(),
        USER.into(),
        gkey.clone(),
        Vec::new(),
        0,
        12,
        ledger.clone(),
        counters.clone(),
        StdRng::seed_from_u64(rng.gen()),
        base,
        stop_rx.clone(),
    ));
    tokio::time::sleep(FAULTY).await;

    // Faults off: the load stops, then everything must converge.
    stop_tx.send(true)?;
    let fake_faults = google_faults.await??;
    stack.dav_proxy.set_faults(None);
    stack.google_proxy.set_faults(None);
    stack.control.clear_faults().await?;
    for w in writers {
        tokio::time::timeout(Duration::from_secs(120), w)
            .await
            .context("a writer did not stop")??;
    }
    dav_editor.await??;
    google_editor.await??;

    let mut clients = BTreeMap::new();
    for t in &tenants {
        clients.insert(t.id.clone(), stack.client(&t.key).await?);
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .no_proxy()
        .build()?;
    let snapshot = ledger.lock().expect("ledger lock").clone();
    let observed = invariants::settle(&snapshot, &clients, &http, Duration::from_secs(90)).await?;
    let violations = invariants::verify(&snapshot, &observed);

    let dav_log = stack.dav_proxy.log();
    let google_log = stack.google_proxy.log();
    let mut faults: BTreeMap<FaultKind, usize> = BTreeMap::new();
    for l in dav_log.iter().chain(&google_log) {
        if let Some(f) = l.fault {
            *faults.entry(f).or_default() += 1;
        }
    }
    let counts = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::SeqCst);
    let figures = format!(
        "faults injected by the proxies: {faults:?}; fake Google faults asked: {fake_faults}; \
         requests: {} to Radicale, {} to Google; upserts acknowledged {}, deletes {}, in doubt {}; \
         outside edits {}; Retry-After answers retried later: {} at Radicale, {} at Google; \
         requests of any kind inside a Retry-After window: {} at Radicale, {} at Google",
        dav_log.len(),
        google_log.len(),
        counts(&counters.upserts_acked),
        counts(&counters.deletes_acked),
        counts(&counters.writes_in_doubt),
        counts(&counters.outside_edits),
        retried_after_retry_after(&dav_log, DAV_SHARED),
        retried_after_retry_after(&google_log, &[]),
        requests_inside_retry_after(&dav_log),
        requests_inside_retry_after(&google_log),
    );
    eprintln!("{figures}");

    assert!(
        violations.is_empty(),
        "{figures}\n{}",
        violations
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let early: Vec<String> = retry_after_violations(&dav_log, DAV_SHARED)
        .into_iter()
        .chain(retry_after_violations(&google_log, &[]))
        .collect();
    assert!(early.is_empty(), "Retry-After not honoured: {early:#?}");
    for kind in FaultKind::ALL {
        assert!(faults.get(&kind).copied().unwrap_or(0) > 0, "{figures}");
    }
    assert!(
        retried_after_retry_after(&dav_log, DAV_SHARED)
            + retried_after_retry_after(&google_log, &[])
            > 0,
        "no request answered with Retry-After was retried: {figures}"
    );
    assert!(counts(&counters.upserts_acked) > 5, "{figures}");
    assert!(counts(&counters.outside_edits) > 5, "{figures}");
    Ok(())
}
