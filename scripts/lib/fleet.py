"""Helper of `scripts/chaos.sh fleet` (scripts/lib/fleet.sh), stdlib only.

  probe       posts as one author through the balancer (each with an Idempotency-Key) and reads
              each back at once; reads that author's pages; the file it writes is what the suite's
              `verify` reads (chaos_helper.py)
  visibility  writes through one instance, reads through the others until each shows the write:
              how long an acknowledged write takes to be visible everywhere
  evaluate    the fleet's pass criteria, printed like the other scenarios', and result.json
"""
import argparse
import json
import os
import re
import signal
import sys
import threading
import time

# chaos.sh writes its helper beside the runs; its verify and summary read what this one writes.
sys.path.insert(0, os.environ.get("CHAOS_HELPER_DIR", "."))
from chaos_helper import Client, fmt_ms, load_json, page_ids  # noqa: E402


class Conn(Client):
    """chaos.sh's Client (a keep-alive connection that honours `Connection: close`), answering
    (status, headers, body) without the elapsed time."""

    def request(self, method, path, body=None, headers=None):
        return super().request(method, path, body, headers)[:3]


def post(conn, author, content, key):
    body = json.dumps({"user_id": author, "content": content})
    status, headers, data = conn.request("POST", "/api/v1/posts", body, {"idempotency-key": key})
    post_id = json.loads(data)["id"] if status == 201 else None
    return status, headers, post_id


def percentile(values, q):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


# ------------------------------------------------------------------------------------- probe

def probe(args):
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    reads, writes = [], []
    author, path = args.author, f"/api/v1/users/{args.author}/posts"

    def reader():
        c = Conn(args.url)
        while not stop.is_set():
            t = time.time()
            status, headers, _ = c.request("GET", path)
            reads.append([t, status, round((time.time() - t) * 1000, 2),
                          headers.get("x-cache", headers.get("error", ""))])
            time.sleep(max(0.0, 0.1 - (time.time() - t)))

    def writer():
        c, check = Conn(args.url, api_key=args.api_key), Conn(args.url)
        pending, n, period = [], 0, 1.0 / args.write_rate
        while not stop.is_set():
            t = time.time()
            n += 1
            status, headers, post_id = post(c, author, f"fleet probe {args.tag} {n}", f"fleet-probe-{args.tag}-{n}")
            record = {"t": t, "status": status, "ms": round((time.time() - t) * 1000, 2), "id": post_id,
                      "stale": None, "visible_after": None, "replayed": "idempotent-replayed" in headers}
            s2, h2, d2 = check.request("GET", f"{path}?limit=100")
            seen = set(page_ids(d2)) if s2 == 200 else None
            if post_id is not None:
                record["acked"] = time.time()
                if seen is not None:
                    record["stale"] = post_id not in seen
                    record["check_cache"] = h2.get("x-cache")
                    if record["stale"]:
                        pending.append(record)
                    else:
                        record["visible_after"] = 0.0
            writes.append(record)
            for r in list(pending):
                if seen is not None and r is not record and r["id"] in seen:
                    r["visible_after"] = round(time.time() - r["acked"], 3)
                    pending.remove(r)
            time.sleep(max(0.0, period - (time.time() - t)))

    threads = [threading.Thread(target=f, daemon=True) for f in (reader, writer)]
    for th in threads:
        th.start()
    while not stop.is_set() and not os.path.exists(args.stop):
        time.sleep(0.1)
    stop.set()
    for th in threads:
        th.join(timeout=6)
    with open(args.out, "w") as f:
        json.dump({"reads": reads, "writes": writes, "samples": []}, f)


# -------------------------------------------------------------------------------- visibility

