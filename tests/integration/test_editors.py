"""Editors saving through the mount, under tmux with real keystrokes and
an empty HOME (only Debian's system configuration applies: for vim,
/etc/vim/vimrc and defaults.vim; for nano, /etc/nanorc and its locking).
The mount is outside /tmp, so vim and emacs make their backups the way
they do for a user's files: rename the file away, create it again.

Each test checks which way the editor saved (phfs's -d trace of FUSE
requests), the exact requests the server got and its whole state.
"""

import os
import re
import shlex

import pytest

from savetest import (PDIR, PID, Repro, action_of, action_file,
                      expect_file_is_server, expect_no_writes, expect_state,
                      expect_writes, listing, need_tools, ops_since, patch,
                      pick, post, state_map, trace_mark)

from savetest import srv, tmux, wmount  # noqa: F401 (fixtures)
pytestmark = pytest.mark.timeout(120)

# How long an editor may take to show a screen, or to save through the
# mount (a save waits for the server).
SCREEN = 30


def scratch(name):
    """Names editors leave or use beside a file."""
    return (name.startswith((".", "#", "~")) or name.endswith("~")
            or name.isdigit() or name.endswith(".rejected"))


class Session:
    """One action, its file, the server before, and an editor on it."""

    def __init__(self, m, server, tmux, argv_head, value, aid=None):
        self.m, self.server = m, server
        self.a = action_of(server, PID, aid) if aid else pick(server)
        self.aid = self.a["id"]
        self.fname = action_file(m, self.aid)
        self.text = m.read(PDIR, self.fname).decode()
        self.value = value
        self.names = listing(m)
        self.before = state_map(server)
        self.cwd = os.path.join(str(m.path), PDIR)
        self.t = tmux()
        self.argv = list(argv_head) + [self.fname]
        self.repro = Repro(m)
        self.mark = trace_mark(m)
        server.clear_log()

    def start(self, ready):
        self.t.start(self.argv, self.cwd)
        self.repro.add(" ".join(["HOME=$(mktemp -d -p /var/tmp)"] +
                                [shlex.quote(a) for a in self.argv]) +
                       "    # under tmux, then type the keys below",
                       lambda: "# keys (tmux send-keys names, <literal "
                       "text>): " + " | ".join(self.t.keys_sent))
        self.wait(ready, "the editor did not show the file")
        return self

    def wait(self, pattern, what, timeout=SCREEN):
        return self.t.wait_for(pattern, timeout, what,
                               context=self.repro.context())

    def keys(self, *k):
        self.t.keys(*k)

    def type(self, s):
        self.t.type(s)

    def exit(self):
        return self.t.wait_exit(SCREEN, context=self.repro.context())

    def ops(self):
        return ops_since(self.m, self.mark)

    def path(self, name=None):
        return "/%s/%s" % (PDIR, name or self.fname)

    def expect_ops(self, present=(), absent=()):
        ops = self.ops()
        for op in present:
            assert op in ops, (
                "the editor did not save the expected way: %r is not in "
                "the FUSE requests phfs saw:\n    %s\n%s\n%s" % (
                    op, "\n    ".join(map(repr, ops)), self.t.howto(),
                    self.repro.context()))
        for op in absent:
            assert op not in ops, (
                "unexpected FUSE request %r:\n    %s\n%s" % (
                    op, "\n    ".join(map(repr, ops)),
                    self.repro.context()))

    def check_one_patch(self, writes=None):
        want = writes or [patch(PID, self.aid, {"description": self.value})]
        expect_writes(self.server, want, self.repro)
        expect_state(self.server, self.before,
                     {(PID, self.aid): {"description": self.value}},
                     self.repro)
        self.check_listing()
        expect_file_is_server(self.m, self.fname, self.server, PID,
                              self.aid, self.repro)

    def check_listing(self, allowed=()):
        names = listing(self.m)
        real = sorted(n for n in names if not scratch(n))
        assert real == sorted(n for n in self.names if not scratch(n)), (
            "action files changed:\nbefore: %r\nafter:  %r\n%s" % (
                self.names, names, self.repro.context()))
        extra = sorted(set(names) - set(self.names) - set(allowed))
        assert not extra, ("files left behind: %r\n%s" % (
            extra, self.repro.context()))


VIM_LOADED = r'"%s" \d+L, \d+B'


def vim_subst(value):
    return ':%%s/^  "description": .*,$/  "description": "%s",/' % value


# ------------------------------------------------------------ vim


def test_vim_debian_defaults_renames_away_and_creates(wmount, srv, tmux):
    need_tools("vim", "tmux")
    m = wmount()
    s = Session(m, srv, tmux, ["vim"], "via vim")
    s.start(VIM_LOADED % re.escape(s.fname))
    s.type(vim_subst(s.value))
    s.keys("Enter")
    s.type(":w")
    s.keys("Enter")
    s.wait(r'"%s" \d+L, \d+B written' % re.escape(s.fname), "vim :w")
    s.type(":q")
    s.keys("Enter")
    s.exit()
    # backupcopy=auto chose rename: the file went to NAME~ and was made
    # again.
    s.expect_ops(present=[("create", s.path("4913")),
                          ("rename", s.path(), s.path(s.fname + "~")),
                          ("create", s.path())])
    s.check_one_patch()


