"""Shipping: the manual page is clean, `meson install` lays out what a
FUSE tool needs, and mount(8) mounts phfs from an fstab line."""

import fcntl
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from phfstest import REPO, TEST_ROOT, is_mounted, mount_fstype, run

pytestmark = pytest.mark.timeout(600)

MAN = REPO / "man" / "phfs.1"


def test_man_page_is_lint_clean():
    for cmd in (["mandoc", "-Tlint", str(MAN)],
                ["groff", "-t", "-man", "-ww", "-z", str(MAN)]):
        res = run(cmd, timeout=60)
        out = (res.stdout + res.stderr).decode(errors="replace")
        assert res.returncode == 0 and not out.strip(), (
            "%s reports:\n%s" % (" ".join(cmd), out))


def test_man_page_documents_every_option():
    text = MAN.read_text()
    for opt in ("key_file", "project", "ttl", "timeout", "retries", "ro",
                "cacert", "\\-f", "\\-d", "\\-s", "\\-h", "\\-V"):
        assert opt in text, "the man page does not mention %s" % opt
    for section in ("SAVING", "CREATING, RENAMING, REMOVING", "SIGNALS",
                    "FILES", "ENVIRONMENT", "EXIT STATUS", "EXAMPLES"):
        assert ".SH " + section in text, "no %s section" % section


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """phfs built with prefix /usr and installed into a DESTDIR."""
    work = Path(os.environ.get("PHFS_TEST_DIR") or "/var/tmp/phfs-tests")
    work.mkdir(parents=True, exist_ok=True)
    build = REPO / "build-install"
    dest = work / ("destdir-%d" % os.getpid())
    shutil.rmtree(dest, ignore_errors=True)
    if not (build / "build.ninja").exists():
        res = run(["meson", "setup", str(build), "--prefix=/usr"], timeout=300,
                  cwd=str(REPO))
        assert res.returncode == 0, res.stdout.decode() + res.stderr.decode()
    res = run(["meson", "install", "-C", str(build), "--quiet",
               "--destdir", str(dest)], timeout=600, cwd=str(REPO))
    assert res.returncode == 0, res.stdout.decode() + res.stderr.decode()
    yield dest
    shutil.rmtree(dest, ignore_errors=True)


def test_meson_install_layout(installed):
    d = installed / "usr"
    for rel in ("bin/phfs", "sbin/mount.phfs", "share/man/man1/phfs.1",
                "lib/systemd/system/phfs@.service",
                "lib/systemd/user/phfs@.service"):
        assert (d / rel).exists(), "meson install did not install %s" % rel
    assert os.access(d / "bin" / "phfs", os.X_OK)
    assert os.access(d / "sbin" / "mount.phfs", os.X_OK)
    link = d / "sbin" / "mount.fuse.phfs"
    assert link.is_symlink() and os.readlink(link) == "mount.phfs"
    res = run([str(d / "bin" / "phfs"), "-V"], timeout=30)
    assert res.returncode == 0 and res.stdout.startswith(b"phfs ")
    for unit in ("system", "user"):
        text = (d / "lib" / "systemd" / unit / "phfs@.service").read_text()
        assert "ExecStop=/bin/fusermount3 -u" in text
        assert "key_file=" in text and "phx_" not in text.split(
            "[Service]")[1], "the unit must read the key from a file"


def test_mount_helper_as_mount_runs_it(installed, server, workdir, key_file):
    """mount(8) runs `mount.fuse.phfs SOURCE DIR -o OPTIONS` for an fstab
    line of type fuse.phfs; so does this."""
    mnt = workdir / "mnt"
    mnt.mkdir()
    kf = key_file(server.key)
    helper = installed / "usr" / "sbin" / "mount.fuse.phfs"
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    res = run([str(helper), server.url, str(mnt), "-o",
               "key_file=%s,_netdev,noauto,ttl=5" % kf], timeout=60, env=env)
    try:
        assert res.returncode == 0, res.stderr.decode(errors="replace")
        assert is_mounted(mnt) and mount_fstype(mnt) == "fuse.phfs"
        assert any(n.startswith("1-") for n in os.listdir(mnt))
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], timeout=30)
        for _ in range(100):
            if not is_mounted(mnt):
                break
            time.sleep(0.1)
    assert not is_mounted(mnt)


def test_fstab_line_mounts_with_mount_T(installed, server, workdir, key_file):
    """`mount -T FSTAB DIR` with a fuse.phfs line, through the helper that
    mount(8) finds in /sbin."""
    mnt = workdir / "mnt"
    mnt.mkdir()
    kf = key_file(server.key)
    fstab = workdir / "fstab"
    fstab.write_text("%s %s fuse.phfs key_file=%s,_netdev,noauto,ttl=5 0 0\n"
                     % (server.url, mnt, kf))
    sbin_helper = Path("/sbin/mount.fuse.phfs")
    placed = False
    # /sbin is shared: another test run on this machine waits its turn.
    TEST_ROOT.mkdir(parents=True, exist_ok=True)
    lock = open(TEST_ROOT / "sbin-helper.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    if sbin_helper.is_symlink() and not sbin_helper.exists():
        sbin_helper.unlink()  # left dangling by an interrupted run
    if not sbin_helper.exists():
        sbin_helper.symlink_to(installed / "usr" / "sbin" / "mount.phfs")
        placed = True
    try:
        res = run(["mount", "-T", str(fstab), str(mnt)], timeout=60)
        assert res.returncode == 0, (
            "mount -T failed: %s" % res.stderr.decode(errors="replace"))
        assert mount_fstype(mnt) == "fuse.phfs"
        assert any(n.startswith("1-") for n in os.listdir(mnt))
        res = run(["umount", str(mnt)], timeout=60)
        assert res.returncode == 0, res.stderr.decode(errors="replace")
        for _ in range(100):
            if not is_mounted(mnt):
                break
            time.sleep(0.1)
        assert not is_mounted(mnt)
    finally:
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-uz", str(mnt)], timeout=30)
        if placed:
            sbin_helper.unlink()
        lock.close()
