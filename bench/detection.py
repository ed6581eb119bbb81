"""Detection-quality benchmark on generated small batches: drift families x noise kinds x batch sizes.

Every batch is one run of a two-feature program (a bore diameter, size tolerance 15 um; a hole
position, true-position tolerance 0.05 mm) fed part by part through :class:`monitor.engine.DriftEngine`,
exactly as the daemon feeds it. One feature of the batch drifts (or none), the others stay in control.
The generator is ours and deliberately plain (numpy, seeded); other people score the product with
theirs, so nothing in ``monitor/`` knows about it.

Families (what the drifting feature's mean does; ``dist`` is the distance from the setup level to the
tolerance limit along the drift direction):

* ``stable``: nothing; every part is in control.
* stay in tolerance: ``thermal`` (saturating growth from part 1, time constant about 8 or 20 parts,
  plateau at 25-60% of ``dist``), ``warmup_settle`` (a cold-start offset of 30-60% of ``dist`` that
  decays back to the setup level, time constant 3-8 parts), ``step_in_tol`` (a level step of 30-60%
  of ``dist`` at a random part: an insert indexed without an offset update);
* leave tolerance: ``wear`` (linear on the bore, reaching the limit 20, 50, 100 or 200 parts after an
  onset at part 1, 10 or 50), ``fast_warmup`` (saturating from part 1 with a plateau beyond the limit,
  mean crossing it at part 9-12), ``pos_x`` and ``pos_xy`` (linear position drift along X, or along
  a direction with both X and Y, onsets and reach as for wear).

Noise kinds (same marginal sd; process capability Cp drawn from 1.33-2.5 per batch, setup bias up to
15% of the half tolerance per axis): ``normal``; ``quantised`` (readings rounded to 1 um); ``t4``
(Student t with 4 degrees of freedom); ``ar03`` and ``ar06`` (AR(1) with lag-1 correlation 0.3 and
0.6); ``outliers`` (normal, and 1% of readings off by 6-12 sigma, one reading at a time).

Generator profiles (``--profile``, :data:`PROFILES`): the figures above are those of ``harsh``, the default.
``calibrated`` draws the same families from the same random numbers with Cp 1.6-2.5, a position's
scatter sized against its circular zone and a slower fast warm-up (mean crossing the limit at part
11-15, plateau 1.5-2.5 times the distance); its parameters were chosen only so that the wave-1
detector (``bench/detection_at.py 4c1854b``) reproduces the issue's "today" figures, which are the
only calibration of the issue's own generator (docs/detection.md, "Generator profiles"). It
estimates what that generator will show; it was never used to tune the detector.

Scores (per family and noise, and summed into the issue's table):

* first OOT part: the first part whose reading is out of tolerance (what the machinist would see),
  except a single probe glitch of the ``outliers`` scatter (re-probing would show the part good);
  the generator goes on for ``EXTRA`` parts past the batch so a forecast's interval can be checked
  even when the batch ends first;
* alarms of the engine are its detectors' signals, not its conditions: the engine keeps one condition
  per feature (issue 15), which a signal joins without opening anything while the condition is open,
  so counting condition openings would hide a forecast that joins a condition opened earlier and a
  drift that arrives while a false alarm's condition is still open. Per feature and alarm kind
  (forecast, EWMA, CUSUM, run rule, re-probe) the bench takes the part's evidence
  (``DriftEngine.assess``) and opens an alarm where the kind starts signalling after at least
  ``close_after`` quiet parts: what the engine's per-kind alerts did before conditions, and what the
  baselines get;
* flagged before the first OOT part: a drift alarm (forecast, EWMA, CUSUM or run rule; not the
  out-of-tolerance alert, not a re-probe notice) on the drifting feature opened at a part p with
  drift start <= p < first OOT; lead = first OOT - p; unflagged drifts count as lead 0 in the median
  and 10th percentile; only drifts whose first OOT part falls inside the batch are counted;
* in-tolerance drifts with a breach forecast: drifts whose mean stays inside the tolerance, with a
  forecast alert on that feature at or after the drift start (reported for all of them, and for the
  ones where no reading at all went out by scatter);
* false alarms per 1000 in-control parts: parts before the drift start (all of a stable batch) on
  which an alert of a class opened on any feature; charts, forecasts and re-probe notices apart;
* leaving drifts by capability: the share flagged per family and band of the batch's Cp
  (``leaving_by_capability``), because that share depends on Cp more than on anything else and
  another generator may draw Cp differently;
* interval coverage: at the first forecast alert of a drift, whether the actual first OOT part after
  it lies inside the alert's 90% interval for it; and (engines that report evidence per part) the
  same at every part where the forecast is active before the first OOT part.

Baselines in the same run, scored the same way: ``shewhart20`` (individuals chart per axis, +-3 sigma
limits from the mean and mean moving range of parts 1-20, alarms from part 21) and ``ewma_nominal``
(EWMA, lambda 0.2, on the deviation from nominal per axis with sigma = tolerance band / 8, limit
solved for the same per-chart in-control ARL the engine gives its EWMA charts).

Prints one JSON object (``--table`` adds a markdown table on stderr). Usage:
``python3 bench/detection.py [--seeds 50] [--sizes 50,100,300] [--families a,b] [--noises a,b] [--profile harsh]
[--set KEY=VALUE]``.
The drift-cell benchmark on the simulator's physics is ``bench/detection_cell.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from monitor.config import ProgramConfig
from monitor.detect.arl import ewma_limit
from monitor.engine import DriftEngine
from monitor.model import AlertKind, PartRecord, PartStatus, SpindleStats, ToolUse

NOISES = ("normal", "quantised", "t4", "ar03", "ar06", "outliers")
STAYS = ("thermal", "warmup_settle", "step_in_tol")
LEAVES = ("wear", "fast_warmup", "pos_x", "pos_xy")
FAMILIES = ("stable", *STAYS, *LEAVES)
SIZES = (50, 100, 300)
EXTRA = 200
"""Parts generated past the end of a batch (never fed to the engine) to find the actual first OOT part."""
ONSETS = (1, 10, 50)
REACH = (20, 50, 100, 200)
T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Profile:
    """How the generator draws a batch's world (the families and noise kinds are the same in every profile).

    ``cp``: range of the batch's process capability (uniform); ``position_scatter``: how an axis's
    scatter relates to the zone, ``"axis"`` (sd = R / (3 Cp), the size formula per axis, R the zone
    radius: a centred hole then leaves its circular zone 5-10x as often as a centred size at the same
    Cp leaves its band) or ``"zone"`` (sd such that a centred hole leaves its zone exactly as often
    as a centred size at the same Cp: ``R / sqrt(-2 ln(2 Phi(-3 Cp)))``, the Rayleigh tail);
    ``warmup_plateau`` and ``warmup_cross``: the fast warm-up's plateau (in distances to the limit)
    and the part where its mean crosses the limit; ``reach``: parts from onset to the limit of the
    linear drifts (with onsets :data:`ONSETS`, ``combos[seed % len(combos)]`` of those that fit)."""

    cp: tuple[float, float]
    position_scatter: str
    warmup_plateau: tuple[float, float]
    warmup_cross: tuple[float, float]
    reach: tuple[int, ...]
    about: str

    def axis_sd(self, half: float, cp: float, position: bool) -> float:
        """Part-to-part sd of a channel whose limits lie ``half`` from nominal (the zone radius for an axis)."""
        if position and self.position_scatter == "zone":
            return half / math.sqrt(-2.0 * math.log(math.erfc(3.0 * cp / math.sqrt(2.0))))
        return half / (3.0 * cp)


PROFILES: dict[str, Profile] = {
    "harsh": Profile(
        cp=(1.33, 2.5),
        position_scatter="axis",
        warmup_plateau=(1.3, 2.0),
        warmup_cross=(9.0, 12.0),
        reach=REACH,
        about="the default: the issue's families as written, Cp down to 1.33, scatter per axis as for a size",
    ),
    "calibrated": Profile(
        cp=(1.6, 2.5),
        position_scatter="zone",
        warmup_plateau=(1.5, 2.5),
        warmup_cross=(11.0, 15.0),
        reach=REACH,
        about=(
            "chosen only so that the wave-1 detector (bench/detection_at.py 4c1854b) reproduces the issue's "
            "'today' column: Cp 1.6-2.5, position scatter against the zone, fast warm-up crossing at part 11-15"
        ),
    ),
}
"""Generator profiles by name (``--profile``); ``harsh`` is the default and the one the issue's table is
measured on."""

DRIFT_KINDS = frozenset({AlertKind.FORECAST, AlertKind.EWMA, AlertKind.CUSUM, AlertKind.RUN_RULE})
CHART_KINDS = frozenset({AlertKind.EWMA, AlertKind.CUSUM, AlertKind.RUN_RULE})
REPROBE = "reprobe"
"""Alert kind value of a re-probe notice (a single implausible reading), when the engine has it."""

PROGRAM: dict[str, Any] = {
    "program": "B1",
    "features": {
        "dia": {"kind": "size", "signal": "probe.dia", "nominal": 10.0075, "lower": 10.0, "upper": 10.015},
        "pos": {
            "kind": "position",
            "x": {"signal": "probe.px", "nominal": 25.0},
            "y": {"signal": "probe.py", "nominal": 40.0},
            "tolerance": 0.05,
        },
    },
}
CHANNELS = {"probe.dia": ("dia", 10.0075, 0.0075), "probe.px": ("pos", 25.0, 0.025), "probe.py": ("pos", 40.0, 0.025)}
"""signal -> (feature, nominal, half tolerance of the axis)."""


@dataclass
class Batch:
    """One generated batch: readings of ``parts + EXTRA`` parts per signal and what is true about them."""

    family: str
    noise: str
    parts: int
    seed: int
    readings: dict[str, np.ndarray]
    mean: dict[str, np.ndarray]
    glitch: dict[str, np.ndarray]
    """Per signal, the readings the ``outliers`` scatter made wild (a probe glitch, not a bad part)."""
    drifting: str | None
    drift_start: int | None
    detail: dict[str, Any] = field(default_factory=dict)

    def out_of_tolerance(self, feature: str, values: dict[str, np.ndarray]) -> np.ndarray:
        """Boolean per part: the feature is out of tolerance in ``values`` (readings or mean)."""
        if feature == "dia":
            v = values["probe.dia"]
            return np.asarray((v < 10.0) | (v > 10.015))
        dx, dy = values["probe.px"] - 25.0, values["probe.py"] - 40.0
        return np.asarray(2.0 * np.hypot(dx, dy) > 0.05)

    def first_oot(self, feature: str, after: int = 0, limit: int | None = None) -> int | None:
        """First part number > ``after`` (up to ``limit``) whose reading is out of tolerance (a probe
        glitch of the ``outliers`` scatter does not make a part bad: re-probing shows it good)."""
        bad = self.out_of_tolerance(feature, self.readings)
        signals = ("probe.dia",) if feature == "dia" else ("probe.px", "probe.py")
        bad = bad & ~np.logical_or.reduce([self.glitch[s] for s in signals])
        end = len(bad) if limit is None else limit
        hits = np.nonzero(bad[after:end])[0]
        return int(hits[0]) + after + 1 if hits.size else None

    def mean_leaves(self) -> bool:
        """The drifting feature's mean path goes out of tolerance within the batch."""
        if self.drifting is None:
            return False
        return bool(self.out_of_tolerance(self.drifting, self.mean)[: self.parts].any())


