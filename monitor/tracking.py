"""Part tracking: cuts one machine's ordered observation stream into part records.

The tracker is pure (no I/O, no clock): time comes from the observations. It decides where a part
begins and ends (by the program's ``part_end`` rule), collects what happened during it (tools,
spindle load, probe results), and says honestly how the part ended: ``complete`` only when every
probe value the program expects arrived and no data was lost; ``incomplete`` when a value never
came or a gap hit the part; ``aborted`` when the cycle stopped, the program changed mid-part or a
new cycle began without the part counter moving. Aborted and incomplete parts are recorded but
never fed to drift detection.

Controllers are untidy, so the tracker also:

* waits ``grace_s`` after a part ends for probe values that arrive late;
* re-orders observations from two sources of one machine whose clocks differ by up to
  ``max_skew_s`` (a small buffer released by time), after shifting each signal by its source's
  ``clock_offset_s``;
* drops observations replayed after a reconnect: an exact repeat (signal, time, value; a NaN
  repeats a NaN) of one of the last few thousand observations, or of a signal's latest value however old (what a source
  sends again when it reconnects), in bounded memory with O(1) work per observation;
* treats a part counter that goes down (controller restart, counter reset to 0) as a new baseline,
  never as a part;
* on a machine that reports no execution state, takes the window between two part ends (counter
  increments) as the part's window, so spindle aggregates cover the whole cycle;
* accounts for every counter value the controller moved through: a part counter that jumps (data
  lost in a ``source.gap``, changes the source never delivered, parts made while the daemon was
  stopped) leaves one ``not_observed`` placeholder per value it skipped, numbered like parts, so part
  numbers keep following the counter; every part that overlaps a gap's window (source clock) is
  incomplete;
* keeps a probe value stamped far from the machine's clock (a controller writing the year 2999)
  out of complete parts: it is placed at the machine's clock, and its part carries a note;
* never takes a probe value that is no finite number (NaN, infinity, text) as a measurement: it is
  counted (``non_numeric_probe_values``), logged (once per signal and hour of the machine's clock,
  with how many came meanwhile), attributed like any result and noted on the part it belongs to,
  whose value of that signal (written before or after it) is kept; stamped far from the machine's
  clock, it is noted as such but leaves its part complete (no measurement came from that clock).

Attribution of probe results does not depend on the order in which values arrive nor on a few
milliseconds between the timestamps of values the controller wrote together (a server stamps each
item when it samples it, in its own order). Results are held unattributed until the part they may
belong to is final (its grace window ran out) and are then placed by their timestamps against the
part ends around them:

* ``tracking.results: before_count`` (default): a part's results are written before (or with) the
  part end that counts it; a result stamped up to ``jitter_s`` after that end still belongs to it;
* ``after_count``: they are written after it, within ``grace_s``; a result stamped up to
  ``jitter_s`` before the end belongs to the part that end counts;
* a result whose timestamp alone would have put it on the neighbouring part is attributed by that
  rule, counted (``attributed_by_rule``) and flagged on the part, never chosen silently;
* where the probing macro writes an identifier with its results (``part.id``), results go with the
  identifier written within ``jitter_s`` of them: ``tracking.part_id: counter`` puts them on the
  part whose counter value the identifier names, whatever the timestamps; ``label`` keeps the
  results written with one identifier together on one part and records the identifier.
"""

from __future__ import annotations

import bisect
import contextlib
import heapq
import itertools
import logging
import math
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from monitor.config import ProgramConfig, TrackingConfig
from monitor.model import (
    CONNECTION_SIGNAL,
    GAP_SIGNAL,
    Observation,
    PartRecord,
    PartStatus,
    SpindleStats,
    ToolUse,
    Value,
)

__all__ = [
    "ATTRIBUTED_BY_RULE",
    "PART_ID",
    "PART_ID_DISAGREES",
    "SEVERAL_PART_IDS",
    "ExecutionPhase",
    "PartTracker",
    "execution_phase",
    "part_key",
]

_RUNNING = frozenset({"ACTIVE", "RUNNING", "RUN", "AUTOMATIC", "EXECUTING", "STARTED"})
_ENDED = frozenset({"READY", "PROGRAM_COMPLETED", "ENDED", "COMPLETED", "IDLE", "FINISHED"})
_ABORTED = frozenset({"STOPPED", "INTERRUPTED", "ABORTED", "RESET", "PROGRAM_STOPPED", "ALARM"})
_PAUSED = frozenset({"FEED_HOLD", "OPTIONAL_STOP", "PROGRAM_OPTIONAL_STOP", "WAIT", "SUSPENDED", "HOLD"})
_RECENT = 2_048
"""How many recent observations are remembered to recognise replays after a reconnect (besides each
signal's latest one). Sources with sequence numbers (MTConnect) already drop what they read twice by
sequence; this window covers what others send again: a reconnected subscription's initial values,
a republished notification, a source restarted a little behind where it was."""
_MAX_TOOLS = 1_000
"""Tools whose last reported life is remembered (a magazine holds far fewer)."""
_LOOSE_MAX = 20_000
"""Bound on results held unattributed (a machine whose parts never end must not grow memory)."""
PART_ID = "part.id"
ATTRIBUTED_BY_RULE = "attributed_by_rule"
"""Flag: a result's timestamp alone would have put it on the neighbouring part; ``tracking.results`` decided."""
PART_ID_DISAGREES = "part_id_disagrees_with_time"
"""Flag: results were attributed by their part id, but their timestamps alone point at another part."""
SEVERAL_PART_IDS = "several_part_ids"
"""Flag: results written with more than one part id landed on this part (``part_id: label``)."""
_FALSY = frozenset({"", "0", "0.0", "FALSE", "OFF", "NO", "UNAVAILABLE", "NOT_READY"})
_NON_NUMERIC_LOG_EVERY = timedelta(hours=1)
"""A probe that keeps writing garbage (a stuck macro, every part) is logged again at most this often
(machine clock), with how many values came meanwhile: the counter and the parts' notes have them all."""

_log = logging.getLogger(__name__)


class ExecutionPhase:
    """What an execution state means for a part: running, ended, aborted, paused, or unknown."""

    RUNNING = "running"
    ENDED = "ended"
    ABORTED = "aborted"
    PAUSED = "paused"
    UNKNOWN = "unknown"


