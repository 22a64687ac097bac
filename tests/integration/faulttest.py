"""Helpers of the robustness tests (test_faults.py, test_hostile.py,
test_lifecycle.py): filesystem calls timed one system call at a time in a
child process, the server's view of a project, and a small HTTP proxy
that can do what the fake server's fault modes cannot (let a request be
processed and then lose the answer, or rewrite an answer byte for byte).

Nothing here prints an API key.
"""

import base64
import http.client
import json
import os
import re
import select
import socket
import struct
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from phfstest import (PYTHON, ProbeResult, action_file, is_mounted,
                      jq_render, state_map)

# The deadline the fault tests mount with (-o timeout=), and what a single
# system call may take beyond it before it counts as past its deadline:
# process start-up, FUSE round trips and scheduling on a busy machine,
# never a retry.
TIMEOUT = 3
DEADLINE_SLACK = 2.0
RETRIES = 4                      # phfs's default -o retries

# The project the tests work in: project 2 of the fake server has plain
# names (project 1 has the awkward ones).
PID = 2
PDIR = "2-mobile"

DETAIL_RE = r"^/api/projects/%d/actions/(\d+)/?$"
LIST_RE = r"^/api/projects/%d/actions/?$"
ANY_RE = r"^/api/projects/%d/actions/(\d+/?)?$"


def detail_re(pid=PID, aid=None):
    if aid is None:
        return DETAIL_RE % pid
    return r"^/api/projects/%d/actions/%d/?$" % (pid, aid)


def list_re(pid=PID):
    return LIST_RE % pid


def any_re(pid=PID):
    return ANY_RE % pid


# ------------------------------------------------------------ child calls

# Runs a list of steps on a mount and times every system call on its own.
# Reads a JSON list of steps on stdin, prints a JSON list of results.
CHILD = r'''
import base64, errno, json, os, sys, time

def ename(e):
    return errno.errorcode.get(e.errno, str(e.errno))

class Failed(Exception):
    pass

def main():
    spec = json.loads(sys.stdin.read())
    out = []
    for st in spec:
        op, p = st["op"], st.get("path")
        r = {"op": op, "path": p, "calls": [], "errno": None,
             "failed": None, "t0": time.time()}

        def call(name, fn, *a):
            t0 = time.monotonic()
            try:
                v = fn(*a)
            except OSError as e:
                r["calls"].append([name, time.monotonic() - t0, ename(e)])
                if r["errno"] is None:
                    r["errno"], r["failed"] = ename(e), name
                    r["strerror"] = e.strerror
                raise Failed()
            r["calls"].append([name, time.monotonic() - t0, None])
            return v

        try:
            if op == "sleep":
                time.sleep(st["seconds"])
            elif op == "stat":
                s = call("stat", os.stat, p)
                r["size"] = s.st_size
            elif op == "listdir":
                names = call("listdir", os.listdir, os.fsencode(p))
                r["names"] = [base64.b64encode(n).decode() for n in names]
            elif op == "read":
                fd = call("open", os.open, p, os.O_RDONLY)
                chunks = []
                try:
                    while True:
                        b = call("read", os.read, fd, 1 << 16)
                        if not b:
                            break
                        chunks.append(b)
                finally:
                    try:
                        call("close", os.close, fd)
                    except Failed:
                        pass
                r["data"] = base64.b64encode(b"".join(chunks)).decode()
            elif op == "write":
                flags = os.O_WRONLY | {
                    "trunc": os.O_TRUNC,
                    "create": os.O_CREAT | os.O_EXCL,
                    "any": os.O_CREAT | os.O_TRUNC}[st.get("mode", "trunc")]
                data = base64.b64decode(st["data"])
                fd = call("open", os.open, p, flags, 0o644)
                try:
                    # Optionally hold the open file until a path exists.
                    while st.get("wait_for") and not os.path.exists(
                            st["wait_for"]):
                        time.sleep(0.01)
                    done = 0
                    while done < len(data):
                        done += call("write", os.write, fd, data[done:])
                finally:
                    try:
                        call("close", os.close, fd)
                    except Failed:
                        pass
            elif op == "unlink":
                call("unlink", os.unlink, p)
            elif op == "rename":
                call("rename", os.rename, p, st["to"])
            else:
                raise SystemExit("unknown op %r" % op)
        except Failed:
            pass
        r["t1"] = time.time()
        out.append(r)
    json.dump(out, sys.stdout)

main()
'''


class Step(ProbeResult):
    """One step's result: op, path, errno (a name or None), failed (the
    system call that failed), calls [[syscall, seconds, errno]], data."""

    @property
    def names(self):
        return sorted(os.fsdecode(base64.b64decode(n))
                      for n in self.get("names") or ())


