"""Importing result files: read each file, store its results once, tie them to parts.

One function serves ``monitor import`` and the daemon's watched folders: :func:`import_files`
reads every file (QIF 3 or CSV, told apart by name and content), stores what is new in one
transaction per file (a file imported before is recognised by its content hash and left alone;
results already stored from another file are recognised by their own identity, see
:mod:`monitor.inspection.model`), matches new results to part records
(:mod:`monitor.inspection.matching`) and finally tries again every result still unmatched, since
their parts may have been stored meanwhile. A file that cannot be read is refused with its name
and the reason and changes nothing; the others go on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from monitor.config import ProgramConfig, Site
from monitor.errors import InspectionError
from monitor.inspection.csvimport import CsvLayout, read_csv
from monitor.inspection.matching import Match, match_result
from monitor.inspection.model import InspectionDocument, InspectionResult, MatchMethod, StoredResult
from monitor.inspection.qif import QifReader
from monitor.inspection.units import Dimension, known_unit
from monitor.store import Store

__all__ = ["FileOutcome", "ImportOptions", "ImportSummary", "ResultsOutcome", "csv_layout", "import_files", "rematch"]

_QIF_SUFFIXES = frozenset({".qif", ".xml", ".qifr"})
_CSV_SUFFIXES = frozenset({".csv", ".txt", ".tsv", ".tab"})


@dataclass(frozen=True)
class ImportOptions:
    """What the person importing knows that the file may not say.

    ``machine``/``program`` narrow the parts results are matched to (and name them where the file
    does not); ``part``/``serial`` name the one part a file of one part's results belongs to;
    ``units`` is the length unit of QIF files without ``FileUnits`` (QIF says metres);
    ``replace`` imports a file again, replacing what it brought before."""

    machine: str | None = None
    program: str | None = None
    part: int | None = None
    serial: str | None = None
    units: str | None = None
    replace: bool = False


@dataclass(frozen=True)
class ResultsOutcome:
    """One part's results in a file: stored or already there, and which part they belong to."""

    key: str
    where: str
    serial: str | None
    actuals: int | None
    """How many actuals (None where not counted: results matched later)."""
    new: bool
    part_key: str | None
    part: str | None
    """The part as people name it: ``vmc-01 O1001 part 17``."""
    method: MatchMethod | None
    note: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "where": self.where,
            "serial": self.serial,
            "actuals": self.actuals,
            "new": self.new,
            "part_key": self.part_key,
            "part": self.part,
            "matched_by": None if self.method is None else str(self.method),
            "note": self.note,
        }


@dataclass
class FileOutcome:
    """What became of one file."""

    path: str
    state: str
    """``imported``, ``unchanged`` (this file was imported before), ``plan`` (characteristics, no
    results: kept for results that reference it) or ``refused`` (see ``error``)."""
    format: str | None = None
    error: str | None = None
    results: list[ResultsOutcome] = field(default_factory=list)
    actuals: int = 0
    new_actuals: int = 0
    warnings: list[str] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)
    """Characteristics of matched results that no feature of their program measures (``measured_by``)."""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def matched(self) -> int:
        return sum(1 for r in self.results if r.part_key is not None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "state": self.state,
            "format": self.format,
            "error": self.error,
            "results": [r.as_dict() for r in self.results],
            "actuals": self.actuals,
            "new_actuals": self.new_actuals,
            "matched": self.matched,
            "warnings": self.warnings,
            "unmapped": self.unmapped,
            "info": self.info,
        }


