"""A broken or hostile server: answers that are not JSON, cut short, an
HTML page, 64 MiB, nested 100000 deep; actions whose fields have the wrong
type or are missing, duplicate ids, names made to escape the directory or
to hide, control characters and invalid UTF-8.

Whatever the server sends, phfs stays up and mounted, answers every call
in time with a clear error (EIO) or the data it has, writes a line to
.phfs/log, never shows a name outside its directory or a hidden file, and
every other file stays readable.

The fake server's control API takes JSON, so it cannot put raw invalid
UTF-8 or a list item without an id into an answer; a proxy in front of it
(faulttest.Proxy) rewrites the answer's bytes for those cases.
"""

import json
import os
import re
import socket
import threading
import time

import pytest

from faulttest import (PDIR, PID, alive, check_deadline, detail_re, edited,
                       file_of, fs, list_re, log_since, proxy_factory, render)
from phfstest import (action_of, by_id, is_mounted, jq_render, name_problems,
                      run, state_map)

__all__ = ["proxy_factory"]

TIMEOUT = 5
BODY_MODES = ["garbage", "truncated", "html", "huge", "deep"]


@pytest.fixture
def hsrv(server_factory):
    return server_factory(projects=3, actions=10)


def pdir_of(m, pid):
    for d in m.ls():
        if re.match(r"^%d(-|$)" % pid, d):
            return d
    pytest.fail("project %d is not listed\n%s" % (pid, m.context()))


def live(server, pid=PID):
    return sorted((a for a in state_map(server)[pid].values()
                   if not a.get("deleted")), key=lambda a: a["id"])


def snapshot(path):
    """Every path under @path (not crossing into mounts)."""
    out = set()
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs
                   if not is_mounted(os.path.join(root, d))]
        for n in dirs + files:
            out.add(os.path.relpath(os.path.join(root, n), path))
    return out


def check_names(m, pdir, context):
    """Every name in @pdir is a safe canonical action name (or a local
    file the test made), one per id, and reads as valid, jq-rendered
    JSON. Returns {id: name}."""
    res = fs([{"op": "listdir", "path": m.p(pdir)}], context=context)
    assert res[0].errno is None, "ls %s: %s\n%s" % (pdir, res[0].errno,
                                                   context)
    names = res[0].names
    for n in names:
        bad = name_problems(os.fsencode(n), "action")
        assert not bad, "unsafe name %r in %s: %s\n%s" % (n, pdir, bad,
                                                          context)
    ids = by_id(names)
    reads = fs([{"op": "read", "path": m.p(pdir, n)} for n in names],
               context=context)
    for n, r in zip(names, reads):
        assert r.errno is None, "reading %s/%s: %s\n%s" % (pdir, n, r.errno,
                                                          context)
        data = r.data
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            pytest.fail("%s/%s is not valid UTF-8: %r\n%s" % (
                pdir, n, data[:300], context))
        assert jq_render(data) == data, (
            "%s/%s is not what jq . prints for it:\n%s\n%s" % (
                pdir, n, data[:600].decode(errors="replace"), context))
        assert json.loads(data)["id"] == int(n.split("-")[0].split(".")[0])
    return ids


