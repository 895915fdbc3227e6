//! The crash soak: two tenants, each with an account on one shared Radicale
//! calendar (each tenant sees the other's writes as outside changes) and
//! one on a Google user of its own at the fake Google, under load
//! ([`load`]): platform writes, outside edits, push notifications,
//! revocations and reconnections. Each cycle kill -9s one calbridge process
//! (the scheduler, or one adapter; the providers live outside them) at a
//! seeded random point, preferably inside a window: just after the
//! provider accepted a write and before its answer arrived, while a sync
//! page is read, while a revocation stops a push channel. The process is
//! restarted on its port, the load goes on for a moment, then stops; every
//! live account is synced until its mirror equals the provider (bounded),
//! and every invariant of [`crate::invariants`] is checked. At the end the
//! scheduler is stopped and its store must hold no row of a revoked
//! account.
//!
//! A killed process is restarted once the requests it had sent are
//! answered at the providers (its proxies drained): a restart outlasts a
//! request. A request that stays on its way longer than a restart — a
//! "ghost" of the dead process — can do what no checker allows: a create
//! landing after the restarted scheduler completed it and the platform
//! deleted the event brings the event back (CalDAV keeps no tombstones
//! that would refuse it). The soak leaves that case out unless asked
//! ([`SoakConfig::drain_before_restart`]); a ghost update landing during
//! the replay of its write is covered by the end-to-end tests
//! (`retried_writes`).
//!
//! The seed fixes every random choice (what to write, which process to
//! kill, where); thread timing still varies from run to run.

pub mod load;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use calbridge_fake_google::FakeConfig;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

use crate::fault_proxy::Window;
use crate::invariants::{self, Ledger, Violation};
use crate::proxied::{Process, ProxiedOptions, ProxiedStack};
use load::{Counters, OutsideLive, Slot, Tenant, WriterJob};

/// How a soak runs.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    /// Kill-restart-check cycles.
    pub cycles: u32,
    /// The seed of every random choice.
    pub seed: u64,
    /// The longest load phase before the kill.
    pub max_load: Duration,
    /// How long the load goes on after the restart.
    pub after_restart: Duration,
    /// The chance that a cycle revokes (and reconnects) an account, on top
    /// of the cycles whose kill aims at a revocation.
    pub revoke_chance: f64,
    /// Most client ids alive per account, and outside events per calendar.
    pub cap: usize,
    /// How long the mirrors may take to converge after a cycle.
    pub settle_timeout: Duration,
    /// Print one line per cycle on stderr.
    pub progress: bool,
    /// Where to write every process's and proxy's log after a cycle that
    /// found violations (none: not written).
    pub log_dir: Option<std::path::PathBuf>,
    /// Restart a killed process only once the requests it sent are
    /// answered (see the module docs); off, its late requests ("ghosts")
    /// may land after the restart.
    pub drain_before_restart: bool,
}

impl SoakConfig {
    /// The defaults for `cycles` cycles from `seed`.
    pub fn new(cycles: u32, seed: u64) -> SoakConfig {
        SoakConfig {
            cycles,
            seed,
            max_load: Duration::from_millis(1200),
            after_restart: Duration::from_millis(300),
            revoke_chance: 0.2,
            cap: 10,
            settle_timeout: Duration::from_secs(90),
            progress: false,
            log_dir: None,
            drain_before_restart: true,
        }
    }
}

