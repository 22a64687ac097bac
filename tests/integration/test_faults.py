"""A flaky server: every fault the fake server can inject, against every
kind of filesystem call, with the server's final state checked.

The matrix is {500, 502, 503, 429 + Retry-After, connection reset, stall
past the deadline, garbage body} x {read of a stale file, save, create,
delete}, each fault injected once (retries absorb it) and until the
retries are exhausted. For every cell:

  - nothing lost: the save landed, or its text is in NAME.json.rejected
    (or the new file is still there, locally) and the server is unchanged;
  - nothing duplicated: at most one action with a created name, at most
    one successful POST; never an HTTP DELETE;
  - the caller sees 0 when the retries absorbed the fault and EIO when
    they did not (a read of a file phfs has a copy of is served that copy);
  - no single system call takes longer than -o timeout plus a small slack.

Then: a POST or PATCH that the server processed but whose answer was
lost (a proxy in front of the fake server, whose reset and stall modes
answer without processing), `echo >` through a fault, Retry-After (honoured,
capped, never awaited past the deadline), an uncached read during an
outage, a listing whose answer arrives after a save, and parallel writers
and readers (on different actions, and on the very files being saved).
"""

import json
import re
import time
from shlex import quote

import pytest

from faulttest import (PDIR, PID, RETRIES, TIMEOUT, alive, any_re,
                       check_deadline, detail_re, edited, file_of, fs, list_re,
                       log_since, named, ok, proxy_factory, render, show,
                       start_fs)
from phfstest import action_of, state_map

__all__ = ["proxy_factory"]      # the fixture, imported for pytest

MODES = ["500", "502", "503", "429", "reset", "stall", "garbage"]
RETRIED = {"500", "502", "503", "429", "reset"}
COUNTS = {"once": 1, "exhausted": 1000}
STALL_SECONDS = 30               # far past the deadline
FAULT_STATUS = {"500": 500, "502": 502, "503": 503, "429": 429, "reset": 0,
                "stall": 0, "garbage": 200}


@pytest.fixture
def fsrv(server_factory):
    """3 projects x 6 live actions (+3 soft-deleted each)."""
    return server_factory(projects=3, actions=6)


@pytest.fixture
def fmount(mount, fsrv):
    def make(*opts, **kw):
        kw.setdefault("server", fsrv)
        return mount("ttl=1", "timeout=%d" % TIMEOUT, *opts, **kw)
    return make


def inject(server, mode, count, method, path):
    return server.fail(COUNTS[count], mode, method=method, path=path,
                       retry_after=1 if mode == "429" else None,
                       stall_seconds=STALL_SECONDS)


def live_ids(server, pid=PID):
    return sorted(a["id"] for a in state_map(server)[pid].values()
                  if not a.get("deleted"))


def absorbed(mode, count):
    """The fault is one the retries absorb."""
    return mode in RETRIED and count == "once"


def repro_text(m, server, mode, count, method, path, what):
    return ("%s\n  fault: curl -s -XPOST %s/_control/fail -d '%s'\n"
            "  then: %s" % (m.context(), server.url, json.dumps(
                {"count": COUNTS[count], "mode": mode, "method": method,
                 "path": path, "retry_after": 1 if mode == "429" else None,
                 "stall_seconds": STALL_SECONDS}), what))


def attempts_per_call_ok(reqs, context, mode=None):
    """No faulted call made more than 1 + retries attempts of one request
    (consecutive requests for one path form one call). A connection reset
    on a kept-alive connection may cost one more, immediate, attempt:
    libcurl opens a fresh connection once when a reused one turns out
    dead; that is harmless for a GET or a PATCH."""
    limit = RETRIES + 1 + (1 if mode == "reset" else 0)
    run, last = 0, None
    for r in reqs:
        key = (r["method"], r["path"])
        run = run + 1 if key == last else 1
        last = key
        assert run <= limit, (
            "more than %d attempts of %s %s:\n%s\n%s" % (
                limit, r["method"], r["path"], show(reqs), context))


def retried_after_fault(reqs, mode, context):
    """The faulted request was answered with the fault and a later request
    for the same path succeeded."""
    bad = [r for r in reqs if r["status"] == FAULT_STATUS[mode]]
    assert len(bad) == 1, "want exactly one faulted request:\n%s\n%s" % (
        show(reqs), context)
    later = [r for r in reqs if r["seq"] > bad[0]["seq"]
             and r["path"] == bad[0]["path"]
             and r["method"] == bad[0]["method"] and ok(r)]
    assert later, "the faulted request was never retried:\n%s\n%s" % (
        show(reqs), context)


