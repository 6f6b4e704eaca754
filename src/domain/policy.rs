//! The crash-loop rules (design section 4), as pure functions of a role's
//! history, the event, the current instant and a jitter sample. This is the
//! only place that decides whether a death is a crash, how long the role
//! backs off, when it freezes and when it is forgiven. Its time arithmetic
//! saturates, so no instant or duration (even one from an old state file)
//! can make it panic.

use std::time::Duration;

use crate::domain::spec::{Backoff, RestartPolicy, RoleSpec};
use crate::domain::state::{Exit, ExitDetail, Frozen, RoleHistory, Time, after};

/// Why a session ended, as far as the policy is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Nobody asked: a crash, or a clean exit judged by the restart policy.
    Unrequested,
    /// The tmux server went away: recorded, never charged to the role.
    InfrastructureLoss,
}

/// What the policy decided about one death.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// A crash: the replacement waits `delay` (the `n`-th restart), until `at`.
    Backoff { n: u32, delay: Duration, at: Time },
    /// A crash that exceeded the budget: the role is now frozen.
    Frozen { reason: String },
    /// A crash while the role was already frozen: recorded, nothing changes.
    AlreadyFrozen,
    /// A clean exit under `OnFailure`/`Never`: the slot is done.
    Succeeded,
    /// A crash under `Never`: recorded, the slot is not refilled.
    NotReplaced,
    /// Infrastructure loss: recorded, not charged; replaced when tmux is back.
    Uncharged,
}

/// A backoff curve as plain numbers: a role's [`Backoff`], or the pacing of
/// the daemon's own retries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Curve {
    pub initial: Duration,
    pub max: Duration,
    pub factor: f64,
    pub jitter: f64,
}

impl From<&Backoff> for Curve {
    fn from(b: &Backoff) -> Curve {
        Curve {
            initial: b.initial(),
            max: b.max(),
            factor: b.factor(),
            jitter: b.jitter(),
        }
    }
}

/// The delay before the `n`-th restart (n ≥ 1) of the curve:
/// `min(max, initial × factor^(n−1))`, then spread by `jitter × sample`
/// where `sample` is drawn uniformly from [-1, 1]. The result is rounded
/// to whole milliseconds and never exceeds `max × (1 + jitter)`.
pub fn backoff_delay(b: &Curve, n: u32, sample: f64) -> Duration {
    let n = n.max(1);
    let initial = b.initial.as_secs_f64();
    let max = b.max.as_secs_f64();
    // factor^(n-1) overflows to infinity for large n, which min() caps.
    let base = (initial * b.factor.powi((n - 1).min(i32::MAX as u32) as i32)).min(max);
    let spread = 1.0 + b.jitter * sample.clamp(-1.0, 1.0);
    let secs = (base * spread).max(0.0);
    // A float-to-integer `as` saturates (and takes NaN to 0).
    Duration::from_millis((secs * 1000.0).round() as u64)
}

/// Crashes of the history that fall inside the window ending at `now`.
/// A crash exactly `window` old has left the window.
pub fn crashes_in_window(h: &RoleHistory, window: Duration, now: Time) -> u32 {
    h.crashes
        .iter()
        .filter(|t| **t <= now && !left_window(**t, window, now))
        .count() as u32
}

/// Whether a crash at `t` is at least `window` old at `now`. Compares ages
/// rather than computing `now − window`, which has no answer when the
/// window reaches back before the earliest instant chrono holds.
fn left_window(t: Time, window: Duration, now: Time) -> bool {
    (now - t).to_std().is_ok_and(|age| age >= window)
}

