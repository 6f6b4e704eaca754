//! The reconciler: a pure plan from the world (desired teams, sessions,
//! role histories) and the current instant to the actions that bring
//! reality closer to the declaration, plus when to plan again. It is never
//! told why it runs, so it must be level-triggered: planning again after the
//! actions were carried out yields nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::domain::Rng;
use crate::domain::event::{Event, EventKind};
use crate::domain::health::{self, HealthState};
use crate::domain::key::{RoleKey, TeamKey};
use crate::domain::policy;
use crate::domain::shift;
use crate::domain::spec::{RoleSpec, TeamSpec};
use crate::domain::state::{Exit, ExitDetail, RoleHistory, Session, SessionState, Time, World};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The role keeps fewer replicas: the newest sessions go first.
    ScaleDown,
    /// The role or its team is no longer declared.
    RoleRemoved,
    /// The session was outdated (an older template, or from before a
    /// shift) and its fresh successor in the slot is ready.
    Replaced,
    /// Another session holds its slot (a replacement that was not needed
    /// any more, for example after a shift ended).
    Superfluous,
    /// Its role was stopped on request (`marvel stop`).
    RoleStopped,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::ScaleDown => "scaled down",
            StopReason::RoleRemoved => "role removed",
            StopReason::Replaced => "replaced: its successor is ready",
            StopReason::Superfluous => "not needed: another session holds its slot",
            StopReason::RoleStopped => "stopped on request (not a crash)",
        }
    }
}

/// What planning decides about the world as it is, one change at a time.
/// [`reconcile`] applies each at once: most are pure transitions of the
/// world; a spawn or a stop also leaves an [`Effect`] for the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// Start a new session in this replica slot.
    Spawn { role: RoleKey, slot: u32 },
    /// Stop a live session (never counted as a crash).
    Stop { uid: u64, reason: StopReason },
    /// The marker's replacement runs: drop the marker.
    ClearMarker { role: RoleKey },
    /// A replica ran long enough: forget the backoff curve.
    Forgive { role: RoleKey },
    /// A session's heartbeat health changed: record it (and say so).
    Health { uid: u64, state: HealthState },
    /// A session missed its heartbeats: record the death as a crash
    /// ("heartbeat stale") and remove its pane.
    KillUnhealthy { uid: u64 },
    /// Move a team's rolling shift on.
    Shift { team: TeamKey, step: shift::Step },
}

/// The intents for the world as it is, and when to look again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Intents {
    pub intents: Vec<Intent>,
    /// Plan again at this instant even if nothing else happens.
    pub wake_at: Option<Time>,
}

impl Intents {
    pub(crate) fn wake(&mut self, t: Time) {
        self.wake_at = Some(self.wake_at.map_or(t, |w| w.min(t)));
    }
}

/// What reconciling leaves to the daemon: the real effects, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Session `uid` is recorded pending in its slot: make its pane.
    Spawn { uid: u64 },
    /// A session stopped on purpose (never a crash): its pane, if it has
    /// one, is to go.
    Stopped { session: Session },
    /// A session recorded dead because its heartbeats went stale: its
    /// program is to be ended, and its last screen is worth keeping.
    Killed { session: Session },
}

/// The outcome of [`reconcile`]: effects to carry out, the events of every
/// transition applied, and when to reconcile again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub effects: Vec<Effect>,
    pub events: Vec<Event>,
    pub wake_at: Option<Time>,
}

/// Brings the world as close to its declaration as it can go at `now`:
/// plans, applies every intent, and plans again until nothing is left.
/// Level-triggered: reconciling again at the same instant does nothing.
pub fn reconcile(world: &mut World, now: Time, rng: &mut impl Rng) -> Plan {
    let mut plan = Plan::default();
    // Each pass applies what the world asked for; a pass changes what the
    // next one sees (a shift moving on, a stop freeing a slot), and the
    // world reaches a fixed point in a few passes. The bound is a guard
    // that the property tests show is never reached.
    for _ in 0..MAX_PASSES {
        if pass(world, now, rng, &mut plan).is_empty() {
            return plan;
        }
    }
    plan.events.push(Event::new(
        now,
        EventKind::Warning,
        "",
        format!("planning did not settle after {MAX_PASSES} passes; it goes on at the next change"),
    ));
    plan
}