def checked_before_reposting(reqs, context):
    """A POST is sent again only after a listing of the project showed
    that the one before did not create the action. Every failed POST in
    the fake server's log got there, so it may have been processed: the
    next POST must come after a GET of the list. (Two POSTs a millisecond
    apart with nothing between them are libcurl sending the request again
    on a fresh connection after a reused one was reset.)"""
    last_post, listed = None, True
    for r in reqs:
        if r["method"] == "GET" and re.match(list_re(), r["path"]):
            listed = True
        if r["method"] != "POST":
            continue
        if last_post is not None:
            assert not ok(last_post), context
            assert listed, (
                "POST #%d was sent again as #%d without checking by name "
                "that #%d (status %s) created nothing: a duplicate when "
                "the server had processed it\n%s" % (
                    last_post["seq"], r["seq"], last_post["seq"],
                    last_post["status"] or "0, no answer", context))
        last_post, listed = r, False


# ------------------------------------------------------------ the matrix


@pytest.mark.timeout(120)
@pytest.mark.parametrize("count", list(COUNTS))
@pytest.mark.parametrize("mode", MODES)
def test_read_stale_file(fmount, fsrv, mode, count):
    """cat of a file whose copy is older than ttl, with the GETs of its
    project (listing and detail) failing."""
    m = fmount()
    aid = live_ids(fsrv)[1]
    fname = file_of(m, aid)
    old = m.read(PDIR, fname)
    assert old == render(action_of(fsrv, PID, aid)), m.context()
    fsrv.set_action(PID, aid, description="changed behind the back")
    new = render(action_of(fsrv, PID, aid))
    log0 = m.log_lines()
    time.sleep(1.5)                                   # past ttl
    fsrv.clear_log()
    inject(fsrv, mode, count, "GET", any_re())
    ctx = repro_text(m, fsrv, mode, count, "GET", any_re(),
                     "cat %s/%s" % (PDIR, fname))

    res = fs([{"op": "stat", "path": m.p(PDIR, fname)},
              {"op": "read", "path": m.p(PDIR, fname)}], context=ctx)
    check_deadline(res, ctx)
    fsrv.fail_clear()
    reqs = fsrv.requests()
    ctx += "\n  requests:\n" + show(reqs)
    alive(m)
    assert all(r["method"] == "GET" for r in reqs), ctx
    for r in res:
        assert r.errno is None, (
            "%s failed with %s: a read of a file phfs holds a copy of "
            "must not fail\n%s" % (r["failed"], r.errno, ctx))
    got = res[1].data
    if absorbed(mode, count):
        assert got == new, "retries absorb a single %s: want the new " \
            "content\n%s" % (mode, ctx)
        retried_after_fault(reqs, mode, ctx)
    elif count == "exhausted":
        assert got == old, "the server never answered: want the cached " \
            "copy\n%s" % ctx
        assert all(not ok(r) or mode == "garbage" for r in reqs), ctx
    else:
        assert got in (old, new), "neither the cached nor the new " \
            "content:\n%r\n%s" % (got[:300], ctx)
    attempts_per_call_ok(reqs, ctx, mode)
    if not absorbed(mode, count):
        added = log_since(m, log0)
        assert added, "no line in .phfs/log about the failed fetch\n%s" % ctx

    # Recovery: a failure is not remembered.
    time.sleep(1.5)
    assert m.read(PDIR, fname) == new, ctx


