"""Each feature's measurement sources in the batch report: the probe's values and those of every
inspection source (CMM, bench gauge) the program file names, with capability, verdict and the
bias between the probe and each other source.

A source's value of a part is what :func:`monitor.report.data.judge` makes of the probe's
signals, or the inspection actual the program's ``measured_by`` maps to the feature (a CMM's
position result is its zone value; a gauge's go/no-go is its verdict). When a part was measured
more than once by one source, the first result stored counts (as for the drift engine) and the
others are counted as re-measurements.

The bias of a source against the probe is the probe's value minus the source's on the parts both
measured: its mean with a t interval, the sd of the differences and the correlation (the
in-process gauge's correlation study; Bland & Altman, Lancet 1986).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from monitor.config import ProgramConfig
from monitor.detect.capability import CONFIDENCE, CapabilityResult, capability
from monitor.inspection.config import PROBE_SOURCE, MeasuredByConfig
from monitor.inspection.model import Actual
from monitor.model import AttributeFeature, Feature, PartRecord, PositionFeature, SizeFeature
from monitor.report.verdict import Verdict, attribute_verdict, capability_verdict
from monitor.store import StoreReader

__all__ = ["Bias", "FeatureValue", "Measurement", "SourceReport", "bias", "inspection_values", "measurements", "source_report"]


@dataclass(frozen=True, slots=True)
class FeatureValue:
    """One part's value of one feature; ``deviations`` are the axis offsets of a position feature."""

    machine: str
    part_number: int
    part_key: str
    value: float
    in_tolerance: bool
    deviations: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SourceReport:
    """One measurement source of a feature: what measured it, its values by part (in part-number
    order), their capability and the verdict."""

    source: str
    system: str | None
    resolution: float | None
    repeatability: dict[str, Any] | None
    values: tuple[FeatureValue, ...]
    capability: CapabilityResult | None
    verdict: Verdict
    remeasured: int = 0

    @property
    def out_of_tolerance(self) -> list[FeatureValue]:
        return [v for v in self.values if not v.in_tolerance]

    def control_limits(self) -> tuple[float, float, float] | None:
        """Individuals chart: (lower, centre, upper) = mean -+ 3 sigma within."""
        c = self.capability
        if c is None or c.mean is None or c.sigma_within is None:
            return None
        return c.mean - 3 * c.sigma_within, c.mean, c.mean + 3 * c.sigma_within

    def gauge_text(self) -> str:
        """The measurement system as the report prints it."""
        parts = [self.system or ("in-process probe" if self.source == PROBE_SOURCE else self.source)]
        if self.resolution is not None:
            parts.append(f"resolution {self.resolution:g}")
        r = self.repeatability or {}
        study = []
        if r.get("grr_percent") is not None:
            study.append(f"GR&R {r['grr_percent']:g}% of tolerance")
        if r.get("ndc") is not None:
            study.append(f"ndc {r['ndc']}")
        if r.get("ev") is not None:
            study.append(f"EV {r['ev']:g}")
        if r.get("bias") is not None:
            study.append(f"bias {r['bias']:+g}")
        for key in ("method", "reference", "date"):
            if r.get(key):
                study.append(str(r[key]))
        parts.append("repeatability study: " + ", ".join(study) if study else "no repeatability study declared")
        return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class Bias:
    """The probe minus another source on the parts both measured."""

    source: str
    n: int
    mean: float
    sd: float | None
    lo: float | None
    hi: float | None
    r: float | None
    tolerance: float | None
    """The tolerance width the bias is compared with (both limits; the one limit's distance from nominal)."""

    @property
    def share(self) -> float | None:
        """|mean bias| as a share of the tolerance."""
        return None if not self.tolerance else abs(self.mean) / self.tolerance

    def text(self, unit: str) -> str:
        head = f"probe − {self.source}: mean {self.mean:+.4f} {unit} over {self.n} parts"
        if self.lo is not None and self.hi is not None:
            head += f" ({CONFIDENCE:.0%} interval {self.lo:+.4f} to {self.hi:+.4f})"
        if self.sd is not None:
            head += f", sd of the differences {self.sd:.4f}"
        if self.r is not None:
            head += f", correlation r = {self.r:.2f}"
        if self.share is not None:
            head += f"; the bias is {self.share:.0%} of the tolerance"
        return head


