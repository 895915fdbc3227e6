//! Benchmarks of the availability engine on the deterministic scenario
//! (`calbridge_scheduler::availability::scenario`): 50 and 2,000
//! participants over four weeks with working hours, buffers and about eight
//! events per working day, against the brute-force reference on the
//! 50-participant case. Besides criterion's estimates it prints p50/p99 of
//! individually timed runs, since the targets are stated as p99, and their
//! ratio to the brute force measured in the same run (the machine is
//! shared, so absolute times are noisy).

use std::hint::black_box;
use std::time::{Duration, Instant};

use calbridge_scheduler::availability::{self, reference, Format};
use criterion::{criterion_group, Criterion};

fn engine(c: &mut Criterion) {
    let mut g = c.benchmark_group("availability");
    for n in [50usize, 2000] {
        let (req, people, now) = availability::scenario(n, 42);
        g.bench_function(format!("query_slots_{n}"), |b| {
            b.iter(|| availability::query(black_box(&req), black_box(&people), now).unwrap())
        });
        for (name, format) in [
            ("periods", Format::Periods),
            ("overlapping", Format::OverlappingSlots),
        ] {
            let mut r = req.clone();
            r.format = format;
            g.bench_function(format!("query_{name}_{n}"), |b| {
                b.iter(|| availability::query(black_box(&r), black_box(&people), now).unwrap())
            });
        }
    }
    g.finish();
}

fn brute_force(c: &mut Criterion) {
    let mut g = c.benchmark_group("availability_reference");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    let (req, people, now) = availability::scenario(50, 42);
    g.bench_function("reference_slots_50", |b| {
        b.iter(|| reference::query(black_box(&req), black_box(&people), now).unwrap())
    });
    g.finish();
}

/// Prints and returns p50 and p99 of `runs` timed calls of `f`.
fn percentiles(label: &str, runs: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    for _ in 0..runs.min(50) {
        f();
    }
    let mut t: Vec<Duration> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed()
        })
        .collect();
    t.sort_unstable();
    let p = |q: f64| t[((t.len() as f64 * q) as usize).min(t.len() - 1)];
    println!(
        "{label}: runs {runs} p50 {:?} p99 {:?} max {:?}",
        p(0.50),
        p(0.99),
        t[t.len() - 1]
    );
    (p(0.50), p(0.99))
}

fn report() {
    // The brute-force reference first: the base of the ratios below.
    let (req, people, now) = availability::scenario(50, 42);
    let base = percentiles("reference query_slots_50", 10, || {
        black_box(reference::query(&req, &people, now).unwrap());
    });
    for n in [50usize, 2000] {
        let (req, people, now) = availability::scenario(n, 42);
        let a = availability::query(&req, &people, now).unwrap();
        let events: usize = people.iter().map(|p| p.busy().len()).sum();
        println!(
            "scenario {n}: {events} busy intervals, {} slots answered",
            a.slots.len()
        );
        let runs = if n == 50 { 20_000 } else { 300 };
        let slots = percentiles(&format!("engine query_slots_{n}"), runs, || {
            black_box(availability::query(&req, &people, now).unwrap());
        });
        let mut r = req.clone();
        r.format = Format::Periods;
        let periods = percentiles(&format!("engine query_periods_{n}"), runs, || {
            black_box(availability::query(&r, &people, now).unwrap());
        });
        println!(
            "  brute force (50) p50 / engine p50: slots {:.0}x, periods {:.0}x",
            base.0.as_secs_f64() / slots.0.as_secs_f64(),
            base.0.as_secs_f64() / periods.0.as_secs_f64()
        );
    }
    let s = Instant::now();
    let rebuilt: Vec<_> = people
        .iter()
        .map(|p| {
            availability::ParticipantData::new(
                p.time_zone(),
                p.busy().to_vec(),
                p.working_hours().cloned(),
            )
        })
        .collect();
    println!(
        "building 50 ParticipantData (copy + resolve + sorted check): {:?}",
        s.elapsed()
    );
    black_box(rebuilt);
}

criterion_group!(benches, engine, brute_force);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    report();
}
