use crate::helpers::TestDb;

#[tokio::test]
async fn follow_counts_equal_the_follow_rows_and_the_graph_is_simple() {
    // Arrange
    let db = TestDb::new().await;

    // Act
    let report = db
        .seed(&[
            "--users",
            "200",
            "--posts",
            "1000",
            "--follows-per-user",
            "20",
        ])
        .await;

    // Assert
    assert_eq!(db.count("follows").await, 200 * 20);
    assert_eq!(db.count_mismatches().await, 0, "counts equal the rows");
    let row = db
        .client()
        .await
        .query_one(
            "SELECT count(*) FILTER (WHERE follower_id = followee_id),
                    count(*) - count(DISTINCT (follower_id, followee_id)),
                    (SELECT min(following_count) FROM users),
                    (SELECT max(following_count) FROM users),
                    (SELECT count(*) FROM follows f JOIN users u ON u.id = f.follower_id
                     JOIN users v ON v.id = f.followee_id
                     WHERE f.created_at < u.created_at OR f.created_at < v.created_at
                        OR f.created_at >= (SELECT min(created_at) FROM posts))
             FROM follows",
            &[],
        )
        .await
        .expect("graph checks");
    assert_eq!(row.get::<_, i64>(0), 0, "nobody follows themselves");
    assert_eq!(row.get::<_, i64>(1), 0, "no follow twice");
    let (least, most) = (row.get::<_, i64>(2), row.get::<_, i64>(3));
    assert!(
        (10..=30).contains(&least) && (10..=30).contains(&most) && least < most,
        "each user follows 20 ± 10, not all the same: {least}..{most}"
    );
    assert_eq!(
        row.get::<_, i64>(4),
        0,
        "a follow is younger than both accounts and older than the first post"
    );
    let top = &report.followed.top[0];
    let followers: i64 = db
        .client()
        .await
        .query_one(
            "SELECT followers_count FROM users WHERE id = $1",
            &[&top.id],
        )
        .await
        .expect("the top account")
        .get(0);
    assert_eq!(
        followers as u64, top.followers,
        "the summary's most-followed account"
    );
}

#[tokio::test]
async fn a_few_accounts_are_followed_by_most_and_most_by_few() {
    // With 1,000 users following 10 each, rank 1 is drawn with probability 1/H(1000, s) per draw.
    let cases = [("1.0", 500, 10), ("2", 900, 5), ("0.5", 50, 5)];
    for (exponent, top_at_least, times_the_median) in cases {
        let db = TestDb::new().await;
        let report = db
            .seed(&[
                "--users",
                "1000",
                "--posts",
                "1000",
                "--follows-per-user",
                "10",
                "--follow-exponent",
                exponent,
            ])
            .await;

        let row = db
            .client()
            .await
            .query_one(
                "SELECT (array_agg(id ORDER BY followers_count DESC, id))[1],
                        max(followers_count),
                        percentile_disc(0.5) WITHIN GROUP (ORDER BY followers_count)
                 FROM users",
                &[],
            )
            .await
            .expect("followers per user");
        let (hottest, top, median) = (
            row.get::<_, i64>(0),
            row.get::<_, i64>(1),
            row.get::<_, i64>(2),
        );
        assert_eq!(
            hottest, 1,
            "exponent {exponent}: user 1 is the most followed"
        );
        assert!(
            top >= top_at_least,
            "exponent {exponent}: user 1 has {top} followers"
        );
        assert!(
            top >= times_the_median * median.max(1),
            "exponent {exponent}: {top} followers against a median of {median}"
        );
        assert_eq!(report.followed.median, median as u64, "exponent {exponent}");
    }
}

#[tokio::test]
async fn a_replace_replaces_the_follows_too() {
    // Arrange
    let db = TestDb::new().await;
    db.seed(&["--users", "50", "--follows-per-user", "10"])
        .await;

    // Act
    db.seed(&["--users", "30", "--follows-per-user", "5"]).await;

    // Assert
    assert_eq!(db.count("follows").await, 30 * 5);
    let newest: i64 = db
        .client()
        .await
        .query_one(
            "SELECT max(greatest(follower_id, followee_id)) FROM follows",
            &[],
        )
        .await
        .expect("largest id in follows")
        .get(0);
    assert!(newest <= 30, "no follow of the old users is left");
    assert_eq!(db.count_mismatches().await, 0);
}

#[tokio::test]
async fn append_adds_follows_among_the_new_users_and_changes_no_existing_user() {
    // Arrange
    let db = TestDb::new().await;
    db.seed(&["--users", "20", "--posts", "1000"]).await;
    let client = db.client().await;
    let old_users = "SELECT md5(string_agg(format('%s|%s|%s|%s', id, updated_at, followers_count, following_count), ',' ORDER BY id)) FROM users WHERE id <= 20";
    let before: String = client
        .query_one(old_users, &[])
        .await
        .expect("old users")
        .get(0);
    let follows_before = db.digest().await.follows;

    // Act
    db.seed(&[
        "--mode",
        "append",
        "--users",
        "15",
        "--posts",
        "500",
        "--follows-per-user",
        "4",
        "--until",
        "2026-02-01T00:00:00Z",
    ])
    .await;

    // Assert
    assert_eq!(db.count("follows").await, 20 * 10 + 15 * 4);
    let after: String = client
        .query_one(old_users, &[])
        .await
        .expect("old users")
        .get(0);
    assert_eq!(after, before, "existing users keep their counts");
    let crossing: i64 = client
        .query_one(
            "SELECT count(*) FROM follows WHERE (follower_id <= 20) <> (followee_id <= 20)",
            &[],
        )
        .await
        .expect("follows across the two loads")
        .get(0);
    assert_eq!(crossing, 0, "new users follow new users only");
    let old_follows = client
        .query_one(
            "SELECT coalesce(md5(string_agg(format('%s|%s|%s', follower_id, followee_id, created_at), E'\\n' ORDER BY follower_id, followee_id)), '') FROM follows WHERE follower_id <= 20",
            &[],
        )
        .await
        .expect("old follows")
        .get::<_, String>(0);
    assert_eq!(old_follows, follows_before, "existing follows untouched");
    assert_eq!(db.count_mismatches().await, 0);
}

#[tokio::test]
async fn the_feed_profile_sizes_the_load_and_flags_override_it() {
    let cases: [(&[&str], i64, i64, i64); 2] = [
        (&["--users", "300", "--posts", "2000"], 300, 2000, 300 * 50),
        (
            &[
                "--users",
                "300",
                "--posts",
                "2000",
                "--follows-per-user",
                "3",
            ],
            300,
            2000,
            300 * 3,
        ),
    ];
    for (flags, users, posts, follows) in cases {
        let db = TestDb::new().await;
        let mut argv = vec!["--profile", "feed"];
        argv.extend_from_slice(flags);

        let report = db.seed(&argv).await;

        assert_eq!(
            (
                db.count("users").await,
                db.count("posts").await,
                db.count("follows").await
            ),
            (users, posts, follows),
            "{flags:?}"
        );
        assert_eq!(report.dataset.follows(), follows as u64, "{flags:?}");
        assert_eq!(db.count_mismatches().await, 0, "{flags:?}");
    }
}

#[tokio::test]
async fn no_follows_is_a_choice() {
    let db = TestDb::new().await;

    let report = db.seed(&["--follows-per-user", "0"]).await;

    assert_eq!(db.count("follows").await, 0);
    assert_eq!(db.count_mismatches().await, 0);
    assert!(report.to_string().contains("no follows"));
}
