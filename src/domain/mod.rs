//! The pure core of marvel: what a team should look like, what a death
//! means for its role, and what to do next. Nothing here performs I/O,
//! reads the clock or draws random numbers; time and jitter are arguments.

pub(crate) mod activity;
pub(crate) mod event;
pub(crate) mod health;
pub(crate) mod key;
pub(crate) mod policy;
pub(crate) mod reconcile;
pub(crate) mod shift;
pub mod spec;
pub(crate) mod state;
pub(crate) mod tracked;
pub(crate) mod world;

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
