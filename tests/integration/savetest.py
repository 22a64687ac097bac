"""Helpers of the write-path tests (test_save.py, test_editors.py): what
the server holds before and after, the exact writes it got, the FUSE
requests phfs saw (from its -d trace), editors driven under tmux with real
keystrokes, and reproduction commands a person can paste.

A save must end with the action updated once: one PATCH carrying only the
changed fields, no POST, no PATCH {"deleted": true}, never a DELETE. GETs
are free (phfs reads the action before a PATCH to check for conflicts), so
the checks here are about every request that is not a GET.
"""

import copy
import json
import os
import re
import shlex
import shutil
import time
from pathlib import Path

import pytest

import phfstest
from phfstest import action_of, jq_render, q, run, state_map

DETAIL_RE = re.compile(r"^/api/projects/(\d+)/actions/(\d+)/?$")
LIST_RE = re.compile(r"^/api/projects/(\d+)/actions/?$")

# The project the tests write in, and a second one for moves across
# projects. Project 1 of the fake server has the awkward names; project 2
# ("2-mobile") has plain ones.
PID = 2
PDIR = "2-mobile"
OTHER_PID = 3

TOOLS = ("vim", "nvim", "emacs", "nano", "tmux", "rsync", "jq", "perl",
         "sed", "install", "getfattr", "setfattr")
INSTALL_HINT = ("apt-get install -y vim neovim emacs-nox nano tmux rsync jq "
                "attr")


def need_tools(*names):
    """Fails (never skips) when a tool the test drives is missing."""
    missing = [n for n in names if not shutil.which(n)]
    if missing:
        pytest.fail("missing tools: %s (install them: %s)"
                    % (", ".join(missing), INSTALL_HINT), pytrace=False)


@pytest.fixture
def srv(server_factory):
    """A small fake server: 3 projects x 6 live actions (+3 soft-deleted
    each), so a mount and a listing are cheap."""
    return server_factory(projects=3, actions=6)


@pytest.fixture
def wmount(mount, srv):
    """mount() on the small server with phfs's FUSE trace (-d) on: the
    tests read it to tell which way a tool saved."""
    def make(*opts, **kw):
        kw.setdefault("server", srv)
        kw.setdefault("args", ("-d",))
        return mount(*opts, **kw)
    return make


# ------------------------------------------------------------ server side


def live_actions(server, pid):
    return [a for a in state_map(server)[pid].values()
            if not a.get("deleted")]


def writes(server):
    """Every API request that is not a GET or HEAD, in order."""
    return [r for r in server.requests()
            if r["method"] not in ("GET", "HEAD")]


def show(reqs):
    return "\n".join("    %s %s -> %s %s" % (
        r["method"], r["path"], r["status"],
        json.dumps(r.get("body"), ensure_ascii=False)[:300])
        for r in reqs) or "    (none)"


def detail_path(pid, aid):
    return "/api/projects/%d/actions/%d/" % (pid, aid)


def list_path(pid):
    return "/api/projects/%d/actions/" % pid


def patch(pid, aid, body, status=None):
    """An expected PATCH; @status None means any 2xx."""
    return ("PATCH", pid, aid, body, status)


def post(pid, body, status=None):
    return ("POST", pid, None, body, status)


def _status_ok(req, status):
    if status is None:
        return 200 <= req["status"] < 300
    return req["status"] == status


def _matches(req, want):
    method, pid, aid, body, status = want
    if req["method"] != method or not _status_ok(req, status):
        return False
    if aid is None:
        m = LIST_RE.match(req["path"])
        if not m or int(m.group(1)) != pid:
            return False
    else:
        m = DETAIL_RE.match(req["path"])
        if not m or (int(m.group(1)), int(m.group(2))) != (pid, aid):
            return False
    if callable(body):
        return body(req.get("body"))
    return req.get("body") == body


