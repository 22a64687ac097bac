"""The phfs command line: options, the key, the pre-mount check.

A run that must fail has to exit non-zero with its reason on stderr,
leave nothing mounted, and (where the reason is local) send nothing to the
server. No test here talks to anything but loopback: the `us` / `eu`
shortcuts are checked inside a network namespace that has only loopback.
"""

import re
import subprocess
import time

import pytest

from phfstest import (PHFS_BIN, REPO, SLACK, START_DEADLINE, Key, base_env,
                      closed_port,
                      is_mounted, assert_no_key, new_key, q, run,
                      run_isolated)

INVALID_KEY_DETAIL = ("Personal API key found in request Authorization "
                      "header is invalid.")
SCOPED_DETAIL = ("API keys with scoped projects are only supported on "
                 "project-based endpoints.")


def phfs(*args, env=None, timeout=30):
    e = base_env()
    e.update(env or {})
    return run([str(PHFS_BIN)] + list(args), timeout=timeout, env=e,
               what="phfs")


def out_of(res):
    return (res.stdout + res.stderr).decode(errors="replace")


def assert_failed(m, *needles, server=None, requests=None):
    """phfs exited non-zero (not by a signal) with every needle on
    stderr (case-insensitive), nothing mounted; with @requests, the server
    got exactly that many API requests."""
    err = m.stderr_text()
    ctx = m.context()
    assert m.returncode is not None and m.returncode > 0, (
        "expected a non-zero exit, got %r\n%s" % (m.returncode, ctx))
    assert not is_mounted(m.path), "left mounted\n" + ctx
    assert err.strip(), "no message on stderr\n" + ctx
    for n in needles:
        if isinstance(n, (tuple, list)):
            assert any(x.lower() in err.lower() for x in n), (
                "stderr mentions none of %r\n%s" % (n, ctx))
        else:
            assert n.lower() in err.lower(), (
                "stderr does not mention %r\n%s" % (n, ctx))
    assert "Traceback" not in err and "Segmentation" not in err, ctx
    if requests is not None:
        got = server.requests()
        assert len(got) == requests, (
            "expected %d API request(s), the server got %d: %s\n%s" % (
                requests, len(got),
                [(r["method"], r["path"], r["status"]) for r in got], ctx))


def meson_version():
    m = re.search(r"version\s*:\s*'([^']+)'",
                  (REPO / "meson.build").read_text())
    return m.group(1)


def pkg_version(name):
    return subprocess.run(["pkg-config", "--modversion", name],
                          capture_output=True, text=True,
                          timeout=30).stdout.strip()


# ------------------------------------------------------------ help, version


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_lists_the_options(flag):
    res = phfs(flag)
    out = out_of(res)
    cmd = q([PHFS_BIN, flag])
    assert res.returncode == 0, "%s exited %d\n%s" % (cmd, res.returncode,
                                                      out)
    assert "usage" in out.lower(), "%s: no usage line\n%s" % (cmd, out)
    for opt in ("key_file", "project", "ttl", "timeout", "retries", "ro",
                "POSTHOG_PERSONAL_API_KEY", "-f", "-d", "-s", "-V"):
        assert re.search(r"(?<![\w])%s(?![\w])" % re.escape(opt), out), (
            "%s does not mention %s\n%s" % (cmd, opt, out))


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version_names_every_library(flag):
    res = phfs(flag)
    out = out_of(res)
    cmd = q([PHFS_BIN, flag])
    assert res.returncode == 0, "%s exited %d\n%s" % (cmd, res.returncode,
                                                      out)
    want = {"phfs": meson_version(), "libfuse": pkg_version("fuse3"),
            "libcurl": pkg_version("libcurl"), "cJSON": pkg_version("libcjson")}
    for lib, version in want.items():
        assert re.search(r"%s\b.*\b%s\b" % (re.escape(lib),
                                            re.escape(version)), out,
                         re.I), ("%s does not show %s %s\n%s" % (
                             cmd, lib, version, out))


# ------------------------------------------------------------ bad input