@dataclass
class ImportSummary:
    """Every file's outcome, and results stored earlier that this import could now match."""

    files: list[FileOutcome] = field(default_factory=list)
    rematched: list[ResultsOutcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def refused(self) -> list[FileOutcome]:
        return [f for f in self.files if f.state == "refused"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": [f.as_dict() for f in self.files],
            "rematched": [r.as_dict() for r in self.rematched],
            "seconds": round(self.seconds, 3),
        }


def csv_layout(program: ProgramConfig | None) -> CsvLayout:
    """The CSV layout a program's file describes (the canonical one without a program)."""
    if program is None:
        return CsvLayout()
    c = program.inspection.csv
    columns = {k: v for k, v in c.columns.model_dump().items() if v is not None}
    return CsvLayout(columns, c.delimiter, c.decimal, c.unit, c.time_format, c.encoding, c.skip_rows, c.lower_tol)


def _timezone(site: Site) -> tzinfo:
    name = site.config.inspection.timezone
    if name:
        return ZoneInfo(name)
    local = datetime.now().astimezone().tzinfo
    assert local is not None
    return local


_QPID = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?QPId>\s*([0-9A-Fa-f-]{32,36})\s*</")


def _head_qpid(path: Path) -> str | None:
    """The document QPId near the top of a QIF file, read cheaply to find plans among the files of
    one import (the QPId is checked again when the plan is loaded)."""
    try:
        with path.open("rb") as f:
            head = f.read(16384)
    except OSError:
        return None
    found = _QPID.search(head)
    return found.group(1).decode().lower() if found else None


def _is_qif(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix in _QIF_SUFFIXES:
        return True
    if suffix in _CSV_SUFFIXES:
        return False
    try:
        with path.open("rb") as f:
            head = f.read(512).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError:
        return False
    return head.startswith(b"<")


class _Importer:
    def __init__(self, site: Site, store: Store, options: ImportOptions, batch: Sequence[Path]) -> None:
        self.site = site
        self.store = store
        self.options = options
        if options.units is not None and known_unit(options.units, Dimension.LENGTH) is None:
            raise InspectionError(f"--units {options.units}", "not a length unit; use mm, um, in or m")
        self.tz = _timezone(site)
        self._batch = batch
        self._qif: QifReader | None = None

    @property
    def qif(self) -> QifReader:
        """The QIF reader of this import, knowing the plans imported before and the batch's files."""
        if self._qif is None:
            plans: dict[str, Path] = {}
            for f in self.store.inspection_files():
                qpid = f["info"].get("qpid")
                if f["info"].get("plan") and isinstance(qpid, str):
                    plans[qpid] = Path(f["path"])
            for path in self._batch:
                if _is_qif(path):
                    qpid = _head_qpid(path)
                    if qpid:
                        plans.setdefault(qpid, path)
            inspection = self.site.config.inspection
            self._qif = QifReader(
                schema=inspection.qif_schema, default_length_unit=self.options.units, timezone=self.tz, plans=plans
            )
        return self._qif

    def program(self, name: str | None) -> ProgramConfig | None:
        if name is not None:
            return self.site.programs.get(name)
        if len(self.site.programs) == 1:
            return next(iter(self.site.programs.values()))
        return None

    def read(self, path: Path) -> InspectionDocument:
        if _is_qif(path):
            return self.qif.read(path)
        return read_csv(path, csv_layout(self.program(self.options.program)), timezone=self.tz)

    def one_file(self, path: Path) -> FileOutcome:
        try:
            data = path.read_bytes()
        except OSError as exc:
            return FileOutcome(str(path), "refused", error=f"{path}: cannot read it: {exc.strerror or exc}")
        sha = hashlib.sha256(data).hexdigest()
        known = self.store.inspection_file(sha)
        if known is not None and not self.options.replace:
            return FileOutcome(
                str(path),
                "unchanged",
                format=known["format"],
                warnings=[f"imported before as {known['path']} ({known['imported_at'][:19]}); nothing changed"],
            )
        try:
            doc = self.read(path)
        except InspectionError as exc:
            return FileOutcome(str(path), "refused", error=str(exc))
        if doc.sha256 != sha:
            return FileOutcome(str(path), "refused", error=f"{path}: the file changed while it was read; import it again")
        if self.options.replace and known is not None:
            self.store.forget_inspection_file(sha)
        outcome = FileOutcome(str(path), "imported", format=doc.format, warnings=list(doc.warnings), info=dict(doc.info))
        if doc.format == "qif" and not doc.results:
            self.store.record_inspection(str(path.resolve()), doc.format, sha, {**doc.info, "plan": True}, [])
            outcome.state = "plan"
            return outcome
        try:
            entries = self._entries(path, doc)
        except InspectionError as exc:
            return FileOutcome(str(path), "refused", format=doc.format, error=str(exc))
        changed, added = self.store.record_inspection(str(path.resolve()), doc.format, sha, doc.info, entries)
        outcome.actuals = doc.actual_count
        outcome.new_actuals = added
        keys = [k for k, _, _ in entries]
        stored = {s.key: s for s in self.store.inspection_results(keys=keys, with_actuals=False)}
        fresh = set(changed)
        self._match([s for s in stored.values() if s.part_key is None and s.key in fresh])
        stored = {s.key: s for s in self.store.inspection_results(keys=keys, with_actuals=False)}
        new = set(changed)
        unmapped: dict[str, None] = {}
        for key, result, _ in entries:
            s = stored[key]
            outcome.results.append(self._outcome(s, new=key in new, actuals=len(result.actuals), where=result.where))
            if s.part_key is not None:
                program = self.site.programs.get(s.result.program or "") or self._part_program(s.part_key)
                if program is not None:
                    for a in result.actuals:
                        if program.feature_source(a.characteristic) is None:
                            unmapped[a.characteristic.name] = None
        outcome.unmapped = list(unmapped)
        return outcome

    def _part_program(self, part_key: str) -> ProgramConfig | None:
        part = self.store.part(part_key)
        return None if part is None else self.site.programs.get(part.program)

    def _entries(self, path: Path, doc: InspectionDocument) -> list[tuple[str, InspectionResult, list[str]]]:
        o = self.options
        if (o.part is not None or o.serial is not None) and len(doc.results) != 1:
            raise InspectionError(path, f"--part/--serial name one part, but the file holds {len(doc.results)} parts' results")
        if o.program is not None and o.program not in self.site.programs:
            raise InspectionError(path, f"--program {o.program} is not a program of the site ({', '.join(self.site.programs)})")
        entries: list[tuple[str, InspectionResult, list[str]]] = []
        for result in doc.results:
            key, actual_keys = result.key(), result.actual_keys()
            hinted = dataclasses.replace(
                result,
                machine=result.machine or o.machine,
                program=result.program or o.program,
                part_number=o.part if o.part is not None else result.part_number,
                serial=o.serial if o.serial is not None else result.serial,
            )
            entries.append((key, hinted, actual_keys))
        return entries

    def _match(self, results: Sequence[StoredResult]) -> list[tuple[StoredResult, Match]]:
        window = self.site.config.inspection.match_window_s
        given = self.options.part is not None
        found = [(s, match_result(self.store, s.result, window_s=window, given_part=given)) for s in results]
        if found:
            self.store.set_inspection_matches((s.key, m.part_key, m.method, m.note) for s, m in found)
        return found

    def _outcome(self, s: StoredResult, *, new: bool, actuals: int | None, where: str | None = None) -> ResultsOutcome:
        label = None
        if s.part_key is not None:
            part = self.store.part(s.part_key)
            label = f"{part.machine} {part.program} part {part.part_number}" if part else s.part_key
        return ResultsOutcome(
            s.key, where or s.result.where, s.result.serial, actuals, new, s.part_key, label, s.matched_by, s.note
        )

    def rematch(self) -> list[ResultsOutcome]:
        waiting = self.store.inspection_results(unmatched=True, with_actuals=False)
        out: list[ResultsOutcome] = []
        window = self.site.config.inspection.match_window_s
        found = [(s, match_result(self.store, s.result, window_s=window)) for s in waiting]
        changed = [(s, m) for s, m in found if m.part_key is not None or m.note != s.note]
        if changed:
            self.store.set_inspection_matches((s.key, m.part_key, m.method, m.note) for s, m in changed)
        for s, m in changed:
            if m.part_key is not None:
                after = dataclasses.replace(s, part_key=m.part_key, matched_by=m.method, note=m.note)
                out.append(self._outcome(after, new=False, actuals=None))
        return out


def import_files(
    site: Site,
    store: Store,
    paths: Sequence[Path],
    options: ImportOptions | None = None,
    *,
    progress: Callable[[FileOutcome], None] | None = None,
) -> ImportSummary:
    """Import ``paths`` into ``store`` (see the module docstring); ``progress`` is told each file's
    outcome as it is done. Never raises for a bad file: it is ``refused`` in the summary."""
    started = time.perf_counter()
    importer = _Importer(site, store, options or ImportOptions(), paths)
    summary = ImportSummary()
    for path in paths:
        outcome = importer.one_file(path)
        summary.files.append(outcome)
        if progress is not None:
            progress(outcome)
    summary.rematched = importer.rematch()
    summary.seconds = time.perf_counter() - started
    return summary


def rematch(site: Site, store: Store) -> list[ResultsOutcome]:
    """Try every unmatched result again (their parts may have been stored since); the newly matched."""
    return _Importer(site, store, ImportOptions(), []).rematch()
