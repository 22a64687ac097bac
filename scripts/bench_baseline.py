#!/usr/bin/python3
"""What a user does without phfs to find the actions that mention a word:
list every project, list each project's actions, GET every action one by
one over a single kept-alive connection, and search each JSON body.

    POSTHOG_PERSONAL_API_KEY=phx_... scripts/bench_baseline.py [--json] \
        [--pattern pageview] [--timeout SECONDS] [--lists-only N] URL

--lists-only N measures the floor of a cold grep instead: the project list,
then every project's listing over N kept-alive connections in parallel (a
paginated listing: its first page, then the others in parallel once the
count is known), the bodies searched as they are; no GET per action.

URL is the base URL of the PostHog instance (http://127.0.0.1:PORT for the
fake server). The key is read from $POSTHOG_PERSONAL_API_KEY only. Prints
the wall time, the number of requests and the matching actions; with
--json, one JSON object on stdout:

    {"seconds", "requests", "projects", "actions", "matches": [[project, id]],
     "maxrss_kib"}

Exits 1 on any error (a non-200 answer, a network error, a bad body).
Standard library only.
"""

import argparse
import http.client
import json
import os
import resource
import sys
import threading
import time
from urllib.parse import parse_qs, urlsplit


class Client:
    """One HTTP/1.1 connection, kept alive across requests."""

    def __init__(self, url, key, timeout):
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError("URL must be http(s)://HOST[:PORT]")
        cls = (http.client.HTTPSConnection if u.scheme == "https"
               else http.client.HTTPConnection)
        self.conn = cls(u.hostname, u.port, timeout=timeout)
        self.prefix = u.path.rstrip("/")
        self.headers = {"Authorization": "Bearer " + key,
                        "Accept": "application/json"}
        self.requests = 0
        self.connects = 0

    def get(self, path):
        """GET @path (absolute path with query); returns the raw body.
        Reconnects once if the server closed the kept-alive connection
        before this request was sent."""
        for attempt in (0, 1):
            if self.conn.sock is None:
                self.connects += 1
            try:
                self.conn.request("GET", path, headers=self.headers)
                resp = self.conn.getresponse()
                body = resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError,
                    ConnectionResetError):
                self.conn.close()
                if attempt:
                    raise
                continue
            self.requests += 1
            if resp.status != 200:
                raise RuntimeError("GET %s: HTTP %d: %s" % (
                    path, resp.status, body[:300].decode(errors="replace")))
            return body
        raise AssertionError("unreachable")

    def get_json(self, path):
        return json.loads(self.get(path))

    def pages(self, path):
        """Every item of a list endpoint, following DRF's "next" links.
        Accepts the three list shapes ([...], {results}, {count, results,
        next})."""
        out = []
        while path:
            doc = self.get_json(path)
            if isinstance(doc, list):
                out.extend(doc)
                break
            out.extend(doc.get("results") or [])
            nxt = doc.get("next")
            if not nxt:
                break
            u = urlsplit(nxt)
            path = u.path + ("?" + u.query if u.query else "")
        return out

    def close(self):
        self.conn.close()


def path_of(link):
    u = urlsplit(link)
    return u.path + ("?" + u.query if u.query else "")


def listing_paths(first_path, doc):
    """The remaining page paths of a listing whose first page is @doc: all
    of them when it gives a count and a limit, else None (follow its
    "next" links one after another)."""
    if not isinstance(doc, dict) or not doc.get("next"):
        return []
    q = parse_qs(urlsplit(doc["next"]).query)
    if "count" not in doc or "limit" not in q:
        return None
    limit, count = int(q["limit"][0]), int(doc["count"])
    return ["%s?limit=%d&offset=%d" % (first_path, limit, off)
            for off in range(limit, count, limit)]