# ---------------------------------------------------------------------------------------------- generator
def _noise(rng: np.random.Generator, kind: str, n: int) -> np.ndarray:
    """Unit-variance noise of one channel."""
    if kind == "t4":
        return rng.standard_t(4, n) / math.sqrt(2.0)
    e = rng.standard_normal(n)
    if kind in ("ar03", "ar06"):
        phi = 0.3 if kind == "ar03" else 0.6
        x = np.empty(n)
        x[0] = e[0]
        s = math.sqrt(1.0 - phi * phi)
        for i in range(1, n):
            x[i] = phi * x[i - 1] + s * e[i]
        return x
    return e


def _distance(bias: np.ndarray, u: np.ndarray, half: float) -> float:
    """Distance along the unit vector ``u`` from ``bias`` to the tolerance boundary (|.| = half)."""
    bu = float(bias @ u)
    return -bu + math.sqrt(bu * bu - (float(bias @ bias) - half * half))


def generate(family: str, noise: str, parts: int, seed: int, profile: str = "harsh") -> Batch:
    """One seeded batch of ``family`` with ``noise`` drawn by ``profile`` (see the module docstring).
    Every profile makes the same random draws in the same order, so a seed's batch differs between
    profiles only by what the profile changes."""
    prof = PROFILES[profile]
    rng = np.random.default_rng([FAMILIES.index(family), NOISES.index(noise), parts, seed, 11])
    n = parts + EXTRA
    t = np.arange(1, n + 1, dtype=float)
    cp = rng.uniform(*prof.cp)
    sigma = {s: prof.axis_sd(half, cp, position=s != "probe.dia") for s, (_, _, half) in CHANNELS.items()}
    bias = {s: rng.uniform(-0.15, 0.15) * half for s, (_, _, half) in CHANNELS.items()}
    drift = {s: np.zeros(n) for s in CHANNELS}
    detail: dict[str, Any] = {"cp": round(cp, 3), "profile": profile}
    drifting: str | None = None
    start: int | None = None
    if family != "stable":
        if family == "wear":
            drifting = "dia"
        elif family in ("pos_x", "pos_xy"):
            drifting = "pos"
        else:
            drifting = "dia" if rng.random() < 0.5 else "pos"
        if drifting == "dia":
            signals = ["probe.dia"]
            u = np.array([1.0 if rng.random() < 0.5 else -1.0])
            half = 0.0075
        else:
            signals = ["probe.px", "probe.py"]
            half = 0.025
            if family == "pos_x":
                u = np.array([1.0 if rng.random() < 0.5 else -1.0, 0.0])
            elif family == "pos_xy":
                ang = math.radians(float(rng.uniform(25, 65))) + int(rng.integers(4)) * math.pi / 2
                u = np.array([math.cos(ang), math.sin(ang)])
            else:
                ang = float(rng.uniform(0, 2 * math.pi))
                u = np.array([math.cos(ang), math.sin(ang)])
        dist = _distance(np.array([bias[s] for s in signals]), u, half)
        a = np.zeros(n)
        if family == "thermal":
            plateau, tau = rng.uniform(0.25, 0.6), rng.choice([8.0, 20.0]) * rng.uniform(0.85, 1.2)
            a = plateau * (1.0 - np.exp(-(t - 1) / tau))
            start = 1
            detail.update(plateau=round(plateau, 3), tau=round(tau, 1))
        elif family == "warmup_settle":
            amp, tau = rng.uniform(0.3, 0.6), rng.uniform(3.0, 8.0)
            a = amp * np.exp(-(t - 1) / tau)
            start = 1
            detail.update(start_offset=round(amp, 3), tau=round(tau, 1))
        elif family == "step_in_tol":
            size, at = rng.uniform(0.3, 0.6), int(rng.integers(10, parts - 9))
            a = np.where(t >= at, size, 0.0)
            start = at
            detail.update(step=round(size, 3), at=at)
        elif family == "fast_warmup":
            amp, cross = rng.uniform(*prof.warmup_plateau), rng.uniform(*prof.warmup_cross)
            tau = (cross - 1) / -math.log(1.0 - 1.0 / amp)
            a = amp * (1.0 - np.exp(-(t - 1) / tau))
            start = 1
            detail.update(plateau=round(amp, 3), tau=round(tau, 1), mean_crosses=round(cross, 1))
        else:  # linear: wear, pos_x, pos_xy
            combos = [(s, r) for s in ONSETS for r in prof.reach if s + r <= parts]
            onset, reach = combos[seed % len(combos)]
            a = np.maximum(0.0, t - onset) / reach
            start = onset
            detail.update(onset=onset, reach=reach)
        for i, s in enumerate(signals):
            drift[s] = a * dist * u[i]
        detail["direction"] = [round(float(v), 3) for v in u]
    mean = {s: CHANNELS[s][1] + bias[s] + drift[s] for s in CHANNELS}
    readings = {}
    glitch = {}
    for s in CHANNELS:
        v = mean[s] + sigma[s] * _noise(rng, noise, n)
        hit = np.zeros(n, dtype=bool)
        if noise == "outliers":
            hit = rng.random(n) < 0.01
            v = v + hit * np.where(rng.random(n) < 0.5, -1.0, 1.0) * rng.uniform(6.0, 12.0, n) * sigma[s]
        glitch[s] = hit
        if noise == "quantised":
            v = np.round(v, 3)
        readings[s] = v
    return Batch(family, noise, parts, seed, readings, mean, glitch, drifting, start, detail)


