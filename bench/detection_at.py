"""Score the detector of an earlier commit on today's generator and scoring (``bench/detection.py``).

The issue's "today" figures were measured by an independent generator on the detector of that time;
running that same detector through our generator shows where the two generators differ (the
detector is the same, only the batches change). ``REV`` is any git revision of this repository:
its ``monitor/`` and ``adapters/`` are extracted to a temporary directory and imported instead of
the working tree's, while the batches, seeds and scores are today's ``bench/detection.py``.

An engine without ``DriftEngine.assess`` (before typed evidence) is scored from its alerts as the
benchmark did then: an alarm opens where ``process()`` returns a new alert id of a drift kind.

Usage: ``python3 bench/detection_at.py REV [bench/detection.py options]``, e.g.
``python3 bench/detection_at.py 4c1854b --seeds 50 --table`` (the detector as wave 2 found it).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

_ROOT_ENV = "MONITOR_DETECTION_AT_ROOT"
_HERE = Path(__file__).resolve().parent


def _bench() -> ModuleType:
    """Today's bench/detection.py, loaded by path (``monitor`` resolves to the extracted tree)."""
    spec = importlib.util.spec_from_file_location("bench_detection_today", _HERE / "detection.py")
    if spec is None or spec.loader is None:
        raise SystemExit("cannot load bench/detection.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _score_old_engine(bench: ModuleType) -> None:
    """Alarm openings from the alerts of an engine that has no ``assess`` (new alert ids)."""
    from monitor.model import AlertState  # the extracted revision's

    def feed(engine: Any, rec: Any) -> tuple[dict[str, dict[str, Any]], dict[str, tuple[float, float]]]:
        seen: set[str] = engine.__dict__.setdefault("_bench_seen", set())
        kinds: dict[str, dict[str, Any]] = {}
        for alert in engine.process(rec):
            if alert.state is AlertState.CLOSED or alert.id in seen:
                continue
            seen.add(alert.id)
            if bench._class(alert.kind) is not None:
                kinds.setdefault(alert.feature, {})[str(alert.kind)] = dict(alert.evidence)
        return kinds, {}

    class Openings(bench.Openings):  # type: ignore[name-defined,misc]
        def __init__(self, quiet: int) -> None:
            super().__init__(0)  # every new alert id is an opening

    vars(bench).update(_feed=feed, Openings=Openings)


def _run_in(root: str, argv: list[str]) -> int:
    sys.path.insert(0, root)
    import monitor

    if not str(Path(monitor.__file__).resolve()).startswith(str(Path(root).resolve())):
        raise SystemExit(f"monitor imported from {monitor.__file__}, not from {root}")
    bench = _bench()
    from monitor.engine import DriftEngine

    if not hasattr(DriftEngine, "assess"):
        _score_old_engine(bench)
    result: int = bench.main(argv)
    return result


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    root = os.environ.get(_ROOT_ENV)
    if root:
        return _run_in(root, args)
    if not args or args[0].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    rev, rest = args[0], args[1:]
    repo = _HERE.parent
    with tempfile.TemporaryDirectory(prefix="detection-at-") as tmp:
        archive = Path(tmp) / "tree.tar"
        with archive.open("wb") as fh:
            subprocess.run(["git", "-C", str(repo), "archive", rev, "monitor", "adapters"], stdout=fh, check=True)
        with tarfile.open(archive) as tar:
            tar.extractall(Path(tmp) / "tree", filter="data")
        # a fresh interpreter, so nothing of the working tree's monitor is imported yet
        env = dict(os.environ, **{_ROOT_ENV: str(Path(tmp) / "tree")})
        env.pop("PYTHONPATH", None)
        return subprocess.run([sys.executable, str(Path(__file__).resolve()), *rest], env=env, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