@pytest.mark.timeout(120)
@pytest.mark.parametrize("count", list(COUNTS))
@pytest.mark.parametrize("mode", MODES)
def test_save(fmount, fsrv, mode, count):
    """A changed file written and closed (python open/write/close), with
    the PATCH failing."""
    m = fmount()
    aid = live_ids(fsrv)[2]
    fname = file_of(m, aid)
    before = action_of(fsrv, PID, aid)
    text = edited(m.read(PDIR, fname), "description",
                  "saved through a %s fault (%s)" % (mode, count))
    want = json.loads(text)["description"]
    log0 = m.log_lines()
    stats0 = m.stats()
    fsrv.clear_log()
    inject(fsrv, mode, count, "PATCH", detail_re(PID, aid))
    ctx = repro_text(m, fsrv, mode, count, "PATCH", detail_re(PID, aid),
                     "python3 -c 'open(\"%s/%s\", \"w\").write(...)'"
                     % (PDIR, fname))

    res = fs([{"op": "write", "path": m.p(PDIR, fname), "data": text}],
             context=ctx)
    check_deadline(res, ctx)
    fsrv.fail_clear()
    w = res[0]
    after = action_of(fsrv, PID, aid)
    reqs = fsrv.requests()
    ctx += "\n  requests:\n" + show(reqs)
    alive(m)
    writes = [r for r in reqs if r["method"] != "GET"]
    assert all(r["method"] == "PATCH" for r in writes), \
        "a save sent something else than PATCH\n%s" % ctx
    assert all(r["body"] == {"description": want} for r in writes), \
        "a PATCH carried more or other than the changed field\n%s" % ctx
    assert w["failed"] in (None, "close"), (
        "%s failed with %s (only close() sends)\n%s" % (w["failed"],
                                                       w.errno, ctx))
    names = m.ls(PDIR)
    if absorbed(mode, count):
        assert w.errno is None, "retries absorb a single %s: close() " \
            "gave %s\n%s" % (mode, w.errno, ctx)
        retried_after_fault(writes, mode, ctx)
        if mode != "reset":
            stats = m.stats()
            assert stats.get("retries", 0) > stats0.get("retries", 0), (
                "the retry is not counted in .phfs/stats: %r\n%s" % (
                    stats, ctx))
    elif mode in RETRIED or mode == "stall":
        assert w.errno == "EIO", "want EIO once the retries are spent, " \
            "got %s\n%s" % (w.errno, ctx)
    # Whatever happened, nothing is lost and the caller was told the truth.
    if w.errno is None:
        assert after["description"] == want, (
            "close() returned 0 but the server does not have the save\n%s"
            % ctx)
        assert sum(1 for r in writes if ok(r)) >= 1, ctx
        assert fname + ".rejected" not in names, ctx
    else:
        assert w.errno == "EIO", ctx
        assert after == before, "a failed save changed the server\n%s" % ctx
        assert fname + ".rejected" in names, (
            "the text of the failed save is not kept as .rejected: %r\n%s"
            % (names, ctx))
        assert m.read(PDIR, fname + ".rejected") == text, ctx
        added = log_since(m, log0)
        assert any(fname in ln for ln in added), (
            "no line in .phfs/log names the file: %r\n%s" % (added, ctx))
    attempts_per_call_ok(writes, ctx, mode)
    assert len(writes) <= RETRIES + 1 + (mode == "reset"), ctx


@pytest.mark.timeout(120)
@pytest.mark.parametrize("count", list(COUNTS))
def test_save_with_shell_redirect(fmount, fsrv, count):
    """echo > FILE never looks at close(): after a transient 503 the save
    lands once; after the retries are spent the server is unchanged and
    the text is in NAME.json.rejected with a line in .phfs/log, which is
    how a shell user finds out."""
    m = fmount()
    aid = live_ids(fsrv)[4]
    fname = file_of(m, aid)
    before = action_of(fsrv, PID, aid)
    text = edited(m.read(PDIR, fname), "description", "echoed (%s)" % count)
    log0 = m.log_lines()
    fsrv.clear_log()
    inject(fsrv, "503", count, "PATCH", detail_re(PID, aid))
    m.sh("printf '%%s' %s > %s" % (quote(text.decode()),
                                    quote(PDIR + "/" + fname)),
         check=count == "once")
    fsrv.fail_clear()
    reqs = fsrv.requests()
    ctx = "%s\n  requests:\n%s" % (m.context(), show(reqs))
    after = action_of(fsrv, PID, aid)
    writes = [r for r in reqs if r["method"] != "GET"]
    assert all(r["method"] == "PATCH" and r["body"] == {
        "description": "echoed (%s)" % count} for r in writes), ctx
    if count == "once":
        assert after["description"] == "echoed (once)", ctx
        assert sum(1 for r in writes if ok(r)) == 1, ctx
        assert fname + ".rejected" not in m.ls(PDIR), ctx
    else:
        assert after == before, ctx
        assert m.read(PDIR, fname + ".rejected") == text, ctx
        assert any(fname in ln for ln in log_since(m, log0)), ctx
        assert len(writes) <= RETRIES + 1, ctx


