//! The Grafana dashboard and the Prometheus alert rules query only series the service exports: every
//! metric name in their PromQL is checked against a live `/metrics` scrape, after traffic that makes
//! every labelled series appear.

use std::collections::{BTreeMap, BTreeSet};

use hotfeed::domain::PostId;
use redis::AsyncCommands as _;
use serde_json::Value;

use crate::helpers::{spawn_app, TestApp};

const DASHBOARD: &str = include_str!("../../deploy/grafana/dashboards/hotfeed.json");
const ALERTS: &str = include_str!("../../deploy/prometheus/alerts.yml");

/// Series Prometheus records itself for every scraped target; alert rules may use them.
const SCRAPE_SERIES: &[&str] = &["up"];

/// What the issue asks the dashboard to show, by the series that carry it.
const STORY: &[(&str, &str)] = &[
    ("post_list_cache_hits_total", "per-user list hit ratio"),
    ("post_list_cache_misses_total", "per-user list hit ratio"),
    (
        "http_request_duration_seconds_bucket",
        "page latency percentiles",
    ),
    ("db_queries_total", "PostgreSQL queries/s"),
    ("redis_commands_total", "Redis commands per node"),
    ("cache_errors_total", "cache errors"),
];

#[tokio::test]
async fn every_dashboard_query_uses_series_the_service_exports() {
    // Arrange
    let scrape = live_scrape().await;
    let queries = dashboard_queries(DASHBOARD);

    // Act
    let problems = unexported_metrics(&queries, &scrape, &[]);

    // Assert
    assert!(
        queries.len() >= 15,
        "the dashboard has its panels: {queries:#?}"
    );
    assert!(problems.is_empty(), "dashboard queries: {problems:#?}");
    let used: BTreeSet<String> = queries.iter().flat_map(|q| metric_names(q)).collect();
    for (series, what) in STORY {
        assert!(
            used.contains(*series),
            "the dashboard shows {what} ({series})"
        );
    }
}

#[tokio::test]
async fn every_alert_rule_uses_series_the_service_exports() {
    let scrape = live_scrape().await;
    let queries = alert_queries(ALERTS);

    let problems = unexported_metrics(&queries, &scrape, SCRAPE_SERIES);

    let rules = ALERTS
        .lines()
        .filter(|l| {
            l.trim_start().starts_with("- alert:") || l.trim_start().starts_with("- record:")
        })
        .count();
    assert_eq!(
        queries.len(),
        rules,
        "one expression read per rule: {queries:#?}"
    );
    assert!(problems.is_empty(), "alert rules: {problems:#?}");
}

#[tokio::test]
async fn a_misspelt_or_wrongly_suffixed_metric_fails_the_check() {
    let scrape = live_scrape().await;
    let misspelt = DASHBOARD.replace("post_list_cache_hits_total", "post_list_cache_hit_total");
    let cases = [
        (
            "sum(rate(post_list_cache_hit_total[5m]))",
            "post_list_cache_hit_total",
            "a misspelt counter",
        ),
        (
            "rate(http_request_duration_seconds[5m])",
            "http_request_duration_seconds",
            "a histogram's base name, which has no series",
        ),
        (
            "rate(db_queries_total_bucket[5m])",
            "db_queries_total_bucket",
            "a _bucket suffix on a counter",
        ),
        (
            "up == 0",
            "up",
            "a Prometheus-made series where it is not allowed",
        ),
    ];

    for (query, name, case) in cases {
        let problems = unexported_metrics(&[query.to_owned()], &scrape, &[]);
        assert!(
            problems.contains_key(name),
            "{case} is reported: {problems:?}"
        );
    }
    let problems = unexported_metrics(&dashboard_queries(&misspelt), &scrape, &[]);
    assert!(
        problems.contains_key("post_list_cache_hit_total"),
        "a typo in the dashboard file is caught: {problems:?}"
    );
}