def describe(want):
    method, pid, aid, body, status = want
    path = list_path(pid) if aid is None else detail_path(pid, aid)
    return "%s %s -> %s %s" % (
        method, path, "2xx" if status is None else status,
        getattr(body, "__doc__", None) or "<checked by a function>"
        if callable(body) else json.dumps(body, ensure_ascii=False))


def duplicate_keys(raw):
    """Keys that appear twice in one object of the JSON text @raw."""
    dups = []

    def hook(pairs):
        seen = set()
        for k, _ in pairs:
            if k in seen:
                dups.append(k)
            seen.add(k)
        return dict(pairs)

    try:
        json.loads(raw, object_pairs_hook=hook)
    except ValueError:
        return []
    return dups


class Repro:
    """What a person runs to see the same thing: the server and mount
    commands, then the steps of the test in the project directory, then
    how to read the request log and the state."""

    def __init__(self, m, pdir=PDIR):
        self.m = m
        self.pdir = pdir
        self.steps = []

    def add(self, *lines):
        """Shell lines, or functions returning one."""
        self.steps.extend(lines)
        return self

    def __str__(self):
        m = self.m
        url = m.server.url if m.server else "$HOST"
        lines = [m.repro().rstrip(), "  (phfs runs in the foreground: "
                 "start it in a second shell, then:)",
                 "  cd %s" % shlex.quote(os.path.join(str(m.path),
                                                      self.pdir))]
        # A step may be a function: the keys an editor got so far.
        lines += ["  " + (s() if callable(s) else s) for s in self.steps]
        lines += ["  curl -s %s/_control/log | jq -c '.requests[] | "
                  "[.method, .path, .status, .body]'" % url,
                  "  curl -s %s/_control/state | jq '.projects[] | "
                  "{id, actions: [.actions[] | {id, name, deleted}]}'" % url]
        return "\n".join(lines)

    def context(self, extra=""):
        m = self.m
        return "%s\n%s\nrequests the server got (not GET):\n%s\n" \
            "phfs .phfs/log (tail):\n%s\nphfs stderr (tail):\n%s" % (
                extra, self, show(writes(m.server)) if m.server else "",
                _log_tail(m), _stderr_tail(m))


def _log_tail(m):
    try:
        r = m.probe("read", ".phfs", "log", timeout=20)
    except BaseException:        # pytest.fail inside a failure message
        return "    (unreadable)"
    if r.errno or r.data is None:
        return "    (unreadable: %s)" % r.errno
    return "\n".join("    " + l for l in
                     r.data.decode(errors="replace").splitlines()[-15:])


def _stderr_tail(m):
    # With -d, stderr is mostly the FUSE and curl trace: phfs's own
    # messages only.
    keep = [l for l in m.stderr_text().splitlines()
            if l.startswith("phfs") and not l.startswith("phfs: debug")]
    return "\n".join("    " + l for l in keep[-25:]) or "    (nothing)"


def expect_writes(server, want, repro, what=""):
    """The non-GET requests the server got since the last clear_log are
    exactly @want, in order: [patch(pid, aid, body), post(pid, body)],
    a body compared exactly (or by a function), each answered 2xx unless
    the expectation names a status. No body carries a key twice."""
    got = writes(server)
    ok = len(got) == len(want) and all(_matches(g, w)
                                       for g, w in zip(got, want))
    if not ok:
        pytest.fail("%swrong requests.\nexpected (besides GETs):\n%s\n"
                    "got:\n%s\n%s" % (
                        what + ": " if what else "",
                        "\n".join("    " + describe(w) for w in want)
                        or "    (none)", show(got), repro.context()),
                    pytrace=False)
    for g in got:
        dups = duplicate_keys(g.get("raw_body") or "")
        if dups:
            pytest.fail("%s%s %s carries %s more than once: %s\n%s" % (
                what + ": " if what else "", g["method"], g["path"],
                ", ".join(sorted(set(dups))), g["raw_body"][:500],
                repro.context()), pytrace=False)
    for r in server.requests():
        if r["method"] == "DELETE":
            pytest.fail("HTTP DELETE sent\n%s" % repro.context(),
                        pytrace=False)
    return got


