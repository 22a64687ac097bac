"""The tree and the read path: names, modes, sizes, content, caching,
failures. Every expectation about the data comes from the fake server's
/_control/state; every claim about traffic from its request log.
"""

import base64
import json
import os
import re
import stat
import time
from urllib.parse import parse_qs

import pytest

from phfstest import (SLACK, Key, by_id, id_of, jq_render, name_problems,
                      parse_time, ref_action_files, ref_project_dirs)

LIST_RE = r"^/api/projects/(\d+)/actions/?$"
DETAIL_RE = r"^/api/projects/(\d+)/actions/(\d+)/?$"
PROJECTS_RE = r"^/api/projects/?$"

# The seeded project names (tests/fake_posthog.py) with their directories.
PROJECT_DIRS = {1: "1-web-app", 2: "2-mobile"}


# ------------------------------------------------------------ helpers


def dirs_of(m):
    """{project id: directory name} of the mount's root."""
    return by_id([n for n in m.ls() if not n.startswith(".")])


def files_of(m, pdir):
    return by_id(m.ls(pdir))


def live(server, pid):
    return {a["id"]: a for a in server.actions_of(pid)}


def list_requests(server, pid=None):
    out = []
    for r in server.requests("GET", LIST_RE):
        if pid is None or int(re.match(LIST_RE, r["path"]).group(1)) == pid:
            out.append(r)
    return out


def detail_requests(server, aid=None):
    return [r for r in server.requests("GET", DETAIL_RE)
            if aid is None or int(re.match(DETAIL_RE, r["path"]).group(2))
            == aid]


def summary(reqs):
    return "\n".join("%s %s?%s -> %s" % (r["method"], r["path"],
                                         r.get("query") or "", r["status"])
                     for r in reqs)


def walk(m):
    """{relative path: entry} of the whole mount but .phfs/csv, each
    regular file read, with its data as bytes."""
    r = m.walk()
    assert not r["errors"], "errors walking the mount: %r\n%s" % (
        r["errors"], m.context())
    out = {}
    for k, v in r["entries"].items():
        rel = os.fsdecode(base64.b64decode(k))
        if "errno" in v:
            pytest.fail("%s: %s failed with %s\n%s" % (
                rel, v.get("failed"), v["errno"], m.context()))
        if "data" in v:
            v["bytes"] = base64.b64decode(v["data"])
        out[rel] = v
    return out


def api_raw(server, pid, aid):
    status, raw = server.api("/api/projects/%d/actions/%d/" % (pid, aid))
    assert status == 200, (status, raw[:200])
    return raw


def keyorder(obj):
    """Keys in order, recursively, to compare the order of two objects."""
    if isinstance(obj, dict):
        return [(k, keyorder(v)) for k, v in obj.items()]
    if isinstance(obj, list):
        return [keyorder(v) for v in obj]
    return None


# ------------------------------------------------------------ the tree


def test_root_lists_projects_and_phfs(mount, server):
    m = mount()
    names = m.ls()
    assert ".phfs" in names, "%r\n%s" % (names, m.context())
    dirs = dirs_of(m)
    assert set(dirs) == {1, 2, 3}, "%r\n%s" % (names, m.context())
    for pid, name in server.project_list():
        want = ref_project_dirs(pid, name)
        assert want is None or dirs[pid] in want, (
            "project %d %r is %r, want %r\n%s" % (pid, name, dirs[pid], want,
                                                  m.context()))
        assert not name_problems(os.fsencode(dirs[pid]), "project"), (
            dirs[pid], name_problems(os.fsencode(dirs[pid]), "project"))
    assert dirs[1] == "1-web-app" and dirs[2] == "2-mobile"
    phfs = m.ls(".phfs")
    assert "log" in phfs and "stats" in phfs, phfs


def test_project_lists_live_actions_by_canonical_name(mount, server):
    m = mount()
    for pid, pdir in dirs_of(m).items():
        names = m.ls(pdir)
        files = by_id(names)
        acts = live(server, pid)
        assert set(files) == set(acts), (
            "project %d lists %s, the server has live %s\n%s" % (
                pid, sorted(files), sorted(acts), m.context()))
        for aid, fname in files.items():
            want = ref_action_files(aid, acts[aid]["name"])
            assert want is None or fname in want, (
                "action %d %r is listed as %r, want %r\n%s" % (
                    aid, acts[aid]["name"], fname, want, m.context()))


