//! marvel's integration tests: the real binary against a real tmux server
//! on a private socket, one module per topic.

mod support;

mod agents;
mod crashloop;
mod cwd;
mod dry_run;
mod errors;
mod escapes;
mod examples;
mod fuzz;
mod health;
mod lifecycle;
mod reliability;
mod remote;
mod resume;
mod server;
mod shift;
mod shim;
mod statedir;
mod stress;
mod top;
mod validation;
mod verbs;
mod watch;
mod workspace;
mod worktree;
