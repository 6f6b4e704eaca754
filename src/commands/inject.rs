//! `marvel inject KEY TEXT...`: type into a session's pane, literally or as
//! tmux key names.

use crate::commands::Ctx;
use crate::error::Result;
use crate::proto::Request;
use clap_complete::engine::ArgValueCandidates;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  marvel inject worker-0 'git status' --enter   type a line and press Enter
  marvel inject worker-0 --keys C-c             interrupt the program
  marvel inject worker-0 --keys Up Enter        repeat the last shell command
  marvel inject worker-0 -- --help              text that starts with '-'

The words of TEXT are joined with single spaces. With --keys each word is a
tmux key name (C-c, Enter, Escape, Up, F1, ...).")]
pub struct Args {
    /// The session, or any unambiguous suffix of its key
    #[arg(value_name = "KEY", add = ArgValueCandidates::new(crate::commands::completions::sessions_keys))]
    pub key: String,

    /// What to type (or, with --keys, which keys to press)
    #[arg(value_name = "TEXT", required_unless_present = "enter")]
    pub text: Vec<String>,

    /// Press Enter after the text
    #[arg(short, long)]
    pub enter: bool,

    /// Treat the words as tmux key names, not literal text
    #[arg(short, long)]
    pub keys: bool,
}

pub fn run(args: Args, ctx: &Ctx) -> Result<i32> {
    ctx.acknowledge(Request::Inject {
        key: args.key,
        text: args.text.join(" "),
        enter: args.enter,
        keys: args.keys,
    })
}
