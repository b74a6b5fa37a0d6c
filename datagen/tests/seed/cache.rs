use datagen::report::CacheOutcome;
use hotfeed::cache::Keys;
use hotfeed::domain::{PageRequest, PostId, UserId};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;

use crate::helpers::{datagen, redis_urls, TestDb, UNTIL};

/// A key prefix no other test or deployment uses.
fn unique_prefix() -> String {
    format!("dg{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

async fn cluster() -> ClusterConnection {
    ClusterClient::new(redis_urls())
        .expect("REDIS_URLS parse")
        .get_async_connection()
        .await
        .expect("the Redis Cluster at REDIS_URLS answers (run scripts/stack.sh up)")
}

/// Writes what the service caches for user 1 and posts 1..=200: objects, a pages hash and a
/// generation. Returns the keys.
async fn cache_like_the_service(connection: &mut ClusterConnection, keys: &Keys) -> Vec<String> {
    let user = UserId::from_trusted(1);
    let mut written = vec![keys.user(user), keys.user_generation(user)];
    written.extend((1..=200).map(|id| keys.post(PostId::from_trusted(id))));
    for key in &written {
        let () = redis::cmd("SET")
            .arg(key)
            .arg("{}")
            .arg("EX")
            .arg(300)
            .query_async(connection)
            .await
            .expect("SET");
    }
    let pages = keys.user_pages(user);
    let () = redis::cmd("HSET")
        .arg(&pages)
        .arg(Keys::page_field(PageRequest::new(50, 0)))
        .arg("{\"ids\":[1],\"has_more\":true}")
        .query_async(connection)
        .await
        .expect("HSET");
    written.push(pages);
    written
}

async fn existing(connection: &mut ClusterConnection, keys: &[String]) -> usize {
    let mut found = 0;
    for key in keys {
        let exists: bool = redis::cmd("EXISTS")
            .arg(key)
            .query_async(connection)
            .await
            .expect("EXISTS");
        found += usize::from(exists);
    }
    found
}

#[tokio::test]
async fn a_replace_unlinks_every_key_of_the_prefix_and_no_other() {
    // Arrange
    let db = TestDb::new().await;
    let mut connection = cluster().await;
    let prefix = unique_prefix();
    let ours = cache_like_the_service(&mut connection, &Keys::new(prefix.clone())).await;
    let neighbour = Keys::new(unique_prefix());
    let theirs = cache_like_the_service(&mut connection, &neighbour).await;

    // Act
    let report = db.seed(&["--cache-key-prefix", &prefix]).await;

    // Assert
    let CacheOutcome::Flushed(flushed) = report.cache else {
        panic!("not flushed: {:?}", report.cache);
    };
    assert_eq!(flushed.keys, ours.len() as u64);
    assert!(flushed.masters >= 1);
    assert_eq!(
        existing(&mut connection, &ours).await,
        0,
        "our keys are gone"
    );
    assert_eq!(
        existing(&mut connection, &theirs).await,
        theirs.len(),
        "another prefix is untouched"
    );
    datagen::cache::flush(&redis_urls(), &neighbour)
        .await
        .expect("clean up");
}

#[tokio::test]
async fn an_append_leaves_the_cache_alone() {
    let db = TestDb::new().await;
    let prefix = unique_prefix();
    db.seed(&["--cache-key-prefix", &prefix]).await;
    let mut connection = cluster().await;
    let keys = Keys::new(prefix.clone());
    let cached = cache_like_the_service(&mut connection, &keys).await;

    let report = db
        .seed(&[
            "--cache-key-prefix",
            &prefix,
            "--mode",
            "append",
            "--until",
            "2026-02-01T00:00:00Z",
        ])
        .await;

    assert_eq!(report.cache, CacheOutcome::NotNeeded);
    assert_eq!(existing(&mut connection, &cached).await, cached.len());
    datagen::cache::flush(&redis_urls(), &keys)
        .await
        .expect("clean up");
}

#[tokio::test]
async fn an_unreachable_cache_is_a_loud_warning_after_the_commit() {
    let db = TestDb::new().await;

    let output = datagen()
        .args([
            "--database-url",
            &db.url,
            "--until",
            UNTIL,
            "--users",
            "5",
            "--posts",
            "500",
        ])
        .args(["--cache-key-prefix", &unique_prefix()])
        .env("REDIS_URLS", "redis://127.0.0.1:1")
        .output()
        .expect("the binary runs");

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("WARNING: the data is committed but the cache was not flushed"),
        "{stderr}"
    );
    assert_eq!(db.count("posts").await, 500, "the load itself is committed");
}
