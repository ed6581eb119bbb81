"""How fast ``monitor import`` takes CMM results in: QIF 3 and CSV, parsed, stored and matched.

A QIF 3 Results file of ``--parts`` parts x ``--chars`` characteristics (sizes, positions, form;
written by the tests' generator, valid against the QIF 3.0 schema) and the same data as a CSV
export go through :func:`monitor.inspection.importer.import_files` into a fresh store that holds
the parts (each with its serial number), so every result is matched by serial. The baseline,
measured in the same run, is a bare lxml parse of the QIF file that reads every actual's value
(the floor of any QIF import): ``ratio`` = import time / baseline time. With ``../shared`` present,
the cost of validating against the QIF 3 schema is measured too.

Prints one JSON object. Run: ``python3 bench/inspection_import.py [--parts 300] [--chars 40]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lxml import etree

from monitor.config import load_site
from monitor.inspection.importer import ImportOptions, import_files
from monitor.model import PartRecord, PartStatus
from monitor.store import SqliteStore
from tests.inspection.qifgen import Char, Part, qif_results

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
SCHEMA = Path(__file__).resolve().parents[2] / "shared" / "qif" / "xsd" / "QIFApplications" / "QIFDocument.xsd"


def _data(parts: int, chars: int) -> tuple[list[Char], list[Part]]:
    kinds = [("Diameter", 10.0, -0.01, 0.01, None), ("Position", None, None, None, 0.05), ("Flatness", None, None, None, 0.02)]
    cs = []
    for i in range(chars):
        kind, nominal, lo, hi, zone = kinds[i % len(kinds)]
        cs.append(Char(f"C{i:03d}", kind, nominal, lo, hi, zone, designator=str(i + 1)))
    ps = []
    for n in range(1, parts + 1):
        values: dict[str, float | None] = {}
        for i, c in enumerate(cs):
            values[c.name] = (10.0 if c.kind == "Diameter" else 0.01) + ((n * 7 + i * 13) % 17) * 1e-4
        ps.append(Part(f"SN{n:05d}", values))
    return cs, ps


def _site(folder: Path, schema: Path | None, parts: int) -> Path:
    (folder / "programs").mkdir()
    (folder / "programs" / "p.yaml").write_text("program: P1\nfeatures: {}\n", encoding="utf-8")
    extra = f", qif_schema: {schema}" if schema else ""
    site = folder / "site.yaml"
    site.write_text(
        f"site: bench\nstore: {{path: monitor.db}}\nprograms: programs\ninspection: {{timezone: UTC{extra}}}\n", encoding="utf-8"
    )
    with SqliteStore(folder / "monitor.db") as store:
        for n in range(1, parts + 1):
            end = T0 + timedelta(minutes=3 * n)
            store.record_part(
                PartRecord(
                    f"m1/P1/{n}", "m1", "P1", n, end - timedelta(minutes=2), end, PartStatus.COMPLETE, part_id=f"SN{n:05d}"
                )
            )
    return site


def _csv(chars: list[Char], parts: list[Part]) -> str:
    lines = ["serial,characteristic,value,status"]
    for p in parts:
        for c in chars:
            lines.append(f"{p.serial},{c.name},{p.values[c.name]!r},PASS")
    return "\n".join(lines) + "\n"


def _baseline(path: Path) -> tuple[float, int]:
    started = time.perf_counter()
    root = etree.parse(str(path), etree.XMLParser(resolve_entities=False, no_network=True)).getroot()
    n = 0
    total = 0.0
    for el in root.iter():
        if isinstance(el.tag, str) and el.tag.endswith("CharacteristicMeasurement"):
            v = el.find("{http://qifstandards.org/xsd/qif3}Value")
            if v is not None and v.text:
                total += float(v.text)
                n += 1
    return time.perf_counter() - started, n


def run(parts: int, chars: int) -> dict[str, Any]:
    cs, ps = _data(parts, chars)
    out: dict[str, Any] = {"parts": parts, "characteristics": chars, "actuals": parts * chars}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        qif = root / "results.qif"
        qif.write_bytes(qif_results(cs, ps))
        csv = root / "results.csv"
        csv.write_text(_csv(cs, ps), encoding="utf-8")
        out["qif_mb"] = round(qif.stat().st_size / 1e6, 2)
        baseline_s, counted = _baseline(qif)
        assert counted == parts * chars
        variants: list[tuple[str, Path, Path | None]] = [("qif", qif, None), ("csv", csv, None)]
        if SCHEMA.exists():
            variants.append(("qif_validated", qif, SCHEMA))
        for name, path, schema in variants:
            folder = root / name
            folder.mkdir()
            site = load_site(_site(folder, schema, parts))
            with SqliteStore(site.store_path) as store:
                started = time.perf_counter()
                summary = import_files(site, store, [path], ImportOptions())
                seconds = time.perf_counter() - started
            [f] = summary.files
            assert f.state == "imported" and f.new_actuals == parts * chars and f.matched == parts, f.error
            out[name] = {
                "seconds": round(seconds, 3),
                "actuals_per_s": round(parts * chars / seconds),
                "ratio": round(seconds / baseline_s, 1),
            }
        out["baseline_lxml_parse"] = {"seconds": round(baseline_s, 4), "actuals_per_s": round(parts * chars / baseline_s)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", type=int, default=300)
    ap.add_argument("--chars", type=int, default=40)
    args = ap.parse_args()
    print(json.dumps(run(args.parts, args.chars)))


if __name__ == "__main__":
    main()
