"""What every store backend offers: the interface the pipeline, the core and the reports use.

:class:`SqliteStore` (embedded, always available) implements it; a second backend (PostgreSQL for
several daemons sharing one plant database) implements the same two protocols and is picked by
:func:`monitor.store.open_store` from the site's ``store:`` section. Nothing above the store names
a backend: the pipeline takes a :class:`Store`, reports and queries take a :class:`StoreReader`.

Contract every backend keeps (the SQLite one is the reference, tested in tests/test_store.py):

- ``record_part`` stores a part with its measurements, the alerts it raised and the named states
  after it in one transaction, and is a no-op returning False for a key already stored;
- a named state is written whole or as a :class:`StateDelta` (what changed since its last write);
  loading it applies the changes written since its last whole write, in order, so a state read
  back is the one written last; a whole write starts the chain again;
- ``record_alerts`` appends each change to the alert's history (``alert_events``, a sequence that
  only grows) and sets the alert as it now stands;
- ``record_inspection`` stores each inspection result and actual once, by its key, whatever file
  brings it again; a file is remembered by its content hash;
- reads return domain objects (:mod:`monitor.model`, :mod:`monitor.inspection.model`), oldest
  first unless said otherwise;
- reads that the dashboard and the CLI repeat cost the same on a store of any size: the parts of a
  machine/program in end order, the latest N alerts, a feature's series and a capability come from
  indexes (the SQLite backend's query plans are checked in tests/test_store_queries.py);
- every failure is a :class:`~monitor.errors.StoreError` whose message says what to do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, NamedTuple, Protocol, Self

from monitor.codec import alert_from_dict, loads, part_from_dict
from monitor.inspection.model import InspectionResult, MatchMethod, StoredResult
from monitor.model import Action, Alert, AlertState, Observation, PartRecord, PartStatus

__all__ = ["DecodedReads", "SeriesPoint", "StateDelta", "StateWrite", "Store", "StoreReader", "row_measurements", "torn"]


def row_measurements(measurements: dict[str, float]) -> dict[str, float]:
    """The measurements a part's measurement and series rows hold, in both backends: all but NaN (a
    SQLite REAL column cannot hold it: it binds NaN as NULL). The part's record keeps every value as
    measured (its JSON writes NaN as json does); a chart and a capability leave NaN out anyway, so
    the answers are the same whichever backend stored the part, and after ``monitor store copy``."""
    if all(v == v for v in measurements.values()):
        return measurements
    return {s: v for s, v in measurements.items() if v == v}


def torn(record_measurements: dict[str, float], stored_rows: int) -> bool:
    """Whether a part's stored measurement rows disagree with its record (what a crash could tear).
    A PostgreSQL store written before schema 9 kept NaN rows too: either count is whole."""
    return stored_rows not in (len(row_measurements(record_measurements)), len(record_measurements))


class StateDelta(NamedTuple):
    """What changed in a named state since its last write (:func:`monitor.statelog.diff`; JSON text
    when it was encoded already): the store keeps it after the state's last whole write and applies
    it when the state is loaded."""

    change: dict[str, Any] | str


StateWrite = dict[str, Any] | str | StateDelta
"""A named state written whole (as a dict, or JSON text), or as what changed since its last write."""


class SeriesPoint(NamedTuple):
    """One complete part's values of some signals, as a feature chart needs them. ``end`` is the
    part's end as ISO 8601 text with its UTC offset (``datetime.isoformat``): what the chart sends,
    so 2,000 points are not parsed into datetimes to be formatted again."""

    part_number: int
    end: str
    key: str
    values: dict[str, float]


class StoreReader(Protocol):
    """Reading what the monitor stored: parts, alerts with their history, saved states."""

    def parts(
        self,
        *,
        machine: str | None = None,
        program: str | None = None,
        status: PartStatus | None = None,
        last: int | None = None,
        first_part: int | None = None,
        last_part: int | None = None,
        machines: Sequence[str] | None = None,
    ) -> list[PartRecord]:
        """Parts in the order they ended; ``last`` keeps only the most recent N; ``machines``: only
        these (a cell's, in a shared store)."""
        ...

    def part_data(
        self,
        *,
        machine: str | None = None,
        program: str | None = None,
        status: PartStatus | None = None,
        last: int | None = None,
        first_part: int | None = None,
        last_part: int | None = None,
        machines: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """What :meth:`parts` returns, as each part's stored JSON decoded (what
        :func:`~monitor.codec.part_from_dict` reads): for readers that turn many parts into rows
        (``monitor parts``, ``/api/parts``) without building a :class:`PartRecord` of each."""
        ...

    def part_texts(
        self,
        *,
        machine: str | None = None,
        program: str | None = None,
        status: PartStatus | None = None,
        last: int | None = None,
        first_part: int | None = None,
        last_part: int | None = None,
        machines: Sequence[str] | None = None,
    ) -> list[str]:
        """:meth:`part_data` before decoding: each part's stored JSON text, for a reader that keeps
        what it made of a part by that text (``/api/parts``: the same text, the same row)."""
        ...

    def has_part(self, key: str) -> bool: ...

    def part_count(self, *, machine: str | None = None, program: str | None = None, status: PartStatus | None = None) -> int: ...

    def next_part_numbers(self, machine: str) -> dict[str, int]:
        """Per program, the part number the next part of ``machine`` gets."""
        ...

    def alerts(
        self,
        *,
        machine: str | None = None,
        program: str | None = None,
        since: datetime | None = None,
        state: AlertState | None = None,
        open_only: bool = False,
        feature: str | None = None,
        severity: str | None = None,
        last: int | None = None,
        machines: Sequence[str] | None = None,
    ) -> list[Alert]:
        """Alerts as they stand now, oldest change first; ``last`` keeps the N changed most recently;
        ``machines``: only these."""
        ...

    def alert_data(
        self,
        *,
        machine: str | None = None,
        program: str | None = None,
        since: datetime | None = None,
        state: AlertState | None = None,
        open_only: bool = False,
        feature: str | None = None,
        severity: str | None = None,
        last: int | None = None,
        machines: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """What :meth:`alerts` returns, as each alert's stored JSON decoded (what
        :func:`~monitor.codec.alert_from_dict` reads): for readers that list alerts as rows
        (``/api/alerts``, a feature's alerts) without building an :class:`Alert` of each."""
        ...

    def machine_owners(self) -> list[dict[str, Any]]:
        """A shared store's machines with their cell and owning daemon (lease, health), by cell and
        machine: the plant view. Empty for a store that one daemon owns (SQLite)."""
        ...

    def part_groups(self) -> list[tuple[str, str]]:
        """Every (machine, program) that has stored parts."""
        ...

    def feature_values(
        self, machine: str, program: str, signals: Sequence[str], *, through: str | None = None
    ) -> list[tuple[float, ...]]:
        """Per complete part of ``machine``/``program`` that measured every one of ``signals``, their
        values in that order, oldest part first (by end, then key: a capability's input). ``through``
        (a stored part's key): only the parts up to and including that one, so that a caller holding
        the latest parts' values (a chart's :meth:`measurement_series`) reads only the older ones."""
        ...

    def measurement_series(
        self, machine: str, program: str, signals: Sequence[str], *, last: int | None = None
    ) -> list[SeriesPoint]:
        """Complete parts of ``machine``/``program`` with their values of ``signals`` (parts that measured
        none of them are left out), in the order they ended, then by key; ``last`` keeps the most
        recent N (every part of the batch that measured all of ``signals`` and comes after the first
        of these N is among them)."""
        ...

    def series_version(self, machine: str, program: str) -> int | None:
        """A number that changes whenever ``machine``/``program``'s measurement series (and so
        :meth:`feature_values`) may have changed through this store: what was read from them stays
        valid while it stays the same. None when it cannot be told (a reader of a store that another
        process writes): nothing read may be kept."""
        ...

    def series_stamps(self) -> dict[tuple[str, str], int] | None:
        """Per (machine, program) with measurement series, a number stored with them that changes
        (in the same transaction) with any change of their rows, whoever writes them: what was
        computed from a group's :meth:`feature_values` stays valid while its stamp is the same,
        across processes and restarts. None when the store keeps no such number: nothing may be
        kept."""
        ...

    def alert(self, alert_id: str) -> Alert | None: ...

    def alert_events(self, after: int = 0, *, limit: int = 1000) -> list[tuple[int, Alert]]:
        """Every alert change after sequence number ``after``, oldest first."""
        ...

    def last_alert_event(self) -> int: ...

    def actions(
        self,
        *,
        machine: str | None = None,
        program: str | None = None,
        feature: str | None = None,
        condition_id: str | None = None,
        last: int | None = None,
    ) -> list[Action]:
        """What people did (acknowledgements, offsets applied, tools changed, parts quarantined), oldest first."""
        ...

    def load_detector_state(self, name: str) -> dict[str, Any] | None: ...

    def load_detector_states(self, prefix: str) -> dict[str, dict[str, Any]]: ...

    def load_position(self, machine: str, source: str) -> dict[str, Any] | None: ...

    def signal_history(
        self,
        machine: str,
        signal: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        last: int | None = None,
    ) -> list[Observation]:
        """Kept raw observations of one machine's signal, oldest first."""
        ...

    def signal_names(self) -> list[tuple[str, str]]:
        """(machine, signal) pairs that have history."""
        ...

    def part(self, key: str) -> PartRecord | None:
        """The part stored under ``key``."""
        ...

    def parts_with_id(self, part_id: str, *, machine: str | None = None, program: str | None = None) -> list[PartRecord]:
        """Parts (not aborted) whose probing macro wrote this ``part.id`` (a serial number), oldest first."""
        ...

    def has_part_ids(self, *, machine: str | None = None, program: str | None = None) -> bool:
        """True when some part of that machine/program carries a ``part.id``."""
        ...

    def parts_ended_before(
        self, time: datetime, *, machine: str | None = None, program: str | None = None, last: int = 2
    ) -> list[PartRecord]:
        """The ``last`` parts (not aborted) that ended at or before ``time``, newest first."""
        ...

    def inspection_file(self, sha256: str) -> dict[str, Any] | None:
        """The imported file with this content hash (path, format, imported_at, info), or None."""
        ...

    def inspection_files(self) -> list[dict[str, Any]]:
        """Every imported file, oldest first."""
        ...

    def inspection_results(
        self,
        *,
        keys: Sequence[str] | None = None,
        part_keys: Sequence[str] | None = None,
        unmatched: bool = False,
        after_seq: int | None = None,
        with_actuals: bool = True,
    ) -> list[StoredResult]:
        """Stored inspection results with their actuals, in the order they were stored or last changed."""
        ...

    def last_inspection_seq(self) -> int:
        """Where the change sequence of inspection results stands (0 when none are stored)."""
        ...


class Store(StoreReader, Protocol):
    """A store the daemon's core writes through (one writer of alert state: the core)."""

    on_write: Callable[[str, float], None] | None
    """Called after each write transaction with its kind (part, alerts, signals...) and seconds."""

    def record_part(
        self,
        part: PartRecord,
        alerts: Sequence[Alert] = (),
        states: Iterable[tuple[str, StateWrite]] = (),
        refreshed: Sequence[Alert] = (),
    ) -> bool:
        """Store a part, its alert changes, the conditions it refreshed (no history event) and the
        states after it in one transaction; False if already stored."""
        ...

    def record_alerts(self, alerts: Iterable[Alert]) -> None: ...

    def record_action(self, action: Action) -> None:
        """Store what a person did; the same action id twice is stored once."""
        ...

    def save_detector_state(self, name: str, state: StateWrite) -> None: ...

    def save_position(self, machine: str, source: str, position: dict[str, Any]) -> None: ...

    def record_signals(self, observations: Sequence[Observation]) -> None:
        """Keep raw observations as signal history (the site's ``store.signals``)."""
        ...

    def prune_signals(self, older_than: datetime, *, chunk: int = 10_000) -> int:
        """Delete signal history before ``older_than``; how many rows went."""
        ...

    def record_inspection(
        self,
        path: str,
        format: str,
        sha256: str,
        info: dict[str, Any],
        results: Sequence[tuple[str, InspectionResult, Sequence[str]]],
    ) -> tuple[list[str], int]:
        """Store one file's results (key, results, actual keys) in one transaction, each result and
        actual once whatever file brings it again; the keys that are new or gained actuals, and how
        many actuals are new."""
        ...

    def forget_inspection_file(self, sha256: str) -> int:
        """Delete what was first imported from the file with this hash; how many actuals went."""
        ...

    def set_inspection_matches(self, matches: Iterable[tuple[str, str | None, MatchMethod | None, str | None]]) -> None:
        """Record the part (or none, with the reason) each results belong to."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None: ...


class _DataReads(Protocol):
    """What :class:`DecodedReads` builds on: a backend's decoded reads."""

    @property
    def part_texts(self) -> Callable[..., list[str]]: ...

    @property
    def alert_data(self) -> Callable[..., list[dict[str, Any]]]: ...


class DecodedReads:
    """:meth:`StoreReader.parts`, :meth:`StoreReader.part_data` and :meth:`StoreReader.alerts` built
    from what ``part_texts`` reads and ``alert_data`` decodes: one place for both backends, which
    differ only in how they read the stored JSON. The filters are passed on as they are: their names,
    types and meanings are :class:`StoreReader`'s (one list of them, not one more here)."""

    def part_data(self: _DataReads, **filters: Any) -> list[dict[str, Any]]:
        """:meth:`StoreReader.part_data`: the stored JSON of :meth:`StoreReader.part_texts` decoded."""
        return [loads(t) for t in self.part_texts(**filters)]

    def parts(self: _DataReads, **filters: Any) -> list[PartRecord]:
        """:meth:`StoreReader.parts`: the records of :meth:`StoreReader.part_data`."""
        return [part_from_dict(loads(t)) for t in self.part_texts(**filters)]

    def alerts(self: _DataReads, **filters: Any) -> list[Alert]:
        """:meth:`StoreReader.alerts`: the records of :meth:`StoreReader.alert_data`."""
        return [alert_from_dict(d) for d in self.alert_data(**filters)]