def _steps_json(steps):
    out = []
    for s in steps:
        s = dict(s)
        if isinstance(s.get("data"), (bytes, str)):
            d = s["data"]
            s["data"] = base64.b64encode(d.encode() if isinstance(d, str)
                                         else d).decode()
        out.append(s)
    return json.dumps(out).encode()


class FsRun:
    """Steps running in a child process (see start_fs)."""

    def __init__(self, steps, cwd=None):
        self.steps = steps
        self.started = time.monotonic()
        self.proc = subprocess.Popen([PYTHON, "-c", CHILD], cwd=cwd,
                                     stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE,
                                     start_new_session=True)
        self._io = {}
        self._thread = threading.Thread(target=self._talk,
                                        args=(_steps_json(steps),),
                                        daemon=True)
        self._thread.start()
        self._out = None

    def _talk(self, data):
        out, err = self.proc.communicate(input=data)
        self._io["out"], self._io["err"] = out, err

    def result(self, timeout, context=""):
        """The list of Steps; fails the test when the child is not done
        within @timeout seconds after it started (a hung call), killing
        it."""
        if self._out is not None:
            return self._out
        left = max(0.1, timeout - (time.monotonic() - self.started))
        self._thread.join(left)
        if self._thread.is_alive():
            try:
                os.killpg(self.proc.pid, 9)
            except ProcessLookupError:
                pass
            self._thread.join(10)
            pytest.fail("filesystem calls did not return within %ss (hung?):"
                        " %s\n%s" % (timeout, _show_steps(self.steps),
                                     context))
        if self.proc.returncode != 0:
            pytest.fail("filesystem child crashed (exit %s): %s\n%s" % (
                self.proc.returncode,
                self._io["err"].decode(errors="replace")[-2000:], context))
        self._out = [Step(s) for s in json.loads(self._io["out"])]
        return self._out


def _show_steps(steps):
    return ", ".join("%s %s" % (s["op"], s.get("path", "")) for s in steps)


def start_fs(steps, cwd=None):
    return FsRun(steps, cwd=cwd)


def fs(steps, timeout=60, context=""):
    """Runs @steps (dicts: op, path, data, mode, to, seconds) in a child
    process and returns their results."""
    return start_fs(steps).result(timeout, context=context)


def check_deadline(results, context, timeout=TIMEOUT, what=""):
    """Fails when one system call took longer than -o timeout plus the
    slack: each FUSE call has one deadline, retries included."""
    limit = timeout + DEADLINE_SLACK
    for r in results:
        for name, secs, err in r["calls"]:
            if secs > limit:
                pytest.fail("%s(%s) took %.2fs with -o timeout=%s (limit "
                            "%.1fs, errno %s)%s\n%s" % (
                                name, r.get("path"), secs, timeout, limit,
                                err, (" " + what) if what else "", context))


# ------------------------------------------------------------ server side


def named(server, pid, name, live=True):
    """Actions of project @pid named @name (live ones unless live=False)."""
    return [a for a in state_map(server)[pid].values()
            if a.get("name") == name and (not live or not a.get("deleted"))]


def show(reqs):
    return "\n".join("    #%s %.3f %s %s -> %s %s" % (
        r["seq"], r["time"], r["method"], r["path"], r["status"],
        json.dumps(r.get("body"), ensure_ascii=False)[:200])
        for r in reqs) or "    (none)"


def ok(r):
    return 200 <= r["status"] < 300


# ------------------------------------------------------------ tree side


def file_of(m, aid, pdir=PDIR):
    return action_file(m, aid, pdir)


def render(obj):
    """What `jq .` prints for a server object."""
    return jq_render(json.dumps(obj, ensure_ascii=False).encode())


def edited(text, field, value):
    obj = json.loads(text)
    obj[field] = value
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode()


def log_since(m, before):
    """Lines of .phfs/log that were not there in @before."""
    now = m.log_lines()
    # The log keeps the newest lines: find where the old tail ends.
    k = len(before)
    if k and now[:k] == before:
        return now[k:]
    tail = before[-3:]
    for i in range(len(now) - len(tail), -1, -1):
        if tail and now[i:i + len(tail)] == tail:
            return now[i + len(tail):]
    return now


def alive(m):
    """Fails when phfs exited or the mount is gone."""
    rc = m.proc.poll()
    if rc is not None or not is_mounted(m.path):
        pytest.fail("phfs is gone (exit %s, mounted %s)\n%s" % (
            rc, is_mounted(m.path), m.context()))


# ------------------------------------------------------------ the proxy


HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection",
       "proxy-authenticate", "proxy-authorization", "te", "trailer",
       "upgrade", "content-length"}


