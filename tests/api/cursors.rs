//! Keyset cursors on a user's posts: walks, the Link header, caching, bad cursors, and the walk
//! property under concurrent inserts.

use std::collections::HashSet;

use proptest::prelude::*;
use reqwest::header::LINK;
use serde_json::Value;
use sqlx::Connection as _;

use crate::helpers::{case_runtime, error_code, page_ids, spawn_app, TestApp};

/// One page as a client sees it.
struct Seen {
    ids: Vec<i64>,
    next_cursor: Option<String>,
    x_cache: String,
}

async fn fetch(app: &TestApp, path: &str) -> Seen {
    let res = app.get(path).await;
    assert_eq!(res.status(), 200, "{path}");
    let link = res
        .headers()
        .get(LINK)
        .map(|v| v.to_str().expect("ASCII").to_owned());
    let x_cache = res.headers()["x-cache"].to_str().expect("ASCII").to_owned();
    let body: Value = res.json().await.expect("JSON page");
    let next_cursor = body["next_cursor"].as_str().map(str::to_owned);
    assert_eq!(
        next_cursor.is_some(),
        body["has_more"] == true,
        "next_cursor is null exactly on the last page: {body}"
    );
    match &next_cursor {
        Some(cursor) => {
            let link = link.unwrap_or_else(|| panic!("{path}: a next page has a Link header"));
            assert!(
                link.ends_with(&format!("&cursor={cursor}>; rel=\"next\"")),
                "{link}"
            );
        }
        None => assert!(link.is_none(), "{path}: no Link on the last page"),
    }
    Seen {
        ids: page_ids(&body),
        next_cursor,
        x_cache,
    }
}

/// Follows `next_cursor` from the first page to the last; every page's ids and `X-Cache`.
async fn walk(app: &TestApp, user: i64, limit: u32, max_pages: usize) -> (Vec<i64>, Vec<String>) {
    let base = format!("/api/v1/users/{user}/posts?limit={limit}");
    let mut path = base.clone();
    let (mut ids, mut outcomes) = (Vec::new(), Vec::new());
    for _ in 0..max_pages {
        let page = fetch(app, &path).await;
        ids.extend(page.ids);
        outcomes.push(page.x_cache);
        match page.next_cursor {
            Some(cursor) => path = format!("{base}&cursor={cursor}"),
            None => return (ids, outcomes),
        }
    }
    panic!("the walk did not end within {max_pages} pages");
}

/// The user's post ids in PostgreSQL's newest-first order.
async fn ids_in_db(app: &TestApp, user: i64) -> Vec<i64> {
    let mut db = app.db().await;
    sqlx::query_scalar("SELECT id FROM posts WHERE user_id = $1 ORDER BY created_at DESC, id DESC")
        .bind(user)
        .fetch_all(&mut db)
        .await
        .expect("select ids")
}

/// Inserts `count` posts in one statement: they share one `created_at` (one transaction's now()).
async fn insert_batch(app: &TestApp, user: i64, count: i64) {
    let mut db = app.db().await;
    sqlx::query(
        "INSERT INTO posts (user_id, content) SELECT $1, 'batch ' || g FROM generate_series(1, $2) g",
    )
    .bind(user)
    .bind(count)
    .execute(&mut db)
    .await
    .expect("insert a batch");
    db.close().await.expect("close");
}

#[tokio::test]
async fn a_cursor_walk_reads_every_post_once_newest_first_and_then_from_the_cache() {
    // Arrange: 23 posts, 10 of them with one created_at.
    let app = spawn_app().await;
    let user = app.create_user("walker").await;
    app.create_posts(user, 13).await;
    insert_batch(&app, user, 10).await;
    let expected = ids_in_db(&app, user).await;

    // Act
    let (cold, cold_outcomes) = walk(&app, user, 5, 10).await;
    let (warm, warm_outcomes) = walk(&app, user, 5, 10).await;

    // Assert
    assert_eq!(cold, expected, "PostgreSQL's order, each post once");
    assert_eq!(warm, expected, "the cached walk is the same walk");
    assert_eq!(cold_outcomes, vec!["MISS"; 5]);
    assert_eq!(warm_outcomes, vec!["HIT"; 5], "cursor pages are cached");
}

#[tokio::test]
async fn an_offset_page_hands_over_to_cursors() {
    let app = spawn_app().await;
    let user = app.create_user("handover").await;
    app.create_posts(user, 12).await;
    let expected = ids_in_db(&app, user).await;

    let first = fetch(
        &app,
        &format!("/api/v1/users/{user}/posts?limit=4&offset=2"),
    )
    .await;
    let cursor = first.next_cursor.expect("older posts exist");
    let rest = fetch(
        &app,
        &format!("/api/v1/users/{user}/posts?limit=100&cursor={cursor}"),
    )
    .await;

    assert_eq!(first.ids, expected[2..6]);
    assert_eq!(
        rest.ids,
        expected[6..],
        "the cursor continues where the offset page ended"
    );
    assert_eq!(rest.next_cursor, None);
}

