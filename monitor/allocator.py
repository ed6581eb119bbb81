"""The C allocator's per-thread cache, sized for the daemon's page parsing (glibc only).

Every streamed page is read into an lxml tree: a few thousand small C allocations, all freed a
moment later. glibc keeps seven freed chunks of each size per thread at hand (its tcache); the
rest go to its shared bins, and sorting them back out (``malloc_consolidate``, ``unlink_chunk``)
took about a tenth of the daemon's CPU in a 50-machine cell. With room for ``TCACHE_COUNT``
chunks per size, a page's tree is built from what the page before it freed: 6-7% less CPU per
observation in that cell (same-minute A/B, two daemons on the same agents). Only chunks up to
``TCACHE_MAX`` bytes are kept (a tree's nodes, attributes and strings; glibc's default is 1032):
the larger sizes held 5-7 MB more resident memory for no CPU.

The dynamic loader reads the cache size when a process starts (``GLIBC_TUNABLES``); nothing
changes it later. So ``monitor run`` executes itself again once, at its very start, with the
setting added to its environment: ``exec`` keeps the process id, the open files and systemd's
notify socket, so nothing outside sees a difference. A ``GLIBC_TUNABLES`` the user set is kept
as it is (no restart), and so is every other C library.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

__all__ = ["TCACHE_COUNT", "TCACHE_MAX", "TUNABLES", "c_library", "own_process", "tuned_command", "use_tuned_allocator"]

TCACHE_COUNT = 1000
"""Freed chunks glibc keeps per size and thread (its default is 7, its limit 65535)."""
TCACHE_MAX = 256
"""The largest chunk (bytes) the per-thread cache keeps."""
TUNABLES = f"glibc.malloc.tcache_count={TCACHE_COUNT}:glibc.malloc.tcache_max={TCACHE_MAX}"
own_process = False
"""Set by the ``monitor`` command's entry point: the process is the command's own, so it may be
executed again (never a test runner or another program that calls the command line in-process)."""


def tuned_command(environ: Mapping[str, str], argv: Sequence[str], executable: str, libc: str) -> list[str] | None:
    """The command that runs this process again with the tuned allocator (``argv`` as the interpreter
    got it, :data:`sys.orig_argv`), or None when there is nothing to do: another C library than
    glibc, ``GLIBC_TUNABLES`` already set (by us, or by the user, who keeps it), or no interpreter
    path to run."""
    if libc != "glibc" or "GLIBC_TUNABLES" in environ or not executable or not argv:
        return None
    return [executable, *argv[1:]]


def use_tuned_allocator() -> None:
    """Run this process again with the tuned allocator, when :func:`tuned_command` says so; returns
    only when it does not (or when the ``exec`` fails: the daemon then runs as it is)."""
    if not own_process:
        return
    command = tuned_command(os.environ, sys.orig_argv, sys.executable, c_library())
    if command is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(command[0], command, {**os.environ, "GLIBC_TUNABLES": TUNABLES})
    except OSError:
        return


def c_library() -> str:
    """``glibc`` when the process runs on it, else what the C library calls itself ("" if it says nothing)."""
    try:
        version = os.confstr("CS_GNU_LIBC_VERSION")  # "glibc 2.36"; unknown to other C libraries
    except (ValueError, OSError, AttributeError):
        return ""
    return version.split(" ")[0] if version else ""