@pytest.mark.parametrize("args,needle", [
    (["-o", "bogus_option=1"], "bogus_option"),
    (["--frobnicate"], "frobnicate"),
    (["-o", "ttl=abc"], "ttl"),
    (["-o", "ttl=-1"], "ttl"),
    (["-o", "ttl=10x"], "ttl"),
    (["-o", "timeout=abc"], "timeout"),
    (["-o", "timeout=-5"], "timeout"),
    (["-o", "retries=many"], "retries"),
    (["-o", "retries=-1"], "retries"),
    (["-o", "project=web-app"], "project"),
])
def test_bad_option_is_refused_before_any_request(mount, server, args,
                                                  needle):
    m = mount(args=args, expect="exit")
    assert_failed(m, needle, server=server, requests=0)


def test_bad_option_is_named_even_when_the_host_is_down(mount, server):
    m = mount("bogus_option=1", "timeout=2",
              host="http://127.0.0.1:%d" % closed_port(), expect="exit",
              wait=2 + SLACK)
    assert_failed(m, "bogus_option")


def test_nonexistent_mountpoint_is_refused(mount, server):
    m = mount(expect="exit", mountpoint="/nonexistent/phfs-test-mountpoint")
    assert_failed(m, "phfs-test-mountpoint")


def test_missing_mountpoint_argument():
    res = phfs(env={"POSTHOG_PERSONAL_API_KEY": new_key()})
    assert res.returncode > 0, out_of(res)
    assert out_of(res).strip(), "no message for a missing mountpoint"


def test_missing_key_is_refused(mount, server):
    m = mount(key=False, expect="exit")
    assert_failed(m, ("POSTHOG_PERSONAL_API_KEY", "key_file"),
                  server=server, requests=0)


def test_empty_key_is_refused(mount, server):
    m = mount(key="", expect="exit")
    assert_failed(m, ("POSTHOG_PERSONAL_API_KEY", "key"), server=server,
                  requests=0)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o666, 0o660])
def test_key_file_readable_by_others_is_refused(mount, server, key_file,
                                                mode):
    kf = key_file(server.key, mode)
    m = mount("key_file=%s" % kf, key=False, expect="exit")
    assert_failed(m, str(kf), server=server, requests=0)
    assert_no_key(m.raw_stderr() + m.raw_stdout(), server.key,
                  "the key appears in phfs's output\n" + m.repro())


@pytest.mark.parametrize("mode,newline", [(0o600, True), (0o400, False),
                                          (0o600, False)])
def test_key_file_private_mounts(mount, server, key_file, mode, newline):
    kf = key_file(server.key, mode, newline=newline)
    m = mount("key_file=%s" % kf, key=False)
    names = m.ls()
    assert any(n.startswith("1-") for n in names), names
    assert all(r["auth"] == "ok" for r in server.requests()), m.context()


def test_missing_key_file_is_refused(mount, server):
    m = mount("key_file=/nonexistent/phfs.key", key=False, expect="exit")
    assert_failed(m, "/nonexistent/phfs.key", server=server, requests=0)


def test_key_on_the_command_line_is_refused(mount, server):
    fake = new_key()
    m = mount("key=%s" % fake, expect="exit")
    assert_failed(m, "key", server=server, requests=0)
    out = m.raw_stderr() + m.raw_stdout()
    assert_no_key(out, fake,
                  "the key given with -o key= is echoed back\n" + m.repro())


def test_wrong_key_exits_with_the_servers_reason(mount, server):
    wrong = new_key()
    m = mount(key=wrong, expect="exit")
    assert_failed(m, INVALID_KEY_DETAIL, server=server, requests=1)
    assert_no_key(m.raw_stderr() + m.raw_stdout(), wrong,
                  "the wrong key appears in phfs's output\n" + m.repro())
    assert server.requests()[0]["auth"] == "invalid"


def test_wrong_key_without_foreground_exits_before_daemonizing(mount,
                                                                server):
    m = mount(key=new_key(), expect="exit", foreground=False)
    assert_failed(m, INVALID_KEY_DETAIL, server=server, requests=1)
    assert m.daemon_pids() == [], "a daemon stayed behind\n" + m.context()


@pytest.mark.parametrize("timeout_opt", [["timeout=2"], []])
def test_unreachable_host_fails_in_time(mount, server, timeout_opt):
    port = closed_port()
    deadline = 2 if timeout_opt else 30
    t0 = time.monotonic()
    m = mount(*timeout_opt, host="http://127.0.0.1:%d" % port,
              expect="exit", wait=deadline + SLACK)
    took = time.monotonic() - t0
    assert_failed(m, "127.0.0.1")
    assert took <= deadline + SLACK, (
        "took %.1fs, the deadline is %ds\n%s" % (took, deadline,
                                                 m.context()))


