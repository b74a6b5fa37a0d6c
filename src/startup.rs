//! Builds the application: migrations, pools, cache, HTTP server bound to its listener.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::http::KeepAlive;
use actix_web::middleware::{from_fn, ErrorHandlers};
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::cache::{Cache, CacheOptions, Fetch};
use crate::config::{CacheFetch, CacheMode, CacheSettings, Settings, Switch};
use crate::domain::PageLimits;
use crate::feed::Feed;
use crate::limits::RateLimits;
use crate::metrics::Metrics;
use crate::routes::{
    self, close_when_draining, ensure_json_error, json_error, query_error, AccessLogPolicy,
    AppState, Deadlines, Drain,
};
use crate::stats::Stats;
use crate::store::{self, Store};
use crate::tasks::Tasks;

/// Largest accepted JSON request body. A post of 5000 four-byte characters fits with room to spare.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// How often expired idempotency keys are swept from PostgreSQL.
const IDEMPOTENCY_SWEEP_EVERY: Duration = Duration::from_secs(600);

/// How often the in-process tier's size and the hottest keys reach the metrics.
const CACHE_REPORT_EVERY: Duration = Duration::from_secs(1);

/// A built, bound, not yet running application.
pub struct Application {
    port: u16,
    server: Server,
    feed: Feed,
    /// Every background task, stopped and joined once the server has stopped.
    tasks: Tasks,
    /// How long the server lets in-flight requests finish, and then the tasks end.
    shutdown_timeout: Duration,
    /// Readiness fails and responses close their connections from the stop's start ...
    drain: Arc<Drain>,
    /// ... for this long before the listener closes.
    drain_period: Duration,
    /// A stop asked for in-process, as SIGTERM would ([`Application::terminator`]).
    terminate: CancellationToken,
}