@pytest.mark.timeout(120)
@pytest.mark.parametrize("count", list(COUNTS))
@pytest.mark.parametrize("mode", MODES)
def test_create(fmount, fsrv, mode, count):
    """A new file written and closed, with the POST failing: never two
    actions, and never a lost file."""
    m = fmount()
    m.ls(PDIR)
    name = "Fault create %s %s" % (mode, count)
    fname = "fault-create-%s-%s.json" % (mode, count)
    text = (json.dumps({"name": name, "steps": [{"event": "fault_test"}]},
                       indent=2) + "\n").encode()
    log0 = m.log_lines()
    fsrv.clear_log()
    inject(fsrv, mode, count, "POST", list_re())
    ctx = repro_text(m, fsrv, mode, count, "POST", list_re(),
                     "printf ... > %s/%s" % (PDIR, fname))

    res = fs([{"op": "write", "path": m.p(PDIR, fname), "data": text,
               "mode": "create"}], context=ctx)
    check_deadline(res, ctx)
    fsrv.fail_clear()
    w = res[0]
    reqs = fsrv.requests()
    ctx += "\n  requests:\n" + show(reqs)
    alive(m)
    created = named(fsrv, PID, name)
    posts = [r for r in reqs if r["method"] == "POST"]
    assert all(r["method"] in ("GET", "POST") for r in reqs), ctx
    assert len(created) <= 1, "a duplicate action was created\n%s" % ctx
    assert sum(1 for r in posts if r["status"] == 201) == len(created), ctx
    checked_before_reposting(reqs, ctx)
    assert w["failed"] in (None, "close"), ctx
    if absorbed(mode, count):
        assert w.errno is None, "retries absorb a single %s: close() " \
            "gave %s\n%s" % (mode, w.errno, ctx)
        retried_after_fault(posts, mode, ctx)
    elif mode in RETRIED or mode == "stall":
        assert w.errno == "EIO", "want EIO once the retries are spent, " \
            "got %s\n%s" % (w.errno, ctx)
    names = m.ls(PDIR)
    if w.errno is None:
        assert len(created) == 1, (
            "close() returned 0 but the action is not on the server\n%s"
            % ctx)
        aid = created[0]["id"]
        canon = [n for n in names if n.startswith("%d-" % aid)]
        assert canon, "the new action is not listed: %r\n%s" % (names, ctx)
        assert json.loads(m.read(PDIR, canon[0]))["name"] == name, ctx
    else:
        assert w.errno == "EIO", ctx
        assert not created, ctx
        assert fname in names, (
            "the file whose POST failed is gone: %r\n%s" % (names, ctx))
        assert m.read(PDIR, fname) == text, ctx
        added = log_since(m, log0)
        assert any(fname in ln for ln in added), (
            "no line in .phfs/log names the file: %r\n%s" % (added, ctx))
    assert len(posts) <= RETRIES + 1, (
        "more than 1 + %d POSTs reached the server\n%s" % (RETRIES, ctx))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("count", list(COUNTS))
@pytest.mark.parametrize("mode", MODES)
def test_delete(fmount, fsrv, mode, count):
    """rm of an action file, with the PATCH {"deleted": true} failing."""
    m = fmount()
    aid = live_ids(fsrv)[3]
    fname = file_of(m, aid)
    before = action_of(fsrv, PID, aid)
    fsrv.clear_log()
    inject(fsrv, mode, count, "PATCH", detail_re(PID, aid))
    ctx = repro_text(m, fsrv, mode, count, "PATCH", detail_re(PID, aid),
                     "rm %s/%s" % (PDIR, fname))

    res = fs([{"op": "stat", "path": m.p(PDIR, fname)},
              {"op": "unlink", "path": m.p(PDIR, fname)}], context=ctx)
    check_deadline(res, ctx)
    fsrv.fail_clear()
    u = res[1]
    after = action_of(fsrv, PID, aid)
    reqs = fsrv.requests()
    ctx += "\n  requests:\n" + show(reqs)
    alive(m)
    assert res[0].errno is None, ctx
    writes = [r for r in reqs if r["method"] != "GET"]
    assert all(r["method"] == "PATCH" and r["body"] == {"deleted": True}
               for r in writes), "rm sent something else than PATCH " \
        "{\"deleted\": true}\n%s" % ctx
    if absorbed(mode, count):
        assert u.errno is None, "retries absorb a single %s: unlink() " \
            "gave %s\n%s" % (mode, u.errno, ctx)
        retried_after_fault(writes, mode, ctx)
    elif mode in RETRIED or mode == "stall":
        assert u.errno == "EIO", "want EIO once the retries are spent, " \
            "got %s\n%s" % (u.errno, ctx)
    names = m.ls(PDIR)
    if u.errno is None:
        assert after["deleted"] is True, (
            "unlink() returned 0 but the action is live on the server\n%s"
            % ctx)
        assert fname not in names, ctx
    else:
        assert u.errno == "EIO", ctx
        assert after == before, ctx
        assert fname in names, "the file of a live action vanished\n%s" % ctx
        assert m.read(PDIR, fname) == render(after), ctx
    attempts_per_call_ok(writes, ctx, mode)
    assert len(writes) <= RETRIES + 1 + (mode == "reset"), ctx


