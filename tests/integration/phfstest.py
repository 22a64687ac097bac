"""Helpers of the phfs integration tests: the fake server and its control
API, a phfs mount in the foreground, filesystem calls in child processes
(so a hung mount costs one test, never the run), and what the tests expect
of names and content.

Nothing here prints an API key: output shown in a failure message has
every key redacted.
"""

import base64
import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import time
import unicodedata
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYTHON = "/usr/bin/python3"
PHFS_BIN = Path(os.environ.get("PHFS_BIN") or REPO / "build" / "phfs")
FAKE = REPO / "tests" / "fake_posthog.py"
PROBE = Path(__file__).resolve().with_name("fsprobe.py")
TEST_ROOT = Path(os.environ.get("PHFS_TEST_DIR") or "/var/tmp/phfs-tests")

# Seconds a mount or a server may take to come up. Generous: these are
# "did not hang" deadlines, never speed checks.
START_DEADLINE = 30
# Added to a phfs deadline (-o timeout=N) before a call counts as hung.
SLACK = 10


def q(args):
    """A shell command line for a list of arguments."""
    return " ".join(shlex.quote(str(a)) for a in args)


def run(cmd, timeout, cwd=None, env=None, input=None, check=False,
        what=None):
    """Runs @cmd in its own process group; kills the group at the deadline.

    A timeout fails the test with the command, so a hung mount costs one
    test, never the run.
    """
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.PIPE
                         if input is not None else subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True)
    try:
        out, err = p.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        _killpg(p)
        out, err = p.communicate()
        pytest.fail("%s did not finish within %ss (hung?): %s\n%s" % (
            what or "command", timeout, q(cmd) if isinstance(cmd, list)
            else cmd, (err or b"").decode(errors="replace")[-2000:]))
    res = subprocess.CompletedProcess(cmd, p.returncode, out, err)
    if check and p.returncode != 0:
        pytest.fail("%s failed (exit %s): %s\nstdout: %s\nstderr: %s" % (
            what or "command", p.returncode,
            q(cmd) if isinstance(cmd, list) else cmd,
            out.decode(errors="replace")[-2000:],
            err.decode(errors="replace")[-2000:]))
    return res


def _killpg(p):
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _unescape_mountinfo(s):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def is_mounted(path):
    """True when @path is a mount point, read from /proc (never stats the
    mount, which could block on a hung daemon)."""
    path = os.path.abspath(str(path))
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4 and _unescape_mountinfo(fields[4]) == path:
                return True
    return False


def mount_fstype(path):
    path = os.path.abspath(str(path))
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            if len(fields) > 4 and _unescape_mountinfo(fields[4]) == path:
                return right.split()[0]
    return None


