//! The adapter conformance suite: one set of cases, each run against every
//! adapter, so that every adapter keeps to the one contract
//! (`proto/calbridge/v1/adapter.proto`).
//!
//! - `fixtures`: one [`fixtures::Fixture`] per adapter and provider: the
//!   sandbox; CalDAV on Radicale, on Xandikos, and as iCloud (Radicale
//!   behind the iCloud-shaped proxy); Google on the fake Google. Each
//!   starts the real adapter process and its provider, signs a test user
//!   in through the adapter, and makes changes outside calbridge, directly
//!   at the provider.
//! - `cases`: the cases, each a function generic over the fixture. Most
//!   speak gRPC to the adapter process; the feed case goes through a real
//!   scheduler process.
//! - `pending`: the features still being built, whose cases go there.
//!
//! Every case × fixture is its own test, `conformance::<fixture>::<case>`,
//! so a failure names both. An adapter added later is one fixture and one
//! line in the list below. Needs the binaries (`cargo build --workspace
//! --bins`) and the test venv (`CALBRIDGE_TEST_PYTHON`); `scripts/test
//! conformance` prepares both and runs the suite.

mod cases;
mod fixtures;
mod pending;

/// One `#[tokio::test]` per case for the fixture `$ty`, in module
/// `$fixture`; the cases named in braces are known adapter bugs, marked
/// `#[ignore]` with the bug (run them with `--run-ignored`). `$d` is a
/// literal `$`, for the helper macro defined inside.
macro_rules! cases_for {
    (
        $d:tt $fixture:ident: $ty:ty { $($bug:ident: $why:literal),* $(,)? };
        [$($case:ident),* $(,)?]
    ) => {
        #[doc = concat!("The suite on the `", stringify!($fixture), "` fixture.")]
        mod $fixture {
            macro_rules! test {
                ($d(#[$d attr:meta])* $d case:ident) => {
                    $d(#[$d attr])*
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $d case() -> anyhow::Result<()> {
                        crate::cases::$d case::<$ty>().await
                    }
                };
            }
            macro_rules! case {
                $( ($bug) => { test!(#[ignore = $why] $bug); }; )*
                ($d case:ident) => { test!($d case); };
            }
            $( case!($case); )*
        }
    };
}

/// Every case of `cases` for every fixture of `fixtures`.
macro_rules! suite {
    (
        $d:tt
        fixtures: [$($fixture:ident: $ty:ty { $($bugs:tt)* }),* $(,)?],
        cases: $cases:tt $(,)?
    ) => {
        $( cases_for!($d $fixture: $ty { $($bugs)* }; $cases); )*
    };
}

/// The tests, named `conformance::<fixture>::<case>`.
mod conformance {
    suite! {
        $
        fixtures: [
            sandbox: crate::fixtures::Sandbox {},
            radicale: crate::fixtures::Radicale {},
            xandikos: crate::fixtures::Xandikos {},
            icloud: crate::fixtures::Icloud {},
            google: crate::fixtures::Google {},
            microsoft: crate::fixtures::Microsoft {},
        ],
        cases: [
            describe_matches_what_the_adapter_answers,
            series_writes_follow_the_recurrence_capability,
            creating_twice_with_one_key_reports_the_existing_event,
            a_stale_version_is_aborted_carrying_the_current_one,
            deleting_goes_by_provider_id_and_a_missing_event_is_not_found,
            an_expired_or_invalid_cursor_is_out_of_range,
            every_page_cursor_resumes_on_its_own,
            free_busy_pages_carry_no_event_content,
            outside_changes_show_up_in_the_next_sync,
            outside_changes_reach_the_feed_and_own_writes_do_not_echo,
            an_outside_event_is_edited_by_its_provider_id_never_duplicated,
            a_series_and_its_instances_written_through_the_scheduler_never_echo,
        ],
    }
}