impl Application {
    /// Applies migrations (unless disabled), connects to PostgreSQL and the Redis Cluster and binds
    /// the listener. A Redis Cluster that is down does not stop the build: reads go to PostgreSQL.
    ///
    /// # Errors
    /// Invalid settings, failed migrations, or a port that cannot be bound.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        settings.validate().map_err(anyhow::Error::msg)?;
        if !settings.no_migrate {
            let applied = store::migrate(&settings.database.database_url).await?;
            tracing::info!(applied, "migrations up to date");
        }
        let tasks = Tasks::new();
        let metrics = Arc::new(Metrics::new(settings.metrics_user_label_limit));
        let store = Store::connect_lazy(&settings.database, Arc::clone(&metrics), &tasks)
            .context("invalid DATABASE_URL")?;
        let options = CacheOptions::from(&settings.cache);
        let cache = Cache::connect(&options, Arc::clone(&metrics), &tasks)
            .await
            .context("invalid REDIS_URLS")?;
        let feed = Feed::new(
            store,
            cache,
            Arc::clone(&metrics),
            settings.feed_celebrity_followers,
            &tasks,
        );
        let admin_key = settings.auth.admin_api_key;
        match admin_key {
            Some(key) if key.is_placeholder() => tracing::warn!(
                "ADMIN_API_KEY is the public placeholder of compose.yml: anyone can act as any user; set your own"
            ),
            Some(_) => tracing::info!("admin API key configured"),
            None => tracing::info!("no ADMIN_API_KEY: writes need a user's own API key"),
        }
        let limits = Arc::new(RateLimits::new(&settings.rate_limits, Arc::clone(&metrics)));
        let stats = Stats::new();
        let drain = Arc::new(Drain::default());
        limits.spawn_cleanup(&tasks);
        feed.spawn_idempotency_sweeper(IDEMPOTENCY_SWEEP_EVERY);
        feed.spawn_cache_reporter(CACHE_REPORT_EVERY, options.hot_top_k);
        stats.spawn(&tasks, feed.clone(), Arc::clone(&metrics));
        let state = web::Data::new(AppState {
            feed: feed.clone(),
            metrics,
            page_limits: PageLimits {
                default: settings.page_size_default,
                max: settings.page_size_max,
                offset_max: settings.page_offset_max,
            },
            admin_key,
            limits,
            trust_forwarded_for: settings.rate_limits.trust_forwarded_for,
            stats,
            access_log: AccessLogPolicy {
                which: settings.access_log,
                slow: Duration::from_millis(settings.log_slow_request_ms),
            },
            drain: Arc::clone(&drain),
        });
        let listener = TcpListener::bind((settings.app_host.as_str(), settings.app_port))
            .with_context(|| format!("binding {}:{}", settings.app_host, settings.app_port))?;
        let port = listener.local_addr()?.port();
        let server = serve(&settings, state, listener)?;
        tracing::info!(
            host = %settings.app_host,
            port,
            cache = ?settings.cache.mode,
            "hotfeed listening"
        );
        Ok(Self {
            port,
            server,
            feed,
            tasks,
            shutdown_timeout: settings.shutdown_timeout(),
            drain,
            drain_period: settings.shutdown_drain(),
            terminate: CancellationToken::new(),
        })
    }

    /// The bound port (useful with `APP_PORT=0`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server at once, skipping the drain (in-flight requests still finish); for tests
    /// and embedders that run several servers in one process.
    pub fn stopper(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Cancelling it stops the server exactly as SIGTERM does: the drain, then the graceful stop.
    pub fn terminator(&self) -> CancellationToken {
        self.terminate.clone()
    }

    /// The application's background tasks (to check that none outlives it).
    pub fn tasks(&self) -> Tasks {
        self.tasks.clone()
    }

    /// Serves until SIGINT/SIGTERM (or [`terminator`](Self::terminator), or
    /// [`stopper`](Self::stopper)); drains (readiness 503, `Connection: close`, still serving) for
    /// `SHUTDOWN_DRAIN_SECS`, stops accepting, lets in-flight requests finish, stops and joins
    /// every background task, then closes the pool.
    ///
    /// # Errors
    /// The server failed, or the signal handlers could not be installed.
    pub async fn run_until_stopped(mut self) -> std::io::Result<()> {
        let mut signals = Signals::install()?;
        let outcome = tokio::select! {
            outcome = &mut self.server => outcome,
            () = signals.next(&self.terminate) => self.drain_then_stop(&mut signals).await,
        };
        if tokio::time::timeout(self.shutdown_timeout, self.tasks.shutdown())
            .await
            .is_err()
        {
            tracing::error!(
                running = self.tasks.running(),
                "background tasks still running after the shutdown timeout"
            );
        }
        self.feed.close().await;
        tracing::info!("hotfeed stopped");
        outcome
    }

    /// The drain: readiness fails and responses close their connections while everything is
    /// still served, for the drain period (a second signal cuts it short); then the listener
    /// closes and in-flight requests get the shutdown timeout. The server's own future is polled
    /// throughout: it handles the stop command, and a worker's restart.
    async fn drain_then_stop(&mut self, signals: &mut Signals) -> std::io::Result<()> {
        self.drain.begin();
        if !self.drain_period.is_zero() {
            tracing::info!(
                drain_secs = self.drain_period.as_secs(),
                "stopping: draining (readiness 503, connections closed after their request)"
            );
            let never = CancellationToken::new();
            tokio::select! {
                outcome = &mut self.server => return outcome,
                () = tokio::time::sleep(self.drain_period) => {}
                () = signals.next(&never) => {
                    tracing::warn!("second stop signal: drain cut short");
                }
            }
        }
        tracing::info!("stopping: listener closed, in-flight requests finishing");
        let stop = self.server.handle().stop(true);
        let ((), outcome) = tokio::join!(stop, &mut self.server);
        outcome
    }
}