# ------------------------------------------------------------ bodies


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", BODY_MODES)
def test_list_answer_is_broken(mount, hsrv, mode):
    """The action list answers garbage, a truncated body, an HTML page,
    64 MiB or 100000 levels of nesting: a project never listed fails with
    EIO in time, a listed one keeps its cached listing, the rest works."""
    m = mount("ttl=1", "timeout=%d" % TIMEOUT, server=hsrv)
    # Not a listing of the root: that would list every project ahead.
    pdir3 = "3"
    names2 = m.ls(PDIR)
    log0 = m.log_lines()
    time.sleep(1.5)
    hsrv.clear_log()
    hsrv.fail(1000, mode, method="GET", path=r"^/api/projects/[23]/actions/?$")
    ctx = "%s\n  fault: %s on GET /api/projects/{2,3}/actions/" % (
        m.context(), mode)
    res = fs([{"op": "listdir", "path": m.p(pdir3)},
              {"op": "listdir", "path": m.p(PDIR)},
              {"op": "stat", "path": m.p(pdir3, "30.json")}],
             timeout=120, context=ctx)
    check_deadline(res, ctx, timeout=TIMEOUT)
    hsrv.fail_clear()
    alive(m)
    never, listed, stat = res
    if mode == "huge" and never.errno is None:
        # {"results": [], "padding": "xxx..."}: valid JSON, an empty list.
        assert never.names == [], ctx
    else:
        assert never.errno == "EIO", (
            "ls of a never-listed project whose list is %s: want EIO, got "
            "%s %r\n%s" % (mode, never.errno, never.get("names"), ctx))
        assert stat.errno == "EIO", "stat: %s\n%s" % (stat.errno, ctx)
        added = log_since(m, log0)
        assert any(re.search(r"(^|\W)3-|/api/projects/3/", ln)
                   for ln in added), (
            "no line in .phfs/log about project 3's list: %r\n%s" % (
                added, ctx))
    assert listed.errno is None, ctx
    if not (mode == "huge" and listed.names == []):
        assert listed.names == names2, (
            "the cached listing was not served: %r\n%s" % (listed.names, ctx))
    # The server is fine again: both list normally.
    time.sleep(1.5)
    assert m.ls(PDIR) == names2, ctx
    assert len(m.ls(pdir_of(m, 3))) == 10, ctx
    assert m.read(PDIR, names2[0]), ctx


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", BODY_MODES)
def test_detail_answer_is_broken(mount, hsrv, mode):
    """GET of one action answers a broken body: the cached copy is served
    with a log line; other files stay readable."""
    m = mount("ttl=1", "timeout=%d" % TIMEOUT, server=hsrv)
    acts = live(hsrv)
    aid = acts[0]["id"]
    fname = file_of(m, aid)
    old = m.read(PDIR, fname)
    time.sleep(1.5)
    log0 = m.log_lines()
    hsrv.fail(1000, mode, method="GET", path=detail_re(PID, aid))
    ctx = "%s\n  fault: %s on GET %s" % (m.context(), mode,
                                        detail_re(PID, aid))
    res = fs([{"op": "stat", "path": m.p(PDIR, fname)},
              {"op": "read", "path": m.p(PDIR, fname)}], timeout=120,
             context=ctx)
    check_deadline(res, ctx, timeout=TIMEOUT)
    hsrv.fail_clear()
    alive(m)
    assert all(r.errno is None for r in res), ctx
    assert res[1].data == old, ctx
    added = log_since(m, log0)
    assert any(fname in ln for ln in added), (
        "no line in .phfs/log about %s: %r\n%s" % (fname, added, ctx))
    other = file_of(m, acts[1]["id"])
    assert m.read(PDIR, other) == render(action_of(hsrv, PID, acts[1]["id"]))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", BODY_MODES)
def test_project_list_answer_is_broken(mount, hsrv, mode):
    """GET /api/projects/ answers a broken body: the root listing phfs has
    is served."""
    m = mount("ttl=1", "timeout=%d" % TIMEOUT, server=hsrv)
    root = m.ls()
    time.sleep(1.5)
    hsrv.fail(1000, mode, method="GET", path=r"^/api/projects/?$")
    ctx = "%s\n  fault: %s on GET /api/projects/" % (m.context(), mode)
    res = fs([{"op": "listdir", "path": m.p()},
              {"op": "listdir", "path": m.p(PDIR)}], timeout=120,
             context=ctx)
    check_deadline(res, ctx, timeout=TIMEOUT)
    hsrv.fail_clear()
    alive(m)
    assert res[0].errno is None, ctx
    if mode == "huge" and res[0].names == [".phfs"]:
        # {"results": [], "padding": "xxx..."} is valid JSON and says there
        # are no projects; phfs may take it at its word.
        assert res[1].errno in (None, "ENOENT"), ctx
    else:
        assert res[0].names == root, ctx
        assert res[1].errno is None, ctx
    time.sleep(1.5)
    assert m.ls() == root, ctx


