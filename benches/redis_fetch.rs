//! The Redis side of a page, without HTTP, on the real cluster (`REDIS_URLS`, as the service reads it).
//!
//! - `page_redis_work`: exactly the Redis work of a service hit, through the service's own code: the
//!   page look-up (`HGET` + `GET` on the user's node) then the 50 post `GET`s grouped by node.
//!   Compared with a hit through HTTP (`loadgen`), it shows what the service adds on top of Redis.
//! - `fetch_50/*`: three ways to read the same 50 keys spread over the shards: one pipeline per node
//!   (the service's `ClusterCache::get_many`), one cross-slot `MGET` (the client splits it per slot),
//!   and one `GET` per key sent concurrently.
//!
//! Each is measured one page at a time (latency) and 64 pages at a time (throughput, pages/s).
//! Run: `cargo bench --bench redis_fetch` with the stack up (`scripts/stack.sh up`). The keys live
//! under a prefix of their own and are deleted at the end.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures::future::join_all;
use hotfeed::cache::keys::slot;
use hotfeed::cache::{Cache, CachedPage, Keys, ListingKey};
use hotfeed::config::Settings;
use hotfeed::domain::{PageRequest, Post, PostId, UserId};
use hotfeed::metrics::Metrics;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::AsyncCommands as _;

/// Posts on a page, as the service's default page size.
const PAGE: usize = 50;
/// Pages in flight at once for the throughput figures (as in the shared notes' measurements).
const CONCURRENT_PAGES: usize = 64;

/// The cluster, filled with one cached page of 50 posts.
struct Fixture {
    cache: Cache,
    keys: Keys,
    raw: ClusterConnection,
    listing: ListingKey,
    page: PageRequest,
    ids: Vec<PostId>,
    post_keys: Vec<String>,
}

impl Fixture {
    async fn new() -> Self {
        let settings = settings();
        let metrics = Arc::new(Metrics::new(10));
        let cache = Cache::connect(&settings.cache, metrics)
            .await
            .expect("valid REDIS_URLS");
        let keys = Keys::new(settings.cache.key_prefix.clone());
        let raw = ClusterClient::new(settings.cache.redis_urls.clone())
            .expect("valid REDIS_URLS")
            .get_async_connection()
            .await
            .expect("the Redis Cluster answers (scripts/stack.sh up)");

        let user = UserId::from_trusted(1);
        let listing = ListingKey::UserPosts(user);
        let page = PageRequest::new(PAGE as u32, 0);
        let ids: Vec<PostId> = (1..=PAGE as i64)
            .rev()
            .map(|id| PostId::from_trusted(1_999_950 + id))
            .collect();
        let post_keys: Vec<String> = ids.iter().map(|&id| keys.post(id)).collect();
        let posts: Vec<Post> = ids.iter().map(|&id| post(id, user)).collect();
        let objects: Vec<&Post> = posts.iter().collect();
        cache.fill(&objects).await;
        let cached = CachedPage {
            ids: ids.clone(),
            has_more: true,
        };
        let generation = cache
            .lookup_page(listing, page)
            .await
            .generation
            .expect("the cluster answers");
        cache.store_page(listing, page, &generation, &cached).await;
        let fixture = Self {
            cache,
            keys,
            raw,
            listing,
            page,
            ids,
            post_keys,
        };
        assert!(
            fixture.page_redis_work().await,
            "the page and its 50 posts are cached (is the cluster healthy?)"
        );
        let slots: std::collections::BTreeSet<u16> = fixture
            .post_keys
            .iter()
            .map(|key| slot(key.as_bytes()))
            .collect();
        eprintln!(
            "fixture: {} post keys in {} slots, prefix {}",
            fixture.post_keys.len(),
            slots.len(),
            settings.cache.key_prefix
        );
        fixture
    }

    /// A service hit's Redis work: the page look-up, then the posts grouped by node. True when
    /// everything was found.
    async fn page_redis_work(&self) -> bool {
        let lookup = self.cache.lookup_page(self.listing, self.page).await;
        let Some(page) = lookup.page else {
            return false;
        };
        let values = self.cache.objects::<Post>(&page.ids).await;
        values.iter().all(Option::is_some)
    }

    async fn node_pipelines(&self) -> usize {
        let values = self.cache.objects::<Post>(&self.ids).await;
        values.iter().flatten().count()
    }