def expect_no_writes(server, repro, what=""):
    return expect_writes(server, [], repro, what)


def expect_state(server, before, changes, repro, new=None, what=""):
    """The server's whole state is @before with @changes applied:
    {(pid, aid): {field: value}}; every other action (and field) as it
    was. @new: {pid: count} of actions created (returned as a list of
    the new actions, oldest first)."""
    after = state_map(server)
    problems = []
    created = []
    for pid, acts in after.items():
        old = before.get(pid, {})
        fresh = sorted(set(acts) - set(old))
        want_new = (new or {}).get(pid, 0)
        if len(fresh) != want_new:
            problems.append("project %d: %d new actions %r, expected %d" % (
                pid, len(fresh), fresh, want_new))
        created += [acts[i] for i in fresh]
        for aid, a in old.items():
            if aid not in acts:
                problems.append("action %d vanished" % aid)
                continue
            want = copy.deepcopy(a)
            for k, v in changes.get((pid, aid), {}).items():
                want[k] = v
            got = acts[aid]
            diff = sorted(k for k in set(want) | set(got)
                          if k != "bytecode_error"
                          and want.get(k, "<absent>") != got.get(k,
                                                                 "<absent>"))
            if diff:
                problems.append("action %d: %s" % (aid, "; ".join(
                    "%s is %s, expected %s" % (
                        k, json.dumps(got.get(k), ensure_ascii=False)[:200],
                        json.dumps(want.get(k), ensure_ascii=False)[:200])
                    for k in diff)))
    if problems:
        pytest.fail("%sserver state is wrong:\n    %s\n%s" % (
            what + ": " if what else "", "\n    ".join(problems),
            repro.context()), pytrace=False)
    return created


def render(obj):
    """How phfs shows an action: `jq .` of the server's JSON."""
    return jq_render(json.dumps(obj, ensure_ascii=False).encode())


def expect_file_is_server(m, rel, server, pid, aid, repro):
    """The file reads as the server's current action."""
    want = render(action_of(server, pid, aid))
    got = m.read(*rel) if isinstance(rel, tuple) else m.read(PDIR, rel)
    if got != want:
        pytest.fail("%s does not read as the server's action %d\n--- got\n"
                    "%s\n--- expected\n%s\n%s" % (
                        rel, aid, got.decode(errors="replace")[:3000],
                        want.decode(errors="replace")[:3000],
                        repro.context()), pytrace=False)


# ------------------------------------------------------------ the tree


def listing(m, pdir=PDIR):
    return m.ls(pdir)


def action_file(m, aid, pdir=PDIR):
    return phfstest.action_file(m, aid, pdir)


def pick(server, pid=PID, n=1):
    """@n live actions of @pid that have a one-line, non-empty
    description, no tags, and a plain name: safe to edit with any tool."""
    out = []
    for a in sorted(live_actions(server, pid), key=lambda a: a["id"]):
        if (a.get("description") and "\n" not in a["description"]
                and isinstance(a.get("name"), str)
                and re.fullmatch(r"[A-Za-z0-9 ]+", a["name"])):
            out.append(a)
    if len(out) < n:
        # Give some actions a description, the way a user would have.
        for a in sorted(live_actions(server, pid), key=lambda a: a["id"]):
            if a in out or not re.fullmatch(r"[A-Za-z0-9 ]+",
                                            a.get("name") or ""):
                continue
            server.set_action(pid, a["id"], description="Seeded for %d"
                              % a["id"])
            out.append(action_of(server, pid, a["id"]))
            if len(out) >= n:
                break
    assert len(out) >= n, "the fake server has too few plain actions"
    return out[:n] if n > 1 else out[0]


