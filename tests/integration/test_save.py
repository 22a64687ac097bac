"""The write path with scripted tools: every way a tool saves (in place,
temp file then rename, unlink then create) ends with the action updated
once; new files are POSTed once; rm soft-deletes; renames, conflicts,
rejected saves, no-op saves, scratch files and the calls that are refused.

Each test checks the server's whole state afterwards (/_control/state)
and the exact requests that are not GETs (/_control/log), and a failure
prints the commands that reproduce it.
"""

import errno
import json
import re
import shlex
from pathlib import Path

import pytest

from savetest import (OTHER_PID, PDIR, PID, Repro, action_of, action_file,
                      edited, expect_file_is_server, expect_no_writes,
                      expect_state, expect_writes, listing, log_text,
                      need_tools, patch, pick, post, py, sh, state_map,
                      writes)

from savetest import srv, tmux, wmount  # noqa: F401 (fixtures)
pytestmark = pytest.mark.timeout(90)


class Edit:
    """One action about to be edited: its file, its text, the edited text
    (description changed) and the server's state before."""

    def __init__(self, m, server, workdir, value, field="description",
                 pid=PID, pdir=PDIR):
        self.m, self.server, self.value, self.field = m, server, value, field
        self.pid, self.pdir = pid, pdir
        self.a = pick(server, pid)
        self.aid = self.a["id"]
        self.fname = action_file(m, self.aid, pdir)
        self.text = m.read(pdir, self.fname).decode()
        self.new = edited(self.text, field, value)
        self.workdir = Path(workdir)
        self.local = self.workdir / ("edited-" + self.fname)
        self.local.write_text(self.new)
        self.names = listing(m, pdir)
        self.before = state_map(server)
        self.repro = Repro(m, pdir)
        server.clear_log()

    def compact(self):
        return json.dumps(json.loads(self.new), ensure_ascii=False)

    def check_one_patch(self, extra_writes=None, body=None):
        """One PATCH with only the changed field; the state is the old
        one with that field changed; the listing is as before; the file
        reads as the server's answer."""
        want = extra_writes or [patch(self.pid, self.aid, body or {
            self.field: self.value})]
        expect_writes(self.server, want, self.repro)
        expect_state(self.server, self.before,
                     {(self.pid, self.aid): {self.field: self.value}},
                     self.repro)
        names = listing(self.m, self.pdir)
        assert names == self.names, (
            "the listing changed:\nbefore: %r\nafter:  %r\n%s" % (
                self.names, names, self.repro.context()))
        expect_file_is_server(self.m, (self.pdir, self.fname), self.server,
                              self.pid, self.aid, self.repro)


def q(s):
    return shlex.quote(str(s))


# ------------------------------------------------------------ tools saving


SUBST = "s/^  \"description\": .*,$/  \"description\": \"%s\",/"


@pytest.mark.parametrize("suffix", ["", ".orig"])
def test_sed_in_place(wmount, srv, workdir, suffix):
    m = wmount()
    e = Edit(m, srv, workdir, "via sed -i" + suffix)
    sh(m, "sed -i%s %s %s" % (suffix, q(SUBST % e.value), q(e.fname)),
       e.repro)
    if suffix:
        # The backup is a local file with the old text, never sent.
        assert m.read(PDIR, e.fname + suffix).decode() == e.text
        e.names.append(e.fname + suffix)
        e.names.sort()
    e.check_one_patch()


@pytest.mark.parametrize("suffix", ["", ".bak"])
def test_perl_in_place(wmount, srv, workdir, suffix):
    m = wmount()
    e = Edit(m, srv, workdir, "via perl -pi" + suffix)
    sh(m, "perl -i%s -pe %s %s" % (suffix, q(SUBST % e.value), q(e.fname)),
       e.repro)
    if suffix:
        assert m.read(PDIR, e.fname + suffix).decode() == e.text
        e.names.append(e.fname + suffix)
        e.names.sort()
    e.check_one_patch()


def test_sed_producing_invalid_json_fails_and_loses_nothing(wmount, srv,
                                                             workdir):
    """rename(scratch, action name) is the save: when it is refused, sed
    says so (and removes its temp file), the action and its file are as
    they were, and the refused text is kept as NAME.rejected."""
    m = wmount()
    e = Edit(m, srv, workdir, "unused")
    res = sh(m, "sed -i 's/^  \"description\": /  \"description\" /' %s"
             % q(e.fname), e.repro, check=False)
    assert res.returncode != 0 and re.search(
        rb"cannot rename .*Invalid argument", res.stderr), (
        res, e.repro.context())
    expect_no_writes(srv, e.repro)
    expect_state(srv, e.before, {}, e.repro)
    assert m.read(PDIR, e.fname).decode() == e.text, e.repro.context()
    names = listing(m)
    left = sorted(set(names) - set(e.names))
    assert left == [e.fname + ".rejected"], (left, e.repro.context())
    assert m.read(PDIR, e.fname + ".rejected").decode() == e.text.replace(
        '"description": ', '"description" ', 1), e.repro.context()
    log = log_text(m)
    assert re.search(r"%s.*invalid JSON at line \d+, column \d+"
                     % re.escape(e.fname), log), (log, e.repro.context())


