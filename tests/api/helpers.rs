use std::sync::Once;

use hotfeed::cache::topology::SlotMap;
use hotfeed::cache::{CacheOptions, Keys};

use hotfeed::config::{AdminKey, RateLimitSettings, Settings, Switch};
use hotfeed::startup::Application;
use loadgen::scrape::Scrape;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use reqwest::Response;
use serde_json::{json, Value};
use sqlx::{Connection as _, Executor as _, PgConnection};

static INIT: Once = Once::new();

/// The `ADMIN_API_KEY` every test app runs with; [`TestApp::client`] sends it.
pub const TEST_ADMIN_KEY: &str = "test-admin-key-0123456789abcdef-0123456789";

/// A running app with its own database and key prefix, plus direct handles on both backends.
pub struct TestApp {
    pub address: String,
    /// Sends the admin key with every request, so a test may write as any user; requests that set
    /// their own `Authorization` replace it.
    pub client: reqwest::Client,
    /// Sends no credentials.
    pub anonymous: reqwest::Client,
    pub keys: Keys,
    pub settings: Settings,
    admin_url: String,
    database: String,
    /// Whether dropping this app drops its database (false for a sibling sharing it).
    owns_database: bool,
}

/// Settings as the README's stack gives them (`.env`, environment), isolated for one test.
pub fn test_settings() -> (Settings, String, String) {
    INIT.call_once(|| {
        let _ = dotenvy::dotenv();
        if std::env::var_os("TEST_LOG").is_some() {
            hotfeed::telemetry::init(hotfeed::config::LogFormat::Text);
        }
    });
    let mut settings = Settings::from_env().expect("the environment holds valid settings");
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let admin_url = settings.database.database_url.clone();
    let database = format!("hotfeed_test_{suffix}");
    let mut url = url::Url::parse(&admin_url).expect("DATABASE_URL is a URL");
    url.set_path(&database);
    settings.database.database_url = url.to_string();
    settings.database.db_max_connections = 4;
    // The whole suite shares two cores: a new connection can take longer than the production
    // default (500 ms) to open. Tests about failing fast set their own.
    settings.database.db_acquire_timeout_ms = 3_000;
    settings.app_host = "127.0.0.1".into();
    settings.app_port = 0;
    settings.app_workers = Some(1);
    settings.cache.key_prefix = format!("t{}", &suffix[..12]);
    settings.auth.admin_api_key = Some(AdminKey::parse(TEST_ADMIN_KEY).expect("a valid admin key"));
    // The production budget (100 ms) is for a release build on a machine of its own; a debug build
    // sharing two loaded cores with the whole suite blew it now and then, turning an expected HIT
    // into a MISS or PARTIAL. Tests of a hung node (tests/api/failover.rs) set the production value.
    settings.cache.redis_timeout_ms = 1_000;
    // Rate limits would make unrelated tests flaky; the rate-limit tests switch them on.
    settings.rate_limits = RateLimitSettings::disabled();
    // The in-process tier makes a sibling instance's reads lag a write by the invalidation's
    // delivery; tests of the Redis tier assert `HIT` and read-your-write on siblings at once.
    // The tier's own tests (tests/api/local_tier.rs) switch it on.
    settings.cache.l1 = Switch::Off;
    (settings, admin_url, database)
}

/// Spawns the app with default test settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Spawns the app after `customize` adjusts its settings.
pub async fn spawn_app_with(customize: impl FnOnce(&mut Settings)) -> TestApp {
    let (app, test_app) = build_app_with(customize).await;
    tokio::spawn(app.run_until_stopped());
    test_app
}

/// Builds the app after `customize` adjusts its settings, for the caller to run and stop.
pub async fn build_app_with(customize: impl FnOnce(&mut Settings)) -> (Application, TestApp) {
    let (mut settings, admin_url, database) = test_settings();
    customize(&mut settings);
    let mut admin = PgConnection::connect(&admin_url)
        .await
        .expect("PostgreSQL at DATABASE_URL answers (run scripts/stack.sh up)");
    admin
        .execute(format!(r#"CREATE DATABASE "{database}""#).as_str())
        .await
        .expect("create the test database");
    build(settings, admin_url, database, true).await
}

/// Spawns the app on `settings` as given: its database is the caller's to create and drop.
pub async fn spawn_app_on(settings: Settings) -> TestApp {
    start(settings, String::new(), String::new(), false).await
}

async fn start(
    settings: Settings,
    admin_url: String,
    database: String,
    owns_database: bool,
) -> TestApp {
    let (app, test_app) = build(settings, admin_url, database, owns_database).await;
    tokio::spawn(app.run_until_stopped());
    test_app
}

async fn build(
    settings: Settings,
    admin_url: String,
    database: String,
    owns_database: bool,
) -> (Application, TestApp) {
    let app = Application::build(settings.clone())
        .await
        .expect("the app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let mut admin = reqwest::header::HeaderMap::new();
    admin.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {TEST_ADMIN_KEY}")
            .parse()
            .expect("a header value"),
    );
    let test_app = TestApp {
        address,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .default_headers(admin)
            .build()
            .expect("a plain HTTP client"),
        anonymous: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a plain HTTP client"),
        keys: Keys::of(&CacheOptions::from(&settings.cache)),
        settings,
        admin_url,
        database,
        owns_database,
    };
    (app, test_app)
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if !self.owns_database {
            return;
        }
        let admin_url = self.admin_url.clone();
        let database = self.database.clone();
        // Drop runs outside any async context we could borrow; use a private runtime on a thread.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for cleanup");
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&admin_url).await?;
                admin
                    .execute(
                        format!(r#"DROP DATABASE IF EXISTS "{database}" WITH (FORCE)"#).as_str(),
                    )
                    .await
                    .map(|_| ())
            })
        })
        .join();
        if let Ok(Err(error)) = dropped {
            eprintln!("could not drop test database {}: {error}", self.database);
        }
    }
}