def _tolerance(feature: Feature) -> float | None:
    if isinstance(feature, PositionFeature):
        return feature.tolerance
    if isinstance(feature, SizeFeature):
        if feature.lower is not None and feature.upper is not None:
            return feature.upper - feature.lower
        limit = feature.upper if feature.upper is not None else feature.lower
        return None if limit is None else abs(limit - feature.nominal)
    return None


def bias(feature: Feature, probe: Sequence[FeatureValue], other: Sequence[FeatureValue], source: str) -> Bias | None:
    """The bias of ``other`` against ``probe`` on the parts both have (None below two pairs, and
    for go/no-go features).

    >>> a = [FeatureValue("m", n, str(n), 10.0 + 0.001 * n, True) for n in range(1, 6)]
    >>> b = [FeatureValue("m", n, str(n), 10.0 + 0.001 * n - 0.002, True) for n in range(1, 6)]
    >>> f = SizeFeature("d", "probe.d", 10.0, 9.99, 10.01)
    >>> x = bias(f, a, b, "cmm")
    >>> round(x.mean, 6), x.n, round(x.share, 2)
    (0.002, 5, 0.1)
    """
    if isinstance(feature, AttributeFeature):
        return None
    theirs = {v.part_key: v.value for v in other}
    pairs = [(v.value, theirs[v.part_key]) for v in probe if v.part_key in theirs]
    if len(pairs) < 2:
        return None
    d = [a - b for a, b in pairs]
    n = len(d)
    mean = statistics.fmean(d)
    sd = statistics.stdev(d)
    from scipy.special import stdtrit  # imported here: scipy.special costs 0.2 s, only a bias needs it

    half = float(stdtrit(n - 1, 1 - (1 - CONFIDENCE) / 2)) * sd / math.sqrt(n)
    xs, ys = [a for a, _ in pairs], [b for _, b in pairs]
    r = None
    if statistics.pstdev(xs) > 0 and statistics.pstdev(ys) > 0:
        r = statistics.correlation(xs, ys)
    return Bias(source, n, mean, sd, mean - half, mean + half, r, _tolerance(feature))


@dataclass(frozen=True, slots=True)
class Measurement:
    """One measurement of one part as it was taken: a probe signal, or an inspection actual (every
    one, re-measurements included) with the feature and source the program maps it to."""

    part_number: int
    machine: str
    part_key: str
    source: str
    feature: str | None
    characteristic: str
    value: float | None
    unit: str | None
    status: str | None
    in_tolerance: bool | None
    time: str | None
    file: str | None


def measurements(store: StoreReader, program: ProgramConfig, parts: Sequence[PartRecord]) -> list[Measurement]:
    """Every measurement of ``parts`` (in their order): each probe signal, then every stored
    inspection actual in import order. ``in_tolerance`` is judged against the program's limits
    where the actual maps to a feature, else the file's own limits or verdict."""
    features = {f.name: f for f in program.feature_models()}
    by_signal = {s: f.name for f in features.values() for s in f.signals}
    results: dict[str, list[Any]] = {}
    for stored in store.inspection_results(part_keys=[p.key for p in parts]):
        results.setdefault(stored.part_key or "", []).append(stored)
    out: list[Measurement] = []
    for p in parts:
        for signal, value in p.measurements.items():
            name = by_signal.get(signal)
            feature = features.get(name) if name else None
            ok = feature.in_tolerance(value) if isinstance(feature, SizeFeature) and math.isfinite(value) else None
            out.append(
                Measurement(p.part_number, p.machine, p.key, PROBE_SOURCE, name, signal, value, None, None, ok, None, None)
            )
        for stored in results.get(p.key, []):
            for actual in stored.result.actuals:
                owner = program.feature_source(actual.characteristic)
                feature = features.get(owner[0]) if owner else None
                judged = _judged(feature, actual) if feature is not None else None
                ok = judged[1] if judged is not None else actual.in_tolerance()
                c = actual.characteristic
                out.append(
                    Measurement(
                        p.part_number,
                        p.machine,
                        p.key,
                        owner[1] if owner else "unmapped",
                        owner[0] if owner else None,
                        c.name + (f" ({c.designator})" if c.designator and c.designator != c.name else ""),
                        actual.value,
                        actual.unit,
                        actual.status,
                        ok,
                        (actual.time or stored.result.time).isoformat() if (actual.time or stored.result.time) else None,
                        stored.file,
                    )
                )
    return out


