//! What the drill shows on stderr while it runs: a progress bar on a terminal (indicatif), and
//! one line per step, above the bar or, without a terminal, as a plain log.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// The drill's stderr.
pub struct Progress {
    bar: Option<ProgressBar>,
    lines: bool,
}

impl Progress {
    /// A bar counting `upgrades` if stderr is a terminal and neither `quiet` nor `json` is
    /// set; step lines unless `quiet`.
    pub fn new(upgrades: u32, quiet: bool, json: bool) -> Progress {
        let show_bar = !quiet && !json && std::io::stderr().is_terminal();
        let bar = show_bar.then(|| {
            let style = ProgressStyle::with_template(
                "{spinner:.green} {elapsed:>3} [{bar:30.cyan/blue}] upgrade {pos}/{len}  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            let bar = ProgressBar::new(u64::from(upgrades)).with_style(style);
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Progress { bar, lines: !quiet }
    }

    /// Prints one step line.
    pub fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None if self.lines => eprintln!("{text}"),
            None => {}
        }
    }

    /// Updates the bar: upgrades done, requests sent and failed so far.
    pub fn update(&self, upgrades: u32, sent: u64, failed: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(u64::from(upgrades));
            bar.set_message(format!("{sent} requests, {failed} failed"));
        }
    }

    /// Removes the bar; later lines go straight to stderr.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