def test_soft_deleted_actions_are_not_listed(mount, server):
    m = mount()
    for pid, pdir in dirs_of(m).items():
        deleted = {a["id"] for a in server.actions_of(pid, True)
                   if a.get("deleted")}
        assert deleted, "the seed has soft-deleted actions in %d" % pid
        assert not deleted & set(by_id(m.ls(pdir))), m.context()


@pytest.mark.parametrize("ro", [False, True], ids=["rw", "ro"])
def test_modes_owner_sizes_mtimes(mount, server, ro):
    m = mount(*(["ro"] if ro else []))
    fmode, dmode = (0o444, 0o555) if ro else (0o644, 0o755)
    root = m.stat()
    assert stat.S_ISDIR(root["mode"]), root
    assert stat.S_IMODE(root["mode"]) == dmode, oct(root["mode"])
    entries = walk(m)
    dirs = dirs_of(m)
    acts = {}
    for pid in dirs:
        acts.update(live(server, pid))
    n_files = 0
    for rel, e in sorted(entries.items()):
        st = e["stat"]
        where = "%s\n%s" % (rel, m.context())
        assert st["uid"] == os.getuid() and st["gid"] == os.getgid(), (
            "owner %d:%d of %s" % (st["uid"], st["gid"], where))
        parts = rel.split("/")
        if parts[0] == ".phfs":
            if "bytes" in e:
                assert e["fstat"]["size"] == len(e["bytes"]), (
                    "st_size %d but %d bytes read: %s" % (
                        e["fstat"]["size"], len(e["bytes"]), where))
            continue
        if len(parts) == 1:
            assert stat.S_ISDIR(st["mode"]), where
            assert stat.S_IMODE(st["mode"]) == dmode, (
                "mode %o of %s" % (st["mode"], where))
            continue
        assert len(parts) == 2 and stat.S_ISREG(st["mode"]), (
            "unexpected entry " + where)
        assert stat.S_IMODE(st["mode"]) == fmode, (
            "mode %o of %s" % (st["mode"], where))
        data = e["bytes"]
        assert st["size"] == len(data), (
            "stat says %d bytes, read gives %d: %s" % (st["size"], len(data),
                                                       where))
        assert e["fstat"]["size"] == len(data), where
        a = acts[id_of(parts[1])]
        created = parse_time(a["created_at"])
        assert abs(st["mtime"] - created) < 1.0, (
            "mtime %s, created_at %s: %s" % (st["mtime"], a["created_at"],
                                             where))
        n_files += 1
    assert n_files == len(acts), (n_files, len(acts))


def test_read_only_mount_refuses_changes(mount, server):
    m = mount("ro")
    pdir = dirs_of(m)[1]
    fname = m.ls(pdir)[0]
    for op, rel in (("openw", (pdir, fname)),
                    ("create", (pdir, "new-action.json")),
                    ("mkdir", ("new-project",))):
        r = m.probe(op, *rel)
        assert r.errno == "EROFS", "%s %s: %r\n%s" % (op, rel, r,
                                                       m.context())
    assert all(r["method"] == "GET" for r in server.requests()), \
        summary(server.requests())


# ------------------------------------------------------------ names


AWKWARD = ["Clicked 'Buy' button!", "é" * 300, "a" + "é" * 100,
           "a" * 63 + " b", "tab\there", "\u202eevil.json", "\x7fdel",
           "   ", "semi;colon&amp", "%2F..%2F",
           "C:\\Windows\\path", "~tilde", "#hash#", ".", "-", "–—―",
           "Ω mega", "日本語のアクション", "x" * 1000]


@pytest.fixture
def awkward_server(server_factory):
    s = server_factory()
    for name in AWKWARD:
        s.create_action(1, name=name)
    return s


