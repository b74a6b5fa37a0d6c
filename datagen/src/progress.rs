//! What a person watching the load sees on stderr: an indicatif bar on a terminal, a plain line
//! every few seconds otherwise (CI logs, pipes), nothing in tests.

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

use indicatif::{HumanCount, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// Time between two plain progress lines.
const LINE_EVERY: Duration = Duration::from_secs(2);

/// Where progress goes.
#[derive(Debug)]
pub enum Progress {
    /// A bar with rows/s and ETA, redrawn in place.
    Bar(ProgressBar),
    /// Periodic lines, for logs.
    Lines {
        started: Instant,
        last: Instant,
        /// What is being counted.
        rows: &'static str,
    },
    /// Nothing (tests, embedding).
    Hidden,
}

impl Progress {
    /// A bar when stderr is a terminal, periodic lines when it is not.
    pub fn for_stderr() -> Self {
        if std::io::stderr().is_terminal() {
            Self::Bar(ProgressBar::with_draw_target(
                None,
                ProgressDrawTarget::stderr(),
            ))
        } else {
            let now = Instant::now();
            Self::Lines {
                started: now,
                last: now,
                rows: "rows",
            }
        }
    }

    /// Announces a step; on a terminal the bar becomes a spinner with this message.
    pub fn step(&mut self, message: &str) {
        match self {
            Self::Bar(bar) => {
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                        .expect("a valid template"),
                );
                bar.set_message(message.to_owned());
                bar.reset_elapsed();
                bar.enable_steady_tick(Duration::from_millis(120));
            }
            Self::Lines { .. } => line(format_args!("datagen: {message}")),
            Self::Hidden => {}
        }
    }

    /// Starts counting `total` rows of `what` (posts, follows).
    pub fn start_rows(&mut self, what: &'static str, total: u64) {
        match self {
            Self::Bar(bar) => {
                bar.set_style(
                    ProgressStyle::with_template(&format!(
                        "{{msg}} [{{bar:30}}] {{human_pos}}/{{human_len}} {what}, {{rate}}, ETA {{eta}}"
                    ))
                    .expect("a valid template")
                    .with_key(
                        "rate",
                        |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                            let _ = write!(w, "{} rows/s", HumanCount(state.per_sec() as u64));
                        },
                    )
                    .progress_chars("=> "),
                );
                bar.set_message("loading");
                bar.set_length(total);
                bar.set_position(0);
                bar.reset_eta();
            }
            Self::Lines {
                started,
                last,
                rows,
            } => {
                *started = Instant::now();
                *last = *started;
                *rows = what;
                line(format_args!(
                    "datagen: generating and loading {total} {what}"
                ));
            }
            Self::Hidden => {}
        }
    }

    /// Counts rows sent to PostgreSQL: `done` of `total` so far.
    pub fn rows(&mut self, done: u64, total: u64) {
        match self {
            Self::Bar(bar) => bar.set_position(done),
            Self::Lines {
                started,
                last,
                rows,
            } => {
                if last.elapsed() < LINE_EVERY || done == total {
                    return;
                }
                *last = Instant::now();
                let elapsed = started.elapsed().as_secs_f64();
                let rate = done as f64 / elapsed.max(1e-9);
                let eta = (total - done) as f64 / rate.max(1.0);
                line(format_args!(
                    "datagen: {done} / {total} {rows} ({:.0}%), {rate:.0} rows/s, ETA {eta:.0} s",
                    100.0 * done as f64 / total as f64
                ));
            }
            Self::Hidden => {}
        }
    }

    /// Reports a finished step with its duration.
    pub fn done(&mut self, what: &str, took: Duration) {
        let text = format!("datagen: {what} in {:.2} s", took.as_secs_f64());
        match self {
            Self::Bar(bar) => bar.println(text),
            Self::Lines { .. } => line(format_args!("{text}")),
            Self::Hidden => {}
        }
    }

    /// Removes the bar before the summary is printed.
    pub fn finish(&mut self) {
        if let Self::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// Writes one progress line; a closed stderr (a reader that went away) must not stop the load.
fn line(text: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "{text}");
}
