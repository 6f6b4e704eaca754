//! `marvel top`: the live dashboard of every team (see [`crate::top`]).

use crate::commands::Ctx;
use crate::error::Result;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Keys:
  ↑ ↓ PgUp PgDn Home End   move          /      filter by key (esc clears)
  enter   attach to the session; detach (C-b d) to come back
  i       type a line into the session
  r       reset the role (asks first unless it is frozen)
  k       kill the session; it is replaced at once (asks first)
  s       shift the team, or the selected role (asks first)
  ?       help                              q      quit

States: ● running  ▲ unhealthy  ◌ starting  ◷ backoff  ✗ crashed
        ❄ frozen   ■ stopped
Narrow terminals drop columns in this order: PANE, EXIT, AGE, CTX,
CRASHES, RESTARTS, HEALTH. Needs a terminal: without one it exits with
code 5. NO_COLOR and --no-color turn colours off. With --context, it shows
that context's daemon, named in the header; enter attaches through ssh.")]
pub struct Args {}

pub fn run(_args: Args, ctx: &Ctx) -> Result<i32> {
    crate::top::run(ctx.target()?, ctx.out.colour())
}