/// SIGTERM and SIGINT, listened to by the application itself (actix's own handling is off) so
/// that a stop starts with the drain.
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// The next SIGTERM or SIGINT, or `token` cancelled, whichever first.
    async fn next(&mut self, token: &CancellationToken) {
        tokio::select! {
            _ = self.terminate.recv() => tracing::info!("SIGTERM received"),
            _ = self.interrupt.recv() => tracing::info!("SIGINT received"),
            () = token.cancelled() => tracing::info!("stop requested"),
        }
    }
}

/// The HTTP server over `state`, on `listener`, with every route and middleware.
fn serve(
    settings: &Settings,
    state: web::Data<AppState>,
    listener: TcpListener,
) -> std::io::Result<Server> {
    let deadlines = web::Data::new(Deadlines {
        body: settings.http_body_timeout(),
        request: settings.http_request_timeout(),
    });
    let mut server = HttpServer::new(move || {
        // Runs once on each worker thread: its requests' Redis calls stay on it.
        crate::cache::drive_connections_on_this_thread();
        App::new()
            .app_data(state.clone())
            .app_data(deadlines.clone())
            .app_data(
                web::JsonConfig::default()
                    .limit(MAX_BODY_BYTES)
                    .error_handler(json_error),
            )
            .app_data(web::QueryConfig::default().error_handler(query_error))
            .configure(routes::configure)
            .wrap(ErrorHandlers::new().default_handler(ensure_json_error))
            .wrap(from_fn(close_when_draining))
            .wrap(from_fn(routes::observe))
    })
    // The application handles SIGTERM/SIGINT itself (run_until_stopped): a stop drains first.
    .disable_signals()
    .shutdown_timeout(settings.shutdown_timeout().as_secs())
    .client_request_timeout(Duration::from_millis(settings.http_head_timeout_ms))
    .keep_alive(match settings.http_keep_alive_secs {
        0 => KeepAlive::Disabled,
        secs => KeepAlive::Timeout(Duration::from_secs(secs)),
    })
    .max_connections(settings.http_max_connections as usize)
    .listen(listener)?;
    if let Some(workers) = settings.app_workers {
        server = server.workers(workers);
    }
    Ok(server.run())
}

/// The composition root translates the cache's part of the configuration into the plain values
/// the cache is built with, so that `cache` does not import `config`.
impl From<&CacheSettings> for CacheOptions {
    fn from(settings: &CacheSettings) -> Self {
        Self {
            enabled: settings.mode == CacheMode::On,
            redis_urls: settings.redis_urls.clone(),
            redis_ca_cert: settings.redis_ca_cert.clone(),
            redis_timeout: settings.redis_timeout(),
            redis_connect_timeout: settings.redis_connect_timeout(),
            connection_per_worker: settings.redis_connection_per_worker == Switch::On,
            rebuild_after_errors: settings.redis_rebuild_after_errors,
            breaker_after_failures: settings.redis_breaker_after_failures,
            breaker_open: Duration::from_millis(settings.redis_breaker_open_ms),
            list_ttl_secs: settings.list_ttl_secs,
            object_ttl_secs: settings.object_ttl_secs,
            box_cap: settings.feed_box_cap,
            box_ttl_secs: settings.feed_box_ttl_secs,
            key_prefix: settings.key_prefix.clone(),
            fetch: match settings.fetch {
                CacheFetch::Get => Fetch::Get,
                CacheFetch::BucketMget => Fetch::BucketMget,
                CacheFetch::Mget => Fetch::Mget,
            },
            object_buckets: settings.object_buckets,
            early_refresh: Duration::from_millis(settings.early_refresh_ms),
            l1: settings.l1 == Switch::On,
            l1_ttl: settings.l1_ttl(),
            l1_max_bytes: settings.l1_max_bytes,
            l1_admit_reads: settings.l1_admit_reads,
            l1_ping: settings.l1_ping(),
            hot_window: settings.hot_window(),
            hot_top_k: settings.hot_top_k as usize,
        }
    }
}