def test_python_mkstemp_replace_and_dir_fsync(wmount, srv, workdir):
    m = wmount()
    e = Edit(m, srv, workdir, "via python os.replace")
    out = py(m, """
import json, os, tempfile
data = open(%r, "rb").read()
fd, tmp = tempfile.mkstemp(dir=".", prefix=".tmp-", suffix=".json")
os.write(fd, data)
os.fsync(fd)
os.close(fd)
os.replace(tmp, %r)
d = os.open(".", os.O_RDONLY)
os.fsync(d)
os.close(d)
print(json.dumps({"tmp": tmp}))
""" % (str(e.local), e.fname), e.repro)
    assert out["tmp"].endswith(".json"), (out, e.repro.context())
    e.check_one_patch()


def test_cp_over_a_file(wmount, srv, workdir):
    m = wmount()
    e = Edit(m, srv, workdir, "via cp")
    sh(m, "cp %s %s" % (q(e.local), q(e.fname)), e.repro)
    e.check_one_patch()


def test_echo_redirect_over_a_file(wmount, srv, workdir):
    m = wmount()
    e = Edit(m, srv, workdir, "via echo >")
    sh(m, "echo %s > %s" % (q(e.compact()), q(e.fname)), e.repro)
    e.check_one_patch()


@pytest.mark.parametrize("opts", ["", "-a"])
def test_rsync_of_an_edited_copy(wmount, srv, workdir, opts):
    need_tools("rsync")
    m = wmount()
    e = Edit(m, srv, workdir, ("via rsync " + opts).strip())
    src = Path(workdir) / "copy"
    src.mkdir()
    (src / e.fname).write_text(e.new)
    sh(m, "rsync %s %s ./" % (opts, q(src / e.fname)), e.repro)
    e.check_one_patch()


def test_jq_to_tmp_then_mv(wmount, srv, workdir):
    m = wmount()
    e = Edit(m, srv, workdir, "via jq")
    sh(m, "jq '.description=\"via jq\"' %s > %s.tmp && mv %s.tmp %s" % (
        q(e.fname), q(e.fname), q(e.fname), q(e.fname)), e.repro)
    e.check_one_patch()


def test_mv_of_a_local_file_into_the_mount(wmount, srv, workdir):
    """Across filesystems mv unlinks the target and creates it again:
    the unlink soft-deletes the action, the create of <id>-*.json
    restores it with the change. Never a POST."""
    m = wmount()
    e = Edit(m, srv, workdir, "via mv from /var/tmp")
    src = Path(workdir) / "copy"
    src.mkdir()
    (src / e.fname).write_text(e.new)
    sh(m, "mv %s ./" % q(src / e.fname), e.repro)
    assert not (src / e.fname).exists()
    e.check_one_patch([patch(PID, e.aid, {"deleted": True}),
                       patch(PID, e.aid, {"description": e.value,
                                          "deleted": False})])


def test_install_m644(wmount, srv, workdir):
    """install unlinks the target and creates it again."""
    m = wmount()
    e = Edit(m, srv, workdir, "via install")
    sh(m, "install -m644 %s %s" % (q(e.local), q(e.fname)), e.repro)
    e.check_one_patch([patch(PID, e.aid, {"deleted": True}),
                       patch(PID, e.aid, {"description": e.value,
                                          "deleted": False})])
    st = m.stat(PDIR, e.fname)
    assert st["mode"] & 0o777 == 0o644, oct(st["mode"])


def test_truncate_then_write(wmount, srv, workdir):
    m = wmount()
    e = Edit(m, srv, workdir, "via ftruncate + write")
    py(m, """
import os
data = open(%r, "rb").read()
fd = os.open(%r, os.O_WRONLY)
os.ftruncate(fd, 0)
os.write(fd, data)
os.close(fd)
""" % (str(e.local), e.fname), e.repro)
    e.check_one_patch()


def test_write_in_two_pieces_then_fsync_then_close(wmount, srv, workdir):
    """fsync sends the save; the close after it has nothing left."""
    m = wmount()
    e = Edit(m, srv, workdir, "via two writes and fsync")
    py(m, """
import os
data = open(%r, "rb").read()
fd = os.open(%r, os.O_WRONLY | os.O_TRUNC)
os.write(fd, data[:55])
os.write(fd, data[55:])
os.fsync(fd)
os.close(fd)
""" % (str(e.local), e.fname), e.repro)
    e.check_one_patch()


def test_steps_edit_patches_the_steps_only(wmount, srv, workdir):
    """A change inside a step sends the steps (whole, as the server
    replaces them) without the computed selector_regex, and nothing else."""
    m = wmount()
    e = Edit(m, srv, workdir, "unused")
    a = action_of(srv, PID, e.aid)
    steps = [dict(st) for st in a["steps"]] or [{"event": "x"}]
    steps[0]["event"] = "changed_by_jq"
    sh(m, "jq '.steps = %s' %s > %s.tmp && mv %s.tmp %s" % (
        json.dumps(steps).replace("'", "'\\''"), q(e.fname), q(e.fname),
        q(e.fname), q(e.fname)), e.repro)
    sent = [{k: v for k, v in st.items() if k != "selector_regex"}
            for st in steps]
    expect_writes(srv, [patch(PID, e.aid, {"steps": sent})], e.repro)
    after = action_of(srv, PID, e.aid)
    assert after["steps"][0]["event"] == "changed_by_jq", e.repro.context()
    expect_state(srv, e.before, {(PID, e.aid): {"steps": after["steps"]}},
                 e.repro)
    expect_file_is_server(m, e.fname, srv, PID, e.aid, e.repro)