# Answers the list endpoint may give that are JSON but not a list of
# actions. Each must end in EIO or an (empty) listing, never a crash.
ODD_LISTS = {
    "results-object": b'{"results": {"id": 1}}',
    "results-null": b'{"results": null}',
    "results-string": b'{"results": "[]"}',
    "no-results": b'{"count": 3}',
    "empty-object": b'{}',
    "bare-null": b'null',
    "bare-number": b'42',
    "bare-string": b'"results"',
    "empty-body": b'',
    "count-negative": b'{"count": -5, "results": []}',
    "count-huge": b'{"count": 1e300, "results": []}',
    "count-string": b'{"count": "9", "results": []}',
    "items-not-objects": b'{"results": [1, "x", null, true, [], 2.5]}',
    "trailing-data": b'{"results": []} {"results": []}',
    "nul-byte": b'{"results": []}\x00',
    "bom": b'\xef\xbb\xbf{"results": []}',
    "next-not-string": b'{"count": 9, "next": 5, "results": []}',
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", sorted(ODD_LISTS))
def test_odd_list_answers(mount, hsrv, proxy_factory, kind):
    proxy = proxy_factory(hsrv.url)
    m = mount("ttl=1", "timeout=%d" % TIMEOUT, server=hsrv, host=proxy.url)
    pdir3 = "3"             # by id: listing the root would list it ahead
    log0 = m.log_lines()
    proxy.add("respond", method="GET", path=list_re(3), count=1000,
              response=(200, [("Content-Type", "application/json")],
                        ODD_LISTS[kind]))
    ctx = "%s\n  a proxy on %s answers GET %s with 200 %r" % (
        m.context(), proxy.url, list_re(3), ODD_LISTS[kind])
    res = fs([{"op": "listdir", "path": m.p(pdir3)}], context=ctx)
    check_deadline(res, ctx, timeout=TIMEOUT)
    alive(m)
    r = res[0]
    if r.errno is None:
        # Only an answer that is a list of nothing may pass as one.
        assert r.names == [], "listed %r from %r\n%s" % (r.names,
                                                         ODD_LISTS[kind], ctx)
    else:
        assert r.errno == "EIO", ctx
        assert log_since(m, log0), "no line in .phfs/log\n%s" % ctx
    if kind == "items-not-objects":
        assert r.errno is not None or log_since(m, log0), (
            "items that are not actions skipped without a line in the "
            "log\n%s" % ctx)
    proxy.clear()
    assert len(m.ls(PDIR)) == 10, ctx


@pytest.mark.timeout(120)
def test_next_link_to_another_origin_is_not_followed(mount, hsrv,
                                                     proxy_factory):
    """A list whose "next" points at another host (here another loopback
    port) is not followed there: the key would go with it."""
    hits = []
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)
    other = lsock.getsockname()[1]

    def accept():
        lsock.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = lsock.accept()
            except OSError:
                continue
            c.settimeout(2)
            try:
                hits.append(c.recv(65536))
            except OSError:
                hits.append(b"")
            c.close()

    stop = threading.Event()
    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        proxy = proxy_factory(hsrv.url)
        m = mount("ttl=1", "timeout=%d" % TIMEOUT, server=hsrv,
                  host=proxy.url)
        pdir3 = "3"
        body = json.dumps({
            "count": 20,
            "next": "http://127.0.0.1:%d/api/projects/3/actions/?limit=10"
                    "&offset=10" % other,
            "previous": None,
            "results": [action_of(hsrv, 3, a["id"]) for a in live(hsrv, 3)]
        }).encode()
        proxy.add("respond", method="GET", path=list_re(3), count=1000,
                  response=(200, [("Content-Type", "application/json")],
                            body))
        res = fs([{"op": "listdir", "path": m.p(pdir3)}],
                 context=m.context())
        check_deadline(res, m.context(), timeout=TIMEOUT)
        alive(m)
        time.sleep(0.5)
    finally:
        stop.set()
        t.join(5)
        lsock.close()
    assert not hits, "phfs followed a next link to another origin (%d " \
        "connections)\n%s" % (len(hits), m.context())


# ------------------------------------------------------------ raw actions


