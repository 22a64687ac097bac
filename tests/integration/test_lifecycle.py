"""The life of a mount: SIGTERM, SIGINT and `fusermount3 -u` end it
cleanly (after the saves in flight), SIGHUP drops every cache, what was
never saved is kept under $XDG_STATE_HOME/phfs/unsaved/ at unmount, and
the API key appears in no output of a debug run.
"""

import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from faulttest import (PDIR, PID, alive, detail_re, edited, file_of, fs,
                       list_re, proxy_factory, render, start_fs)
from phfstest import (Key, action_of, assert_no_key, is_mounted,
                      key_fragments, leaks_key, state_map)

__all__ = ["proxy_factory"]

EXIT_WAIT = 30


@pytest.fixture
def lsrv(server_factory):
    return server_factory(projects=3, actions=6)


def live_ids(server, pid=PID):
    return sorted(a["id"] for a in state_map(server)[pid].values()
                  if not a.get("deleted"))


def wait_gone(m, timeout=EXIT_WAIT):
    """Waits for phfs to exit; returns its exit status (fails on a hang)."""
    rc = m.wait_exit(timeout)
    if rc is None:
        pytest.fail("phfs did not exit within %ss\n%s" % (timeout,
                                                         m.context()))
    end = time.monotonic() + 5
    while is_mounted(m.path) and time.monotonic() < end:
        time.sleep(0.05)
    return rc