class Proxy:
    """An HTTP/1.1 proxy on a loopback port in front of the fake server.

    Every request is forwarded as is; a rule (method, path regex, count)
    can instead (all but "respond" only for requests the server answered
    with 2xx):
      "drop":    forward it, let the server answer, then reset the client
                 connection: the request was processed, the answer lost;
      "stall":   forward it, let the server answer, then hold the client
                 connection unanswered until it gives up;
      "rewrite": forward it and pass the answer's body through fn(bytes);
      "delay":   forward it, then hold the server's answer @seconds before
                 passing it on (an answer that is old when it arrives);
      "respond": answer (status, headers, body) without forwarding.
    The log lists what the proxy did: {method, path, action, status}.
    """

    def __init__(self, upstream):
        self.upstream = urlsplit(upstream)
        self.rules = []
        self.log = []
        self.arrivals = []           # (method, path, time) as requests come
        self.lock = threading.Lock()
        self.release = threading.Event()
        proxy = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                proxy._handle(self)

            do_POST = do_PATCH = do_PUT = do_DELETE = do_HEAD = do_GET

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.1},
                                       daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def add(self, action, method=None, path=None, count=1, fn=None,
            response=None, seconds=0):
        with self.lock:
            self.rules.append({"action": action, "method": method,
                               "regex": re.compile(path) if path else None,
                               "count": count, "fn": fn,
                               "response": response, "seconds": seconds})

    def clear(self):
        with self.lock:
            self.rules = []
        self.release.set()
        self.release = threading.Event()

    def close(self):
        self.clear()
        self.httpd.shutdown()
        self.httpd.server_close()

    def _take(self, method, path, status=None):
        """The first rule for this request: before forwarding (status
        None) only "respond" rules; after, the others, and only when the
        server processed the request (2xx): a 503 of a chaos run passes
        through untouched and the rule waits for the next request."""
        with self.lock:
            for r in self.rules:
                if status is None and r["action"] != "respond":
                    continue
                if status is not None and (r["action"] == "respond"
                                           or not 200 <= status < 300):
                    continue
                if ((r["method"] is None or r["method"] == method)
                        and (r["regex"] is None or r["regex"].search(path))):
                    r["count"] -= 1
                    if r["count"] <= 0:
                        self.rules.remove(r)
                    return r
        return None

    def _record(self, **kw):
        with self.lock:
            kw["time"] = time.time()
            self.log.append(kw)

    def arrived(self, method, path_re=None):
        with self.lock:
            return [a for a in self.arrivals if a[0] == method and (
                path_re is None or re.search(path_re, a[1]))]

    def _handle(self, h):
        path = urlsplit(h.path).path
        with self.lock:
            self.arrivals.append((h.command, path, time.time()))
        n = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(n) if n > 0 else None
        rule = self._take(h.command, path)
        if rule:
            action = rule["action"]
            status, headers, rbody = rule["response"]
            self._record(method=h.command, path=path, action=action,
                         status=status)
            return self._answer(h, status, list(headers), rbody)
        headers = {k: v for k, v in h.headers.items()
                   if k.lower() not in HOP}
        try:
            c = http.client.HTTPConnection(self.upstream.hostname,
                                           self.upstream.port, timeout=120)
            c.request(h.command, h.path, body=body, headers=headers)
            resp = c.getresponse()
            rbody = resp.read()
            rheaders = [(k, v) for k, v in resp.getheaders()
                        if k.lower() not in HOP]
            status = resp.status
            c.close()
        except (OSError, http.client.HTTPException):
            self._record(method=h.command, path=path, action="upstream-error",
                         status=0)
            h.close_connection = True
            return
        rule = self._take(h.command, path, status)
        action = rule["action"] if rule else "forward"
        self._record(method=h.command, path=path, action=action,
                     status=status)
        if action == "drop":
            h.close_connection = True
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    struct.pack("ii", 1, 0))
            h.connection.close()
            h.rfile.close()
            return
        if action == "stall":
            h.close_connection = True
            release = self.release
            while not release.is_set():
                try:
                    r, _, _ = select.select([h.connection], [], [], 0.2)
                    if r and not h.connection.recv(1, socket.MSG_PEEK):
                        return
                except (OSError, ValueError):
                    return
                if r:
                    release.wait(0.2)
            return
        if action == "rewrite":
            rbody = rule["fn"](rbody)
        if action == "delay":
            self.release.wait(rule["seconds"])
        self._answer(h, status, rheaders, rbody)

    @staticmethod
    def _answer(h, status, headers, body):
        try:
            h.send_response(status)
            for k, v in headers:
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            if h.command != "HEAD":
                h.wfile.write(body)
        except OSError:
            h.close_connection = True


@pytest.fixture
def proxy_factory():
    proxies = []

    def make(upstream):
        p = Proxy(upstream)
        proxies.append(p)
        return p

    yield make
    for p in proxies:
        p.close()
