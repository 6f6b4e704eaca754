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
pub mod world;