def test_stalled_server_fails_in_time(mount, server):
    server.fail(1000, "stall", stall_seconds=120)
    t0 = time.monotonic()
    m = mount("timeout=2", "retries=1", expect="exit", wait=2 + SLACK)
    took = time.monotonic() - t0
    server.fail_clear()
    assert_failed(m)
    assert took <= 2 + SLACK, "took %.1fs\n%s" % (took, m.context())


@pytest.mark.parametrize("mode", ["html", "garbage", "truncated", "deep"])
def test_non_json_answer_to_the_check_is_a_clear_error(mount, server, mode):
    server.fail(1000, mode)
    m = mount("timeout=5", "retries=1", expect="exit", wait=5 + SLACK + 20)
    assert_failed(m, ("json", "html", "unexpected", "invalid", "garbage",
                      "malformed", "parse", "truncated", "too large",
                      "too deep", "not a posthog", "response", "closed",
                      "remaining"))
    err = m.stderr_text()
    assert "<html" not in err.lower() and "\x1b" not in err, (
        "the raw body is dumped on stderr\n" + m.context())
    assert len(err) < 4000, "a %d-byte message\n%s" % (len(err),
                                                       m.context())


def test_huge_answer_to_the_check_is_no_crash(mount, server):
    """64 MB of valid JSON: refused by a size bound, or taken for an empty
    project list; never a crash or a hang."""
    server.fail(1000, "huge")
    m = mount("timeout=20", "retries=0", expect=None, wait=20 + SLACK + 20)
    if m.returncode is not None:
        assert m.returncode > 0, m.context()
        assert m.stderr_text().strip(), m.context()
    else:
        assert m.proc.poll() is None, m.context()


@pytest.mark.parametrize("mode", ["500", "503", "429"])
def test_server_errors_on_the_check_fail_in_time(mount, server, mode):
    server.fail(1000, mode, retry_after=1)
    t0 = time.monotonic()
    m = mount("timeout=4", "retries=2", expect="exit", wait=4 + SLACK)
    took = time.monotonic() - t0
    assert_failed(m, (mode, "server error", "unavailable", "throttled",
                      "database"))
    assert took <= 4 + SLACK, "took %.1fs\n%s" % (took, m.context())
    assert len(server.requests()) <= 3, (
        "more than 1 + retries=2 attempts: %d\n%s" % (
            len(server.requests()), m.context()))


def test_unknown_project_exits_with_project_not_found(mount, server):
    m = mount("project=987654", expect="exit")
    assert_failed(m, "Project not found")


def test_unknown_project_among_known_ones(mount, server):
    m = mount("project=1:987654", expect="exit")
    assert_failed(m, "Project not found")


# ------------------------------------------------------------ project keys


@pytest.fixture
def scoped_server(server_factory):
    """Key 0 sees everything; key 1 is scoped to project 2."""
    return server_factory(keys=[Key(), Key(scopes=["action:read",
                                                   "project:read"],
                                           projects=[2])])


def test_project_scoped_key_without_project_gets_the_403_reason(
        mount, scoped_server):
    s = scoped_server
    m = mount(server=s, key=s.keys[1].key, expect="exit")
    assert_failed(m, SCOPED_DETAIL)


def test_project_scoped_key_with_its_project_mounts(mount, scoped_server):
    s = scoped_server
    m = mount("project=2", server=s, key=s.keys[1].key)
    names = m.ls()
    dirs = [n for n in names if not n.startswith(".")]
    assert len(dirs) == 1 and re.match(r"^2-mobile$", dirs[0]), (
        "%r\n%s" % (names, m.context()))
    assert len(m.ls(dirs[0])) == 20, m.context()
    for r in s.requests():
        assert r["status"] < 400, (
            "request %s %s -> %s\n%s" % (r["method"], r["path"],
                                         r["status"], m.context()))


def test_project_scoped_key_with_another_project(mount, scoped_server):
    s = scoped_server
    m = mount("project=1", server=s, key=s.keys[1].key, expect="exit")
    assert_failed(m, "does not have access to the requested project")


