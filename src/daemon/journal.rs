//! The records of the state journal: what changed in the world since the
//! last record (the entries touched, written whole, and for a role's
//! history only the parts that changed), and how a record is applied to a
//! world read back. Pure: the files are the store's (`store.rs`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::domain::key::{RoleKey, SessionKey, TeamKey};
use crate::domain::shift::Shift;
use crate::domain::state::{
    Frozen, KeptPane, PastRun, RoleHistory, Session, SlotRuns, TeamRecord, Time, World,
};
use crate::domain::tracked::Tracked;

/// The changes of one step or more, applied in one go. `None` removes an
/// entry; a map left out changed nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Record {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub teams: BTreeMap<TeamKey, Option<TeamRecord>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub roles: BTreeMap<RoleKey, Option<RoleChange>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub sessions: BTreeMap<u64, Option<Session>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub strays: BTreeMap<String, Option<u32>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub shifts: BTreeMap<TeamKey, Option<Shift>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub kept: BTreeMap<SessionKey, Option<KeptPane>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_uid: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid_reserved: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_shift: Option<u64>,
}

/// A role's history: whole when it is new to the journal, else what
/// changed. A role with a thousand replicas keeps a line per slot (its runs
/// for `logs --previous`, its restarts); a death changes one of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RoleChange {
    Whole(RoleHistory),
    Patch(RolePatch),
}

/// What changed in a role's history. Its small fields are always written;
/// the others only when they changed, the per-slot maps and the crash list
/// by the entries that changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolePatch {
    pub generation: u64,
    pub step: u32,
    pub next_restart_at: Option<Time>,
    pub restarts: u32,
    pub last_crash_at: Option<Time>,
    pub frozen: Option<Frozen>,
    pub stopped: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marker: Option<Set<Option<Session>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_slots: Option<BTreeSet<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_slots: Option<BTreeSet<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crashes: Option<ListChange>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub slot_restarts: BTreeMap<u32, Option<u32>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub past: BTreeMap<u32, Option<Vec<PastRun>>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub slot_runs: BTreeMap<u32, Option<SlotRuns>>,
}

/// A value that was set (so that setting `None` reads back as set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Set<T> {
    pub to: T,
}

/// A list that lost `drop` entries at its front and gained `push` at its
/// end: how a role's crashes in the budget window move on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListChange {
    pub drop: usize,
    pub push: Vec<Time>,
}

/// Builds records: the world's own marks say which entries changed, and a
/// copy of each role's history as last written says what changed in it.
#[derive(Debug, Default)]
pub struct Journal {
    roles: BTreeMap<RoleKey, RoleHistory>,
    next_uid: u64,
    uid_reserved: u64,
    next_shift: u64,
}

impl Journal {
    /// Starts over from `world` as it is (written whole, or read back):
    /// nothing in it is news any more.
    pub fn reset(&mut self, world: &mut World) {
        take_all(world);
        self.roles = world
            .roles
            .iter()
            .map(|(k, h)| (k.clone(), h.clone()))
            .collect();
        self.next_uid = world.next_uid;
        self.uid_reserved = world.uid_reserved;
        self.next_shift = world.next_shift;
    }

    /// What changed in `world` since the last record (or reset), if
    /// anything did. Its cost follows the changes, not the world: only a
    /// changed role is compared with its copy.
    pub fn record(&mut self, world: &mut World) -> Option<Record> {
        let changed = take_all(world);
        let mut r = Record {
            teams: entries(&world.teams, changed.teams),
            sessions: entries(&world.sessions, changed.sessions),
            strays: entries(&world.strays, changed.strays),
            shifts: entries(&world.shifts, changed.shifts),
            kept: entries(&world.kept, changed.kept),
            ..Record::default()
        };
        for key in changed.roles {
            let change = world
                .roles
                .get(&key)
                .map(|h| match self.roles.get_mut(&key) {
                    Some(old) => {
                        let patch = patch(old, h);
                        apply_patch(old, patch.clone());
                        RoleChange::Patch(patch)
                    }
                    None => {
                        self.roles.insert(key.clone(), h.clone());
                        RoleChange::Whole(h.clone())
                    }
                });
            if change.is_none() {
                self.roles.remove(&key);
            }
            r.roles.insert(key, change);
        }
        let scalar = |now: u64, then: &mut u64| {
            (now != *then).then(|| {
                *then = now;
                now
            })
        };
        r.next_uid = scalar(world.next_uid, &mut self.next_uid);
        r.uid_reserved = scalar(world.uid_reserved, &mut self.uid_reserved);
        r.next_shift = scalar(world.next_shift, &mut self.next_shift);
        (r != Record::default()).then_some(r)
    }
}