def records(batch: Batch) -> Iterable[PartRecord]:
    """The batch's parts as the daemon would hand them to the engine."""
    for i in range(batch.parts):
        n = i + 1
        start = T0 + timedelta(minutes=3 * n)
        yield PartRecord(
            key=f"m1/B1/{n}",
            machine="m1",
            program="B1",
            part_number=n,
            start=start,
            end=start + timedelta(minutes=2),
            status=PartStatus.COMPLETE,
            measurements={s: float(v[i]) for s, v in batch.readings.items()},
            tools=(ToolUse("T1", None, float(n), 100.0),),
            spindle=SpindleStats(30.0, 40.0, 100.0),
        )


# ---------------------------------------------------------------------------------------------- baselines
def _openings(signal: np.ndarray, quiet: int = 3) -> list[int]:
    """Parts (1-based) at which a boolean alarm series opens, an alarm closing after ``quiet`` quiet parts."""
    out: list[int] = []
    idle = quiet
    for i, on in enumerate(signal):
        if on:
            if idle >= quiet:
                out.append(i + 1)
            idle = 0
        else:
            idle += 1
    return out


def baseline_alarms(batch: Batch, ewma_width: float) -> dict[str, dict[str, list[int]]]:
    """{baseline: {feature: [opening parts]}} over the batch (the first ``parts`` parts)."""
    n = batch.parts
    shew: dict[str, np.ndarray] = {}
    ewma: dict[str, np.ndarray] = {}
    lam = 0.2
    for s, (feature, nominal, half) in CHANNELS.items():
        v = batch.readings[s][:n]
        phase1 = v[:20]
        sd = float(np.mean(np.abs(np.diff(phase1)))) / 1.128
        centre = float(phase1.mean())
        beyond = np.abs(v - centre) > 3 * sd
        beyond[:20] = False
        shew[feature] = shew.get(feature, np.zeros(n, bool)) | beyond
        z = (v - nominal) / (2 * half / 8)
        stat = np.empty(n)
        acc = 0.0
        for i, x in enumerate(z):
            acc = (1 - lam) * acc + lam * float(x)
            stat[i] = acc
        out = np.abs(stat) > ewma_width * math.sqrt(lam / (2 - lam))
        ewma[feature] = ewma.get(feature, np.zeros(n, bool)) | out
    return {
        "shewhart20": {f: _openings(a) for f, a in shew.items()},
        "ewma_nominal": {f: _openings(a) for f, a in ewma.items()},
    }


