use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser as _;
use hotfeed::cache::Cache;
use hotfeed::config::{ApiKeyArgs, Cli, Command};
use hotfeed::domain::ApiKey;
use hotfeed::feed::{Feed, FeedError};
use hotfeed::metrics::Metrics;
use hotfeed::startup::Application;
use hotfeed::store::{self, Store};
use hotfeed::tasks::Tasks;
use hotfeed::telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A missing .env is normal; settings then come from flags, the environment and defaults.
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match cli.command {
        Command::Serve(settings) => {
            let app = Application::build(*settings).await?;
            app.run_until_stopped().await?;
        }
        Command::Migrate(database) => {
            let applied = store::migrate(&database.database_url).await?;
            tracing::info!(applied, "migrations up to date");
        }
        Command::ApiKey(args) => {
            // The key alone on stdout, so `KEY=$(hotfeed api-key --user-id 1)` works.
            println!("{}", issue_api_key(&args).await?.expose());
        }
    }
    Ok(())
}

/// `hotfeed api-key`: issues a new API key for an existing user, to print once.
///
/// # Errors
/// PostgreSQL is unreachable, or the user does not exist.
async fn issue_api_key(args: &ApiKeyArgs) -> anyhow::Result<ApiKey> {
    let metrics = Arc::new(Metrics::new(0));
    let tasks = Tasks::new();
    let store = Store::connect_lazy(&args.database, Arc::clone(&metrics), &tasks)
        .context("invalid DATABASE_URL")?;
    let feed = Feed::new(store, Cache::None, metrics, 1, &tasks);
    let issued = feed.issue_api_key(args.user_id).await;
    tasks.shutdown().await;
    feed.close().await;
    match issued {
        Ok(key) => Ok(key),
        Err(FeedError::NotFound(resource)) => anyhow::bail!("{resource} does not exist"),
        Err(error) => Err(anyhow::Error::new(error).context("issuing the API key")),
    }
}
