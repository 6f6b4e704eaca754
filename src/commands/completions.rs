//! `marvel completions SHELL`: the completion script for a shell. The
//! scripts for bash, zsh and fish are also kept in `completions/`.

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;
use crate::commands::Ctx;
use crate::error::{Result, exit};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  marvel completions bash > ~/.local/share/bash-completion/completions/marvel
  marvel completions zsh > ~/.zfunc/_marvel
  marvel completions fish > ~/.config/fish/completions/marvel.fish")]
pub struct Args {
    /// The shell to complete for
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: Shell,
}

pub fn run(args: Args, ctx: &Ctx) -> Result<i32> {
    ctx.out.print_raw(&script(args.shell))?;
    Ok(exit::OK)
}

/// The completion script for `shell`.
pub fn script(shell: Shell) -> Vec<u8> {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "marvel", &mut buf);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The checked-in scripts must match what the binary generates.
    /// `MARVEL_UPDATE_COMPLETIONS=1 cargo test` rewrites them.
    #[test]
    fn checked_in_completions_are_current() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("completions");
        let update = std::env::var_os("MARVEL_UPDATE_COMPLETIONS").is_some_and(|v| !v.is_empty());
        let mut stale = Vec::new();
        for (shell, file) in [
            (Shell::Bash, "marvel.bash"),
            (Shell::Zsh, "_marvel"),
            (Shell::Fish, "marvel.fish"),
        ] {
            let path = dir.join(file);
            let fresh = script(shell);
            if update {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &fresh).unwrap();
            } else if std::fs::read(&path).ok().as_deref() != Some(&fresh[..]) {
                stale.push(path.display().to_string());
            }
        }
        assert!(
            stale.is_empty(),
            "completion scripts are out of date: {}\nrefresh them with: MARVEL_UPDATE_COMPLETIONS=1 cargo test checked_in_completions",
            stale.join(", ")
        );
    }

    #[test]
    fn scripts_complete_the_verbs_but_not_the_pane_helpers() {
        let bash = String::from_utf8(script(Shell::Bash)).unwrap();
        for verb in [
            "run", "get", "describe", "inject", "reset", "events", "status",
        ] {
            assert!(bash.contains(verb), "{verb} missing");
        }
        assert!(!bash.contains("logpipe"));
    }
}
