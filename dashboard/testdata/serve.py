#!/usr/bin/env python3
"""Development server for the dashboard, before (or without) the Rust endpoint.

Serves dashboard/{index.html,app.js,app.css} at /dashboard, /dashboard/app.js, /dashboard/app.css
as the service will, and GET /api/v1/admin/stats from the sample files given, moving on to the
next sample every --every seconds (the last one stays), with the rates jittered by a few per cent
so the chart moves. Stdlib only; for development checks, never used by the browser test.

    python3 dashboard/testdata/serve.py                                  # healthy.json on :8099
    python3 dashboard/testdata/serve.py --every 8 healthy.json master-killed.json after-failover.json
    python3 dashboard/testdata/serve.py --down-after 10                  # stats answer 503 after 10 s
"""
import argparse
import json
import os
import random
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
DASH = os.path.dirname(HERE)
FILES = {
    "/dashboard": ("index.html", "text/html; charset=utf-8"),
    "/dashboard/": ("index.html", "text/html; charset=utf-8"),
    "/dashboard/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/dashboard/app.css": ("app.css", "text/css; charset=utf-8"),
}


def jitter(doc, rnd):
    def j(x):
        return round(x * rnd.uniform(0.92, 1.08), 1) if isinstance(x, (int, float)) and x else x

    for n in doc.get("nodes") or []:
        for k in ("commands_per_sec", "round_trips_per_sec"):
            n[k] = j(n.get(k))
    pages = doc.get("pages") or {}
    for k in ("per_sec", "p50_ms", "p99_ms"):
        pages[k] = j(pages.get(k))
    doc["at"] = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return doc


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("samples", nargs="*", default=["healthy.json"], help="files in dashboard/testdata/")
    p.add_argument("--port", type=int, default=8099)
    p.add_argument("--every", type=float, default=10.0, help="seconds per sample")
    p.add_argument("--down-after", type=float, default=None, help="answer 503 from then on")
    args = p.parse_args()
    samples = [json.load(open(os.path.join(HERE, s))) for s in args.samples]
    start = time.monotonic()
    rnd = random.Random(1)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            path = self.path.split("?", 1)[0]
            elapsed = time.monotonic() - start
            if path == "/api/v1/admin/stats":
                if args.down_after is not None and elapsed >= args.down_after:
                    return self.send("503 down", "text/plain", status=503)
                doc = json.loads(json.dumps(samples[min(int(elapsed // args.every), len(samples) - 1)]))
                return self.send(json.dumps(jitter(doc, rnd)), "application/json")
            if path in FILES:
                name, ctype = FILES[path]
                with open(os.path.join(DASH, name), encoding="utf-8") as f:
                    return self.send(f.read(), ctype)
            self.send("not found", "text/plain", status=404)

        def send(self, body, ctype, status=200):
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    print(f"dashboard dev server on http://127.0.0.1:{args.port}/dashboard ({', '.join(args.samples)})", flush=True)
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
