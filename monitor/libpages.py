"""Handing back to the kernel the pages of a shared library the process has finished with.

The daemon loads its compiled detection kernels (numba) at start: numba links their cached machine
code through LLVM, whose library (llvmlite's ``libllvmlite.so``, 170 MB on disk) is mapped and read
over about 69 MB while it does. After that the kernels run as plain machine code, and nothing of
LLVM runs again unless a kernel has to be compiled anew (an install without its cache, a new kind
of call). Those pages are clean copies of the file, which the kernel drops first when memory is
short; until it must, they stay in the process's resident set, a third of a 50-machine daemon's.
:func:`release` asks the kernel to reclaim them now (``madvise(MADV_PAGEOUT)``, Linux 5.4 and
later): nothing is lost, a page touched again is read back from the page cache or the file, and
pages another process also maps are left where they are (the kernel skips them).
"""

from __future__ import annotations

import ctypes
import logging
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["COMPILER", "Mapping", "mappings", "release", "resident"]

_log = logging.getLogger(__name__)

COMPILER = ("libllvmlite",)
"""The shared libraries that only compiling or loading the detection kernels uses."""
MADV_PAGEOUT = 21
"""Linux's advice to reclaim the pages of a range now (``<linux/mman.h>``; Python's mmap module
has the constant only where its build headers did)."""
_SELF = Path("/proc/self")


@dataclass(frozen=True, slots=True)
class Mapping:
    """One line of ``/proc/<pid>/maps``: an address range of a mapped file."""

    start: int
    end: int
    perms: str
    path: str

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


def mappings(maps: str) -> list[Mapping]:
    """The file mappings listed in a ``/proc/<pid>/maps`` text (anonymous ranges, the heap and the
    stack are left out: they have no path)."""
    out: list[Mapping] = []
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or not fields[5].startswith("/"):
            continue
        lo, _, hi = fields[0].partition("-")
        out.append(Mapping(int(lo, 16), int(hi, 16), fields[1], fields[5].removesuffix(" (deleted)")))
    return out


def _matches(mapping: Mapping, names: tuple[str, ...]) -> bool:
    return mapping.name.startswith(names)


def resident(names: Iterable[str], proc: Path = _SELF) -> int:
    """Bytes of the files named (by the start of their file name) resident in the process, from
    ``smaps``; 0 where the system has no such file."""
    wanted = tuple(names)
    total = 0
    counting = False
    try:
        text = (proc / "smaps").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        head = line.split(maxsplit=5)
        if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            counting = len(head) == 6 and head[5].startswith("/") and head[5].rsplit("/", 1)[-1].startswith(wanted)
        elif counting and line.startswith("Rss:"):
            total += int(line.split()[1]) * 1024
    return total


def release(names: Iterable[str] = COMPILER) -> int:
    """Ask the kernel to reclaim this process's pages of the mapped files whose file name starts
    with one of ``names``; returns the bytes of address space advised (0 on a system without
    ``/proc`` or ``MADV_PAGEOUT``: the pages then stay, which costs memory, not correctness)."""
    wanted = tuple(names)
    if not sys.platform.startswith("linux"):
        return 0
    try:
        ranges = [m for m in mappings((_SELF / "maps").read_text()) if _matches(m, wanted)]
    except OSError:
        return 0
    if not ranges:
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    madvise = libc.madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    advised = 0
    for m in ranges:
        if madvise(m.start, m.end - m.start, MADV_PAGEOUT) == 0:
            advised += m.end - m.start
        else:
            _log.debug("madvise(MADV_PAGEOUT) refused for %s: errno %d", m.path, ctypes.get_errno())
    return advised
