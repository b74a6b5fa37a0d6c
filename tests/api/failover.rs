//! Fault injection on a private 6-node cluster (the shared one must stay healthy for the other
//! tests): a master hangs, its replica is promoted, and the service keeps answering from PostgreSQL
//! and then returns to cache hits by itself, without a restart.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hotfeed::cache::{BoxKey, ListingKey};
use hotfeed::config::Settings;
use hotfeed::domain::UserId;
use serde_json::Value;

use crate::helpers::{free_ports, owners, spawn_app_with, TestApp};

/// `REDIS_TIMEOUT_MS`'s default, which the suite's settings raise for loaded machines.
pub(crate) const PRODUCTION_REDIS_TIMEOUT_MS: u64 = 100;

/// Six `redis-server` children forming a cluster; killed (and resumed first) when dropped.
pub(crate) struct PrivateCluster {
    ports: Vec<u16>,
    nodes: Vec<Child>,
    dir: PathBuf,
}

impl PrivateCluster {
    pub(crate) fn start() -> Self {
        // Ports and cluster bus ports the kernel says are free: no two runs on one machine collide.
        let free = free_ports(12);
        let (ports, buses) = free.split_at(6);
        let ports = ports.to_vec();
        let dir = std::env::temp_dir().join(format!(
            "hotfeed-failover-{}-{}",
            std::process::id(),
            ports[0]
        ));
        let nodes = ports
            .iter()
            .zip(buses)
            .map(|(port, bus)| {
                let node_dir = dir.join(port.to_string());
                std::fs::create_dir_all(&node_dir).expect("node dir");
                Command::new("redis-server")
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args(["--cluster-port", &bus.to_string()])
                    .args([
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                    ])
                    .args(["--cluster-node-timeout", "2000"])
                    .args(["--cluster-require-full-coverage", "no"])
                    .args(["--cluster-allow-reads-when-down", "yes"])
                    .args(["--save", "", "--appendonly", "no"])
                    .arg("--dir")
                    .arg(&node_dir)
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("redis-server is installed (scripts/stack.sh installs it)")
            })
            .collect();
        let cluster = Self { ports, nodes, dir };
        cluster.wait(|port| cli(port, &["ping"]).contains("PONG"), "nodes answer");
        let mut create = vec!["--cluster".to_owned(), "create".to_owned()];
        create.extend(cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")));
        create.extend(["--cluster-replicas", "1", "--cluster-yes"].map(str::to_owned));
        let created = Command::new("redis-cli")
            .args(&create)
            .stdout(Stdio::null())
            .status()
            .expect("redis-cli");
        assert!(created.success(), "cluster create");
        cluster.wait_healthy();
        cluster
    }

    /// Every node sees `cluster_state:ok` and every replica's link is up.
    fn wait_healthy(&self) {
        self.wait(
            |port| {
                let info = cli(port, &["cluster", "info"]);
                let replication = cli(port, &["info", "replication"]);
                info.contains("cluster_state:ok")
                    && (replication.contains("role:master")
                        || replication.contains("master_link_status:up"))
            },
            "cluster ok and replicas in sync",
        );
    }

    fn wait(&self, ready: impl Fn(u16) -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !self.ports.iter().all(|&p| ready(p)) {
            assert!(Instant::now() < deadline, "timed out waiting: {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub(crate) fn pid_of(&self, port: u16) -> u32 {
        let index = self
            .ports
            .iter()
            .position(|&p| p == port)
            .expect("our port");
        self.nodes[index].id()
    }

    pub(crate) fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = signal(node.id(), "CONT");
            let _ = node.kill();
            let _ = node.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default()
}

pub(crate) fn signal(pid: u32, name: &str) -> bool {
    Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

/// A private cluster and an app on it with the production Redis budget (a hung node costs a
/// read that budget, as the tests' bounds assume), `customize` applied on top.
pub(crate) async fn app_on_private_cluster(
    customize: impl FnOnce(&mut Settings),
) -> (PrivateCluster, TestApp) {
    let cluster = tokio::task::spawn_blocking(PrivateCluster::start)
        .await
        .expect("cluster starts");
    let urls = cluster.urls();
    let app = spawn_app_with(|settings| {
        settings.cache.redis_urls = urls;
        settings.cache.redis_timeout_ms = PRODUCTION_REDIS_TIMEOUT_MS;
        customize(settings);
    })
    .await;
    (cluster, app)
}

#[tokio::test]
async fn a_hung_master_costs_cache_hits_not_answers_and_hits_return_after_promotion() {
    // Arrange: a private cluster, the app on it, a cached page.
    let (cluster, app) = app_on_private_cluster(|_| {}).await;
    let user = app.create_user("failover").await;
    app.create_posts(user, 50).await;
    let path = format!("/api/v1/users/{user}/posts");
    let expected: Value = app.get(&path).await.json().await.expect("JSON");
    assert_eq!(app.get(&path).await.headers()["x-cache"], "HIT");
    let port = master_port_of(&app, app.keys.user_pages(UserId::from_trusted(user))).await;

    // Act: freeze that master (TCP stays open: the worst case, no RST) and keep reading.
    assert!(signal(cluster.pid_of(port), "STOP"), "SIGSTOP the master");
    let frozen_at = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut misses = 0;
    let mut back_to_hit = None;
    while frozen_at.elapsed() < Duration::from_secs(60) {
        let started = Instant::now();
        let res = app.get(&path).await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(
            res.status(),
            200,
            "every read is answered during the failover"
        );
        let cache = res.headers()["x-cache"].to_str().expect("ASCII").to_owned();
        let body: Value = res.json().await.expect("JSON");
        assert_eq!(body, expected, "every answer is complete and correct");
        if cache == "HIT" && misses > 0 {
            back_to_hit = Some(frozen_at.elapsed());
            break;
        }
        if cache != "HIT" {
            misses += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Assert
    assert!(
        misses > 0,
        "the frozen master's keys were missed while it hung"
    );
    let recovered =
        back_to_hit.expect("cache hits resumed after the replica's promotion, without a restart");
    println!("failover: {misses} reads served without the frozen shard, hits back after {recovered:?}, slowest read {slowest:?}");
    // A read that waited on the hung node would take until the promotion (about 4 s, node
    // timeout 2 s) or forever; a read that spends its budgets (100 ms each) and falls back takes a
    // fraction of a second, plus whatever a loaded machine adds.
    assert!(
        slowest < Duration::from_secs(3),
        "no read waited on the hung node beyond the Redis budget: slowest {slowest:?}"
    );
    let metrics = app.metrics().await;
    assert!(metrics.get("redis_reconnects_total", &[]).unwrap_or(0.0) >= 1.0);
}

/// A post fanned out while the master holding a follower's inbox hangs, and its replica is then
/// promoted: the inbox may have missed the post, so it must not come back without it. Pass: every
/// read answers 200 with the post from the moment it was acknowledged, and once reads are served
/// from the cache again (HIT), the post is still there (within 60 s of the freeze, a bound for a
/// loaded machine; the promotion takes about 4 s).
#[tokio::test]
async fn a_fan_out_that_meets_a_frozen_master_never_loses_the_post_from_that_feed() {
    // Arrange: a private cluster (its own ports), a reader whose inbox is built.
    let (cluster, app) = app_on_private_cluster(|_| {}).await;
    let reader = app.create_user("frozen.reader").await;
    let author = app.create_user("frozen.author").await;
    let follow = app
        .client
        .put(app.url(&format!("/api/v1/users/{reader}/following/{author}")))
        .send()
        .await
        .expect("answer");
    assert_eq!(follow.status(), 204);
    app.create_posts(author, 2).await;
    let path = format!("/api/v1/users/{reader}/feed?limit=5");
    let first_hit = read_until(&app, &path, Duration::from_secs(60), |x_cache, _| {
        x_cache == "HIT"
    })
    .await;
    assert!(first_hit.is_some(), "the inbox was built");
    let [inbox, _, _] = app
        .keys
        .feed_box(BoxKey::Inbox(UserId::from_trusted(reader)));
    let port = master_port_of(&app, inbox).await;

    // Act: freeze the inbox's master, post, and keep reading through the replica's promotion.
    assert!(signal(cluster.pid_of(port), "STOP"), "SIGSTOP the master");
    let frozen_at = Instant::now();
    let post = app.create_posts(author, 1).await[0];
    let served_from_cache = read_until(&app, &path, Duration::from_secs(60), |x_cache, ids| {
        assert_eq!(
            ids.first(),
            Some(&post),
            "every answer shows the acknowledged post"
        );
        x_cache == "HIT"
    })
    .await;

    // Assert
    let recovered = served_from_cache.expect("reads came back to the cache within 60 s");
    println!(
        "fan-out to a frozen master: cache hits with the post {:?} after the freeze",
        recovered - frozen_at
    );
    let metrics = app.metrics().await;
    assert!(metrics.get("feed_fanout_repairs_total", &[]).unwrap_or(0.0) >= 1.0);
}

/// The port of the master that owns `key`.
pub(crate) async fn master_port_of(app: &crate::helpers::TestApp, key: String) -> u16 {
    let mut redis = app.redis().await;
    let owner = owners(&mut redis, &[key]).await.remove(0);
    owner
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("host:port")
}

/// Reads `path` every 50 ms until `done(x_cache, ids)` or `limit`; when it was done.
async fn read_until(
    app: &crate::helpers::TestApp,
    path: &str,
    limit: Duration,
    mut done: impl FnMut(&str, &[i64]) -> bool,
) -> Option<Instant> {
    let started = Instant::now();
    while started.elapsed() < limit {
        let res = app.get(path).await;
        assert_eq!(res.status(), 200, "every read is answered");
        let x_cache = res.headers()["x-cache"].to_str().expect("ASCII").to_owned();
        let body: Value = res.json().await.expect("JSON");
        if done(&x_cache, &crate::helpers::page_ids(&body)) {
            return Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// A master that refuses writes (`maxmemory` reached under `noeviction`) rejects a `MULTI` whole;
/// the invalidation must still drop the author's pages, so the acknowledged post shows at once.
#[tokio::test]
async fn a_write_on_a_node_that_refuses_writes_still_drops_the_authors_pages() {
    // Arrange: a private cluster, a cached page, and its master out of memory.
    let (_cluster, app) = app_on_private_cluster(|settings| {
        // This test is about a refusing node, not a slow one: no timeouts on a busy machine.
        settings.cache.redis_timeout_ms = 2_000;
    })
    .await;
    let author = app.create_user("oom.author").await;
    app.create_posts(author, 3).await;
    let path = format!("/api/v1/users/{author}/posts");
    app.get(&path).await;
    let cached = app.get(&path).await;
    assert_eq!(cached.headers()["x-cache"], "HIT");
    let pages = app
        .keys
        .pages(ListingKey::UserPosts(UserId::from_trusted(author)));
    let port = master_port_of(&app, pages).await;
    cli(port, &["config", "set", "maxmemory-policy", "noeviction"]);
    cli(port, &["config", "set", "maxmemory", "1"]);

    // Act
    let created = app
        .post_json(
            "/api/v1/posts",
            &serde_json::json!({"user_id": author, "content": "written while the node is full"}),
        )
        .await;
    let read = app.get(&path).await;
    cli(port, &["config", "set", "maxmemory", "0"]);

    // Assert
    assert_eq!(created.status(), 201);
    let post: Value = created.json().await.expect("JSON post");
    let page: Value = read.json().await.expect("JSON page");
    assert_eq!(
        crate::helpers::page_ids(&page).first(),
        post["id"].as_i64().as_ref(),
        "the acknowledged post is on the author's next page read"
    );
    let failures = app
        .metrics()
        .await
        .get("cache_invalidation_failures_total", &[]);
    assert_eq!(
        failures,
        Some(1.0),
        "the refused generation write is said, not swallowed"
    );
}

#[tokio::test]
async fn a_slot_moved_while_nobody_reads_it_is_followed_within_seconds() {
    // Arrange: a private cluster and a service that has learned its slot map.
    let (cluster, app) = app_on_private_cluster(|_| {}).await;
    let owner_of = |stats: &Value, slot: u64| -> Option<String> {
        stats["nodes"].as_array()?.iter().find_map(|node| {
            let owns = node["slots"].as_array()?.iter().any(|range| {
                (range[0].as_u64().unwrap_or(u64::MAX)..=range[1].as_u64().unwrap_or(0))
                    .contains(&slot)
            });
            (node["role"] == "master" && owns)
                .then(|| node["node"].as_str().unwrap_or("").to_owned())
        })
    };
    let slot = 100;
    let before = wait_for_stats(&app, |stats| owner_of(stats, slot).is_some()).await;
    let from = owner_of(&before, slot).expect("slot 100 has an owner");
    let from_port: u16 = from
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port");
    let masters: Vec<u16> = cluster
        .ports
        .iter()
        .copied()
        .filter(|&p| cli(p, &["role"]).starts_with("master"))
        .collect();
    let to_port = *masters
        .iter()
        .find(|&&p| p != from_port)
        .expect("another master");
    let to_id = cli(to_port, &["cluster", "myid"]).trim().to_owned();

    // Act: move the empty slot to another master, and read nothing.
    for &port in &masters {
        cli(
            port,
            &["cluster", "setslot", &slot.to_string(), "node", &to_id],
        );
    }

    // Assert: the service's map (shown by its live view, used by its routing) follows.
    let started = Instant::now();
    let after = wait_for_stats(&app, |stats| {
        owner_of(stats, slot).as_deref() == Some(&format!("127.0.0.1:{to_port}"))
    })
    .await;
    // Without the once-a-second check the map would never follow (nothing reads the slot); the
    // bound leaves a loaded machine room.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "followed after {:?}: {}",
        started.elapsed(),
        after["nodes"]
    );
}

/// The first live-view snapshot that `accept` takes, polled for up to 60 s.
pub(crate) async fn wait_for_stats(
    app: &crate::helpers::TestApp,
    accept: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats: Value = app
            .get("/api/v1/admin/stats")
            .await
            .json()
            .await
            .expect("JSON stats");
        if accept(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "no snapshot accepted: {stats}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