def test_key_without_action_scope(mount, server_factory):
    s = server_factory(keys=[Key(scopes=["project:read"])])
    m = mount(server=s, expect=None)
    if is_mounted(m.path):
        # Listing works on projects; reading actions must say why not.
        r = m.probe("listdir", "1-web-app")
        assert r.errno == "EACCES", "%r\n%s" % (r, m.context())
    else:
        assert_failed(m, "action:read")


def test_current_project(mount, server):
    m = mount("project=@current")
    names = [n for n in m.ls() if not n.startswith(".")]
    assert names == ["1-web-app"], "%r\n%s" % (names, m.context())
    assert len(m.ls("1-web-app")) == 20


def test_current_project_follows_the_server(mount, server):
    server.control("POST", "/_control/current_project", {"id": 2})
    m = mount("project=@current")
    names = [n for n in m.ls() if not n.startswith(".")]
    assert names == ["2-mobile"], "%r\n%s" % (names, m.context())


def test_several_projects(mount, server):
    m = mount("project=3:1")
    names = [n for n in m.ls() if not n.startswith(".")]
    assert sorted(n.split("-")[0] for n in names) == ["1", "3"], (
        "%r\n%s" % (names, m.context()))
    assert not server.requests(path_re=r"^/api/projects/2(/|$)"), (
        "requests for project 2, which is not mounted\n" + m.context())


# ------------------------------------------------------------ hosts


def test_posthog_host_env_is_used_without_host(mount, server):
    m = mount(host=False, env={"POSTHOG_HOST": server.url})
    assert "1-web-app" in m.ls()
    assert server.requests(), "no request reached $POSTHOG_HOST\n" + \
        m.context()


def test_host_argument_wins_over_env(mount, server):
    m = mount(env={"POSTHOG_HOST": "http://127.0.0.1:%d" % closed_port()})
    assert "1-web-app" in m.ls()


def test_localhost_is_loopback(mount, server):
    m = mount(host="http://localhost:%d" % server.port)
    assert "1-web-app" in m.ls()


def test_trailing_slash_in_host(mount, server):
    m = mount(host=server.url + "/")
    assert "1-web-app" in m.ls()
    for r in server.requests():
        assert "//" not in r["path"], r["path"]


@pytest.mark.parametrize("host", ["http://192.0.2.1:8000",
                                  "http://example.com",
                                  "http://127.0.0.1.nip.io:8000",
                                  "http://localhost.example.com"])
def test_plain_http_to_other_hosts_is_refused(workdir, host):
    mp = workdir / "mnt"
    mp.mkdir()
    env = base_env()
    env["POSTHOG_PERSONAL_API_KEY"] = new_key()
    argv = [PHFS_BIN, "-f", "-o", "timeout=5", host, mp]
    r = run_isolated(argv, env, mp, timeout=30)
    err = r["stderr"].decode(errors="replace")
    ctx = "to reproduce: POSTHOG_PERSONAL_API_KEY=phx_x %s\nstderr: %s" % (
        q(argv), err[-2000:])
    assert r["rc"] != "timeout" and r["rc"] > 0, ctx
    assert not r["mounted"], ctx
    assert re.search(r"https|loopback|plain|insecure", err, re.I), (
        "no reason given for refusing plain http\n" + ctx)


@pytest.mark.parametrize("host_arg,env_host,expected", [
    ("us", None, "us.posthog.com:443"),
    ("eu", None, "eu.posthog.com:443"),
    (None, "eu", "eu.posthog.com:443"),
    (None, None, "us.posthog.com:443"),
    ("https://eu.posthog.com", None, "eu.posthog.com:443"),
])
def test_host_shortcuts(workdir, host_arg, env_host, expected):
    """Inside a namespace with only loopback, phfs's HTTPS request goes to
    a recording proxy that refuses it: the CONNECT line names the host."""
    mp = workdir / "mnt"
    mp.mkdir()
    env = base_env()
    env["POSTHOG_PERSONAL_API_KEY"] = new_key()
    if env_host:
        env["POSTHOG_HOST"] = env_host
    argv = [PHFS_BIN, "-f", "-o", "timeout=5,retries=0"] + (
        [host_arg] if host_arg else []) + [mp]
    r = run_isolated(argv, env, mp, timeout=30, proxy=True)
    err = r["stderr"].decode(errors="replace")
    ctx = "%s %s\nstderr: %s" % (
        "POSTHOG_HOST=%s" % env_host if env_host else "", q(argv),
        err[-2000:])
    assert r["rc"] != "timeout" and r["rc"] > 0 and not r["mounted"], ctx
    if r["connects"]:
        targets = {c.split()[1] for c in r["connects"] if len(c.split()) > 1}
        assert targets == {expected}, "%r\n%s" % (r["connects"], ctx)
    elif expected.split(":")[0] in err:
        pass
    else:
        pytest.skip("phfs ignores $https_proxy and does not name the host "
                    "in its error: no offline way to see which host it "
                    "picked\n" + ctx)


