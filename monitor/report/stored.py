"""A feature's capability and verdict from the store's measurement series: what ``monitor parts
--capability``, the dashboard's feature page and the report's probe source compute.

Apart from :mod:`monitor.report.data` (the batch report: parts, alerts, actions, inspection
sources), so that a capability loads numpy and the capability maths only: the CLI's capability
path imports this module and not the report's (~0.8k lines compiled at every start where no
bytecode is kept, with their source and disposition machinery)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import numpy as np

from monitor.detect.capability import CONFIDENCE, CapabilityResult, capability
from monitor.model import AttributeFeature, Feature, PositionFeature, SizeFeature
from monitor.report.verdict import Verdict, capability_verdict

if TYPE_CHECKING:
    from monitor.config import ProgramConfig
    from monitor.store import StoreReader

__all__ = ["capability_of_values", "feature_array", "stored_capability", "stored_values", "stored_verdict"]


def capability_of_values(feature: Feature, values: Any) -> CapabilityResult | None:
    """The one capability (:func:`monitor.detect.capability.capability`) of a feature's values in
    production order: sizes against their limits, true position against its zone; None for a
    go/no-go feature (a proportion, not an index) or no values."""
    if len(values) == 0 or isinstance(feature, AttributeFeature):
        return None
    lower, upper = (feature.lower, feature.upper) if isinstance(feature, SizeFeature) else (None, feature.tolerance)
    return capability(values, lower, upper, CONFIDENCE)


def stored_capability(store: StoreReader, machine: str, program: str, feature: Feature) -> CapabilityResult | None:
    """:func:`monitor.report.data.feature_capability` of every complete part of ``machine``/``program`` in the store,
    read from its measurement series as whole arrays (one range scan per signal, no part record
    decoded: 100,000 parts in a fraction of a second)."""
    return capability_of_values(feature, stored_values(store, machine, program, feature))


def stored_values(store: StoreReader, machine: str, program: str, feature: Feature) -> Any:
    """The feature's values (true position for a position) of every complete part of
    ``machine``/``program``, in production order, as an array (empty for a go/no-go feature)."""
    if isinstance(feature, AttributeFeature) or not feature.signals:
        return np.zeros(0)
    return feature_array(feature, _store_table(store.feature_values(machine, program, feature.signals), len(feature.signals)))


def feature_array(feature: Feature, rows: Sequence[Sequence[float]] | np.ndarray) -> Any:
    """The feature's value of each row of its signals' values (in ``feature.signals`` order, as
    :meth:`~monitor.store.StoreReader.feature_values` gives them, or such a table), as an array;
    elementwise, so the rows of later parts give the same floats whether read alone or with the
    earlier ones."""
    table = _float_table(rows)
    if table.size == 0 or isinstance(feature, AttributeFeature):
        return np.zeros(0)
    if isinstance(feature, SizeFeature):
        return table[:, 0]
    nominals = np.array([ref.nominal for _, ref in feature.axes])
    return 2.0 * np.sqrt(np.square(table - nominals).sum(axis=1))


def _float_table(rows: Sequence[Sequence[float]] | np.ndarray) -> Any:
    """``rows`` as a 2-D float array. The store's rows are tuples: one pass over their values
    (:func:`_packed`) instead of ``np.asarray``, which inspects each tuple as a sequence (0.30
    against 0.68 us per row of one value, 0.25 against 0.32 of two, the check that the rows are of
    one width included; ~300,000 rows for a 100,000-part capability). Same floats."""
    if isinstance(rows, np.ndarray) or not rows:
        return np.asarray(rows, dtype=float)
    widths = set(map(len, rows))
    if len(widths) != 1:  # not one width: numpy refuses it, as before
        return np.asarray(rows, dtype=float)
    return _packed(rows, widths.pop())


def _store_table(rows: Sequence[Sequence[float]], width: int) -> Any:
    """:func:`_float_table` of the store's rows, which are ``width`` values each
    (:meth:`~monitor.store.StoreReader.feature_values` selects one column per signal): their width
    is not counted row by row (a pass over ~300,000 rows for a 100,000-part capability); a first
    row of another width goes the general way. Same floats."""
    if not rows or len(rows[0]) != width:
        return _float_table(rows)
    return _packed(rows, width)


def _packed(rows: Sequence[Sequence[float]], width: int) -> Any:
    """Rows of ``width`` values each as a (rows, width) float array, in one pass over the values
    (one row of one value: itemgetter, a third less than flattening the rows)."""
    values = map(itemgetter(0), rows) if width == 1 else chain.from_iterable(rows)
    return np.fromiter(values, dtype=float, count=len(rows) * width).reshape(len(rows), width)


def stored_verdict(
    store: StoreReader, machine: str, program: ProgramConfig, feature: Feature
) -> tuple[CapabilityResult | None, int, Verdict]:
    """Capability, parts out of tolerance and the verdict by the program's ``report`` rule of the
    probe's values in the store: what ``monitor parts --capability`` prints and the report's probe
    source says."""
    values = stored_values(store, machine, program.program, feature)
    values = values[np.isfinite(values)]
    if isinstance(feature, SizeFeature):
        low = values < feature.lower if feature.lower is not None else np.zeros(values.shape, dtype=bool)
        high = values > feature.upper if feature.upper is not None else np.zeros(values.shape, dtype=bool)
        bad = int(np.count_nonzero(low | high))
    elif isinstance(feature, PositionFeature):
        bad = int(np.count_nonzero(values > feature.tolerance))
    else:
        bad = 0
    cap = capability_of_values(feature, values)
    return cap, bad, capability_verdict(cap, bad, program.report.required_index, program.report.required)