# ---------------------------------------------------------------------------------------------- scoring
_COUNTS = (
    "batches",
    "in_control_parts",
    "drifts",
    "flagged",
    "stays",
    "stays_forecast",
    "stays_clean",
    "stays_clean_forecast",
    "coverage_n",
    "coverage_hit",
    "coverage_all_n",
    "coverage_all_hit",
    "leaves_after_batch",
)


@dataclass
class Cell:
    """Scores of one detector on one (family, noise) cell, summed over sizes and seeds."""

    batches: int = 0
    in_control_parts: int = 0
    false_parts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    """Alarm class -> in-control parts on which an alarm of that class opened."""
    drifts: int = 0
    flagged: int = 0
    leads: list[float] = field(default_factory=list)
    stays: int = 0
    stays_forecast: int = 0
    stays_clean: int = 0
    stays_clean_forecast: int = 0
    coverage_n: int = 0
    coverage_hit: int = 0
    coverage_all_n: int = 0
    coverage_all_hit: int = 0
    leaves_after_batch: int = 0

    def add(self, other: Cell) -> None:
        for name in _COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for k, v in other.false_parts.items():
            self.false_parts[k] += v
        self.leads += other.leads

    def summary(self) -> dict[str, Any]:
        leads = sorted(self.leads)
        ic = max(1, self.in_control_parts)
        out: dict[str, Any] = {"batches": self.batches, "in_control_parts": self.in_control_parts}
        out["false_alarms_per_1000_in_control_parts"] = {k: round(1000 * v / ic, 2) for k, v in sorted(self.false_parts.items())}
        if self.drifts:
            out["drifts_leaving_in_batch"] = self.drifts
            out["share_flagged_before_first_oot"] = round(self.flagged / self.drifts, 4)
            out["median_lead"] = statistics.median(leads)
            out["p10_lead"] = leads[int(0.1 * len(leads))]
        if self.leaves_after_batch:
            out["drifts_leaving_after_batch"] = self.leaves_after_batch
        if self.stays:
            out["in_tolerance_drifts"] = self.stays
            out["share_with_breach_forecast"] = round(self.stays_forecast / self.stays, 4)
            out["no_reading_out"] = self.stays_clean
            out["share_with_breach_forecast_no_reading_out"] = (
                round(self.stays_clean_forecast / self.stays_clean, 4) if self.stays_clean else None
            )
        if self.coverage_n:
            out["interval_coverage"] = round(self.coverage_hit / self.coverage_n, 4)
            out["interval_checks"] = self.coverage_n
        if self.coverage_all_n:
            out["interval_coverage_every_part"] = round(self.coverage_all_hit / self.coverage_all_n, 4)
            out["interval_checks_every_part"] = self.coverage_all_n
        return out


