use crate::helpers::{run_datagen, TestDb};

#[tokio::test]
async fn bad_flags_fail_with_one_line_and_write_nothing() {
    let db = TestDb::new().await;
    let cases: [(&[&str], &str); 13] = [
        (
            &["--users", "0"],
            "the number of users must be a whole number from 1 to",
        ),
        (
            &["--users", "-5"],
            "the number of users must be a whole number from 1 to",
        ),
        (
            &["--posts", "-1"],
            "the number of posts must be a whole number from 1 to",
        ),
        (
            &["--posts", "lots"],
            "the number of posts must be a whole number from 1 to",
        ),
        (
            &["--exponent", "0"],
            "the Zipf exponent must be a number greater than 0",
        ),
        (
            &["--exponent", "-1"],
            "the Zipf exponent must be a number greater than 0",
        ),
        (&["--until", "tomorrow"], "expected an RFC 3339 timestamp"),
        (
            &["--mode", "merge"],
            "invalid value 'merge' for '--mode <MODE>'",
        ),
        (
            &["--follows-per-user", "-1"],
            "the number of follows per user must be a whole number from 0 to",
        ),
        (
            &["--users", "50", "--follows-per-user", "50"],
            "--follows-per-user 50 is too large for 50 users: a user follows at most the 49 others",
        ),
        (
            &[
                "--profile",
                "feed",
                "--users",
                "10",
                "--follows-per-user",
                "60",
            ],
            "--follows-per-user 60 is too large for 10 users",
        ),
        (
            &["--follow-exponent", "-2"],
            "the Zipf exponent must be a number greater than 0",
        ),
        (
            &["--profile", "huge"],
            "invalid value 'huge' for '--profile <PROFILE>'",
        ),
    ];
    for (flags, message) in cases {
        let mut args = vec!["--database-url", db.url.as_str()];
        args.extend_from_slice(flags);

        let output = run_datagen(&args);

        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flags:?}: {stderr}");
        assert_eq!(
            stderr.lines().count(),
            1,
            "{flags:?}: one line, got {stderr}"
        );
        assert!(
            stderr.starts_with("datagen: error: "),
            "{flags:?}: {stderr}"
        );
        assert!(stderr.contains(message), "{flags:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{flags:?}");
    }
    assert_eq!(db.tables().await, 0, "not even the migrations ran");
}

#[test]
fn an_unreachable_database_is_one_error_line_without_the_password() {
    let output = run_datagen(&[
        "--database-url",
        "postgres://postgres:s3cret@127.0.0.1:1/hotfeed",
        "--posts",
        "10",
    ]);

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("datagen: error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("connecting to PostgreSQL at 127.0.0.1:1/hotfeed"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
}

#[test]
fn help_names_every_flag_and_its_environment_variable() {
    let output = run_datagen(&["--help"]);

    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    for flag in [
        "--users",
        "--posts",
        "--exponent",
        "--profile",
        "feed",
        "--follows-per-user",
        "--follow-exponent",
        "--seed",
        "--span-days",
        "--until",
        "--mode",
        "--database-url",
        "[env: DATABASE_URL]",
        "[env: REDIS_URLS",
        "[env: CACHE_KEY_PREFIX",
        "--no-cache-flush",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}
