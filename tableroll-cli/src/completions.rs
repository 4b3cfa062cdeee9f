//! `tableroll completions SHELL`: the shell completion script, generated from the command's
//! own definitions (the subcommands, flags and values of `--help`), for the shells
//! `clap_complete` knows. The internal subcommands are left out.

use std::process::ExitCode;

use clap_complete::Shell;

/// Arguments of `tableroll completions`.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct CompletionsArgs {
    /// The shell to complete `tableroll` in.
    #[arg(value_name = "SHELL")]
    pub shell: Shell,
}

const AFTER_HELP: &str = "\
Prints the script to stdout. Installed where the shell looks for completions, e.g.:
  tableroll completions bash > /etc/bash_completion.d/tableroll
  tableroll completions zsh > /usr/local/share/zsh/site-functions/_tableroll
  tableroll completions fish > /etc/fish/completions/tableroll.fish

Exit status: 0 (also when the reader closes stdout early); 1 if stdout cannot be written; 2 \
on bad usage (an unknown shell).";

pub fn run(args: &CompletionsArgs) -> ExitCode {
    crate::stdout::print("tableroll completions", &script(args.shell))
}

/// The completion script for `shell`.
fn script(shell: Shell) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut crate::documented_command(), "tableroll", &mut script);
    script
}