@pytest.mark.timeout(120)
def test_fields_of_the_wrong_type(mount, hsrv):
    """Actions changed behind phfs's back into shapes the server never
    sends: phfs lists what it can (safely named), skips the rest with a
    log line, and every listed file is the server's object rendered."""
    acts = [a["id"] for a in live(hsrv)]
    weird = {
        acts[0]: {"id": str(acts[0])},               # id as a string
        acts[1]: {"name": 12345},                    # name as a number
        acts[2]: {"steps": "not a list"},
        acts[3]: {"tags": "a-string", "description": None,
                  "created_at": 17},
        acts[4]: {"name": ["a", "list"], "deleted": "no"},
        acts[5]: {"id": "abc"},
        acts[6]: {"id": 2 ** 60},                    # beyond 2^53
        acts[7]: {"name": {"an": "object"}, "post_to_slack": "yes",
                  "steps": [1, None, "x"]},
    }
    plain = acts[8:]
    for aid, fields in weird.items():
        hsrv.set_action(PID, aid, **fields)
    m = mount("ttl=60", "timeout=%d" % TIMEOUT, server=hsrv)
    ctx = m.context() + "\n  changed: %r" % weird
    ids = check_names(m, PDIR, ctx)
    alive(m)
    state = state_map(hsrv)[PID]
    for aid in plain:
        assert aid in ids, "an ordinary action went missing: %d\n%s" % (
            aid, ctx)
    for aid, name in ids.items():
        if aid in state:
            assert m.read(PDIR, name) == render(state[aid]), ctx
    skipped = [aid for aid in (acts[5],) if aid not in ids]
    if skipped:
        assert any("skip" in ln or "not an action" in ln
                   for ln in m.log_lines()), (
            "items dropped from the listing without a log line\n%s" % ctx)
    for aid in ids:
        assert aid < 2 ** 53, "an id beyond 2^53 was listed: %d\n%s" % (
            aid, ctx)


@pytest.mark.timeout(120)
def test_missing_fields(mount, hsrv, proxy_factory):
    """List items without an id, without a name, with nothing but an id,
    or not objects at all (the proxy removes the fields: the control API
    can only set them)."""
    acts = [a["id"] for a in live(hsrv)]
    proxy = proxy_factory(hsrv.url)

    def rewrite(body):
        doc = json.loads(body)
        items = doc["results"]
        by = {it["id"]: it for it in items}
        del by[acts[0]]["id"]
        del by[acts[1]]["name"]
        for k in list(by[acts[2]]):
            if k != "id":
                del by[acts[2]][k]
        by[acts[3]]["steps"] = [{}]
        del by[acts[4]]["deleted"]
        items.append(None)
        items.append("an action")
        return json.dumps(doc).encode()

    proxy.add("rewrite", method="GET", path=list_re(PID), count=1000,
              fn=rewrite)
    m = mount("ttl=60", "timeout=%d" % TIMEOUT, server=hsrv, host=proxy.url)
    ctx = m.context() + "\n  list items rewritten by a proxy"
    ids = check_names(m, PDIR, ctx)
    alive(m)
    assert acts[0] not in ids, ctx
    assert ids.get(acts[1]) == "%d.json" % acts[1], (
        "an action without a name is %r, want %d.json\n%s" % (
            ids.get(acts[1]), acts[1], ctx))
    assert ids.get(acts[2]) == "%d.json" % acts[2], ctx
    assert json.loads(m.read(PDIR, ids[acts[2]])) == {"id": acts[2]}, ctx
    for aid in acts[3:]:
        assert aid in ids, "action %d went missing\n%s" % (aid, ctx)
    assert any("skip" in ln or "not an action" in ln
               for ln in m.log_lines()), (
        "list items dropped without a log line\n%s" % ctx)


@pytest.mark.timeout(120)
def test_duplicate_ids_in_a_list(mount, hsrv, proxy_factory):
    """Two list items claim one id (one changed behind phfs's back, one
    repeated by a proxy): one file per id, no crash."""
    acts = [a["id"] for a in live(hsrv)]
    hsrv.set_action(PID, acts[1], id=acts[0])
    proxy = proxy_factory(hsrv.url)

    def rewrite(body):
        doc = json.loads(body)
        doc["results"] = doc["results"] + [dict(it) for it in
                                           doc["results"][:3]]
        return json.dumps(doc).encode()

    proxy.add("rewrite", method="GET", path=list_re(PID), count=1000,
              fn=rewrite)
    m = mount("ttl=60", "timeout=%d" % TIMEOUT, server=hsrv, host=proxy.url)
    ctx = m.context()
    ids = check_names(m, PDIR, ctx)
    alive(m)
    assert acts[0] in ids, ctx
    assert acts[1] not in ids, (
        "action %d is listed though the server now calls it %d\n%s" % (
            acts[1], acts[0], ctx))
    for aid in acts[2:]:
        assert aid in ids, ctx