#[test]
fn metric_names_are_read_from_promql_and_nothing_else() {
    let cases: &[(&str, &[&str], &str)] = &[
        ("up", &["up"], "a bare name"),
        (
            r#"histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{route="/api/v1/users/{id}/posts"}[$__rate_interval])))"#,
            &["http_request_duration_seconds_bucket"],
            "functions, label lists, braces inside label values and Grafana variables are skipped",
        ),
        (
            "(a_total or b_total * 0) / c_total and on (user_id) topk($topn, d_total + e_total)",
            &["a_total", "b_total", "c_total", "d_total", "e_total"],
            "operators, keywords and on(...) lists",
        ),
        (
            "sum(rate(x_total[5m:30s] offset 1h)) by (kind) > bool 1e-3",
            &["x_total"],
            "subqueries, offset, trailing by (...), bool and numbers with exponents",
        ),
        (
            r#"count_values("le", foo) or label_replace(bar, "dst", "$1", "src", "(.*)") unless vector(0) or sum without (instance, job) (baz)"#,
            &["bar", "baz", "foo"],
            "string arguments and without (...)",
        ),
        (
            r#"{__name__="named_total", kind!="x"} + max_over_time(nan_total[1m]) + Inf"#,
            &["named_total", "nan_total"],
            "a name given as __name__ matcher; Inf is a number",
        ),
        (
            "sum(rate(x_total[5m])) # per second\n  / ignoring (node) group_left (kind) y_total",
            &["x_total", "y_total"],
            "comments and vector matching modifiers",
        ),
    ];
    for (query, expected, case) in cases {
        let names: Vec<String> = metric_names(query).into_iter().collect();
        assert_eq!(names, *expected, "{case}: {query}");
    }
}

#[test]
fn alert_expressions_are_read_from_single_and_multi_line_yaml() {
    let yaml = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n        for: 1m\n      - alert: B\n        expr: |\n          sum(rate(x_total[5m]))\n            > 1\n        labels:\n          severity: warning\n      - record: r\n        expr: \"y_total * 2\"\n";

    let queries = alert_queries(yaml);

    assert_eq!(
        queries,
        ["up == 0", "sum(rate(x_total[5m]))\n  > 1", "y_total * 2"]
    );
}

// ---------------------------------------------------------------------------------------------
// Live scrape

/// The series names and metric types of one `/metrics` scrape.
struct Scrape {
    /// Sample names as exposed, `_bucket`/`_sum`/`_count` included for histograms.
    samples: BTreeSet<String>,
    /// `# TYPE` of each metric family.
    types: BTreeMap<String, String>,
}

/// A fresh app after traffic that makes every labelled series appear: a list miss and a hit, object
/// reads, a 404, writes, and one cache error (a post key of the wrong Redis type).
async fn live_scrape() -> Scrape {
    let app = spawn_app().await;
    drive_traffic(&app).await;
    let text = app
        .get("/metrics")
        .await
        .text()
        .await
        .expect("metrics text");
    parse_scrape(&text)
}

async fn drive_traffic(app: &TestApp) {
    let user = app.create_user("dashboard_viewer").await;
    let posts = app.create_posts(user, 3).await;
    let page = format!("/api/v1/users/{user}/posts");
    assert_eq!(app.get(&page).await.status(), 200, "page read (miss)");
    assert_eq!(app.get(&page).await.status(), 200, "page read (hit)");
    assert_eq!(app.get("/api/v1/users/999999999").await.status(), 404);

    // A cached post that is not a string makes its GET fail: a counted cache error, served from
    // PostgreSQL all the same.
    let key = app.keys.post(PostId::from_trusted(posts[0]));
    let mut redis = app.redis().await;
    let _: () = redis.del(&key).await.expect("DEL");
    let _: () = redis.rpush(&key, "not a post").await.expect("RPUSH");
    let res = app.get(&format!("/api/v1/posts/{}", posts[0])).await;
    assert_eq!(res.status(), 200, "a cache error is served from PostgreSQL");
}