def _interval(part: int, evidence: dict[str, Any]) -> tuple[float, float] | None:
    """Absolute 90% interval for the first OOT part that a forecast alert gave (new or old evidence)."""
    iv = evidence.get("first_out_interval")
    if iv:
        return float(iv[0]), math.inf if iv[1] is None else float(iv[1])
    rel = evidence.get("breach_interval")
    if rel:
        return part + float(rel[0]), math.inf if rel[1] is None else part + float(rel[1])
    return None


def score(
    batch: Batch,
    opened: dict[str, list[tuple[int, str, dict[str, Any]]]],
    active: list[tuple[int, float, float]] | None = None,
) -> Cell:
    """Score one batch from {feature: [(part, class, evidence)]} of alert openings (class: forecast,
    chart, reprobe, or the name of a baseline) and, if known, the 90% interval (absolute parts) of
    the first OOT part at every part where the drifting feature's breach forecast was active."""
    cell = Cell(batches=1)
    start = batch.drift_start if batch.drift_start is not None else batch.parts + 1
    ic_limit = min(start - 1, batch.parts)
    cell.in_control_parts = ic_limit
    by_class: dict[str, set[int]] = defaultdict(set)
    for feature, events in opened.items():
        for part, cls, _ in events:
            in_control = feature != batch.drifting or part < start
            if in_control and part <= ic_limit:
                by_class[cls].add(part)
    for cls, ps in by_class.items():
        cell.false_parts[cls] += len(ps)
    if batch.drifting is None:
        return cell
    mine = opened.get(batch.drifting, [])
    drift_alarms = [p for p, cls, _ in mine if cls != REPROBE and p >= start]
    forecasts = [(p, ev) for p, cls, ev in mine if cls == "forecast" and p >= start]
    if batch.family in STAYS and not batch.mean_leaves():
        cell.stays = 1
        cell.stays_forecast = int(bool(forecasts))
        if batch.first_oot(batch.drifting, limit=batch.parts) is None:
            cell.stays_clean = 1
            cell.stays_clean_forecast = cell.stays_forecast
    elif batch.family in LEAVES:
        first = batch.first_oot(batch.drifting, limit=batch.parts)
        if first is None:
            cell.leaves_after_batch = 1
        elif first > start:
            cell.drifts = 1
            flag = min((p for p in drift_alarms if p < first), default=None)
            cell.flagged = int(flag is not None)
            cell.leads.append(float(first - flag) if flag is not None else 0.0)
    first_in_batch = batch.first_oot(batch.drifting, limit=batch.parts)
    for p, lo, hi in active or []:
        actual = batch.first_oot(batch.drifting, after=p)
        if (first_in_batch is None or p < first_in_batch) and actual is not None and batch.family in LEAVES:
            cell.coverage_all_n += 1
            cell.coverage_all_hit += int(lo <= actual <= hi)
    if forecasts and batch.family in LEAVES:
        p, ev = forecasts[0]
        iv = _interval(p, ev)
        actual = batch.first_oot(batch.drifting, after=p)
        if iv is not None and (actual is not None or iv[0] > len(batch.readings["probe.dia"])):
            cell.coverage_n = 1
            cell.coverage_hit = int(actual is not None and iv[0] <= actual <= iv[1])
    return cell