def run_lists(url, key, pattern, timeout, nconn):
    """The floor of a cold grep: every listing with @nconn requests in
    flight, no GET per action. "matches" counts the listing bodies that
    mention @pattern."""
    needle = pattern.encode()
    t0 = time.perf_counter()
    clients = [Client(url, key, timeout) for _ in range(nconn)]
    lock = threading.Condition()
    bodies, errors = [], []
    try:
        prefix = clients[0].prefix
        projects = clients[0].pages(prefix + "/api/projects/")
        todo = ["%s/api/projects/%d/actions/" % (prefix, p["id"])
                for p in projects]

        def fetch(c, path):
            body = c.get(path)
            got, more = [body], []
            if "offset=" not in path:  # a first page
                doc = json.loads(body)
                more = listing_paths(path, doc)
                while more is None and doc.get("next"):
                    body = c.get(path_of(doc["next"]))
                    got.append(body)
                    doc = json.loads(body)
                more = more or []
            return got, more

        busy = [0]  # requests in flight that may add pages

        def worker(c):
            while True:
                with lock:
                    while not todo and busy[0] and not errors:
                        lock.wait()
                    if not todo or errors:
                        return
                    path = todo.pop()
                    busy[0] += 1
                try:
                    got, more = fetch(c, path)
                except Exception as e:  # noqa: BLE001 - raised below
                    got, more = [], []
                    with lock:
                        errors.append(e)
                with lock:
                    bodies.extend(got)
                    todo.extend(more)
                    busy[0] -= 1
                    lock.notify_all()

        threads = [threading.Thread(target=worker, args=(c,))
                   for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
    finally:
        for c in clients:
            c.close()
    seconds = time.perf_counter() - t0
    return {"seconds": seconds,
            "requests": sum(c.requests for c in clients),
            "connections": sum(c.connects for c in clients),
            "projects": len(projects), "actions": None,
            "matches": sum(needle in b for b in bodies),
            "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def run(url, key, pattern, timeout):
    needle = pattern.encode()
    t0 = time.perf_counter()
    c = Client(url, key, timeout)
    try:
        projects = c.pages(c.prefix + "/api/projects/")
        ids = []
        for p in projects:
            for a in c.pages("%s/api/projects/%d/actions/" % (c.prefix,
                                                               p["id"])):
                ids.append((p["id"], a["id"]))
        matches = []
        for pid, aid in ids:
            body = c.get("%s/api/projects/%d/actions/%d/" % (c.prefix, pid,
                                                             aid))
            if needle in body:
                matches.append([pid, aid])
    finally:
        c.close()
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "requests": c.requests,
            "connections": c.connects, "projects": len(projects),
            "actions": len(ids), "matches": matches,
            "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def main():
    ap = argparse.ArgumentParser(
        description="List every project and GET every action over one "
        "kept-alive connection, searching each body for a pattern.")
    ap.add_argument("url", help="base URL, e.g. http://127.0.0.1:8010")
    ap.add_argument("--pattern", default="pageview")
    ap.add_argument("--timeout", type=float, default=30,
                    help="socket timeout of one request, in seconds")
    ap.add_argument("--json", action="store_true",
                    help="print one JSON object instead of a summary")
    ap.add_argument("--lists-only", type=int, metavar="N",
                    help="only the listings, N connections in parallel")
    args = ap.parse_args()
    if args.lists_only is not None and args.lists_only < 1:
        ap.error("--lists-only needs N >= 1")
    key = os.environ.get("POSTHOG_PERSONAL_API_KEY")
    if not key:
        sys.exit("bench_baseline: set POSTHOG_PERSONAL_API_KEY")
    try:
        res = (run_lists(args.url, key, args.pattern, args.timeout,
                         args.lists_only) if args.lists_only
               else run(args.url, key, args.pattern, args.timeout))
    except (OSError, ValueError, RuntimeError, KeyError, TypeError,
            http.client.HTTPException) as e:
        sys.exit("bench_baseline: %s: %s" % (type(e).__name__, e))
    if args.json:
        json.dump(res, sys.stdout)
        sys.stdout.write("\n")
    elif args.lists_only:
        print("%d projects: %.3f s, %d requests over %d connection(s)" % (
            res["projects"], res["seconds"], res["requests"],
            res["connections"]))
    else:
        print("%d projects, %d actions, %d match %r: %.3f s, %d requests "
              "over %d connection(s), peak RSS %.1f MiB" % (
                  res["projects"], res["actions"], len(res["matches"]),
                  args.pattern, res["seconds"], res["requests"],
                  res["connections"], res["maxrss_kib"] / 1024))


if __name__ == "__main__":
    main()
