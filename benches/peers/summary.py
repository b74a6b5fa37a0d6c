#!/usr/bin/env python3
"""Summarizes a benches/peers.sh run: results.tsv -> markdown, sides as ratios within each round.

  benches/peers/summary.py target/peers/<time>
"""

import statistics
import sys
from collections import defaultdict

ORDER = ["nginx-file", "varnish", "nginx-cache", "hotfeed-l1", "hotfeed-redis", "hotfeed-pg"]
NAMES = {
    "nginx-file": "nginx, the same bytes from a file",
    "varnish": "Varnish -> hotfeed CACHE=off",
    "nginx-cache": "nginx proxy_cache -> hotfeed CACHE=off",
    "hotfeed-l1": "**hotfeed, defaults (HIT-L1)**",
    "hotfeed-redis": "hotfeed, L1=off (Redis hit)",
    "hotfeed-pg": "hotfeed, CACHE=off (PostgreSQL)",
}


def load(path):
    rows = defaultdict(lambda: defaultdict(dict))  # test -> side -> round -> values
    for line in open(path):
        test, rnd, side, kv = line.rstrip("\n").split("\t")
        values = {}
        for pair in kv.split():
            if "=" in pair:
                key, value = pair.split("=", 1)
                values[key] = value
        rows[test][side][int(rnd)] = values
    return rows


