"""The daemon hands the compiler's library pages back to the kernel once its kernels are loaded
(monitor.libpages): the pages leave the resident set, and what they hold stays readable."""

from __future__ import annotations

import mmap
import os
import sys
from pathlib import Path

import pytest

from monitor import libpages

MAPS = """\
55d0c0a00000-55d0c0a21000 rw-p 00000000 00:00 0                          [heap]
7f3a10000000-7f3a15000000 r-xp 00050000 fd:00 1311 /venv/lib/llvmlite/binding/libllvmlite.so
7f3a15000000-7f3a19200000 r--p 05050000 fd:00 1311 /venv/lib/llvmlite/binding/libllvmlite.so
7f3a19200000-7f3a19210000 rw-p 00000000 00:00 0
7f3a20000000-7f3a20010000 r--p 00000000 fd:00 77 /tmp/a file with spaces.bin (deleted)
7ffd5f1e0000-7ffd5f201000 rw-p 00000000 00:00 0                          [stack]
"""


def test_maps_lines_give_the_mapped_files_and_their_ranges() -> None:
    found = libpages.mappings(MAPS)
    assert [(m.name, m.perms, m.end - m.start) for m in found] == [
        ("libllvmlite.so", "r-xp", 0x5000000),
        ("libllvmlite.so", "r--p", 0x4200000),
        ("a file with spaces.bin", "r--p", 0x10000),
    ]
    assert found[2].path == "/tmp/a file with spaces.bin"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise(MADV_PAGEOUT) and /proc are Linux's")
def test_a_released_file_leaves_the_resident_set_and_reads_the_same(tmp_path: Path) -> None:
    size = 8 << 20
    data = bytes(range(256)) * (size // 256)
    path = tmp_path / "libreleasetest-data.so"
    with path.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())  # clean pages, as a library's are
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mapped:
        touched = sum(mapped[i] for i in range(0, size, mmap.PAGESIZE))  # every page resident
        before = libpages.resident(["libreleasetest"])
        assert before >= size * 0.9
        assert libpages.resident(["libnothing"]) == 0
        assert libpages.release(["libreleasetest"]) == size  # the whole mapping advised
        after = libpages.resident(["libreleasetest"])
        assert after <= size * 0.1, (before, after)
        assert sum(mapped[i] for i in range(0, size, mmap.PAGESIZE)) == touched  # read back, unchanged
        assert mapped[:] == data
    assert libpages.release(["libreleasetest"]) == 0  # nothing of it mapped any more