def fusermount_u(m, lazy=False, timeout=15):
    return subprocess.run(["fusermount3", "-uz" if lazy else "-u",
                           str(m.path)], timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(pred, timeout, what, context=""):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    pytest.fail("timed out waiting for %s\n%s" % (what, context))


# ------------------------------------------------------------ signals


@pytest.mark.timeout(90)
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_signal_unmounts_cleanly(mount, lsrv, sig):
    m = mount("ttl=60", server=lsrv)
    m.ls(PDIR)
    m.proc.send_signal(getattr(signal, sig))
    rc = wait_gone(m)
    assert not is_mounted(m.path), "still mounted after %s\n%s" % (
        sig, m.context())
    assert rc == 0, "phfs exited with %s after %s\n%s" % (rc, sig,
                                                          m.context())


@pytest.mark.timeout(90)
def test_fusermount_u_unmounts_cleanly(mount, lsrv):
    m = mount("ttl=60", server=lsrv)
    m.ls(PDIR)
    r = fusermount_u(m)
    assert r.returncode == 0, r.stderr
    rc = wait_gone(m)
    assert not is_mounted(m.path) and rc == 0, (rc, m.context())


def _save_in_flight(mount, server, proxy_factory, latency_ms=3000):
    """A mount through a proxy (which reports when a request arrives) on
    a server answering slowly, and a save whose PATCH is on its way: the
    server got it and is still working on it."""
    proxy = proxy_factory(server.url)
    m = mount("ttl=60", "timeout=30", server=server, host=proxy.url)
    aid = live_ids(server)[0]
    fname = file_of(m, aid)
    text = edited(m.read(PDIR, fname), "description", "saved while "
                  "unmounting")
    server.clear_log()
    server.latency(latency_ms)
    w = start_fs([{"op": "write", "path": m.p(PDIR, fname), "data": text}])
    wait_for(lambda: proxy.arrived("PATCH", detail_re(PID, aid)), 20,
             "the PATCH to reach the server", m.context())
    return m, aid, fname, w


def _check_save_landed(m, server, aid, w, ctx):
    res = w.result(60, context=ctx)
    assert res[0].errno is None, (
        "the save in flight at unmount failed in %s with %s\n%s" % (
            res[0]["failed"], res[0].errno, ctx))
    assert action_of(server, PID, aid)["description"] == \
        "saved while unmounting", ctx
    patches = server.requests(method="PATCH")
    assert len(patches) == 1 and patches[0]["status"] == 200, patches


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_signal_during_a_save_lets_it_finish(mount, lsrv, proxy_factory,
                                            sig):
    m, aid, fname, w = _save_in_flight(mount, lsrv, proxy_factory)
    m.proc.send_signal(getattr(signal, sig))
    ctx = "%s\n  %s sent while the PATCH was on its way" % (m.context(), sig)
    _check_save_landed(m, lsrv, aid, w, ctx)
    rc = wait_gone(m)
    assert not is_mounted(m.path), ctx
    assert rc == 0, "exit %s after %s\n%s" % (rc, sig, ctx)
    assert not list(Path(m.workdir).glob("**/unsaved")), ctx


@pytest.mark.timeout(120)
@pytest.mark.parametrize("lazy", [False, True], ids=["u", "uz"])
def test_fusermount_during_a_save_lets_it_finish(mount, lsrv, proxy_factory,
                                                lazy):
    """fusermount3 -u while close() waits for the server: the kernel may
    refuse (busy) or go ahead; either way the save lands, close()
    returns 0, and the mount ends cleanly."""
    m, aid, fname, w = _save_in_flight(mount, lsrv, proxy_factory)
    first = fusermount_u(m, lazy=lazy)
    ctx = "%s\n  fusermount3 %s while the PATCH was on its way: exit %d " \
        "%s" % (m.context(), "-uz" if lazy else "-u", first.returncode,
                first.stderr.decode(errors="replace").strip())
    _check_save_landed(m, lsrv, aid, w, ctx)
    if first.returncode != 0:
        r = fusermount_u(m)
        assert r.returncode == 0, (r.stderr, ctx)
    rc = wait_gone(m)
    assert not is_mounted(m.path), ctx
    assert rc == 0, "exit %s\n%s" % (rc, ctx)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_signal_during_a_stalled_call_exits_in_time(mount, lsrv, sig):
    """A read stuck on a server that never answers must not keep the
    mount from ending: phfs exits within the call's deadline."""
    m = mount("ttl=1", "timeout=5", server=lsrv)
    aid = live_ids(lsrv)[0]
    fname = file_of(m, aid)
    time.sleep(1.5)
    lsrv.fail(1000, "stall", method="GET", stall_seconds=120)
    r = start_fs([{"op": "read", "path": m.p(PDIR, fname)}])
    time.sleep(1)
    t0 = time.monotonic()
    m.proc.send_signal(getattr(signal, sig))
    rc = wait_gone(m, timeout=30)
    took = time.monotonic() - t0
    lsrv.fail_clear()
    r.result(30, context=m.context())
    assert took <= 5 + 2, "phfs took %.1fs to exit after %s with a call " \
        "stalled (timeout=5)\n%s" % (took, sig, m.context())
    assert not is_mounted(m.path), m.context()
    assert rc == 0, "phfs exited with %s after %s\n%s" % (rc, sig,
                                                          m.context())


# ------------------------------------------------------------ SIGHUP


@pytest.mark.timeout(90)
def test_sighup_drops_every_cache(mount, lsrv):
    """With ttl=3600 nothing is fetched again, until SIGHUP: then the next
    access refetches the listings and the files."""
    m = mount("ttl=3600", server=lsrv)
    aid = live_ids(lsrv)[0]
    fname = file_of(m, aid)
    names = m.ls(PDIR)
    old = m.read(PDIR, fname)
    lsrv.set_action(PID, aid, description="changed behind the back")
    new_act = lsrv.create_action(PID, name="Created behind the back")
    lsrv.clear_log()
    assert m.read(PDIR, fname) == old
    assert m.ls(PDIR) == names
    assert not lsrv.requests(), "fetched within ttl:\n%s" % lsrv.requests()

    m.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    alive(m)
    assert m.read(PDIR, fname) == render(action_of(lsrv, PID, aid)), \
        m.context()
    assert any(n.startswith("%d-" % new_act["id"]) for n in m.ls(PDIR)), \
        m.context()
    reqs = lsrv.requests(method="GET")
    assert reqs, "nothing fetched after SIGHUP\n%s" % m.context()
    # And the caches are trusted again afterwards.
    lsrv.clear_log()
    m.read(PDIR, fname)
    m.ls(PDIR)
    assert not lsrv.requests(), m.context()


# ------------------------------------------------------------ unsaved


def _make_unsaved(m, server):
    """A failed create, a rejected update (local validation) and a
    rejected update (the server down). Returns {name: bytes}."""
    ids = live_ids(server)
    f1, f2 = file_of(m, ids[0]), file_of(m, ids[1])
    server.fail(1000, "503", method="POST", path=list_re())
    new = b'{"name": "Never created"}\n'
    res = fs([{"op": "write", "path": m.p(PDIR, "never-created.json"),
               "data": new, "mode": "create"}], context=m.context())
    assert res[0].errno == "EIO", m.context()
    bad = b'{"name": "Half typed",\n'
    res = fs([{"op": "write", "path": m.p(PDIR, f1), "data": bad}],
             context=m.context())
    assert res[0].errno == "EINVAL", m.context()
    server.fail(1000, "503", method="PATCH")
    down = edited(m.read(PDIR, f2), "description", "server down")
    res = fs([{"op": "write", "path": m.p(PDIR, f2), "data": down}],
             context=m.context())
    assert res[0].errno == "EIO", m.context()
    server.fail_clear()
    # A scratch file and an empty new file are not unsaved work.
    fs([{"op": "write", "path": m.p(PDIR, "notes.txt"), "data": b"x\n",
         "mode": "create"}])
    names = m.ls(PDIR)
    want = {"never-created.json": new, f1 + ".rejected": bad,
            f2 + ".rejected": down}
    for n in want:
        assert n in names, (n, names, m.context())
    return want


def _kept(directory):
    out = {}
    for p in Path(directory).rglob("*"):
        if p.is_file():
            out[str(p.relative_to(directory))] = p
    return out


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["fusermount", "SIGTERM", "SIGINT"])
def test_unsaved_files_are_kept_at_unmount(mount, lsrv, workdir, how):
    state = workdir / "state"
    m = mount("ttl=60", "timeout=3", server=lsrv,
              env={"XDG_STATE_HOME": str(state)})
    want = _make_unsaved(m, lsrv)
    if how == "fusermount":
        assert fusermount_u(m).returncode == 0
    else:
        m.proc.send_signal(getattr(signal, how))
    rc = wait_gone(m)
    ctx = m.context()
    assert not is_mounted(m.path), ctx
    where = state / "phfs" / "unsaved"
    kept = _kept(where)
    for n, data in want.items():
        rel = os.path.join(PDIR, n)
        assert rel in kept, "%s not kept in %s: %r\n%s" % (n, where,
                                                           sorted(kept), ctx)
        assert kept[rel].read_bytes() == data, (n, ctx)
        mode = stat.S_IMODE(kept[rel].stat().st_mode)
        assert not mode & 0o077, "kept %s with mode %o\n%s" % (n, mode, ctx)
    assert set(kept) <= {os.path.join(PDIR, n) for n in want} | {
        os.path.join(PDIR, "notes.txt")}, (sorted(kept), ctx)
    err = m.stderr_text()
    assert str(where) in err, (
        "no log line says where the unsaved files are (%s)\n%s" % (where,
                                                                  ctx))
    # Nothing unsaved was sent on the way out.
    assert not [r for r in lsrv.requests() if r["method"] != "GET"
                and r["status"] < 300], ctx
    assert rc == 0, "phfs exited with %s\n%s" % (rc, ctx)


