//! The daemon: one supervisor that owns all state and decides, and the
//! I/O around it.
//!
//! - [`main_loop`]: receives messages, steps the supervisor, carries out
//!   its outputs (the only part that performs I/O and reads the clock).
//! - [`supervisor`]: the state machine, split by input kind.
//! - [`worker`]: the thread that runs tmux jobs in order.
//! - [`git`]: the thread that runs git jobs (worktrees) in order.
//! - [`server`]: the socket: connections, peers, request lines.
//! - [`store`]: the state file and its journal, exit records and output
//!   logs on disk; [`journal`]: the journal's records.
//! - [`events`]: the event ring, its file and its followers.
//! - [`hooks`]: the runner of the teams' notification commands.
//! - [`views`]: the records `get` and `describe` return.
//! - [`memory`]: free memory given back to the system when idle.

pub(crate) mod events;
pub(crate) mod git;
mod guard;
pub(crate) mod hooks;
pub(crate) mod journal;
pub(crate) mod main_loop;
mod memory;
pub mod server;
pub(crate) mod store;
pub(crate) mod supervisor;
pub(crate) mod views;
pub(crate) mod worker;

use std::time::Duration;

pub use main_loop::run_foreground;

/// Tunables, read from the environment so tests can shrink them.
#[derive(Debug, Clone)]
pub struct Config {
    /// How often the safety-net sweep lists panes while tmux's hooks wake
    /// the daemon (`MARVEL_SWEEP_MS`).
    pub sweep: Duration,
    /// How often it lists while they do not (the watch is not running) or
    /// a death waits to be settled, at most (`MARVEL_SWEEP_UNWATCHED_MS`).
    pub sweep_unwatched: Duration,
    /// Deadline of every tmux call (`MARVEL_TMUX_TIMEOUT_MS`).
    pub tmux_timeout: Duration,
    /// Retry pacing while tmux is unavailable: exponential from
    /// `MARVEL_TMUX_RETRY_MS` to `MARVEL_TMUX_RETRY_MAX_MS`, each delay
    /// spread by ± `MARVEL_TMUX_RETRY_JITTER` (a fraction).
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub retry_jitter: f64,
}

fn env_ms(name: &str, default: u64) -> Duration {
    Duration::from_millis(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

impl Config {
    pub fn from_env() -> Config {
        Config {
            sweep: env_ms("MARVEL_SWEEP_MS", 60_000),
            sweep_unwatched: env_ms("MARVEL_SWEEP_UNWATCHED_MS", 5_000),
            tmux_timeout: env_ms("MARVEL_TMUX_TIMEOUT_MS", 3_000),
            retry_base: env_ms("MARVEL_TMUX_RETRY_MS", 500),
            retry_max: env_ms("MARVEL_TMUX_RETRY_MAX_MS", 30_000),
            retry_jitter: std::env::var("MARVEL_TMUX_RETRY_JITTER")
                .ok()
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|j| (0.0..=1.0).contains(j))
                .unwrap_or(0.2),
        }
    }
}