def test_server_error_gives_eio_and_keeps_the_text(wmount, srv, workdir):
    """A 500 on every attempt of the PATCH: close() fails with EIO, the
    text stays as NAME.rejected, a log line names the file; the same
    save done again lands."""
    m = wmount("retries=2")
    e = Edit(m, srv, workdir, "after a 500")
    srv.fail(3, 500, method="PATCH")
    e.repro.add("curl -s -XPOST %s/_control/fail -d '{\"count\": 3, "
                "\"mode\": \"500\", \"method\": \"PATCH\"}'"
                % srv.url)
    code = """
import json, os
fd = os.open(%r, os.O_WRONLY | os.O_TRUNC)
os.write(fd, open(%r, "rb").read())
try:
    os.close(fd)
    print(json.dumps({"close": "ok"}))
except OSError as e:
    print(json.dumps({"close": e.errno}))
""" % (e.fname, str(e.local))
    out = py(m, code, e.repro)
    assert out["close"] == errno.EIO, (out, e.repro.context())
    expect_writes(srv, [patch(PID, e.aid, {"description": e.value},
                              status=500)] * 3, e.repro)
    expect_state(srv, e.before, {}, e.repro)
    assert m.read(PDIR, e.fname + ".rejected").decode() == e.new
    log = log_text(m)
    assert re.search(r"%s.*(500|[Ss]erver)" % re.escape(e.fname), log), (
        log, e.repro.context())

    srv.clear_log()
    out = py(m, code, e.repro)
    assert out["close"] == "ok", (out, e.repro.context())
    e.names.append(e.fname + ".rejected")
    e.names.sort()
    e.check_one_patch()


def test_a_file_refreshed_by_a_listing_keeps_the_base_it_was_read_at(
        wmount, srv, workdir):
    """Read the file, let the server change a field, let a listing after
    the ttl bring the new version into phfs (nobody reads it), then save
    the way vim and emacs do (rename away, create, write, fsync): only
    the field changed in the file is sent, the server's change is kept."""
    m = wmount("ttl=1")
    e = Edit(m, srv, workdir, "changed in the file")
    out = py(m, """
import json, os, time, urllib.request
f = %(f)r
def control(body):
    req = urllib.request.Request(%(url)r + "/_control/action",
        data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=15).read()
text = open(f, "rb").read()
control({"project": %(pid)d, "id": %(aid)d, "set": {"tags": ["from-server"]}})
time.sleep(1.5)
os.listdir(".")
os.rename(f, f + "~")
fd = os.open(f, os.O_WRONLY | os.O_CREAT, 0o644)
os.write(fd, open(%(local)r, "rb").read())
os.fsync(fd)
os.close(fd)
os.unlink(f + "~")
print(json.dumps({"ok": True}))
""" % {"f": e.fname, "url": srv.url, "pid": PID, "aid": e.aid,
       "local": str(e.local)}, e.repro)
    assert out["ok"]
    expect_writes(srv, [patch(PID, e.aid, {"description": e.value})],
                  e.repro)
    expect_state(srv, e.before, {(PID, e.aid): {
        "description": e.value, "tags": ["from-server"]}}, e.repro)


# ------------------------------------------------------------ new files


def new_id(created, repro):
    assert len(created) == 1, repro.context()
    return created[0]["id"]


def expect_listed_as(m, aid, slug, created_name, repro):
    names = listing(m)
    want = "%d-%s.json" % (aid, slug)
    assert want in names, "%s not listed: %r\n%s" % (want, names,
                                                     repro.context())
    assert created_name not in names, (
        "the name it was created under is still listed beside the "
        "canonical one: %r\n%s" % (names, repro.context()))


def test_new_file_with_echo_posts_once_then_patches(wmount, srv):
    m = wmount()
    before = state_map(srv)
    srv.clear_log()
    r = Repro(m)
    sh(m, "echo '{\"name\": \"New thing\"}' > new-thing.json", r)
    expect_writes(srv, [post(PID, {"name": "New thing"})], r)
    aid = new_id(expect_state(srv, before, {}, r, new={PID: 1}), r)
    assert action_of(srv, PID, aid)["name"] == "New thing"
    expect_listed_as(m, aid, "new-thing", "new-thing.json", r)
    # The name it was created under still reaches it.
    expect_file_is_server(m, "new-thing.json", srv, PID, aid, r)
    expect_file_is_server(m, "%d-new-thing.json" % aid, srv, PID, aid, r)

    srv.clear_log()
    sh(m, "echo '{\"name\": \"New thing\", \"description\": \"second "
       "save\"}' > new-thing.json", r)
    expect_writes(srv, [patch(PID, aid, {"description": "second save"})], r,
                  "second save")
    a = action_of(srv, PID, aid)
    assert (a["name"], a["description"], a["deleted"]) == (
        "New thing", "second save", False), r.context()
    expect_state(srv, before, {}, r, new={PID: 1})