@pytest.mark.timeout(120)
def test_unsaved_default_location_and_never_overwritten(mount, lsrv,
                                                        workdir):
    """Without XDG_STATE_HOME the files go to ~/.local/state/phfs/unsaved/;
    a second mount's unsaved file of the same name does not replace the
    first one's."""
    home = workdir / "home"
    home.mkdir()
    env = {"XDG_STATE_HOME": None, "HOME": str(home)}
    where = home / ".local" / "state" / "phfs" / "unsaved" / PDIR
    texts = []
    for k in range(2):
        m = mount("ttl=60", "timeout=3", server=lsrv, env=env)
        lsrv.fail(1000, "503", method="POST", path=list_re())
        text = b'{"name": "Unsaved twice %d"}\n' % k
        texts.append(text)
        res = fs([{"op": "write", "path": m.p(PDIR, "twice.json"),
                   "data": text, "mode": "create"}], context=m.context())
        assert res[0].errno == "EIO", m.context()
        lsrv.fail_clear()
        assert fusermount_u(m).returncode == 0
        assert wait_gone(m) == 0, m.context()
        assert str(where.parent) in m.stderr_text() or str(where) in \
            m.stderr_text(), m.context()
    kept = sorted(p.read_bytes() for p in where.iterdir())
    assert kept == sorted(texts), (sorted(where.iterdir()), m.context())


# ------------------------------------------------------------ the key


def _scan(key, what, data):
    assert_no_key(data, key, what)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("source", ["env", "key_file"])
