//! The `tableroll` command.
//!
//! - `tableroll drill` shows what the library does, in one command with nothing to configure:
//!   a demo server upgraded again and again under load, every handoff timed, every request
//!   accounted for.
//! - `tableroll run` gives the same upgrades to any program written for systemd's socket
//!   activation, in any language.
//! - `tableroll status` shows what a coordination directory holds, without disturbing it.
//! - `tableroll wait` waits for the next upgrade of a group and says how it ended.
//! - `tableroll man` and `tableroll completions` print the manual pages and the shell
//!   completions, generated from the definitions below.
//!
//! No `unsafe` but in two places, both taking ownership of descriptors passed through `exec`:
//! the exec step taking the listeners it inherited (`run::exec`), and `tableroll run` taking the
//! sockets systemd passed to it by socket activation (`run::activation`).

#![deny(unsafe_code)]

mod completions;
mod drill;
mod duration;
mod manual;
mod run;
mod signal_thread;
mod status;
mod stdout;
mod sys;
mod wait;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Zero-downtime upgrades: a new version of a server takes the listening sockets over from the
/// running one, and not one connection is refused.
//
// Generic over its subcommands so that the command as documented (the man pages, the shell
// completions) is the same command without the internal ones: `Cli<Public>`. clap generates
// completions for hidden subcommands too, and has no way to remove one from a command. (Plain
// comments: a doc comment here would be part of `--help`.)
#[derive(Debug, Parser)]
#[command(name = "tableroll", version, propagate_version = true, after_help = AFTER_HELP)]
struct Cli<C: Subcommand> {
    #[command(subcommand)]
    command: C,
}

const AFTER_HELP: &str = "\
Start with `tableroll drill`: a server upgraded ten times under load in about 12 seconds, \
every handoff timed, every request accounted for.

To upgrade your own program without downtime: if it accepts sockets from systemd (LISTEN_FDS), \
run each version under `tableroll run --dir DIR --listen NAME=tcp:HOST:PORT -- PROGRAM`; start \
the next version the same way while the old one runs. `tableroll status --dir DIR` shows the \
group. Rust programs can use the tableroll library directly.";

/// Every subcommand: the ones an operator runs, and the ones `tableroll` starts itself.
#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Public(Public),
    #[command(flatten)]
    Internal(Internal),
}

/// The subcommands an operator runs: the ones documented.
#[derive(Debug, Subcommand)]
enum Public {
    /// Upgrade a demo server again and again under HTTP load, and time every handoff.
    ///
    /// Starts generation 0 of a small HTTP server (this program, as a separate process) with a
    /// coordination directory in a new temporary directory, drives closed-loop load at it from
    /// client threads, and starts generation k+1 every interval. Each generation is an
    /// independent process that takes the listener over from the one before through the
    /// tableroll library, says it is ready, and the one before drains and exits.
    ///
    /// Prints each upgrade's timings (the newcomer's time inside construction, until every
    /// descriptor was received; its time inside ready(); from its spawn until the old
    /// generation was notified), the requests (sent, succeeded, failed by kind) and
    /// throughput. Exits 0 only if every upgrade completed and no request failed (with
    /// --crash, none outside the crashed generations). Every process and file it creates is
    /// removed at the end, also on Ctrl-C.
    Drill(drill::args::DrillArgs),

    /// Run a program written for systemd socket activation with zero-downtime upgrades.
    Run(run::args::RunArgs),

    /// Show what a coordination directory holds, without disturbing the group.
    Status(status::StatusArgs),

    /// Wait for the next upgrade of a group, and tell whether the new process took over.
    Wait(wait::WaitArgs),

    /// Print the manual page of tableroll or of one of its subcommands, in roff.
    Man(manual::ManArgs),

    /// Print the shell completion script for tableroll.
    Completions(completions::CompletionsArgs),
}

/// The subcommands `tableroll` starts itself: hidden from `--help`, the man pages and the
/// completions.
#[derive(Debug, Subcommand)]
enum Internal {
    /// Internal: sets LISTEN_PID to its own pid and executes the program (started by `run`).
    #[command(name = "exec-activated", hide = true)]
    ExecActivated(run::exec::ExecArgs),

    /// Internal: kills the program's group after the drain timeout if the supervisor dies
    /// (started by `run`).
    #[command(name = "drain-watchdog", hide = true)]
    DrainWatchdog(run::watchdog::WatchdogArgs),

    /// One generation of the drill's demo server (started by `tableroll drill`).
    #[command(name = "drill-server", hide = true)]
    DrillServer(drill::server::ServerArgs),
}

fn main() -> ExitCode {
    let cli = Cli::<Command>::parse();
    match cli.command {
        Command::Public(Public::Drill(args)) => drill::run(&args).unwrap_or_else(|e| {
            eprintln!("tableroll drill: {e:#}");
            ExitCode::FAILURE
        }),
        Command::Public(Public::Run(args)) => run::run(args),
        Command::Public(Public::Status(args)) => status::run(&args),
        Command::Public(Public::Wait(args)) => wait::run(&args),
        Command::Public(Public::Man(args)) => manual::run(&args),
        Command::Public(Public::Completions(args)) => completions::run(&args),
        Command::Internal(Internal::DrillServer(args)) => drill::server::run(&args),
        Command::Internal(Internal::ExecActivated(args)) => run::exec::run(args),
        Command::Internal(Internal::DrainWatchdog(args)) => run::watchdog::run(args),
    }
}

/// The command as the man pages and the shell completions document it: without the internal
/// subcommands.
fn documented_command() -> clap::Command {
    <Cli<Public> as clap::CommandFactory>::command()
}