def test_awkward_names_are_safe(mount, awkward_server):
    s = awkward_server
    m = mount(server=s)
    pdir = dirs_of(m)[1]
    r = m.probe("listdir", pdir)
    assert not r.errno, r
    raw = [base64.b64decode(n) for n in r["names"]]
    acts = live(s, 1)
    seen = {}
    for b in raw:
        probs = name_problems(b, "action")
        assert not probs, "unsafe name %r: %s\n%s" % (b, probs, m.context())
        aid = id_of(b.decode())
        assert aid not in seen, "two names for %d: %r %r" % (aid, seen[aid],
                                                            b)
        seen[aid] = b.decode()
    assert set(seen) == set(acts), (sorted(seen), sorted(acts))
    for aid, fname in seen.items():
        name = acts[aid]["name"]
        want = ref_action_files(aid, name)
        assert want is None or fname in want, (
            "%r is listed as %r, want one of %r\n%s" % (name, fname, want,
                                                        m.context()))
        if name is None or ref_action_files(aid, name) == {"%d.json" % aid}:
            assert fname == "%d.json" % aid, (name, fname)
        # Whatever the name, the file is readable and is that action.
        got = json.loads(m.read(pdir, fname))
        assert got["id"] == aid and got["name"] == name, (fname, got["name"])


def test_names_that_slug_alike_stay_distinct(mount, server):
    m = mount()
    files = files_of(m, dirs_of(m)[1])
    alike = [a["id"] for a in server.actions_of(1)
             if a["name"] in ("Signed up", "signed-up", "SIGNED UP!")]
    assert len(alike) == 3
    names = [files[a] for a in alike]
    assert names == ["%d-signed-up.json" % a for a in alike], names
    assert len(set(names)) == 3
    for a, n in zip(alike, names):
        assert json.loads(m.read("1-web-app", n))["id"] == a


def test_lookup_by_id_and_by_any_suffix(mount, server):
    m = mount()
    files = files_of(m, "1-web-app")
    aid = sorted(files)[5]
    canonical = m.read("1-web-app", files[aid])
    for rel in (("1", "%d.json" % aid),
                ("1-web-app", "%d.json" % aid),
                ("1-web-app", "%d-some-old-name.json" % aid),
                ("1-anything", "%d-x.json" % aid),
                ("1", "%d-%s" % (aid, files[aid].split("-", 1)[1]))):
        got = m.probe("read", *rel)
        assert not got.errno, "%s: %s\n%s" % ("/".join(rel), got.errno,
                                              m.context())
        assert got.data == canonical, "/".join(rel)
        assert got["stat"]["size"] == len(canonical)
    # Listings still show only the canonical names.
    assert m.ls("1-web-app") == sorted(files.values())
    assert [n for n in m.ls() if not n.startswith(".")] == \
        ["1-web-app", "2-mobile", dirs_of(m)[3]]


@pytest.mark.parametrize("rel", [
    ("1-web-app", "999999.json"),
    ("1-web-app", "999999-nope.json"),
    ("999999", ),
    ("999999-nope", ),
    ("web-app", ),
])
def test_unknown_names_are_enoent(mount, server, rel):
    m = mount()
    r = m.probe("stat", *rel)
    assert r.errno == "ENOENT", "%s: %r\n%s" % ("/".join(rel), r,
                                               m.context())


def test_action_of_another_project_is_not_reachable(mount, server):
    m = mount()
    other = sorted(live(server, 2))[0]
    for rel in (("1-web-app", "%d.json" % other),
                ("1", "%d-x.json" % other)):
        r = m.probe("stat", *rel)
        assert r.errno == "ENOENT", "%s: %r\n%s" % ("/".join(rel), r,
                                                   m.context())


def test_renamed_action_old_name_keeps_working(mount, server):
    m = mount("ttl=1")
    files = files_of(m, "1-web-app")
    aid = sorted(files)[-1]
    old = files[aid]
    server.set_action(1, aid, name="Renamed by someone else")
    time.sleep(2.5)
    files = files_of(m, "1-web-app")
    assert files[aid] == "%d-renamed-by-someone-else.json" % aid, (
        files[aid], m.context())
    assert old not in m.ls("1-web-app")
    got = json.loads(m.read("1-web-app", old))
    assert got["name"] == "Renamed by someone else"


def test_created_behind_the_back_appears_after_ttl(mount, server):
    m = mount("ttl=1")
    before = files_of(m, "1-web-app")
    new = server.create_action(1, name="Created elsewhere")
    time.sleep(2.5)
    after = files_of(m, "1-web-app")
    assert set(after) - set(before) == {new["id"]}, m.context()
    assert after[new["id"]] == "%d-created-elsewhere.json" % new["id"]


def test_deleted_behind_the_back_disappears_after_ttl(mount, server):
    m = mount("ttl=1")
    before = files_of(m, "1-web-app")
    aid = sorted(before)[3]
    server.set_action(1, aid, deleted=True)
    time.sleep(2.5)
    after = files_of(m, "1-web-app")
    assert set(before) - set(after) == {aid}, m.context()