def test_debug_run_never_shows_the_key(mount, lsrv, workdir, key_file,
                                       source):
    """A -d run across reads, a save, saves the server refuses, a create
    that fails, and a key revoked under it: the key (any 8 characters of
    it) is in no output stream, no log, no kept file, no command line."""
    state = workdir / "state"
    key = lsrv.key
    opts = ["ttl=1", "timeout=3"]
    kw = {}
    if source == "key_file":
        opts.append("key_file=%s" % key_file(key))
        kw["key"] = False
    m = mount(*opts, server=lsrv, args=("-d",),
              env={"XDG_STATE_HOME": str(state)}, **kw)
    with open("/proc/%d/cmdline" % m.proc.pid, "rb") as f:
        _scan(key, "/proc/PID/cmdline", f.read())

    ids = live_ids(lsrv)
    m.ls()
    for aid in ids:
        m.read(PDIR, file_of(m, aid))
    # A save that lands.
    f0 = file_of(m, ids[0])
    res = fs([{"op": "write", "path": m.p(PDIR, f0),
               "data": edited(m.read(PDIR, f0), "description", "ok")}])
    assert res[0].errno is None, m.context()
    # A save the server refuses (a name another action has: HTTP 400).
    f1 = file_of(m, ids[1])
    other = action_of(lsrv, PID, ids[2])["name"]
    res = fs([{"op": "write", "path": m.p(PDIR, f1),
               "data": edited(m.read(PDIR, f1), "name", other)}])
    assert res[0].errno == "EINVAL", m.context()
    # A save and a create while the server fails.
    lsrv.fail(1000, "500", method="PATCH")
    lsrv.fail(1000, "reset", method="POST")
    f3 = file_of(m, ids[3])
    res = fs([{"op": "write", "path": m.p(PDIR, f3),
               "data": edited(m.read(PDIR, f3), "description", "no")},
              {"op": "write", "path": m.p(PDIR, "debug-new.json"),
               "data": b'{"name": "debug new"}\n', "mode": "create"}])
    assert [r.errno for r in res] == ["EIO", "EIO"], m.context()
    lsrv.fail_clear()
    phfs_log = m.read(".phfs", "log")
    stats = m.read(".phfs", "stats")
    with open("/proc/%d/cmdline" % m.proc.pid, "rb") as f:
        _scan(key, "/proc/PID/cmdline", f.read())
    # The key is revoked: 401 from now on.
    late = edited(m.read(PDIR, f0), "description", "after revocation")
    lsrv.restart(keys=[Key()])
    time.sleep(1.5)
    res = fs([{"op": "listdir", "path": m.p(PDIR)},
              {"op": "write", "path": m.p(PDIR, f0), "data": late}])
    assert res[0].errno == "EACCES", m.context()
    assert res[1].errno == "EACCES", m.context()
    phfs_log += m.read(".phfs", "log")
    assert fusermount_u(m).returncode == 0
    wait_gone(m)

    out, err = m.raw_stdout(), m.raw_stderr()
    # The trace is really there: requests and FUSE operations.
    assert b"unique:" in err or b"opcode" in err, "no -d trace?"
    assert b"/api/projects/" in err, "no request in the -d output?"
    _scan(key, "phfs stdout", out)
    _scan(key, "phfs stderr (-d)", err)
    _scan(key, ".phfs/log", phfs_log)
    _scan(key, ".phfs/stats", stats)
    kept = _kept(state)
    assert kept, "nothing kept in %s\n%s" % (state, m.context())
    for rel, p in kept.items():
        _scan(key, "kept file %s" % rel, p.read_bytes())
    # A redacted form shows at most phx_ and four characters.
    for frag in (key[:12], key[-8:]):
        assert frag not in err.decode(errors="replace")


@pytest.mark.timeout(60)
def test_refused_key_is_not_echoed(mount, lsrv):
    """A key the server does not know: phfs exits with the server's reason,
    and neither the key nor 8 characters of it are in what it printed."""
    bad = Key().key
    m = mount(server=lsrv, key=bad, expect="exit", args=("-d",))
    assert m.returncode != 0
    for what, data in (("stderr", m.raw_stderr()),
                       ("stdout", m.raw_stdout())):
        if leaks_key(data, bad):
            pytest.fail("the refused key appears in phfs's %s" % what,
                        pytrace=False)
    assert b"401" in m.raw_stderr() or b"invalid" in m.raw_stderr(), \
        m.stderr_text()
    assert key_fragments(bad)
