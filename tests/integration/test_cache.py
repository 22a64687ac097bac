"""The kernel's caches.

phfs lets the kernel keep attributes (a second at most, never past ttl)
and the pages of a file whose content has not changed, and makes it forget
them as soon as phfs sees something else: a new version found at open, a
save (whose answer the server may have normalised), a rename onto an
action. Reads phfs answers are counted in .phfs/stats (reads_served), so
what the page cache answered is visible.
"""

import json
import os
import subprocess
import time

import pytest

from phfstest import PYTHON, b64names, by_id, jq_render

TTL_WAIT = 2.5  # past ttl=1 and the kernel's attribute timeout
SETTLE = 1.5    # past the second after a change when reads skip the cache


def files_of(m, pdir="1-web-app"):
    return by_id(m.ls(pdir))


def server_text(server, pid, aid):
    status, raw = server.api("/api/projects/%d/actions/%d/" % (pid, aid))
    assert status == 200, (status, raw[:200])
    return jq_render(raw)


def check_read(m, name, want, which):
    """open, fstat, read: the whole new version and its size."""
    r = m.probe("read", "1-web-app", name)
    assert not r.errno, "%r\n%s" % (r, m.context())
    assert r.data == want, (
        "%s name read %d bytes of the old or a torn version; the action "
        "is now %d bytes\n%s" % (which, len(r.data), len(want), m.context()))
    assert r["fstat"]["size"] == len(want), (
        "%s name: fstat right after open says %d bytes, the file has %d\n%s"
        % (which, r["fstat"]["size"], len(want), m.context()))


def served(m):
    return m.stats()["reads_served"]


def test_unchanged_files_are_read_from_the_page_cache(mount, server):
    m = mount("ttl=300")
    files = files_of(m)
    first = m.sh("cat 1-web-app/*.json | md5sum").stdout
    server.clear_log()
    before = served(m)
    again = m.sh("cat 1-web-app/*.json | md5sum; "
                 "grep -r -l -e pageview -e '\"id\"' 1-web-app | wc -l").stdout
    after = served(m)
    assert again.splitlines()[0] == first.strip(), m.context()
    assert int(again.splitlines()[1]) == len(files)
    assert after == before, (
        "%d reads reached phfs for files read before and unchanged\n%s" % (
            after - before, m.context()))
    assert server.requests() == [], server.requests()


@pytest.mark.parametrize("args", [(), ("-s",)], ids=["threads", "single"])
@pytest.mark.parametrize("change", ["grow", "shrink"])
@pytest.mark.parametrize("first", ["canonical", "alias"])
def test_a_new_version_replaces_cached_pages_and_size(mount, server, args,
                                                      change, first):
    """Both names of an action (each its own inode) held pages and sizes
    of the old version; after a change each shows the new one in full,
    whichever is opened first."""
    aid = sorted(a["id"] for a in server.actions_of(1))[3]
    server.set_action(1, aid, description="Medium. " * 100)
    m = mount("ttl=1", args=args)
    names = {"canonical": files_of(m)[aid], "alias": "%d.json" % aid}
    old = server_text(server, 1, aid)
    for name in names.values():
        assert m.read("1-web-app", name) == old
        assert m.read("1-web-app", name) == old  # now from the page cache
        assert m.stat("1-web-app", name)["size"] == len(old)
    server.set_action(1, aid, description=("Grown. " * 400
                                           if change == "grow" else "x"))
    new = server_text(server, 1, aid)
    assert (len(new) > len(old)) == (change == "grow")
    time.sleep(TTL_WAIT)
    order = [first] + [k for k in names if k != first]
    # The first name reads the new version, then (past the second in
    # which a change is read around the cache) caches its pages; the
    # other name's inode still holds pages and a size of the old one.
    check_read(m, names[first], new, first)
    time.sleep(SETTLE)
    for which in order:
        check_read(m, names[which], new, which)
        assert m.stat("1-web-app", names[which])["size"] == len(new)
        assert m.sh("wc -c < 1-web-app/%s" % names[which]).stdout.strip() \
            == str(len(new)).encode()


READER = r"""
import os, sys, time
path, ready, go = sys.argv[1:4]
with open(path, "rb") as f:
    head = f.read(100)
    open(ready, "w").close()
    end = time.monotonic() + 60
    while not os.path.exists(go) and time.monotonic() < end:
        time.sleep(0.02)
    rest = f.read()
sys.stdout.buffer.write(head + rest)
"""