def visibility(args):
    """Per write: each reader's page read first (so each instance may hold it in its tier), the
    post through the writer's instance, then every reader polled at once, each in a thread of its
    own, until the new id shows. A write is visible everywhere when the last reader has received a
    page with it: the time from the 201 to that response, which includes one read's round trip."""
    writer = Conn(args.writer, api_key=args.api_key)
    readers = [Conn(u) for u in args.readers.split(",")]
    page = f"/api/v1/users/{args.author}/posts?limit={args.limit}&offset=0"
    rows, failed, period = [], 0, 1.0 / args.rate

    def poll(reader, post_id, acked, out):
        stale, polls = None, 0
        while time.monotonic() - acked < args.timeout:
            status, headers, data = reader.request("GET", page)
            polls += 1
            if status == 200 and post_id in page_ids(data):
                out.update(ms=(time.monotonic() - acked) * 1000, stale=stale, polls=polls)
                return
            stale = stale or headers.get("x-cache", str(status))
        out.update(ms=None, stale=stale, polls=polls)

    for n in range(1, args.count + 1):
        started = time.time()
        for r in readers:
            r.request("GET", page)
        _, _, post_id = post(writer, args.author, f"fleet visibility {args.tag} {n}", f"fleet-vis-{args.tag}-{n}")
        acked = time.monotonic()
        if post_id is None:
            failed += 1
            continue
        outs = [{} for _ in readers]
        threads = [threading.Thread(target=poll, args=(r, post_id, acked, o)) for r, o in zip(readers, outs)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        seen = [o["ms"] for o in outs]
        rows.append({"id": post_id, "ms": None if None in seen else max(seen), "per_reader_ms": seen,
                     "stale_cache": [o["stale"] for o in outs], "polls": [o["polls"] for o in outs]})
        time.sleep(max(0.0, period - (time.time() - started)))
    visible = [r["ms"] for r in rows if r["ms"] is not None]
    stale = [x for r in rows for x in r["stale_cache"] if x]
    result = {
        "writes": args.count, "acked": len(rows), "failed": failed,
        "never_visible": sum(1 for r in rows if r["ms"] is None), "timeout_s": args.timeout,
        "p50_ms": percentile(visible, 0.50), "p99_ms": percentile(visible, 0.99),
        "max_ms": max(visible, default=None),
        "stale_on_first_read": sum(1 for r in rows if any(r["stale_cache"])),
        "stale_first_read_cache": {c: stale.count(c) for c in set(stale)},
        "rows": rows,
    }
    with open(args.out, "w") as f:
        json.dump(result, f)
    print(f"visibility: {len(rows)} writes acknowledged, p50 {fmt_ms(result['p50_ms'])}, p99 "
          f"{fmt_ms(result['p99_ms'])}, max {fmt_ms(result['max_ms'])}", file=sys.stderr)


# ---------------------------------------------------------------------------------- evaluate

# An `option httplog` line: backend/server timers status bytes cookies termination-state
# connections/retries queues "method ...". A `+` before the retries: sent to another server.
HTTPLOG = re.compile(r'(\S+)/(\S+) -?\d+/-?\d+/-?\d+/-?\d+/\+?\d+ (\d{3}) \d+ \S+ \S+ (\S{4}) '
                     r'\d+/\d+/\d+/\d+/(\+?)(\d+) \d+/\d+ "(\S+) ')


def balancer_log(path):
    """Requests HAProxy logged, by status, those it sent more than once, and the answers it made
    itself because no instance answered (a termination state other than `-`)."""
    out = {"requests": 0, "by_status": {}, "retried": 0, "redispatched": 0, "retried_posts": 0,
           "balancer_errors": 0}
    try:
        lines = open(path, errors="replace").read().splitlines()
    except OSError:
        return out
    for line in lines:
        m = HTTPLOG.search(line)
        if not m or m.group(1) != "hotfeed":
            continue
        status, state, plus, retries, method = m.group(3), m.group(4), m.group(5), int(m.group(6)), m.group(7)
        out["requests"] += 1
        out["by_status"][status] = out["by_status"].get(status, 0) + 1
        if retries > 0:
            out["retried"] += 1
            out["retried_posts"] += method == "POST"
        out["redispatched"] += plus == "+"
        out["balancer_errors"] += status.startswith("5") and state[0] != "-"
    return out


def evaluate(args):
    d = args.dir
    load = load_json(os.path.join(d, "load.json")) or {}
    vis = load_json(os.path.join(d, "visibility.json")) or {}
    probe_data = load_json(os.path.join(d, "probe.json")) or {"reads": [], "writes": []}
    ver = load_json(os.path.join(d, "verify.json")) or {}
    restarts = [json.loads(line) for line in open(os.path.join(d, "restarts.jsonl"))] \
        if os.path.exists(os.path.join(d, "restarts.jsonl")) else []
    lb = balancer_log(os.path.join(d, "haproxy.log"))
    dupes = int(open(os.path.join(d, "duplicates")).read().strip() or -1)
    crit = []

    def check(name, ok, measured, bound):
        crit.append({"criterion": name, "pass": bool(ok), "measured": measured, "bound": bound})

    reads = load.get("statuses") or {}
    writes = (load.get("writes") or {}).get("statuses") or {}
    def bad(statuses):
        return sum(v for k, v in statuses.items() if not k.startswith("2"))
    pr = probe_data["reads"]
    pw = probe_data["writes"]
    probe_bad_reads = sum(1 for r in pr if r[1] != 200)
    probe_bad_writes = sum(1 for w in pw if w["status"] != 201)
    n = args.instances
    check(f"restarts: each of the {n} instances got SIGTERM, drained, exited 0 and came back (marked UP by the balancer)",
          len(restarts) == n and all(r.get("exit") == 0 and r.get("up_s") is not None for r in restarts),
          "; ".join(f"#{r['instance']}: DOWN in the balancer {r.get('down_s')} s after SIGTERM, exited {r.get('exit')} after {r.get('exited_s')} s, UP {r.get('up_s')} s after the start" for r in restarts),
          f"{n} restarts, exit 0")
    check("the balancer took each instance out before its listener closed (DOWN before the drain ended)",
          restarts and all(r.get("down_s") is not None and r["down_s"] < args.drain for r in restarts),
          ", ".join(str(r.get("down_s")) + " s" for r in restarts), f"< SHUTDOWN_DRAIN_SECS ({args.drain} s)")
    check("reads: 0 failed (every loadgen and probe read a 2xx; no timeout, error or not sent)",
          bad(reads) == 0 and probe_bad_reads == 0 and sum(reads.values()) > 0,
          f"loadgen {bad(reads)} of {sum(reads.values()):,} ({json.dumps(reads)}); probe {probe_bad_reads} of {len(pr):,}", "0")
    acked_loadgen = (load.get("writes") or {}).get("created", 0)
    check("writes: 0 failed (every loadgen and probe post a 201)",
          bad(writes) == 0 and probe_bad_writes == 0 and sum(writes.values()) > 0,
          f"loadgen {bad(writes)} of {sum(writes.values()):,} ({json.dumps(writes)}); probe {probe_bad_writes} of {len(pw)}", "0")
    check("writes: 0 duplicated (no two rows with one content) and 0 lost (every 201 in PostgreSQL and readable)",
          dupes == 0 and not ver.get("probe_lost") and not ver.get("probe_by_id_bad")
          and ver.get("loadgen_rows", 0) >= acked_loadgen,
          f"{dupes} duplicated rows; loadgen {acked_loadgen} acknowledged, {ver.get('loadgen_rows', 0)} rows; probe {ver.get('probe_acked', 0)} acknowledged, {len(ver.get('probe_lost', []))} lost; the balancer sent {lb['retried_posts']} posts again",
          "0 and 0")
    acked = [w for w in pw if w["status"] == 201]
    stale_now = [w for w in acked if w.get("stale")]
    stale_max = max([w["visible_after"] or 0 for w in acked] or [0])
    unresolved = [w for w in stale_now if w.get("visible_after") is None and w is not (acked[-1] if acked else None)]
    missing = sum(len(v) for v in (ver.get("listing_missing_final") or {}).values())
    check(f"no stale read beyond {args.bound} s (L1_TTL_MS): each new post in its author's listing, read through the balancer",
          missing == 0 and stale_max <= args.bound and not unresolved,
          f"{ver.get('rows_since_start', 0)} posts of {ver.get('authors_checked', 0)} authors, {missing} missing after waiting; probe: {len(stale_now)} of {len(acked)} not on the page read right after the 201 (another instance's tier), longest {stale_max} s",
          f"{args.bound} s")
    vis_bound = 500 if args.ci else 50
    check(f"cross-instance visibility (written through one instance, read through the others): p99 <= {vis_bound} ms over >= {args.vis_min} writes",
          vis.get("acked", 0) >= args.vis_min and vis.get("never_visible", 1) == 0 and vis.get("failed", 1) == 0
          and vis.get("p99_ms") is not None and vis["p99_ms"] <= vis_bound,
          f"{vis.get('acked', 0)} writes: p50 {fmt_ms(vis.get('p50_ms'))}, p99 {fmt_ms(vis.get('p99_ms'))}, max {fmt_ms(vis.get('max_ms'))}; {vis.get('never_visible')} never visible within {vis.get('timeout_s')} s; {vis.get('stale_on_first_read')} stale on the first read after the 201 ({json.dumps(vis.get('stale_first_read_cache'))})",
          f"p99 {vis_bound} ms")
    ok = all(c["pass"] for c in crit)
    lat = load.get("latency_ms") or {}
    wlat = (load.get("writes") or {}).get("latency_ms") or {}
    result = {
        "scenario": "fleet", "pass": ok, "rate": args.rate, "write_rate": args.write_rate,
        "criteria": crit,
        "figures": {
            "reads": reads, "writes": writes,
            "latency_ms": {"during": lat}, "write_latency_ms": {"during": wlat},
            "hit_recovery_s": None, "verify": ver, "restarts": restarts, "balancer": lb,
            "duplicates": dupes,
            "visibility_ms": {k: vis.get(k) for k in ("acked", "p50_ms", "p99_ms", "max_ms", "never_visible", "stale_on_first_read")},
            "probe": {"writes": len(pw), "acked": len(acked), "stale_immediately": len(stale_now),
                      "stale_longest_s": stale_max, "reads": len(pr),
                      "replayed": sum(1 for w in pw if w.get("replayed"))},
        },
    }
    with open(os.path.join(d, "result.json"), "w") as f:
        json.dump(result, f, indent=1, default=str)
    for c in crit:
        print(f"  {'PASS' if c['pass'] else 'FAIL'}  fleet: {c['criterion']}\n        measured: {c['measured']}")
    print(f"        context: reads p50 {fmt_ms(lat.get('p50'))}, p99 {fmt_ms(lat.get('p99'))}, max {fmt_ms(lat.get('max'))}; "
          f"posts p99 {fmt_ms(wlat.get('p99'))}, max {fmt_ms(wlat.get('max'))}; balancer: {lb['requests']:,} requests logged "
          f"{json.dumps(lb['by_status'])}, {lb['retried']} sent again ({lb['redispatched']} to another instance), "
          f"{lb['balancer_errors']} answered by the balancer itself")
    print(f"  => fleet: {'PASS' if ok else 'FAIL'}")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("probe")
    a.add_argument("--url"); a.add_argument("--out"); a.add_argument("--stop")
    a.add_argument("--author", type=int, default=1); a.add_argument("--write-rate", type=float, default=2)
    a.add_argument("--api-key", default=""); a.add_argument("--tag", default="run")
    a = sub.add_parser("visibility")
    a.add_argument("--writer"); a.add_argument("--readers"); a.add_argument("--out")
    a.add_argument("--author", type=int, default=2); a.add_argument("--count", type=int, default=500)
    a.add_argument("--rate", type=float, default=20); a.add_argument("--limit", type=int, default=50)
    a.add_argument("--timeout", type=float, default=5); a.add_argument("--api-key", default="")
    a.add_argument("--tag", default="run")
    a = sub.add_parser("evaluate")
    a.add_argument("--dir"); a.add_argument("--instances", type=int, default=3)
    a.add_argument("--drain", type=float); a.add_argument("--bound", type=float)
    a.add_argument("--rate", type=float); a.add_argument("--write-rate", type=float)
    a.add_argument("--vis-min", type=int, default=500); a.add_argument("--ci", action="store_true")
    args = p.parse_args()
    {"probe": probe, "visibility": visibility, "evaluate": evaluate}[args.cmd](args)


if __name__ == "__main__":
    main()