# ------------------------------------------------------------ answers lost


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["drop", "stall"])
def test_create_processed_but_answer_lost(mount, fsrv, proxy_factory, how):
    """The server created the action, then the connection was reset (or
    hung until the deadline) before phfs read the answer: phfs must not
    POST it a second time. The fake server's reset and stall modes answer
    without processing, so a proxy in front of it loses the answer."""
    proxy = proxy_factory(fsrv.url)
    m = mount("ttl=1", "timeout=%d" % TIMEOUT, server=fsrv, host=proxy.url)
    m.ls(PDIR)
    name = "Answer lost %s" % how
    fname = "answer-lost-%s.json" % how
    text = (json.dumps({"name": name}) + "\n").encode()
    fsrv.clear_log()
    proxy.add(how, method="POST", path=list_re())
    ctx = "%s\n  a proxy on %s forwards to the fake server and %s the " \
        "answer of the first POST" % (m.context(), proxy.url,
                                      "resets the connection after"
                                      if how == "drop" else "withholds")
    res = fs([{"op": "write", "path": m.p(PDIR, fname), "data": text,
               "mode": "create"}], context=ctx)
    check_deadline(res, ctx)
    proxy.clear()
    w = res[0]
    reqs = fsrv.requests()
    ctx += "\n  requests:\n" + show(reqs)
    alive(m)
    created = named(fsrv, PID, name)
    assert len(created) == 1, "%d actions named %r\n%s" % (
        len(created), name, ctx)
    posts = [r for r in reqs if r["method"] == "POST"]
    assert len(posts) == 1, \
        "the POST was sent again after it had created the action\n%s" % ctx
    if how == "drop":
        # phfs has time to look the name up: the save succeeded.
        assert w.errno is None, (
            "close() gave %s although the action was created and phfs "
            "could check by name\n%s" % (w.errno, ctx))
        names = m.ls(PDIR)
        assert any(n.startswith("%d-" % created[0]["id"]) for n in names), \
            "%r\n%s" % (names, ctx)
    else:
        assert w.errno in (None, "EIO"), ctx
    # Saving the same file again never makes a second action.
    fs([{"op": "write", "path": m.p(PDIR, fname), "data": text,
         "mode": "any"}], context=ctx)
    assert len(named(fsrv, PID, name)) == 1, ctx
    no_dup = [r for r in fsrv.requests(method="POST") if ok(r)]
    assert len(no_dup) == 1, show(no_dup) + "\n" + ctx


