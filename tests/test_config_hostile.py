"""Config files are input we do not trust: `monitor check` (a real process) refuses alias bombs,
huge files, non-UTF-8 text and things that are not files (a FIFO would block forever) with
file:line, in bounded memory, and never with a traceback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.yamlmarks import MAX_ALIAS_NODES, MAX_FILE_BYTES, load_yaml

ROOT = Path(__file__).resolve().parents[1]
PROGRAM = """\
program: O1001
features:
  hole1_dia: {kind: size, signal: probe.hole1_dia, nominal: 10.0, lower: 9.99, upper: 10.01}
"""
SITE = """\
site: cell-3
machines:
  - id: vmc-01
    source: {type: mtconnect, url: "http://127.0.0.1:5000"}
    signals: {part.count: pc}
"""
# the classic "billion laughs": 9 levels of 9 aliases in about 600 bytes, 387 million values expanded
BOMB = (
    SITE
    + 'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    + "".join(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]\n" for i in range(1, 10))
)
# runs `monitor check` and reports its own peak RSS on the way out, whatever the exit code (VmHWM: the
# high-water mark of this process's own memory; ru_maxrss would include the forking parent's)
_MEASURED = (
    "import re, runpy, sys\n"
    "sys.argv = ['monitor', *sys.argv[1:]]\n"
    "try:\n    runpy.run_module('monitor', run_name='__main__')\n"
    "finally:\n"
    "    hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())\n"
    "    print(f'peak_rss_kib={hwm.group(1) if hwm else 0}', file=sys.stderr)\n"
)


def _tree(tmp: Path, site: str | bytes = SITE, program: str | bytes = PROGRAM) -> Path:
    (tmp / "programs").mkdir()
    (tmp / "programs" / "o1001.yaml").write_bytes(program if isinstance(program, bytes) else program.encode())
    path = tmp / "site.yaml"
    path.write_bytes(site if isinstance(site, bytes) else site.encode())
    return path


def check(site: Path) -> tuple[int, str, float]:
    """`monitor check -c site` as a process: exit code, its output, and its peak RSS in MiB."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "300"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _MEASURED, "check", "-c", str(site)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=60)  # a hang (the FIFO did) fails here instead of blocking CI
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    peak = re.search(r"peak_rss_kib=(\d+)", err)
    assert peak is not None, err
    assert "Traceback" not in out + err, out + err
    return proc.returncode, out + err, int(peak.group(1)) / 1024


def test_alias_bomb_is_refused_with_file_and_line_in_bounded_memory(tmp_path: Path) -> None:
    site = _tree(tmp_path, BOMB)
    assert len(BOMB.encode()) - len(SITE) < 700
    code, out, peak_mib = check(site)
    assert code == 1
    assert re.search(rf"{re.escape(str(site))}:\d+: aliases \(\*name\) expand to more than {MAX_ALIAS_NODES}", out), out
    # before: past 120 s and 6 GB. Bounded now by MAX_ALIAS_NODES values (a check of a good site is ~100 MiB)
    print(f"alias bomb refused; peak RSS of `monitor check`: {peak_mib:.0f} MiB")
    assert peak_mib < 400


def test_aliases_and_merge_keys_within_the_bound_still_work(tmp_path: Path) -> None:
    site = SITE.replace("    signals: {part.count: pc}\n", "    signals: *signals\n")
    site = "defaults: &signals {part.count: pc}\n" + site.replace("site: cell-3\n", "")
    path = tmp_path / "s.yaml"
    path.write_text("site: cell-3\n" + site.replace("defaults:", "x-defaults:"), encoding="utf-8")
    doc = load_yaml(path)
    assert not doc.issues and doc.data["machines"][0]["signals"] == {"part.count": "pc"}
    merged = tmp_path / "m.yaml"
    merged.write_text("base: &b {url: a, device: d}\nsource:\n  <<: *b\n  device: e\n", encoding="utf-8")
    assert load_yaml(merged).data["source"] == {"url": "a", "device": "e"}


def test_huge_config_file_is_refused_unparsed_with_the_line_where_it_passed_the_bound(tmp_path: Path) -> None:
    site = _tree(tmp_path)
    with site.open("a", encoding="utf-8") as f:  # about 50 MB of mapping, written in pieces
        for start in range(0, 4_000_000, 100_000):
            f.write("".join(f"k{i}: {i}\n" for i in range(start, start + 100_000)))
    assert site.stat().st_size > 40 << 20
    code, out, peak_mib = check(site)
    assert code == 1
    match = re.search(rf"{re.escape(str(site))}:(\d+): file larger than {MAX_FILE_BYTES >> 20} MiB", out)
    assert match is not None, out
    line = int(match.group(1))
    assert 1 < line < 200_000  # where the bound was crossed, not the end of the file
    print(f"50 MB config refused; peak RSS of `monitor check`: {peak_mib:.0f} MiB")
    assert peak_mib < 400


@pytest.mark.parametrize("which", ["site", "program"])
def test_file_that_is_not_utf8_names_file_line_and_byte(tmp_path: Path, which: str) -> None:
    latin1 = "  # tolérance (written by an editor in Latin-1)\n".encode("latin-1")
    site_bytes = SITE.encode() + (latin1 if which == "site" else b"")
    program_bytes = PROGRAM.encode() + (latin1 if which == "program" else b"")
    site = _tree(tmp_path, site_bytes, program_bytes)
    code, out, _ = check(site)
    bad = site if which == "site" else tmp_path / "programs" / "o1001.yaml"
    lines = (SITE if which == "site" else PROGRAM).count("\n") + 1
    assert code == 1
    assert f"{bad}:{lines}: not UTF-8 text (byte 0xe9 at column 8); save the file as UTF-8" in out, out


def test_fifo_and_directory_named_yaml_in_the_programs_folder_are_refused_not_waited_on(tmp_path: Path) -> None:
    site = _tree(tmp_path)
    os.mkfifo(tmp_path / "programs" / "pipe.yaml")  # nobody ever writes to it: reading would block forever
    (tmp_path / "programs" / "folder.yml").mkdir()
    code, out, _ = check(site)
    assert code == 1
    assert f"{tmp_path / 'programs' / 'pipe.yaml'}: a FIFO, not a config file" in out, out
    assert f"{tmp_path / 'programs' / 'folder.yml'}: a directory, not a config file" in out, out


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("site: x\nl: " + "[" * 100_000 + "\n", "nesting depth"),
        ("site: x\na: &a [*a]\n", "alias that contains itself"),
        ("site: x\nb: !!binary '%%%'\nc: !!int nope\n", "site.yaml:3 c:"),
    ],
    ids=["deep-nesting", "self-alias", "bad-standard-tag"],
)
def test_other_hostile_yaml_is_an_issue_not_a_traceback(tmp_path: Path, text: str, fragment: str) -> None:
    site = _tree(tmp_path, text)
    code, out, _ = check(site)
    assert code == 1 and fragment in out, out
