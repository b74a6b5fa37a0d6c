use clap::Parser as _;
use loadgen::{Args, Plan};

fn main() -> anyhow::Result<()> {
    // As the service and datagen: `.env` (scripts/stack.sh writes REDIS_URLS there) fills in what
    // the environment does not set.
    let _ = dotenvy::dotenv();
    let args = Args::parse();
    let threads = args.threads;
    let json = args.json;
    let plan = Plan::try_from(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    let report = runtime.block_on(loadgen::run(&plan))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render_table());
    }
    if report.responses == 0 {
        anyhow::bail!(
            "no request got an HTTP response: is the service at {} running?",
            plan.base_url
        );
    }
    Ok(())
}
