#!/usr/bin/env python3
"""Helpers of benches/feed-figures.sh (the home-feed figures of docs/benchmarks.md, section 10).

  feed-figures.py cursor MICROS ID              a feed cursor: the position just after (created_at, id)
  feed-figures.py metrics URL                   the service's counters this script reads, as JSON
  feed-figures.py settle URL                    wait until feed_rebuilds_total stops moving (2 s still)
  feed-figures.py write URL AUTHOR SECS OUT     one writer, one post in flight: POST /api/v1/posts by
                                                AUTHOR, the first post alone, then 1 s (left out),
                                                then SECS seconds; latencies and the service's
                                                counter deltas per post to OUT (JSON)
  feed-figures.py redis-cpu HOST:PORT...        used_cpu_sys + used_cpu_user of each node (INFO cpu), JSON
  feed-figures.py summary DIR                   medians of 3 and ratios, as Markdown

Standard library only. Writes carry `Authorization: Bearer $ADMIN_API_KEY` when that variable is set.
"""

import base64
import http.client
import json
import os
import pathlib
import re
import statistics
import struct
import sys
import time
import urllib.parse
from collections import defaultdict

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)$')


def crc16_xmodem(data):
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def cursor(micros, post_id):
    """The service's cursor layout (src/domain/cursor.rs): version 1, micros, id, CRC-16/XMODEM."""
    payload = struct.pack(">Bqq", 1, int(micros), int(post_id))
    raw = payload + struct.pack(">H", crc16_xmodem(payload))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def connection(url):
    parts = urllib.parse.urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=30)


def scrape(url):
    """The counters and histograms the figures need, from the service's /metrics."""
    conn = connection(url)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    out = defaultdict(float)
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if not match:
            continue
        name, labels, value = match.groups()
        labels = dict(re.findall(r'(\w+)="([^"]*)"', labels or ""))
        if name in ("redis_commands_total", "redis_round_trips_total", "redis_errors_total"):
            out[f"{name}|{labels['node']}"] += float(value)
            out[name] += float(value)
        elif name in ("feed_fanout_lag_seconds_bucket", "feed_fanout_size_bucket"):
            out[f"{name}|{labels['le']}"] = float(value)
        elif name in ("db_queries_total", "feed_rebuilds_total", "cache_errors_total",
                      "feed_sources_total", "feed_pages_total"):
            out[f"{name}|{list(labels.values())[0]}"] = float(value)
            out[name] += float(value)
        elif name in ("feed_fanout_lag_seconds_sum", "feed_fanout_lag_seconds_count",
                      "feed_fanout_size_sum", "feed_fanout_size_count", "feed_fanout_repairs_total",
                      "feed_celebrity_pulls_total", "redis_reconnects_total"):
            out[name] = float(value)
    return dict(out)


def redis_cpu(nodes):
    """CPU seconds each Redis node has used (INFO cpu), over a plain RESP socket."""
    import socket
    out = {}
    for node in nodes:
        host, port = node.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(b"INFO cpu\r\n")
            data = b""
            while True:
                data += sock.recv(65536)
                header, _, rest = data.partition(b"\r\n")
                if header.startswith(b"$") and len(rest) >= int(header[1:]):
                    break
        info = dict(line.split(":", 1) for line in rest.decode().splitlines() if ":" in line)
        out[node] = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    return out


def delta(before, after):
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in set(before) | set(after)}


def bucket_quantile(d, name, q):
    """The upper bound of the bucket holding quantile q (Prometheus buckets are cumulative)."""
    buckets = sorted(
        ((float("inf") if k.split("|")[1] == "+Inf" else float(k.split("|")[1]), v)
         for k, v in d.items() if k.startswith(name + "_bucket|")))
    total = buckets[-1][1] if buckets else 0
    if not total:
        return None
    for le, count in buckets:
        if count >= q * total:
            return le
    return None