#[tokio::test]
async fn a_new_post_invalidates_cached_cursor_pages() {
    let app = spawn_app().await;
    let user = app.create_user("fresh.cursor").await;
    app.create_posts(user, 6).await;
    let first = fetch(&app, &format!("/api/v1/users/{user}/posts?limit=3")).await;
    let second_path = format!(
        "/api/v1/users/{user}/posts?limit=3&cursor={}",
        first.next_cursor.expect("a second page")
    );
    fetch(&app, &second_path).await;
    assert_eq!(fetch(&app, &second_path).await.x_cache, "HIT");

    app.create_posts(user, 1).await;

    assert_eq!(
        fetch(&app, &second_path).await.x_cache,
        "MISS",
        "the write bumped the generation of every page of the listing"
    );
}

#[tokio::test]
async fn an_edited_cursor_is_a_400_not_another_page() {
    let app = spawn_app().await;
    let user = app.create_user("tamper").await;
    app.create_posts(user, 3).await;
    let cursor = fetch(&app, &format!("/api/v1/users/{user}/posts?limit=1"))
        .await
        .next_cursor
        .expect("a next page");

    let mut edited: Vec<char> = cursor.chars().collect();
    edited[4] = if edited[4] == 'x' { 'y' } else { 'x' };
    let edited: String = edited.into_iter().collect();
    for bad in [
        edited.as_str(),
        &cursor[..cursor.len() - 2],
        &format!("{cursor}AA"),
    ] {
        let res = app
            .get(&format!("/api/v1/users/{user}/posts?cursor={bad}"))
            .await;
        assert_eq!(res.status(), 400, "{bad}");
        assert_eq!(error_code(res).await, "invalid_cursor", "{bad}");
    }
}

/// The property of the issue, on the real stack: walking page by page while other tasks insert
/// yields every post that existed when the walk started exactly once, in PostgreSQL's order; and
/// the walk served from the cache equals the walk served with the cache off.
fn walk_is_exact_under_concurrent_inserts(
    singles: usize,
    batch: i64,
    limit: u32,
    concurrent: usize,
) -> Result<(), TestCaseError> {
    case_runtime().block_on(async {
        // Arrange
        let app = spawn_app().await;
        let user = app.create_user("prop.walker").await;
        app.create_posts(user, singles).await;
        insert_batch(&app, user, batch).await;
        let existing = ids_in_db(&app, user).await;
        let max_pages = (existing.len() + concurrent) / limit as usize + 3;

        // Act: walk while another task inserts.
        let writer = async {
            let mut inserted = Vec::new();
            for n in 0..concurrent {
                inserted.extend(app.create_posts(user, 1).await);
                if n % 2 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            inserted
        };
        let ((walked, _), inserted) = tokio::join!(walk(&app, user, limit, max_pages), writer);

        // Assert: no duplicates, nothing foreign, and every existing post once in order.
        let distinct: HashSet<i64> = walked.iter().copied().collect();
        prop_assert_eq!(distinct.len(), walked.len(), "no post twice: {:?}", walked);
        let known: HashSet<i64> = existing.iter().chain(&inserted).copied().collect();
        prop_assert!(walked.iter().all(|id| known.contains(id)));
        let old: HashSet<i64> = existing.iter().copied().collect();
        let of_existing: Vec<i64> = walked
            .iter()
            .copied()
            .filter(|id| old.contains(id))
            .collect();
        prop_assert_eq!(&of_existing, &existing);

        // And the cached walk equals the uncached one, on the data as it now is.
        let now = ids_in_db(&app, user).await;
        let max_pages = now.len() / limit as usize + 3;
        let (cached, _) = walk(&app, user, limit, max_pages).await;
        let (cached_again, outcomes) = walk(&app, user, limit, max_pages).await;
        let uncached_app = app
            .sibling(|settings| settings.cache.mode = hotfeed::config::CacheMode::Off)
            .await;
        let (uncached, bypass) = walk(&uncached_app, user, limit, max_pages).await;
        prop_assert!(outcomes.iter().all(|o| o == "HIT"), "{:?}", outcomes);
        prop_assert!(bypass.iter().all(|o| o == "BYPASS"), "{:?}", bypass);
        prop_assert_eq!(&cached, &now);
        prop_assert_eq!(&cached_again, &now);
        prop_assert_eq!(&uncached, &now);
        drop(uncached_app);
        Ok(())
    })
}

proptest! {
    // Each case builds a database and walks it over HTTP: few cases, each a full scenario.
    #![proptest_config(ProptestConfig { cases: 6, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn cursor_walks_are_exact_under_concurrent_inserts(
        singles in 0usize..25,
        batch in 0i64..30,
        limit in 1u32..12,
        concurrent in 0usize..15,
    ) {
        walk_is_exact_under_concurrent_inserts(singles, batch, limit, concurrent)?;
    }
}