def execution_phase(value: Value) -> str:
    """Map MTConnect Execution values and OPC UA program states onto part phases.

    >>> execution_phase("ACTIVE"), execution_phase("Ended"), execution_phase("FEED_HOLD")
    ('running', 'ended', 'paused')
    """
    if not isinstance(value, str):
        return ExecutionPhase.UNKNOWN
    text = value.strip().upper().replace(" ", "_")
    if text in _RUNNING:
        return ExecutionPhase.RUNNING
    if text in _ENDED:
        return ExecutionPhase.ENDED
    if text in _ABORTED:
        return ExecutionPhase.ABORTED
    if text in _PAUSED:
        return ExecutionPhase.PAUSED
    return ExecutionPhase.UNKNOWN


def part_key(machine: str, program: str, end: datetime) -> str:
    """A key that is the same whenever the same part is seen again (replay, daemon restart)."""
    return f"{machine}/{program}/{end.isoformat()}"


class _RecentObservations:
    """Fingerprints (signal, time, value) of the last ``size`` observations, and of each signal's
    latest one however old; :meth:`seen` answers "is this a repeat?" and remembers it otherwise.

    A fingerprint is added only when it was not there, so each one is held once: eviction is a
    ``popleft`` and a set removal, O(1) whatever the window's size (a dict evicted by
    ``next(iter(...))`` slows down as deleted slots pile up at its front).

    A value stamped later than every value of its signal so far cannot repeat one: it is only
    appended, and fingerprints enter the set (are hashed: an aware datetime's first hash costs
    more than the rest of the check) only when one that could be a repeat comes (stamped no later,
    or UNAVAILABLE, which may carry the server's clock), all those appended since at once. A
    stream in time order hashes almost none; none is hashed more than once."""

    __slots__ = ("_indexed", "_latest", "_newest", "_order", "_present", "_size")

    def __init__(self, size: int) -> None:
        self._size = size
        self._order: deque[tuple[str, datetime, Value]] = deque()
        self._present: set[tuple[str, datetime, Value]] = set()
        self._indexed = 0
        """How many of the oldest fingerprints in ``_order`` are in ``_present`` (the others are newer)."""
        self._latest: dict[str, tuple[str, datetime, Value]] = {}
        self._newest: dict[str, datetime] = {}
        """Per signal, the latest time of any of its values (held or evicted; UNAVAILABLE not counted)."""

    def __len__(self) -> int:
        return len(self._order)

    def seen(self, signal: str, time: datetime, value: Value) -> bool:
        if value != value:  # NaN: each parse is its own object, unequal, hashed by identity
            value = math.nan  # one object for every NaN, so a NaN sent again is recognised like any value
        fingerprint = (signal, time, value)
        order = self._order
        newest = self._newest.get(signal) if value is not None else None
        if value is not None and (newest is None or time > newest):
            self._newest[signal] = time  # later than all values of its signal: no repeat, nothing to look up
        else:
            if self._latest.get(signal) == fingerprint:
                return True
            present = self._present
            present.update(itertools.islice(reversed(order), len(order) - self._indexed))  # the newer ones
            self._indexed = len(order)
            if fingerprint in present:
                return True
        self._latest[signal] = fingerprint
        order.append(fingerprint)
        if len(order) > self._size:
            oldest = order.popleft()
            if self._indexed:
                self._indexed -= 1
                self._present.discard(oldest)
        return False


@dataclass(slots=True)
class _OpenPart:
    program: str
    start: datetime
    implicit: bool = False
    """Opened at a part end because the machine reports no execution state: the window between ends."""
    measurements: dict[str, float] = field(default_factory=dict)
    unavailable: set[str] = field(default_factory=set)
    tools: list[ToolUse] = field(default_factory=list)
    load_sum: float = 0.0
    load_n: int = 0
    peak: float | None = None
    energy: float = 0.0
    cutting_time: float = 0.0
    notes: list[str] = field(default_factory=list)
    gap: bool = False
    flags: dict[str, None] = field(default_factory=dict)
    part_ids: dict[str, None] = field(default_factory=dict)
    non_numeric: int = 0
    """Probe values of this part that were no finite number (noted; never measurements)."""
    doubtful: bool = False
    """A value of this part could not be placed in time (stamped far from the machine's clock)."""
    last_cut: float | None = None
    """The cutting time of the last tool when it ran on since ``tools[-1]`` was built (every load
    sample adds to it; a record per sample cost a microsecond): :meth:`tools_now` folds it in."""

    def tools_now(self) -> list[ToolUse]:
        """The tools, the last one with its cutting time up to now."""
        if self.last_cut is not None:
            t = self.tools[-1]
            self.tools[-1] = ToolUse(t.tool, t.life_start, t.life_end, self.last_cut)
            self.last_cut = None
        return self.tools


@dataclass
class _PendingPart:
    part: _OpenPart
    end: datetime
    deadline: datetime
    status: PartStatus
    counter: int | None
    phantom: bool = False
    """The part the first counter value we saw had counted: already made (or stored before a restart).
    It only claims the results written with it, so they never land on the next part."""
    ended_by: Observation | None = None
    """The observation that ended it: a source resumes just after it (:attr:`PartTracker.resume_from`)."""


@dataclass
class _Gap:
    """A window of the source's clock in which data was lost, open until the counter is accounted past it."""

    reason: str
    start: datetime
    end: datetime | None
    """None until data after the gap is processed (adapters that cannot say where the loss ends)."""

    def covers(self, time: datetime) -> bool:
        return self.end is None or time <= self.end


