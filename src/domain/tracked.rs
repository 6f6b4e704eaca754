//! A map that remembers which of its keys changed since they were last
//! taken: what lets the daemon write only what changed (a journal record)
//! instead of the whole world. Reads go straight to the map; every way to
//! change it marks the keys it touches, so no change can go unrecorded.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, btree_map};
use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A `BTreeMap` and the keys changed (inserted, removed or borrowed
/// mutably) since [`Tracked::take_changed`] was last called. It reads,
/// compares and serializes as the plain map.
#[derive(Clone)]
pub struct Tracked<K, V> {
    map: BTreeMap<K, V>,
    changed: BTreeSet<K>,
    /// Changes ever made, whoever took their keys: what tells a planner
    /// that nothing changed since it last looked.
    edits: u64,
}

impl<K, V> Default for Tracked<K, V> {
    fn default() -> Self {
        Tracked {
            map: BTreeMap::new(),
            changed: BTreeSet::new(),
            edits: 0,
        }
    }
}

impl<K, V> Deref for Tracked<K, V> {
    type Target = BTreeMap<K, V>;

    fn deref(&self) -> &BTreeMap<K, V> {
        &self.map
    }
}

impl<K: Ord + Clone, V> Tracked<K, V> {
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.edits += 1;
        self.changed.insert(key.clone());
        self.map.insert(key, value)
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let (key, value) = self.map.remove_entry(key)?;
        self.edits += 1;
        self.changed.insert(key);
        Some(value)
    }

    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let (k, _) = self.map.get_key_value(key)?;
        self.edits += 1;
        self.changed.insert(k.clone());
        self.map.get_mut(key)
    }

    pub fn entry(&mut self, key: K) -> btree_map::Entry<'_, K, V> {
        self.edits += 1;
        self.changed.insert(key.clone());
        self.map.entry(key)
    }

    /// Keeps the entries `keep` says to keep. It sees each value read-only,
    /// so that the kept ones cannot change unrecorded.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        let (changed, edits) = (&mut self.changed, &mut self.edits);
        self.map.retain(|k, v| {
            let kept = keep(k, v);
            if !kept {
                *edits += 1;
                changed.insert(k.clone());
            }
            kept
        });
    }

    pub fn clear(&mut self) {
        self.edits += 1;
        self.changed.extend(self.map.keys().cloned());
        self.map.clear();
    }

    /// Every value, mutably: every key counts as changed.
    pub fn values_mut(&mut self) -> btree_map::ValuesMut<'_, K, V> {
        self.edits += 1;
        self.changed.extend(self.map.keys().cloned());
        self.map.values_mut()
    }

    pub fn extend(&mut self, entries: impl IntoIterator<Item = (K, V)>) {
        for (k, v) in entries {
            self.insert(k, v);
        }
    }

    /// The keys changed since the last call, forgotten from now on.
    pub fn take_changed(&mut self) -> BTreeSet<K> {
        std::mem::take(&mut self.changed)
    }

    /// How many changes were ever made (it only grows): equal counts mean
    /// an unchanged map.
    pub fn edits(&self) -> u64 {
        self.edits
    }

    /// The keys changed since [`Tracked::take_changed`] was last called,
    /// without forgetting them.
    pub fn changed(&self) -> &BTreeSet<K> {
        &self.changed
    }

    /// Whether any key changed since [`Tracked::take_changed`].
    pub fn has_changes(&self) -> bool {
        !self.changed.is_empty()
    }
}

impl<K: Ord, V> FromIterator<(K, V)> for Tracked<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Tracked {
            map: iter.into_iter().collect(),
            changed: BTreeSet::new(),
            edits: 0,
        }
    }
}

impl<K: Ord, V> From<BTreeMap<K, V>> for Tracked<K, V> {
    fn from(map: BTreeMap<K, V>) -> Self {
        Tracked {
            map,
            changed: BTreeSet::new(),
            edits: 0,
        }
    }
}

impl<K: PartialEq, V: PartialEq> PartialEq for Tracked<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map
    }
}

impl<K: Eq, V: Eq> Eq for Tracked<K, V> {}

impl<K: std::fmt::Debug, V: std::fmt::Debug> std::fmt::Debug for Tracked<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.map.fmt(f)
    }
}

impl<K: Serialize, V: Serialize> Serialize for Tracked<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.map.serialize(s)
    }
}

impl<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>> Deserialize<'de> for Tracked<K, V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BTreeMap::deserialize(d).map(Tracked::from)
    }
}

impl<'a, K, V> IntoIterator for &'a Tracked<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = btree_map::Iter<'a, K, V>;

    fn into_iter(self) -> Self::IntoIter {
        self.map.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_way_to_change_the_map_marks_the_keys_it_touched() {
        let mut m: Tracked<u32, String> = (0..5).map(|i| (i, i.to_string())).collect();
        assert!(
            !m.has_changes(),
            "a map built whole has nothing to write yet"
        );
        m.insert(9, "nine".into());
        m.remove(&1);
        m.remove(&7);
        if let Some(v) = m.get_mut(&2) {
            v.push('!');
        }
        m.get_mut(&8);
        m.entry(3).or_default();
        m.retain(|k, _| *k != 4);
        assert_eq!(m.take_changed(), BTreeSet::from([1, 2, 3, 4, 9]));
        assert!(m.take_changed().is_empty(), "taken once");
        // Reads mark nothing.
        let _ = (m.get(&0), m.len(), m.values().count(), m.contains_key(&2));
        assert!(!m.has_changes());
        m.values_mut().for_each(|v| v.clear());
        assert_eq!(m.take_changed(), BTreeSet::from([0, 2, 3, 9]));
        m.clear();
        assert_eq!(m.take_changed(), BTreeSet::from([0, 2, 3, 9]));
    }

    #[test]
    fn its_count_of_edits_moves_with_every_change_and_no_read() {
        let mut m: Tracked<u32, u32> = (0..3).map(|i| (i, i)).collect();
        let mut last = m.edits();
        let mut moved = |m: &Tracked<u32, u32>| {
            let now = m.edits();
            let moved = now != last;
            last = now;
            moved
        };
        let _ = (m.get(&0), m.iter().count());
        m.remove(&7);
        m.get_mut(&8);
        m.retain(|_, _| true);
        assert!(!moved(&m), "reads and misses change nothing");
        // Taking the keys (a write of the state) does not reset it.
        m.insert(5, 5);
        m.take_changed();
        assert!(moved(&m));
        for change in [
            |m: &mut Tracked<u32, u32>| {
                m.remove(&0);
            },
            |m: &mut Tracked<u32, u32>| {
                m.get_mut(&1);
            },
            |m: &mut Tracked<u32, u32>| {
                m.entry(9).or_default();
            },
            |m: &mut Tracked<u32, u32>| m.retain(|k, _| *k != 2),
            |m: &mut Tracked<u32, u32>| m.values_mut().for_each(|_| ()),
            |m: &mut Tracked<u32, u32>| m.clear(),
        ] {
            change(&mut m);
            assert!(moved(&m));
        }
    }

    #[test]
    fn it_compares_and_serializes_as_the_plain_map() {
        let mut a: Tracked<u32, u32> = Tracked::default();
        a.insert(1, 2);
        let b: Tracked<u32, u32> = BTreeMap::from([(1, 2)]).into();
        assert_eq!(a, b, "what changed is not part of the value");
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, r#"{"1":2}"#);
        let back: Tracked<u32, u32> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);
        assert!(!back.has_changes());
    }
}