/// What a soak did and found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Cycles run.
    pub cycles: u32,
    /// The seed.
    pub seed: u64,
    /// Kills per process.
    pub kills: BTreeMap<&'static str, u32>,
    /// Kills per point: the window hit, or a random time.
    pub kill_points: BTreeMap<String, u32>,
    /// Upserts acknowledged.
    pub upserts_acked: u64,
    /// Deletes acknowledged.
    pub deletes_acked: u64,
    /// Writes that failed or went unanswered.
    pub writes_in_doubt: u64,
    /// Outside creates, updates and deletes.
    pub outside_edits: u64,
    /// Push notifications asked without a change.
    pub notifies: u64,
    /// Push messages the fake delivered to the webhook.
    pub pushes_delivered: u64,
    /// Revocations acknowledged.
    pub revocations: u64,
    /// Reconnections.
    pub reconnections: u64,
    /// Violations, with the cycle that found them (0: the final check).
    pub violations: Vec<(u32, Violation)>,
    /// How long setting up took.
    pub setup: Duration,
    /// How long each cycle took.
    pub cycle_times: Vec<Duration>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut times = self.cycle_times.clone();
        times.sort();
        let total: Duration = times.iter().sum();
        let pick = |q: f64| {
            times
                .get(((times.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or_default()
        };
        let mean = total / (times.len().max(1) as u32);
        writeln!(
            f,
            "crash soak: {} cycles, seed {}, {:.1} s (setup {:.1} s)",
            self.cycles,
            self.seed,
            (total + self.setup).as_secs_f64(),
            self.setup.as_secs_f64()
        )?;
        writeln!(f, "kills per process: {:?}", self.kills)?;
        writeln!(f, "kill points: {:?}", self.kill_points)?;
        writeln!(
            f,
            "writes acknowledged: {} upserts, {} deletes; failed or unanswered (in doubt): {}",
            self.upserts_acked, self.deletes_acked, self.writes_in_doubt
        )?;
        writeln!(
            f,
            "outside edits: {}; push: {} asked without a change, {} delivered to the webhook",
            self.outside_edits, self.notifies, self.pushes_delivered
        )?;
        writeln!(
            f,
            "revocations: {}; reconnections: {}",
            self.revocations, self.reconnections
        )?;
        writeln!(
            f,
            "time per cycle: mean {:.2} s, median {:.2} s, p95 {:.2} s, max {:.2} s",
            mean.as_secs_f64(),
            pick(0.5).as_secs_f64(),
            pick(0.95).as_secs_f64(),
            pick(1.0).as_secs_f64()
        )?;
        writeln!(f, "violations found: {}", self.violations.len())?;
        for (cycle, v) in self.violations.iter().take(50) {
            writeln!(f, "  cycle {cycle}: {v}")?;
        }
        Ok(())
    }
}

/// The scheduler's configuration in the soak: short write timeout, fast
/// polls and short backoff, so that a cycle settles in seconds.
pub const SCHEDULER_TOML: &str = "write_timeout_seconds = 10\n\
[sync]\npoll_interval_seconds = 2\nbackoff_base_ms = 200\nbackoff_max_seconds = 2\n";

/// Runs `cycles` cycles from `seed` with the default settings.
pub async fn run(cycles: u32, seed: u64) -> Result<Report> {
    run_with(SoakConfig::new(cycles, seed)).await
}

/// One cycle's kill: which process, and where.
struct KillPlan {
    target: Process,
    how: Option<Window>,
    /// Whether the window is watched at the Google proxy (else CalDAV's).
    google_side: bool,
    revoke_slot: Option<usize>,
    revoke_after: Duration,
    /// For a sync-read window: an account of that side whose sync the
    /// platform asks for (SyncNow) at `nudge_after`, so that a sync runs.
    nudge: Option<(usize, Duration)>,
}

fn plan_kill(cfg: &SoakConfig, cycle: u32, rng: &mut StdRng, slots: &[Slot]) -> KillPlan {
    // Every process in turn, the scheduler every other cycle.
    let target = match cycle % 4 {
        1 | 3 => Process::Scheduler,
        2 => Process::Caldav,
        _ => Process::Google,
    };
    let how = match rng.gen_range(0..20) {
        0..=6 => Some(Window::Write),
        7..=12 => Some(Window::SyncRead),
        13..=14 => Some(Window::Revoke),
        _ => None,
    };
    let mut google_side = match target {
        Process::Google => true,
        Process::Caldav => false,
        Process::Scheduler => rng.gen_bool(0.5),
    };
    let live: Vec<usize> = (0..slots.len())
        .filter(|i| slots[*i].account.is_some())
        .collect();
    let side: Vec<usize> = live
        .iter()
        .copied()
        .filter(|i| slots[*i].google_user.is_some() == google_side)
        .collect();
    let max = cfg.max_load.as_millis() as u64;
    let revoke_slot = if how == Some(Window::Revoke) && !side.is_empty() {
        Some(side[rng.gen_range(0..side.len())])
    } else if !live.is_empty() && rng.gen_bool(cfg.revoke_chance) {
        Some(live[rng.gen_range(0..live.len())])
    } else {
        None
    };
    let revoke_after = Duration::from_millis(rng.gen_range(0..max));
    let how = how.filter(|w| *w != Window::Revoke || revoke_slot.is_some());
    if how == Some(Window::Revoke) {
        google_side = revoke_slot.is_some_and(|i| slots[i].google_user.is_some());
    }
    let nudge = (how == Some(Window::SyncRead) && !side.is_empty()).then(|| {
        (
            side[rng.gen_range(0..side.len())],
            Duration::from_millis(rng.gen_range(0..max / 2)),
        )
    });
    KillPlan {
        target,
        how,
        google_side,
        revoke_slot,
        revoke_after,
        nudge,
    }
}

/// Runs a soak.
pub async fn run_with(cfg: SoakConfig) -> Result<Report> {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let users = ["alpha@gmail.example", "beta@gmail.example"];
    let mut stack = ProxiedStack::start(ProxiedOptions {
        seed: cfg.seed,
        caldav_flags: vec!["--http-timeout-seconds".into(), "10".into()],
        // One user makes more than the adapter's default per-user budget
        // (500 requests a minute) here.
        google_flags: vec!["--requests-per-minute-per-user".into(), "1000000".into()],
        scheduler_toml: SCHEDULER_TOML.into(),
        google_users: users.iter().map(|u| u.to_string()).collect(),
        fake: FakeConfig {
            quota_per_user_per_minute: 1_000_000,
            quota_per_project_per_minute: 1_000_000,
            ..FakeConfig::default()
        },
        log_filter: "info".into(),
    })
    .await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .no_proxy()
        .build()?;
    let connector = stack.connector();
    let mut ledger = Ledger::default();
    ledger.add_calendar("dav", stack.dav_calendar());
    let mut tenants = Vec::new();
    let mut slots = Vec::new();
    for (t, name) in ["alpha", "beta"].iter().enumerate() {
        let (id, key) = stack.tenant(name).await?;
        tenants.push(Tenant { id, key });
        let gkey = format!("google:{}", users[t]);
        ledger.add_calendar(&gkey, stack.google_calendar(users[t]));
        for (suffix, google_user, key) in [
            ("dav", None, "dav".to_string()),
            ("g", Some(users[t]), gkey),
        ] {
            slots.push(Slot {
                name: format!("{name}-{suffix}"),
                tenant: t,
                google_user: google_user.map(str::to_string),
                calendar_key: key,
                account: None,
                generation: 0,
                live: Vec::new(),
                next: 0,
            });
        }
    }
    let counters = Arc::new(Counters::default());
    for s in slots.iter_mut() {
        let a = load::reconnect(
            &connector,
            &tenants[s.tenant],
            s.google_user.as_deref(),
            &counters,
        )
        .await?;
        ledger.add_account(&a.0, &tenants[s.tenant].id, &s.calendar_key, &a.1);
        s.account = Some(a);
    }
    counters.reconnections.store(0, Ordering::SeqCst);
    let ledger = Arc::new(Mutex::new(ledger));
    let base = (chrono::Utc::now() + chrono::Duration::days(1))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc();
    let mut outside: Vec<(OutsideLive, u64)> = vec![(Vec::new(), 0); 1 + users.len()];
    let mut report = Report {
        seed: cfg.seed,
        setup: started.elapsed(),
        ..Report::default()
    };

    let mut seen = std::collections::HashSet::new();
    for cycle in 1..=cfg.cycles {
        let t0 = Instant::now();
        let (stop_tx, stop_rx) = watch::channel(false);
        let plan = plan_kill(&cfg, cycle, &mut rng, &slots);
        let flags: Vec<Arc<AtomicBool>> = slots.iter().map(|_| Arc::default()).collect();
        let mut writers = Vec::new();
        for (i, s) in slots.iter_mut().enumerate() {
            let Some(account) = s.account.clone() else {
                continue;
            };
            let job = WriterJob {
                url: connector.scheduler_url.clone(),
                tenant: tenants[s.tenant].clone(),
                prefix: format!("{}-g{}-", s.name, s.generation),
                account,
                caldav: s.google_user.is_none(),
                live: std::mem::take(&mut s.live),
                next: s.next,
                cap: cfg.cap,
                revoked: flags[i].clone(),
                sync_now: true,
            };
            let task = load::writer(
                job,
                ledger.clone(),
                counters.clone(),
                StdRng::seed_from_u64(rng.gen()),
                base,
                stop_rx.clone(),
            );
            writers.push((i, tokio::spawn(task)));
        }
        let mut editors = Vec::new();
        let (live, next) = std::mem::take(&mut outside[0]);
        editors.push(tokio::spawn(load::dav_editor(
            stack.dav.clone(),
            "dav".into(),
            live,
            next,
            cfg.cap,
            ledger.clone(),
            counters.clone(),
            StdRng::seed_from_u64(rng.gen()),
            base,
            stop_rx.clone(),
        )));
        for (u, user) in users.iter().enumerate() {
            let (live, next) = std::mem::take(&mut outside[1 + u]);
            editors.push(tokio::spawn(load::google_editor(
                stack.control.clone(),
                user.to_string(),
                format!("google:{user}"),
                live,
                next,
                cfg.cap,
                ledger.clone(),
                counters.clone(),
                StdRng::seed_from_u64(rng.gen()),
                base,
                stop_rx.clone(),
            )));
        }
        let revoker = plan.revoke_slot.map(|i| {
            let s = &slots[i];
            let (account, _) = s.account.clone().expect("a live slot");
            let (tenant, flag, ledger, counters, connector) = (
                tenants[s.tenant].clone(),
                flags[i].clone(),
                ledger.clone(),
                counters.clone(),
                connector.clone(),
            );
            let (google_user, key) = (s.google_user.clone(), s.calendar_key.clone());
            let pause = Duration::from_millis(rng.gen_range(0..300));
            let after = plan.revoke_after;
            let task = async move {
                tokio::time::sleep(after).await;
                load::revoke(
                    &connector.scheduler_url,
                    &tenant,
                    &account,
                    &flag,
                    &ledger,
                    &counters,
                )
                .await?;
                tokio::time::sleep(pause).await;
                let a =
                    load::reconnect(&connector, &tenant, google_user.as_deref(), &counters).await?;
                ledger
                    .lock()
                    .expect("ledger lock")
                    .add_account(&a.0, &tenant.id, &key, &a.1);
                Ok::<_, anyhow::Error>(a)
            };
            (i, tokio::spawn(task))
        });

        if let Some((i, after)) = plan.nudge {
            let s = &slots[i];
            if let Some((account, _)) = s.account.clone() {
                let (url, key) = (
                    connector.scheduler_url.clone(),
                    tenants[s.tenant].key.clone(),
                );
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    let mut c = load::connect(&url, &key).await?;
                    c.sync_now(calbridge::pb::SyncNowRequest {
                        account_id: account,
                        calendar_id: String::new(),
                    })
                    .await?;
                    Ok::<(), anyhow::Error>(())
                });
            }
        }

        // The kill.
        let point = kill(&mut stack, &cfg, &plan, &mut rng).await?;
        *report.kills.entry(plan.target.name()).or_default() += 1;
        *report.kill_points.entry(point.clone()).or_default() += 1;
        // What the killed process sent reaches the provider before it
        // starts again (a restart outlasts a request; see the module docs).
        if cfg.drain_before_restart {
            for proxy in proxies_of(&stack, plan.target) {
                proxy.drained(Duration::from_secs(30)).await?;
            }
        }
        stack.restart(plan.target).await?;
        tokio::time::sleep(cfg.after_restart).await;
        let _ = stop_tx.send(true);

        for (i, w) in writers {
            let job = tokio::time::timeout(Duration::from_secs(180), w)
                .await
                .context("a writer did not stop")??;
            slots[i].live = job.live;
            slots[i].next = job.next;
        }
        for (slot, e) in editors.into_iter().enumerate() {
            outside[slot] = tokio::time::timeout(Duration::from_secs(180), e)
                .await
                .context("an outside editor did not stop")???;
        }
        if let Some((i, r)) = revoker {
            let a = tokio::time::timeout(Duration::from_secs(300), r)
                .await
                .context("a revocation did not finish")???;
            let s = &mut slots[i];
            s.account = Some(a);
            s.generation += 1;
            s.live.clear();
            s.next = 0;
        }

        // Settle and check.
        let mut clients = BTreeMap::new();
        for t in &tenants {
            clients.insert(t.id.clone(), stack.client(&t.key).await?);
        }
        let snapshot = ledger.lock().expect("ledger lock").clone();
        let observed = invariants::settle(&snapshot, &clients, &http, cfg.settle_timeout)
            .await
            .with_context(|| format!("cycle {cycle}: observing"))?;
        // The feeds are whole each time: report what is new only.
        let found: Vec<Violation> = invariants::verify(&snapshot, &observed)
            .into_iter()
            .filter(|v| seen.insert(v.to_string()))
            .collect();
        if cfg.progress {
            eprintln!(
                "cycle {cycle}: killed the {} at {}, {:.2} s, {} violations",
                plan.target.name(),
                point,
                t0.elapsed().as_secs_f64(),
                found.len()
            );
            for v in &found {
                eprintln!("  {v}");
            }
        }
        if let (Some(dir), false) = (&cfg.log_dir, found.is_empty()) {
            stack.dump_logs(dir, &format!("cycle-{cycle}-"))?;
        }
        report
            .violations
            .extend(found.into_iter().map(|v| (cycle, v)));
        ledger.lock().expect("ledger lock").settle_writes(&observed);
        stack.dav_proxy.clear_log();
        stack.google_proxy.clear_log();
        report.cycles = cycle;
        report.cycle_times.push(t0.elapsed());
    }

    let c = &counters;
    report.upserts_acked = c.upserts_acked.load(Ordering::SeqCst);
    report.deletes_acked = c.deletes_acked.load(Ordering::SeqCst);
    report.writes_in_doubt = c.writes_in_doubt.load(Ordering::SeqCst);
    report.outside_edits = c.outside_edits.load(Ordering::SeqCst);
    report.notifies = c.notifies.load(Ordering::SeqCst);
    report.revocations = c.revocations.load(Ordering::SeqCst);
    report.reconnections = c.reconnections.load(Ordering::SeqCst);
    report.pushes_delivered = stack
        .control
        .channels()
        .await?
        .iter()
        .map(|ch| ch.delivered)
        .sum();
    stack.stop_scheduler().await?;
    let snapshot = ledger.lock().expect("ledger lock").clone();
    for v in revoked_rows(&stack, &snapshot)? {
        report.violations.push((0, v));
    }
    Ok(report)
}