@pytest.mark.timeout(120)
@pytest.mark.parametrize("op", ["save", "delete"])
def test_patch_processed_but_answer_lost(mount, fsrv, proxy_factory, op):
    """A PATCH the server applied whose answer was reset: PATCH is
    idempotent, phfs sends it again and reports success."""
    proxy = proxy_factory(fsrv.url)
    m = mount("ttl=1", "timeout=%d" % TIMEOUT, server=fsrv, host=proxy.url)
    aid = live_ids(fsrv)[0]
    fname = file_of(m, aid)
    text = edited(m.read(PDIR, fname), "description", "answer lost")
    fsrv.clear_log()
    proxy.add("drop", method="PATCH", path=detail_re(PID, aid))
    ctx = "%s\n  a proxy on %s resets the connection after the server " \
        "answered the first PATCH" % (m.context(), proxy.url)
    if op == "save":
        steps = [{"op": "write", "path": m.p(PDIR, fname), "data": text}]
    else:
        steps = [{"op": "unlink", "path": m.p(PDIR, fname)}]
    res = fs(steps, context=ctx)
    check_deadline(res, ctx)
    reqs = fsrv.requests()
    ctx += "\n  requests:\n" + show(reqs)
    assert res[0].errno is None, "%s: %s\n%s" % (op, res[0].errno, ctx)
    after = action_of(fsrv, PID, aid)
    if op == "save":
        assert after["description"] == "answer lost", ctx
        assert fname + ".rejected" not in m.ls(PDIR), ctx
    else:
        assert after["deleted"] is True, ctx
    assert not [r for r in reqs if r["method"] not in ("GET", "PATCH")], ctx


# ------------------------------------------------------------ Retry-After


def _stale_read_with_429(m, server, retry_after, timeout):
    aid = live_ids(server)[0]
    fname = file_of(m, aid)
    old = m.read(PDIR, fname)
    server.set_action(PID, aid, description="after a 429")
    new = render(action_of(server, PID, aid))
    time.sleep(1.5)
    server.clear_log()
    server.fail(1, "429", method="GET", path=any_re(), retry_after=retry_after)
    ctx = "%s\n  fault: 429 with Retry-After: %s on the next GET of %s" % (
        m.context(), retry_after, PDIR)
    res = fs([{"op": "stat", "path": m.p(PDIR, fname)},
              {"op": "read", "path": m.p(PDIR, fname)}], context=ctx)
    reqs = server.requests(method="GET")
    ctx += "\n  requests:\n" + show(reqs)
    check_deadline(res, ctx, timeout=timeout)
    first = [r for r in reqs if r["status"] == 429]
    assert len(first) == 1, ctx
    retry = [r for r in reqs if r["seq"] > first[0]["seq"]
             and r["path"] == first[0]["path"]]
    return res, old, new, first[0], retry, ctx


@pytest.mark.timeout(90)
def test_retry_after_is_honoured(fsrv, mount):
    m = mount("ttl=1", "timeout=10", server=fsrv)
    res, old, new, first, retry, ctx = _stale_read_with_429(m, fsrv, 2, 10)
    assert all(r.errno is None for r in res), ctx
    assert res[1].data == new, ctx
    assert retry and ok(retry[0]), "never retried after the 429\n" + ctx
    gap = retry[0]["time"] - first["time"]
    assert gap >= 2 - 0.05, "retried %.2fs after a 429 with Retry-After: " \
        "2\n%s" % (gap, ctx)
    assert gap <= 2 + 1.5, "waited %.2fs after Retry-After: 2\n%s" % (
        gap, ctx)


@pytest.mark.timeout(90)
def test_retry_after_is_capped(fsrv, mount):
    """Retry-After: 30 is honoured up to 5 s."""
    m = mount("ttl=1", "timeout=15", server=fsrv)
    res, old, new, first, retry, ctx = _stale_read_with_429(m, fsrv, 30, 15)
    assert all(r.errno is None for r in res), ctx
    assert res[1].data == new, ctx
    assert retry and ok(retry[0]), "never retried after the 429\n" + ctx
    gap = retry[0]["time"] - first["time"]
    assert 5 - 0.25 <= gap <= 5 + 1.5, "retried %.2fs after Retry-After: " \
        "30 (cap 5 s)\n%s" % (gap, ctx)


@pytest.mark.timeout(90)
def test_retry_after_past_the_deadline_is_not_awaited(fsrv, mount):
    """Retry-After: 4 with -o timeout=3: no retry can be in time, so the
    call gives up at once (serving the cached copy) rather than sleeping
    past its deadline, and never retries early."""
    m = mount("ttl=1", "timeout=3", server=fsrv)
    res, old, new, first, retry, ctx = _stale_read_with_429(m, fsrv, 4, 3)
    assert all(r.errno is None for r in res), ctx
    assert res[1].data in (old, new), ctx
    for r in retry:
        assert r["time"] - first["time"] >= 4 - 0.05, (
            "retried %.2fs after Retry-After: 4\n%s" % (
                r["time"] - first["time"], ctx))