/// More passes than any world needs (see [`reconcile`]).
const MAX_PASSES: usize = 64;

/// One planning pass: works out the intents and applies them. Returns
/// them (tests read them); empty once the world is settled.
pub(crate) fn pass(
    world: &mut World,
    now: Time,
    rng: &mut impl Rng,
    plan: &mut Plan,
) -> Vec<Intent> {
    let found = intents(world, now);
    plan.wake_at = found.wake_at;
    for intent in &found.intents {
        apply(world, intent.clone(), now, rng, plan);
    }
    found.intents
}

/// Applies one intent to the world, recording its events and effects.
fn apply(world: &mut World, intent: Intent, now: Time, rng: &mut impl Rng, plan: &mut Plan) {
    match intent {
        Intent::Spawn { role, slot } => {
            let uid = world.begin_spawn(&role, slot, now);
            plan.effects.push(Effect::Spawn { uid });
        }
        Intent::Stop { uid, reason } => {
            if let Some(session) = world.stop(uid, now) {
                // Its successor has the same key: say which one stops.
                let why = match reason {
                    StopReason::Replaced | StopReason::Superfluous => {
                        format!("{} (uid {uid})", reason.as_str())
                    }
                    _ => reason.as_str().to_string(),
                };
                plan.events
                    .push(Event::new(now, EventKind::Stopped, &session.key, why));
                plan.effects.push(Effect::Stopped { session });
            }
        }
        Intent::ClearMarker { role } => world.clear_marker(&role),
        Intent::Forgive { role } => plan.events.extend(world.forgive(&role, now)),
        Intent::Health { uid, state } => plan.events.extend(world.set_health(uid, state, now)),
        Intent::KillUnhealthy { uid } => {
            let Some(mut session) = world.sessions.get(&uid).cloned() else {
                return;
            };
            let exit = Exit::detail(ExitDetail::Unhealthy(health::HEARTBEAT_STALE.into()), now);
            session.exit = Some(exit.clone());
            plan.events
                .extend(world.on_exit(uid, exit, now, rng.jitter()));
            plan.effects.push(Effect::Killed { session });
        }
        Intent::Shift { team, step } => plan.events.extend(world.shift_step(&team, step, now)),
    }
}

/// Works out the next intents for every shift, every declared role and
/// every orphaned session, without changing anything.
pub fn intents(world: &World, now: Time) -> Intents {
    let mut plan = Intents::default();
    // A shift that moves on changes which sessions are outdated: let that
    // happen first, then plan the roles against it.
    shift::plan(world, now, &mut plan);
    if !plan.intents.is_empty() {
        return plan;
    }
    // The live sessions, by role, in one pass: each role's layout then
    // costs what the role holds, not what the world holds.
    let mut by_role: HashMap<(&str, &str, &str), Vec<&Session>> = HashMap::new();
    for s in world.sessions.values().filter(|s| s.state.is_live()) {
        let k = &s.key;
        by_role
            .entry((&k.workspace, &k.team, &k.role))
            .or_default()
            .push(s);
    }
    let declared: Vec<(RoleKey, &RoleSpec)> = world
        .teams
        .values()
        .flat_map(|t| t.spec.roles.iter().map(|r| (t.spec.role_key(r), r)))
        .collect();
    for (key, role) in &declared {
        let live = by_role
            .remove(&(key.workspace.as_str(), key.team.as_str(), key.role.as_str()))
            .unwrap_or_default();
        plan_role(world, key, role, live, now, &mut plan);
    }
    // Sessions whose role or team is gone.
    let mut orphans: Vec<u64> = by_role.into_values().flatten().map(|s| s.uid).collect();
    orphans.sort_unstable();
    for uid in orphans {
        plan.intents.push(Intent::Stop {
            uid,
            reason: StopReason::RoleRemoved,
        });
    }
    plan
}

