use std::process::ExitCode;

use clap::error::ErrorKind;
use datagen::cli::Args;
use datagen::progress::Progress;
use datagen::report::CacheOutcome;
use datagen::seed::{self, Interrupted};

/// Bad flags: nothing was touched (clap's convention).
const EXIT_USAGE: u8 = 2;
/// The data is committed but the cache may still serve the old data.
const EXIT_CACHE_NOT_FLUSHED: u8 = 3;
/// Interrupted before the commit: the database is unchanged (128 + SIGINT).
const EXIT_INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    // A missing .env is normal; settings then come from flags, the environment and defaults.
    let _ = dotenvy::dotenv();
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(error)
            if matches!(
                error.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) =>
        {
            error.exit()
        }
        Err(error) => {
            eprintln!("datagen: {}", one_line(&error));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime starts on any supported OS");
    let mut progress = Progress::for_stderr();
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let outcome = runtime.block_on(seed::run(&args, &mut progress, interrupt));
    progress.finish();
    match outcome {
        Ok(report) => {
            print!("{report}");
            if let CacheOutcome::Failed(error) = &report.cache {
                eprintln!(
                    "datagen: WARNING: the data is committed but the cache was not flushed ({error}). \
                     The service may serve the old data's pages and posts until they expire \
                     (CACHE_OBJECT_TTL_SECS, 600 s by default): run `datagen` again with the cluster up, \
                     or restart the cluster."
                );
                return ExitCode::from(EXIT_CACHE_NOT_FLUSHED);
            }
            ExitCode::SUCCESS
        }
        Err(error) if error.is::<Interrupted>() => {
            eprintln!("datagen: {error}");
            ExitCode::from(EXIT_INTERRUPTED)
        }
        Err(error) => {
            eprintln!("datagen: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// clap's message on one line: the error and the possible values, without usage and tips.
fn one_line(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let mut lines = rendered.lines().map(str::trim);
    let mut line = lines
        .next()
        .unwrap_or("error: invalid arguments")
        .to_owned();
    if let Some(values) = lines.find(|l| l.starts_with("[possible values:")) {
        line.push(' ');
        line.push_str(values);
    }
    line + " (see --help)"
}
