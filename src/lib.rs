//! marvel keeps teams of long-running terminal programs alive as tmux panes.
//!
//! Module map — decisions are pure, effects live at the edge:
//! - [`domain`]: the pure core (keys, specs, crash-loop policy, reconciler).
//!   No tmux, sockets, files, clock or randomness.
//! - [`manifest`]: RON text → validated [`domain::spec::TeamSpec`].
//! - [`substrate`]: the tmux edge (trait, real tmux, fake for tests).
//! - [`shim`]: the tiny supervisor that runs inside each pane.
//! - [`daemon`]: the one loop that owns all state, its socket and its store.
//! - [`client`], [`proto`], [`view`]: how commands talk to the daemon, on
//!   this host or, over ssh, on another ([`context`] says which).
//! - [`cli`], [`commands`], [`output`]: the command line.
//! - [`top`]: the live dashboard (`marvel top`).
//! - [`error`], [`paths`]: one error type; where files live.
//! - [`statedir`], [`lock`]: the state directory as a place only its user
//!   controls, and the one daemon that owns it.

pub mod cli;
pub(crate) mod client;
pub mod commands;
pub(crate) mod context;
pub mod daemon;
pub mod domain;
pub mod error;
pub(crate) mod lock;
pub mod manifest;
pub(crate) mod output;
pub mod paths;
pub mod proto;
pub mod shim;
pub mod statedir;
pub mod substrate;
pub(crate) mod top;
pub(crate) mod view;
