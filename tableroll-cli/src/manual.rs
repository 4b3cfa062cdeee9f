//! `tableroll man`: the manual pages, generated from the command's own definitions (the text
//! of `--help`), so they always describe the binary they come with.
//!
//! One page per command, as git and cargo have them: `tableroll(1)` for the command and the
//! list of its subcommands, `tableroll-run(1)` and so on for each subcommand. The internal
//! subcommands have none.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap_mangen::roff::{roman, Roff};
use clap_mangen::Man;

/// Arguments of `tableroll man`.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct ManArgs {
    /// The subcommand whose page to print, `tableroll-SUBCOMMAND.1`; without it, the page of
    /// `tableroll` itself, `tableroll.1`.
    #[arg(value_name = "SUBCOMMAND", value_parser = PAGES, conflicts_with = "dir")]
    pub subcommand: Option<String>,
    /// Write every page into DIR (`tableroll.1`, `tableroll-run.1`, ...) instead of printing
    /// one. DIR must exist; pages already there are replaced.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

const AFTER_HELP: &str = "\
Prints the page in roff, the format of man(1), to stdout. Installed where man looks for pages, \
e.g.:
  tableroll man --dir /usr/local/share/man/man1
  man tableroll-run

Exit status: 0 (also when the reader closes stdout early); 1 if stdout cannot be written; 2 \
on bad usage, and when DIR cannot be written (missing, not a directory, no permission).";

/// The subcommands that have a page of their own: every public one (a test checks the list).
const PAGES: [&str; 6] = ["drill", "run", "status", "wait", "man", "completions"];

/// Exit status when the pages cannot be written into DIR: a usage error, as clap's own.
const DIR_FAILED: u8 = 2;

/// The man section of every page: user commands.
const SECTION: &str = "1";

pub fn run(args: &ManArgs) -> ExitCode {
    match &args.dir {
        Some(dir) => write_pages(dir),
        None => crate::stdout::print("tableroll man", &page(args.subcommand.as_deref())),
    }
}

/// Writes every page into `dir`.
fn write_pages(dir: &Path) -> ExitCode {
    let written = check_dir(dir).and_then(|()| {
        [None].into_iter().chain(PAGES.map(Some)).try_for_each(|subcommand| {
            let name = file_name(subcommand);
            fs::write(dir.join(&name), page(subcommand)).map_err(|e| format!("writing {name}: {e}"))
        })
    });
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("tableroll man: error: --dir {}: {why}", dir.display());
            ExitCode::from(DIR_FAILED)
        }
    }
}

/// Whether `dir` is an existing directory, in words for the operator if not.
fn check_dir(dir: &Path) -> Result<(), String> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err("not a directory".to_owned()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err("no such directory".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

/// The name of the page of `subcommand` (`None`: of `tableroll`).
fn file_name(subcommand: Option<&str>) -> String {
    match subcommand {
        Some(name) => format!("tableroll-{name}.{SECTION}"),
        None => format!("tableroll.{SECTION}"),
    }
}

/// The page of `subcommand` (`None`: of `tableroll`), in roff.
fn page(subcommand: Option<&str>) -> Vec<u8> {
    // Built as a whole first: that gives the subcommands their names (`tableroll-run`) and
    // version. Without `help`, which clap adds as a subcommand and would otherwise be listed.
    let mut root = crate::documented_command().disable_help_subcommand(true);
    root.build();
    // The footer names the program, not the subcommand (clap_mangen would say `run 0.1.0`).
    let source = format!("tableroll {}", root.get_version().unwrap_or_default());
    let subcommand = subcommand.and_then(|name| root.find_subcommand(name)).cloned();
    let is_subcommand = subcommand.is_some();
    let mut page = Vec::new();
    // Writing to a Vec cannot fail (`Roff::render` makes the same assumption).
    let _ = Man::new(subcommand.unwrap_or(root)).section(SECTION).source(source).render(&mut page);
    if is_subcommand {
        // The page of `tableroll` lists the subcommands' pages already.
        let mut see_also = Roff::new();
        see_also.control("SH", ["SEE ALSO"]).text([roman(format!("tableroll({SECTION})"))]);
        page.extend_from_slice(see_also.to_roff().as_bytes());
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every public subcommand has a page, and every page a subcommand.
    #[test]
    fn pages_are_the_public_subcommands() {
        let command = crate::documented_command().disable_help_subcommand(true);
        let public: Vec<&str> = command.get_subcommands().map(|s| s.get_name()).collect();
        assert_eq!(public, PAGES);
    }

    /// Each page is titled as its file is named (a page without a subcommand would be the page
    /// of `tableroll`).
    #[test]
    fn each_page_is_titled_as_its_file_is_named() {
        for subcommand in [None].into_iter().chain(PAGES.map(Some)) {
            let page = String::from_utf8(page(subcommand)).expect("UTF-8 roff");
            let name = file_name(subcommand);
            let title = format!(".TH {} {SECTION} ", name.trim_end_matches(&format!(".{SECTION}")));
            assert!(page.contains(&title), "{name}: no {title:?} in\n{page}");
            let source = format!(" \"tableroll {}\"", env!("CARGO_PKG_VERSION"));
            assert!(page.contains(&source), "{name}: no {source:?} in\n{page}");
        }
        assert_eq!(file_name(Some("run")), "tableroll-run.1");
    }
}