impl TestApp {
    /// A second instance on the same database and key prefix, after `customize`; as a second
    /// replica of the service would run. Drop it before `self`.
    pub async fn sibling(&self, customize: impl FnOnce(&mut Settings)) -> TestApp {
        let mut settings = self.settings.clone();
        settings.no_migrate = true;
        customize(&mut settings);
        start(
            settings,
            self.admin_url.clone(),
            self.database.clone(),
            false,
        )
        .await
    }

    /// A direct connection to this app's database.
    pub async fn db(&self) -> PgConnection {
        PgConnection::connect(&self.settings.database.database_url)
            .await
            .expect("the test database answers")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("the app answers")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("the app answers")
    }

    /// Creates a user and returns its id.
    pub async fn create_user(&self, username: &str) -> i64 {
        self.create_user_with_key(username).await.0
    }

    /// Creates a user and returns its id and its API key.
    pub async fn create_user_with_key(&self, username: &str) -> (i64, String) {
        let res = self
            .post_json("/api/v1/users", &json!({ "username": username }))
            .await;
        assert_eq!(res.status(), 201, "creating user {username}");
        let user: Value = res.json().await.expect("JSON user");
        let id = user["id"].as_i64().expect("numeric id");
        let key = user["api_key"].as_str().expect("an api_key").to_owned();
        (id, key)
    }

    /// A request with `key` as its bearer token (or none), and `body` as JSON if given.
    pub fn request_as(
        &self,
        key: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> reqwest::RequestBuilder {
        let mut request = self.anonymous.request(method, self.url(path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        request
    }

    /// Creates `count` posts for `user` and returns their ids, oldest first.
    pub async fn create_posts(&self, user: i64, count: usize) -> Vec<i64> {
        let mut ids = Vec::with_capacity(count);
        for n in 0..count {
            let res = self
                .post_json(
                    "/api/v1/posts",
                    &json!({ "user_id": user, "content": format!("post {n} of user {user}") }),
                )
                .await;
            assert_eq!(res.status(), 201, "creating post {n}");
            ids.push(
                res.json::<Value>().await.expect("JSON post")["id"]
                    .as_i64()
                    .expect("id"),
            );
        }
        ids
    }

    /// The service's `/metrics`, parsed as loadgen parses it.
    pub async fn metrics(&self) -> Scrape {
        Scrape::parse(&self.metrics_text().await)
    }

    /// The service's `/metrics` as served.
    pub async fn metrics_text(&self) -> String {
        self.get("/metrics")
            .await
            .text()
            .await
            .expect("metrics text")
    }

    /// A direct connection to the cluster, to look at or disturb what the service cached.
    pub async fn redis(&self) -> ClusterConnection {
        ClusterClient::new(self.settings.cache.redis_urls.clone())
            .expect("valid REDIS_URLS")
            .get_async_connection()
            .await
            .expect("the Redis Cluster answers (run scripts/stack.sh up)")
    }
}

/// For each key, the primary that owns it, from the cluster's `CLUSTER SLOTS`.
pub async fn owners(redis: &mut ClusterConnection, keys: &[String]) -> Vec<String> {
    let map = SlotMap::read(redis).await.expect("CLUSTER SLOTS");
    keys.iter()
        .map(|key| map.owner(key.as_bytes()).expect("every slot is assigned"))
        .collect()
}

/// The post ids of a page body, in order.
pub fn page_ids(page: &Value) -> Vec<i64> {
    page["data"]
        .as_array()
        .unwrap_or_else(|| panic!("a page has a data array: {page}"))
        .iter()
        .map(|post| post["id"].as_i64().expect("numeric post id"))
        .collect()
}

/// The `{"error":{"code"}}` of an error response, checking its shape.
pub async fn error_code(res: Response) -> String {
    let body: Value = res.json().await.expect("error bodies are JSON");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "error body has a message: {body}");
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("error body has a code: {body}"))
        .to_owned()
}

/// A runtime of its own for a property test case, which proptest runs synchronously.
pub fn case_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// `count` distinct TCP ports free on 127.0.0.1 right now, for the servers a test starts of its
/// own (a private PostgreSQL, a private cluster and its bus). Chosen by the kernel rather than
/// fixed, so two suites on one machine (a developer's and CI's) and a busy port never collide.
pub fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port"))
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().expect("a bound address").port())
        .collect()
}

/// Polls `probe` every 100 ms until it answers `Ok`, and fails with `what` and the last `Err` it
/// gave once `limit` has passed. Tests wait for conditions with this, not for a time: the limit is
/// what tells a failure from a machine that is merely loaded, so make it generous.
pub async fn eventually<T, F, Fut>(what: &str, limit: std::time::Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = std::time::Instant::now() + limit;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(last) => assert!(
                std::time::Instant::now() < deadline,
                "{what}: not within {limit:?} (last: {last})"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// `Ok` when `res` has `status`, else an `Err` with its status and body, for [`eventually`].
pub async fn expect_status(res: Response, status: u16) -> Result<Response, String> {
    if res.status() == status {
        return Ok(res);
    }
    let got = res.status();
    Err(format!("{got}: {}", res.text().await.unwrap_or_default()))
}