/// Records one death of a session of `role` and decides what follows.
/// `sample` is a jitter sample in [-1, 1].
pub fn on_death(
    h: &mut RoleHistory,
    role: &RoleSpec,
    slot: u32,
    exit: &Exit,
    cause: Cause,
    now: Time,
    sample: f64,
) -> Verdict {
    if cause == Cause::InfrastructureLoss {
        return Verdict::Uncharged;
    }
    let success = exit.is_success();
    match role.restart {
        RestartPolicy::OnFailure | RestartPolicy::Never if success => {
            h.done_slots.insert(slot);
            return Verdict::Succeeded;
        }
        RestartPolicy::Never => {
            h.done_slots.insert(slot);
            h.failed_slots.insert(slot);
            h.last_crash_at = Some(now);
            return Verdict::NotReplaced;
        }
        _ => {}
    }

    // A crash. Keep only the window's crashes, then count this one.
    h.crashes
        .retain(|t| !left_window(*t, role.window.get(), now));
    h.crashes.push(now);
    // Counts from a state file may be anything: saturate, never overflow.
    h.restarts = h.restarts.saturating_add(1);
    let slot_restarts = h.slot_restarts.entry(slot).or_default();
    *slot_restarts = slot_restarts.saturating_add(1);
    h.last_crash_at = Some(now);

    if h.frozen.is_some() {
        return Verdict::AlreadyFrozen;
    }
    let count = h.crashes.len() as u32;
    if let Some(max) = role.max_restarts
        && count > max
    {
        let reason = format!(
            "{count} crashes in {}, last: {}",
            humantime::format_duration(role.window.get()),
            exit.reason()
        );
        h.frozen = Some(Frozen {
            reason: reason.clone(),
            at: now,
        });
        h.next_restart_at = None;
        return Verdict::Frozen { reason };
    }
    h.step = h.step.saturating_add(1);
    let delay = backoff_delay(&Curve::from(&role.backoff), h.step, sample);
    let at = after(now, delay);
    h.next_restart_at = Some(at);
    Verdict::Backoff {
        n: h.step,
        delay,
        at,
    }
}

/// May the role spawn at `now`? Frozen roles never do; a role in backoff
/// does from the instant the backoff ends.
pub fn may_spawn(h: &RoleHistory, now: Time) -> bool {
    h.frozen.is_none() && h.next_restart_at.is_none_or(|t| now >= t)
}

/// Clears everything a manual `reset role` or a template change clears: the
/// crash count, the backoff, the frozen state, the marker and finished slots.
/// Whether the role is stopped and the runs kept for their logs are not
/// crash-loop history: they stay. Idempotent. Returns whether there was
/// anything to clear.
pub fn reset(h: &mut RoleHistory) -> bool {
    let had = has_history(h) || h.marker.is_some() || !h.done_slots.is_empty() || h.restarts > 0;
    *h = RoleHistory {
        generation: h.generation,
        stopped: h.stopped,
        past: std::mem::take(&mut h.past),
        slot_runs: std::mem::take(&mut h.slot_runs),
        ..RoleHistory::default()
    };
    had
}

/// True when the role carries crash-loop history that forgiveness clears.
pub fn has_history(h: &RoleHistory) -> bool {
    h.step > 0 || !h.crashes.is_empty() || h.next_restart_at.is_some()
}

/// When the role's history will be forgiven, given the start of the
/// earliest replica that is still running: once a replica has run for
/// `reset_after` and no crash happened in that span. `None` when there is
/// nothing to forgive, the role is frozen, or nothing is running.
pub fn forgive_at(h: &RoleHistory, role: &RoleSpec, running_since: Option<Time>) -> Option<Time> {
    if h.frozen.is_some() || !has_history(h) {
        return None;
    }
    let since = running_since?;
    let from = match h.last_crash_at {
        Some(c) if c > since => c,
        _ => since,
    };
    Some(after(from, role.reset_after.get()))
}

/// Forgets the backoff curve and the window's crashes. The total restart
/// count stays, as `kubectl` keeps RESTARTS.
pub fn forgive(h: &mut RoleHistory) {
    h.crashes.clear();
    h.step = 0;
    h.next_restart_at = None;
}