def test_created_name_keeps_reaching_the_action_after_rename_away(wmount,
                                                                 srv):
    """The name a file was created under stays bound to the new action:
    renaming it away and creating it again (vim, nvim and emacs save that
    way) updates that action; it never POSTs a second one."""
    m = wmount()
    before = state_map(srv)
    r = Repro(m)
    sh(m, "echo '{\"name\": \"New thing\"}' > new-thing.json", r)
    aid = new_id(expect_state(srv, before, {}, r, new={PID: 1}), r)
    srv.clear_log()
    sh(m, "mv new-thing.json new-thing.json~ && "
       "echo '{\"name\": \"Renamed thing\"}' > new-thing.json && "
       "rm new-thing.json~", r)
    expect_writes(srv, [patch(PID, aid, {"name": "Renamed thing"})], r)
    created = expect_state(srv, before, {}, r, new={PID: 1})
    assert created[0]["name"] == "Renamed thing", (created, r.context())
    names = listing(m)
    assert "%d-renamed-thing.json" % aid in names, (names, r.context())


def test_new_file_with_cp_posts_once(wmount, srv, workdir):
    m = wmount()
    src = Path(workdir) / "new.json"
    src.write_text('{\n  "name": "New thing",\n  "description": "made by '
                   'cp",\n  "tags": ["Beta"]\n}\n')
    before = state_map(srv)
    srv.clear_log()
    r = Repro(m).add("printf '%%s' %s > %s" % (q(src.read_text()), q(src)))
    sh(m, "cp %s new-thing.json" % q(src), r)
    expect_writes(srv, [post(PID, {"name": "New thing", "description":
                                   "made by cp", "tags": ["Beta"]})], r)
    aid = new_id(expect_state(srv, before, {}, r, new={PID: 1}), r)
    a = action_of(srv, PID, aid)
    assert a["tags"] == ["beta"] and a["description"] == "made by cp", a
    expect_listed_as(m, aid, "new-thing", "new-thing.json", r)
    # The file reads as the server's answer (tags lowercased).
    expect_file_is_server(m, "new-thing.json", srv, PID, aid, r)

    srv.clear_log()
    sh(m, "sed -i 's/\"made by cp\"/\"changed by sed\"/' %d-new-thing.json"
       % aid, r)
    expect_writes(srv, [patch(PID, aid, {"description": "changed by sed"})],
                  r, "second save")


def test_new_file_without_a_name_takes_the_file_name(wmount, srv):
    m = wmount()
    before = state_map(srv)
    srv.clear_log()
    r = Repro(m)
    sh(m, "echo '{\"description\": \"no name\"}' > my-new-action.json", r)
    expect_writes(srv, [post(PID, {"description": "no name",
                                   "name": "my-new-action"})], r)
    aid = new_id(expect_state(srv, before, {}, r, new={PID: 1}), r)
    expect_listed_as(m, aid, "my-new-action", "my-new-action.json", r)


def test_new_file_whose_post_fails_stays_local_then_saves(wmount, srv):
    """A POST refused by the server (a name another live action has):
    close() fails with EINVAL, the file stays as a local file with its
    text, and saving it again after a fix POSTs once."""
    m = wmount()
    taken = pick(srv)["name"]
    before = state_map(srv)
    srv.clear_log()
    r = Repro(m)
    out = py(m, """
import json, os
fd = os.open("dup.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
os.write(fd, json.dumps({"name": %r}).encode())
try:
    os.close(fd)
    print(json.dumps({"close": "ok"}))
except OSError as e:
    print(json.dumps({"close": e.errno}))
""" % taken, r)
    assert out["close"] == errno.EINVAL, (out, r.context())
    expect_writes(srv, [post(PID, {"name": taken}, status=400)], r)
    expect_state(srv, before, {}, r)
    assert "dup.json" in listing(m), r.context()
    assert json.loads(m.read(PDIR, "dup.json")) == {"name": taken}
    log = log_text(m)
    assert re.search(r"dup\.json.*already has an action with this name",
                     log), (log, r.context())

    srv.clear_log()
    sh(m, "echo '{\"name\": \"Not a duplicate\"}' > dup.json", r)
    expect_writes(srv, [post(PID, {"name": "Not a duplicate"})], r)
    aid = new_id(expect_state(srv, before, {}, r, new={PID: 1}), r)
    expect_listed_as(m, aid, "not-a-duplicate", "dup.json", r)


def test_post_that_got_a_5xx_never_adopts_an_existing_action(wmount, srv):
    """A POST answered 503 may or may not have created the action; phfs
    may look for it, but an action of that name that was there before
    the POST is not the one it created. The save must not report success
    nor bind the file to that other action."""
    m = wmount()
    taken = pick(srv)
    before = state_map(srv)
    srv.clear_log()
    r = Repro(m)
    srv.fail(1, 503, method="POST")
    r.add("curl -s -XPOST %s/_control/fail -d '{\"count\": 1, \"mode\": "
          "\"503\", \"method\": \"POST\"}'" % srv.url)
    out = py(m, """
import json, os
fd = os.open("dup.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
os.write(fd, json.dumps({"name": %r, "description": "mine"}).encode())
try:
    os.close(fd)
    print(json.dumps({"close": "ok"}))
except OSError as e:
    print(json.dumps({"close": e.errno}))
""" % taken["name"], r)
    assert out["close"] != "ok", (
        "the save was reported as done, but the server has no such "
        "action: %r\n%s" % (out, r.context()))
    expect_state(srv, before, {}, r)
    assert json.loads(m.read(PDIR, "dup.json")) == {
        "name": taken["name"], "description": "mine"}, r.context()
    assert not [w for w in writes(srv) if w["method"] == "PATCH"], (
        r.context())