/// Kills the planned process at the planned point; returns the point's
/// name.
async fn kill(
    stack: &mut ProxiedStack,
    cfg: &SoakConfig,
    plan: &KillPlan,
    rng: &mut StdRng,
) -> Result<String> {
    let google_proxy = plan.google_side;
    let revoking_caldav = plan.how == Some(Window::Revoke) && !google_proxy;
    let Some(window) = plan.how.filter(|_| !revoking_caldav) else {
        let at = if revoking_caldav {
            // A CalDAV revocation calls no provider: aim at its moment.
            plan.revoke_after + Duration::from_millis(rng.gen_range(0..40))
        } else {
            Duration::from_millis(rng.gen_range(100..cfg.max_load.as_millis() as u64))
        };
        tokio::time::sleep(at).await;
        stack.kill(plan.target).await;
        return Ok(if revoking_caldav {
            "revocation at caldav, timed".into()
        } else {
            "random time".into()
        });
    };
    let proxy = if google_proxy {
        &stack.google_proxy
    } else {
        &stack.dav_proxy
    };
    let skip = match window {
        Window::Write => rng.gen_range(0..3),
        Window::SyncRead => rng.gen_range(0..2),
        Window::Revoke => 0,
    };
    let armed = proxy.arm(window, skip);
    let limit = cfg.max_load
        + if window == Window::Revoke {
            plan.revoke_after
        } else {
            Duration::ZERO
        };
    let hit = tokio::select! {
        r = armed => r.ok(),
        _ = tokio::time::sleep(limit) => None,
    };
    proxy.disarm();
    let name = format!(
        "{} at {}",
        window.name(),
        if google_proxy { "google" } else { "caldav" }
    );
    stack.kill(plan.target).await;
    // Only now does the provider's answer go on (to a dead client, or to
    // one whose caller died).
    Ok(match hit {
        Some(release) => {
            let _ = release.send(());
            name
        }
        None => format!("{name} missed, at a random time"),
    })
}