    async fn cross_slot_mget(&self) -> usize {
        let mut raw = self.raw.clone();
        let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(&self.post_keys)
            .query_async(&mut raw)
            .await
            .expect("MGET on a healthy cluster");
        values
            .iter()
            .flatten()
            .filter_map(|raw| decode(raw))
            .count()
    }

    async fn get_per_key(&self) -> usize {
        let gets = self.post_keys.iter().map(|key| {
            let mut raw = self.raw.clone();
            async move {
                raw.get::<_, Option<Vec<u8>>>(key)
                    .await
                    .expect("GET on a healthy cluster")
            }
        });
        join_all(gets)
            .await
            .iter()
            .flatten()
            .filter_map(|raw| decode(raw))
            .count()
    }

    async fn clean_up(&self) {
        let mut raw = self.raw.clone();
        let mut keys = self.post_keys.clone();
        keys.push(self.keys.pages(self.listing));
        keys.push(self.keys.generation(self.listing));
        let _: Result<i64, _> = redis::cmd("DEL").arg(&keys).query_async(&mut raw).await;
    }
}

/// The service's settings from the environment (`.env`, `REDIS_URLS`), with a prefix of our own.
fn settings() -> Settings {
    let _ = dotenvy::dotenv();
    let mut settings = Settings::from_env().expect("the environment holds valid settings");
    settings.cache.key_prefix = format!("bench{}", std::process::id());
    settings
}

/// Decodes a cached post, as the service does on every hit (all three strategies pay it).
fn decode(raw: &[u8]) -> Option<Post> {
    serde_json::from_slice(raw).ok()
}

/// A post shaped like datagen's, about the same size.
fn post(id: PostId, user: UserId) -> Post {
    serde_json::from_value(post_json(id, user)).expect("the fixture is a post")
}

fn post_json(id: PostId, user: UserId) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "user_id": user,
        "content": format!(
            "This is post content {id} generated by datagen. UserId is {user}. Random data: {}",
            "x".repeat(120)
        ),
        "created_at": "2026-11-01T12:00:00.000000Z",
        "updated_at": "2026-11-01T12:00:00.000000Z",
    })
}

fn benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    let fixture = runtime.block_on(Fixture::new());

    let mut one = c.benchmark_group("one_page_at_a_time");
    one.throughput(Throughput::Elements(1));
    one.bench_function("page_redis_work", |b| {
        b.to_async(&runtime)
            .iter(|| async { assert!(fixture.page_redis_work().await) });
    });
    for name in STRATEGIES {
        one.bench_function(BenchmarkId::new("fetch_50", name), |b| {
            b.to_async(&runtime)
                .iter(|| async { assert_eq!(strategy(&fixture, name).await, PAGE) });
        });
    }
    one.finish();

    let mut many = c.benchmark_group("64_pages_at_a_time");
    many.throughput(Throughput::Elements(CONCURRENT_PAGES as u64));
    many.bench_function("page_redis_work", |b| {
        b.to_async(&runtime).iter(|| async {
            let pages = join_all((0..CONCURRENT_PAGES).map(|_| fixture.page_redis_work())).await;
            assert!(pages.into_iter().all(|hit| hit));
        });
    });
    for name in STRATEGIES {
        many.bench_function(BenchmarkId::new("fetch_50", name), |b| {
            b.to_async(&runtime).iter(|| async {
                let found = join_all((0..CONCURRENT_PAGES).map(|_| strategy(&fixture, name))).await;
                assert!(found.into_iter().all(|n| n == PAGE));
            });
        });
    }
    many.finish();

    runtime.block_on(fixture.clean_up());
}

/// The fetch strategies compared, by name.
const STRATEGIES: [&str; 3] = ["node_pipelines", "cross_slot_mget", "get_per_key"];

async fn strategy(fixture: &Fixture, name: &str) -> usize {
    match name {
        "node_pipelines" => fixture.node_pipelines().await,
        "cross_slot_mget" => fixture.cross_slot_mget().await,
        "get_per_key" => fixture.get_per_key().await,
        other => unreachable!("unknown strategy {other}"),
    }
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
}

criterion_group! {
    name = redis_fetch;
    config = config();
    targets = benches
}
criterion_main!(redis_fetch);
