"""The read and save paths under valgrind's memcheck.

Run through scripts/test (or by hand):

    PHFS_VALGRIND_LOGS=/var/tmp/vg PHFS_BIN=tests/integration/valgrind-phfs \\
        /usr/bin/python3 -m pytest tests/integration/test_valgrind.py

Each test drives a mount with real tools, unmounts it, and then requires
phfs to have exited 0 with a memcheck report free of errors and leaks.
Without the valgrind wrapper as PHFS_BIN the tests fail: they are never
silently run without the checker.
"""

import os
import re
from pathlib import Path

import pytest

from phfstest import PHFS_BIN

LOGS = os.environ.get("PHFS_VALGRIND_LOGS")

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(autouse=True)
def under_valgrind():
    if not LOGS or PHFS_BIN.name != "valgrind-phfs":
        pytest.fail("run with PHFS_BIN=tests/integration/valgrind-phfs and "
                    "PHFS_VALGRIND_LOGS=DIR", pytrace=False)
    before = set(Path(LOGS).glob("phfs.*.log"))
    yield
    new = sorted(set(Path(LOGS).glob("phfs.*.log")) - before)
    assert new, "valgrind wrote no report in %s" % LOGS
    for log in new:
        text = log.read_text(errors="replace")
        # --quiet: the report holds only errors and leaks.
        assert not re.search(r"==\d+== \S", text), (
            "memcheck found problems in phfs (%s):\n%s" % (log, text[-6000:]))


def unmount_clean(m):
    rc = m.unmount()
    assert rc == 0, "phfs exited %r under valgrind\n%s" % (rc, m.context())


def test_read_path(mount, server_factory):
    s = server_factory(projects=2, actions=40, shape="paged", page_size=15)
    m = mount("ttl=1", server=s, wait=120)
    res = m.sh("grep -rl --exclude-dir=.phfs pageview . | wc -l && "
               "for f in 1-web-app/*.json; do jq . \"$f\" | cmp - \"$f\"; "
               "done && cat .phfs/stats .phfs/log >/dev/null && "
               "sleep 1.2 && cat 2-mobile/*.json >/dev/null", timeout=300)
    assert int(res.stdout.split()[0]) > 0
    unmount_clean(m)


def test_save_path(mount, server):
    m = mount("ttl=5", server=server, wait=120)
    f = [n for n in m.ls("1-web-app") if n.startswith("21-")][0]
    m.sh("cd 1-web-app && "
         "sed -i 's/\"description\": \"[^\"]*\"/\"description\": \"vg\"/' %s && "
         "echo bad > %s; "
         "printf '{\"name\": \"Made under valgrind\"}' > made.json && "
         "cat made.json >/dev/null && "
         "mv %s %s.bak && mv %s.bak %s && "
         "ln -s x .#lock && rm .#lock && "
         "rm made.json" % (f, f, f, f, f, f), timeout=300)
    assert any(r["body"] == {"description": "vg"}
               for r in server.requests("PATCH")), m.context()
    assert len(server.requests("POST")) == 1, m.context()
    unmount_clean(m)