def edited(text, field, value):
    """@text (a rendered action) with the one-line value of @field
    replaced, formatting kept (what an editor would do)."""
    pat = re.compile(r'^(  "%s": ).*?(,?)$' % re.escape(field), re.M)
    new, n = pat.subn(lambda mt: mt.group(1) + json.dumps(
        value, ensure_ascii=False) + mt.group(2), text, count=1)
    assert n == 1, "no top-level %r in\n%s" % (field, text)
    return new


def local_copy(m, workdir, aid, name=None, pdir=PDIR):
    """Copies the file of @aid out of the mount (a read) into @workdir."""
    fname = name or action_file(m, aid, pdir)
    data = m.read(pdir, fname)
    dst = Path(workdir) / fname
    dst.write_bytes(data)
    return dst, data


# ------------------------------------------------------------ the trace


def fuse_ops(m):
    """The FUSE requests of phfs's -d trace that change the tree, as
    (op, args) tuples: ("rename", "/2-mobile/a", "/2-mobile/b"),
    ("create", "/2-mobile/x"), ("unlink", ...), ("open", flags, path)."""
    out = []
    for line in m.raw_stderr().decode(errors="replace").splitlines():
        mt = re.match(r"^rename (\S+) (\S+) (0x[0-9a-f]+)$", line)
        if mt:
            out.append(("rename", mt.group(1), mt.group(2)))
            continue
        mt = re.match(r"^create flags: (0x[0-9a-f]+) (\S+) ", line)
        if mt:
            out.append(("create", mt.group(2)))
            continue
        mt = re.match(r"^open flags: (0x[0-9a-f]+) (\S+)$", line)
        if mt:
            out.append(("open", mt.group(2), int(mt.group(1), 16)))
            continue
        mt = re.match(r"^(unlink|symlink|link|mkdir|rmdir) (.*)$", line)
        if mt:
            out.append((mt.group(1), mt.group(2)))
    return out


def trace_mark(m):
    """Where the trace ends now: pass to ops_since()."""
    return len(fuse_ops(m))


def ops_since(m, mark):
    return fuse_ops(m)[mark:]


# ------------------------------------------------------------ tmux


class Tmux:
    """One program under a private tmux server (its own socket), driven
    with real keystrokes. The pane stays after the program exits so its
    last screen can be read."""

    _n = [0]

    def __init__(self, workdir, home):
        Tmux._n[0] += 1
        self.sock = "phfs-test-%d-%d" % (os.getpid(), Tmux._n[0])
        self.conf = Path(workdir) / ("tmux-%d.conf" % Tmux._n[0])
        self.conf.write_text("set -g remain-on-exit on\n"
                             "set -g status off\n"
                             "set -g history-limit 2000\n"
                             "set -g escape-time 0\n"
                             "set -g default-terminal screen\n")
        self.home = str(home)
        self.env = {"HOME": self.home, "PATH": "/usr/local/sbin:/usr/local/"
                    "bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM": "screen",
                    "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
                    "USER": "root", "LOGNAME": "root", "SHELL": "/bin/bash"}
        self.cmdline = None
        self.started = False
        self.keys_sent = []

    def tmux(self, *args, timeout=15, check=True):
        res = run(["tmux", "-L", self.sock, "-f", str(self.conf)] +
                  [str(a) for a in args], timeout=timeout, env=self.env,
                  what="tmux")
        if check and res.returncode != 0:
            pytest.fail("tmux %s failed: %s" % (
                q(args), res.stderr.decode(errors="replace")))
        return res

    def start(self, argv, cwd):
        self.cmdline = "cd %s && env HOME=%s %s" % (
            shlex.quote(str(cwd)), shlex.quote(self.home), q(argv))
        self.tmux("new-session", "-d", "-s", "main", "-x", "160", "-y", "50",
                  "-c", str(cwd), q(argv))
        self.started = True
        return self

    def keys(self, *keys):
        """tmux key names: "Enter", "Escape", "C-x", "C-s", ..."""
        self.keys_sent.append(" ".join(keys))
        self.tmux("send-keys", "-t", "main", *keys)

    def type(self, text):
        """Types @text literally."""
        self.keys_sent.append("<%s>" % text)
        self.tmux("send-keys", "-t", "main", "-l", text)

    def screen(self):
        res = self.tmux("capture-pane", "-p", "-J", "-t", "main", check=False)
        return res.stdout.decode(errors="replace")

    def dead(self):
        res = self.tmux("list-panes", "-t", "main", "-F",
                        "#{pane_dead} #{pane_dead_status}", check=False)
        out = res.stdout.decode().split()
        if res.returncode != 0 or not out:
            return True, None
        return out[0] == "1", (int(out[1]) if len(out) > 1 and
                               out[1].lstrip("-").isdigit() else None)

    def wait_for(self, pattern, timeout=30, what=None, context=""):
        """Polls the screen until @pattern (a regex) shows; fails with the
        screen at the deadline."""
        rx = re.compile(pattern, re.M)
        end = time.monotonic() + timeout
        scr = ""
        while True:
            scr = self.screen()
            mt = rx.search(scr)
            if mt:
                return mt
            if time.monotonic() > end:
                break
            time.sleep(0.05)
        pytest.fail("%s: %r did not show within %ss.\nscreen:\n%s\n%s\n%s" % (
            what or "editor", pattern, timeout, _indent(scr), self.howto(),
            context), pytrace=False)

    def wait_exit(self, timeout=30, context=""):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            dead, status = self.dead()
            if dead:
                return status
            time.sleep(0.05)
        pytest.fail("the editor did not exit within %ss.\nscreen:\n%s\n%s\n%s"
                    % (timeout, _indent(self.screen()), self.howto(),
                       context), pytrace=False)

    def howto(self):
        return "editor command: %s\nkeys sent, in order: %s" % (
            self.cmdline, " | ".join(self.keys_sent))

    def kill(self):
        if self.started:
            self.started = False
            self.tmux("kill-server", check=False)


