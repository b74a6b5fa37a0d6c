//! TLS as managed services require it, on real servers started here with a self-signed CA: a
//! PostgreSQL that accepts only TLS (`sslmode=verify-full`), and a TLS-only Redis Cluster
//! (`rediss://` seeds, `REDIS_CA_CERT`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hotfeed::config::CacheMode;
use hotfeed::startup::Application;
use serde_json::{json, Value};
use sqlx::{Connection as _, PgConnection};

use crate::helpers::{free_ports, spawn_app_with, test_settings};
use crate::postgres::{run, wait_until, PrivatePostgres};

/// A CA and a certificate for `localhost` and 127.0.0.1 signed by it, made with openssl. It serves
/// as a client certificate too: Redis's cluster bus authenticates its peers with it.
struct Certs {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Certs {
    fn make(dir: &Path, name: &str) -> Self {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).expect("certs dir");
        let path = |file: &str| dir.join(file);
        run(Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", &format!("/CN=hotfeed test CA {name}")])
            .arg("-keyout")
            .arg(path("ca.key"))
            .arg("-out")
            .arg(path("ca.pem")));
        run(Command::new("openssl")
            .args([
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=localhost",
            ])
            .arg("-keyout")
            .arg(path("server.key"))
            .arg("-out")
            .arg(path("server.csr")));
        std::fs::write(
            path("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .expect("extensions");
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
            .arg("-in")
            .arg(path("server.csr"))
            .arg("-CA")
            .arg(path("ca.pem"))
            .arg("-CAkey")
            .arg(path("ca.key"))
            .arg("-extfile")
            .arg(path("ext.cnf"))
            .arg("-out")
            .arg(path("server.pem")));
        Self {
            ca: path("ca.pem"),
            cert: path("server.pem"),
            key: path("server.key"),
        }
    }
}

fn scratch_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hotfeed-tls-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A PostgreSQL server of its own whose pg_hba.conf accepts TCP clients over TLS only.
struct TlsPostgres {
    server: PrivatePostgres,
    certs: Certs,
}

impl TlsPostgres {
    fn start() -> Self {
        let mut certs = None;
        let mut server = PrivatePostgres::init(
            scratch_dir("pg"),
            free_ports(1)[0],
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
            |dir| {
                let made = Certs::make(dir, "ca");
                run(Command::new("chmod").arg("600").arg(&made.key));
                certs = Some(made);
            },
        );
        let certs = certs.expect("prepare made the certificates");
        server.start(&[
            "ssl=on".to_owned(),
            format!("ssl_cert_file={}", certs.cert.display()),
            format!("ssl_key_file={}", certs.key.display()),
        ]);
        Self { server, certs }
    }

    fn url(&self, database: &str, ca: &Path) -> String {
        format!(
            "postgres://postgres@localhost:{}/{database}?sslmode=verify-full&sslrootcert={}",
            self.server.port,
            ca.display()
        )
    }
}

#[tokio::test]
async fn the_service_migrates_and_serves_over_verified_tls_and_refuses_a_foreign_ca() {
    // Arrange: a server that refuses plain TCP, and a database on it.
    let pg = tokio::task::spawn_blocking(TlsPostgres::start)
        .await
        .expect("start the TLS PostgreSQL");
    let mut admin = connect_when_ready(&pg.url("postgres", &pg.certs.ca)).await;
    sqlx::query("CREATE DATABASE hotfeed_tls")
        .execute(&mut admin)
        .await
        .expect("create database");
    let plain = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
        pg.server.port
    );
    assert!(
        PgConnection::connect(&plain).await.is_err(),
        "the server accepts TLS only, so what follows is TLS"
    );
    let (mut settings, _, _) = test_settings();
    settings.database.database_url = pg.url("hotfeed_tls", &pg.certs.ca);
    settings.cache.mode = CacheMode::Off;

    // Act: migrate and serve over TLS, verified against the CA, hostname included.
    let app = Application::build(settings.clone())
        .await
        .expect("migrations and the pool work over sslmode=verify-full");
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::new();
    let created = client
        .post(format!("{base}/api/v1/users"))
        .json(&json!({"username": "tls_user"}))
        .send()
        .await
        .expect("answer");

    // Assert
    assert_eq!(created.status(), 201);
    let user: Value = created.json().await.expect("JSON");
    let read = client
        .get(format!("{base}/api/v1/users/{}", user["id"]))
        .send()
        .await
        .expect("answer");
    assert_eq!(read.status(), 200);
    let mut session = connect_when_ready(&pg.url("hotfeed_tls", &pg.certs.ca)).await;
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&mut session)
            .await
            .expect("pg_stat_ssl");
    assert!(encrypted);

    // A certificate from another CA is refused before anything is sent.
    let foreign = Certs::make(&pg.server.dir, "foreign");
    settings.database.database_url = pg.url("hotfeed_tls", &foreign.ca);
    let refused = match Application::build(settings).await {
        Ok(_) => panic!("a server whose certificate the CA did not sign is trusted"),
        Err(error) => format!("{error:#}"),
    };
    assert!(
        refused.to_lowercase().contains("certificate"),
        "refused for its certificate: {refused}"
    );
}