/// How a role's live sessions sit in its replica slots: which session
/// serves each slot, which fresh session is starting beside an outdated
/// one (a surge), what must stop, and how many slots are still to fill.
///
/// A slot normally holds one session. While an outdated session (an older
/// template, or one from before a running shift) is replaced, its slot
/// holds it and its fresh successor; the outdated one stops only once the
/// successor is ready, so the role never drops below its replicas, and a
/// role has at most one surge, so it never has more than replicas + 1
/// live sessions.
#[derive(Debug, Clone, Default)]
pub struct Layout<'a> {
    /// The session serving each occupied slot.
    pub occupants: BTreeMap<u32, &'a Session>,
    /// A fresh session starting beside an outdated occupant.
    pub surges: BTreeMap<u32, &'a Session>,
    /// Sessions to stop, and why.
    pub stops: Vec<(u64, StopReason)>,
    /// Live sessions that are due to be replaced.
    pub outdated: BTreeSet<u64>,
    /// Free slots to fill, lowest first.
    pub missing: Vec<u32>,
    /// Replicas the role wants running: its `replicas` less the slots that
    /// ended for good (`OnFailure` successes, `Never` deaths).
    pub wanted: u32,
}

impl Layout<'_> {
    /// Occupants that run.
    pub fn running(&self) -> u32 {
        self.occupants
            .values()
            .filter(|s| s.state == SessionState::Running)
            .count() as u32
    }

    /// Nothing to change: every wanted replica runs the current template,
    /// nothing is being replaced and nothing is to stop.
    pub fn settled(&self) -> bool {
        self.running() == self.wanted
            && self.stops.is_empty()
            && self.surges.is_empty()
            && self.missing.is_empty()
            && self
                .occupants
                .values()
                .all(|s| !self.outdated.contains(&s.uid))
    }
}

/// Works out the layout of one declared role at `now`.
pub fn layout<'a>(world: &'a World, key: &RoleKey, role: &RoleSpec, now: Time) -> Layout<'a> {
    let live = world
        .sessions
        .values()
        .filter(|s| s.state.is_live() && in_role(s, key))
        .collect();
    layout_of(world, key, role, live, now)
}

/// The layout of one declared role whose live sessions are `live`, in uid
/// order.
fn layout_of<'a>(
    world: &'a World,
    key: &RoleKey,
    role: &RoleSpec,
    mut live: Vec<&'a Session>,
    now: Time,
) -> Layout<'a> {
    let default = RoleHistory::default();
    let h = world.roles.get(key).unwrap_or(&default);
    let cutoff = shift::cutoff(world, key);
    let outdated = |s: &Session| s.generation != h.generation || cutoff.is_some_and(|c| s.uid <= c);
    let ready = |s: &Session| health::ready(s, role, world.watching_since, now);

    if h.stopped {
        // A stopped role keeps nothing running and wants nothing.
        let stops = live
            .into_iter()
            .map(|s| (s.uid, StopReason::RoleStopped))
            .collect();
        return Layout {
            stops,
            ..Layout::default()
        };
    }
    // By slot, each slot's sessions in uid order (the sort is stable).
    live.sort_by_key(|s| s.key.slot);
    let mut lay = Layout::default();
    for sessions in live.chunk_by(|a, b| a.key.slot == b.key.slot) {
        let slot = sessions[0].key.slot;
        let old = || sessions.iter().copied().filter(|s| outdated(s));
        let fresh = || sessions.iter().copied().filter(|s| !outdated(s));
        lay.outdated.extend(old().map(|s| s.uid));
        // One fresh and one outdated session per slot at most. Of fresh
        // duplicates (a successor whose shift ended), keep the newest that
        // is ready, else the one that has been serving longest, else the
        // newest; of outdated ones, the one that serves.
        let best_fresh = fresh()
            .filter(|s| ready(s))
            .max_by_key(|s| s.uid)
            .or_else(|| {
                fresh()
                    .filter(|s| s.state == SessionState::Running)
                    .min_by_key(|s| s.uid)
            })
            .or_else(|| fresh().max_by_key(|s| s.uid));
        let best_old = old().max_by_key(|s| (s.state == SessionState::Running, s.uid));
        for s in fresh().chain(old()) {
            if Some(s.uid) != best_fresh.map(|b| b.uid) && Some(s.uid) != best_old.map(|b| b.uid) {
                lay.stops.push((s.uid, StopReason::Superfluous));
            }
        }
        match (best_fresh, best_old) {
            (Some(f), Some(o)) if ready(f) => {
                lay.stops.push((o.uid, StopReason::Replaced));
                lay.occupants.insert(slot, f);
            }
            (Some(f), Some(o)) => {
                lay.occupants.insert(slot, o);
                lay.surges.insert(slot, f);
            }
            (Some(s), None) | (None, Some(s)) => {
                lay.occupants.insert(slot, s);
            }
            (None, None) => {}
        }
    }

    // A successor that finished for good (`OnFailure` success, `Never`)
    // did its slot's work: the outdated session it was to replace goes too,
    // and the slot gets no other successor.
    let finished: Vec<u32> = lay
        .occupants
        .iter()
        .filter(|(slot, s)| {
            h.done_slots.contains(slot)
                && lay.outdated.contains(&s.uid)
                && !lay.surges.contains_key(slot)
        })
        .map(|(slot, _)| *slot)
        .collect();
    for slot in finished {
        let s = lay.occupants.remove(&slot).expect("listed above");
        lay.stops.push((s.uid, StopReason::Replaced));
    }

    // Scale down, newest first. Finished slots give way before running
    // sessions do: they stop nothing.
    let excess = (lay.occupants.len() as u32).saturating_sub(role.replicas.get());
    if excess > 0 {
        let newest = |slot: &u32| {
            let o = lay.occupants[slot].uid;
            lay.surges.get(slot).map_or(o, |s| s.uid.max(o))
        };
        let mut slots: Vec<u32> = lay.occupants.keys().copied().collect();
        slots.sort_by_key(|slot| std::cmp::Reverse(newest(slot)));
        for slot in slots.into_iter().take(excess as usize) {
            for s in [lay.occupants.remove(&slot), lay.surges.remove(&slot)]
                .into_iter()
                .flatten()
            {
                lay.stops.push((s.uid, StopReason::ScaleDown));
            }
        }
    }
    let kept = lay.occupants.len() as u32;
    let done = (h.done_slots.len() as u32).min(role.replicas.get() - kept);
    lay.wanted = role.replicas.get() - done;
    let missing = lay.wanted - kept;
    lay.missing = (0..)
        .filter(|slot| !lay.occupants.contains_key(slot) && !h.done_slots.contains(slot))
        .take(missing as usize)
        .collect();
    lay
}

