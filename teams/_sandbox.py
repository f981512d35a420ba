"""Runs inside the `local` executor's child process, before the agent's code.

    python -I _sandbox.py CPU_SECONDS MEMORY_BYTES FILE_BYTES SNIPPET

Sets the resource limits, then, where the kernel has Landlock (Linux 5.13+), confines
the process to reading and writing its working directory and reading Python's own
files and the system's libraries (so not the bot's store, its files, other users'
homes or /proc, where the bot's environment could be read); then runs SNIPPET as
__main__. Standard library only: it runs with `-I`, outside the package.
"""

from __future__ import annotations

import ctypes
import os
import resource
import runpy
import sys

__all__ = ["confine", "main"]

_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446  # the same on every Linux arch
_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FILE_RIGHTS = _EXECUTE | _WRITE_FILE | _READ_FILE | (1 << 14) | (1 << 15)
_READ = _EXECUTE | _READ_FILE | _READ_DIR
#: Read-only for the code: Python's own files, system libraries and configuration.
_SYSTEM = ("/usr", "/lib", "/lib64", "/bin", "/etc", "/dev/null", "/dev/urandom")


class _Ruleset(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def confine(workdir: str) -> bool:
    """Allow only `workdir` (read and write) and Python's and the system's files (read);
    False where the kernel cannot (then only the rlimits and the empty environment hold)."""
    libc = ctypes.CDLL(None, use_errno=True)
    abi = libc.syscall(_CREATE_RULESET, None, 0, 1)  # 1: ask for the ABI version
    if abi < 1:
        return False
    handled = (1 << 13) - 1 | (1 << 13 if abi >= 2 else 0) | (1 << 14 if abi >= 3 else 0) \
        | (1 << 15 if abi >= 5 else 0)
    ruleset = _Ruleset(handled)
    fd = libc.syscall(_CREATE_RULESET, ctypes.byref(ruleset), ctypes.sizeof(ruleset), 0)
    if fd < 0:
        return False
    readable = {*_SYSTEM, sys.base_prefix, sys.prefix, sys.exec_prefix,
                *(p for p in sys.path if p and os.path.exists(p))}
    rules = [(workdir, handled)] + [(p, _READ) for p in sorted(readable)]
    for path, access in rules:
        try:
            pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue
        allowed = access & handled if os.path.isdir(path) else access & handled & _FILE_RIGHTS
        rule = _PathBeneath(allowed, pfd)
        libc.syscall(_ADD_RULE, fd, _PATH_BENEATH, ctypes.byref(rule), 0)
        os.close(pfd)
    libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    done = libc.syscall(_RESTRICT_SELF, fd, 0) == 0
    os.close(fd)
    return done


def main(argv: list[str]) -> None:
    cpu, memory, fsize = (int(x) for x in argv[1:4])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    snippet = argv[4]
    confine(os.path.dirname(os.path.abspath(snippet)))
    sys.argv = [snippet]
    runpy.run_path(snippet, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv)