@pytest.mark.parametrize("change", ["grow", "shrink"])
def test_reader_of_an_older_version_reads_it_whole(mount, server, workdir,
                                                   change):
    """A handle opened before a change reads the version it opened to the
    end, whatever the size of the new one, while opens after the change
    (and a stat among them) read the new one."""
    aid = sorted(a["id"] for a in server.actions_of(1))[5]
    server.set_action(1, aid, description="Old and long. " * 600)
    m = mount("ttl=1")
    name = files_of(m)[aid]
    old = server_text(server, 1, aid)
    assert m.read("1-web-app", name) == old  # pages of the old version
    ready, go = workdir / "ready", workdir / "go"
    reader = subprocess.Popen(
        [PYTHON, "-c", READER, m.p("1-web-app", name), str(ready), str(go)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        end = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < end:
            assert reader.poll() is None, reader.stderr.read()
            time.sleep(0.02)
        assert ready.exists(), "the reader never opened the file"
        server.set_action(1, aid, description=("New. " * 3000
                                               if change == "grow" else "x"))
        new = server_text(server, 1, aid)
        assert (len(new) > len(old)) == (change == "grow")
        time.sleep(TTL_WAIT)
        assert m.read("1-web-app", name) == new, m.context()
        m.stat("1-web-app", name)
        assert m.read("1-web-app", name) == new, m.context()
        go.touch()
        out, err = reader.communicate(timeout=60)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    assert reader.returncode == 0, err
    assert out == old, (
        "the reader opened before the change read %d bytes, not the %d of "
        "the version it opened\n%s" % (len(out), len(old), m.context()))
    check_read(m, name, new, "once the reader closed, the")


def test_size_after_a_save_is_the_servers(mount, server):
    """What was written is not what the server answers (compact JSON, a
    name the server trims): the size right after the save is exact."""
    m = mount("ttl=300")
    files = files_of(m)
    aid = sorted(files)[2]
    name = files[aid]
    before = m.read("1-web-app", name)
    obj = json.loads(before)
    obj["description"] = "saved compact"
    compact = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    script = ("import sys\n"
              "with open(sys.argv[1], 'w') as f: f.write(sys.argv[2])\n")
    m.sh("%s -c %s 1-web-app/%s %s" % (
        PYTHON, _q(script), _q(name), _q(compact)))
    want = server_text(server, 1, aid)
    assert json.loads(want)["description"] == "saved compact"
    assert len(want) != len(compact.encode())
    assert m.stat("1-web-app", name)["size"] == len(want), m.context()
    assert m.read("1-web-app", name) == want

    # A stat between the write and the close caches the size of the
    # version before; the save must make the kernel forget it.
    obj["description"] = "saved after a stat"
    script = ("import os, sys\n"
              "f = open(sys.argv[1], 'w'); f.write(sys.argv[2]); f.flush()\n"
              "os.stat(sys.argv[1]); f.close()\n"
              "print(os.stat(sys.argv[1]).st_size)\n")
    out = m.sh("%s -c %s 1-web-app/%s %s" % (
        PYTHON, _q(script), _q(name), _q(json.dumps(obj)))).stdout
    want = server_text(server, 1, aid)
    assert json.loads(want)["description"] == "saved after a stat"
    assert int(out) == len(want), (
        "stat right after the save: %s bytes, the file has %d\n%s" % (
            out.strip(), len(want), m.context()))

    # sed -i: a new file renamed over the action.
    m.sh("sed -i 's/saved after a stat/  saved by sed  /' 1-web-app/%s" % _q(name))
    want = server_text(server, 1, aid)
    assert "saved by sed" in json.loads(want)["description"]
    st = m.stat("1-web-app", name)
    assert st["size"] == len(want), m.context()
    assert m.read("1-web-app", name) == want


def test_a_directory_read_in_pieces_lists_every_action_once(mount,
                                                            server_factory):
    """A directory larger than the kernel's readdir buffer is read in
    several calls from one copy: no name twice, none missing, sizes exact
    (the kernel keeps them: opening the files needs no lookup)."""
    server = server_factory(projects=1, actions=700)
    m = mount("ttl=300", server=server)
    pdir = [n for n in m.ls() if not n.startswith(".")][0]
    r = m.probe("listdir", pdir)
    assert not r.errno, r
    names = [os.fsdecode(n) for n in b64names(r["names"])]
    assert len(names) == len(set(names)) == 700, (len(names),
                                                  len(set(names)))
    assert set(by_id(names)) == {a["id"] for a in server.actions_of(1)}
    out = m.sh("for f in %s/*.json; do printf '%%s %%s\\n' "
               "\"$(stat -c %%s \"$f\")\" \"$(wc -c < \"$f\")\"; done"
               % _q(pdir)).stdout.decode().splitlines()
    assert len(out) == 700
    bad = [line for line in out if line.split()[0] != line.split()[1]]
    assert not bad, "stat size != bytes read: %s\n%s" % (bad[:5],
                                                         m.context())


def _q(s):
    return "'" + str(s).replace("'", "'\\''") + "'"
