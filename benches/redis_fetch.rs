//! The Redis side of a page, without HTTP, on the real cluster (`REDIS_URLS`, as the service reads it).
//!
//! `page_redis_work/<CACHE_FETCH>`: exactly the Redis work of a service hit, through the service's
//! own code: the page look-up (`HGET` + `GET` + `PTTL` on the user's node) then the page's 50 posts
//! as the JSON the response splices, read with each fetch strategy:
//!
//! - `get`: one `GET` per post, one pipeline per node (untagged keys);
//! - `bucket-mget`: one `MGET` per bucket in each node's pipeline (keys tagged with
//!   `CACHE_OBJECT_BUCKETS` buckets);
//! - `mget`: the reference's one cross-slot `MGET`, which the client splits per slot.
//!
//! Compared with a hit through HTTP (`loadgen`), it shows what the service adds on top of Redis.
//! Each is measured one page at a time (latency) and 64 pages at a time (throughput, pages/s).
//! `driver_hop_64_pages/page_redis_work/{same_thread,other_thread}`: the `bucket-mget` work issued
//! from one single-threaded runtime (as an actix worker), the connection driven on that thread or
//! on another runtime's threads (as in the service): what the hop between them costs.
//! Run: `cargo bench --bench redis_fetch` with the stack up (`scripts/stack.sh up`). The keys live
//! under prefixes of their own and are deleted at the end.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures::future::join_all;
use hotfeed::cache::keys::slot;
use hotfeed::cache::{Cache, CacheOptions, CachedPage, Keys, ListingKey};
use hotfeed::config::{CacheFetch, Settings, Switch};
use hotfeed::domain::{PageRequest, Post, PostId, UserId};
use hotfeed::metrics::Metrics;
use hotfeed::tasks::Tasks;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;

/// Posts on a page, as the service's default page size.
const PAGE: usize = 50;
/// Pages in flight at once for the throughput figures (as in the shared notes' measurements).
const CONCURRENT_PAGES: usize = 64;

/// The cluster, filled with one cached page of 50 posts under one fetch strategy's keys.
struct Fixture {
    cache: Cache,
    keys: Keys,
    raw: ClusterConnection,
    listing: ListingKey,
    page: PageRequest,
    post_keys: Vec<String>,
}

impl Fixture {
    async fn new(fetch: CacheFetch, tag: &str) -> Self {
        let settings = settings(fetch, tag);
        let metrics = Arc::new(Metrics::new(10));
        let cache = Cache::connect(&CacheOptions::from(&settings.cache), metrics, &Tasks::new())
            .await
            .expect("valid REDIS_URLS");
        let keys = Keys::of(&CacheOptions::from(&settings.cache));
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
            ids,
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
            "fixture {fetch:?}: {} post keys in {} slots, prefix {}",
            fixture.post_keys.len(),
            slots.len(),
            settings.cache.key_prefix
        );
        fixture
    }

    /// A service hit's Redis work: the page look-up, then the posts as JSON. True when
    /// everything was found.
    async fn page_redis_work(&self) -> bool {
        let lookup = self.cache.lookup_page(self.listing, self.page).await;
        let Some(page) = lookup.page else {
            return false;
        };
        let posts = self.cache.posts_json(&page.ids).await;
        posts.iter().all(Option::is_some)
    }

    async fn clean_up(&self) {
        let mut raw = self.raw.clone();
        let mut keys = self.post_keys.clone();
        keys.push(self.keys.pages(self.listing));
        keys.push(self.keys.generation(self.listing));
        let _: Result<i64, _> = redis::cmd("DEL").arg(&keys).query_async(&mut raw).await;
    }
}

/// The service's settings from the environment (`.env`, `REDIS_URLS`), with `fetch`, the in-process
/// tier off, and a prefix of our own.
fn settings(fetch: CacheFetch, tag: &str) -> Settings {
    let _ = dotenvy::dotenv();
    let mut settings = Settings::from_env().expect("the environment holds valid settings");
    settings.cache.fetch = fetch;
    settings.cache.l1 = Switch::Off;
    settings.cache.key_prefix = format!("bench{}{}{tag}", std::process::id(), name(fetch));
    settings
}

fn name(fetch: CacheFetch) -> &'static str {
    match fetch {
        CacheFetch::Get => "get",
        CacheFetch::BucketMget => "bucket-mget",
        CacheFetch::Mget => "mget",
    }
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

/// The strategies compared, in the order they are reported.
const STRATEGIES: [CacheFetch; 3] = [CacheFetch::Get, CacheFetch::BucketMget, CacheFetch::Mget];

fn benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    let fixtures: Vec<Fixture> = STRATEGIES
        .iter()
        .map(|&fetch| runtime.block_on(Fixture::new(fetch, "")))
        .collect();

    let mut one = c.benchmark_group("one_page_at_a_time");
    one.throughput(Throughput::Elements(1));
    for (fetch, fixture) in STRATEGIES.iter().zip(&fixtures) {
        one.bench_function(BenchmarkId::new("page_redis_work", name(*fetch)), |b| {
            b.to_async(&runtime)
                .iter(|| async { assert!(fixture.page_redis_work().await) });
        });
    }
    one.finish();

    let mut many = c.benchmark_group("64_pages_at_a_time");
    many.throughput(Throughput::Elements(CONCURRENT_PAGES as u64));
    for (fetch, fixture) in STRATEGIES.iter().zip(&fixtures) {
        many.bench_function(BenchmarkId::new("page_redis_work", name(*fetch)), |b| {
            b.to_async(&runtime).iter(|| async {
                let pages =
                    join_all((0..CONCURRENT_PAGES).map(|_| fixture.page_redis_work())).await;
                assert!(pages.into_iter().all(|hit| hit));
            });
        });
    }
    many.finish();

    // The hop between the thread a request runs on and the task that drives the connection: an
    // actix worker is a single-threaded runtime, and the service's connection is driven by a task
    // of the main runtime, on another thread. Both sides here issue their pages from one
    // single-threaded runtime (as a worker does); the connection's driver runs on that same
    // thread, or on the two threads of another runtime.
    let worker = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a single-threaded runtime");
    let same_thread = worker.block_on(Fixture::new(CacheFetch::BucketMget, "same"));
    let other_thread = runtime.block_on(Fixture::new(CacheFetch::BucketMget, "other"));
    let mut hop = c.benchmark_group("driver_hop_64_pages");
    hop.throughput(Throughput::Elements(CONCURRENT_PAGES as u64));
    for (side, fixture) in [
        ("same_thread", &same_thread),
        ("other_thread", &other_thread),
    ] {
        hop.bench_function(BenchmarkId::new("page_redis_work", side), |b| {
            b.to_async(&worker).iter(|| async {
                let pages =
                    join_all((0..CONCURRENT_PAGES).map(|_| fixture.page_redis_work())).await;
                assert!(pages.into_iter().all(|hit| hit));
            });
        });
    }
    hop.finish();

    for fixture in fixtures.iter().chain([&other_thread]) {
        runtime.block_on(fixture.clean_up());
    }
    worker.block_on(same_thread.clean_up());
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
