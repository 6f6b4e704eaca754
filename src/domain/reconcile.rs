//! The reconciler: a pure plan from the world (desired teams, sessions,
//! role histories) and the current instant to the actions that bring
//! reality closer to the declaration, plus when to plan again. It is never
//! told why it runs, so it must be level-triggered: planning again after the
//! actions were carried out yields nothing.

use std::collections::BTreeSet;

use crate::domain::key::RoleKey;
use crate::domain::policy;
use crate::domain::spec::{RoleSpec, TeamSpec};
use crate::domain::state::{SessionState, Time, World};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The slot is beyond the role's replicas.
    ScaleDown,
    /// The role or its team is no longer declared.
    RoleRemoved,
    /// The session runs an older template of its role (rolling replacement).
    Replaced,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::ScaleDown => "scaled down",
            StopReason::RoleRemoved => "role removed",
            StopReason::Replaced => "replaced by the new spec",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start a new session in this replica slot.
    Spawn { role: RoleKey, slot: u32 },
    /// Stop a live session (never counted as a crash).
    Stop { uid: u64, reason: StopReason },
    /// The marker's replacement runs: drop the marker.
    ClearMarker { role: RoleKey },
    /// A replica ran long enough: forget the backoff curve.
    Forgive { role: RoleKey },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// Plan again at this instant even if nothing else happens.
    pub wake_at: Option<Time>,
}

impl Plan {
    fn wake(&mut self, t: Time) {
        self.wake_at = Some(self.wake_at.map_or(t, |w| w.min(t)));
    }
}

/// Plans the next actions for every declared role and every orphaned session.
pub fn plan(world: &World, now: Time) -> Plan {
    let mut plan = Plan::default();
    let mut declared: BTreeSet<RoleKey> = BTreeSet::new();
    for team in world.teams.values() {
        for role in &team.spec.roles {
            let key = team.spec.role_key(role);
            plan_role(world, &key, role, now, &mut plan);
            declared.insert(key);
        }
    }
    // Sessions whose role or team is gone.
    for s in world.sessions.values() {
        if s.state.is_live() && !declared.contains(&s.key.role()) {
            plan.actions.push(Action::Stop {
                uid: s.uid,
                reason: StopReason::RoleRemoved,
            });
        }
    }
    plan
}

fn plan_role(world: &World, key: &RoleKey, role: &RoleSpec, now: Time, plan: &mut Plan) {
    let default = Default::default();
    let h = world.roles.get(key).unwrap_or(&default);
    let live: Vec<_> = world
        .role_sessions(key)
        .filter(|s| s.state.is_live())
        .collect();

    // Scale down, and any second live session in one slot (never expected).
    let mut seen = BTreeSet::new();
    let mut by_newest = live.clone();
    by_newest.sort_by_key(|s| std::cmp::Reverse(s.uid));
    for s in &by_newest {
        if s.key.slot >= role.replicas || !seen.insert(s.key.slot) {
            plan.actions.push(Action::Stop {
                uid: s.uid,
                reason: StopReason::ScaleDown,
            });
        }
    }
    let kept: Vec<_> = live.iter().filter(|s| s.key.slot < role.replicas).collect();

    // Forgiveness, once the earliest running replica has run long enough.
    let running_since = kept
        .iter()
        .filter(|s| s.state == SessionState::Running)
        .filter_map(|s| s.started_at)
        .min();
    if let Some(at) = policy::forgive_at(h, role, running_since) {
        if now >= at {
            plan.actions.push(Action::Forgive { role: key.clone() });
        } else {
            plan.wake(at);
        }
    }

    // The marker goes once its slot runs again or is no longer wanted.
    if let Some(m) = &h.marker {
        let replaced = kept
            .iter()
            .any(|s| s.key.slot == m.key.slot && s.uid > m.uid && s.state == SessionState::Running);
        let unwanted = m.key.slot >= role.replicas && !h.done_slots.contains(&m.key.slot);
        if replaced || unwanted {
            plan.actions.push(Action::ClearMarker { role: key.clone() });
        }
    }

    let occupied: BTreeSet<u32> = kept.iter().map(|s| s.key.slot).collect();
    let missing: Vec<u32> = (0..role.replicas)
        .filter(|slot| !occupied.contains(slot) && !h.done_slots.contains(slot))
        .collect();

    // Rolling replacement: one old-template session at a time, only while
    // every slot is filled and every new-template session already runs.
    let old: Vec<_> = kept
        .iter()
        .filter(|s| s.generation != h.generation)
        .collect();
    let new_pending = kept
        .iter()
        .any(|s| s.generation == h.generation && s.state == SessionState::Pending);
    if let Some(victim) = old.iter().max_by_key(|s| s.key.slot)
        && missing.is_empty()
        && !new_pending
        && policy::may_spawn(h, now)
    {
        plan.actions.push(Action::Stop {
            uid: victim.uid,
            reason: StopReason::Replaced,
        });
    }

    if missing.is_empty() || h.frozen.is_some() {
        return;
    }
    if policy::may_spawn(h, now) {
        for slot in missing {
            plan.actions.push(Action::Spawn {
                role: key.clone(),
                slot,
            });
        }
    } else if let Some(at) = h.next_restart_at {
        plan.wake(at);
    }
}

/// What re-applying a team does to one role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleChange {
    Created,
    Unchanged,
    Scaled {
        from: u32,
        to: u32,
    },
    /// The template changed: replicas are replaced, history cleared.
    Replaced,
    Removed,
}

/// Compares a stored team with a newly applied one, role by role, in the new
/// file's order followed by removed roles.
pub fn diff(old: Option<&TeamSpec>, new: &TeamSpec) -> Vec<(RoleKey, RoleChange)> {
    let mut out = Vec::new();
    for role in &new.roles {
        let key = new.role_key(role);
        let change = match old.and_then(|o| o.role(role.name.as_str())) {
            None => RoleChange::Created,
            Some(prev) if !prev.same_template(role) => RoleChange::Replaced,
            Some(prev) if prev.replicas != role.replicas => RoleChange::Scaled {
                from: prev.replicas,
                to: role.replicas,
            },
            Some(_) => RoleChange::Unchanged,
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
                    Op::Scale { role, to } => { let k = sim.rk(ROLES[role]); sim.world.scale(&k, to, sim.now); }
                    Op::Reset { role } => {
                        let k = sim.rk(ROLES[role]);
                        sim.world.reset_role(&k, sim.now);
                        prop_assert!(sim.history(ROLES[role]).frozen.is_none(), "reset did not un-freeze");
                        prop_assert!(policy::may_spawn(sim.history(ROLES[role]), sim.now));
                    }
                    Op::Kill { role, slot } => {
                        let uid = sim.live(ROLES[role]).iter().find(|s| s.key.slot == slot).map(|s| s.uid);
                        if let Some(uid) = uid { sim.world.stop(uid); }
                    }
                    Op::StartPending => {
                        let pending: Vec<u64> = sim.world.sessions.values().filter(|s| s.state == SessionState::Pending).map(|s| s.uid).collect();
                        for uid in pending { sim.world.started(uid, 1, sim.now); }
                    }
                }
                sim.settle();
                // Level-triggered: after executing a plan, planning again is empty.
                prop_assert!(plan(&sim.world, sim.now).actions.is_empty());
                for r in ROLES {
                    let spec = sim.world.role_spec(&sim.rk(r)).unwrap().clone();
                    let live = sim.live(r);
                    prop_assert!(live.len() as u32 <= spec.replicas, "{} live > {} replicas", live.len(), spec.replicas);
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
