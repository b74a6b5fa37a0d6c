use std::process::{Command, Output};
use std::sync::Once;

use datagen::cli::Args;
use datagen::progress::Progress;
use datagen::report::Report;
use tokio_postgres::{Client, NoTls};

static INIT: Once = Once::new();

/// A fixed end of the created_at range, so runs are comparable across days.
pub const UNTIL: &str = "2026-01-01T00:00:00Z";

/// The environment as the README's stack gives it (`.env`, then the process environment).
fn init() {
    INIT.call_once(|| {
        let _ = dotenvy::dotenv();
    });
}

/// Digests of each table's rows, to tell "unchanged" from "changed" without keeping the rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub users: String,
    pub posts: String,
    pub follows: String,
}

/// A database of its own for one test, dropped afterwards, even when the test panics.
pub struct TestDb {
    pub url: String,
    admin_url: String,
    name: String,
}

impl TestDb {
    /// Creates `datagen_test_<uuid>` on the server of `DATABASE_URL`.
    pub async fn new() -> Self {
        init();
        let base = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/hotfeed".into());
        let mut url = url::Url::parse(&base).expect("DATABASE_URL is a URL");
        url.set_path("/postgres");
        let admin_url = url.to_string();
        let name = format!("datagen_test_{}", uuid::Uuid::new_v4().simple());
        url.set_path(&format!("/{name}"));
        let admin = connect(&admin_url).await;
        admin
            .batch_execute(&format!(r#"CREATE DATABASE "{name}""#))
            .await
            .expect("create the test database");
        Self {
            url: url.to_string(),
            admin_url,
            name,
        }
    }

    /// A fresh connection to the test database.
    pub async fn client(&self) -> Client {
        connect(&self.url).await
    }

    /// Parses a datagen command line aimed at this database: small sizes, a fixed --until, and
    /// no cache flush unless the test asks for one with `--cache-key-prefix`.
    pub fn args(&self, extra: &[&str]) -> Args {
        let mut argv = vec!["datagen", "--database-url", &self.url];
        for (flag, default) in [("--until", UNTIL), ("--users", "20"), ("--posts", "20000")] {
            if !extra.contains(&flag) {
                argv.extend([flag, default]);
            }
        }
        if !extra.contains(&"--cache-key-prefix") {
            argv.push("--no-cache-flush");
        }
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).expect("test arguments parse")
    }

    /// Runs datagen through the library, without progress output or interruption.
    pub async fn seed(&self, extra: &[&str]) -> Report {
        datagen::seed::run(
            &self.args(extra),
            &mut Progress::Hidden,
            std::future::pending(),
        )
        .await
        .expect("datagen succeeds")
    }

    /// `SELECT count(*)` of a table.
    pub async fn count(&self, table: &str) -> i64 {
        self.client()
            .await
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .expect("count rows")
            .get(0)
    }

    /// Number of tables in the public schema: 0 means nothing was ever written.
    pub async fn tables(&self) -> i64 {
        self.client()
            .await
            .query_one(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
                &[],
            )
            .await
            .expect("list tables")
            .get(0)
    }

    /// A digest of every row of `users`, `posts` and `follows`, in key order.
    pub async fn digest(&self) -> Digest {
        let client = self.client().await;
        let digest = |sql: &'static str| {
            let client = &client;
            async move {
                client
                    .query_one(sql, &[])
                    .await
                    .expect("digest")
                    .get::<_, String>(0)
            }
        };
        Digest {
            users: digest("SELECT md5(string_agg(format('%s|%s|%s|%s|%s|%s|%s', id, username, display_name, created_at, updated_at, followers_count, following_count), E'\\n' ORDER BY id)) FROM users").await,
            posts: digest("SELECT md5(string_agg(format('%s|%s|%s|%s|%s', id, user_id, content, created_at, updated_at), E'\\n' ORDER BY id)) FROM posts").await,
            follows: digest("SELECT coalesce(md5(string_agg(format('%s|%s|%s', follower_id, followee_id, created_at), E'\\n' ORDER BY follower_id, followee_id)), '') FROM follows").await,
        }
    }

    /// Rows where a user's `followers_count` or `following_count` differs from its follow rows:
    /// 0 when the counts are what the service would have kept.
    pub async fn count_mismatches(&self) -> i64 {
        self.client()
            .await
            .query_one(
                "SELECT count(*) FROM users u
                 WHERE u.followers_count <> (SELECT count(*) FROM follows WHERE followee_id = u.id)
                    OR u.following_count <> (SELECT count(*) FROM follows WHERE follower_id = u.id)",
                &[],
            )
            .await
            .expect("compare the counts with the follow rows")
            .get(0)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs outside any async context we could borrow; use a private runtime on a thread.
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for cleanup")
                .block_on(async {
                    connect(&admin_url)
                        .await
                        .batch_execute(&format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#))
                        .await
                })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// Connects and drives the connection in the background.
pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("PostgreSQL at DATABASE_URL answers (run scripts/stack.sh up)");
    tokio::spawn(connection);
    client
}

/// The datagen binary with the test environment.
pub fn datagen() -> Command {
    init();
    Command::new(env!("CARGO_BIN_EXE_datagen"))
}

/// Runs the binary to completion.
pub fn run_datagen(args: &[&str]) -> Output {
    datagen().args(args).output().expect("the binary runs")
}

/// The Redis Cluster seed nodes of the test environment.
pub fn redis_urls() -> Vec<String> {
    init();
    std::env::var("REDIS_URLS")
        .unwrap_or_else(|_| {
            "redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002".into()
        })
        .split(',')
        .map(|url| url.trim().to_owned())
        .filter(|url| !url.is_empty())
        .collect()
}