def num(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def rounds_of(per_side, key):
    return {r: num(v.get(key)) for r, v in sorted(per_side.items())}


def fmt_list(values, spec="{:,.0f}"):
    return ", ".join("-" if v is None else spec.format(v) for v in values)


def ratio_range(rows, side, base, key):
    ratios = []
    for rnd, values in rows[side].items():
        other = rows.get(base, {}).get(rnd)
        a, b = num(values.get(key)), num(other.get(key)) if other else None
        if a is not None and b:
            ratios.append(a / b)
    if not ratios:
        return "-"
    lo, hi = min(ratios), max(ratios)
    return f"×{lo:.2f}" if abs(hi - lo) < 0.005 else f"×{lo:.2f}-{hi:.2f}"


def throughput(rows, test, title, extra):
    if test not in rows:
        return
    print(f"### {title}\n")
    head = "| side | req/s (rounds) | vs Varnish | vs hotfeed HIT-L1 | p99 ms | " + \
        " | ".join(h for h, _ in extra) + " | wrk cores | non-2xx |"
    print(head)
    print("|" + " --- |" * (head.count("|") - 1))
    for side in ORDER:
        if side not in rows[test]:
            continue
        per = rows[test][side]
        rps = rounds_of(per, "rps").values()
        p99 = rounds_of(per, "p99_ms").values()
        cores = rounds_of(per, "wrk_cores").values()
        non2xx = sum(int(v.get("non2xx", 0)) + int(v.get("errors", 0)) for v in per.values())
        cells = [fmt_list(rounds_of(per, key).values(), spec) for _, (key, spec) in extra]
        print(f"| {NAMES[side]} | {fmt_list(rps)} | {ratio_range(rows[test], side, 'varnish', 'rps')} "
              f"| {ratio_range(rows[test], side, 'hotfeed-l1', 'rps')} | {fmt_list(p99, '{:.2f}')} | "
              + " | ".join(cells) + f" | {fmt_list(cores, '{:.2f}')} | {non2xx} |")
    print()


def simple(rows, test, title, columns):
    if test not in rows:
        return
    print(f"### {title}\n")
    print("| side | " + " | ".join(h for h, _, _ in columns) + " |")
    print("|" + " --- |" * (len(columns) + 1))
    for side in ORDER:
        if side not in rows[test]:
            continue
        per = rows[test][side]
        cells = []
        for _, key, spec in columns:
            values = [v.get(key) for _, v in sorted(per.items())]
            cells.append(", ".join(spec(v) for v in values))
        print(f"| {NAMES[side]} | " + " | ".join(cells) + " |")
    print()


def client(rows):
    if "client" in rows:
        print("### loadgen (one thread) against wrk on the hot page, same round\n")
        print("| side | loadgen req/s | wrk req/s | loadgen / wrk | loadgen threads busy | running or waiting "
              "for a core | loadgen cores | loadgen CPU per request | loadgen's verdict |")
        print("|" + " --- |" * 9)
        for side in ORDER:
            per = rows["client"].get(side)
            if not per:
                continue
            ratios = [num(v["loadgen_rps"]) / num(v["wrk_rps"]) for v in per.values() if num(v.get("wrk_rps"))]
            print(f"| {NAMES[side]} | {fmt_list(rounds_of(per, 'loadgen_rps').values())} "
                  f"| {fmt_list(rounds_of(per, 'wrk_rps').values())} "
                  f"| {fmt_list(ratios, '×{:.2f}')} "
                  f"| {fmt_list([100 * x for x in rounds_of(per, 'busy').values()], '{:.0f} %')} "
                  f"| {fmt_list([100 * (x or 0) for x in rounds_of(per, 'demand').values()], '{:.0f} %')} "
                  f"| {fmt_list(rounds_of(per, 'cores').values(), '{:.2f}')} "
                  f"| {fmt_list(rounds_of(per, 'cpu_us').values(), '{:.0f} µs')} "
                  f"| {', '.join('CLIENT-BOUND' if v.get('bound') == 'true' else 'service' for v in per.values())} |")
        print()
    if "client-open" in rows:
        print("### loadgen open loop (Zipf mix) at the rates of comparisons 12 and 11.3\n")
        print("| side | rate | achieved | p99 ms | send lag p99 ms | threads busy | running or waiting | cores | verdict |")
        print("|" + " --- |" * 9)
        for side in ORDER:
            per = rows["client-open"].get(side)
            if not per:
                continue
            first = next(iter(per.values()))
            print(f"| {NAMES[side]} | {first['rate']}/s | {fmt_list(rounds_of(per, 'loadgen_rps').values())} "
                  f"| {fmt_list(rounds_of(per, 'p99_ms').values(), '{:.2f}')} "
                  f"| {fmt_list(rounds_of(per, 'send_lag_p99_ms').values(), '{:.2f}')} "
                  f"| {fmt_list([100 * x for x in rounds_of(per, 'busy').values()], '{:.0f} %')} "
                  f"| {fmt_list([100 * (x or 0) for x in rounds_of(per, 'demand').values()], '{:.0f} %')} "
                  f"| {fmt_list(rounds_of(per, 'cores').values(), '{:.2f}')} "
                  f"| {', '.join('CLIENT-BOUND' if v.get('bound') == 'true' else 'service' for v in per.values())} |")
        print()


def visible(value):
    return f"> wait (not seen)" if value in (None, "none") else f"{float(value):.0f} ms"


def main(directory):
    rows = load(f"{directory}/results.tsv")
    print(open(f"{directory}/setup.txt").read().strip().replace("\n", "  \n") + "\n")
    throughput(rows, "hot", "Hot page: user 1's first page, closed loop", [("bytes", ("bytes", "{:,.0f}"))])
    throughput(rows, "zipf", "Zipf mix at its maximum (loadgen's default mix)",
               [("PostgreSQL queries per page", ("queries_per_page", "{:.4f}"))])
    simple(rows, "stampede", "Cold stampede: 200 concurrent reads of an uncached page",
           [("200s", "ok", str), ("backend queries", "backend_queries", str), ("seconds", "seconds", str)])
    simple(rows, "fresh", "A post, then reads through the same side: time until it is on the author's page",
           [("visible after", "visible_ms", visible)])
    simple(rows, "fresh-feed", "... and on a follower's home feed",
           [("visible after", "visible_ms", visible), ("author's followers", "author_followers", str)])
    simple(rows, "stale", "10 s of reads at 50/s with 2 posts a second: stale reads",
           [("stale share", "share", lambda v: f"{100 * float(v):.1f} %"), ("judged reads", "judged", str)])
    client(rows)
    cores = [(num(v.get("wrk_cores")), test, side)
             for test in ("hot", "zipf", "client") for side, per in rows.get(test, {}).items() for v in per.values()]
    cores = [c for c in cores if c[0] is not None]
    if cores:
        worst = max(cores)
        print(f"Client check: wrk used at most {worst[0]:.2f} cores ({worst[1]}, {worst[2]}), "
              f"median {statistics.median(c[0] for c in cores):.2f}, over its threads.  ")
    loads = [num(v.get("load")) for t in rows.values() for per in t.values() for v in per.values()]
    loads = [x for x in loads if x is not None]
    if loads:
        print(f"1-minute load average during the run: {min(loads):.2f} to {max(loads):.2f}.")


if __name__ == "__main__":
    main(sys.argv[1])