def test_vim_backupcopy_yes_writes_in_place(wmount, srv, tmux):
    need_tools("vim", "tmux")
    m = wmount()
    s = Session(m, srv, tmux, ["vim"], "via vim backupcopy=yes")
    s.start(VIM_LOADED % re.escape(s.fname))
    s.type(":set backupcopy=yes")
    s.keys("Enter")
    s.type(vim_subst(s.value))
    s.keys("Enter")
    s.type(":w")
    s.keys("Enter")
    s.wait(r'"%s" \d+L, \d+B written' % re.escape(s.fname), "vim :w")
    s.type(":q")
    s.keys("Enter")
    s.exit()
    s.expect_ops(present=[("create", s.path(s.fname + "~"))],
                 absent=[("rename", s.path(), s.path(s.fname + "~")),
                         ("create", s.path())])
    s.check_one_patch()


def test_vim_write_without_change_sends_nothing(wmount, srv, tmux):
    need_tools("vim", "tmux")
    m = wmount()
    s = Session(m, srv, tmux, ["vim"], None)
    s.start(VIM_LOADED % re.escape(s.fname))
    s.type(":w")
    s.keys("Enter")
    s.wait(r'"%s" \d+L, \d+B written' % re.escape(s.fname), "vim :w")
    s.type(":q")
    s.keys("Enter")
    s.exit()
    s.expect_ops(present=[("rename", s.path(), s.path(s.fname + "~"))])
    expect_no_writes(srv, s.repro)
    expect_state(srv, s.before, {}, s.repro)
    s.check_listing()
    assert m.read(PDIR, s.fname).decode() == s.text


def test_vim_invalid_json_shows_write_error_then_saves_after_fix(
        wmount, srv, tmux):
    """:w of broken JSON: vim shows its write error and restores its
    backup; the action is never deleted or changed meanwhile (no request
    but GETs); after the fix, :w lands with one PATCH."""
    need_tools("vim", "tmux")
    m = wmount()
    s = Session(m, srv, tmux, ["vim"], "fixed in vim")
    s.start(VIM_LOADED % re.escape(s.fname))
    s.type(':%s/^  "description": .*,$/  "description": broken,/')
    s.keys("Enter")
    s.type(":w")
    s.keys("Enter")
    s.wait(r"E667|E512", "vim's write error (E667 fsync / E512 close)")
    expect_no_writes(srv, s.repro, "after the failed :w")
    expect_state(srv, s.before, {}, s.repro, what="after the failed :w")
    # The action file is still there, unchanged; the refused text is kept.
    names = listing(m)
    assert s.fname in names, (names, s.repro.context())
    assert m.read(PDIR, s.fname).decode() == s.text, s.repro.context()
    assert s.fname + ".rejected" in names, (names, s.repro.context())
    assert b"broken" in m.read(PDIR, s.fname + ".rejected")

    s.keys("Escape")
    s.type(':%s/^  "description": broken,$/  "description": "fixed in vim",/')
    s.keys("Enter")
    s.type(":w")
    s.keys("Enter")
    s.wait(r'"%s" \d+L, \d+B written' % re.escape(s.fname),
           "vim :w after the fix")
    s.type(":q")
    s.keys("Enter")
    s.exit()
    expect_writes(srv, [patch(PID, s.aid, {"description": s.value})],
                  s.repro)
    expect_state(srv, s.before, {(PID, s.aid): {"description": s.value}},
                 s.repro)
    s.check_listing(allowed=[s.fname + ".rejected"])
    expect_file_is_server(m, s.fname, srv, PID, s.aid, s.repro)


def test_vim_new_file_posts_once_then_patches(wmount, srv, tmux):
    need_tools("vim", "tmux")
    m = wmount()
    before = state_map(srv)
    names = listing(m)
    srv.clear_log()
    t = tmux()
    r = Repro(m)
    cwd = os.path.join(str(m.path), PDIR)
    t.start(["vim", "new-thing.json"], cwd)
    r.add("HOME=$(mktemp -d -p /var/tmp) vim new-thing.json    # under "
          "tmux, then type the keys below",
          lambda: "# keys (tmux send-keys names, <literal text>): "
          + " | ".join(t.keys_sent))
    t.wait_for(r'"new-thing.json" \[New\]', SCREEN, "vim on a new file",
               r.context())
    t.type('i{"name": "New thing"}')
    t.keys("Escape")
    t.type(":w")
    t.keys("Enter")
    t.wait_for(r'"new-thing.json" \[New\] 1L, \d+B written|E\d+:', SCREEN,
               "vim :w", r.context())
    expect_writes(srv, [post(PID, {"name": "New thing"})], r)
    created = expect_state(srv, before, {}, r, new={PID: 1})
    aid = created[0]["id"]
    now = listing(m)
    assert "%d-new-thing.json" % aid in now, (now, r.context())
    assert "new-thing.json" not in now, (now, r.context())

    # A second save from the same buffer updates the new action.
    srv.clear_log()
    t.type(':s/}/, "description": "second save"}/')
    t.keys("Enter")
    t.type(":w")
    t.keys("Enter")
    t.wait_for(r'"new-thing.json" 1L, \d+B written|E\d+:', SCREEN,
               "second :w", r.context())
    expect_writes(srv, [patch(PID, aid, {"description": "second save"})], r,
                  "second :w")
    t.type(":q")
    t.keys("Enter")
    t.wait_exit(SCREEN, r.context())
    a = action_of(srv, PID, aid)
    assert (a["name"], a["description"], a["deleted"]) == (
        "New thing", "second save", False), (a, r.context())
    expect_state(srv, before, {}, r, new={PID: 1})
    final = listing(m)
    assert sorted(set(final) - set(names)) == ["%d-new-thing.json" % aid], (
        final, r.context())
    expect_file_is_server(m, "new-thing.json", srv, PID, aid, r)


