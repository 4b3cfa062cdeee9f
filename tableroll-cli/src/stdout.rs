//! Printing a whole document (a man page, a completion script) to stdout, where a reader that
//! stops early is not an error.

use std::io::{self, Write};
use std::process::ExitCode;

/// Exit status when stdout cannot be written (but was not closed by its reader).
const WRITE_FAILED: u8 = 1;

/// Writes `document` to stdout. A closed pipe (`tableroll man | head -1`) ends the command
/// quietly with status 0: the reader had what it wanted. Any other failure (a full disk, say)
/// is reported on stderr as `{who}: error: writing to stdout: ...`, with status 1.
pub fn print(who: &str, document: &[u8]) -> ExitCode {
    match write_all(&mut io::stdout().lock(), document) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{who}: error: writing to stdout: {e}");
            ExitCode::from(WRITE_FAILED)
        }
    }
}

fn write_all(out: &mut impl Write, document: &[u8]) -> io::Result<()> {
    out.write_all(document)?;
    out.flush()
}
