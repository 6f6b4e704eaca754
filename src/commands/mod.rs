//! One module per verb. Each holds its arguments and a `run` that turns them
//! into a request and the response into output; none of them decides what
//! the daemon owns.

pub(crate) mod advice;
pub(crate) mod attach;
pub(crate) mod capture;
pub mod completions;
pub(crate) mod context;
pub(crate) mod daemon;
pub(crate) mod delete;
pub(crate) mod describe;
pub(crate) mod diff;
pub(crate) mod down;
pub(crate) mod events;
pub(crate) mod fleet;
pub(crate) mod get;
pub(crate) mod heartbeat;
pub(crate) mod inject;
pub(crate) mod kill;
pub(crate) mod logs;
pub(crate) mod reset;
pub(crate) mod restart;
pub(crate) mod run;
pub(crate) mod scale;
pub(crate) mod shift;
pub(crate) mod start;
pub(crate) mod status;
pub(crate) mod stop;
pub(crate) mod top;

use std::path::PathBuf;

use crate::cli::{Cli, Command};
use crate::client::{self, Endpoint};
use crate::error::{Error, Result, exit};
use crate::output::Output;
use crate::paths::Target;
use crate::proto::{Request, Response};

/// What every user-facing verb gets: where the daemon is, and the sink.
pub struct Ctx {
    pub state_dir: Option<PathBuf>,
    /// `--context` / `MARVEL_CONTEXT`; `None`: the current context.
    pub context: Option<String>,
    pub out: Output,
}

impl Ctx {
    /// The daemon this invocation talks to: the context's, on this host or
    /// over ssh on another.
    pub fn target(&self) -> Result<Endpoint> {
        Endpoint::select(self.context.as_deref(), self.state_dir.as_deref())
    }

    /// This host's daemon, whatever the context (for what only makes sense
    /// here: running the daemon, a pane's heartbeat).
    pub fn local(&self) -> Result<Target> {
        Target::resolve(self.state_dir.as_deref())
    }

    /// Every context's daemon, `local` first (`--all-contexts`).
    pub fn all_targets(&self) -> Result<Vec<Endpoint>> {
        Endpoint::all(self.state_dir.as_deref())
    }

    /// Sends `req`, starting the daemon if needed, and prints the one-line
    /// acknowledgement most verbs answer with.
    pub fn acknowledge(&self, req: Request) -> Result<i32> {
        self.acknowledge_at(&self.target()?, req)
    }

    /// [`Ctx::acknowledge`], to a daemon already chosen.
    pub fn acknowledge_at(&self, target: &Endpoint, req: Request) -> Result<i32> {
        match client::call(target, req)? {
            Response::Done(message) => {
                self.out.print(&message)?;
                Ok(exit::OK)
            }
            other => Err(unexpected(&other)),
        }
    }
}

/// Runs a parsed user command.
pub fn dispatch(cli: Cli) -> Result<i32> {
    let ctx = &Ctx {
        state_dir: cli.state_dir,
        context: cli.context,
        out: Output::new(cli.no_color),
    };
    match cli.command {
        Command::Run(args) => run::run(args, ctx),
        Command::Get(args) => get::run(args, ctx),
        Command::Describe(args) => describe::run(args, ctx),
        Command::Inject(args) => inject::run(args, ctx),
        Command::Capture(args) => capture::run(args, ctx),
        Command::Logs(args) => logs::run(args, ctx),
        Command::Reset(args) => reset::run(args, ctx),
        Command::Scale(args) => scale::run(args, ctx),
        Command::Shift(args) => shift::run(args, ctx),
        Command::Heartbeat(args) => heartbeat::run(args, ctx),
        Command::Kill(args) => kill::run(args, ctx),
        Command::Delete(args) => delete::run(args, ctx),
        Command::Stop(args) => stop::run(args, ctx),
        Command::Start(args) => start::run(args, ctx),
        Command::Restart(args) => restart::run(args, ctx),
        Command::Down(args) => down::run(args, ctx),
        Command::Diff(args) => diff::run(args, ctx),
        Command::Attach(args) => attach::run(args, ctx),
        Command::Events(args) => events::run(args, ctx),
        Command::Top(args) => top::run(args, ctx),
        Command::Status(args) => status::run(args, ctx),
        Command::Daemon(args) => daemon::run(args, ctx),
        Command::Context(args) => context::run(args, ctx),
        Command::Completions(args) => completions::run(args, ctx),
    }
}

/// The daemon answered with a reply that does not fit the request: a
/// version mismatch or a bug, never something the user did.
pub fn unexpected(resp: &Response) -> Error {
    let name = match resp {
        Response::Pong { .. } => "Pong",
        Response::Applied { .. } => "Applied",
        Response::Planned { .. } => "Planned",
        Response::Logs(_) => "Logs",
        Response::Sessions(_) => "Sessions",
        Response::Rows(_) => "Rows",
        Response::Roles(_) => "Roles",
        Response::Teams(_) => "Teams",
        Response::Described { .. } => "Described",
        Response::Text(_) => "Text",
        Response::Event(_) => "Event",
        Response::Events(_) => "Events",
        Response::Lagged { .. } => "Lagged",
        Response::Status(_) => "Status",
        Response::AttachTarget { .. } => "AttachTarget",
        Response::Shift { .. } => "Shift",
        Response::Done(_) => "Done",
        Response::StillBusy { .. } => "StillBusy",
        Response::Linger(_) => "Linger",
        Response::Run(_) => "Run",
        Response::Error(_) => "Error",
    };
    Error::other(format!(
        "the daemon sent an unexpected {name} reply; is it another version of marvel? (marvel daemon stop ends it; the next command starts a current one)"
    ))
}
