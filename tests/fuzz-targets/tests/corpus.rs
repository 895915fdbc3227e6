//! Replays the committed fuzz inputs: every file under `fuzz/seeds/<target>/`
//! and `fuzz/corpus/<target>/` goes through the function its fuzz target
//! runs, and none may panic (a stack overflow or an abort ends the test
//! binary, which fails the run just the same). Inputs the code does not
//! survive yet live in `fuzz/findings/`, which is not replayed.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use calbridge_fuzz_targets::{Target, TARGETS};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files of `fuzz/<kind>/<target>/`, sorted (none when it is absent).
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir(fuzz_dir().join(kind).join(target)) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = dir
        .map(|e| e.expect("a readable directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn target(name: &str) -> Target {
    *TARGETS
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no fuzz target {name}"))
}

/// Runs every seed and corpus input of `name`; fails naming each input that
/// panicked.
fn replay(name: &str) {
    let t = target(name);
    let seeds = inputs("seeds", name);
    assert!(!seeds.is_empty(), "fuzz/seeds/{name}/ holds no seed");
    let mut panicked = Vec::new();
    let all: Vec<PathBuf> = seeds.into_iter().chain(inputs("corpus", name)).collect();
    for path in &all {
        let data = std::fs::read(path).expect("a readable input");
        if catch_unwind(AssertUnwindSafe(|| (t.run)(&data))).is_err() {
            panicked.push(path.display().to_string());
        }
    }
    assert!(
        panicked.is_empty(),
        "{name}: {} of {} inputs panicked: {panicked:#?}",
        panicked.len(),
        all.len()
    );
}

#[test]
fn every_target_has_a_fuzz_target_file_and_seeds() {
    let read =
        |p: PathBuf| std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let manifest = read(fuzz_dir().join("Cargo.toml"));
    let script = read(fuzz_dir().join("../scripts/fuzz"));
    let listed = script
        .lines()
        .find(|l| l.starts_with("targets_all=("))
        .expect("scripts/fuzz lists its targets");
    for t in TARGETS {
        assert!(
            manifest.contains(&format!("name = \"{}\"", t.name)),
            "fuzz/Cargo.toml has no [[bin]] {}",
            t.name
        );
        assert!(
            listed.split(['(', ' ', ')']).any(|n| n == t.name),
            "scripts/fuzz does not list {}",
            t.name
        );
        let file = fuzz_dir()
            .join("fuzz_targets")
            .join(format!("{}.rs", t.name));
        let source = read(file.clone());
        assert!(
            source.contains(&format!("::{}(", t.name)),
            "{} does not call the target's function",
            file.display()
        );
        assert!(
            !inputs("seeds", t.name).is_empty(),
            "{} has no seeds",
            t.name
        );
    }
}

#[test]
fn multistatus_inputs_replay_without_a_panic() {
    replay("dav_multistatus");
}

#[test]
fn href_inputs_replay_without_a_panic() {
    replay("dav_href");
}

#[test]
fn icalendar_object_inputs_replay_without_a_panic() {
    replay("ical_object");
}

#[test]
fn free_busy_inputs_replay_without_a_panic() {
    replay("ical_free_busy");
}

#[test]
fn google_push_inputs_replay_without_a_panic() {
    replay("google_push");
}

#[test]
fn api_request_inputs_replay_without_a_panic() {
    replay("api_requests");
}

#[test]
fn availability_inputs_replay_without_a_panic() {
    replay("availability");
}
