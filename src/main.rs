use clap::Parser as _;
use hotfeed::config::{Cli, Command};
use hotfeed::startup::{self, Application};
use hotfeed::{store, telemetry};

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
            println!("{}", startup::issue_api_key(&args).await?.expose());
        }
    }
    Ok(())
}
