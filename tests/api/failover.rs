//! Fault injection on a private 6-node cluster (the shared one must stay healthy for the other
//! tests): a master hangs, its replica is promoted, and the service keeps answering from PostgreSQL
//! and then returns to cache hits by itself, without a restart.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hotfeed::domain::UserId;
use serde_json::Value;

use crate::helpers::{owners, spawn_app_with};

/// Six `redis-server` children forming a cluster; killed (and resumed first) when dropped.
struct PrivateCluster {
    ports: Vec<u16>,
    nodes: Vec<Child>,
    dir: PathBuf,
}

impl PrivateCluster {
    fn start(base_port: u16) -> Self {
        let dir = std::env::temp_dir().join(format!("hotfeed-failover-{}", std::process::id()));
        let ports: Vec<u16> = (base_port..base_port + 6).collect();
        let nodes = ports
            .iter()
            .map(|port| {
                let node_dir = dir.join(port.to_string());
                std::fs::create_dir_all(&node_dir).expect("node dir");
                Command::new("redis-server")
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
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
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.ports.iter().all(|&p| ready(p)) {
            assert!(Instant::now() < deadline, "timed out waiting: {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn pid_of(&self, port: u16) -> u32 {
        let index = self
            .ports
            .iter()
            .position(|&p| p == port)
            .expect("our port");
        self.nodes[index].id()
    }

    fn urls(&self) -> Vec<String> {
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

fn signal(pid: u32, name: &str) -> bool {
    Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test]
async fn a_hung_master_costs_cache_hits_not_answers_and_hits_return_after_promotion() {
    // Arrange: a private cluster, the app on it, a cached page.
    let base_port = std::env::var("TEST_FAILOVER_BASE_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(7400);
    let cluster = tokio::task::spawn_blocking(move || PrivateCluster::start(base_port))
        .await
        .expect("cluster starts");
    let urls = cluster.urls();
    let app = spawn_app_with(|settings| settings.cache.redis_urls = urls).await;
    let user = app.create_user("failover").await;
    app.create_posts(user, 50).await;
    let path = format!("/api/v1/users/{user}/posts");
    let expected: Value = app.get(&path).await.json().await.expect("JSON");
    assert_eq!(app.get(&path).await.headers()["x-cache"], "HIT");
    let mut redis = app.redis().await;
    let list_owner = owners(
        &mut redis,
        &[app.keys.user_pages(UserId::from_trusted(user))],
    )
    .await
    .remove(0);
    let port: u16 = list_owner
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");

    // Act: freeze that master (TCP stays open: the worst case, no RST) and keep reading.
    assert!(signal(cluster.pid_of(port), "STOP"), "SIGSTOP the master");
    let frozen_at = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut misses = 0;
    let mut back_to_hit = None;
    while frozen_at.elapsed() < Duration::from_secs(25) {
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
    assert!(
        slowest < Duration::from_secs(1),
        "no read waited on the hung node beyond the Redis budget: slowest {slowest:?}"
    );
    let metrics = app.metrics().await;
    assert!(metrics.get("redis_reconnects_total", &[]).unwrap_or(0.0) >= 1.0);
}
