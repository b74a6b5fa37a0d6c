use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use datagen::progress::Progress;
use datagen::seed::Interrupted;

use crate::helpers::{datagen, Digest, TestDb, UNTIL};

/// The old data, the sequences and the locks as a load that never happened would leave them.
async fn assert_untouched(db: &TestDb, before: &Digest) {
    let client = db.client().await;
    client
        .batch_execute("SET lock_timeout = '2s'")
        .await
        .expect("set lock_timeout");
    assert_eq!(&db.digest().await, before, "the old rows are back");
    let sequences = client
        .query_one(
            "SELECT (SELECT last_value FROM users_id_seq), (SELECT last_value FROM posts_id_seq)",
            &[],
        )
        .await
        .expect("no lock left behind");
    assert_eq!(
        (sequences.get::<_, i64>(0), sequences.get::<_, i64>(1)),
        (10, 1000),
        "sequences rolled back too"
    );
}

/// A load long enough to be caught in the COPY of `table`: 3,000,000 posts, or 3,000,000 follows
/// (20,000 users following 150 each) after a few posts.
fn long_load(table: &str) -> &'static [&'static str] {
    match table {
        "posts" => &["--posts", "3000000"],
        "follows" => &[
            "--posts",
            "1000",
            "--users",
            "20000",
            "--follows-per-user",
            "150",
        ],
        _ => unreachable!("datagen copies posts and follows"),
    }
}

/// Sends SIGINT to the binary half a second into its COPY of `table`.
async fn ctrl_c_during_the_copy_of(table: &str) {
    // Arrange
    let db = TestDb::new().await;
    db.seed(&["--users", "10", "--posts", "1000"]).await;
    let before = db.digest().await;
    let mut child = datagen()
        .args(["--database-url", &db.url, "--until", UNTIL])
        .args(long_load(table))
        .arg("--no-cache-flush")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let (lines, received) = std::sync::mpsc::channel();
    // Keeps reading to the end: a closed pipe would make the child's next progress line fail.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let started = format!("generating and loading 3000000 {table}");
    tokio::task::spawn_blocking(move || {
        received
            .iter()
            .find(|line| line.contains(&started))
            .expect("the load starts");
    })
    .await
    .expect("reader thread");
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Act
    let interrupted = Instant::now();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(kill.success());
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            interrupted.elapsed() < Duration::from_secs(10),
            "datagen ignored Ctrl-C"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Assert
    assert_eq!(status.code(), Some(130), "{table}");
    assert_untouched(&db, &before).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_during_the_copy_of_posts_leaves_the_old_data() {
    ctrl_c_during_the_copy_of("posts").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_during_the_copy_of_follows_leaves_the_old_data() {
    ctrl_c_during_the_copy_of("follows").await;
}

/// Has the server end the load's session in the middle of its COPY of `table`.
async fn a_failure_during_the_copy_of(table: &str) {
    // Arrange
    let db = TestDb::new().await;
    db.seed(&["--users", "10", "--posts", "1000"]).await;
    let before = db.digest().await;
    let args = db.args(long_load(table));
    let load = tokio::spawn(async move {
        datagen::seed::run(&args, &mut Progress::Hidden, std::future::pending()).await
    });

    // Act
    let admin = db.client().await;
    let started = Instant::now();
    loop {
        let killed = admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = current_database() AND application_name = 'datagen'
                   AND query LIKE 'COPY ' || $1::text || '%'",
                &[&table],
            )
            .await
            .expect("look for the COPY");
        if !killed.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the COPY of {table} never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let outcome = load.await.expect("the load task ends");

    // Assert
    let error = outcome.expect_err("the load failed");
    assert!(!error.is::<Interrupted>());
    assert!(
        format!("{error:#}").contains(&format!("loading {table}")),
        "{error:#}"
    );
    assert_untouched(&db, &before).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failure_during_the_copy_of_posts_leaves_the_old_data() {
    a_failure_during_the_copy_of("posts").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failure_during_the_copy_of_follows_leaves_the_old_data() {
    a_failure_during_the_copy_of("follows").await;
}

#[tokio::test]
async fn an_interrupt_before_the_commit_is_reported_as_such() {
    let db = TestDb::new().await;
    db.seed(&["--users", "10", "--posts", "1000"]).await;
    let before = db.digest().await;

    let error = datagen::seed::run(
        &db.args(&["--posts", "3000000"]),
        &mut Progress::Hidden,
        tokio::time::sleep(Duration::from_millis(300)),
    )
    .await
    .expect_err("interrupted");

    assert!(error.is::<Interrupted>(), "{error:#}");
    assert_untouched(&db, &before).await;
}