def test_empty_new_file_is_not_sent(wmount, srv):
    """touch of a new name: nothing sent (an empty file never is), the
    log says so; rm drops the local file, still sending nothing."""
    m = wmount()
    before = state_map(srv)
    srv.clear_log()
    r = Repro(m)
    sh(m, "touch empty-thing.json", r)
    expect_no_writes(srv, r)
    assert "empty-thing.json" in listing(m), r.context()
    log = log_text(m)
    assert re.search(r"empty-thing\.json.*empty", log), (log, r.context())
    sh(m, "rm empty-thing.json", r)
    expect_no_writes(srv, r)
    expect_state(srv, before, {}, r)
    assert "empty-thing.json" not in listing(m), r.context()


def test_creating_the_file_of_a_deleted_action_restores_it(wmount, srv):
    """<id>-anything.json of a soft-deleted action: the save restores
    and updates that action (PATCH deleted false), never a POST."""
    m = wmount()
    gone = [a for a in state_map(srv)[PID].values() if a["deleted"]]
    a = gone[-1]
    before = state_map(srv)
    srv.clear_log()
    r = Repro(m)
    sh(m, "echo %s > %d-back-again.json" % (
        q(json.dumps({"name": a["name"], "description": "restored"})),
        a["id"]), r)
    expect_writes(srv, [patch(PID, a["id"], {"description": "restored",
                                             "deleted": False})], r)
    expect_state(srv, before, {(PID, a["id"]): {"description": "restored",
                                                "deleted": False}}, r)
    assert action_file(m, a["id"]) in listing(m)


# ------------------------------------------------------------ rejected saves


def test_echo_bad_json_leaves_rejected_file_and_log_line(wmount, srv):
    m = wmount()
    a = pick(srv)
    fname = action_file(m, a["id"])
    before = state_map(srv)
    srv.clear_log()
    r = Repro(m)
    res = sh(m, "echo bad > %s" % q(fname), r)
    assert res.returncode == 0      # bash never looks at close()
    expect_no_writes(srv, r)
    expect_state(srv, before, {}, r)
    names = listing(m)
    assert fname in names, (names, r.context())
    assert fname + ".rejected" in names, (names, r.context())
    assert m.read(PDIR, fname + ".rejected") == b"bad\n"
    log = log_text(m)
    lines = [l for l in log.splitlines() if fname in l]
    assert lines and re.search(r"invalid JSON", lines[-1]), (
        "no line in .phfs/log names %s with the reason:\n%s\n%s" % (
            fname, log, r.context()))
    # The .rejected file is local: removing it sends nothing.
    srv.clear_log()
    sh(m, "rm %s" % q(fname + ".rejected"), r)
    expect_no_writes(srv, r)
    assert fname + ".rejected" not in listing(m)
    expect_state(srv, before, {}, r)


def test_unknown_field_is_refused_before_any_request(wmount, srv, workdir):
    m = wmount()
    e = Edit(m, srv, workdir, "unused")
    bad = e.text.replace('"name":', '"nmae":', 1)
    out = py(m, """
import json, os
fd = os.open(%r, os.O_WRONLY | os.O_TRUNC)
os.write(fd, %r.encode())
try:
    os.close(fd)
    print(json.dumps({"close": "ok"}))
except OSError as e:
    print(json.dumps({"close": e.errno}))
""" % (e.fname, bad), e.repro)
    assert out["close"] == errno.EINVAL, (out,
                                                        e.repro.context())
    expect_no_writes(srv, e.repro)
    expect_state(srv, e.before, {}, e.repro)
    log = log_text(m)
    assert re.search(r"%s.*nmae" % re.escape(e.fname), log), (
        log, e.repro.context())


def test_server_400_gives_einval_and_logs_detail_and_attr(wmount, srv,
                                                           workdir):
    """A name another live action has: the server says 400 (unique,
    attr name); close() fails with EINVAL, nothing changes, the log line
    names the file, the detail and the field."""
    m = wmount()
    other = pick(srv, n=2)[1]
    e = Edit(m, srv, workdir, other["name"], field="name")
    out = py(m, """
import json, os
fd = os.open(%r, os.O_WRONLY | os.O_TRUNC)
os.write(fd, open(%r, "rb").read())
try:
    os.close(fd)
    print(json.dumps({"close": "ok"}))
except OSError as e:
    print(json.dumps({"close": e.errno}))
""" % (e.fname, str(e.local)), e.repro)
    assert out["close"] == errno.EINVAL, (out,
                                                        e.repro.context())
    expect_writes(srv, [patch(PID, e.aid, {"name": other["name"]},
                              status=400)], e.repro)
    expect_state(srv, e.before, {}, e.repro)
    log = log_text(m)
    lines = [l for l in log.splitlines() if e.fname in l]
    assert lines, (log, e.repro.context())
    assert "This project already has an action with this name" in lines[-1] \
        and re.search(r"\battr\W+name\b", lines[-1]), (
            "the log line should give the server's detail and attr:\n%s\n%s"
            % (lines[-1], e.repro.context()))
    assert e.fname + ".rejected" in listing(m)