def _judged(feature: Feature, actual: Actual) -> tuple[float, bool] | None:
    """(value, in tolerance) of an inspection actual, judged against the program's limits."""
    if isinstance(feature, AttributeFeature):
        passed = actual.in_tolerance()
        return None if passed is None else (0.0 if passed else 1.0, passed)
    if actual.value is None or not math.isfinite(actual.value):
        return None
    if isinstance(feature, SizeFeature):
        return actual.value, feature.in_tolerance(actual.value)
    return actual.value, actual.value <= feature.tolerance + actual.bonus  # a CMM's zone value (bonus: MMC)


def inspection_values(
    store: StoreReader, program: ProgramConfig, parts: Sequence[PartRecord]
) -> dict[tuple[str, str], tuple[list[FeatureValue], int]]:
    """Per (feature, inspection source): the values of ``parts`` from the stored inspection
    results (first result per part; part-number order of ``parts``) and how many further
    re-measurements there were."""
    by_key = {p.key: p for p in parts}
    features = {f.name: f for f in program.feature_models()}
    found: dict[tuple[str, str], dict[str, tuple[float, bool]]] = {}
    again: dict[tuple[str, str], int] = {}
    for stored in store.inspection_results(part_keys=list(by_key)):
        if stored.part_key not in by_key:
            continue
        for actual in stored.result.actuals:
            owner = program.feature_source(actual.characteristic)
            if owner is None or owner[1] == PROBE_SOURCE or owner[0] not in features:
                continue
            judged = _judged(features[owner[0]], actual)
            if judged is None:
                continue
            values = found.setdefault(owner, {})
            if stored.part_key in values:
                again[owner] = again.get(owner, 0) + 1
            else:
                values[stored.part_key] = judged
    out: dict[tuple[str, str], tuple[list[FeatureValue], int]] = {}
    for owner, values in found.items():
        listed = [
            FeatureValue(p.machine, p.part_number, p.key, values[p.key][0], values[p.key][1]) for p in parts if p.key in values
        ]
        out[owner] = (listed, again.get(owner, 0))
    return out


def source_report(
    feature: Feature,
    source: str,
    how: MeasuredByConfig | None,
    values: Sequence[FeatureValue],
    order: Mapping[str, Any],
    *,
    index: str,
    required: float,
    remeasured: int = 0,
) -> SourceReport:
    """Capability (values in production order, ``order``: part key -> sort key) and verdict of one source."""
    ordered = sorted(values, key=lambda v: order[v.part_key])
    cap: CapabilityResult | None = None
    if isinstance(feature, AttributeFeature):
        verdict = attribute_verdict(len(values), sum(1 for v in values if not v.in_tolerance))
    else:
        if ordered:
            lower, upper = (feature.lower, feature.upper) if isinstance(feature, SizeFeature) else (None, feature.tolerance)
            cap = capability([v.value for v in ordered], lower, upper, CONFIDENCE)
        verdict = capability_verdict(cap, sum(1 for v in values if not v.in_tolerance), index, required)
    return SourceReport(
        source=source,
        system=how.system if how else None,
        resolution=how.resolution if how else None,
        repeatability=how.repeatability.model_dump(mode="json", exclude_none=True) if how and how.repeatability else None,
        values=tuple(values),
        capability=cap,
        verdict=verdict,
        remeasured=remeasured,
    )