def _feed(engine: DriftEngine, rec: PartRecord) -> tuple[dict[str, dict[str, Any]], dict[str, tuple[float, float]]]:
    """Per feature, the alarm kinds signalling on this part (forecast with its absolute 90% interval
    of the first OOT part as evidence; ewma, cusum, run_rule, reprobe) and per feature the interval
    while a breach forecast is active."""
    result = engine.assess(rec)
    kinds: dict[str, dict[str, Any]] = {}
    out: dict[str, tuple[float, float]] = {}
    for feature, ev in result.evidence.items():
        on: dict[str, Any] = {}
        fc = ev.forecast
        if fc is not None and ev.forecast_alarm:
            lo, _, hi = fc.first_out
            out[feature] = (rec.part_number + lo, rec.part_number + hi)
            on[str(AlertKind.FORECAST)] = {"first_out_interval": [rec.part_number + lo, rec.part_number + hi]}
        for c in ev.charts:
            on.setdefault(c.chart, {})
        if any(r.status == "held" for r in ev.reprobes.values()):
            on[REPROBE] = {}
        kinds[feature] = on
    return kinds, out


class Openings:
    """Alarm openings from per-part signals: an alarm of a (feature, kind) opens where the kind
    signals after at least ``quiet`` parts without it (as ``_openings`` does for the baselines)."""

    def __init__(self, quiet: int) -> None:
        self.quiet = quiet
        self.idle: dict[tuple[str, str], int] = defaultdict(lambda: quiet)
        self.opened: dict[str, list[tuple[int, str, dict[str, Any]]]] = defaultdict(list)

    def add(self, part: int, kinds: dict[str, dict[str, Any]]) -> None:
        for feature, on in kinds.items():
            for kind in (str(AlertKind.FORECAST), "ewma", "cusum", "run_rule", REPROBE):
                key = (feature, kind)
                if kind in on:
                    if self.idle[key] >= self.quiet:
                        cls = _class(kind)
                        if cls is not None:
                            self.opened[feature].append((part, cls, on[kind]))
                    self.idle[key] = 0
                else:
                    self.idle[key] += 1


def _class(kind: AlertKind | str) -> str | None:
    if kind == AlertKind.FORECAST:
        return "forecast"
    if kind in CHART_KINDS:
        return "chart"
    if str(kind) == REPROBE:
        return REPROBE
    return None


def _with_detection(program: ProgramConfig, overrides: dict[str, Any]) -> ProgramConfig:
    if not overrides:
        return program
    det = program.detection.model_validate({**program.detection.model_dump(), **overrides})
    return program.model_copy(update={"detection": det})


CP_BANDS = ((1.33, 1.6), (1.6, 2.0), (2.0, 2.5))
"""Process capability bands of the leaving drifts' breakdown (the generator draws Cp from 1.33-2.5):
how many drifts are flagged depends mostly on Cp, which another generator may draw differently."""


def cp_band(cp: float) -> str:
    """The :data:`CP_BANDS` label of a batch's Cp."""
    for lo, hi in CP_BANDS:
        if cp < hi:
            return f"{lo:g}-{hi:g}"
    lo, hi = CP_BANDS[-1]
    return f"{lo:g}-{hi:g}"


def _unit(
    args: tuple[str, str, Iterable[int], int, int, dict[str, Any], str],
) -> tuple[str, str, dict[str, Cell], float, int, float, dict[str, dict[str, list[int]]]]:
    """One (family, noise) cell over sizes and seeds: (family, noise, cells by detector, engine CPU s,
    parts fed, CPU s of the whole cell, leaving drifts [counted, flagged] by detector and Cp band)."""
    family, noise, sizes, first_seed, seeds, overrides, profile = args
    c0 = time.process_time()
    program = _with_detection(ProgramConfig.model_validate(PROGRAM), overrides)
    ewma_width = ewma_limit(0.2, program.detection.arl0 * len(CHANNELS))
    cells: dict[str, Cell] = defaultdict(Cell)
    bands: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    engine_cpu = 0.0
    fed = 0
    for size in sizes:
        for seed in range(first_seed, first_seed + seeds):
            batch = generate(family, noise, size, seed, profile)
            engine = DriftEngine({"B1": program})
            openings = Openings(program.detection.close_after)
            active: list[tuple[int, float, float]] = []
            recs = list(records(batch))
            c = time.process_time()
            for rec in recs:
                kinds, intervals = _feed(engine, rec)
                fc = intervals.get(batch.drifting or "")
                if fc is not None:
                    active.append((rec.part_number, *fc))
                openings.add(rec.part_number, kinds)
            engine_cpu += time.process_time() - c
            fed += len(recs)
            band = cp_band(float(batch.detail["cp"]))
            scored = {"ours": score(batch, openings.opened, active)}
            for name, alarms in baseline_alarms(batch, ewma_width).items():
                ev: dict[str, list[tuple[int, str, dict[str, Any]]]] = {
                    f: [(p, "chart", {}) for p in ps] for f, ps in alarms.items()
                }
                scored[name] = score(batch, ev)
            for name, one in scored.items():
                cells[name].add(one)
                bands[name][band][0] += one.drifts
                bands[name][band][1] += one.flagged
    plain = {name: {b: list(v) for b, v in by_band.items()} for name, by_band in bands.items()}
    return family, noise, dict(cells), engine_cpu, fed, time.process_time() - c0, plain