# ------------------------------------------------------------ no-op saves


def test_touch_sends_nothing(wmount, srv):
    m = wmount()
    a = pick(srv)
    fname = action_file(m, a["id"])
    before = state_map(srv)
    srv.clear_log()
    r = Repro(m)
    sh(m, "touch %s" % q(fname), r)
    expect_no_writes(srv, r)
    expect_state(srv, before, {}, r)


def test_cp_of_identical_content_sends_nothing(wmount, srv, workdir):
    m = wmount()
    a = pick(srv)
    fname = action_file(m, a["id"])
    copy = Path(workdir) / fname
    copy.write_bytes(m.read(PDIR, fname))
    before = state_map(srv)
    srv.clear_log()
    r = Repro(m)
    sh(m, "cp %s %s" % (q(copy), q(fname)), r)
    sh(m, "cat %s > %s" % (q(copy), q(fname)), r)
    expect_no_writes(srv, r)
    expect_state(srv, before, {}, r)


def test_chmod_chown_utimens_on_action_files_send_nothing(wmount, srv):
    m = wmount()
    a = pick(srv)
    fname = action_file(m, a["id"])
    before = state_map(srv)
    srv.clear_log()
    r = Repro(m)
    sh(m, "chmod 600 {f} && chmod 644 {f} && chown 0:0 {f} && "
       "touch -d '2020-01-01 00:00' {f} && touch -m {f}".format(f=q(fname)),
       r)
    expect_no_writes(srv, r)
    expect_state(srv, before, {}, r)


# ------------------------------------------------------------ rm, mv


def test_rm_soft_deletes_once(wmount, srv):
    m = wmount()
    a = pick(srv)
    fname = action_file(m, a["id"])
    before = state_map(srv)
    srv.clear_log()
    r = Repro(m)
    sh(m, "rm %s" % q(fname), r)
    expect_writes(srv, [patch(PID, a["id"], {"deleted": True})], r)
    expect_state(srv, before, {(PID, a["id"]): {"deleted": True}}, r)
    assert fname not in listing(m), r.context()
    res = m.probe("stat", PDIR, fname)
    assert res.errno == "ENOENT", (res, r.context())


def test_mv_within_a_project_renames(wmount, srv):
    m = wmount()
    a = pick(srv)
    fname = action_file(m, a["id"])
    before = state_map(srv)
    srv.clear_log()
    r = Repro(m)
    sh(m, "mv %s renamed-by-mv.json" % q(fname), r)
    expect_writes(srv, [patch(PID, a["id"], {"name": "renamed-by-mv"})], r)
    expect_state(srv, before, {(PID, a["id"]): {"name": "renamed-by-mv"}}, r)
    names = listing(m)
    assert "%d-renamed-by-mv.json" % a["id"] in names, (names, r.context())
    assert fname not in names and "renamed-by-mv.json" not in names, (
        names, r.context())


def test_mv_onto_another_action_is_refused(wmount, srv):
    m = wmount()
    a, b = pick(srv, n=2)
    fa, fb = action_file(m, a["id"]), action_file(m, b["id"])
    before = state_map(srv)
    srv.clear_log()
    r = Repro(m)
    out = py(m, """
import json, os
try:
    os.rename(%r, %r)
    print(json.dumps({"rename": "ok"}))
except OSError as e:
    print(json.dumps({"rename": e.errno}))
""" % (fa, fb), r)
    assert out["rename"] == errno.EPERM, (out, r.context())
    expect_no_writes(srv, r)
    expect_state(srv, before, {}, r)


def test_mv_across_projects_copies_and_soft_deletes(wmount, srv):
    """rename() across projects gives EXDEV, so mv copies: a POST in the
    other project, then the soft delete of the original."""
    m = wmount()
    a = pick(srv)
    fname = action_file(m, a["id"])
    other = [n for n in m.ls() if n.startswith("%d-" % OTHER_PID)][0]
    r = Repro(m)
    out = py(m, """
import json, os
try:
    os.rename(%r, os.path.join("..", %r, %r))
    print(json.dumps({"rename": "ok"}))
except OSError as e:
    print(json.dumps({"rename": e.errno}))
""" % (fname, other, fname), r)
    assert out["rename"] == errno.EXDEV, (out, r.context())
    expect_no_writes(srv, r)

    before = state_map(srv)
    srv.clear_log()

    def copied(body):
        """a POST with the action's name, description and steps"""
        return (isinstance(body, dict) and body.get("name") == a["name"]
                and body.get("description") == a["description"]
                and len(body.get("steps", ())) == len(a["steps"])
                and "id" not in body and "team_id" not in body
                and body.get("deleted") in (None, False))

    sh(m, "mv %s ../%s/" % (q(fname), q(other)), r)
    expect_writes(srv, [post(OTHER_PID, copied),
                        patch(PID, a["id"], {"deleted": True})], r)
    created = expect_state(srv, before, {(PID, a["id"]): {"deleted": True}},
                           r, new={OTHER_PID: 1})
    new = created[0]
    for k in ("name", "description", "tags", "post_to_slack",
              "slack_message_format", "steps"):
        assert new[k] == a[k], (k, new[k], a[k], r.context())
    assert not new["deleted"]
    assert fname not in listing(m)
    names = listing(m, other)
    assert action_file(m, new["id"], other) in names