async fn connect_when_ready(url: &str) -> PgConnection {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match PgConnection::connect(url).await {
            Ok(connection) => return connection,
            Err(error) if Instant::now() < deadline => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("{url}: {error}"),
        }
    }
}

/// Three TLS-only cluster masters (no plain port), cluster bus over TLS too.
struct TlsCluster {
    ports: Vec<u16>,
    nodes: Vec<Child>,
    dir: PathBuf,
    certs: Certs,
}

impl TlsCluster {
    fn start() -> Self {
        let dir = scratch_dir("redis");
        let certs = Certs::make(&dir, "ca");
        // A TLS port and a cluster bus port for each node, both free ones.
        let free = free_ports(6);
        let (ports, buses) = free.split_at(3);
        let ports = ports.to_vec();
        let nodes = ports
            .iter()
            .zip(buses)
            .map(|(port, bus)| {
                let node_dir = dir.join(port.to_string());
                std::fs::create_dir_all(&node_dir).expect("node dir");
                Command::new("redis-server")
                    .args(["--port", "0", "--tls-port", &port.to_string()])
                    .args(["--cluster-port", &bus.to_string()])
                    .args(["--bind", "127.0.0.1", "--tls-cluster", "yes"])
                    .args(["--tls-auth-clients", "no"])
                    .arg("--tls-cert-file")
                    .arg(&certs.cert)
                    .arg("--tls-key-file")
                    .arg(&certs.key)
                    .arg("--tls-ca-cert-file")
                    .arg(&certs.ca)
                    .args([
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                    ])
                    .args([
                        "--cluster-node-timeout",
                        "2000",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ])
                    .arg("--dir")
                    .arg(&node_dir)
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("redis-server is installed (scripts/stack.sh installs it)")
            })
            .collect();
        let cluster = Self {
            ports,
            nodes,
            dir,
            certs,
        };
        let cli = |args: &[&str]| {
            // Bounded: `--cluster create` waits for ever for nodes that cannot meet.
            let mut command = Command::new("timeout");
            command
                .args(["30", "redis-cli", "--tls", "--cacert"])
                .arg(&cluster.certs.ca);
            command.args(args);
            command
        };
        for port in &cluster.ports {
            wait_until("a TLS node answers", || {
                cli(&["-p", &port.to_string(), "ping"])
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("PONG"))
            });
        }
        let mut create = vec!["--cluster".to_owned(), "create".to_owned()];
        create.extend(cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")));
        create.extend(["--cluster-replicas", "0", "--cluster-yes"].map(str::to_owned));
        let create: Vec<&str> = create.iter().map(String::as_str).collect();
        run(&mut cli(&create));
        wait_until("the TLS cluster is ok", || {
            cluster.ports.iter().all(|port| {
                cli(&["-p", &port.to_string(), "cluster", "info"])
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
            })
        });
        cluster
    }

    fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|port| format!("rediss://127.0.0.1:{port}"))
            .collect()
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn the_cache_works_over_a_tls_only_cluster() {
    // Arrange
    let cluster = tokio::task::spawn_blocking(TlsCluster::start)
        .await
        .expect("start the TLS cluster");
    let urls = cluster.urls();
    let ca = cluster.certs.ca.clone();
    let app = spawn_app_with(move |settings| {
        settings.cache.redis_urls = urls;
        settings.cache.redis_ca_cert = Some(ca);
        settings.cache.redis_timeout_ms = 1000;
        // TLS handshakes on a busy two-core machine: this test is about TLS, not latency.
        settings.cache.redis_connect_timeout_ms = 5000;
    })
    .await;
    let user = app.create_user("tls.reader").await;
    app.create_posts(user, 3).await;
    let path = format!("/api/v1/users/{user}/posts");

    // Act
    let first = app.get(&path).await;
    let second = app.get(&path).await;
    let health: Value = app.get("/health").await.json().await.expect("JSON");

    // Assert
    assert_eq!(first.headers()["x-cache"], "MISS");
    assert_eq!(
        second.headers()["x-cache"],
        "HIT",
        "the page was cached over TLS"
    );
    assert_eq!(health["redis"]["status"], "up", "{health}");
    assert_eq!(health["redis"]["masters"].as_array().map(Vec::len), Some(3));
    drop(app);
    drop(cluster);
}