# ------------------------------------------------------------ content


@pytest.mark.timeout(300)
@pytest.mark.parametrize("shape", ["all", "count", "paged"])
def test_every_file_is_jq_rendering_of_the_server_object(
        mount, server_factory, shape):
    s = server_factory(projects=3, actions=40, shape=shape, page_size=7)
    for name in AWKWARD:
        s.create_action(1, name=name)
    m = mount("ttl=300", server=s)
    dirs = dirs_of(m)

    # jq . FILE | cmp - FILE, with the tools users have.
    res = m.sh("n=0; for f in */*.json; do n=$((n+1)); "
               "jq . \"$f\" | cmp - \"$f\" || echo \"MISMATCH $f\"; done; "
               "echo \"checked $n\"", timeout=240)
    out = res.stdout.decode(errors="replace")
    assert "MISMATCH" not in out and res.stderr == b"", (
        "jq . FILE | cmp - FILE fails:\n%s%s\n%s" % (
            out[-3000:], res.stderr.decode(errors="replace")[-2000:],
            m.context()))
    total = sum(len(live(s, pid)) for pid in dirs)
    assert "checked %d" % total in out, (out[-200:], total)

    # Every file is the server's object, keys in the server's order.
    entries = walk(m)
    for pid, pdir in dirs.items():
        acts = live(s, pid)
        files = {id_of(rel.split("/")[1]): e for rel, e in entries.items()
                 if rel.startswith(pdir + "/")}
        assert set(files) == set(acts), (pid, sorted(files), sorted(acts))
        for aid, e in files.items():
            got = json.loads(e["bytes"])
            assert got == acts[aid], "action %d differs\n%s" % (aid,
                                                                m.context())
            assert keyorder(got) == keyorder(acts[aid]), (
                "action %d: keys not in the server's order" % aid)
            assert e["bytes"].endswith(b"}\n")

    reqs = s.requests()
    assert all(r["method"] == "GET" for r in reqs), summary(reqs)
    assert all(r["auth"] == "ok" and r["key"] == 0 for r in reqs)
    assert not detail_requests(s), (
        "reading a fresh listing fetched actions one by one:\n"
        + summary(detail_requests(s)))

    for pid in dirs:
        n = len(live(s, pid))
        lists = list_requests(s, pid)
        assert all(r["status"] == 200 for r in lists), summary(lists)
        covered = set()
        for r in lists:
            qs = parse_qs(r.get("query") or "")
            off = int(qs.get("offset", ["0"])[-1])
            lim = qs.get("limit")
            if shape == "all":
                covered |= set(range(n))
            elif lim:
                covered |= set(range(off, min(n, off + int(lim[-1]))))
            elif shape == "count":
                covered |= set(range(off, n))
            else:
                covered |= set(range(off, min(n, off + 7)))
        assert covered == set(range(n)), (
            "project %d: the list requests do not cover all %d actions:\n%s"
            % (pid, n, summary(lists)))
        if shape == "all":
            assert len(lists) == 1, summary(lists)
        if shape == "paged":
            assert len(lists) >= (n + 6) // 7, summary(lists)


def test_file_bytes_are_jq_of_the_get_response(mount, awkward_server):
    s = awkward_server
    m = mount("ttl=300", server=s)
    files = files_of(m, "1-web-app")
    for aid in sorted(files)[:25] + sorted(files)[-len(AWKWARD):]:
        data = m.read("1-web-app", files[aid])
        want = jq_render(api_raw(s, 1, aid))
        assert data == want, "%s is not `jq .` of GET .../actions/%d/\n%s" % (
            files[aid], aid, m.context())


# ------------------------------------------------------------ grep, ttl