/// Is this exit detail the infrastructure's fault rather than the role's?
pub fn cause_of(exit: &Exit) -> Cause {
    if exit.detail == ExitDetail::TmuxLost {
        Cause::InfrastructureLoss
    } else {
        Cause::Unrequested
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::spec::{Factor, Jitter, NonZeroSpan, Span};
    use proptest::prelude::*;

    fn t(ms: i64) -> Time {
        "2026-01-01T00:00:00Z".parse::<Time>().unwrap() + chrono::Duration::milliseconds(ms)
    }

    fn role() -> RoleSpec {
        let mut r = RoleSpec::with_defaults("w", 1, &["sh"]);
        r.backoff = Backoff::new(
            NonZeroSpan::from_millis(100),
            Span::from_millis(1000),
            Factor::new(2.0).unwrap(),
            Jitter::new(0.0).unwrap(),
        )
        .unwrap();
        r.max_restarts = Some(3);
        r.window = NonZeroSpan::from_secs(10);
        r.reset_after = NonZeroSpan::from_secs(5);
        r
    }

    fn crash(h: &mut RoleHistory, r: &RoleSpec, at: i64) -> Verdict {
        on_death(
            h,
            r,
            0,
            &Exit::code(1, t(at)),
            Cause::Unrequested,
            t(at),
            0.0,
        )
    }

    #[test]
    fn the_curve_doubles_from_initial_and_caps_at_max() {
        let b = Curve::from(&role().backoff);
        let ms: Vec<u128> = (1..=6)
            .map(|n| backoff_delay(&b, n, 0.0).as_millis())
            .collect();
        assert_eq!(ms, vec![100, 200, 400, 800, 1000, 1000]);
        // n far beyond the cap does not overflow.
        assert_eq!(backoff_delay(&b, u32::MAX, 0.0).as_millis(), 1000);
    }

    #[test]
    fn the_first_restart_waits_initial_too() {
        let r = role();
        let mut h = RoleHistory::default();
        assert_eq!(
            crash(&mut h, &r, 0),
            Verdict::Backoff {
                n: 1,
                delay: Duration::from_millis(100),
                at: t(100)
            }
        );
    }

    #[test]
    fn jitter_stays_within_its_bounds() {
        let mut b = Curve::from(&role().backoff);
        b.jitter = 0.1;
        assert_eq!(backoff_delay(&b, 1, -1.0).as_millis(), 90);
        assert_eq!(backoff_delay(&b, 1, 1.0).as_millis(), 110);
        assert_eq!(
            backoff_delay(&b, 1, 7.0).as_millis(),
            110,
            "samples are clamped"
        );
        assert_eq!(
            backoff_delay(&b, 9, 1.0).as_millis(),
            1100,
            "the cap is jittered too"
        );
    }

    #[test]
    fn backoff_ends_exactly_at_its_instant() {
        let r = role();
        let mut h = RoleHistory::default();
        crash(&mut h, &r, 0);
        assert!(!may_spawn(&h, t(99)));
        assert!(may_spawn(&h, t(100)));
    }

    #[test]
    fn a_crash_during_backoff_extends_it() {
        let r = role();
        let mut h = RoleHistory::default();
        crash(&mut h, &r, 0);
        assert_eq!(
            crash(&mut h, &r, 50),
            Verdict::Backoff {
                n: 2,
                delay: Duration::from_millis(200),
                at: t(250)
            }
        );
        assert!(!may_spawn(&h, t(100)));
    }

    #[test]
    fn the_crash_that_exceeds_the_budget_freezes_and_not_the_one_before() {
        let r = role(); // max_restarts 3
        let mut h = RoleHistory::default();
        for i in 0..3 {
            assert!(matches!(
                crash(&mut h, &r, i * 1000),
                Verdict::Backoff { .. }
            ));
        }
        assert!(h.frozen.is_none());
        assert_eq!(
            crash(&mut h, &r, 3000),
            Verdict::Frozen {
                reason: "4 crashes in 10s, last: exit 1".into()
            }
        );
        assert!(!may_spawn(&h, t(1_000_000)));
        assert_eq!(crash(&mut h, &r, 4000), Verdict::AlreadyFrozen);
        assert_eq!(h.restarts, 5);
    }

    #[test]
    fn crashes_leave_the_window_after_exactly_window() {
        let r = role(); // window 10 s, max 3
        let mut h = RoleHistory::default();
        for i in 0..3 {
            crash(&mut h, &r, i);
        }
        assert_eq!(crashes_in_window(&h, r.window.get(), t(9_999)), 3);
        assert_eq!(crashes_in_window(&h, r.window.get(), t(10_000)), 2);
        // At 10 000 ms the first crash has left: this is the third in window.
        assert!(matches!(crash(&mut h, &r, 10_000), Verdict::Backoff { .. }));
        // One millisecond earlier it would have been the fourth.
        let mut h2 = RoleHistory::default();
        for i in 0..3 {
            crash(&mut h2, &r, i);
        }
        assert!(matches!(crash(&mut h2, &r, 9_999), Verdict::Frozen { .. }));
    }

    #[test]
    fn unlimited_budget_never_freezes() {
        let mut r = role();
        r.max_restarts = None;
        let mut h = RoleHistory::default();
        for i in 0..100 {
            assert!(matches!(crash(&mut h, &r, i), Verdict::Backoff { .. }));
        }
    }

    #[test]
    fn reset_unfreezes_and_is_idempotent() {
        let r = role();
        let mut h = RoleHistory {
            generation: 7,
            ..Default::default()
        };
        for i in 0..4 {
            crash(&mut h, &r, i);
        }
        assert!(h.frozen.is_some());
        assert!(reset(&mut h));
        assert_eq!(
            h,
            RoleHistory {
                generation: 7,
                ..Default::default()
            }
        );
        assert!(!reset(&mut h));
        assert!(may_spawn(&h, t(4)));
        assert!(matches!(
            crash(&mut h, &r, 5),
            Verdict::Backoff { n: 1, .. }
        ));
    }

    #[test]
    fn forgiveness_comes_exactly_reset_after_a_stable_start() {
        let r = role(); // reset_after 5 s
        let mut h = RoleHistory::default();
        crash(&mut h, &r, 0);
        crash(&mut h, &r, 100);
        // The replacement started at 400 ms and keeps running.
        assert_eq!(forgive_at(&h, &r, Some(t(400))), Some(t(5_400)));
        assert_eq!(forgive_at(&h, &r, None), None);
        forgive(&mut h);
        assert_eq!(
            forgive_at(&h, &r, Some(t(400))),
            None,
            "nothing left to forgive"
        );
        assert!(matches!(
            crash(&mut h, &r, 6_000),
            Verdict::Backoff { n: 1, .. }
        ));
        assert_eq!(h.restarts, 3, "the restart count survives forgiveness");
    }

    #[test]
    fn a_later_crash_of_a_sibling_postpones_forgiveness() {
        let r = role();
        let mut h = RoleHistory::default();
        crash(&mut h, &r, 3_000);
        assert_eq!(forgive_at(&h, &r, Some(t(0))), Some(t(8_000)));
    }

    #[test]
    fn frozen_roles_are_not_forgiven() {
        let r = role();
        let mut h = RoleHistory::default();
        for i in 0..4 {
            crash(&mut h, &r, i);
        }
        assert_eq!(forgive_at(&h, &r, Some(t(0))), None);
    }

    #[test]
    fn restart_policies_judge_exit_zero() {
        let mut r = role();
        let mut h = RoleHistory::default();
        let ok = Exit::code(0, t(0));
        assert!(matches!(
            on_death(&mut h, &r, 0, &ok, Cause::Unrequested, t(0), 0.0),
            Verdict::Backoff { .. }
        ));
        r.restart = RestartPolicy::OnFailure;
        let mut h = RoleHistory::default();
        assert_eq!(
            on_death(&mut h, &r, 2, &ok, Cause::Unrequested, t(0), 0.0),
            Verdict::Succeeded
        );
        assert!(h.done_slots.contains(&2));
        assert!(matches!(crash(&mut h, &r, 1), Verdict::Backoff { .. }));
        r.restart = RestartPolicy::Never;
        let mut h = RoleHistory::default();
        assert_eq!(crash(&mut h, &r, 0), Verdict::NotReplaced);
        assert_eq!(h.restarts, 0);
        assert!(h.done_slots.contains(&0));
        assert!(
            h.failed_slots.contains(&0),
            "a failure under Never is kept as such"
        );
    }

    #[test]
    fn infrastructure_loss_is_not_charged() {
        let r = role();
        let mut h = RoleHistory::default();
        let lost = Exit::detail(ExitDetail::TmuxLost, t(0));
        for _ in 0..10 {
            assert_eq!(
                on_death(&mut h, &r, 0, &lost, cause_of(&lost), t(0), 0.0),
                Verdict::Uncharged
            );
        }
        assert_eq!(h, RoleHistory::default());
    }

    // --- no instant or duration makes the rules panic ----------------------

    #[test]
    fn a_crash_at_the_edge_of_time_does_not_overflow() {
        // The window reaches back before the earliest instant chrono holds.
        let mut r = role();
        r.window = NonZeroSpan::new(crate::domain::spec::MAX_DURATION).unwrap();
        r.reset_after = r.window;
        let first = Time::MIN_UTC;
        let mut h = RoleHistory::default();
        let v = on_death(
            &mut h,
            &r,
            0,
            &Exit::code(1, first),
            Cause::Unrequested,
            first,
            0.0,
        );
        assert!(matches!(v, Verdict::Backoff { .. }), "{v:?}");
        assert_eq!(crashes_in_window(&h, Duration::MAX, first), 1);
        // And forward past the latest one.
        assert_eq!(forgive_at(&h, &r, Some(Time::MAX_UTC)), Some(Time::MAX_UTC));
        let last = Time::MAX_UTC;
        let v = on_death(
            &mut h,
            &r,
            0,
            &Exit::code(1, last),
            Cause::Unrequested,
            last,
            1.0,
        );
        assert!(
            matches!(v, Verdict::Backoff { at, .. } if at == Time::MAX_UTC),
            "{v:?}"
        );
    }

    #[test]
    fn counts_from_a_state_file_saturate() {
        let r = {
            let mut r = role();
            r.max_restarts = None;
            r
        };
        let mut h = RoleHistory {
            step: u32::MAX,
            restarts: u32::MAX,
            slot_restarts: [(0, u32::MAX)].into(),
            ..RoleHistory::default()
        };
        assert!(matches!(
            crash(&mut h, &r, 0),
            Verdict::Backoff { n: u32::MAX, .. }
        ));
        assert_eq!((h.restarts, h.slot_restarts[&0]), (u32::MAX, u32::MAX));
    }

    fn any_time() -> impl Strategy<Value = Time> {
        let (lo, hi) = (
            Time::MIN_UTC.timestamp_millis(),
            Time::MAX_UTC.timestamp_millis(),
        );
        prop_oneof![
            Just(Time::MIN_UTC),
            Just(Time::MAX_UTC),
            (lo..=hi).prop_map(move |ms| Time::from_timestamp_millis(ms).unwrap()),
            // Near today, where the rules usually run.
            (-1_000_000_000i64..1_000_000_000).prop_map(t),
        ]
    }

    fn any_duration() -> impl Strategy<Value = Duration> {
        prop_oneof![
            Just(Duration::MAX),
            Just(Duration::ZERO),
            (any::<u64>(), 0..1_000_000_000u32).prop_map(|(s, n)| Duration::new(s, n)),
            (0..100_000_000u64).prop_map(Duration::from_millis),
        ]
    }

    /// A duration a spec may hold: 1 ns to the cap.
    fn span() -> impl Strategy<Value = NonZeroSpan> {
        let max = crate::domain::spec::MAX_DURATION.as_nanos() as u64;
        prop_oneof![Just(max), 1..=max, 1..10_000_000_000u64]
            .prop_map(|n| NonZeroSpan::new(Duration::from_nanos(n)).unwrap())
    }

    fn any_role() -> impl Strategy<Value = RoleSpec> {
        (
            span(),
            span(),
            span(),
            1.0..1e12f64,
            0.0..=1.0f64,
            proptest::option::of(any::<u32>()),
            0..3u8,
        )
            .prop_map(|(a, b, window, factor, jitter, max_restarts, restart)| {
                let (initial, max) = if a <= b { (a, b) } else { (b, a) };
                let mut r = RoleSpec::with_defaults("w", 1, &["sh"]);
                r.backoff = Backoff::new(
                    initial,
                    Span::new(max.get()).unwrap(),
                    Factor::new(factor).unwrap(),
                    Jitter::new(jitter).unwrap(),
                )
                .unwrap();
                r.window = window;
                r.reset_after = a;
                r.max_restarts = max_restarts;
                r.restart = [
                    RestartPolicy::Always,
                    RestartPolicy::OnFailure,
                    RestartPolicy::Never,
                ][restart as usize];
                r
            })
    }

    fn any_history() -> impl Strategy<Value = RoleHistory> {
        (
            proptest::collection::vec(any_time(), 0..6),
            any::<u32>(),
            any::<u32>(),
            proptest::option::of(any_time()),
            proptest::option::of(any_time()),
            any::<bool>(),
        )
            .prop_map(
                |(crashes, step, restarts, next, last, frozen)| RoleHistory {
                    crashes,
                    step,
                    restarts,
                    next_restart_at: next,
                    last_crash_at: last,
                    frozen: frozen.then(|| Frozen {
                        reason: "old".into(),
                        at: Time::MIN_UTC,
                    }),
                    ..RoleHistory::default()
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn no_time_or_duration_makes_the_rules_panic(
            role in any_role(),
            mut h in any_history(),
            now in any_time(),
            since in proptest::option::of(any_time()),
            code in any::<i32>(),
            sample in any::<f64>(),
            raw in any_duration(),
        ) {
            let exit = Exit::code(code, now);
            on_death(&mut h, &role, 0, &exit, cause_of(&exit), now, sample);
            may_spawn(&h, now);
            crashes_in_window(&h, raw, now);
            crashes_in_window(&h, role.window.get(), now);
            forgive_at(&h, &role, since);
            after(now, raw);
        }

        #[test]
        fn any_curve_gives_a_delay(
            initial in any_duration(),
            max in any_duration(),
            factor in any::<f64>(),
            jitter in any::<f64>(),
            n in any::<u32>(),
            sample in any::<f64>(),
        ) {
            backoff_delay(&Curve { initial, max, factor, jitter }, n, sample);
        }

        #[test]
        fn heartbeat_verdicts_never_overflow(
            last in proptest::option::of(any_time()),
            started in any_time(),
            watching in proptest::option::of(any_time()),
            timeout in any_duration(),
            failures in any::<u32>(),
            now in any_time(),
        ) {
            let c = crate::domain::health::evaluate(last, started, watching, timeout, failures, now);
            prop_assert!(c.stale || c.next_at.is_some());
        }
    }
}