def run(
    seeds: int,
    sizes: Iterable[int] = SIZES,
    families: Iterable[str] = FAMILIES,
    noises: Iterable[str] = NOISES,
    overrides: dict[str, Any] | None = None,
    first_seed: int = 0,
    jobs: int = 1,
    profile: str = "harsh",
) -> dict[str, Any]:
    t0, c0 = time.perf_counter(), time.process_time()
    program = _with_detection(ProgramConfig.model_validate(PROGRAM), overrides or {})
    engine0 = DriftEngine({"B1": program})  # limits solved once (cached) before timing parts
    del engine0
    cells: dict[str, dict[str, dict[str, Cell]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(Cell)))
    engine_cpu = 0.0
    cpu = 0.0
    fed = 0
    units = [(f, n, tuple(sizes), first_seed, seeds, overrides or {}, profile) for f in families for n in noises]
    if jobs > 1:
        with multiprocessing.Pool(jobs) as pool:
            results = list(pool.imap_unordered(_unit, units))
    else:
        results = [_unit(u) for u in units]
    by_cp: dict[str, dict[str, dict[str, list[int]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(lambda: [0, 0])))
    for family, noise, by_detector, unit_engine_cpu, n, unit_cpu, unit_bands in results:
        engine_cpu += unit_engine_cpu
        cpu += unit_cpu
        fed += n
        for name, cell in by_detector.items():
            cells[name][family][noise].add(cell)
        for name, by_band in unit_bands.items():
            for band, (drifts, flagged) in by_band.items():
                by_cp[name][family][band][0] += drifts
                by_cp[name][family][band][1] += flagged
    detectors = {
        name: {fam: {nz: c.summary() for nz, c in by_noise.items()} for fam, by_noise in by_fam.items()}
        for name, by_fam in cells.items()
    }
    return {
        "profile": profile,
        "profile_settings": dataclasses.asdict(PROFILES[profile]),
        "seeds": seeds,
        "first_seed": first_seed,
        "sizes": list(sizes),
        "detection_overrides": overrides or {},
        "arl0": program.detection.arl0,
        "issue_table": {name: issue_table(by_fam) for name, by_fam in cells.items()},
        "by_family": detectors,
        "leaving_by_capability": {
            name: {
                fam: {
                    band: {"drifts": d, "flagged": f, "share_flagged": round(f / d, 4) if d else None}
                    for band, (d, f) in sorted(by_band.items())
                }
                for fam, by_band in by_fam_cp.items()
                if any(d for d, _ in by_band.values())
            }
            for name, by_fam_cp in by_cp.items()
        },
        "engine_cpu_ms_per_part": round(1000 * engine_cpu / max(1, fed), 3),
        "parts_fed": fed,
        "seconds": round(time.perf_counter() - t0, 1),
        "cpu_seconds": round(cpu + (time.process_time() - c0 if jobs > 1 else 0.0), 1),
    }


def _pooled(by_fam: dict[str, dict[str, Cell]], families: Iterable[str], noises: Iterable[str]) -> Cell:
    total = Cell()
    for fam in families:
        for nz in noises:
            if fam in by_fam and nz in by_fam[fam]:
                total.add(by_fam[fam][nz])
    return total


def issue_table(by_fam: dict[str, dict[str, Cell]]) -> dict[str, Any]:
    """The rows of issue 11's target table, pooled over the cells they speak of."""

    def rate(c: Cell, classes: Iterable[str]) -> float | None:
        if not c.in_control_parts:
            return None
        return round(1000 * sum(c.false_parts.get(k, 0) for k in classes) / c.in_control_parts, 2)

    leaves = _pooled(by_fam, LEAVES, NOISES)
    fast = _pooled(by_fam, ["fast_warmup"], NOISES)
    stays = _pooled(by_fam, STAYS, NOISES)
    out: dict[str, Any] = {
        "leaving_flagged_before_first_oot": round(leaves.flagged / leaves.drifts, 4) if leaves.drifts else None,
        "leaving_drifts": leaves.drifts,
        "leaving_median_lead": statistics.median(leaves.leads) if leaves.leads else None,
        "fast_warmup_flagged_before_first_oot": round(fast.flagged / fast.drifts, 4) if fast.drifts else None,
        "in_tolerance_with_breach_forecast": round(stays.stays_forecast / stays.stays, 4) if stays.stays else None,
        "in_tolerance_no_reading_out_with_breach_forecast": (
            round(stays.stays_clean_forecast / stays.stays_clean, 4) if stays.stays_clean else None
        ),
        "interval_coverage": round(leaves.coverage_hit / leaves.coverage_n, 4) if leaves.coverage_n else None,
        "interval_checks": leaves.coverage_n,
        "interval_coverage_every_part": (
            round(leaves.coverage_all_hit / leaves.coverage_all_n, 4) if leaves.coverage_all_n else None
        ),
        "interval_checks_every_part": leaves.coverage_all_n,
    }
    groups = {
        "normal_quantised": ["normal", "quantised"],
        "ar03": ["ar03"],
        "t4": ["t4"],
        "ar06": ["ar06"],
        "outliers": ["outliers"],
    }
    for name, nz in groups.items():
        c = _pooled(by_fam, FAMILIES, nz)
        out[f"false_alarms_per_1000_{name}"] = {
            "all_drift_alarms": rate(c, ["forecast", "chart"]),
            "charts": rate(c, ["chart"]),
            "forecasts": rate(c, ["forecast"]),
            "reprobe_notices": rate(c, [REPROBE]),
            "in_control_parts": c.in_control_parts,
        }
    return out


def markdown(result: dict[str, Any]) -> str:
    """The issue's table for ours and the baselines, for notes and docs."""
    rows = [
        ("leaving tolerance, flagged before the first bad part", "leaving_flagged_before_first_oot", None),
        ("fast warm-up from part 1, flagged before the first bad part", "fast_warmup_flagged_before_first_oot", None),
        ("in-tolerance drifts with a breach forecast", "in_tolerance_with_breach_forecast", None),
        ("  (of those with no reading out of tolerance)", "in_tolerance_no_reading_out_with_breach_forecast", None),
        (
            "false alarms / 1000 in-control parts, normal or quantised",
            "false_alarms_per_1000_normal_quantised",
            "all_drift_alarms",
        ),
        ("same, AR(1) 0.3", "false_alarms_per_1000_ar03", "all_drift_alarms"),
        ("same, Student t 4 dof", "false_alarms_per_1000_t4", "all_drift_alarms"),
        ("same, AR(1) 0.6", "false_alarms_per_1000_ar06", "all_drift_alarms"),
        ("same, 1% single outliers", "false_alarms_per_1000_outliers", "all_drift_alarms"),
        ("90% forecast interval coverage (at the alert)", "interval_coverage", None),
        ("  (at every part with an active forecast before the first bad part)", "interval_coverage_every_part", None),
    ]
    names = list(result["issue_table"])
    lines = ["| figure | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, key, sub in rows:
        cells = []
        for name in names:
            v = result["issue_table"][name].get(key)
            if sub is not None and isinstance(v, dict):
                v = v.get(sub)
            cells.append("-" if v is None else f"{v:.1%}" if sub is None and isinstance(v, float) else str(v))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    by_cp = result.get("leaving_by_capability") or {}
    if by_cp:
        lines += ["", "Leaving drifts flagged before the first bad part, by the batch's Cp:", ""]
        lines += ["| family | Cp | drifts | " + " | ".join(by_cp) + " |", "|---|---|---|" + "---|" * len(by_cp)]
        first = next(iter(by_cp.values()))
        for fam, by_band in first.items():
            for band, cell in by_band.items():
                shares = []
                for name in by_cp:
                    v = by_cp[name].get(fam, {}).get(band, {}).get("share_flagged")
                    shares.append("-" if v is None else f"{v:.1%}")
                lines.append(f"| {fam} | {band} | {cell['drifts']} | " + " | ".join(shares) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--seeds", type=int, default=50, help="seeds per family, noise and batch size (default 50)")
    ap.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="first seed (default 0): tune on other seeds than the ones the reported table uses",
    )
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)), help="batch sizes, comma-separated")
    ap.add_argument("--families", default=",".join(FAMILIES), help="families, comma-separated")
    ap.add_argument("--noises", default=",".join(NOISES), help="noise kinds, comma-separated")
    ap.add_argument(
        "--profile",
        default="harsh",
        choices=sorted(PROFILES),
        help="generator profile (default harsh, the issue's table); see PROFILES in this file",
    )
    ap.add_argument("--table", action="store_true", help="also print the issue's table as markdown on stderr")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes, one (family, noise) cell each at a time (default 1)")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a detection key of the program (value parsed as JSON), e.g. --set arl0=1000",
    )
    args = ap.parse_args(argv)
    overrides = {k: json.loads(v) for k, _, v in (item.partition("=") for item in args.set)}
    result = run(
        args.seeds,
        [int(s) for s in args.sizes.split(",")],
        [f for f in args.families.split(",") if f],
        [n for n in args.noises.split(",") if n],
        overrides,
        args.first_seed,
        max(1, args.jobs),
        args.profile,
    )
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    if args.table:
        print(markdown(result), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