# ------------------------------------------------------------ outages


@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", ["503", "reset", "stall"])
def test_uncached_read_fails_with_eio_in_time(fmount, fsrv, mode):
    """A project never listed, the server down: EIO within the deadline,
    never ENOENT (the file may well exist) and never a hang."""
    m = fmount()
    fsrv.clear_log()
    fsrv.fail(100000, mode, method="GET", path=any_re(3),
              stall_seconds=STALL_SECONDS)
    # By id: a listing of the root would list every project ahead.
    pdir3 = "3"
    ctx = m.context()
    res = fs([{"op": "listdir", "path": m.p(pdir3)},
              {"op": "stat", "path": m.p(pdir3, "19.json")},
              {"op": "read", "path": m.p(pdir3, "19.json")}], context=ctx)
    check_deadline(res, ctx)
    fsrv.fail_clear()
    for r in res:
        assert r.errno == "EIO", "%s %s: want EIO, got %s\n%s" % (
            r["op"], r["path"], r.errno, ctx)
    alive(m)
    assert len(m.ls(pdir3)) == 6, ctx


# ------------------------------------------------------------ parallel


@pytest.mark.timeout(240)
def test_parallel_writers_and_readers(mount, server_factory):
    """8 processes save 4 versions each of 8 actions while 8 others read 8
    other actions over and over: every save lands exactly once, in order,
    and every read is a complete file."""
    srv = server_factory(projects=3, actions=20, latency_ms=20)
    m = mount("ttl=1", "timeout=30", server=srv)
    ids = live_ids(srv)[:16]
    wids, rids = ids[:8], ids[8:]
    files = {aid: file_of(m, aid) for aid in ids}
    rounds = 4
    texts = {aid: m.read(PDIR, files[aid]) for aid in wids}
    srv.clear_log()

    def desc(aid, r):
        return "parallel writer %d round %d" % (aid, r)

    runs = []
    for aid in wids:
        steps = [{"op": "write", "path": m.p(PDIR, files[aid]),
                  "data": edited(texts[aid], "description", desc(aid, r))}
                 for r in range(rounds)]
        runs.append(("w", aid, start_fs(steps)))
    for aid in rids:
        steps = [{"op": "read", "path": m.p(PDIR, files[aid])}] * 15
        runs.append(("r", aid, start_fs(steps)))
    results = [(kind, aid, run.result(180, context=m.context()))
               for kind, aid, run in runs]

    state = state_map(srv)[PID]
    reqs = srv.requests()
    ctx = m.context()
    assert not [r for r in reqs if r["method"] not in ("GET", "PATCH")], \
        show([r for r in reqs if r["method"] != "GET"]) + ctx
    for kind, aid, res in results:
        for r in res:
            assert r.errno is None, "%s of %s failed in %s: %s\n%s" % (
                r["op"], r["path"], r["failed"], r.errno, ctx)
        if kind == "w":
            assert state[aid]["description"] == desc(aid, rounds - 1), ctx
            patches = [r for r in reqs if r["method"] == "PATCH"
                       and r["path"].rstrip("/").endswith("/%d" % aid)]
            got = [r["body"].get("description") for r in patches if ok(r)]
            assert got == [desc(aid, k) for k in range(rounds)], (
                "saves of action %d did not land exactly once each, in "
                "order:\n%s\n%s" % (aid, show(patches), ctx))
        else:
            want = render(state[aid])
            for r in res:
                d = r.data
                assert d == want, (
                    "a read of %s returned something else than the file "
                    "(%d bytes, want %d)\n%s" % (r["path"], len(d),
                                                 len(want), ctx))
                assert json.loads(d)["id"] == aid
    alive(m)