# ------------------------------------------------------------ names

HOSTILE_NAMES = [
    "a/b", "..", "../../../tmp/phfs-escape", "/etc/passwd", ".hidden",
    ".", "...", "\n", "-rf", "\x01\x1b[31mred\x1b[0m", "\u202eevil",
    "\t \r\n", "~backup", "#autosave#", "CON", "a\\b", "\x7f", "\u0085nel",
    "..\u2215..\u2215etc", "x" * 400,
]


def _hostile_server(server_factory):
    s = server_factory(projects=3, actions=len(HOSTILE_NAMES) + 2)
    acts = [a["id"] for a in live(s)]
    for aid, name in zip(acts, HOSTILE_NAMES):
        s.set_action(PID, aid, name=name)
    return s, acts


@pytest.mark.timeout(180)
def test_hostile_names_stay_inside_and_visible(mount, server_factory,
                                               workdir):
    """Names with '/', '..', leading dots, control characters, a
    right-to-left override: every listed name is a safe slug, one per id,
    nothing hidden, nothing outside the mount; the seeded awkward names of
    project 1 too. At unmount, a rejected save of such an action is kept
    under XDG_STATE_HOME/phfs/unsaved/<project>/ and nowhere else."""
    s, acts = _hostile_server(server_factory)
    state_home = workdir / "state"
    state_home.mkdir()
    before_tmp = set(os.listdir("/tmp"))
    m = mount("ttl=60", "timeout=%d" % TIMEOUT, server=s,
              env={"XDG_STATE_HOME": str(state_home)})
    outside = m.workdir
    before = snapshot(outside)
    ctx = m.context()
    root = m.ls()
    for d in root:
        if d != ".phfs":
            assert not name_problems(os.fsencode(d), "project"), (d, ctx)
    ids = check_names(m, PDIR, ctx)
    for aid in acts:
        assert aid in ids, "action %d (%r) is not listed\n%s" % (
            aid, HOSTILE_NAMES[acts.index(aid)]
            if acts.index(aid) < len(HOSTILE_NAMES) else None, ctx)
    check_names(m, pdir_of(m, 1), ctx)
    state = state_map(s)[PID]
    for aid in acts:
        assert m.read(PDIR, ids[aid]) == render(state[aid]), ctx

    # A rejected save of the action named "../../../tmp/phfs-escape".
    esc = acts[HOSTILE_NAMES.index("../../../tmp/phfs-escape")]
    fname = ids[esc]
    res = fs([{"op": "write", "path": m.p(PDIR, fname), "data": b"{oops\n"}],
             context=ctx)
    assert res[0].errno == "EINVAL", ctx
    assert fname + ".rejected" in m.ls(PDIR), ctx
    assert m.unmount() == 0, ctx
    alive_after = snapshot(outside) - before
    assert not [p for p in alive_after if not p.startswith("mnt")], (
        "files appeared beside the mount point: %r\n%s" % (alive_after, ctx))
    assert not [n for n in set(os.listdir("/tmp")) - before_tmp
                if "escape" in n or "passwd" in n], ctx
    kept = snapshot(state_home)
    unsaved = state_home / "phfs" / "unsaved"
    for p in kept:
        full = os.path.realpath(state_home / p)
        assert full.startswith(str(state_home) + os.sep), (p, ctx)
        assert not os.path.basename(p).startswith("."), (
            "hidden file kept: %r\n%s" % (p, ctx))
    want = unsaved / PDIR / (fname + ".rejected")
    assert want.is_file(), "not kept: %s (have %r)\n%s" % (want, kept, ctx)
    assert want.read_bytes() == b"{oops\n"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["\ud800 lone surrogate", "bad \udcff end",
                                  "x\x00y"], ids=["high", "low", "nul"])