/// The proxies that carry `p`'s requests to providers.
fn proxies_of(stack: &ProxiedStack, p: Process) -> Vec<&crate::fault_proxy::FaultProxy> {
    match p {
        Process::Scheduler => vec![&stack.dav_proxy, &stack.google_proxy],
        Process::Caldav => vec![&stack.dav_proxy],
        Process::Google => vec![&stack.google_proxy],
    }
}

/// Rows of revoked accounts left in the (stopped) scheduler's store.
fn revoked_rows(stack: &ProxiedStack, ledger: &Ledger) -> Result<Vec<Violation>> {
    let store = crate::open_store(stack.store_dir().parent().expect("a data directory"))
        .map_err(|e| anyhow!("opening the store: {e}"))?;
    let mut out = Vec::new();
    let states = store.all_sync_states()?;
    let outbox = store.outbox_all()?;
    let channels = store.channels()?;
    for (id, a) in ledger.accounts.iter().filter(|(_, a)| a.revoked) {
        let mut rows = Vec::new();
        rows.extend(
            store
                .calendars(&calbridge_scheduler::ids::AccountId::from(id))?
                .into_iter()
                .map(|c| format!("calendar {}", c.calendar_id)),
        );
        rows.extend(
            states
                .iter()
                .filter(|(acc, _, _)| acc == id)
                .map(|(_, c, _)| format!("sync state {c}")),
        );
        rows.extend(
            store
                .event_ids(
                    &calbridge_scheduler::ids::AccountId::from(id),
                    &calbridge_scheduler::ids::CalendarId::from(&a.calendar_id),
                )?
                .into_iter()
                .map(|e| format!("event {e}")),
        );
        rows.extend(
            outbox
                .iter()
                .filter(|o| o.account_id == *id)
                .map(|o| format!("pending write {}", o.op_id)),
        );
        rows.extend(
            channels
                .iter()
                .filter(|c| c.account_id == *id)
                .map(|c| format!("channel {}", c.channel_id)),
        );
        if !rows.is_empty() {
            rows.truncate(5);
            out.push(Violation {
                kind: "revoked account rows left in the store",
                detail: format!("{id}: {rows:?}"),
            });
        }
    }
    Ok(out)
}