# ------------------------------------------------------------ fstab


def test_fstab_only_options_are_accepted(mount, server):
    m = mount("_netdev", "noauto", "user", "nofail", "ttl=5")
    assert "1-web-app" in m.ls()


def test_fstab_line_with_key_file(mount, server, key_file):
    kf = key_file(server.key)
    m = mount("key_file=%s,_netdev,noauto,users,auto,defaults" % kf,
              key=False)
    assert "1-web-app" in m.ls()


def test_without_foreground_daemonizes_after_the_check(mount, server,
                                                      key_file):
    """As /etc/fstab runs it: no -f, so phfs checks, daemonizes and the
    command returns with the mount in place."""
    kf = key_file(server.key)
    m = mount("key_file=%s" % kf, "_netdev", key=False, foreground=False,
              expect=None)
    rc = m.wait_exit(START_DEADLINE)
    assert rc == 0, "phfs without -f exited %r\n%s" % (rc, m.context())
    assert is_mounted(m.path), "not mounted after phfs returned\n" + \
        m.context()
    assert "1-web-app" in m.ls()
    assert m.daemon_pids(), "no daemon serving the mount\n" + m.context()
    run(["fusermount3", "-u", str(m.path)], timeout=15, check=True)
    end = time.monotonic() + 15
    while m.daemon_pids() and time.monotonic() < end:
        time.sleep(0.1)
    assert not m.daemon_pids(), "the daemon did not exit after unmount"


# ------------------------------------------------------------ secrets


def test_debug_output_never_shows_the_key(mount, server):
    m = mount(args=["-d"])
    root = m.ls()
    m.ls("1-web-app")
    m.read("1-web-app", m.ls("1-web-app")[0])
    log = m.read(".phfs", "log")
    stats = m.read(".phfs", "stats")
    rc = m.unmount()
    out = m.raw_stderr() + m.raw_stdout()
    assert len(out) > 0, "-d printed nothing\n" + m.repro()
    assert_no_key(out, server.key, "the -d output\n" + m.repro())
    assert_no_key(log + stats, server.key,
                  ".phfs/log or .phfs/stats show the key\n" + m.repro())
    assert b"Bearer phx" not in out
    assert rc == 0, "phfs -d exited %r after unmount\n%s" % (rc, m.context())
    assert root


def test_debug_output_on_a_failed_check_never_shows_the_key(mount, server):
    wrong = new_key()
    m = mount(args=["-d"], key=wrong, expect="exit")
    assert_failed(m, INVALID_KEY_DETAIL)
    assert_no_key(m.raw_stderr() + m.raw_stdout(), wrong,
                  "the key appears in the -d output\n" + m.repro())


def test_key_is_not_on_the_command_line(mount, server):
    """/proc/PID/cmdline of phfs is public."""
    m = mount()
    with open("/proc/%d/cmdline" % m.proc.pid, "rb") as f:
        assert_no_key(f.read(), server.key, "phfs's command line")


# ------------------------------------------------------------ life cycle


def test_unmount_ends_the_process_cleanly(mount, server):
    m = mount()
    m.ls("1-web-app")
    rc = m.unmount()
    assert rc == 0, "phfs exited %r after fusermount3 -u\n%s" % (
        rc, m.context())
    assert not is_mounted(m.path)


def test_sigterm_unmounts(mount, server):
    m = mount()
    m.ls()
    m.proc.terminate()
    rc = m.wait_exit(15)
    assert rc is not None, "phfs ignored SIGTERM\n" + m.context()
    assert not is_mounted(m.path), "still mounted after SIGTERM\n" + \
        m.context()
