#!/usr/bin/env python3
"""The measurements of benches/peers.sh that wrk cannot make: a cold stampede, freshness.

Standard library only. Each command prints one line that peers.sh parses:

  stampede URL N              N connections, opened first, then one GET each released at once
  fresh READ_URL WRITE_BASE AUTHOR [WAIT_S]
                              reads READ_URL until cached, posts as AUTHOR through WRITE_BASE,
                              then reads READ_URL every 5 ms until the post is on the page
  stale READ_URL WRITE_BASE AUTHOR SECONDS [WRITES_PER_S] [READS_PER_S]
                              reads READ_URL at a steady pace while posting as AUTHOR; a read is
                              stale when a post acknowledged before it was sent is not on it

  loadgen-report              a loadgen --json report on stdin, as one line of key=value pairs

Writes carry ADMIN_API_KEY from the environment (it may post as any user).
"""

import http.client
import json
import os
import sys
import threading
import time
import urllib.parse


def split(url):
    parts = urllib.parse.urlsplit(url)
    path = parts.path + ("?" + parts.query if parts.query else "")
    return parts.hostname, parts.port or 80, path or "/"


def get(conn, path):
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, response.read()


def page_ids(body):
    try:
        return {post["id"] for post in json.loads(body)["data"]}
    except (ValueError, KeyError, TypeError):
        return set()


def post(base, author, n):
    host, port, _ = split(base)
    conn = http.client.HTTPConnection(host, port, timeout=10)
    body = json.dumps({"user_id": author, "content": f"peers freshness probe {n} {time.time()}"})
    conn.request("POST", "/api/v1/posts", body=body, headers={
        "content-type": "application/json",
        "authorization": "Bearer " + os.environ["ADMIN_API_KEY"],
    })
    response = conn.getresponse()
    data = response.read()
    conn.close()
    if response.status != 201:
        raise SystemExit(f"post answered {response.status}: {data[:200]!r}")
    return json.loads(data)["id"]


def stampede(url, n):
    host, port, path = split(url)
    conns = [http.client.HTTPConnection(host, port, timeout=30) for _ in range(n)]
    for conn in conns:
        conn.connect()
    barrier = threading.Barrier(n)
    statuses = {}
    lock = threading.Lock()

    def one(conn):
        barrier.wait()
        try:
            status, _ = get(conn, path)
        except OSError as error:
            status = type(error).__name__
        with lock:
            statuses[status] = statuses.get(status, 0) + 1

    started = time.monotonic()
    threads = [threading.Thread(target=one, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.monotonic() - started
    ok = statuses.get(200, 0)
    print(f"STAMPEDE ok={ok} n={n} seconds={seconds:.3f} statuses={statuses}")


def fresh(read_url, write_base, author, wait_s):
    host, port, path = split(read_url)
    conn = http.client.HTTPConnection(host, port, timeout=10)
    for _ in range(5):  # cached on every side (the in-process tier admits a page after 4 reads)
        get(conn, path)
    new_id = post(write_base, author, 0)
    acked = time.monotonic()
    reads = 0
    while time.monotonic() - acked < wait_s:
        status, body = get(conn, path)
        reads += 1
        if status == 200 and new_id in page_ids(body):
            ms = 1000 * (time.monotonic() - acked)
            print(f"FRESH visible_ms={ms:.1f} reads={reads} post={new_id}")
            return
        time.sleep(0.005)
    print(f"FRESH visible_ms=none waited_s={wait_s} reads={reads} post={new_id}")


def stale(read_url, write_base, author, seconds, writes_per_s, reads_per_s):
    host, port, path = split(read_url)
    conn = http.client.HTTPConnection(host, port, timeout=10)
    for _ in range(5):
        get(conn, path)
    acked = []  # (monotonic ack time, id), in order
    stop = threading.Event()

    def writer():
        n = 0
        while not stop.is_set():
            new_id = post(write_base, author, n)
            acked.append((time.monotonic(), new_id))
            n += 1
            stop.wait(1.0 / writes_per_s)

    thread = threading.Thread(target=writer)
    thread.start()
    reads = stale_reads = judged = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sent = time.monotonic()
        latest = next((i for t, i in reversed(list(acked)) if t < sent), None)
        status, body = get(conn, path)
        reads += 1
        if latest is not None and status == 200:
            judged += 1
            if latest not in page_ids(body):
                stale_reads += 1
        time.sleep(max(0.0, 1.0 / reads_per_s - (time.monotonic() - sent)))
    stop.set()
    thread.join()
    share = stale_reads / judged if judged else 0.0
    print(f"STALE reads={reads} judged={judged} stale={stale_reads} share={share:.4f} "
          f"writes={len(acked)}")


def loadgen_report(report):
    client = report["client"]
    lag = report["send_lag_ms"] or {"p99": 0.0}
    print(f"loadgen_rps={report['requests_per_sec']:.1f} p99_ms={report['latency_ms']['p99']:.3f} "
          f"send_lag_p99_ms={lag['p99']:.3f} busy={client['busy_share']:.3f} "
          f"cores={client['cores_used']:.3f} cpu_us={client['cpu_us_per_request']:.1f} "
          f"demand={client['demand_share']:.3f} wait_s={client['run_queue_wait_secs']:.3f} "
          f"bound={str(client['client_bound']).lower()}")


def main(argv):
    command, args = argv[1], argv[2:]
    if command == "stampede":
        stampede(args[0], int(args[1]))
    elif command == "fresh":
        fresh(args[0], args[1], int(args[2]), float(args[3]) if len(args) > 3 else 10.0)
    elif command == "stale":
        stale(args[0], args[1], int(args[2]), float(args[3]),
              float(args[4]) if len(args) > 4 else 2.0, float(args[5]) if len(args) > 5 else 50.0)
    elif command == "loadgen-report":
        loadgen_report(json.load(sys.stdin))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
