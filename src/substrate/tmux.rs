//! The real tmux substrate.