def settle(url, quiet=2.0, limit=600.0):
    start, last, still = time.time(), None, time.time()
    while time.time() - start < limit:
        now = scrape(url).get("feed_rebuilds_total", 0.0)
        if now != last:
            last, still = now, time.time()
        elif time.time() - still >= quiet:
            return now
        time.sleep(0.25)
    return last


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def post(conn, url, headers, author, text):
    """One POST /api/v1/posts on `conn` (reopened after a transport error): (conn, status, ms)."""
    body = json.dumps({"user_id": int(author), "content": text})
    sent = time.perf_counter()
    try:
        conn.request("POST", "/api/v1/posts", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        status = str(response.status)
    except (OSError, http.client.HTTPException) as error:
        status = type(error).__name__
        conn.close()
        conn = connection(url)
    return conn, status, (time.perf_counter() - sent) * 1000


def write(url, author, seconds, out):
    headers = {"content-type": "application/json"}
    if os.environ.get("ADMIN_API_KEY"):
        headers["authorization"] = f"Bearer {os.environ['ADMIN_API_KEY']}"
    conn = connection(url)
    # The first post alone: the one that meets the boxes as they were left (all of them built,
    # for the push-built side), with its own counter deltas.
    before = scrape(url)
    conn, status, ms = post(conn, url, headers, author, f"feed-figures first post by user {author}")
    d = delta(before, scrape(url))
    first = {
        "status": status,
        "latency_ms": ms,
        "fanout_lag_ms": 1000 * d.get("feed_fanout_lag_seconds_sum", 0),
        "redis_commands": d.get("redis_commands_total", 0),
        "fanout_repairs": d.get("feed_fanout_repairs_total", 0),
        "redis_errors": d.get("redis_errors_total", 0),
    }
    # Then one second of the same posts, left out (it settles what the first post changed).
    warm = time.perf_counter()
    while time.perf_counter() - warm < 1.0:
        conn, _, _ = post(conn, url, headers, author, f"feed-figures warm-up post by user {author}")
    before = scrape(url)
    latencies, statuses = [], defaultdict(int)
    start = time.perf_counter()
    n = 0
    while time.perf_counter() - start < seconds:
        n += 1
        conn, status, ms = post(conn, url, headers, author, f"feed-figures post {n} by user {author}")
        statuses[status] += 1
        latencies.append(ms)
    elapsed = time.perf_counter() - start
    after = scrape(url)
    conn.close()
    d = delta(before, after)
    posts = max(1, len(latencies))
    lat = sorted(latencies)
    fanouts = d.get("feed_fanout_lag_seconds_count", 0) or 1
    report = {
        "author": int(author),
        "first": first,
        "posts": len(latencies),
        "statuses": dict(statuses),
        "posts_per_sec": len(latencies) / elapsed,
        "latency_ms": {"p50": percentile(lat, 0.5), "p90": percentile(lat, 0.9),
                       "p99": percentile(lat, 0.99), "max": lat[-1] if lat else None,
                       "mean": statistics.fmean(lat) if lat else None},
        "redis_commands_per_post": d.get("redis_commands_total", 0) / posts,
        "redis_round_trips_per_post": d.get("redis_round_trips_total", 0) / posts,
        "redis_commands_per_node": {k.split("|")[1]: v / posts for k, v in sorted(d.items())
                                    if k.startswith("redis_commands_total|")},
        "redis_errors": d.get("redis_errors_total", 0),
        "cache_errors": {k.split("|")[1]: v for k, v in d.items()
                         if k.startswith("cache_errors_total|") and v},
        "db_queries_per_post": d.get("db_queries_total", 0) / posts,
        "fanouts": d.get("feed_fanout_lag_seconds_count", 0),
        "fanout_boxes_per_post": d.get("feed_fanout_size_sum", 0) / fanouts,
        "fanout_lag_ms": {
            "mean": 1000 * d.get("feed_fanout_lag_seconds_sum", 0) / fanouts,
            "p50_le": 1000 * (bucket_quantile(d, "feed_fanout_lag_seconds", 0.5) or 0),
            "p99_le": 1000 * (bucket_quantile(d, "feed_fanout_lag_seconds", 0.99) or 0),
        },
        "fanout_repairs": d.get("feed_fanout_repairs_total", 0),
        "redis_reconnects": d.get("redis_reconnects_total", 0),
    }
    pathlib.Path(out).write_text(json.dumps(report, indent=2))
    print(f"{author}: first post {first['latency_ms']:.1f} ms, lag {first['fanout_lag_ms']:.1f} ms, "
          f"repairs {first['fanout_repairs']:.0f}; then {report['posts']} posts, {report['posts_per_sec']:.1f}/s, "
          f"p50 {report['latency_ms']['p50']:.2f} ms, {report['redis_commands_per_post']:.1f} "
          f"commands/post, lag mean {report['fanout_lag_ms']['mean']:.2f} ms, "
          f"repairs {report['fanout_repairs']:.0f}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# summary

NAME = re.compile(r"^(?P<group>.+?)__(?P<side>.+)__r(?P<rep>\d+)\.json$")


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=3):
    if value is None:
        return "–"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.{digits}g}"