class PartTracker:
    """Turns one machine's observations into part records.

    Parameters
    ----------
    machine:
        The machine id; observations of other machines are refused (counted).
    programs:
        Program configs by the name the controller reports; they say how parts end and which
        probe values a complete part must have. Parts of unknown programs are still recorded.
    tracking:
        Grace window, clock-skew tolerance, timestamp jitter and the results rule.
    signal_offsets:
        Seconds added to the timestamps of each signal (its source's ``clock_offset_s``).
    next_part_numbers:
        Where part numbering resumes per program (from the store after a restart).
    part_id_mapped:
        The machine maps ``part.id``: results that come without one are counted and noted.
    """

    def __init__(
        self,
        machine: str,
        programs: Mapping[str, ProgramConfig],
        tracking: TrackingConfig | None = None,
        *,
        signal_offsets: Mapping[str, float] | None = None,
        next_part_numbers: Mapping[str, int] | None = None,
        context: Mapping[str, Any] | None = None,
        part_id_mapped: bool = False,
    ) -> None:
        self.machine = machine
        self._program: str | None = None
        self._end_signal: str | None = None
        self.programs = dict(programs)
        self.tracking = tracking or TrackingConfig()
        self._grace = timedelta(seconds=self.tracking.grace_s)
        self._skew = timedelta(seconds=self.tracking.max_skew_s)
        self._jitter = timedelta(seconds=self.tracking.jitter_s)
        self._rule = self.tracking.results
        self._id_mode = self.tracking.part_id
        self._expect_ids = part_id_mapped
        self._offsets = {k: timedelta(seconds=v) for k, v in (signal_offsets or {}).items() if v}
        self._next_number: dict[str, int] = dict(next_part_numbers or {})
        self.counts: Counter[str] = Counter()
        self._reorder: list[tuple[datetime, int, Observation]] = []
        self._tiebreak = itertools.count()
        self._latest: datetime | None = None
        self._released: datetime | None = None
        self._recent = _RecentObservations(_RECENT)
        self._phase = ExecutionPhase.UNKNOWN
        self._has_execution = False
        self._counter: int | None = None
        self._tool: str | None = None
        self._tool_life: float | None = None
        self._lives: dict[str, float] = {}
        """Each tool's life as last reported: a source that reports a tool's life only when it changes
        (MTConnect CuttingTool assets) says nothing when an unchanged tool is loaded again."""
        self._load: tuple[datetime, float] | None = None
        self._speed: float | None = None
        self._open: _OpenPart | None = None
        self._pending: list[_PendingPart] = []
        self._loose: list[Observation] = []
        """Probe results and part ids not yet attributed: they wait until their part is final."""
        self._bounds: tuple[datetime, datetime] | None = None
        """(by the rule, by timestamp alone): results up to these times went to parts already final."""
        self._ended_awaiting_count = False
        self._last_end: datetime | None = None
        self._restored_counter = False
        self._gap: _Gap | None = None
        self._counter_time: datetime | None = None
        self._first_counter: tuple[int, datetime] | None = None
        self._clock: datetime | None = None
        """The machine's clock as its state signals and gap windows tell it (probe values never move it)."""
        self._probe_tolerance = (
            timedelta(seconds=max(self.tracking.probe_clock_tolerance_s, 4 * self.tracking.max_skew_s))
            if self.tracking.probe_clock_tolerance_s
            else None
        )
        self._doubtful: dict[int, tuple[Observation, str]] = {}
        """Off-clock probe values placed at the machine's clock, by ``id``, with their note. Each entry
        holds its value, so no later value can take its id while it waits (one dropped as late or
        orphan leaves its entry: bounded by :data:`_LOOSE_MAX`, oldest first)."""
        self._non_numeric_logged: dict[str, tuple[datetime, int]] = {}
        """Per probe signal: when a non-numeric value of it was last logged, and how many came since."""
        self._accounted_until: datetime | None = None
        """After a restart: data stamped before here went into parts already stored (a source that
        re-reads from there, or sends its current values, repeats it)."""
        self._results_until: datetime | None = None
        """After a restart: probe results and part ids stamped up to here were placed (in parts stored)."""
        self._current: Observation | None = None
        self.resume_from: Observation | None = None
        """The observation that ended the latest part made final. Once that part is stored and nothing is
        held, a source may resume just after it: what followed it (the next part's start, its tools and
        spindle data, results still in the grace window) is read again, not lost with the open part."""
        if context:
            self._restore(context)

    # ------------------------------------------------------------------ public
    @property
    def programs(self) -> dict[str, ProgramConfig]:
        """Program configs by the name the controller reports (a reload assigns new ones)."""
        return self._programs

    @programs.setter
    def programs(self, programs: dict[str, ProgramConfig]) -> None:
        self._programs = programs
        self._set_program(self._program)

    @property
    def program(self) -> str | None:
        """The program the controller last reported."""
        return self._program

    @property
    def counter(self) -> int | None:
        """The controller's part counter as last reported."""
        return self._counter

    @property
    def holding(self) -> bool:
        """True while observations wait in the re-ordering buffer or an ended part in its grace window:
        resuming a source just after the latest observation would then lose what they still need."""
        return bool(self._reorder or self._pending)

    @property
    def in_part(self) -> bool:
        return self._open is not None

    def update(self, obs: Observation) -> list[PartRecord]:
        """Feed one observation; returns the parts that are now final (usually none)."""
        if obs.machine != self.machine:
            self.counts["other_machine"] += 1
            return []
        if obs.signal == CONNECTION_SIGNAL:
            # a connection note carries our clock and says nothing about data: a lost connection
            # that lost data is followed by the adapter's source.gap, in the source's clock
            return []
        offset = self._offsets.get(obs.signal) if self._offsets else None
        if offset:
            obs = replace(obs, time=obs.time + offset, end=obs.end + offset if obs.end is not None else None)
        signal = obs.signal
        # an observation identical to one seen recently (same signal, time and value) is a replay; only
        # exact repeats count: a controller clock that jumps must not make real values look old
        if signal != GAP_SIGNAL and self._recent.seen(signal, obs.time, obs.value):
            self.counts["duplicates"] += 1
            return []
        if self._accounted_until is not None and signal != GAP_SIGNAL and self._already_stored(obs):
            self.counts["already_stored"] += 1
            return []
        if obs.value is not None and signal != GAP_SIGNAL and not signal.startswith("probe."):
            # what _place_in_time does for a controller value that is no probe result: follow the clock
            if self._clock is None or obs.time > self._clock:
                self._clock = obs.time
        else:
            obs = self._place_in_time(obs)
        if not self._skew:
            return self._process(obs)
        # UNAVAILABLE values and the adapter's own gap/connection notes carry the server's or our
        # clock, not the controller's: they must neither push the re-ordering horizon nor count as late
        controller_clock = obs.value is not None and obs.signal not in (GAP_SIGNAL, CONNECTION_SIGNAL)
        if self._released is not None and obs.time < self._released and controller_clock:
            # arrived after its turn: processed now, out of order; raise tracking.max_skew_s if this counts up
            self.counts["late_observations"] += 1
        heapq.heappush(self._reorder, (obs.time, next(self._tiebreak), obs))
        if controller_clock and (self._latest is None or obs.time > self._latest):
            self._latest = obs.time
        return self._drain(self._latest - self._skew) if self._latest is not None else []

    def advance(self, now: datetime) -> list[PartRecord]:
        """Tell the tracker that controller time has reached ``now``; releases parts whose grace ran out."""
        return self._drain(now - self._skew) + self._release(now)

    def settle(self) -> list[PartRecord]:
        """The machine's sources have delivered everything they had (the daemon saw them quiet for a
        while, by the wall clock): process what waits for re-ordering now instead of waiting for
        newer controller time that a stopped machine never sends."""
        return self._drain(None)

    def _drain(self, horizon: datetime | None) -> list[PartRecord]:
        """Process buffered observations up to ``horizon`` (all of them for None), oldest first."""
        out: list[PartRecord] = []
        while self._reorder and (horizon is None or self._reorder[0][0] <= horizon):
            released = heapq.heappop(self._reorder)[2]
            if released.value is not None and released.signal != GAP_SIGNAL:
                self._released = released.time  # UNAVAILABLE may carry the server's clock
            out += self._process(released)
        return out

    def close(self) -> list[PartRecord]:
        """Release everything held (shutdown): buffered observations and parts still in grace.

        The part in progress is not emitted: it has not ended, and emitting it would record a part
        that a restart would then see again.
        """
        out = self._drain(None)
        while self._pending:
            out += self._finalize()
        return out

    def context(self, after: PartRecord | None = None) -> dict[str, Any]:
        """What the machine was doing (program, counter, tool), JSON-able, to resume after a restart.

        A restarted daemon may resume its source mid-stream, where the program name and counter
        are not repeated; without this the next parts would belong to no program. Saved with the
        stored part ``after``, the counter and the next part number are that part's: parts still held
        here (grace window) or stored after it are not stored yet, and a restart must account for
        their counter values again.
        """
        counter = after.counter if after is not None and after.counter is not None else self._counter
        until = after.end if after is not None else self._counter_time
        numbers = dict(self._next_number)
        if after is not None:
            # parts finalised with it (placeholders and the part after a gap) are stored one
            # transaction each: resuming from this one must number the next one after it
            numbers[after.program] = after.part_number + (0 if after.status is PartStatus.ABORTED else 1)
        return {
            "program": self._program,
            "counter": counter,
            "accounted_until": until.isoformat() if until is not None else None,
            "results_until": self._bounds[0].isoformat() if after is not None and self._bounds is not None else None,
            "tool": self._tool,
            "tool_life": self._tool_life,
            "tool_lives": dict(self._lives),
            "next_part_numbers": numbers,
        }

    def baseline_context(self) -> dict[str, Any] | None:
        """The context at the first counter value this tracker saw, before any part: saved once so that
        a daemon killed before it stored a part still knows where the counter stood."""
        if self._first_counter is None:
            return None
        counter, time = self._first_counter
        return {**self.context(), "counter": counter, "accounted_until": time.isoformat()}

    def _already_stored(self, obs: Observation) -> bool:
        """Read again after a restart and already in stored parts. At the stored part's end itself only
        what ended it is (a counter value already counted): a source resumes just after it, and what the
        controller stamped at the same instant after it (the next cycle's start) belongs to the next part."""
        until = self._accounted_until
        assert until is not None
        if obs.time < until:
            return True
        if obs.signal.startswith("probe.") or obs.signal == PART_ID:
            return self._results_until is not None and obs.time <= self._results_until
        return False

    def _restore(self, context: Mapping[str, Any]) -> None:
        self._set_program(context.get("program"))
        counter = context.get("counter")
        self._counter = int(counter) if isinstance(counter, (int, float)) else None
        self._restored_counter = self._counter is not None
        self._tool = context.get("tool")
        until = context.get("accounted_until")
        if isinstance(until, str):
            with contextlib.suppress(ValueError):
                self._last_end = datetime.fromisoformat(until)
                self._accounted_until = self._last_end - self._skew
        results = context.get("results_until")
        if isinstance(results, str):
            with contextlib.suppress(ValueError):
                self._results_until = datetime.fromisoformat(results)
        life = context.get("tool_life")
        self._tool_life = float(life) if isinstance(life, (int, float)) else None
        lives = context.get("tool_lives")
        if isinstance(lives, Mapping):
            self._lives = {str(k): float(v) for k, v in lives.items() if isinstance(v, (int, float))}
        for program, number in dict(context.get("next_part_numbers") or {}).items():
            self._next_number[program] = max(int(number), self._next_number.get(program, 1))

    # ---------------------------------------------------------------- internals
    def _process(self, obs: Observation) -> list[PartRecord]:
        self._current = obs
        # UNAVAILABLE may carry the server's clock
        out = self._release(obs.time) if obs.value is not None and self._pending else []
        signal = obs.signal
        gap = self._gap
        if gap is not None and gap.end is None and obs.value is not None and signal != GAP_SIGNAL:
            gap.end = max(gap.start, obs.time)  # the source said where the loss began; data resumes here
        if signal == "spindle.load":  # most observations: tested first (the branches exclude each other)
            self._spindle_load(obs)
        elif signal.startswith("probe.") or signal == PART_ID:
            self._result(obs)
        elif signal == "program.name":
            out += self._program_name(obs)
        elif signal == "execution":
            out += self._execution(obs)
        elif signal == "part.count":
            out += self._part_count(obs)
        elif signal == "spindle.speed":
            self._spindle_speed(obs)
        elif signal == "tool.number":
            self._tool_number(obs)
        elif signal == "tool.life":
            self._tool_life_update(obs)
        elif signal == GAP_SIGNAL:
            self._on_gap(obs)
        if signal == self._end_signal and self._open is not None and _truthy(obs.value):
            out += self._end_part(obs.time, PartStatus.COMPLETE)  # part_end: signal:<name>
        return out

    def _end_rule(self) -> str:
        program = self._programs.get(self._program or "")
        return program.part_end if program is not None else "part_count"

    def _set_program(self, name: str | None) -> None:
        """The program the controller runs now, and the signal that ends its parts (``part_end:
        signal:<name>``; None for the other rules), looked up once here, not per observation."""
        self._program = name
        rule = self._end_rule()
        self._end_signal = rule[len("signal:") :] if rule.startswith("signal:") else None

    def _start_part(self, time: datetime, *, implicit: bool = False) -> None:
        self._open = _OpenPart(self._program or "UNKNOWN", time, implicit=implicit)
        self._ended_awaiting_count = False
        if self._gap is not None and self._gap.covers(time):
            self._open.gap = True
            self._open.notes.append(f"started during a data gap ({self._gap.reason})")
        if self._tool is not None:
            self._open.tools.append(ToolUse(self._tool, self._tool_life, self._tool_life))
        if self._load is not None:
            self._load = (time, self._load[1])

    def _ensure_part(self, time: datetime) -> _OpenPart:
        """The open part, or one opened now for machines that report no execution state."""
        if self._open is None:
            self._start_part(self._last_end if self._last_end is not None else time, implicit=not self._has_execution)
        assert self._open is not None
        return self._open

    def _program_name(self, obs: Observation) -> list[PartRecord]:
        if not isinstance(obs.value, str) or not obs.value:
            return []
        name = obs.value.strip()
        out: list[PartRecord] = []
        if name != self._program and self._open is not None:
            if self._open.implicit and self._program is None:
                self._open.program = name  # the first program name names the window opened before it
            else:
                self._open.notes.append(f"program changed to {name} during the part")
                out += self._end_part(obs.time, PartStatus.ABORTED, reopen=False)
        self._set_program(name)
        if self._open is None and not self._has_execution and self._counter is not None:
            self._start_part(obs.time, implicit=True)
        return out

    def _execution(self, obs: Observation) -> list[PartRecord]:
        phase = execution_phase(obs.value)
        previous, self._phase = self._phase, phase
        out: list[PartRecord] = []
        if phase != ExecutionPhase.UNKNOWN and not self._has_execution:
            # the machine does report its execution state: parts are its cycles, not the windows
            # between part ends opened so far
            self._has_execution = True
            if self._open is not None and self._open.implicit:
                self._open = None
        rule = self._end_rule()
        if phase == ExecutionPhase.RUNNING:
            if self._open is not None and self._ended_awaiting_count and rule == "part_count":
                self._open.notes.append("a new cycle started without the part counter moving")
                out += self._end_part(obs.time, PartStatus.ABORTED)
            if self._open is None:
                self._start_part(obs.time)
        elif phase == ExecutionPhase.ENDED and previous in (ExecutionPhase.RUNNING, ExecutionPhase.PAUSED):
            if self._open is not None:
                if rule == "program_end":
                    out += self._end_part(obs.time, PartStatus.COMPLETE)
                else:
                    self._ended_awaiting_count = True
        elif phase == ExecutionPhase.ABORTED and self._open is not None:
            self._open.notes.append(f"cycle stopped ({obs.value})")
            out += self._end_part(obs.time, PartStatus.ABORTED)
        return out

    def _part_count(self, obs: Observation) -> list[PartRecord]:
        value = obs.number
        if value is None:
            return []
        count = int(value)
        previous, self._counter = self._counter, count
        restored, self._restored_counter = self._restored_counter, False
        counted_at, self._counter_time = self._counter_time, obs.time
        if previous is None or (restored and count == previous):
            if previous is None:
                self._first_counter = (count, obs.time)
            if self._end_rule() == "part_count":
                self._baseline(obs.time, count)
            return []
        if count < previous:
            if restored:  # the controller was reset while the daemon was down: a new baseline
                self.counts["counter_rebased_after_restart"] += 1
                return []
            self.counts["counter_resets"] += 1
            if self._open is not None:
                self._open.notes.append(f"part counter reset from {previous} to {count}")
            return []
        if count == previous or self._end_rule() != "part_count":
            return []
        if count - previous - 1 > self.tracking.max_counter_jump:
            self.counts["counter_jumps_too_large"] += 1
            if self._open is not None:
                self._open.notes.append(
                    f"part counter jumped from {previous} to {count}, further than tracking.max_counter_jump "
                    f"{self.tracking.max_counter_jump}: taken as a new baseline"
                )
            return []
        out: list[PartRecord] = []
        gap = self._gap
        if count > previous + 1:
            self.counts["counter_jumps"] += 1
            seen = self._open is not None
            # the parts between were made after the counter was last seen (or the data stopped) and
            # before it showed ``count``
            end = obs.time
            if gap is not None:
                reason, start = gap.reason, min(gap.start, end)
            else:
                start = counted_at or self._last_end or end
                why = "while the monitor was not reading" if restored else "without the source delivering the counts between"
                reason = f"part counter moved from {previous} to {count} {why}"
            # the part that ends now is a placeholder too when nothing of it was seen
            out += self._not_observed(range(previous + 1, count + (0 if seen else 1)), reason, start, end)
            if seen:
                part = self._ensure_part(obs.time)
                part.gap = True
                part.notes.append(f"part counter jumped from {previous} to {count}")
                out += self._end_part(obs.time, PartStatus.COMPLETE)
        else:
            self._ensure_part(obs.time)
            out += self._end_part(obs.time, PartStatus.COMPLETE)
        if gap is not None and (gap.end is None or obs.time >= gap.end):
            self._gap = None  # every counter value up to here is accounted for
        return out

    def _not_observed(self, counters: range, reason: str, start: datetime, end: datetime) -> list[PartRecord]:
        """One placeholder per counter value nobody saw, queued behind the parts still in grace so that
        part numbers keep the counter's order. Placeholders take no results."""
        self.counts["parts_not_observed"] += len(counters)
        self._last_end = end
        for counter in counters:
            placeholder = _OpenPart(self._program or "UNKNOWN", start)
            placeholder.notes.append(
                f"not observed: {reason}; made between {start.isoformat()} and {end.isoformat()} (source clock)"
            )
            self._pending.append(_PendingPart(placeholder, end, end, PartStatus.NOT_OBSERVED, counter, ended_by=self._current))
        out: list[PartRecord] = []
        while self._pending and self._pending[0].status is PartStatus.NOT_OBSERVED:
            out += self._finalize()
        return out

    def _baseline(self, time: datetime, count: int) -> None:
        """The first counter value seen ends a part made before we listened: results written with it
        (a server's initial values) belong to that part, not to the next."""
        late = max(self._grace, self._jitter) + self._jitter
        earlier = _OpenPart(self._program or "UNKNOWN", time)
        phantom = _PendingPart(earlier, time, time + late, PartStatus.COMPLETE, count, phantom=True, ended_by=self._current)
        self._pending.append(phantom)
        self._last_end = time
        if self._open is None and not self._has_execution:
            self._start_part(time, implicit=True)  # the window up to the next increment is a part

    def _result(self, obs: Observation) -> None:
        """Hold a probe result or part id until the part it belongs to is final (see the module doc)."""
        if obs.signal != PART_ID and obs.value is not None and obs.number is None:
            # NaN, infinity or text from a probe is not a measurement: counted and logged here, then
            # attributed like any result, so the part it belongs to says so (and keeps its value)
            self.counts["non_numeric_probe_values"] += 1
            self._log_non_numeric(obs)
        if self._open is None and not self._has_execution and not self._pending and self._end_rule() != "program_end":
            self._ensure_part(obs.time)
        self._loose.append(obs)
        if len(self._loose) > _LOOSE_MAX:
            self._loose.sort(key=lambda o: o.time)
            del self._loose[0]
            self.counts["orphan_probe_values"] += 1

    def _log_non_numeric(self, obs: Observation) -> None:
        """One warning per signal, then at most one per ``_NON_NUMERIC_LOG_EVERY`` of the machine's clock."""
        signal = obs.signal
        last = self._non_numeric_logged.get(signal)
        if last is not None and abs(obs.time - last[0]) < _NON_NUMERIC_LOG_EVERY:
            self._non_numeric_logged[signal] = (last[0], last[1] + 1)
            return
        since = f"; {last[1]} more since {last[0].isoformat()}" if last is not None and last[1] else ""
        _log.warning(
            "%s: %s wrote %s at %s: not a measurement, attributed like any result and noted on its part%s",
            self.machine,
            signal,
            _shown(obs.value),
            obs.time.isoformat(),
            since,
        )
        self._non_numeric_logged[signal] = (obs.time, 0)

    def _spindle_load(self, obs: Observation) -> None:
        raw = obs.value
        value = (raw if math.isfinite(raw) else None) if type(raw) is float else obs.number
        self._integrate(obs.time)
        self._load = (obs.time, value) if value is not None else None
        if value is not None and self._open is not None:
            part = self._open
            part.load_sum += value
            part.load_n += 1
            peak = part.peak
            if peak is None or value > peak:  # max(peak, value) without the call
                part.peak = value

    def _spindle_speed(self, obs: Observation) -> None:
        self._integrate(obs.time)
        self._speed = obs.number

    def _integrate(self, now: datetime) -> None:
        """Add the time since the last load sample to energy and cutting time of the open part."""
        if self._open is None or self._load is None:
            return
        then, load = self._load
        dt = (now - then).total_seconds()
        if dt <= 0:
            return
        cutting = self._speed > 0 if self._speed is not None else load > 1.0
        if cutting:
            part = self._open
            part.cutting_time += dt
            part.energy += load * dt
            if part.tools:
                cut = part.last_cut
                part.last_cut = (part.tools[-1].cutting_time if cut is None else cut) + dt
        self._load = (now, load)

    def _tool_number(self, obs: Observation) -> None:
        value = obs.number
        if value is None and not isinstance(obs.value, str):
            return  # UNAVAILABLE, or a NaN/infinity (an OPC UA Double): no tool, never a tool named "nan"
        tool = str(int(value)) if value is not None and value.is_integer() else str(obs.value)
        if tool == self._tool:
            return
        self._integrate(obs.time)
        self._tool, self._tool_life = tool, self._lives.get(tool)
        if self._open is not None:
            self._open.tools_now().append(ToolUse(tool, self._tool_life, self._tool_life))

    def _tool_life_update(self, obs: Observation) -> None:
        value = obs.number
        if value is None:
            return
        self._tool_life = value
        if self._tool is not None:
            self._lives[self._tool] = value
            if len(self._lives) > _MAX_TOOLS:
                del self._lives[next(iter(self._lives))]
        if self._open is not None and self._open.tools:
            t = self._open.tools_now()[-1]
            # before the tool cut anything, a reported life is where its use starts (a tool replaced
            # while out of the spindle comes back with a new life)
            start = t.life_start if t.life_start is not None and t.cutting_time > 0 else value
            self._open.tools[-1] = ToolUse(t.tool, start, value, t.cutting_time)

    def _on_gap(self, obs: Observation) -> None:
        """Data was lost from ``obs.time`` (to ``obs.end`` when the source knows): every part that
        overlaps the window is incomplete, and the counter values it hides are accounted at the next
        counter change."""
        reason = str(obs.value)
        end = obs.end if obs.end is not None and obs.end >= obs.time else None
        if self._open is not None:
            self._open.gap = True
            self._open.notes.append(f"data gap: {reason}")
        for pending in self._pending:
            if obs.time <= pending.deadline and pending.status is PartStatus.COMPLETE:
                pending.part.gap = True
                pending.part.notes.append(f"data gap during grace window: {reason}")
        gap = self._gap
        if gap is None:
            self._gap = _Gap(reason, obs.time, end)
        else:  # a second loss before the first was accounted for: one window covering both
            gap.start = min(gap.start, obs.time)
            gap.end = None if gap.end is None or end is None else max(gap.end, end)
            if reason not in gap.reason:
                gap.reason = f"{gap.reason}; {reason}"
        if end is not None and (self._clock is None or end > self._clock):
            self._clock = end
        self.counts["gaps"] += 1

    def _place_in_time(self, obs: Observation) -> Observation:
        """Follow the machine's clock; a probe value stamped far from it is placed at it, and flagged.

        State signals and gap windows set the clock; a probe value alone never moves it, so one
        value from a macro with a broken clock can neither re-order the machine's data nor land on
        a part by its bogus time."""
        if obs.value is None or obs.signal in (GAP_SIGNAL, CONNECTION_SIGNAL):
            return obs
        if not obs.signal.startswith("probe."):
            if self._clock is None or obs.time > self._clock:
                self._clock = obs.time
            return obs
        clock, tolerance = self._clock, self._probe_tolerance
        if clock is None or tolerance is None or abs(obs.time - clock) <= tolerance:
            return obs
        self.counts["probe_values_off_clock"] += 1
        placed = replace(obs, time=clock)
        doubtful = self._doubtful
        doubtful[id(placed)] = (
            placed,
            f"{obs.signal} was stamped {obs.time.isoformat()}, {_span(obs.time - clock)} from the machine's clock "
            f"({clock.isoformat()}); kept at the machine's clock",
        )
        if len(doubtful) > _LOOSE_MAX:
            del doubtful[next(iter(doubtful))]
        return placed

    def _end_part(self, time: datetime, status: PartStatus, *, reopen: bool = True) -> list[PartRecord]:
        part = self._open
        if part is None:
            return []
        self._integrate(time)
        self._open = None
        self._ended_awaiting_count = False
        self._last_end = time
        # no results after an abort belong to it; a part that ended waits for its grace and jitter
        late = max(self._grace, self._jitter) + self._jitter
        deadline = time if status is PartStatus.ABORTED else time + late
        self._pending.append(_PendingPart(part, time, deadline, status, self._counter, ended_by=self._current))
        if reopen and not self._has_execution:
            self._start_part(time, implicit=True)  # no execution state: the next window starts now
        if deadline == time:
            return self._release(time, inclusive=True)
        return []

    def _release(self, now: datetime, *, inclusive: bool = False) -> list[PartRecord]:
        out: list[PartRecord] = []
        while self._pending and (self._pending[0].deadline < now or (inclusive and self._pending[0].deadline <= now)):
            out += self._finalize()
        return out

    # ---------------------------------------------------------------- attribution
    def _finalize(self) -> list[PartRecord]:
        """The oldest ended part is final: give it its results, then build its record."""
        pending = self._pending.pop(0)
        self.resume_from = pending.ended_by
        if pending.status is PartStatus.NOT_OBSERVED:  # nothing of it reached us: it takes no results
            record = self._finish(pending)
            return [record] if record is not None else []
        following = next((p for p in self._pending if p.status is not PartStatus.NOT_OBSERVED), None)
        next_start = following.part.start if following else (self._open.start if self._open else None)
        next_end = following.end if following else None
        self._attribute(pending, next_start, next_end)
        if pending.phantom:
            part = pending.part
            self.counts["results_of_earlier_part"] += len(part.measurements) + len(part.unavailable) + part.non_numeric
            return []
        record = self._finish(pending)
        return [record] if record is not None else []

    def _limits(self, pending: _PendingPart, next_start: datetime | None, next_end: datetime | None) -> tuple[datetime, datetime]:
        """Latest result time that belongs to this part: by the results rule, and by timestamps alone."""
        end, jitter = pending.end, self._jitter
        if pending.status is PartStatus.ABORTED:
            return end, end
        grace = max(self._grace, jitter)
        if self._rule == "before_count":
            # late results belong to the part until its grace ends or the next part starts
            late = end + grace if next_start is None else max(end, min(end + grace, next_start))
            return max(end + jitter, late), late
        natural = end + grace if next_end is None else max(end, min(end + grace, next_end))
        by_rule = end + grace if next_end is None else max(end, min(end + grace, next_end - jitter))
        return by_rule, natural

    def _attribute(self, pending: _PendingPart, next_start: datetime | None, next_end: datetime | None) -> None:
        part = pending.part
        hi, natural = self._limits(pending, next_start, next_end)
        lo, lo_natural = self._bounds if self._bounds is not None else (None, None)
        floor = part.start - self._jitter
        loose = sorted(self._loose, key=lambda o: o.time)
        ids = [o for o in loose if o.signal == PART_ID]
        values = [o for o in loose if o.signal != PART_ID]
        groups = self._group_by_id(ids, values)
        keep: list[Observation] = []
        taken: list[Observation] = []
        by_rule: list[str] = []

        def place(time: datetime) -> str:
            if time > hi:
                return "keep"
            if lo is not None and time <= lo:
                return "late"
            if time < floor:
                return "gap"
            if time > natural or (lo_natural is not None and time <= lo_natural):
                return "rule"
            return "part"

        def drop(kind: str, n: int) -> None:
            self.counts["late_results" if kind == "late" else "orphan_probe_values"] += n

        for ident, members in groups:
            if ident is None:  # results written without a part id: each placed by the rule
                for obs in members:
                    where = place(obs.time)
                    if where == "keep":
                        keep.append(obs)
                    elif where in ("late", "gap"):
                        drop(where, 1)
                    else:
                        taken.append(obs)
                        if where == "rule":
                            by_rule.append(obs.signal)
                        if self._expect_ids:
                            self.counts["results_without_part_id"] += 1
                            _note_once(part, f"results without a part id ({obs.signal}) placed by tracking.results")
                continue
            label = _id_text(ident.value)
            where = place(ident.time)
            if self._id_mode == "counter":
                number = ident.number
                counter = int(number) if number is not None and number.is_integer() else None
                if counter is None:
                    self.counts["part_id_not_a_counter"] += 1
                    _note_once(part, f"part id {label!r} is not a counter value; placed as a label (tracking.part_id)")
                elif counter == pending.counter:
                    taken += members
                    part.part_ids[label] = None
                    self.counts["attributed_by_part_id"] += len(members) - 1
                    if where not in ("part", "rule"):  # outside what the rule would give this part
                        part.flags[PART_ID_DISAGREES] = None
                        self.counts[PART_ID_DISAGREES] += 1
                        part.notes.append(
                            f"results with part id {label} stamped {ident.time.isoformat()}: attributed by the id; "
                            "their timestamps point at another part"
                        )
                    continue
                elif where == "keep" or (where in ("part", "rule") and counter > (pending.counter or 0)):
                    keep += members  # written for a part still to come
                    continue
                else:
                    self.counts["part_id_unmatched"] += 1
                    part.notes.append(
                        f"results with part id {label} stamped {ident.time.isoformat()} match no part waiting "
                        f"for them (this part is counter {pending.counter}); check tracking.part_id"
                    )
                    drop("gap", len(members) - 1)
                    continue
            # label: the results written with one id stay together, placed by the id's time
            if where == "keep":
                keep += [ident, *members]
            elif where in ("late", "gap"):
                drop(where, len(members) - 1)
            else:
                taken += members
                part.part_ids[label] = None
                if where == "rule":
                    by_rule += [o.signal for o in members if o.signal != PART_ID]
        self._loose = keep
        self._bounds = (max(hi, lo) if lo is not None else hi, max(natural, lo_natural) if lo_natural is not None else natural)
        measured_at: dict[str, datetime] = {}
        non_numeric: list[Observation] = []
        for obs in sorted(taken, key=lambda o: o.time):
            if obs.signal == PART_ID:
                continue
            held = self._doubtful.pop(id(obs), None)
            doubt = held[1] if held is not None else None
            value = obs.number
            if value is None and obs.value is not None:  # NaN, infinity, text: noted below, changes nothing
                non_numeric.append(obs)
                if doubt is not None:  # its clock is told; the part stays as sure as its values are
                    part.notes.append(doubt)
                continue
            if doubt is not None:
                part.doubtful = True
                part.notes.append(doubt)
            if value is None:
                part.unavailable.add(obs.signal)
                part.measurements.pop(obs.signal, None)
            else:
                part.unavailable.discard(obs.signal)
                part.measurements[obs.signal] = value
                measured_at[obs.signal] = obs.time
        for obs in non_numeric:
            part.non_numeric += 1
            at = measured_at.get(obs.signal)
            if obs.signal not in part.measurements:  # none, or the value was followed by UNAVAILABLE
                kept = "no value"
            elif at is not None and at > obs.time:
                kept = "the value after it kept"
            else:
                kept = "the value before it kept"
            _note_once(part, f"{obs.signal} wrote {_shown(obs.value)} at {obs.time.isoformat()}: not a measurement; {kept}")
        if by_rule:
            self.counts[ATTRIBUTED_BY_RULE] += len(by_rule)
            part.flags[ATTRIBUTED_BY_RULE] = None
            side = "after" if self._rule == "before_count" else "before"
            part.notes.append(
                f"{', '.join(sorted(set(by_rule)))} stamped within {self.tracking.jitter_s:g} s {side} the part end: "
                f"attributed to this part by tracking.results={self._rule}"
            )
        if len(part.part_ids) > 1:
            part.flags[SEVERAL_PART_IDS] = None
            self.counts[SEVERAL_PART_IDS] += 1
            part.notes.append("results written with several part ids: " + ", ".join(part.part_ids))

    def _group_by_id(
        self, ids: list[Observation], values: list[Observation]
    ) -> list[tuple[Observation | None, list[Observation]]]:
        """Each result goes with the part id written nearest to it within ``jitter_s``; the rest alone.

        Both lists are sorted by time. Returns (id or None, members), the id itself first in members.
        """
        members: dict[int, list[Observation]] = {i: [ident] for i, ident in enumerate(ids)}
        alone: list[Observation] = []
        times = [o.time for o in ids]
        for obs in values:
            k = bisect.bisect_left(times, obs.time)
            best: int | None = None
            for j in (k - 1, k):
                near = 0 <= j < len(ids) and abs(ids[j].time - obs.time) <= self._jitter
                if near and (best is None or abs(ids[j].time - obs.time) < abs(ids[best].time - obs.time)):
                    best = j
            if best is None:
                alone.append(obs)
            else:
                members[best].append(obs)
        out: list[tuple[Observation | None, list[Observation]]] = [(ids[i], m) for i, m in members.items()]
        out.append((None, alone))
        return out

    def _finish(self, pending: _PendingPart) -> PartRecord | None:
        part = pending.part
        if (
            part.implicit
            and pending.status is PartStatus.ABORTED
            and not part.measurements
            and not part.unavailable
            and not part.non_numeric
            and not part.load_n
        ):
            self.counts["empty_windows"] += 1  # a window between part ends that held nothing: not a part
            return None
        program = self.programs.get(part.program)
        expected = program.probe_signals() if program is not None else []
        missing = tuple(s for s in expected if s not in part.measurements)
        status = pending.status
        notes = list(part.notes)
        if status is PartStatus.NOT_OBSERVED:
            missing = ()
        elif status is PartStatus.COMPLETE and (missing or part.gap or part.doubtful):
            status = PartStatus.INCOMPLETE
            if missing:
                notes.append("no value for " + ", ".join(missing))
        number = self._next_number.get(part.program, 1)
        if status is not PartStatus.ABORTED:  # an aborted attempt is not a part: the next one gets its number
            self._next_number[part.program] = number + 1
        key = part_key(self.machine, part.program, pending.end)
        if status is PartStatus.NOT_OBSERVED:
            key = f"{self.machine}/{part.program}/not-observed/{pending.counter}@{part.start.isoformat()}"
        else:
            self.counts[f"parts_{status}"] += 1
        return PartRecord(
            key=key,
            machine=self.machine,
            program=part.program,
            part_number=number,
            start=part.start,
            end=pending.end,
            status=status,
            measurements=dict(part.measurements),
            missing=missing,
            tools=tuple(part.tools_now()),
            spindle=SpindleStats(
                mean_load=part.load_sum / part.load_n if part.load_n else None,
                peak_load=part.peak,
                cutting_time=part.cutting_time,
                energy=part.energy if part.load_n else None,
            ),
            counter=pending.counter,
            notes=tuple(notes),
            part_id=", ".join(part.part_ids) if part.part_ids else None,
            flags=tuple(part.flags),
        )


def _span(delta: timedelta) -> str:
    seconds = abs(delta.total_seconds())
    for unit, size in (("days", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.1f} s"


def _shown(value: Value) -> str:
    """A probe value that is no finite number, as a note or log line names it."""
    if isinstance(value, float):
        return "NaN" if value != value else "infinity" if value > 0 else "-infinity"
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:40] + "...")
    return "a number beyond float range"  # an int too large for a float (a JSON replay's 1e400 written out)


def _id_text(value: Value) -> str:
    number = value if isinstance(value, float) else None
    if number is not None and number.is_integer():
        return str(int(number))
    return str(value).strip()


def _note_once(part: _OpenPart, note: str) -> None:
    if note not in part.notes:
        part.notes.append(note)


def _truthy(value: Value) -> bool:
    if value is None:
        return False
    if isinstance(value, (int, float)):
        return value != 0
    return value.strip().upper() not in _FALSY