fn in_role(s: &Session, key: &RoleKey) -> bool {
    s.key.role == key.role && s.key.team == key.team && s.key.workspace == key.workspace
}

fn plan_role<'a>(
    world: &'a World,
    key: &RoleKey,
    role: &RoleSpec,
    live: Vec<&'a Session>,
    now: Time,
    plan: &mut Intents,
) {
    let default = Default::default();
    let h = world.roles.get(key).unwrap_or(&default);
    let lay = layout_of(world, key, role, live, now);
    // Health first: a successor's first heartbeat is what lets its
    // predecessor stop, and the events should read in that order.
    for s in lay.occupants.values().chain(lay.surges.values()) {
        let Some(c) = health::check(s, role, world.watching_since, now) else {
            continue;
        };
        if c.stale {
            plan.intents.push(Intent::KillUnhealthy { uid: s.uid });
            continue;
        }
        if c.state != s.health {
            plan.intents.push(Intent::Health {
                uid: s.uid,
                state: c.state,
            });
        }
        if let Some(at) = c.next_at {
            plan.wake(at);
        }
    }
    // A successor (or a shift waiting on its role) needs to know when a
    // session has run long enough to count as ready.
    for s in lay.occupants.values().chain(lay.surges.values()) {
        if let Some(at) = health::ready_at(s, role)
            && at > now
        {
            plan.wake(at);
        }
    }
    for (uid, reason) in &lay.stops {
        plan.intents.push(Intent::Stop {
            uid: *uid,
            reason: *reason,
        });
    }
    let may_spawn = policy::may_spawn(h, now);

    // Forgiveness, once the earliest running replica has run long enough.
    let running_since = lay
        .occupants
        .values()
        .filter(|s| s.state == SessionState::Running)
        .filter_map(|s| s.started_at)
        .min();
    if let Some(at) = policy::forgive_at(h, role, running_since) {
        if now >= at {
            plan.intents.push(Intent::Forgive { role: key.clone() });
        } else {
            plan.wake(at);
        }
    }

    let outdated_slot = lay
        .occupants
        .iter()
        .find(|(_, s)| lay.outdated.contains(&s.uid))
        .map(|(slot, _)| *slot);

    // The marker goes once the role is whole again: no slot left to fill,
    // no backoff to wait out, nothing left to replace, and every session
    // started since it runs. A slot that ended for good keeps its marker.
    if let Some(m) = &h.marker {
        let waiting = lay
            .occupants
            .values()
            .chain(lay.surges.values())
            .any(|s| s.uid > m.uid && s.state != SessionState::Running);
        if lay.missing.is_empty()
            && outdated_slot.is_none()
            && !waiting
            && may_spawn
            && !h.done_slots.contains(&m.key.slot)
        {
            plan.intents.push(Intent::ClearMarker { role: key.clone() });
        }
    }

    if h.frozen.is_none() {
        if !may_spawn {
            // Spawns, replacements and the marker wait for the backoff.
            if let Some(at) = h.next_restart_at
                && (!lay.missing.is_empty() || outdated_slot.is_some() || h.marker.is_some())
            {
                plan.wake(at);
            }
        } else if !lay.missing.is_empty() {
            for slot in &lay.missing {
                plan.intents.push(Intent::Spawn {
                    role: key.clone(),
                    slot: *slot,
                });
            }
        } else if let Some(slot) = outdated_slot
            && lay.surges.is_empty()
        {
            // Rolling replacement: start the successor of one outdated
            // session, beside it; it is stopped once the successor is ready.
            plan.intents.push(Intent::Spawn {
                role: key.clone(),
                slot,
            });
        }
    }
}