/// The keys each map of the world marked since they were last taken.
struct Changed {
    teams: BTreeSet<TeamKey>,
    roles: BTreeSet<RoleKey>,
    sessions: BTreeSet<u64>,
    strays: BTreeSet<String>,
    shifts: BTreeSet<TeamKey>,
    kept: BTreeSet<SessionKey>,
}

fn take_all(world: &mut World) -> Changed {
    Changed {
        teams: world.teams.take_changed(),
        roles: world.roles.take_changed(),
        sessions: world.sessions.take_changed(),
        strays: world.strays.take_changed(),
        shifts: world.shifts.take_changed(),
        kept: world.kept.take_changed(),
    }
}

fn entries<K: Ord + Clone, V: Clone>(
    map: &Tracked<K, V>,
    keys: BTreeSet<K>,
) -> BTreeMap<K, Option<V>> {
    keys.into_iter()
        .map(|k| {
            let v = map.get(&k).cloned();
            (k, v)
        })
        .collect()
}

/// What changed from `old` to `new`.
fn patch(old: &RoleHistory, new: &RoleHistory) -> RolePatch {
    // Named one by one, so that a field added to the history cannot be
    // left out of the journal unnoticed.
    let RoleHistory {
        generation,
        crashes,
        step,
        next_restart_at,
        restarts,
        last_crash_at,
        frozen,
        marker,
        slot_restarts,
        done_slots,
        failed_slots,
        stopped,
        past,
        slot_runs,
    } = new;
    RolePatch {
        generation: *generation,
        step: *step,
        next_restart_at: *next_restart_at,
        restarts: *restarts,
        last_crash_at: *last_crash_at,
        frozen: frozen.clone(),
        stopped: *stopped,
        marker: (old.marker != *marker).then(|| Set { to: marker.clone() }),
        done_slots: (old.done_slots != *done_slots).then(|| done_slots.clone()),
        failed_slots: (old.failed_slots != *failed_slots).then(|| failed_slots.clone()),
        crashes: list_change(&old.crashes, crashes),
        slot_restarts: map_change(&old.slot_restarts, slot_restarts),
        past: map_change(&old.past, past),
        slot_runs: map_change(&old.slot_runs, slot_runs),
    }
}

/// How `old` became `new`, as entries dropped at the front and pushed at
/// the end (the whole of `new` pushed when it did not go that way).
fn list_change(old: &[Time], new: &[Time]) -> Option<ListChange> {
    if old == new {
        return None;
    }
    let drop = (0..=old.len())
        .filter(|d| old.get(*d).is_none_or(|first| new.first() == Some(first)))
        .find(|d| new.starts_with(&old[*d..]))
        .unwrap_or(old.len());
    Some(ListChange {
        drop,
        push: new[old.len() - drop..].to_vec(),
    })
}

/// The entries of `new` that differ from `old`'s, and those it lost.
fn map_change<K: Ord + Clone, V: PartialEq + Clone>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
) -> BTreeMap<K, Option<V>> {
    let mut out = BTreeMap::new();
    for (k, v) in new {
        if old.get(k) != Some(v) {
            out.insert(k.clone(), Some(v.clone()));
        }
    }
    for k in old.keys() {
        if !new.contains_key(k) {
            out.insert(k.clone(), None);
        }
    }
    out
}

fn apply_patch(h: &mut RoleHistory, p: RolePatch) {
    h.generation = p.generation;
    h.step = p.step;
    h.next_restart_at = p.next_restart_at;
    h.restarts = p.restarts;
    h.last_crash_at = p.last_crash_at;
    h.frozen = p.frozen;
    h.stopped = p.stopped;
    if let Some(m) = p.marker {
        h.marker = m.to;
    }
    if let Some(d) = p.done_slots {
        h.done_slots = d;
    }
    if let Some(f) = p.failed_slots {
        h.failed_slots = f;
    }
    if let Some(c) = p.crashes {
        let drop = c.drop.min(h.crashes.len());
        h.crashes.drain(..drop);
        h.crashes.extend(c.push);
    }
    apply_map(&mut h.slot_restarts, p.slot_restarts);
    apply_map(&mut h.slot_runs, p.slot_runs);
    apply_map(&mut h.past, p.past);
}