@pytest.mark.timeout(120)
def test_a_late_answer_never_replaces_a_newer_save(mount, fsrv, workdir,
                                                   proxy_factory):
    """A listing is answered (with the action as it was then) while a save
    of one of its files goes through; the answer arrives after the save.
    phfs must not install that older copy over the saved version: the
    file keeps reading as what was saved, and the next save is compared
    with it (no spurious conflict)."""
    proxy = proxy_factory(fsrv.url)
    m = mount("ttl=2", "timeout=20", server=fsrv, host=proxy.url)
    aid = live_ids(fsrv)[0]
    fname = file_of(m, aid)
    text = m.read(PDIR, fname)
    go = workdir / "go"
    # The writer opens the file now and writes when told to.
    writer = start_fs([{"op": "write", "path": m.p(PDIR, fname),
                        "data": edited(text, "description", "saved first"),
                        "wait_for": str(go)}])
    time.sleep(2.5)                   # the listing is older than ttl
    proxy.add("delay", method="GET", path=list_re(), seconds=3)
    lister = start_fs([{"op": "listdir", "path": m.p(PDIR)}])
    ctx = "%s\n  a proxy on %s holds the answer of a listing for 3 s, " \
        "during which a file of it is saved" % (m.context(), proxy.url)
    wait_for_arrival(proxy, "GET", list_re(), ctx)
    time.sleep(0.3)                   # the server has answered: old copy
    go.touch()
    res = writer.result(30, context=ctx)
    assert res[0].errno is None, ctx
    saved = render(action_of(fsrv, PID, aid))
    assert json.loads(saved)["description"] == "saved first", ctx
    lister.result(30, context=ctx)    # the late answer is in
    problems = []
    after = m.read(PDIR, fname)
    if after != saved:
        problems.append(
            "after the save, the file reads as an older copy (description "
            "%r, saved %r)" % (json.loads(after).get("description"),
                               "saved first"))
    res = fs([{"op": "write", "path": m.p(PDIR, fname),
               "data": edited(saved, "description", "saved second")}],
             context=ctx)
    if res[0].errno is not None:
        problems.append(
            "the next save failed with %s: compared with the older copy, "
            "not with what was saved" % res[0].errno)
    elif action_of(fsrv, PID, aid)["description"] != "saved second":
        problems.append("the next save did not land")
    assert not problems, "%s\n  requests:\n%s\n%s" % (
        "\n".join(problems), show(fsrv.requests()), ctx)


def wait_for_arrival(proxy, method, path_re, ctx, timeout=20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proxy.arrived(method, path_re):
            return
        time.sleep(0.02)
    pytest.fail("%s %s never reached the proxy\n%s" % (method, path_re, ctx))


@pytest.mark.timeout(300)
def test_readers_of_files_being_saved_see_whole_versions(mount,
                                                         server_factory):
    """Readers of the very files being saved see one whole version or
    another (or the empty file between the writer's open(O_TRUNC) and its
    single write(), as on a local disk), never a mix or a torn file. The
    race is narrow: the scenario runs several times."""
    srv = server_factory(projects=3, actions=20, latency_ms=20)
    m = mount("ttl=0", "timeout=30", server=srv)
    wids = live_ids(srv)[:4]
    files = {aid: file_of(m, aid) for aid in wids}
    rounds = 8
    ctx = m.context()
    for cycle in range(8):
        texts = {aid: m.read(PDIR, files[aid]) for aid in wids}
        versions = {aid: {json.loads(texts[aid])["description"]}
                    for aid in wids}
        runs = []
        for aid in wids:
            steps = []
            for r in range(rounds):
                d = "cycle %d version %d of %d %s" % (
                    cycle, r, aid, "x" * (200 * ((r + cycle) % rounds) + 1))
                versions[aid].add(d)
                steps.append({"op": "write", "path": m.p(PDIR, files[aid]),
                              "data": edited(texts[aid], "description", d)})
            runs.append(("w", aid, start_fs(steps)))
            for _ in range(2):
                runs.append(("r", aid, start_fs(
                    [{"op": "read", "path": m.p(PDIR, files[aid])}] * 40)))
        for kind, aid, run in runs:
            for r in run.result(180, context=ctx):
                assert r.errno is None, (
                    "%s %s failed in %s with %s (cycle %d); nobody but this "
                    "writer changes the action, only readers read it\n%s" % (
                        r["op"], r["path"], r["failed"], r.errno, cycle,
                        ctx))
                if kind == "w" or r.data == b"":
                    # b"": between the writer's open(O_TRUNC) and its
                    # write(), as on a local disk.
                    continue
                try:
                    obj = json.loads(r.data)
                except ValueError:
                    pytest.fail(
                        "a read during saves is not JSON (a torn file: one "
                        "version's bytes, then another's?), %d bytes:\n%r"
                        "\n%s" % (len(r.data), r.data[:4000], ctx))
                assert obj["id"] == aid, ctx
                assert obj["description"] in versions[aid], ctx
        alive(m)