# ------------------------------------------------------------ conflicts


CONFLICT_PY = """
import json, os, urllib.request
url = %(url)r
def control(body):
    req = urllib.request.Request(url + "/_control/action",
        data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=15).read()
fd = os.open(%(fname)r, os.O_RDWR)
text = b""
while True:
    b = os.read(fd, 65536)
    if not b:
        break
    text += b
obj = json.loads(text)
# Changed on the server while the file is open.
control({"project": %(pid)d, "id": %(aid)d, "set": %(server)s})
obj.update(%(local)s)
os.lseek(fd, 0, 0)
os.ftruncate(fd, 0)
os.write(fd, (json.dumps(obj, indent=2, ensure_ascii=False) + "\\n").encode())
try:
    os.close(fd)
    print(json.dumps({"close": "ok"}))
except OSError as e:
    print(json.dumps({"close": e.errno}))
"""


def test_conflict_on_the_same_field_gives_estale(wmount, srv):
    m = wmount()
    a = pick(srv)
    fname = action_file(m, a["id"])
    before = state_map(srv)
    srv.clear_log()
    r = Repro(m)
    out = py(m, CONFLICT_PY % {
        "url": srv.url, "fname": fname, "pid": PID, "aid": a["id"],
        "server": json.dumps({"description": "changed on the server"}),
        "local": json.dumps({"description": "changed in the file"})}, r)
    assert out["close"] == errno.ESTALE, (out, r.context())
    expect_no_writes(srv, r)
    expect_state(srv, before, {(PID, a["id"]): {
        "description": "changed on the server"}}, r)
    log = log_text(m)
    lines = [l for l in log.splitlines() if fname in l]
    assert lines and "description" in lines[-1], (
        "the log should name the file and the field in conflict:\n%s\n%s"
        % (log, r.context()))
    # Nothing lost: the text of the refused save is kept.
    assert fname + ".rejected" in listing(m), r.context()
    assert b"changed in the file" in m.read(PDIR, fname + ".rejected")


def test_field_changed_only_on_the_server_is_kept(wmount, srv):
    m = wmount()
    a = pick(srv)
    fname = action_file(m, a["id"])
    before = state_map(srv)
    srv.clear_log()
    r = Repro(m)
    out = py(m, CONFLICT_PY % {
        "url": srv.url, "fname": fname, "pid": PID, "aid": a["id"],
        "server": json.dumps({"tags": ["from-server"]}),
        "local": json.dumps({"description": "changed in the file"})}, r)
    assert out["close"] == "ok", (out, r.context())
    expect_writes(srv, [patch(PID, a["id"], {
        "description": "changed in the file"})], r)
    expect_state(srv, before, {(PID, a["id"]): {
        "description": "changed in the file", "tags": ["from-server"]}}, r)
    expect_file_is_server(m, fname, srv, PID, a["id"], r)


# ------------------------------------------------------------ refused calls


ERRNO_PY = """
import errno, json, os
def attempt(f, *a):
    try:
        f(*a)
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, e.errno)
out = {}
%s
print(json.dumps(out))
"""


def test_rename_flags(wmount, srv):
    """RENAME_NOREPLACE onto an existing file gives EEXIST; any other
    flag EINVAL. Nothing is sent."""
    m = wmount()
    a, b = pick(srv, n=2)
    fa, fb = action_file(m, a["id"]), action_file(m, b["id"])
    before = state_map(srv)
    srv.clear_log()
    r = Repro(m)
    out = py(m, """
import ctypes, errno, json, os
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
def renameat2(a, b, flags):
    if libc.renameat2(AT_FDCWD, a.encode(), AT_FDCWD, b.encode(), flags):
        return errno.errorcode[ctypes.get_errno()]
    return "ok"
open("scratch~", "w").write("x")
out = {"noreplace action": renameat2(%(a)r, %(b)r, 1),
       "noreplace scratch": renameat2("scratch~", %(b)r, 1),
       "exchange": renameat2(%(a)r, %(b)r, 2),
       "whiteout": renameat2(%(a)r, "other~", 4)}
os.unlink("scratch~")
print(json.dumps(out))
""" % {"a": fa, "b": fb}, r)
    assert out == {"noreplace action": "EEXIST", "noreplace scratch":
                   "EEXIST", "exchange": "EINVAL", "whiteout": "EINVAL"}, (
        out, r.context())
    expect_no_writes(srv, r)
    expect_state(srv, before, {}, r)


