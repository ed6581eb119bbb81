"""The batch report: one self-contained HTML file (and a CSV) for the customer or the quality file.

Three parts, each tested alone:

- :mod:`monitor.report.data`: :func:`build_report` reads the batch from a
  :class:`~monitor.store.StoreReader` (parts, alerts with their history) and computes everything
  the report says into a :class:`BatchReport` (plain data);
- :mod:`monitor.report.table`: :func:`render_csv`, the measurement table;
- :mod:`monitor.report.page`: :func:`render_html`, the page from ``templates/report.html`` (the
  way the dashboard's pages are made), plotly.js inline so the file opens with no network, every
  text from a controller or a config file escaped.

:func:`write_report` is what ``monitor report`` calls with the site and a store it opened.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitor.errors import MonitorError

if TYPE_CHECKING:
    from monitor.config import Site
    from monitor.report.data import (
        AlertOutcome,
        BatchReport,
        FeatureReport,
        FeatureValue,
        ReportHeader,
        ToolSummary,
        build_report,
        feature_capability,
        judge,
        summary,
    )
    from monitor.report.page import render_html
    from monitor.report.stored import stored_capability, stored_values, stored_verdict
    from monitor.report.table import render_csv, render_measurements_csv
    from monitor.store import StoreReader

__all__ = [
    "AlertOutcome",
    "BatchReport",
    "FeatureReport",
    "FeatureValue",
    "ReportHeader",
    "ToolSummary",
    "build_report",
    "feature_capability",
    "judge",
    "render_csv",
    "render_html",
    "render_measurements_csv",
    "stored_capability",
    "stored_values",
    "stored_verdict",
    "summary",
    "write_report",
]


_STORED = frozenset({"stored_capability", "stored_values", "stored_verdict"})


def __getattr__(name: str) -> Any:
    """Each name loads with its module when first asked for: a capability (``monitor parts
    --capability``, the dashboard's feature page) needs :mod:`monitor.report.stored` only, not the
    batch report's data (:mod:`monitor.report.data`) nor its HTML and CSV renderers."""
    if name in _STORED:
        from monitor.report import stored

        return getattr(stored, name)
    if name == "render_html":
        from monitor.report.page import render_html

        return render_html
    if name in ("render_csv", "render_measurements_csv"):
        from monitor.report import table

        return getattr(table, name)
    if name in __all__:
        from monitor.report import data

        return getattr(data, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def write_report(
    site: Site,
    store: StoreReader,
    program: str,
    out: Path,
    *,
    machine: str | None = None,
    first_part: int | None = None,
    last_part: int | None = None,
    csv_out: Path | None = None,
    measurements_out: Path | None = None,
    generated: datetime | None = None,
    cell: tuple[str, Sequence[str]] | None = None,
    **header: Any,
) -> BatchReport:
    """What ``monitor report`` does: read the batch of ``program`` from ``store``, write the HTML
    (and the CSV), each through a temporary file so a reader never sees half a report.
    ``header``: :class:`ReportHeader` fields that override the program file's ``report``. ``cell``
    (name, machines) reads one cell of a shared store (its machines from
    :func:`monitor.queries.cell_machines`); the report then names that cell as its site."""
    from monitor.report.data import ReportHeader, build_report
    from monitor.report.page import render_html
    from monitor.report.table import render_csv, render_measurements_csv

    config = site.programs.get(program)
    if config is None:
        known = ", ".join(sorted(site.programs)) or "none"
        raise MonitorError(f"program {program!r} has no program file in {site.config.programs} (known: {known})")
    if first_part is not None and last_part is not None and first_part > last_part:
        raise MonitorError(f"--from {first_part} is after --to {last_part}")
    if header.get("required_index") not in (None, "ppk", "cpk"):
        raise MonitorError(f"--index {header['required_index']!r}: use ppk or cpk")
    report = build_report(
        store,
        config,
        site=cell[0] if cell is not None else site.config.site,
        machine=machine,
        machines=cell[1] if cell is not None else None,
        first_part=first_part,
        last_part=last_part,
        generated=generated,
        header=ReportHeader.of(config, **header),
    )
    _write_text(out, render_html(report))
    if csv_out is not None:
        _write_text(csv_out, render_csv(report))
    if measurements_out is not None:
        _write_text(measurements_out, render_measurements_csv(report))
    return report


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8", newline="")
    tmp.replace(path)
