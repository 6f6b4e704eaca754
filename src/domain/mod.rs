//! The pure core of marvel: what a team should look like, what a death
//! means for its role, and what to do next. Nothing here performs I/O,
//! reads the clock or draws random numbers; time and jitter are arguments.

pub mod event;
pub mod health;
pub mod key;
pub mod policy;
pub mod reconcile;
pub mod shift;
pub mod spec;
pub mod state;
pub mod tracked;
pub mod world;

/// A source of jitter samples, uniform in [-1, 1]: the only randomness the
/// core uses, always passed in by the caller.
pub trait Rng {
    fn jitter(&mut self) -> f64;
}

/// A fixed sample: deterministic tests and replays.
impl Rng for f64 {
    fn jitter(&mut self) -> f64 {
        *self
    }
}
