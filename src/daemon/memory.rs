//! Memory the daemon no longer uses goes back to the system. glibc's
//! allocator keeps what is freed for later and by itself gives back only
//! the top of its heap; after a burst (the bring-up of a thousand sessions,
//! a listing of thousands) the free memory it keeps can be most of the
//! daemon's resident memory. So when the loop is about to wait, at most
//! once a second, it asks the allocator how much it holds free and, past a
//! threshold, has it give the free pages back (`malloc_trim`).

use std::time::{Duration, Instant};

/// At most one look at the allocator this often.
const EVERY: Duration = Duration::from_secs(1);

/// Free memory held past this is given back.
pub const FREE_PAST: usize = 1 << 20;

/// When the allocator was last asked.
#[derive(Default)]
pub struct Trim {
    asked: Option<Instant>,
}

impl Trim {
    /// The loop is about to wait: gives free memory back if it is time to
    /// look and enough is held. Returns the bytes held free when it did.
    pub fn idle(&mut self, now: Instant) -> Option<usize> {
        self.idle_with(now, free_bytes, trim)
    }

    fn idle_with(
        &mut self,
        now: Instant,
        free: impl FnOnce() -> usize,
        give_back: impl FnOnce(),
    ) -> Option<usize> {
        if self.asked.is_some_and(|t| now.duration_since(t) < EVERY) {
            return None;
        }
        self.asked = Some(now);
        let held = free();
        (held > FREE_PAST).then(|| {
            give_back();
            held
        })
    }
}

/// Bytes the allocator holds free, in all its arenas.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn free_bytes() -> usize {
    // SAFETY: mallinfo2 only reads the allocator's bookkeeping.
    unsafe { libc::mallinfo2().fordblks }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn free_bytes() -> usize {
    0
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only releases free pages of the allocator's.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_memory_is_given_back_past_the_threshold_at_most_once_a_second() {
        let mut t = Trim::default();
        let t0 = Instant::now();
        let mut given = 0;
        // Little held: nothing to do, but the allocator was asked.
        assert_eq!(t.idle_with(t0, || 4096, || given += 1), None);
        // Asked again within the second: not even looked at.
        let looked = std::cell::Cell::new(false);
        let r = t.idle_with(
            t0 + Duration::from_millis(500),
            || {
                looked.set(true);
                8 << 20
            },
            || given += 1,
        );
        assert_eq!((r, looked.get(), given), (None, false, 0));
        // A second later, with much held: given back.
        let r = t.idle_with(t0 + EVERY, || 8 << 20, || given += 1);
        assert_eq!((r, given), (Some(8 << 20), 1));
        // And not again at once.
        assert_eq!(
            t.idle_with(
                t0 + EVERY + Duration::from_millis(1),
                || 8 << 20,
                || given += 1
            ),
            None
        );
        assert_eq!(given, 1);
    }

    /// The process's anonymous resident memory, in KiB.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn rss_anon_kb() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn the_allocator_reports_what_it_holds_free_and_gives_it_back() {
        // On a thread of its own (an arena of its own in glibc): 64 MB of
        // small blocks, all freed but the last, which keeps the heap's top
        // in use so that the allocator cannot give the rest back by itself.
        let (held, before, after) = std::thread::spawn(|| {
            let blocks: Vec<Vec<u8>> = (0..320_000).map(|i| vec![i as u8; 200]).collect();
            let last = vec![1u8; 200];
            drop(blocks);
            let held = free_bytes();
            let before = rss_anon_kb();
            trim();
            let after = rss_anon_kb();
            drop(last);
            (held, before, after)
        })
        .join()
        .unwrap();
        assert!(
            held > 32 << 20,
            "{held} bytes held free after freeing 64 MB"
        );
        // Other tests allocate meanwhile: half of it is enough to tell.
        assert!(
            after + (32 << 10) < before,
            "resident {before} KiB before giving back, {after} KiB after"
        );
    }
}