fn parse_scrape(text: &str) -> Scrape {
    let mut samples = BTreeSet::new();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, kind)) = rest.split_once(' ') {
                types.insert(name.to_owned(), kind.trim().to_owned());
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            samples.insert(line[..end].to_owned());
        }
    }
    Scrape { samples, types }
}

/// Metric names used by `queries` that the scrape does not expose, with why.
fn unexported_metrics(
    queries: &[String],
    scrape: &Scrape,
    allowed: &[&str],
) -> BTreeMap<String, String> {
    let mut problems = BTreeMap::new();
    for query in queries {
        for name in metric_names(query) {
            if scrape.samples.contains(&name) || allowed.contains(&name.as_str()) {
                continue;
            }
            let why = match scrape.types.get(&name).map(String::as_str) {
                Some(kind @ ("histogram" | "summary")) => format!(
                    "{name} is a {kind}: it has no series of its own, query {name}_bucket, _sum or _count"
                ),
                Some(kind) => format!("{name} is a {kind} that has no sample in the scrape"),
                None => match ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).map(|base| (base, s)))
                {
                    Some((base, suffix)) if scrape.types.contains_key(base) => format!(
                        "{base} is a {}, it has no {suffix} series",
                        scrape.types[base]
                    ),
                    _ => format!("{name} is not exported by the service (misspelt?)"),
                },
            };
            problems.insert(name, format!("{why}; in: {query}"));
        }
    }
    problems
}

// ---------------------------------------------------------------------------------------------
// Reading the files

/// Every PromQL expression of a Grafana dashboard: each `expr` at any depth (panels, rows, nested
/// panels) and each query variable.
fn dashboard_queries(json: &str) -> Vec<String> {
    fn walk(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr", Value::String(expr)) if !expr.trim().is_empty() => {
                            out.push(expr.clone());
                        }
                        _ => walk(value, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, out)),
            _ => {}
        }
    }
    let dashboard: Value = serde_json::from_str(json).expect("the dashboard is valid JSON");
    let mut queries = Vec::new();
    walk(&dashboard["panels"], &mut queries);
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"]
            .as_str()
            .or_else(|| variable["query"].as_str())
            .unwrap_or_default();
        // Grafana's own functions: label_values(metric, label) and query_result(promql).
        if let Some(args) = query.strip_prefix("label_values(") {
            if let Some((metric, _label)) = args.trim_end_matches(')').rsplit_once(',') {
                queries.push(metric.to_owned());
            }
        } else if let Some(inner) = query.strip_prefix("query_result(") {
            queries.push(inner.trim_end_matches(')').to_owned());
        }
    }
    queries
}

/// The `expr` of every rule in a Prometheus rules file, single-line or block scalar (`|`, `>`).
fn alert_queries(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut queries = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if rest.starts_with('|') || rest.starts_with('>') {
            let indent = line.len() - line.trim_start().len();
            let mut block: Vec<&str> = Vec::new();
            while i < lines.len()
                && (lines[i].trim().is_empty()
                    || lines[i].len() - lines[i].trim_start().len() > indent)
            {
                block.push(lines[i]);
                i += 1;
            }
            let strip = block
                .iter()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.len() - l.trim_start().len())
                .min()
                .unwrap_or(0);
            let text: Vec<&str> = block
                .iter()
                .map(|l| l.get(strip..).unwrap_or("").trim_end())
                .collect();
            queries.push(text.join("\n").trim().to_owned());
        } else {
            let unquoted = rest
                .strip_prefix('"')
                .and_then(|r| r.strip_suffix('"'))
                .or_else(|| rest.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')))
                .unwrap_or(rest);
            queries.push(unquoted.to_owned());
        }
    }
    queries
}

// ---------------------------------------------------------------------------------------------
// PromQL

