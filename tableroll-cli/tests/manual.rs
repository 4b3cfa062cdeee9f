//! `tableroll man` and `tableroll completions` end to end: the real binary's man pages and
//! completion scripts document the public subcommands and flags, never the internal ones, and
//! a reader that closes stdout early is no error. (Whether man(1) renders the pages, and bash
//! loads the script, was checked by hand: the tests need neither installed.)

mod util;

use std::fs;
use std::process::Stdio;

use util::{tableroll, wait_bounded, Run};

const SHELLS: [&str; 5] = ["bash", "zsh", "fish", "elvish", "powershell"];
const SUBCOMMANDS: [&str; 6] = ["drill", "run", "status", "wait", "man", "completions"];
const HIDDEN: [&str; 2] = ["exec-activated", "drill-server"];

/// Runs `tableroll ARGS` and checks that it succeeded, printing nothing on stderr.
fn success(args: &[&str]) -> Run {
    let run = util::run(args);
    assert!(run.status().success() && run.stderr().is_empty(), "{}", run.describe());
    run
}

/// Checks that `run` failed as a usage error, saying `message` on stderr and nothing on stdout.
fn assert_usage_error(run: &Run, message: &str) {
    assert_eq!(run.code(), Some(2), "{}", run.describe());
    assert!(run.stderr().contains(message), "{}", run.describe());
    assert!(run.stdout().is_empty(), "{}", run.describe());
}

/// Checks that `roff` is a man page titled `title`: the roff preamble, `.TH TITLE 1`, then
/// the sections, with no mention of the internal subcommands.
fn assert_page(roff: &str, title: &str, run: &Run) {
    let first_macro = roff.lines().find(|line| !line.starts_with(".ie") && !line.starts_with(".el"));
    let th = format!(".TH {title} 1 ");
    assert!(first_macro.is_some_and(|line| line.starts_with(&th)), "no {th:?} first\n{}", run.describe());
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH DESCRIPTION", ".SH OPTIONS"] {
        assert!(roff.lines().any(|line| line == section), "no {section}\n{}", run.describe());
    }
    // roff escapes every `-` in text as `\-`.
    for hidden in HIDDEN {
        let escaped = hidden.replace('-', "\\-");
        assert!(!roff.contains(hidden) && !roff.contains(&escaped), "{hidden}\n{}", run.describe());
    }
}

#[test]
fn every_shell_completes_the_public_subcommands_and_flags_only() {
    for shell in SHELLS {
        let run = success(&["completions", shell]);
        let script = run.stdout();
        for word in SUBCOMMANDS {
            assert!(script.contains(word), "{shell}: no {word}\n{}", run.describe());
        }
        for flag in ["listen", "dir", "upgrades", "json"] {
            // fish names a long flag `-l NAME`.
            let form = if shell == "fish" { format!("-l {flag}") } else { format!("--{flag}") };
            assert!(script.contains(&form), "{shell}: no {form}\n{}", run.describe());
        }
        for hidden in HIDDEN {
            assert!(!script.contains(hidden), "{shell}: {hidden}\n{}", run.describe());
        }
    }
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let run = util::run(&["completions", "tcsh"]);
    assert_usage_error(&run, "invalid value 'tcsh'");
    for shell in SHELLS {
        assert!(run.stderr().contains(shell), "{shell} is not offered\n{}", run.describe());
    }
    assert_usage_error(&util::run(&["completions"]), "SHELL");
}

#[test]
fn the_page_of_tableroll_lists_the_public_subcommands() {
    let run = success(&["man"]);
    let roff = run.stdout();
    assert_page(&roff, "tableroll", &run);
    for subcommand in SUBCOMMANDS {
        let reference = format!("tableroll\\-{subcommand}(1)");
        assert!(roff.contains(&reference), "no {reference}\n{}", run.describe());
    }
}

#[test]
fn each_subcommand_has_a_page_with_its_options() {
    let options = [
        ("drill", "\\-\\-upgrades"),
        ("run", "\\-\\-listen"),
        ("status", "\\-\\-json"),
        ("wait", "\\-\\-timeout"),
        ("man", "\\-\\-dir"),
        ("completions", "SHELL"),
    ];
    for (subcommand, option) in options {
        let run = success(&["man", subcommand]);
        let roff = run.stdout();
        assert_page(&roff, &format!("tableroll-{subcommand}"), &run);
        assert!(roff.contains(option), "no {option}\n{}", run.describe());
        assert!(roff.contains("tableroll(1)"), "no SEE ALSO tableroll(1)\n{}", run.describe());
    }
}

#[test]
fn internal_subcommands_have_no_page() {
    for hidden in HIDDEN {
        assert_usage_error(&util::run(&["man", hidden]), &format!("invalid value '{hidden}'"));
    }
}

#[test]
fn man_dir_writes_every_page_as_printed() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().to_str().expect("a UTF-8 temp path");
    success(&["man", "--dir", path]);
    let mut written: Vec<String> = fs::read_dir(dir.path())
        .expect("reading the directory")
        .map(|entry| entry.expect("an entry").file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    let mut expected: Vec<String> = SUBCOMMANDS.iter().map(|s| format!("tableroll-{s}.1")).collect();
    expected.push("tableroll.1".to_owned());
    expected.sort();
    assert_eq!(written, expected);
    for subcommand in [None, Some("run")] {
        let (file, args) = match subcommand {
            Some(name) => (format!("tableroll-{name}.1"), vec!["man", name]),
            None => ("tableroll.1".to_owned(), vec!["man"]),
        };
        let printed = success(&args).stdout();
        assert_eq!(fs::read_to_string(dir.path().join(&file)).expect("reading a page"), printed, "{file}");
    }
}

#[test]
fn man_dir_must_be_an_existing_directory() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let missing = dir.path().join("missing");
    let run = util::run(&["man", "--dir", missing.to_str().expect("a UTF-8 temp path")]);
    assert_usage_error(&run, "no such directory");
    assert!(!missing.exists(), "{}", run.describe());

    let file = dir.path().join("file");
    fs::write(&file, "").expect("writing a file");
    let run = util::run(&["man", "--dir", file.to_str().expect("a UTF-8 temp path")]);
    assert_usage_error(&run, "not a directory");

    assert_usage_error(&util::run(&["man", "run", "--dir", "."]), "cannot be used with");
}

/// Runs `tableroll ARGS` with a stdout whose reader is already gone.
fn run_with_closed_stdout(args: &[&str]) -> Run {
    let (reader, writer) = rustix::pipe::pipe().expect("a pipe");
    drop(reader);
    let child = tableroll()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting tableroll");
    Run { args: args.iter().map(|a| a.to_string()).collect(), output: wait_bounded(child) }
}

#[test]
fn a_closed_stdout_ends_quietly() {
    for args in [&["man"][..], &["man", "run"], &["completions", "bash"]] {
        let run = run_with_closed_stdout(args);
        assert!(run.status().success() && run.stderr().is_empty(), "{}", run.describe());
    }
}
