use crate::helpers::{connect, TestDb};

/// Everything about the schema the service relies on: columns, constraints (names included, the
/// service maps them to HTTP errors), indexes, and whether constraints are validated.
async fn schema_of(db: &TestDb) -> Vec<String> {
    let client = db.client().await;
    let mut lines = Vec::new();
    for sql in [
        "SELECT format('column %s.%s %s null=%s default=%s', table_name, column_name, data_type, is_nullable, column_default)
         FROM information_schema.columns WHERE table_schema = 'public' ORDER BY table_name, ordinal_position",
        "SELECT format('constraint %s %s %s %s validated=%s', conrelid::regclass, conname, contype, pg_get_constraintdef(oid), convalidated)
         FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY conrelid::regclass::text, conname",
        "SELECT format('index %s %s', indexname, indexdef) FROM pg_indexes WHERE schemaname = 'public' ORDER BY indexname",
        "SELECT format('sequence %s owned by %s', s.relname, d.refobjid::regclass)
         FROM pg_class s JOIN pg_depend d ON d.objid = s.oid AND d.deptype = 'a'
         WHERE s.relkind = 'S' ORDER BY s.relname",
    ] {
        for row in client.query(sql, &[]).await.expect("catalog query") {
            lines.push(row.get(0));
        }
    }
    lines
}

#[tokio::test]
async fn indexes_and_constraints_end_exactly_as_the_migrations_make_them() {
    // Arrange: one database only migrated, one seeded twice (the second run replaces data that
    // already has every index and constraint).
    let migrated = TestDb::new().await;
    hotfeed::store::migrate(&migrated.url)
        .await
        .expect("migrations apply");
    let seeded = TestDb::new().await;

    // Act
    seeded.seed(&["--posts", "2000"]).await;
    seeded.seed(&["--posts", "3000"]).await;
    let appended = TestDb::new().await;
    appended.seed(&["--posts", "2000"]).await;
    appended
        .seed(&[
            "--mode",
            "append",
            "--posts",
            "1000",
            "--until",
            "2026-03-01T00:00:00Z",
        ])
        .await;

    // Assert
    let expected = schema_of(&migrated).await;
    assert!(expected
        .iter()
        .any(|l| l.contains("posts_user_id_created_at_id_idx")));
    assert!(expected.iter().any(|l| l.contains("posts_user_id_fkey")));
    assert!(expected
        .iter()
        .any(|l| l.contains("follows_followee_id_created_at_idx")));
    assert!(expected
        .iter()
        .any(|l| l.contains("follows_follower_id_fkey")));
    assert_eq!(schema_of(&seeded).await, expected, "after replace");
    assert_eq!(schema_of(&appended).await, expected, "after append");
}

#[tokio::test]
async fn tables_are_analyzed_when_the_load_commits() {
    let db = TestDb::new().await;
    db.seed(&[]).await;

    let row = db
        .client()
        .await
        .query_one(
            "SELECT (SELECT reltuples FROM pg_class WHERE oid = 'posts'::regclass),
                    (SELECT count(*) FROM pg_stats WHERE schemaname = 'public' AND tablename = 'posts'),
                    (SELECT reltuples FROM pg_class WHERE oid = 'follows'::regclass),
                    (SELECT count(*) FROM pg_stats WHERE schemaname = 'public' AND tablename = 'follows')",
            &[],
        )
        .await
        .expect("statistics");

    assert_eq!(row.get::<_, f32>(0), 20_000.0);
    assert_eq!(
        row.get::<_, i64>(1),
        5,
        "every column of posts has statistics"
    );
    assert_eq!(row.get::<_, f32>(2), 200.0, "20 users following 10 each");
    assert_eq!(
        row.get::<_, i64>(3),
        3,
        "every column of follows has statistics"
    );
}

#[tokio::test]
async fn the_services_page_query_walks_the_page_index() {
    // The pages the service serves most. Much deeper pages are planned as a scan plus sort once
    // that is cheaper than walking the index: here past about a fifth of the hottest user's
    // posts, at 2,000,000 posts past about 200,000 (docs/benchmarks.md).
    let db = TestDb::new().await;
    db.seed(&[]).await;
    let client = connect(&db.url).await;
    let sql = format!(
        "EXPLAIN {}",
        include_str!("../../../db/queries/user_posts_page.sql")
    );

    for offset in [0_i64, 1000] {
        let plan: Vec<String> = client
            .query(&sql, &[&1_i64, &51_i64, &offset])
            .await
            .expect("explain")
            .iter()
            .map(|row| row.get(0))
            .collect();
        let plan = plan.join("\n");
        assert!(
            plan.contains("Index Scan using posts_user_id_created_at_id_idx on posts"),
            "offset {offset}: {plan}"
        );
        assert!(
            !plan.contains("Sort") && !plan.contains("Bitmap"),
            "offset {offset}: {plan}"
        );
    }
}