def closed_port():
    """A loopback port nobody listens on."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def new_key():
    return "phx_" + secrets.token_urlsafe(33).replace("-", "a").replace(
        "_", "b")


def key_fragments(key):
    """Every 8-character window of @key: none of them may appear in any
    output (a redacted form shows at most phx_...abcd)."""
    return {key[i:i + 8] for i in range(len(key) - 7)}


def leaks_key(text, key):
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return any(f in text for f in key_fragments(key))


def assert_no_key(text, key, what):
    """Fails when 8 or more characters of @key appear in @text, without
    ever showing the key (an assert would print its arguments)."""
    if leaks_key(text, key):
        pytest.fail("the API key (8+ characters of it) appears in: %s"
                    % what, pytrace=False)


def redact(text, keys):
    for k in keys:
        text = text.replace(k, "phx_<redacted>")
        for frag in sorted(key_fragments(k), key=len, reverse=True):
            text = text.replace(frag, "<redacted>")
    return text


def b64names(names):
    return [base64.b64decode(n) for n in names]


class ProbeResult(dict):
    @property
    def errno(self):
        return self.get("errno")

    @property
    def data(self):
        d = self.get("data")
        return None if d is None else base64.b64decode(d)


def probe(op, path, *extra, timeout=60, context=""):
    """Runs a filesystem call on a mount in a child process (fsprobe.py).

    Fails the test when the call does not return within @timeout.
    """
    cmd = [PYTHON, str(PROBE), op, str(path)] + [str(e) for e in extra]
    res = run(cmd, timeout=timeout, what="filesystem call %s %s%s" % (
        op, path, ("\n" + context) if context else ""))
    if res.returncode != 0:
        pytest.fail("fsprobe %s %s crashed: %s\n%s" % (
            op, path, res.stderr.decode(errors="replace"), context))
    return ProbeResult(json.loads(res.stdout))


# ------------------------------------------------------------ environment


class Key:
    def __init__(self, scopes=("*",), projects=None, key=None):
        self.key = key or new_key()
        self.scopes = list(scopes)
        self.projects = projects

    def entry(self):
        return {"key": self.key, "scopes": self.scopes,
                "projects": self.projects}


class FakeServer:
    """The fake PostHog server on a loopback port, and its control API."""

    def __init__(self, workdir, projects=3, actions=20, seed=1, shape="count",
                 page_size=None, latency_ms=None, keys=None, extra=()):
        self.workdir = Path(workdir)
        self.projects = projects
        self.actions = actions
        self.seed = seed
        self.shape = shape
        self.page_size = page_size
        self.latency_ms = latency_ms
        self.keys = keys or [Key()]
        self.extra = list(extra)
        self.port = 0
        self.proc = None
        self.keys_file = self.workdir / "keys.json"
        self.port_file = self.workdir / "port"
        self.log_file = self.workdir / "server.log"
        self.write_keys()

    @property
    def key(self):
        return self.keys[0].key

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def write_keys(self, keys=None):
        if keys is not None:
            self.keys = keys
        fd = os.open(self.keys_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                     0o600)
        with os.fdopen(fd, "w") as f:
            json.dump([k.entry() for k in self.keys], f)
        os.chmod(self.keys_file, 0o600)

    def argv(self, port=None):
        a = [PYTHON, str(FAKE), "--port", str(self.port if port is None
                                             else port),
             "--port-file", str(self.port_file),
             "--projects", str(self.projects), "--actions", str(self.actions),
             "--seed", str(self.seed), "--list-shape", self.shape,
             "--keys-file", str(self.keys_file)]
        if self.page_size is not None:
            a += ["--page-size", str(self.page_size)]
        if self.latency_ms is not None:
            a += ["--latency-ms", str(self.latency_ms)]
        return a + self.extra

    def start(self, port=0):
        if self.port_file.exists():
            self.port_file.unlink()
        logf = open(self.log_file, "ab")
        self.proc = subprocess.Popen(self.argv(port), cwd=REPO,
                                     stdin=subprocess.DEVNULL, stdout=logf,
                                     stderr=logf, start_new_session=True)
        logf.close()
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline:
            if self.port_file.exists():
                txt = self.port_file.read_text().strip()
                if txt.isdigit() and int(txt) > 0:
                    self.port = int(txt)
                    return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        rc = self.proc.poll()
        self.stop()
        pytest.fail("fake server did not start (exit %s): %s\n%s" % (
            rc, q(self.argv(port)), self.log_text()[-3000:]), pytrace=False)

    def stop(self):
        """Kills the server (the port then refuses connections)."""
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)

    def restart(self, keys=None):
        """Stops the server and starts it again on the same port, with a
        fresh state (and new keys when given)."""
        self.stop()
        if keys is not None:
            self.write_keys(keys)
        port = self.port
        deadline = time.monotonic() + 20
        while True:
            self.start(port=port)
            if self.port == port:
                return self
            if time.monotonic() > deadline:
                pytest.fail("could not restart the fake server on port %d"
                            % port)
            self.stop()
            time.sleep(0.2)

    def log_text(self):
        try:
            t = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return redact(t, [k.key for k in self.keys])

    def repro(self):
        return "cd %s && %s &" % (q([REPO]), q(self.argv()))

    # -- control API (no auth, never logged as API requests)

    def control(self, method, path, body=None, timeout=15):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data,
                                     method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:
            pytest.fail("fake server control %s %s -> %s: %s" % (
                method, path, e.code, e.read()[:500]))
        return json.loads(raw) if raw.strip() else None

    def log(self):
        return self.control("GET", "/_control/log")["requests"]

    def requests(self, method=None, path_re=None, chaos=False):
        """API requests from the log (control calls excluded, and the 503s of a
        chaos run unless @chaos: phfs retries them, so what counts is what got
        through)."""
        out = []
        for r in self.log():
            if r["path"].startswith("/_control") or (r.get("chaos") and not chaos):
                continue
            if method and r["method"] != method:
                continue
            if path_re and not re.search(path_re, r["path"]):
                continue
            out.append(r)
        return out

    def clear_log(self):
        self.control("POST", "/_control/log/clear", {})

    def fail(self, count, mode, method=None, path=None, retry_after=None,
             stall_seconds=None):
        body = {"count": count, "mode": str(mode)}
        if method:
            body["method"] = method
        if path:
            body["path"] = path
        if retry_after is not None:
            body["retry_after"] = retry_after
        if stall_seconds is not None:
            body["stall_seconds"] = stall_seconds
        return self.control("POST", "/_control/fail", body)

    def fail_clear(self):
        return self.control("POST", "/_control/fail/clear", {})

    def latency(self, ms):
        return self.control("POST", "/_control/latency", {"ms": ms})

    def set_action(self, project, action_id, **fields):
        return self.control("POST", "/_control/action",
                            {"project": project, "id": action_id,
                             "set": fields})

    def create_action(self, project, **fields):
        return self.control("POST", "/_control/action",
                            {"project": project, "set": fields})

    def state(self):
        return self.control("GET", "/_control/state")

    def list_shape(self, shape, page_size=None):
        body = {"shape": shape}
        if page_size is not None:
            body["page_size"] = page_size
        return self.control("POST", "/_control/list_shape", body)

    def reset(self):
        return self.control("POST", "/_control/reset", {})

    def rate_limit(self, per_minute):
        return self.control("POST", "/_control/rate_limit",
                            {"per_minute": per_minute})

    # -- the API itself, as a client would see it

    def api(self, path, key=None, timeout=15):
        """GET @path with a key; returns (status, raw body). Logged by the
        server like any API request."""
        req = urllib.request.Request(self.url + path)
        req.add_header("Authorization", "Bearer " + (key or self.key))
        req.add_header("X-Fake-No-Chaos", "1")  # the test's own look, never failed
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    # -- the seeded data, from /_control/state

    def project_list(self):
        """[(id, name)] of every project."""
        return [(p["id"], p.get("name")) for p in _projects(self.state())]

    def actions_of(self, project, include_deleted=False):
        for p in _projects(self.state()):
            if p["id"] == project:
                acts = _actions(p)
                return [a for a in acts
                        if include_deleted or not a.get("deleted")]
        raise KeyError(project)


def action_file(m, aid, pdir):
    """The canonical file name of action @aid in the listing of @pdir."""
    for n in m.ls(pdir):
        if re.match(r"^%d(-.*)?\.json$" % aid, n):
            return n
    pytest.fail("action %d is not listed in %s\n%s" % (aid, pdir,
                                                       m.context()))


def state_map(server):
    """{project id: {action id: action}} of the server, soft-deleted
    actions included."""
    return {p["id"]: {a["id"]: a for a in _actions(p)}
            for p in _projects(server.state())}


def action_of(server, pid, aid):
    return state_map(server)[pid][aid]


def _projects(state):
    ps = state.get("projects") if isinstance(state, dict) else state
    if isinstance(ps, dict):
        ps = [dict(v, id=v.get("id", int(k))) for k, v in ps.items()]
    return ps


def _actions(project):
    acts = project.get("actions")
    if isinstance(acts, dict):
        acts = list(acts.values())
    return acts


class Mount:
    """One phfs process in the foreground and its mount point."""

    def __init__(self, workdir, argv, env, key, keys, server, mp):
        self.workdir = workdir
        self.argv = argv
        self.env = env
        self.key = key
        self.keys = keys
        self.server = server
        self.path = mp
        self.stderr_file = workdir / "phfs.stderr"
        self.stdout_file = workdir / "phfs.stdout"
        self.proc = None
        self.returncode = None
        self.unmounted = False

    # -- life

    def start(self):
        with open(self.stderr_file, "wb") as err, \
                open(self.stdout_file, "wb") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=REPO,
                                         stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=err,
                                         start_new_session=True)
        return self

    def wait_mounted_or_exit(self, deadline):
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if is_mounted(self.path):
                return "mounted"
            rc = self.proc.poll()
            if rc is not None:
                self.returncode = rc
                return "exited"
            time.sleep(0.05)
        return "hung"

    def wait_exit(self, timeout):
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def daemon_pids(self):
        """Pids of phfs processes serving this mount point (the daemon a
        run without -f forks), found by their command line."""
        pids = []
        want = os.fsencode(str(self.path))
        me = os.fsencode(str(PHFS_BIN))
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % d, "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if argv and argv[0] == me and want in argv:
                pids.append(int(d))
        return pids

    def unmount(self):
        """fusermount3 -u; then -uz and a kill if the daemon does not go.
        Returns the exit status of phfs (None if it had to be killed)."""
        if self.unmounted:
            return self.returncode
        self.unmounted = True
        mp = str(self.path)
        if is_mounted(mp):
            try:
                subprocess.run(["fusermount3", "-u", mp], timeout=15,
                               stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            if self.wait_exit(15) is None:
                self._kill()
        else:
            self.returncode = self.proc.returncode
        self._wait_daemons(15)
        if is_mounted(mp):
            subprocess.run(["fusermount3", "-uz", mp], timeout=15,
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            self._kill()
        self._wait_daemons(0)
        try:
            os.rmdir(mp)
        except OSError:
            pass
        return self.returncode

    def _wait_daemons(self, timeout):
        """Waits for the forked daemons of this mount to end, then kills
        the ones left (by pid)."""
        end = time.monotonic() + timeout
        while self.daemon_pids() and time.monotonic() < end:
            time.sleep(0.1)
        for pid in self.daemon_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            self.returncode = None

    # -- output (key redacted unless raw)

    def raw_stderr(self):
        return self.stderr_file.read_bytes()

    def raw_stdout(self):
        return self.stdout_file.read_bytes()

    def stderr_text(self):
        return redact(self.raw_stderr().decode(errors="replace"), self.keys)

    def stdout_text(self):
        return redact(self.raw_stdout().decode(errors="replace"), self.keys)

    def repro(self):
        """Commands a person can paste to see the same thing."""
        env = []
        for k in ("POSTHOG_HOST",):
            if k in self.env:
                env.append("%s=%s" % (k, shlex.quote(self.env[k])))
        if self.key is not None:
            idx = None
            if self.server:
                for i, k in enumerate(self.server.keys):
                    if k.key == self.key:
                        idx = i
            if idx is not None:
                env.insert(0, "POSTHOG_PERSONAL_API_KEY=\"$(jq -r '.[%d].key'"
                           " %s)\"" % (idx, shlex.quote(
                               str(self.server.keys_file))))
            elif self.key == "":
                env.insert(0, "POSTHOG_PERSONAL_API_KEY=")
            else:
                env.insert(0, "POSTHOG_PERSONAL_API_KEY=phx_a_key_the_server"
                           "_does_not_know")
        lines = []
        if self.server:
            lines.append(self.server.repro())
        lines.append("mkdir -p %s" % shlex.quote(str(self.path)))
        lines.append(" ".join(env + [q(self.argv)]))
        return "to reproduce:\n  " + "\n  ".join(lines)

    def context(self):
        return "%s\nphfs stderr (tail):\n%s" % (self.repro(),
                                               self.stderr_text()[-3000:])

    # -- filesystem calls, in child processes

    def p(self, *rel):
        return os.path.join(str(self.path), *[str(r) for r in rel])

    def probe(self, op, *rel, timeout=60, extra=()):
        return probe(op, self.p(*rel), *extra, timeout=timeout,
                     context=self.context())

    def ls(self, *rel, timeout=60):
        r = self.probe("listdir", *rel, timeout=timeout)
        if r.errno:
            pytest.fail("ls %s failed: %s\n%s" % (self.p(*rel), r.errno,
                                                  self.context()))
        return sorted(os.fsdecode(n) for n in b64names(r["names"]))

    def read(self, *rel, timeout=60):
        r = self.probe("read", *rel, timeout=timeout)
        if r.errno:
            pytest.fail("reading %s failed in %s: %s\n%s" % (
                self.p(*rel), r.get("failed"), r.errno, self.context()))
        return r.data

    def stat(self, *rel, timeout=60):
        r = self.probe("stat", *rel, timeout=timeout)
        if r.errno:
            pytest.fail("stat %s failed: %s\n%s" % (self.p(*rel), r.errno,
                                                    self.context()))
        return r["stat"]

    def walk(self, exclude=(".phfs/csv",), timeout=240):
        r = self.probe("walk", timeout=timeout, extra=exclude)
        return r

    def stats(self):
        """.phfs/stats as {name: int}."""
        out = {}
        for line in self.read(".phfs", "stats").decode().splitlines():
            parts = line.split()
            if len(parts) == 2 and re.fullmatch(r"-?\d+", parts[1]):
                out[parts[0]] = int(parts[1])
        return out

    def log_lines(self):
        return self.read(".phfs", "log").decode(errors="replace").splitlines()

    def sh(self, script, timeout=120, check=True):
        """Runs a shell script with the mount point as working directory."""
        res = run(["bash", "-c", script], timeout=timeout, cwd=str(self.path),
                  what="shell on the mount")
        if check and res.returncode != 0:
            pytest.fail("shell script failed (exit %d): %s\nstdout: %s\n"
                        "stderr: %s\n%s" % (
                            res.returncode, script,
                            res.stdout.decode(errors="replace")[-2000:],
                            res.stderr.decode(errors="replace")[-2000:],
                            self.context()))
        return res


def base_env():
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("POSTHOG_")
           and k.lower() not in ("http_proxy", "https_proxy", "all_proxy",
                                 "no_proxy")}
    return env


def parse_time(s):
    """Seconds since the epoch of an ISO-8601 time from the server."""
    s = s.strip()
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    return datetime.fromisoformat(s).timestamp()


def jq_render(raw):
    """What `jq .` prints for @raw bytes."""
    res = run(["jq", "."], timeout=30, input=raw, what="jq .")
    assert res.returncode == 0, res.stderr
    return res.stdout


# ------------------------------------------------------------ names


SLUG_MAX = 64
ACTION_FILE_RE = re.compile(rb"^([1-9][0-9]*)(?:-(.+))?\.json$", re.S)
PROJECT_DIR_RE = re.compile(rb"^([1-9][0-9]*)(?:-(.+))?$", re.S)


def ref_slugs(name):
    """The slugs DESIGN.md allows for @name, as a set of candidates, or
    None when the rule leaves room for interpretation (non-ASCII symbols,
    marks and digits, lone surrogates).

    ASCII letters are lowercased and ASCII digits kept, non-ASCII letters
    kept (or lowercased), every run of other characters becomes one '-', '-' and '.' are
    trimmed at both ends; a slug longer than 64 bytes is cut at a
    character boundary (a '-' left at the end of a cut may be dropped).
    """
    if name is None:
        return {""}
    out, dash = [], False
    for ch in name:
        if ch.isascii():
            keep = ch.isalnum()
        else:
            cat = unicodedata.category(ch)
            if cat.startswith("L"):
                keep = True
            elif cat[0] in "PZ" or cat == "Cc":
                keep = False
            else:
                return None
        if keep:
            if dash and out:
                out.append("-")
            dash = False
            out.append(ch.lower() if ch.isascii() else ch)
        else:
            dash = True
    kept = "".join(out).strip("-.")
    # DESIGN.md says non-ASCII letters are kept, and shows "Регистрация"
    # as `регистрация`: both readings are accepted.
    res = set()
    for full in (kept, kept.lower()):
        b = full.encode()
        if len(b) <= SLUG_MAX:
            res.add(full)
        else:
            cut = b[:SLUG_MAX].decode("utf-8", "ignore")
            res |= {cut, cut.rstrip("-.")}
    return res


def ref_action_files(aid, name):
    """Allowed canonical file names (str) of action @aid, or None."""
    slugs = ref_slugs(name)
    if slugs is None:
        return None
    return {("%d-%s.json" % (aid, s)) if s else "%d.json" % aid
            for s in slugs}


def ref_project_dirs(pid, name):
    slugs = ref_slugs(name)
    if slugs is None:
        return None
    return {("%d-%s" % (pid, s)) if s else "%d" % pid for s in slugs}


def name_problems(bname, kind):
    """What is wrong with a file name (bytes) from a listing: [] if it is
    safe. @kind is "action" or "project"."""
    bad = []
    try:
        text = bname.decode("utf-8")
    except UnicodeDecodeError:
        return ["not valid UTF-8"]
    if b"/" in bname or b"\0" in bname:
        bad.append("contains / or NUL")
    if text[:1] in (".", "-"):
        bad.append("starts with . or -")
    if any(unicodedata.category(c) == "Cc" for c in text):
        bad.append("contains a control character")
    rx = ACTION_FILE_RE if kind == "action" else PROJECT_DIR_RE
    m = rx.match(bname)
    if not m:
        bad.append("not <id>[-<slug>]%s" % (".json" if kind == "action"
                                             else ""))
        return bad
    slug = m.group(2)
    if slug is not None:
        if len(slug) > SLUG_MAX:
            bad.append("slug longer than %d bytes (%d)" % (SLUG_MAX,
                                                           len(slug)))
        if slug[:1] in (b".", b"-"):
            bad.append("slug starts with . or -")
        if slug == b"":
            bad.append("empty slug after '-'")
    return bad


def id_of(name):
    """The id a canonical file or directory name starts with."""
    m = re.match(r"^([1-9][0-9]*)", name)
    return int(m.group(1)) if m else None


def by_id(names):
    """{id: name} of a listing; fails on two names with one id."""
    out = {}
    for n in names:
        i = id_of(n)
        assert i is not None, "name without an id: %r" % n
        assert i not in out, "two entries for id %d: %r, %r" % (i, out[i], n)
        out[i] = n
    return out


# ------------------------------------------------------------ no network


NETNS_HELPER = Path(__file__).resolve().with_name("netns_probe.py")


def run_isolated(argv, env, mountpoint, timeout=60, proxy=False):
    """Runs phfs in a network namespace of its own that only has loopback
    (so nothing can leave the machine), optionally with $https_proxy
    pointing at a recorder of CONNECT requests on that loopback.

    Returns {"rc", "stderr", "stdout", "connects", "mounted", "elapsed"}.
    """
    spec = {"argv": [str(a) for a in argv], "env": env,
            "mountpoint": str(mountpoint), "timeout": timeout,
            "proxy": proxy}
    res = run(["unshare", "--net", "--", PYTHON, str(NETNS_HELPER)],
              timeout=timeout + 30, input=json.dumps(spec).encode(),
              what="phfs in an isolated network namespace")
    if res.returncode != 0:
        pytest.fail("netns helper failed (exit %d): %s" % (
            res.returncode, res.stderr.decode(errors="replace")[-2000:]))
    out = json.loads(res.stdout)
    out["stderr"] = base64.b64decode(out["stderr"])
    out["stdout"] = base64.b64decode(out["stdout"])
    return out