fn apply_map<K: Ord, V>(map: &mut BTreeMap<K, V>, changes: BTreeMap<K, Option<V>>) {
    for (k, v) in changes {
        match v {
            Some(v) => map.insert(k, v),
            None => map.remove(&k),
        };
    }
}

fn apply_tracked<K: Ord + Clone, V>(map: &mut Tracked<K, V>, changes: BTreeMap<K, Option<V>>) {
    for (k, v) in changes {
        match v {
            Some(v) => map.insert(k, v),
            None => map.remove(&k),
        };
    }
}

/// Applies one record to a world read back.
pub fn apply(world: &mut World, r: Record) {
    apply_tracked(&mut world.teams, r.teams);
    apply_tracked(&mut world.sessions, r.sessions);
    apply_tracked(&mut world.strays, r.strays);
    apply_tracked(&mut world.shifts, r.shifts);
    apply_tracked(&mut world.kept, r.kept);
    for (key, change) in r.roles {
        match change {
            None => {
                world.roles.remove(&key);
            }
            Some(RoleChange::Whole(h)) => {
                world.roles.insert(key, h);
            }
            Some(RoleChange::Patch(p)) => apply_patch(world.roles.entry(key).or_default(), p),
        }
    }
    if let Some(v) = r.next_uid {
        world.next_uid = v;
    }
    if let Some(v) = r.uid_reserved {
        world.uid_reserved = v;
    }
    if let Some(v) = r.next_shift {
        world.next_shift = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::state::{Exit, SessionState};
    use crate::domain::world::sim::*;
    use proptest::prelude::*;

    /// Applies what `journal` records of `world` to `disk` and checks that
    /// the two are then equal.
    fn write(journal: &mut Journal, world: &mut World, disk: &mut World) -> usize {
        let Some(r) = journal.record(world) else {
            assert_eq!(disk, world, "nothing recorded, yet the world changed");
            return 0;
        };
        let bytes = serde_json::to_vec(&r).unwrap().len();
        let back: Record = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(back, r, "a record reads back as written");
        apply(disk, back);
        assert_eq!(disk, world, "replay differs from the world");
        bytes
    }

    #[test]
    fn a_death_at_a_thousand_replicas_writes_what_it_changed_not_the_role() {
        let mut sim = Sim::new();
        let mut w = role("w", 1000);
        w.max_restarts = None;
        sim.apply(team(vec![w]));
        sim.settle();
        sim.start_pending();
        let mut journal = Journal::default();
        let mut disk = sim.world.clone();
        journal.reset(&mut sim.world);
        // Every slot crashes once, so the role keeps a run per slot.
        for slot in 0..1000 {
            sim.die("w", slot, 1);
            sim.at((slot as i64 + 1) * 1000);
            sim.settle();
            sim.start_pending();
        }
        write(&mut journal, &mut sim.world, &mut disk);
        let whole = serde_json::to_vec(&sim.world).unwrap().len();
        sim.at(1_002_000);
        sim.die("w", 500, 1);
        let death = write(&mut journal, &mut sim.world, &mut disk);
        assert!(
            death < 3000,
            "a death wrote {death} bytes of a {whole}-byte world"
        );
        sim.at(1_004_000);
        sim.settle();
        sim.start_pending();
        let respawn = write(&mut journal, &mut sim.world, &mut disk);
        assert!(respawn < 3000, "a respawn wrote {respawn} bytes");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Advance(i64),
        Die { slot: u32, code: i32 },
        Scale(u32),
        Reset,
        Start,
        Kill(u32),
        Output(u32),
        Write,
        Forget,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (1i64..5000).prop_map(Op::Advance),
            4 => (0u32..6, 0i32..3).prop_map(|(slot, code)| Op::Die { slot, code }),
            1 => (0u32..7).prop_map(Op::Scale),
            1 => Just(Op::Reset),
            3 => Just(Op::Start),
            1 => (0u32..6).prop_map(Op::Kill),
            1 => (0u32..6).prop_map(Op::Output),
            4 => Just(Op::Write),
            1 => Just(Op::Forget),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// Whatever happens to the world, the records written replay to the
        /// world as it was at each write.
        #[test]
        fn replaying_the_records_gives_the_world_back(ops in prop::collection::vec(op(), 1..80)) {
            let mut sim = Sim::new();
            let mut w = role("w", 3);
            w.max_restarts = Some(4);
            sim.apply(team(vec![w, role("v", 2)]));
            sim.settle();
            let mut journal = Journal::default();
            let mut disk = World::default();
            write(&mut journal, &mut sim.world, &mut disk);
            let mut ms = 0;
            for op in ops {
                match op {
                    Op::Advance(d) => { ms += d; sim.at(ms); }
                    Op::Die { slot, code } => {
                        let uid = sim.live("w").iter().find(|s| s.key.slot == slot).map(|s| s.uid);
                        if let Some(uid) = uid {
                            sim.world.on_exit(uid, Exit::code(code, sim.now), sim.now, 0.3);
                        }
                    }
                    Op::Scale(n) => {
                        let k = sim.rk("w");
                        sim.world.scale(&k, crate::domain::spec::Replicas::new(n).unwrap(), sim.now);
                    }
                    Op::Reset => { let k = sim.rk("w"); sim.world.reset_role(&k, sim.now); }
                    Op::Start => sim.start_pending(),
                    Op::Kill(slot) => {
                        let uid = sim.live("v").iter().find(|s| s.key.slot == slot).map(|s| s.uid);
                        if let Some(uid) = uid { sim.world.stop(uid, sim.now); }
                    }
                    Op::Output(slot) => {
                        let marker = sim.history("w").marker.as_ref().map(|m| m.uid);
                        let uid = marker.or_else(|| sim.live("w").iter().find(|s| s.key.slot == slot).map(|s| s.uid));
                        if let Some(uid) = uid { sim.world.set_last_output(uid, vec![format!("line {slot}")]); }
                    }
                    Op::Write => { write(&mut journal, &mut sim.world, &mut disk); }
                    Op::Forget => {
                        // A compaction: the whole world written, the journal
                        // started over.
                        write(&mut journal, &mut sim.world, &mut disk);
                        disk = sim.world.clone();
                        journal.reset(&mut sim.world);
                    }
                }
                sim.settle();
                prop_assert!(sim.world.sessions.values().all(|s| s.state != SessionState::Crashed));
            }
            write(&mut journal, &mut sim.world, &mut disk);
        }
    }

    #[test]
    fn a_crash_list_that_moved_on_is_written_as_what_left_and_came() {
        let t = |s: i64| t(s * 1000);
        assert_eq!(list_change(&[t(1), t(2)], &[t(1), t(2)]), None);
        assert_eq!(
            list_change(&[t(1), t(2), t(3)], &[t(3), t(4)]),
            Some(ListChange {
                drop: 2,
                push: vec![t(4)]
            })
        );
        assert_eq!(
            list_change(&[t(1)], &[]),
            Some(ListChange {
                drop: 1,
                push: vec![]
            })
        );
        // Not a move: the whole list again.
        assert_eq!(
            list_change(&[t(1), t(2)], &[t(5), t(1)]),
            Some(ListChange {
                drop: 2,
                push: vec![t(5), t(1)]
            })
        );
        for (old, new) in [
            (vec![t(1), t(1), t(2)], vec![t(1), t(2), t(3)]),
            (vec![], vec![t(1)]),
            (vec![t(2), t(2)], vec![t(2), t(2), t(2)]),
        ] {
            let c = list_change(&old, &new).unwrap();
            let mut h = RoleHistory {
                crashes: old.clone(),
                ..RoleHistory::default()
            };
            let mut p = patch(
                &h,
                &RoleHistory {
                    crashes: new.clone(),
                    ..RoleHistory::default()
                },
            );
            p.crashes = Some(c);
            apply_patch(&mut h, p);
            assert_eq!(h.crashes, new, "{old:?} -> {new:?}");
        }
    }
}
