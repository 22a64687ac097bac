"""MOUNT/.phfs: the CSV view of each project (the API's format=csv), and
that the directory is phfs's own and read-only."""

def test_csv_view_of_each_project(mount, server):
    m = mount("ttl=600", server=server)
    dirs = [d for d in m.ls() if d != ".phfs"]
    assert m.ls(".phfs") == ["csv", "log", "stats"]
    assert m.ls(".phfs", "csv") == sorted(d + ".csv" for d in dirs)
    for d in dirs:
        pid = int(d.split("-")[0])
        server.clear_log()
        got = m.read(".phfs", "csv", d + ".csv")
        # (Listing the root prefetched the project listings: only the CSV
        # requests count here.)
        reqs = [r for r in server.requests() if "csv" in r["query"]]
        assert [(r["method"], r["path"], r["query"]) for r in reqs] == [
            ("GET", "/api/projects/%d/actions/" % pid, "format=csv")], (
            "one CSV request per project\n%s" % m.context())
        status, want = server.api("/api/projects/%d/actions/?format=csv" % pid)
        assert status == 200 and got == want, m.context()
        assert got.splitlines()[0].startswith(b"bytecode_error,created_at")
        # Within ttl: served from memory.
        server.clear_log()
        assert m.read(".phfs", "csv", d + ".csv") == got
        assert [r for r in server.requests() if "csv" in r["query"]] == [], \
            m.context()
        assert m.stat(".phfs", "csv", d + ".csv")["size"] == len(got)
    # The id alone reaches a project's CSV too.
    assert m.read(".phfs", "csv", dirs[0].split("-")[0] + ".csv")


def test_phfs_directory_is_read_only(mount, server):
    m = mount(server=server)
    for rel in ("log", "stats", "csv/" + [d for d in m.ls()
                                          if d != ".phfs"][0] + ".csv"):
        r = m.probe("openw", ".phfs", rel)
        assert r.errno in ("EACCES", "EPERM", "EROFS"), (rel, r, m.context())
    r = m.probe("create", ".phfs", "new")
    assert r.errno in ("EACCES", "EPERM", "EROFS", "ENOENT"), (r, m.context())