@pytest.mark.timeout(600)
def test_grep_r_across_5_projects_of_200_actions(mount, server_factory):
    s = server_factory(projects=5, actions=200, shape="all")
    m = mount("ttl=600", server=s)
    t_mounted = len(s.requests())
    res = m.sh("grep -rl --exclude-dir=.phfs pageview .", timeout=400,
               check=False)
    assert res.returncode == 0 and res.stderr == b"", (
        "grep -r exited %d: %s\n%s" % (
            res.returncode, res.stderr.decode(errors="replace")[-2000:],
            m.context()))
    got = set(res.stdout.decode().split("\n")) - {""}

    dirs = dirs_of(m)
    assert set(dirs) == {1, 2, 3, 4, 5}
    want = set()
    for pid, pdir in dirs.items():
        files = files_of(m, pdir)
        for aid, a in live(s, pid).items():
            if "pageview" in json.dumps(a, ensure_ascii=False):
                want.add("./%s/%s" % (pdir, files[aid]))
    assert len(want) > 300
    assert got == want, (
        "grep -rl lists %d files, %d contain the pattern; missing %s, "
        "extra %s\n%s" % (len(got), len(want), sorted(want - got)[:5],
                          sorted(got - want)[:5], m.context()))

    reqs = s.requests()[t_mounted:]
    for pid in dirs:
        assert len(list_requests(s, pid)) == 1, (
            "project %d listed %d times\n%s" % (
                pid, len(list_requests(s, pid)), summary(reqs)))
    assert not detail_requests(s), (
        "grep fetched %d actions one by one (first: %s)\n%s" % (
            len(detail_requests(s)), summary(detail_requests(s)[:3]),
            m.context()))
    assert len(s.requests(path_re=PROJECTS_RE)) <= 2, summary(s.requests())

    # Within ttl, the same grep costs nothing.
    s.clear_log()
    res2 = m.sh("grep -rl --exclude-dir=.phfs pageview .", timeout=400,
                check=False)
    assert set(res2.stdout.decode().split("\n")) - {""} == want
    assert s.requests() == [], (
        "a second grep -r within ttl made requests:\n%s" % summary(
            s.requests()[:20]))


def test_grep_over_the_whole_mount_has_no_errors(mount, server):
    """A plain grep -r, .phfs included, reads every file without error."""
    m = mount()
    res = m.sh("grep -r -c pageview . > /dev/null", check=False)
    assert res.returncode in (0, 1) and res.stderr == b"", (
        res.returncode, res.stderr.decode(errors="replace"), m.context())


def test_ttl_expiry_refetches_each_listed_project_once(mount, server_factory):
    s = server_factory(shape="all")
    m = mount("ttl=1", server=s)
    dirs = dirs_of(m)
    for pdir in dirs.values():
        m.ls(pdir)
    time.sleep(2.5)
    s.clear_log()
    for pdir in dirs.values():
        m.ls(pdir)
    for pid in dirs:
        assert len(list_requests(s, pid)) == 1, (
            "project %d after ttl:\n%s\n%s" % (pid, summary(s.requests()),
                                               m.context()))
    assert not detail_requests(s), summary(s.requests())
    assert len(s.requests(path_re=PROJECTS_RE)) <= 1, summary(s.requests())


def test_ttl_keeps_listings_and_files_in_memory(mount, server):
    m = mount("ttl=300")
    files = files_of(m, "1-web-app")
    first = {aid: m.read("1-web-app", f) for aid, f in list(files.items())[:5]}
    server.clear_log()
    for _ in range(3):
        assert files_of(m, "1-web-app") == files
        for aid, data in first.items():
            assert m.read("1-web-app", files[aid]) == data
    assert server.requests() == [], summary(server.requests())


def test_ttl_zero_always_fetches(mount, server_factory):
    s = server_factory(shape="all")
    m = mount("ttl=0", server=s)
    m.ls("1-web-app")
    s.clear_log()
    for _ in range(3):
        m.ls("1-web-app")
    assert len(list_requests(s, 1)) == 3, summary(s.requests())


@pytest.mark.parametrize("change", ["grow", "shrink"])
def test_stale_file_is_fetched_on_open_and_read_in_full(mount, server,
                                                       change):
    aid = sorted(live(server, 1))[2]
    server.set_action(1, aid, description="Medium. " * 100)
    m = mount("ttl=1")
    fname = files_of(m, "1-web-app")[aid]
    before = m.read("1-web-app", fname)
    server.set_action(1, aid, description="Grown behind phfs's back. " * 200
                      if change == "grow" else "")
    t_change = time.time()
    time.sleep(2.5)
    server.clear_log()
    r = m.probe("read", "1-web-app", fname)
    assert not r.errno, "%r\n%s" % (r, m.context())
    gets = detail_requests(server, aid)
    assert len(gets) == 1, (
        "open of a stale file made %d GETs of the action\n%s\n%s" % (
            len(gets), summary(server.requests()), m.context()))
    want = jq_render(api_raw(server, 1, aid))
    assert (len(want) > len(before)) == (change == "grow")
    assert r.data == want, (
        "read %d bytes, the action is now %d bytes\n%s" % (
            len(r.data), len(want), m.context()))
    assert r["fstat"]["size"] == len(want)
    st = m.stat("1-web-app", fname)
    assert st["size"] == len(want)
    assert t_change - 2 <= st["mtime"] <= time.time() + 2, (
        "mtime %s: not the time phfs saw the change (%s)" % (st["mtime"],
                                                             t_change))
    # cat sees the same.
    res = m.sh("cat 1-web-app/%s" % fname)
    assert res.stdout == want