def _indent(s):
    return "\n".join("    | " + l for l in s.rstrip("\n").splitlines())


@pytest.fixture
def tmux(workdir):
    """tmux() -> a Tmux with HOME set to an empty directory, so only the
    system configuration of the editor applies."""
    made = []

    def make():
        home = Path(workdir) / ("home-%d" % (len(made) + 1))
        home.mkdir(mode=0o700)
        t = Tmux(workdir, home)
        made.append(t)
        return t

    yield make
    for t in made:
        t.kill()


# ------------------------------------------------------------ calls


def sh(m, script, repro=None, timeout=60, check=True, pdir=PDIR):
    """Runs @script with bash in the project directory (a child process
    with a deadline); records it in @repro."""
    if repro is not None:
        repro.add(script)
    res = run(["bash", "-c", script], timeout=timeout,
              cwd=os.path.join(str(m.path), pdir), what="shell in the mount")
    if check and res.returncode != 0:
        pytest.fail("exit %d: %s\nstdout: %s\nstderr: %s\n%s" % (
            res.returncode, script, res.stdout.decode(errors="replace")[-2000:],
            res.stderr.decode(errors="replace")[-2000:],
            repro.context() if repro else m.context()), pytrace=False)
    return res


def py(m, code, repro=None, timeout=60, pdir=PDIR):
    """Runs Python @code in a child process with the project directory
    as working directory; returns its JSON output (what it printed
    last)."""
    if repro is not None:
        repro.add("python3 - <<'EOF'", *code.strip("\n").splitlines(), "EOF")
    res = run(["/usr/bin/python3", "-c", code], timeout=timeout,
              cwd=os.path.join(str(m.path), pdir), what="python in the mount")
    if res.returncode != 0:
        pytest.fail("python failed (exit %d):\n%s\nstderr: %s\n%s" % (
            res.returncode, code, res.stderr.decode(errors="replace")[-3000:],
            repro.context() if repro else m.context()), pytrace=False)
    lines = res.stdout.decode().strip().splitlines()
    return json.loads(lines[-1]) if lines else None


def log_text(m):
    return m.read(".phfs", "log").decode(errors="replace")
