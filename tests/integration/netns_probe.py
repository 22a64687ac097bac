#!/usr/bin/python3
"""Runs phfs inside a network namespace that has only loopback.

Started by the tests as `unshare --net -- netns_probe.py` with a JSON spec
on stdin: {argv, env, mountpoint, timeout, proxy}. Brings loopback up,
optionally listens as an HTTP proxy that records each CONNECT target and
refuses it, runs phfs, unmounts it if it mounted, and prints
{rc, stdout, stderr (base64), connects, mounted, elapsed} as JSON.

Nothing can reach another machine from here, so the tests can see which
host phfs would contact (the `us` / `eu` shortcuts) without any traffic.
"""

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time


def is_mounted(path):
    path = os.path.abspath(path)
    with open("/proc/self/mountinfo") as f:
        return any(len(l.split()) > 4 and l.split()[4] == path for l in f)


def proxy(sock, connects):
    while True:
        try:
            c, _ = sock.accept()
        except OSError:
            return
        try:
            c.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data and len(data) < 65536:
                chunk = c.recv(4096)
                if not chunk:
                    break
                data += chunk
            line = data.split(b"\r\n", 1)[0].decode(errors="replace")
            connects.append(line)
            c.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n"
                      b"Connection: close\r\n\r\n")
        except OSError:
            pass
        finally:
            c.close()


def main():
    spec = json.load(sys.stdin)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    env = dict(spec["env"])
    connects = []
    if spec["proxy"]:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        url = "http://127.0.0.1:%d" % s.getsockname()[1]
        for k in ("https_proxy", "HTTPS_PROXY", "http_proxy", "all_proxy",
                  "ALL_PROXY"):
            env[k] = url
        threading.Thread(target=proxy, args=(s, connects),
                         daemon=True).start()
    t0 = time.monotonic()
    p = subprocess.Popen(spec["argv"], env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True)
    mounted = False
    try:
        out, err = p.communicate(timeout=spec["timeout"])
        rc = p.returncode
    except subprocess.TimeoutExpired:
        mounted = is_mounted(spec["mountpoint"])
        if mounted:
            subprocess.run(["fusermount3", "-uz", spec["mountpoint"]],
                           timeout=15)
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        rc = "timeout"
    elapsed = time.monotonic() - t0
    if is_mounted(spec["mountpoint"]):
        mounted = True
        subprocess.run(["fusermount3", "-uz", spec["mountpoint"]], timeout=15)
    json.dump({"rc": rc, "stdout": base64.b64encode(out).decode(),
               "stderr": base64.b64encode(err).decode(),
               "connects": connects, "mounted": mounted,
               "elapsed": elapsed}, sys.stdout)


if __name__ == "__main__":
    main()