def test_changed_content_after_ttl_via_listing(mount, server):
    """A listing refreshed after ttl updates sizes of files not open."""
    m = mount("ttl=1")
    files = files_of(m, "1-web-app")
    aid = sorted(files)[4]
    m.read("1-web-app", files[aid])
    server.set_action(1, aid, description="x" * 3000)
    time.sleep(2.5)
    m.ls("1-web-app")
    st = m.stat("1-web-app", files[aid])
    data = m.read("1-web-app", files[aid])
    assert st["size"] == len(data) and b"x" * 3000 in data, m.context()


def test_sighup_drops_the_caches(mount, server):
    m = mount("ttl=300")
    files = files_of(m, "1-web-app")
    m.read("1-web-app", files[min(files)])
    server.clear_log()
    m.proc.send_signal(1)
    time.sleep(0.5)
    m.ls("1-web-app")
    m.read("1-web-app", files[min(files)])
    assert server.requests(), "nothing refetched after SIGHUP\n" + \
        m.context()


# ------------------------------------------------------------ failures


@pytest.mark.parametrize("outage", ["stopped", "reset", "stall", "503",
                                    "garbage"])
def test_server_unreachable_serves_cached_copies(mount, server, outage):
    m = mount("ttl=1", "timeout=3", "retries=1")
    files = files_of(m, "1-web-app")
    fname = files[min(files)]
    cached = m.read("1-web-app", fname)
    # Project 2 by its id alone: listing the root would prefetch it.
    never_listed = "2"
    log_before = m.log_lines()

    if outage == "stopped":
        server.stop()
    else:
        server.fail(100000, outage, stall_seconds=120, retry_after=1)
    time.sleep(2.5)

    t0 = time.monotonic()
    r = m.probe("read", "1-web-app", fname, timeout=60)
    took = time.monotonic() - t0
    assert took <= 3 + SLACK, "reading took %.1fs with timeout=3\n%s" % (
        took, m.context())
    assert not r.errno, "cached copy not served: %r\n%s" % (r, m.context())
    assert r.data == cached

    assert m.ls("1-web-app") == sorted(files.values()), m.context()

    t0 = time.monotonic()
    r = m.probe("listdir", never_listed, timeout=60)
    took = time.monotonic() - t0
    assert r.errno == "EIO", "never listed, no copy: want EIO, got %r\n%s" % (
        r, m.context())
    assert took <= 3 + SLACK, "ls took %.1fs with timeout=3\n%s" % (
        took, m.context())

    log_after = m.log_lines()
    assert len(log_after) > len(log_before) or log_after[-1:] != \
        log_before[-1:], (
            "no line in .phfs/log about the outage\n%s" % m.context())
    if outage != "stopped":
        server.fail_clear()


def test_recovery_after_outage(mount, server):
    """A failure is not remembered: the next call asks the server again."""
    m = mount("ttl=1", "timeout=3", "retries=1")
    server.fail(100000, "reset")
    r = m.probe("listdir", "2-mobile")
    assert r.errno == "EIO", "%r\n%s" % (r, m.context())
    server.fail_clear()
    assert len(m.ls("2-mobile")) == 20, m.context()


def test_key_revoked_later_gives_eacces(mount, server):
    m = mount("ttl=1", "timeout=5")
    m.ls("1-web-app")
    server.restart(keys=[Key()])
    time.sleep(2.5)
    r = m.probe("listdir", "2-mobile")
    assert r.errno == "EACCES", "want EACCES after a 401, got %r\n%s" % (
        r, m.context())
    reqs = server.requests()
    assert reqs and all(x["status"] == 401 for x in reqs), summary(reqs)
    assert len(reqs) <= 2, "a 401 is retried:\n" + summary(reqs)


