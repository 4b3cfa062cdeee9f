//! The `tableroll` command (being written).

fn main() {
    eprintln!("tableroll: no subcommands yet");
    std::process::exit(2);
}