def runs(directory):
    out = defaultdict(lambda: defaultdict(list))
    for path in sorted(pathlib.Path(directory).glob("*.json")):
        match = NAME.match(path.name)
        if match:
            try:
                out[match["group"]][match["side"]].append(json.loads(path.read_text()))
            except json.JSONDecodeError:
                print(f"(skipped {path.name}: not a finished report)", file=sys.stderr)
    return out


def hot_share(report):
    """The hot outbox node's share of commands and its ratio to the mean of the other nodes, as
    loadgen's report gives them (`hot_outbox`)."""
    hot = report.get("hot_outbox") or {}
    return hot.get("command_share"), hot.get("vs_other_nodes"), hot.get("node")


def summary(directory):
    groups = runs(directory)
    for group in sorted(groups):
        sides = groups[group]
        print(f"### {group}\n")
        first = next(iter(sides.values()))[0]
        if "posts_per_sec" in first:
            print("| side | runs | first post ms | its lag ms | its repairs | posts/s | p50 ms | p99 ms "
                  "| Redis commands/post | round trips/post | boxes/post | lag mean ms | lag p99 ≤ ms "
                  "| repairs/post | PG queries/post |")
            print("|---" * 16 + "|")
            for side in sorted(sides):
                rs = sides[side]
                first = lambda k: med([(r.get("first") or {}).get(k) for r in rs])
                print(f"| {side} | {len(rs)} | {fmt(first('latency_ms'))} | {fmt(first('fanout_lag_ms'))} | "
                      f"{fmt(first('fanout_repairs'))} | {fmt(med([r['posts_per_sec'] for r in rs]))} | "
                      f"{fmt(med([r['latency_ms']['p50'] for r in rs]))} | "
                      f"{fmt(med([r['latency_ms']['p99'] for r in rs]))} | "
                      f"{fmt(med([r['redis_commands_per_post'] for r in rs]), 4)} | "
                      f"{fmt(med([r['redis_round_trips_per_post'] for r in rs]))} | "
                      f"{fmt(med([r['fanout_boxes_per_post'] for r in rs]), 4)} | "
                      f"{fmt(med([r['fanout_lag_ms']['mean'] for r in rs]))} | "
                      f"{fmt(med([r['fanout_lag_ms']['p99_le'] for r in rs]))} | "
                      f"{fmt(med([r['fanout_repairs'] / max(1, r['posts']) for r in rs]))} | "
                      f"{fmt(med([r['db_queries_per_post'] for r in rs]))} |")
            print()
            continue
        print("| side | runs | req/s | p50 ms | p99 ms | non-200 | HIT % | X-Feed-Source | pulls/page "
              "| PG q/page | hot node share | hot / mean of others | writes p50 ms | fan-out lag mean ms |")
        print("|---" * 15 + "|")
        table = {}
        for side in sorted(sides):
            rs = sides[side]
            svc = lambda r: r.get("service") or {}
            pages = lambda r: sum((svc(r).get("pages") or {}).values()) or None
            srcs = defaultdict(list)
            for r in rs:
                for k, v in (r.get("x_feed_source_share") or {}).items():
                    srcs[k].append(100 * v)
            row = {
                "req/s": med([r["requests_per_sec"] for r in rs]),
                "p50": med([r["latency_ms"]["p50"] for r in rs]),
                "p99": med([r["latency_ms"]["p99"] for r in rs]),
                "non200": med([sum(v for k, v in r["statuses"].items() if k != "200") for r in rs]),
                "hit": med([100 * r["x_cache_share"].get("HIT", 0.0) for r in rs]),
                "pulls": med([svc(r).get("celebrity_pulls", 0) / pages(r) if pages(r) else None
                              for r in rs]),
                "pgq": med([svc(r).get("db_queries_per_page") for r in rs]),
                "hot": med([hot_share(r)[0] for r in rs]),
                "hotratio": med([hot_share(r)[1] for r in rs]),
                "wp50": med([(r.get("writes") or {}).get("latency_ms", {}).get("p50") for r in rs]),
                "lag": med([(svc(r).get("fanout_lag_ms") or {}).get("mean") for r in rs]),
            }
            table[side] = row
            source = ", ".join(f"{k} {fmt(med(v))} %" for k, v in sorted(srcs.items()))
            print(f"| {side} | {len(rs)} | {fmt(row['req/s'])} | {fmt(row['p50'])} | "
                  f"{fmt(row['p99'])} | {fmt(row['non200'])} | {fmt(row['hit'])} | {source} | "
                  f"{fmt(row['pulls'])} | {fmt(row['pgq'])} | "
                  f"{fmt(None if row['hot'] is None else 100 * row['hot'])} | "
                  f"{fmt(row['hotratio'])} | {fmt(row['wp50'])} | {fmt(row['lag'])} |")
        print()
        for side in sorted(table):
            for other in sorted(table):
                if side == other:
                    continue
                a, b = table[side], table[other]
                pair = (side.replace("cache-on", "X"), other.replace("cache-off", "X"))
                push = (side.startswith("read-pull"), other.startswith("read-push"))
                if pair[0] == pair[1] or (push[0] and push[1]):
                    ratio = lambda k: a[k] / b[k] if a[k] and b[k] else None
                    print(f"- {side} / {other}: throughput x{fmt(ratio('req/s'))}, "
                          f"p50 x{fmt(ratio('p50'))}, p99 x{fmt(ratio('p99'))}")
        for side in sorted(sides):
            for r in sides[side] if group.startswith("hot") else []:
                share, ratio, node = hot_share(r)
                if share is not None:
                    per_node = ", ".join(f"{n['node']} {100 * n['command_share']:.1f} %"
                                         for n in r["service"]["redis_nodes"])
                    trips = sum(n["round_trips"] for n in r["service"]["redis_nodes"]) or 1
                    hot_trips = sum(n["round_trips"] for n in r["service"]["redis_nodes"]
                                    if n["node"] == node)
                    print(f"- {side}: commands per node {per_node}; hot outbox on {node}: "
                          f"{100 * share:.1f} % of commands, x{ratio:.2f} the mean of the others; "
                          f"{100 * hot_trips / trips:.1f} % of round trips")
            for path in sorted(pathlib.Path(directory).glob(f"{group}__{side}__r*.cpu.json")):
                cpu = json.loads(path.read_text())
                total = sum(cpu["delta"].values()) or 1
                node = cpu.get("hot_node")
                per_node = ", ".join(f"{n} {100 * v / total:.1f} %" for n, v in sorted(cpu["delta"].items()))
                others = [v for n, v in cpu["delta"].items() if n != node]
                ratio = cpu["delta"].get(node, 0) / statistics.fmean(others) if others and node else None
                print(f"- {path.name}: Redis CPU per master {per_node}"
                      + (f"; hot outbox node {node} x{ratio:.2f} the mean of the others" if ratio else ""))
        print()


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    command, args = argv[1], argv[2:]
    if command == "cursor":
        print(cursor(*args))
    elif command == "metrics":
        print(json.dumps(scrape(args[0]), indent=1, sort_keys=True))
    elif command == "settle":
        print(int(settle(args[0]) or 0))
    elif command == "write":
        write(args[0], args[1], float(args[2]), args[3])
    elif command == "redis-cpu":
        print(json.dumps(redis_cpu(args)))
    elif command == "summary":
        summary(args[0])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
