"""Fixtures for the phfs integration tests.

The tests mount the real binary (build/phfs, or $PHFS_BIN) against the
fake PostHog server (tests/fake_posthog.py) on a loopback port and check
what users see in the tree, and what the server saw in its request log.

Run from the repository root, as root with /dev/fuse:

    /usr/bin/python3 -m pytest tests/integration

Mount points and server files live under $PHFS_TEST_DIR (default
/var/tmp/phfs-tests), one directory per run; it is removed when every
test passed and kept otherwise, so the reproduction commands printed by a
failing test keep working.

The API key is random per server, written to a 0600 keys file, given to
phfs only through $POSTHOG_PERSONAL_API_KEY and never printed: output
shown in a failure message has it redacted.
"""

import os
import re
import shutil
import time
from pathlib import Path

import pytest

from phfstest import (FAKE, PHFS_BIN, START_DEADLINE, TEST_ROOT, FakeServer,
                      Mount, base_env, is_mounted, mount_fstype)

RUN_DIR = None


def pytest_configure(config):
    global RUN_DIR
    TEST_ROOT.mkdir(parents=True, exist_ok=True)
    os.chmod(TEST_ROOT, 0o700)
    RUN_DIR = TEST_ROOT / ("run-%s-%d" % (time.strftime("%Y%m%d-%H%M%S"),
                                          os.getpid()))
    RUN_DIR.mkdir()


def pytest_sessionfinish(session, exitstatus):
    if RUN_DIR is None or not RUN_DIR.exists():
        return
    if exitstatus == 0:
        # Never remove a directory something is still mounted on.
        for root, dirs, _ in os.walk(RUN_DIR):
            for d in dirs:
                if is_mounted(os.path.join(root, d)):
                    return
        shutil.rmtree(RUN_DIR, ignore_errors=True)
    else:
        session.config._phfs_kept = RUN_DIR


def pytest_terminal_summary(terminalreporter):
    kept = getattr(terminalreporter.config, "_phfs_kept", None)
    if kept:
        terminalreporter.write_line(
            "phfs test files (keys files, server and mount logs) kept in %s"
            % kept)


@pytest.fixture(scope="session", autouse=True)
def environment():
    """The suite needs the binary and FUSE; without them it fails, loudly,
    rather than skipping."""
    problems = []
    if not (PHFS_BIN.is_file() and os.access(PHFS_BIN, os.X_OK)):
        problems.append("phfs binary missing: %s (build it: meson setup "
                        "build && meson compile -C build, or set PHFS_BIN)"
                        % PHFS_BIN)
    if not os.path.exists("/dev/fuse"):
        problems.append("/dev/fuse missing: these tests need FUSE")
    if not shutil.which("fusermount3"):
        problems.append("fusermount3 missing (apt-get install fuse3)")
    if not FAKE.is_file():
        problems.append("fake server missing: %s" % FAKE)
    if not shutil.which("jq"):
        problems.append("jq missing (apt-get install jq)")
    if os.geteuid() != 0:
        problems.append("the integration tests run as root")
    if problems:
        pytest.fail("cannot run the phfs integration tests:\n  "
                    + "\n  ".join(problems), pytrace=False)


_counter = [0]


def _workdir(request, kind):
    _counter[0] += 1
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:60]
    d = RUN_DIR / ("%s-%s-%d" % (name, kind, _counter[0]))
    d.mkdir(mode=0o700)
    return d


@pytest.fixture
def workdir(request):
    """A private directory for the test under the run directory (never
    under /tmp)."""
    return _workdir(request, "work")


# ------------------------------------------------------------ fake server

@pytest.fixture
def server_factory(request):
    """Starts fake servers: server_factory(projects=, actions=, shape=, ...)."""
    servers = []

    def make(**kw):
        s = FakeServer(_workdir(request, "server"), **kw)
        servers.append(s)
        return s.start()

    yield make
    for s in servers:
        s.stop()


@pytest.fixture
def server(server_factory):
    """A fake server with 3 projects x 20 live actions (plus 3 soft-deleted
    each), the list in the newest shape ({count, results})."""
    return server_factory()


# ------------------------------------------------------------ the mount


@pytest.fixture
def mount(request):
    """mount(*opts, server=, host=, env=, key=, args=, expect=, wait=)

    Starts `phfs -f [args] -o OPTS HOST MOUNTPOINT` with the key in
    $POSTHOG_PERSONAL_API_KEY and waits until it is mounted (expect=
    "mounted", the default) or has exited (expect="exit"; fails if it
    mounted). expect=None returns whichever happened. Every mount is
    unmounted at teardown, whatever the test did.

    server: defaults to the `server` fixture. host: defaults to the
    server's URL; False omits the HOST argument. key: defaults to the
    server's first key; False sets no key. env: extra environment (a value
    None removes the variable).
    """
    mounts = []

    def make(*opts, server=None, host=None, env=None, key=None, args=(),
             expect="mounted", wait=START_DEADLINE, foreground=True,
             mountpoint=None):
        if server is None and (host is None or key is None):
            server = request.getfixturevalue("server")
        wd = _workdir(request, "mount")
        mp = Path(mountpoint) if mountpoint else wd / "mnt"
        if not mountpoint:
            mp.mkdir()
        argv = [str(PHFS_BIN)] + (["-f"] if foreground else []) + list(args)
        opts = [o for o in opts if o]
        if opts:
            argv += ["-o", ",".join(opts)]
        if host is None:
            host = server.url
        if host is not False:
            argv.append(host)
        argv.append(str(mp))
        e = base_env()
        if key is None:
            key = server.key
        if key is not False:
            e["POSTHOG_PERSONAL_API_KEY"] = key
        for k, v in (env or {}).items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = v
        keys = [k.key for k in server.keys] if server else []
        if key:
            keys.append(key)
        m = Mount(wd, argv, e, key if key is not False else None, keys,
                  server, mp)
        mounts.append(m)
        m.start()
        got = m.wait_mounted_or_exit(wait)
        if got == "hung":
            m.unmount()
            pytest.fail("phfs neither mounted nor exited within %ss\n%s"
                        % (wait, m.context()))
        if expect == "mounted" and got != "mounted":
            pytest.fail("phfs exited with %s instead of mounting\n%s"
                        % (m.returncode, m.context()))
        if expect == "exit" and got != "exited":
            m.unmount()
            pytest.fail("phfs mounted but was expected to exit with an "
                        "error\n%s" % m.context())
        if got == "mounted":
            fstype = mount_fstype(mp)
            assert fstype and fstype.startswith("fuse"), (
                "mounted with type %r\n%s" % (fstype, m.context()))
        return m

    yield make
    for m in mounts:
        m.unmount()


@pytest.fixture
def key_file(request):
    """key_file(key, mode) writes a key file and returns its path."""
    def make(key, mode=0o600, newline=True):
        path = _workdir(request, "keyfile") / "key"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key + ("\n" if newline else ""))
        os.chmod(path, mode)
        return path
    return make