# ------------------------------------------------------------ neovim


def test_nvim_renames_away_and_creates(wmount, srv, tmux):
    need_tools("nvim", "tmux")
    m = wmount()
    s = Session(m, srv, tmux, ["nvim"], "via nvim")
    # nvim clears the "file loaded" message at once: its status line.
    s.start(r"^%s\s+\d+,\d+\s+All" % re.escape(s.fname))
    s.type(vim_subst(s.value))
    s.keys("Enter")
    s.type(":w")
    s.keys("Enter")
    s.wait(r'"%s" \d+L, \d+B written' % re.escape(s.fname), "nvim :w")
    s.type(":q")
    s.keys("Enter")
    s.exit()
    s.expect_ops(present=[("rename", s.path(), s.path(s.fname + "~")),
                          ("create", s.path())])
    s.check_one_patch()


# ------------------------------------------------------------ emacs


EMACS = ["emacs", "-nw", "-Q", "--eval",
         "(setq backup-enable-predicate (lambda (name) t))"]


def test_emacs_first_save_renames_away_later_saves_in_place(wmount, srv,
                                                            tmux):
    need_tools("emacs", "tmux")
    m = wmount()
    s = Session(m, srv, tmux, EMACS, "via emacs")
    s.start(r"-UU-:.*%s" % re.escape(s.fname))

    def set_description(value):
        s.keys("M-<")
        # "Mark set" also replaces an earlier "Wrote ..." in the echo area.
        s.wait(r"Mark set", "emacs M-<")
        s.keys("C-s")
        s.type('"description": "')
        s.keys("Enter")
        s.keys("C-k")
        s.type('%s",' % value)
        s.keys("C-x", "C-s")

    set_description("via emacs")
    s.wait(r"Wrote .*%s" % re.escape(s.fname), "emacs C-x C-s")
    s.expect_ops(present=[("rename", s.path(), s.path(s.fname + "~")),
                          ("create", s.path())])
    expect_writes(srv, [patch(PID, s.aid, {"description": "via emacs"})],
                  s.repro, "first save")

    mark = trace_mark(m)
    set_description("emacs again")
    s.wait(r"Wrote .*%s" % re.escape(s.fname), "the second C-x C-s",)
    later = ops_since(m, mark)
    assert ("rename", s.path(), s.path(s.fname + "~")) not in later, later
    s.keys("C-x", "C-c")
    s.exit()
    s.value = "emacs again"
    expect_writes(srv, [patch(PID, s.aid, {"description": "via emacs"}),
                        patch(PID, s.aid, {"description": "emacs again"})],
                  s.repro)
    expect_state(srv, s.before, {(PID, s.aid): {"description": s.value}},
                 s.repro)
    # Emacs keeps its backup NAME~: a local file with the text before the
    # first save, never sent.
    s.check_listing(allowed=[s.fname + "~"])
    assert m.read(PDIR, s.fname + "~").decode() == s.text, s.repro.context()
    expect_file_is_server(m, s.fname, srv, PID, s.aid, s.repro)


# ------------------------------------------------------------ nano


def test_nano_saves_in_place(wmount, srv, tmux):
    need_tools("nano", "tmux")
    m = wmount()
    s = Session(m, srv, tmux, ["nano"], "via nano")
    s.start(r"\[ Read \d+ lines")
    s.expect_ops(present=[("create", s.path("." + s.fname + ".swp"))])
    s.keys("C-w")
    s.wait(r"Search", "nano's search prompt")
    s.type('"description": "')
    s.keys("Enter")
    s.keys("C-k")
    s.type('  "description": "via nano",')
    s.keys("Enter")
    s.keys("C-o")
    s.wait(r"File Name to Write", "nano's write prompt")
    s.keys("Enter")
    s.wait(r"\[ Wrote \d+ lines", "nano's write")
    s.keys("C-x")
    s.exit()
    s.expect_ops(absent=[("rename", s.path(), s.path(s.fname + "~")),
                         ("create", s.path()), ("unlink", s.path())])
    s.check_one_patch()