def test_permission_denied_later_gives_eacces(mount, server_factory):
    s = server_factory(keys=[Key(), Key(scopes=["action:read",
                                                "project:read"],
                                        projects=[1, 2])])
    m = mount("project=1:2", "ttl=1", server=s, key=s.keys[1].key)
    m.ls("1-web-app")
    # The same key, now scoped to project 1 only.
    keys = [s.keys[0], Key(scopes=["action:read", "project:read"],
                           projects=[1], key=s.keys[1].key)]
    s.restart(keys=keys)
    time.sleep(2.5)
    r = m.probe("listdir", "2-mobile")
    assert r.errno == "EACCES", "%r\n%s" % (r, m.context())


# ------------------------------------------------------------ .phfs


def test_stats_count_requests_and_cache_hits(mount, server):
    m = mount("ttl=300")
    s0 = m.stats()
    for name in ("requests_get", "requests_total", "cache_hits"):
        assert name in s0, "%s missing from .phfs/stats: %r" % (name, s0)
    for line in m.read(".phfs", "stats").decode().splitlines():
        assert re.fullmatch(r"[a-z0-9_]+ -?\d+", line), (
            "not `name value`: %r" % line)
    server.clear_log()
    s0 = m.stats()
    files = files_of(m, "1-web-app")
    some = sorted(files)[:3]
    for _ in range(2):
        for aid in some:
            m.read("1-web-app", files[aid])
    m.ls("2-mobile")
    s1 = m.stats()
    gets = len(server.requests("GET", chaos=True))
    total = len(server.requests(chaos=True))
    assert gets > 0
    assert s1["requests_get"] - s0["requests_get"] == gets, (
        "stats count %d GETs, the server got %d\n%s" % (
            s1["requests_get"] - s0["requests_get"], gets, m.context()))
    assert s1["requests_total"] - s0["requests_total"] == total
    assert s1["cache_hits"] - s0["cache_hits"] >= 3, (s0, s1)


def test_log_has_newest_line_last(mount, server):
    m = mount("ttl=1", "timeout=2", "retries=0")
    server.fail(100000, "503", retry_after=0)
    r = m.probe("listdir", "1-web-app")
    assert r.errno == "EIO", r
    first = m.log_lines()
    assert first, "no line in .phfs/log after a failed listing\n" + \
        m.context()
    r = m.probe("listdir", "2-mobile")
    assert r.errno == "EIO", r
    second = m.log_lines()
    assert len(second) > len(first), (first, second)
    assert re.search(r"2-mobile|projects/2\b", second[-1]), (
        "the newest line (about project 2) is not last: %r\n%s" % (
            second[-3:], m.context()))
    server.fail_clear()


# ------------------------------------------------------------ -o project


def test_project_option_mounts_only_that_project(mount, server):
    m = mount("project=2")
    assert [n for n in m.ls() if not n.startswith(".")] == ["2-mobile"]
    assert len(m.ls("2-mobile")) == 20
    r = m.probe("stat", "1-web-app")
    assert r.errno == "ENOENT", r
    r = m.probe("stat", "1")
    assert r.errno == "ENOENT", r
    others = [x for x in server.requests()
              if re.match(r"^/api/projects/[13](/|$)", x["path"])]
    assert not others, summary(others)
    assert not server.requests(path_re=PROJECTS_RE), (
        "listed all projects although -o project= names them:\n"
        + summary(server.requests()))


def test_listing_the_root_prefetches_every_project_in_parallel(
        mount, server_factory):
    s = server_factory(projects=6, actions=30, shape="count", latency_ms=300)
    m = mount("ttl=600", server=s)
    s.clear_log()
    dirs = dirs_of(m)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(
            s.requests("GET", r"/actions/?$")) < len(dirs):
        time.sleep(0.1)
    lists = s.requests("GET", r"/actions/?$")
    assert sorted(r["path"] for r in lists) == sorted(
        "/api/projects/%d/actions/" % pid for pid in dirs), (
        "ls of the root should list each project once\n%s" % m.context())
    # In parallel: the server saw several of them in flight at once.
    most = max(r["inflight"] for r in lists)
    assert most >= 4, (
        "the project listings came one after another (at most %d at once)"
        "\n%s" % (most, m.context()))
    s.clear_log()
    m.sh("grep -rl --exclude-dir=.phfs pageview . >/dev/null")
    assert s.requests() == [], (
        "grep -r after the prefetch should cost nothing\n%s" % m.context())