def test_rm_that_the_server_refuses_fails_and_keeps_the_file(wmount, srv):
    m = wmount("retries=2")
    a = pick(srv)
    fname = action_file(m, a["id"])
    before = state_map(srv)
    srv.clear_log()
    r = Repro(m)
    srv.fail(3, 500, method="PATCH")
    r.add("curl -s -XPOST %s/_control/fail -d '{\"count\": 3, \"mode\": "
          "\"500\", \"method\": \"PATCH\"}'" % srv.url)
    res = sh(m, "rm %s" % q(fname), r, check=False)
    assert res.returncode != 0 and b"Input/output error" in res.stderr, (
        res, r.context())
    expect_writes(srv, [patch(PID, a["id"], {"deleted": True},
                              status=500)] * 3, r)
    expect_state(srv, before, {}, r)
    assert fname in listing(m), r.context()


def test_mkdir_and_rmdir_give_eperm(wmount, srv):
    m = wmount()
    before = state_map(srv)
    srv.clear_log()
    r = Repro(m)
    out = py(m, ERRNO_PY % """
out["mkdir in root"] = attempt(os.mkdir, "../99-new-project")
out["mkdir in project"] = attempt(os.mkdir, "subdir")
out["rmdir project"] = attempt(os.rmdir, "../%s")
""" % PDIR, r)
    assert out == {"mkdir in root": "EPERM", "mkdir in project": "EPERM",
                   "rmdir project": "EPERM"}, (out, r.context())
    expect_no_writes(srv, r)
    expect_state(srv, before, {}, r)


def test_ln_of_an_action_file_gives_eperm(wmount, srv):
    m = wmount()
    a = pick(srv)
    fname = action_file(m, a["id"])
    before = state_map(srv)
    srv.clear_log()
    r = Repro(m)
    res = sh(m, "ln %s %s.link" % (q(fname), q(fname)), r, check=False)
    assert res.returncode != 0 and b"Operation not permitted" in res.stderr, (
        res, r.context())
    out = py(m, ERRNO_PY % """
out["link"] = attempt(os.link, %r, "copy.json")
""" % fname, r)
    assert out == {"link": "EPERM"}, (out, r.context())
    expect_no_writes(srv, r)
    expect_state(srv, before, {}, r)


def test_xattrs_are_not_supported(wmount, srv):
    need_tools("getfattr", "setfattr")
    m = wmount()
    a = pick(srv)
    fname = action_file(m, a["id"])
    before = state_map(srv)
    srv.clear_log()
    r = Repro(m)
    res = sh(m, "setfattr -n user.x -v 1 %s" % q(fname), r, check=False)
    assert res.returncode != 0 and b"Operation not supported" in res.stderr, (
        res, r.context())
    res = sh(m, "getfattr -n user.x %s" % q(fname), r, check=False)
    assert res.returncode != 0 and b"Operation not supported" in res.stderr, (
        res, r.context())
    out = py(m, ERRNO_PY % """
out["set"] = attempt(os.setxattr, %(f)r, "user.x", b"1")
out["get"] = attempt(os.getxattr, %(f)r, "user.x")
out["acl"] = attempt(os.setxattr, %(f)r, "system.posix_acl_access",
                     bytes.fromhex("0200000001000600ffffffff04000400ffffffff"
                                   "10000400ffffffff20000400ffffffff"))
out["list"] = attempt(os.listxattr, %(f)r)
""" % {"f": fname}, r)
    # ENOTSUP and EOPNOTSUPP are one number on Linux; Python names it
    # ENOTSUP.
    unsupported = ("ENOTSUP", "EOPNOTSUPP")
    assert out["set"] in unsupported and out["get"] in unsupported \
        and out["acl"] in unsupported, (out, r.context())
    assert out["list"] == "ok" or out["list"] in unsupported, out
    expect_no_writes(srv, r)
    expect_state(srv, before, {}, r)


# ------------------------------------------------------------ scratch files


def test_scratch_files_never_reach_the_server(wmount, srv):
    """Swap, probe and backup files: create, write, rename, unlink, all
    local; listed while they exist."""
    m = wmount()
    a = pick(srv)
    fname = action_file(m, a["id"])
    before = state_map(srv)
    names = listing(m)
    srv.clear_log()
    r = Repro(m)
    out = py(m, """
import json, os
f = %r
seen = {}
for name in ("." + f + ".swp", "4913", f + "~", "#" + f + "#",
             f + ".tmp", f + ".bak", ".fuse_hidden0001"):
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, b'{"name": "must never be sent"}\\n')
    os.fsync(fd)
    os.close(fd)
    os.chmod(name, 0o644)
    os.rename(name, name + "~")
    os.rename(name + "~", name)
    seen[name] = name in os.listdir(".") and \\
        open(name, "rb").read() == b'{"name": "must never be sent"}\\n'
    os.unlink(name)
    seen[name + " gone"] = name not in os.listdir(".")
os.symlink("root@host.1234", ".#" + f)
seen["lock"] = os.readlink(".#" + f) == "root@host.1234"
os.unlink(".#" + f)
print(json.dumps(seen))
""" % fname, r)
    assert all(out.values()), (out, r.context())
    expect_no_writes(srv, r)
    expect_state(srv, before, {}, r)
    assert listing(m) == names, r.context()
    for req in srv.requests():
        assert "must never" not in json.dumps(req), (req, r.context())