/// What re-applying a team does to one role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleChange {
    Created,
    Unchanged,
    /// Only `replicas` changed.
    Scaled {
        from: u32,
        to: u32,
    },
    /// Policy fields changed (and perhaps `replicas`): applied to the
    /// running sessions in place, crash-loop history cleared.
    Updated {
        fields: Vec<&'static str>,
    },
    /// The program changed (`command`, `env`, `cwd`): replicas are
    /// replaced, history cleared.
    Replaced {
        fields: Vec<&'static str>,
    },
    Removed,
}

impl RoleChange {
    /// Whether the change clears the role's crash-loop history (and so
    /// un-freezes it).
    pub fn clears_history(&self) -> bool {
        matches!(
            self,
            RoleChange::Updated { .. } | RoleChange::Replaced { .. }
        )
    }
}

/// Compares a stored team with a newly applied one, role by role, in the new
/// file's order followed by removed roles.
pub fn diff(old: Option<&TeamSpec>, new: &TeamSpec) -> Vec<(RoleKey, RoleChange)> {
    let mut out = Vec::new();
    for role in &new.roles {
        let key = new.role_key(role);
        let change = match old.and_then(|o| o.role(role.name.as_str())) {
            None => RoleChange::Created,
            Some(prev) => {
                let fields = prev.changed_fields(role);
                if !prev.same_template(role) {
                    RoleChange::Replaced { fields }
                } else if fields.iter().any(|f| *f != "replicas") {
                    RoleChange::Updated { fields }
                } else if !fields.is_empty() {
                    RoleChange::Scaled {
                        from: prev.replicas.get(),
                        to: role.replicas.get(),
                    }
                } else {
                    RoleChange::Unchanged
                }
            }
        };
        out.push((key, change));
    }
    if let Some(old) = old {
        for role in &old.roles {
            if new.role(role.name.as_str()).is_none() {
                out.push((old.role_key(role), RoleChange::Removed));
            }
        }
    }
    out
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::domain::spec::Replicas;
    use crate::domain::state::{Exit, ExitDetail};
    use crate::domain::world::sim::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Advance(i64),
        Die { role: usize, slot: u32, code: i32 },
        DieAll { role: usize },
        TmuxLoss,
        Scale { role: usize, to: u32 },
        Reset { role: usize },
        Kill { role: usize, slot: u32 },
        StartPending,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (1i64..3000).prop_map(Op::Advance),
            4 => (0usize..2, 0u32..4, 0i32..3).prop_map(|(role, slot, code)| Op::Die { role, slot, code }),
            1 => (0usize..2).prop_map(|role| Op::DieAll { role }),
            1 => Just(Op::TmuxLoss),
            1 => (0usize..2, 1u32..5).prop_map(|(role, to)| Op::Scale { role, to }),
            1 => (0usize..2).prop_map(|role| Op::Reset { role }),
            1 => (0usize..2, 0u32..4).prop_map(|(role, slot)| Op::Kill { role, slot }),
            2 => Just(Op::StartPending),
        ]
    }

    const ROLES: [&str; 2] = ["a", "b"];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn crash_loop_invariants_hold_for_any_sequence(ops in proptest::collection::vec(op(), 1..80), auto in any::<bool>()) {
            let mut sim = Sim::new();
            sim.auto_start = auto;
            let mut b = role("b", 2);
            b.restart = crate::domain::spec::RestartPolicy::OnFailure;
            sim.apply(team(vec![role("a", 3), b]));
            sim.settle();
            let mut ms = 0i64;
            for op in ops {
                match op {
                    Op::Advance(d) => { ms += d; sim.at(ms); }
                    Op::Die { role, slot, code } => {
                        let uid = sim.live(ROLES[role]).iter().find(|s| s.key.slot == slot).map(|s| s.uid);
                        if let Some(uid) = uid {
                            sim.world.on_exit(uid, Exit::code(code, sim.now), sim.now, 0.5);
                        }
                    }
                    Op::DieAll { role } => {
                        let uids: Vec<u64> = sim.live(ROLES[role]).iter().map(|s| s.uid).collect();
                        for uid in uids {
                            sim.world.on_exit(uid, Exit::signal(9, sim.now), sim.now, -0.5);
                        }
                    }
                    Op::TmuxLoss => {
                        let uids: Vec<u64> = sim.world.sessions.values().filter(|s| s.state.is_live()).map(|s| s.uid).collect();
                        let before: Vec<_> = ROLES.iter().map(|r| (sim.history(r).restarts, sim.history(r).frozen.clone())).collect();
                        for uid in uids {
                            sim.world.on_exit(uid, Exit::detail(ExitDetail::TmuxLost, sim.now), sim.now, 0.0);
                        }
                        let after: Vec<_> = ROLES.iter().map(|r| (sim.history(r).restarts, sim.history(r).frozen.clone())).collect();
                        prop_assert_eq!(before, after, "infrastructure loss charged a role");
                    }
                    Op::Scale { role, to } => { let k = sim.rk(ROLES[role]); sim.world.scale(&k, Replicas::new(to).unwrap(), sim.now); }
                    Op::Reset { role } => {
                        let k = sim.rk(ROLES[role]);
                        sim.world.reset_role(&k, sim.now);
                        prop_assert!(sim.history(ROLES[role]).frozen.is_none(), "reset did not un-freeze");
                        prop_assert!(policy::may_spawn(sim.history(ROLES[role]), sim.now));
                    }
                    Op::Kill { role, slot } => {
                        let uid = sim.live(ROLES[role]).iter().find(|s| s.key.slot == slot).map(|s| s.uid);
                        if let Some(uid) = uid { sim.world.stop(uid, sim.now); }
                    }
                    Op::StartPending => sim.start_pending(),
                }
                sim.settle();
                // Level-triggered: after executing a plan, planning again is empty.
                prop_assert!(intents(&sim.world, sim.now).intents.is_empty());
                for r in ROLES {
                    let spec = sim.world.role_spec(&sim.rk(r)).unwrap().clone();
                    let live = sim.live(r);
                    prop_assert!(live.len() as u32 <= spec.replicas.get(), "{} live > {} replicas", live.len(), spec.replicas);
                    let h = sim.history(r);
                    if h.frozen.is_some() {
                        prop_assert!(h.crashes.len() as u32 > spec.max_restarts.unwrap(), "frozen within budget");
                        let frozen_at = h.frozen.as_ref().unwrap().at;
                        prop_assert!(live.iter().all(|s| s.created_at <= frozen_at), "spawned while frozen");
                    }
                    if let Some(m) = &h.marker {
                        prop_assert_eq!(m.state, SessionState::Crashed);
                        prop_assert_eq!(&m.key.role, r);
                    }
                }
                // Crashed sessions exist only as markers: at most one per role.
                prop_assert!(sim.world.sessions.values().all(|s| s.state != SessionState::Crashed));
            }
        }
    }
}