/// Words that stand where a metric name could, but are not one. Functions and aggregations are
/// told apart by the `(` that follows them.
const KEYWORDS: &[&str] = &[
    "and", "or", "unless", "bool", "offset", "inf", "nan", "atan2",
];
/// Modifiers followed by a parenthesised list of label names, which are not metric names either.
const LABEL_LIST_MODIFIERS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names a PromQL expression selects: identifiers used as vector selectors (bare, or
/// followed by `{` or `[`), plus names given as `__name__="..."`. Skipped: string literals, label
/// matchers, range and subquery brackets, Grafana variables (`$x`, `${x}`), comments, numbers and
/// durations, functions and aggregations (an identifier followed by `(`), keywords and the label
/// lists of by / without / on / ignoring / group_left / group_right.
fn metric_names(query: &str) -> BTreeSet<String> {
    let chars: Vec<char> = query.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => i = skip_string(&chars, i),
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '{' => {
                let end = skip_until(&chars, i + 1, '}');
                let matchers: String = chars[i + 1..end.saturating_sub(1).max(i + 1)]
                    .iter()
                    .collect();
                if let Some(name) = name_matcher(&matchers) {
                    names.insert(name);
                }
                i = end;
            }
            '[' => i = skip_until(&chars, i + 1, ']'),
            '$' => {
                i += 1;
                if chars.get(i) == Some(&'{') {
                    i = skip_until(&chars, i + 1, '}');
                } else {
                    while i < chars.len() && is_word(chars[i]) {
                        i += 1;
                    }
                }
            }
            c if c.is_ascii_digit()
                || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                // Numbers, durations (5m, 1h30m), hex (0x1f) and exponents (1e-3).
                let start = i;
                let hex = chars[start..].starts_with(&['0', 'x'])
                    || chars[start..].starts_with(&['0', 'X']);
                while i < chars.len() {
                    let d = chars[i];
                    let exponent_sign =
                        matches!(d, '+' | '-') && !hex && matches!(chars[i - 1], 'e' | 'E');
                    if d.is_ascii_alphanumeric() || d == '.' || d == '_' || exponent_sign {
                        i += 1;
                    } else {
                        break;
                    }
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len() && is_word(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let lower = word.to_ascii_lowercase();
                if LABEL_LIST_MODIFIERS.contains(&lower.as_str()) {
                    if chars.get(next) == Some(&'(') {
                        i = skip_until(&chars, next + 1, ')');
                    }
                } else if chars.get(next) == Some(&'(')
                    || KEYWORDS.contains(&lower.as_str())
                    || is_grouping_modifier(&chars[next..])
                {
                    // A function, an aggregation (also `sum by (le) (...)`) or a keyword.
                } else {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// Whether `rest` starts with `by` or `without` as a whole word: what follows an aggregation
/// operator written as `sum by (le) (...)`, and never a metric name.
fn is_grouping_modifier(rest: &[char]) -> bool {
    let word: String = rest.iter().take_while(|c| is_word(**c)).collect();
    word.eq_ignore_ascii_case("by") || word.eq_ignore_ascii_case("without")
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Index just past the string literal opening at `start` (backslash escapes in "" and '').
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote != '`' => i += 2,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// Index just past the first `close` at or after `from` that is not inside a string literal.
fn skip_until(chars: &[char], from: usize, close: char) -> usize {
    let mut i = from;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => i = skip_string(chars, i),
            c if c == close => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// The metric name in label matchers such as `__name__="x", kind="y"` (equality only).
fn name_matcher(matchers: &str) -> Option<String> {
    let rest = matchers.split_once("__name__")?.1.trim_start();
    let value = rest.strip_prefix('=')?;
    if value.starts_with('~') {
        return None;
    }
    let value = value.trim_start();
    let quote = value.chars().next().filter(|q| matches!(q, '"' | '\''))?;
    let end = value[1..].find(quote)?;
    Some(value[1..=end].to_owned())
}
