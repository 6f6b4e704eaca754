//! Persistence of the daemon's world: one JSON file written atomically
//! (write, fsync, rename) after every change that matters. A file that
//! cannot be read is moved aside, never silently overwritten.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::domain::state::World;
use crate::paths::write_atomic;

/// Bumped when the file's layout changes incompatibly.
const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct File {
    format: u32,
    /// The machine's boot id when the file was written: a different one
    /// now means every process the file mentions died with the machine.
    #[serde(default)]
    boot: Option<String>,
    world: World,
}

pub struct Store {
    path: PathBuf,
    boot: Option<String>,
}

/// What loading found.
pub enum Loaded {
    Fresh,
    Restored {
        world: World,
        /// The machine has restarted since the file was written.
        rebooted: bool,
    },
    /// The file was unreadable and was moved to `moved_to`.
    MovedAside {
        moved_to: PathBuf,
        error: String,
    },
}

impl Store {
    pub fn new(path: PathBuf) -> Store {
        Store {
            path,
            boot: boot_id(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn load(&self) -> Loaded {
        // Never through a link, and only a file of ours (see `statedir`).
        let bytes = match crate::statedir::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Loaded::Fresh,
            Err(e) => return self.move_aside(e.to_string()),
        };
        match serde_json::from_slice::<File>(&bytes) {
            Ok(f) if f.format == FORMAT => Loaded::Restored {
                rebooted: f.boot.is_some() && self.boot.is_some() && f.boot != self.boot,
                world: f.world,
            },
            Ok(f) => self.move_aside(format!(
                "unknown state format {} (this marvel reads {FORMAT})",
                f.format
            )),
            Err(e) => self.move_aside(e.to_string()),
        }
    }

    fn move_aside(&self, error: String) -> Loaded {
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S");
        let moved_to = self.path.with_extension(format!("json.corrupt-{stamp}"));
        match std::fs::rename(&self.path, &moved_to) {
            Ok(()) => Loaded::MovedAside { moved_to, error },
            Err(e) => Loaded::MovedAside {
                moved_to: self.path.clone(),
                error: format!("{error}; moving it aside failed too: {e}"),
            },
        }
    }

    pub fn save(&self, world: &World) -> crate::error::Result<()> {
        let file = File {
            format: FORMAT,
            boot: self.boot.clone(),
            world: world.clone(),
        };
        let bytes = serde_json::to_vec(&file)
            .map_err(|e| crate::error::Error::other(format!("cannot encode state: {e}")))?;
        write_atomic(&self.path, &bytes)
    }
}

/// Linux's id of the current boot; `None` where there is none.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::world::sim::*;

    #[test]
    fn a_saved_world_loads_back_equal() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("state.json"));
        assert!(matches!(store.load(), Loaded::Fresh));
        let mut sim = Sim::new();
        sim.apply(team(vec![role("w", 2)]));
        sim.settle();
        sim.die("w", 1, 3);
        store.save(&sim.world).unwrap();
        match store.load() {
            Loaded::Restored { world, rebooted } => {
                assert_eq!(world, sim.world);
                assert!(!rebooted);
            }
            _ => panic!("expected the saved world"),
        }
    }

    #[test]
    fn a_file_from_another_boot_says_the_machine_restarted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut store = Store::new(path.clone());
        store.boot = Some("before".into());
        store.save(&World::default()).unwrap();
        store.boot = Some("after".into());
        assert!(matches!(
            store.load(),
            Loaded::Restored { rebooted: true, .. }
        ));
        // Without a boot id on either side nothing can be said.
        store.boot = None;
        assert!(matches!(
            store.load(),
            Loaded::Restored {
                rebooted: false,
                ..
            }
        ));
    }

    #[test]
    fn a_corrupt_file_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, b"{not json").unwrap();
        match Store::new(path.clone()).load() {
            Loaded::MovedAside { moved_to, error } => {
                assert!(
                    moved_to.to_string_lossy().contains("state.json.corrupt-"),
                    "{moved_to:?}"
                );
                assert!(std::fs::read(&moved_to).unwrap() == b"{not json");
                assert!(!error.is_empty());
                assert!(!path.exists());
            }
            _ => panic!("expected the file to be moved aside"),
        }
    }
}
