#!/usr/bin/env python3
"""Medians and ratios of the loadgen reports written by benches/run-load-benchmarks.sh.

Usage: benches/summarize-load.py DIR   (reads DIR/<group>__<side>__r<n>.json, prints Markdown)

For each group and side: the median over the repetitions of throughput and latency percentiles,
the X-Cache hit share and PostgreSQL queries per page; then, for each pair of sides (cache on vs
off, nginx vs the service), the ratio of the medians.
"""

import json
import pathlib
import re
import statistics
import sys
from collections import defaultdict

NAME = re.compile(r"^(?P<group>[^_]+(?:-[^_]+)*)__(?P<side>.+)__r(?P<rep>\d+)\.json$")


def load(directory):
    runs = defaultdict(lambda: defaultdict(list))
    for path in sorted(pathlib.Path(directory).glob("*.json")):
        match = NAME.match(path.name)
        if not match:
            continue
        try:
            report = json.loads(path.read_text())
        except json.JSONDecodeError:
            print(f"(skipped {path.name}: not a finished report)", file=sys.stderr)
            continue
        runs[match["group"]][match["side"]].append(report)
    return runs


def median(reports, pick):
    values = [pick(r) for r in reports]
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def metrics(reports):
    service = lambda r: r.get("service") or {}
    pages = lambda r: sum(service(r).get("pages", {}).values())
    return {
        "runs": len(reports),
        "req/s": median(reports, lambda r: r["requests_per_sec"]),
        "p50 ms": median(reports, lambda r: r["latency_ms"]["p50"]),
        "p90 ms": median(reports, lambda r: r["latency_ms"]["p90"]),
        "p99 ms": median(reports, lambda r: r["latency_ms"]["p99"]),
        "p99.9 ms": median(reports, lambda r: r["latency_ms"]["p999"]),
        "max ms": median(reports, lambda r: r["latency_ms"]["max"]),
        "HIT %": median(reports, lambda r: 100 * r["x_cache_share"].get("HIT", 0.0)),
        "PG pages %": median(
            reports,
            lambda r: None
            if not r.get("service") or not pages(r)
            else 100
            * sum(
                n
                for k, n in service(r)["pages"].items()
                if k in ("miss", "partial", "bypass")
            )
            / pages(r),
        ),
        "PG q/page": median(
            reports, lambda r: (r.get("service") or {}).get("db_queries_per_page")
        ),
        "non-200": median(
            reports,
            lambda r: sum(n for k, n in r["statuses"].items() if k != "200"),
        ),
    }


def fmt(value):
    if value is None:
        return "–"
    if isinstance(value, int):
        return str(value)
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if value else "0"


def pairs(sides):
    out = []
    for side in sides:
        if side.endswith("-cache-on") and side[: -len("on")] + "off" in sides:
            out.append((side, side[: -len("on")] + "off"))
    if "hotfeed-hit" in sides and "nginx-static" in sides:
        out.append(("hotfeed-hit", "nginx-static"))
    return out


def main(directory):
    runs = load(directory)
    columns = ["runs", "req/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "HIT %",
               "PG pages %", "PG q/page", "non-200"]
    for group in sorted(runs):
        sides = runs[group]
        table = {side: metrics(reports) for side, reports in sides.items()}
        print(f"### {group}\n")
        print("| side | " + " | ".join(columns) + " |")
        print("|---" * (len(columns) + 1) + "|")
        for side in sorted(table):
            print(f"| {side} | " + " | ".join(fmt(table[side][c]) for c in columns) + " |")
        print()
        for a, b in pairs(sides):
            ta, tb = table[a], table[b]
            ratio = lambda key: (ta[key] / tb[key]) if ta[key] and tb[key] else None
            print(
                f"- {a} / {b}: throughput x{fmt(ratio('req/s'))}, "
                f"p50 x{fmt(ratio('p50 ms'))}, p99 x{fmt(ratio('p99 ms'))}"
            )
        if group.startswith("zipf"):
            for side, reports in sorted(sides.items()):
                for report in reports:
                    nodes = (report.get("service") or {}).get("redis_nodes", [])
                    trips = sum(n["round_trips"] for n in nodes) or 1
                    shares = ", ".join(
                        f"{n['node']} {100 * n['command_share']:.1f}% of commands, "
                        f"{100 * n['round_trips'] / trips:.1f}% of round trips"
                        for n in nodes
                    )
                    top = ", ".join(
                        f"{u['user']}: {100 * u['share']:.1f}%" for u in report["top_users"][:5]
                    )
                    print(f"- {side}: Redis commands per node {shares}; top users {top}")
        print()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