def test_one_odd_escape_spares_the_other_files(mount, hsrv, name):
    """One action whose name holds an escape that has no UTF-8 form (a
    lone surrogate, "\\ud800") or a NUL ("\\u0000") -- valid JSON
    grammar, put in through the control API -- must not take the whole
    project down: the other actions stay listed and readable, and that
    action is either listed under a safe name or skipped with a log
    line."""
    acts = [a["id"] for a in live(hsrv)]
    hsrv.set_action(PID, acts[0], name=name)
    m = mount("ttl=60", "timeout=%d" % TIMEOUT, server=hsrv)
    ctx = m.context() + "\n  action %d named %r" % (acts[0], name)
    res = fs([{"op": "listdir", "path": m.p(PDIR)}], context=ctx)
    assert res[0].errno is None, (
        "one action named %r makes ls %s fail with %s\n%s" % (
            name, PDIR, res[0].errno, ctx))
    ids = check_names(m, PDIR, ctx)
    alive(m)
    state = state_map(hsrv)[PID]
    for aid in acts[1:]:
        assert aid in ids, ctx
        assert m.read(PDIR, ids[aid]) == render(state[aid]), ctx
    if acts[0] not in ids:
        assert any("skip" in ln for ln in m.log_lines()), ctx


@pytest.mark.timeout(120)
def test_invalid_utf8_from_the_server(mount, hsrv, proxy_factory):
    """Raw bytes that are not UTF-8 in a name and a description (put in
    by a proxy: the control API only takes valid JSON text): the file name
    is valid UTF-8, the file is what jq prints for the item."""
    acts = [a["id"] for a in live(hsrv)]
    hsrv.set_action(PID, acts[0], name="MARK-NAME-0")
    hsrv.set_action(PID, acts[1], description="MARK-DESC-1")
    proxy = proxy_factory(hsrv.url)
    raw_name = b"Bad \xff\xfe name \xc3( \xed\xa0\x80 \xf4\x90\x80\x80 end"
    raw_desc = b"desc \x80\x80 \xc0\xaf overlong"
    seen = {}

    def rewrite(body):
        body = body.replace(b"MARK-NAME-0", raw_name)
        body = body.replace(b"MARK-DESC-1", raw_desc)
        seen["body"] = body
        return body

    proxy.add("rewrite", method="GET", path=r"^/api/projects/%d/actions/"
              % PID, count=1000, fn=rewrite)
    m = mount("ttl=60", "timeout=%d" % TIMEOUT, server=hsrv, host=proxy.url)
    ctx = m.context()
    ids = check_names(m, PDIR, ctx)
    alive(m)
    assert acts[0] in ids and acts[1] in ids, ctx
    for aid in acts[:2]:
        want = run(["jq", ".results[] | select(.id == %d)" % aid],
                   timeout=30, input=seen["body"]).stdout
        got = m.read(PDIR, ids[aid])
        assert got == want, (
            "action %d with invalid UTF-8 is not what jq prints:\n"
            "got:  %r\nwant: %r\n%s" % (aid, got[:400], want[:400], ctx))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("tricky", [
    "esc \x1b bell \x07 quote \" backslash \\ del \x7f tab \t nl \n",
    "nul \x00 inside",
], ids=["controls", "nul"])
def test_control_characters_in_content_round_trip(mount, hsrv, tricky):
    """Control characters and quotes inside a field are escaped in the file
    exactly as jq prints them, and survive a save of another field
    unchanged. A NUL ("\\u0000", which the real server refuses) cannot be
    held by phfs's JSON strings: the file shows U+FFFD in its place, and a
    save of another field still leaves the server's value alone."""
    acts = [a["id"] for a in live(hsrv)]
    aid = acts[0]
    hsrv.set_action(PID, aid, description=tricky)
    m = mount("ttl=1", "timeout=%d" % TIMEOUT, server=hsrv)
    fname = file_of(m, aid)
    data = m.read(PDIR, fname)
    shown = json.loads(data)["description"]
    expected = tricky.replace("\x00", "\ufffd")
    assert shown == expected, (
        "the file shows the description as %r, the server has %r\n%s" % (
            shown, tricky, m.context()))
    server_copy = action_of(hsrv, PID, aid)
    server_copy["description"] = expected
    assert data == render(server_copy), m.context()
    res = fs([{"op": "write", "path": m.p(PDIR, fname),
               "data": edited(data, "tags", ["kept"])}], context=m.context())
    assert res[0].errno is None, m.context()
    after = action_of(hsrv, PID, aid)
    assert after["description"] == tricky and after["tags"] == ["kept"]
    patches = hsrv.requests(method="PATCH")
    assert [p["body"] for p in patches] == [{"tags": ["kept"]}], patches

