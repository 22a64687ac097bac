#!/usr/bin/python3
"""Filesystem calls on a mount, run in a child process.

A FUSE call that hangs blocks its caller in the kernel where no Python
signal handler can reach it, so the tests never touch a mount from the
pytest process: they run this script with a timeout and kill it when the
deadline passes. It prints one JSON document on stdout.

Usage:
    fsprobe.py walk ROOT [EXCLUDE_RELPATH...]   stat and read every entry
    fsprobe.py listdir PATH
    fsprobe.py stat PATH
    fsprobe.py read PATH                          stat, open, fstat, read
    fsprobe.py readtwice PATH                     read, then read again
    fsprobe.py openw PATH                         open for writing
    fsprobe.py create PATH                        create a new file
    fsprobe.py mkdir PATH

Every result carries "errno" (a name such as "EIO") when the call failed,
and "elapsed" in seconds.
"""

import base64
import errno
import json
import os
import stat
import sys
import time


def _err(exc):
    return {"errno": errno.errorcode.get(exc.errno, str(exc.errno)),
            "strerror": exc.strerror}


def _stat_dict(st):
    return {"mode": st.st_mode, "size": st.st_size, "uid": st.st_uid,
            "gid": st.st_gid, "mtime": st.st_mtime, "mtime_ns": st.st_mtime_ns,
            "nlink": st.st_nlink, "ino": st.st_ino}


def _read(path):
    out = {}
    try:
        out["stat"] = _stat_dict(os.stat(path))
    except OSError as e:
        out.update(_err(e))
        out["failed"] = "stat"
        return out
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        out.update(_err(e))
        out["failed"] = "open"
        return out
    try:
        out["fstat"] = _stat_dict(os.fstat(fd))
        chunks = []
        while True:
            b = os.read(fd, 1 << 16)
            if not b:
                break
            chunks.append(b)
        data = b"".join(chunks)
        out["data"] = base64.b64encode(data).decode()
    except OSError as e:
        out.update(_err(e))
        out["failed"] = "read"
    finally:
        os.close(fd)
    return out


def walk(root, exclude):
    entries = {}
    errors = []
    stack = [b""]
    broot = os.fsencode(root)
    while stack:
        rel = stack.pop()
        full = os.path.join(broot, rel) if rel else broot
        try:
            names = os.listdir(full)
        except OSError as e:
            errors.append({"path": os.fsdecode(rel), "op": "listdir", **_err(e)})
            continue
        for name in names:
            crel = os.path.join(rel, name) if rel else name
            if os.fsdecode(crel) in exclude:
                continue
            cfull = os.path.join(broot, crel)
            key = base64.b64encode(crel).decode()
            try:
                st = os.lstat(cfull)
            except OSError as e:
                errors.append({"path": os.fsdecode(crel), "op": "lstat",
                               **_err(e)})
                continue
            ent = {"stat": _stat_dict(st)}
            if stat.S_ISDIR(st.st_mode):
                stack.append(crel)
            elif stat.S_ISREG(st.st_mode):
                ent.update(_read(cfull))
            entries[key] = ent
    return {"entries": entries, "errors": errors}


def main():
    op, path = sys.argv[1], sys.argv[2]
    t0 = time.monotonic()
    if op == "walk":
        res = walk(path, set(sys.argv[3:]))
    elif op == "listdir":
        try:
            res = {"names": [base64.b64encode(n).decode()
                             for n in os.listdir(os.fsencode(path))]}
        except OSError as e:
            res = _err(e)
    elif op == "stat":
        try:
            res = {"stat": _stat_dict(os.stat(path))}
        except OSError as e:
            res = _err(e)
    elif op == "read":
        res = _read(path)
    elif op == "readtwice":
        res = {"first": _read(path), "second": _read(path)}
    elif op in ("openw", "create", "mkdir"):
        res = {}
        try:
            if op == "mkdir":
                os.mkdir(path)
            else:
                flags = os.O_WRONLY | (os.O_CREAT | os.O_EXCL
                                       if op == "create" else 0)
                os.close(os.open(path, flags, 0o644))
        except OSError as e:
            res = _err(e)
    else:
        raise SystemExit("unknown op " + op)
    res["elapsed"] = time.monotonic() - t0
    json.dump(res, sys.stdout)


if __name__ == "__main__":
    main()
