"""Which shape is the feature's mean taking? Bayesian comparison of drift models on recent parts.

After every value, a family of regression models is fitted to the recent values of one channel
(deviations from nominal) and weighed by its evidence (marginal likelihood) times its prior:

* ``stable``: a constant level;
* ``linear``: a straight-line drift (wear);
* ``saturating``: an exponential approach to a plateau, ``a + b (1 - exp(-t / tau))`` for a grid of
  time constants (thermal growth levelling off, or a cold-start offset settling back);
* ``step``: one level shift at some part (an insert indexed, a fixture knocked);
* ``onset``: flat, then a straight line from some part on (wear that starts late).

Errors are AR(1) (part-to-part dependence is normal in machining): every model is fitted by
generalised least squares for each lag-1 correlation ``phi`` of a small grid, and ``phi`` is weighed
like a model, so a drift and autocorrelated scatter compete on evidence and the trend test is
autocorrelation-corrected by construction. Coefficients have Gaussian priors scaled from the
tolerance (a level near nominal at the batch start, drifts that matter on the scale of the band)
and the scatter an inverse-gamma prior from the tolerance and an assumed capability (or an earlier
batch of the same program), so a handful of parts already gives a usable scatter and a drift from
part 1 is judged against nominal. The conjugate normal-inverse-gamma algebra makes every evidence
closed-form; all models and all ``phi`` are solved together in a few numpy operations.

A recorded offset change is a *known step*: every model gets a level shift at that part, with
the expected size as its prior mean, so a correction is never taken for a drift. A step the data
clearly show (the ``step`` family dominating with the shift at least three parts back) starts a new
*regime*: the models are refitted from the step on.

``draws()`` samples the posterior predictive of future single parts (model, coefficients, scatter
and AR(1) noise) from fixed pools of random numbers, so results are deterministic; the breach
forecast (:mod:`monitor.detect.forecast`) is computed from them.

References: A. Zellner, *An Introduction to Bayesian Inference in Econometrics* (1971), ch. 3-4
(normal-inverse-gamma regression); R. E. Kass and A. E. Raftery, "Bayes factors", JASA 90 (1995)
773-795; S. J. Prais and C. B. Winsten (1954), GLS with AR(1) errors; J. A. Hoeting et al.,
"Bayesian model averaging: a tutorial", Statistical Science 14 (1999) 382-417.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

import numpy as np

from monitor.detect.base import check_finite, check_range, register
from monitor.errors import DetectionError

__all__ = [
    "FAMILIES",
    "PHIS",
    "TAUS",
    "DrawSource",
    "Draws",
    "KnownStep",
    "PosteriorArrays",
    "TrendFit",
    "TrendModel",
    "TrendResult",
    "noise_tables",
    "warm_up",
]

FAMILIES: tuple[str, ...] = ("stable", "linear", "saturating", "step", "onset")
"""Model families, in the order their posterior probabilities are reported."""

_FAMILY_PRIOR = {"stable": 0.55, "linear": 0.1, "saturating": 0.15, "step": 0.16, "onset": 0.04}
"""Prior probability of each family (spread evenly over its grid of time constants or parts): a
stable process is the common case, and real drifts are as often saturating as straight."""

_SLOPE_SD = 0.1
"""Prior sd of a drift's slope, in tolerance scales per part: the limit reached in 20 parts is a
one-sigma drift, one reached in 5 parts is unusual (that is a step or a warm-up)."""

TAUS: tuple[float, ...] = (2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0)
"""Time constants (parts) of the saturating models: warm-ups settle in a few parts, thermal growth
in tens; longer ones cannot be told from a straight line within a small batch."""

PHIS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.7, 0.85)
"""Lag-1 correlations the scatter is weighed over."""

_PHI_PRIOR = (0.7, 0.15, 0.09, 0.05, 0.01)
"""Default prior over :data:`PHIS`: independent scatter most likely, strong dependence possible."""

_DRAWS = 128
"""Posterior predictive samples behind every forecast."""
_SEARCH = 200
"""Longest horizon (parts) a forecast looks ahead for the first out-of-tolerance part."""

_POOL = np.random.default_rng(20260105)
_Z_PARAM = _POOL.standard_normal((3, _DRAWS, 2))
_Z_SIGMA = _POOL.standard_normal((3, _DRAWS))
_Z_NOISE = _POOL.standard_normal((3, _DRAWS, _SEARCH))
"""Fixed random pools (one set per axis of a position feature): forecasts repeat exactly."""


@dataclass(frozen=True, slots=True)
class KnownStep:
    """A level shift the process was told about (an offset change), before value number ``at``
    of the regime (1-based), with the expected shift in the channel's units if known."""

    at: int
    shift: float | None = None


@dataclass(frozen=True, slots=True)
class TrendFit:
    """What the model comparison says after the latest value (deviations from nominal, mm).

    ``model`` is the family with the largest posterior probability (``families`` holds all of
    them); ``drift_odds`` are the posterior odds of any drift family against ``stable``. ``level``
    and ``slope`` are the fitted mean and its change per part at the latest value under the chosen
    model (``slope_interval`` a 90% credible interval), ``plateau`` where a saturating drift levels
    off (None for other models), ``tau`` its time constant, ``step_parts_ago`` how many parts back a
    step happened. ``sigma`` is the scatter of single parts, ``sigma_innovation`` the part-to-part
    innovation of the AR(1) scatter, ``phi`` its posterior mean lag-1 correlation. ``n`` values
    were fitted (since ``regime_start``, the value count at which the current regime began).
    ``sigma_drift`` is the scatter of single parts around the heaviest drift model (whichever family
    is chosen): a stable model misfitted to a drift overstates the scatter, this does not.
    """

    n: int
    regime_start: int
    model: str
    model_probability: float
    families: dict[str, float]
    drift_odds: float
    level: float
    level_sd: float
    slope: float
    slope_interval: tuple[float, float]
    plateau: float | None
    tau: float | None
    step_parts_ago: int | None
    sigma: float
    sigma_innovation: float
    phi: float
    sigma_drift: float = math.nan

    @property
    def drifting(self) -> bool:
        return self.model != "stable"


@dataclass(frozen=True, slots=True)
class TrendResult:
    """The fit after one value (None before the first); ``alarm`` when the drift odds reach the
    detector's ``odds`` threshold; ``new_regime`` when this value confirmed a step and the models
    now start from it."""

    n: int
    fit: TrendFit | None
    alarm: bool
    new_regime: bool = False
    skipped: bool = False


@dataclass(frozen=True, slots=True, eq=False)
class Draws:
    """Posterior predictive samples of single future parts 1..H ahead of the latest value.

    ``mean`` (draws x H) is each sample's mean path (model and coefficients drawn, the AR(1)
    carry-over of the latest residual included), ``sd`` its scatter of single parts around it,
    ``paths`` one simulated sequence of single parts per sample (AR(1) noise from a fixed pool).
    """

    mean: np.ndarray
    sd: np.ndarray
    paths: np.ndarray


# --------------------------------------------------------------------------------- model grids
_PHI = np.asarray(PHIS)
_PHI2 = _PHI**2
_OMPHI2 = 1.0 - _PHI2
_OMP2 = (1.0 - _PHI) ** 2
_PMP2 = _PHI - _PHI2
_HALF_LOG_JAC = 0.5 * np.log(_OMPHI2)
_ONEPPHI2 = (1.0 + _PHI2)[:, None]
_PHI_COL = _PHI[:, None]


@dataclass(frozen=True, slots=True, eq=False)
class _Grid:
    """Shape columns of every model for a window of ``n`` values (cached; depends on n only)."""

    family: np.ndarray  # (G,) family index into FAMILIES
    param: np.ndarray  # (G,) tau, or the window index of a step / onset, nan otherwise
    f: np.ndarray  # (G, n) shape column (zeros for stable)
    future: np.ndarray  # (G, _SEARCH) shape column 1.. _SEARCH values past the window
    future_first: np.ndarray  # (G,) the shape column at the next value, contiguous
    prior_precision: np.ndarray  # (G,) 1 / prior sd^2 of the shape coefficient, sd in units of the scale
    stable_row: np.ndarray  # (G,) bool
    log_prior: np.ndarray  # (G,) log prior probability of the model
    slope_now: np.ndarray  # (G,) d f / d part at the latest value
    scc: np.ndarray  # (P, 1) c' Q c for every phi
    scf: np.ndarray  # (P, G) c' Q f
    sff: np.ndarray  # (P, G) f' Q f
    f_t: np.ndarray  # (n, G) f transposed, contiguous
    base_log_prior: np.ndarray  # (P, G) log prior of the model + Jacobian of the first value


def _positions(lo: int, hi: int, n: int) -> list[int]:
    """Grid of change points in [lo, hi): every part among the latest 12 (a recent step must be
    placed exactly to be told from an onset), every second or third part further back."""
    recent = max(lo, n - 12)
    stride = 2 if n <= 36 else 3
    return list(range(lo, recent, stride)) + list(range(recent, hi))


_PRIOR_CACHE = 4
"""Prior terms a channel keeps, newest last. While the window fills, every part has a new length (a
new entry, never used again); once it is full the length stays: a few entries serve every part, and a
channel's memory does not grow with the batch (about 10 KB an entry; 120 entries per channel, 500 MB
in a 50-machine cell, when every length was kept). The entries themselves are shared between channels
with the same settings (:func:`_shared_priors`)."""
_SHARED_PRIORS = 256
"""Prior terms kept for all channels together (about 30 KB each), least recently used forgotten first."""


_GRIDS = 256
"""Model grids kept (one per window length, and whether the window starts at the regime's start)."""


@lru_cache(maxsize=_GRIDS)
def _grid(n: int, at_start: bool) -> _Grid:
    """Model grid for ``n`` values; ``at_start``: the window starts where the regime started."""
    i = np.arange(n, dtype=float)
    fut = np.arange(n, n + _SEARCH, dtype=float)
    rows: list[tuple[int, float, np.ndarray, np.ndarray, float, float]] = []
    fam = {name: k for k, name in enumerate(FAMILIES)}
    rows.append((fam["stable"], math.nan, np.zeros(n), np.zeros(_SEARCH), 1.0, 0.0))
    rows.append((fam["linear"], math.nan, i, fut, _SLOPE_SD, 1.0))
    for tau in TAUS:
        # level = the value at the window start; the column is the approach to the plateau
        rows.append((fam["saturating"], tau, 1.0 - np.exp(-i / tau), 1.0 - np.exp(-fut / tau), 1.0, 1.0 / tau))
        if at_start:
            # the same shape with the level at the plateau (a cold start settling back to the setup):
            # equal column space, but the nominal prior then sits on the plateau, not the start
            rows.append((fam["saturating"], -tau, np.exp(-i / tau), np.exp(-fut / tau), 1.0, -1.0 / tau))
    for k in _positions(2, n - 1, n):
        rows.append((fam["step"], float(k), (i >= k).astype(float), np.ones(_SEARCH), 0.5, 0.0))
    for k in _positions(1, n - 4, n):
        rows.append((fam["onset"], float(k), np.maximum(0.0, i - k), fut - k, _SLOPE_SD, 1.0))
    family = np.array([r[0] for r in rows])
    counts = np.bincount(family, minlength=len(FAMILIES))
    prior = np.array([_FAMILY_PRIOR[FAMILIES[k]] for k in family]) / counts[family]
    f = np.stack([r[2] for r in rows])
    future = np.stack([r[3] for r in rows])
    # derivative of the shape column per part at the latest value (for the local slope)
    slope_now = np.empty(len(rows))
    for g, r in enumerate(rows):
        k, p = r[0], r[1]
        if FAMILIES[k] == "saturating":
            tau = abs(p)
            sign = 1.0 if p > 0 else -1.0
            slope_now[g] = sign * math.exp(-(n - 1) / tau) / tau
        elif FAMILIES[k] in ("linear", "onset"):
            slope_now[g] = 1.0
        else:
            slope_now[g] = 0.0
    sum_f, sum_f2 = f.sum(axis=1), (f * f).sum(axis=1)
    ends, ends2 = f[:, 0] + f[:, -1], f[:, 0] ** 2 + f[:, -1] ** 2
    lag = (f[:, 1:] * f[:, :-1]).sum(axis=1)
    phi, phi2 = _PHI[:, None], _PHI2[:, None]
    grid = _Grid(
        family=family,
        param=np.array([r[1] for r in rows]),
        f=f,
        future=future,
        future_first=np.ascontiguousarray(future[:, 0]),
        prior_precision=1.0 / np.array([r[4] for r in rows]) ** 2,
        stable_row=family == 0,
        log_prior=np.log(prior),
        slope_now=slope_now,
        scc=(n - 2 * (n - 1) * _PHI + (n - 2) * _PHI2)[:, None],
        scf=_OMP2[:, None] * sum_f + _PMP2[:, None] * ends,
        sff=(1 + phi2) * sum_f2 - phi2 * ends2 - 2 * phi * lag,
        f_t=np.ascontiguousarray(f.T),
        base_log_prior=np.log(prior)[None, :] + _HALF_LOG_JAC[:, None],
    )
    for a in (grid.f, grid.future, grid.stable_row, grid.prior_precision, grid.log_prior, grid.scf, grid.sff):
        a.setflags(write=False)
    return grid


def warm_up(windows: Iterable[int]) -> None:
    """Build now what trend models otherwise build on first use and then keep for the life of the
    process: the forecast's noise pools and carry-over tables, and the model grid of every window
    length that channels with these ``window`` settings go through (``n`` values from the regime's
    start while a window fills, then the full window). A daemon calls it at start, so that its
    memory does not creep up over its first hour as batches reach longer windows (about 6 MB for the
    default window of 60); a command or a test that fits a few models need not pay for it. At most
    as many grids as the cache keeps are built (windows up to about 125 parts are covered whole).
    :func:`monitor.detect.warm_up` (:func:`monitor.detect.forecast.warm_up`) also loads the compiled
    kernels."""
    lengths = sorted({int(check_range("window", w, 8, 400)) for w in windows})
    if not lengths:
        return
    _ar_noise()
    _carry_tables()
    room = _GRIDS - len(lengths)
    for n in range(1, min(lengths[-1], room) + 1):
        _grid(n, True)
    for n in lengths:
        _grid(n, False)


# --------------------------------------------------------------------------------- the detector
@register("trend")
class TrendModel:
    """Bayesian model comparison of a channel's recent values: stable, linear, saturating, step, onset.

    ``update(x)`` takes the next deviation from nominal and returns the fit (:class:`TrendFit`): the
    chosen model with its posterior probability, the posterior odds of a drift against a stable
    process, level, local slope, plateau, scatter and autocorrelation. ``alarm`` is set while the
    drift odds reach ``odds``. ``draws(h)`` samples the posterior predictive of the next ``h`` parts
    for the breach forecast; ``expect_step()`` records a known level shift before the next value.

    Parameters: ``scale`` > 0, the distance from nominal to the tolerance limit (mm): coefficient
    priors are fractions of it; ``window`` >= 8 values fitted; ``prior_sigma`` > 0, the scatter
    assumed before parts are seen (default ``scale / 4``: capability 1.33), held with
    ``prior_dof`` degrees of freedom; ``sigma`` (known scatter, fixes it); ``setup_sd`` > 0, the prior
    sd of the level at the batch start around nominal (default ``scale / 4``); ``odds`` > 0, the
    posterior odds of drift that raise ``alarm``; ``phi_prior``, weights over :data:`PHIS`.
    NaN or infinite values are skipped (state unchanged, ``skipped``).

    References: see the module docstring.

    >>> tr = TrendModel(scale=1.0, sigma=0.1)
    >>> data = [0.02 * i + 0.1 * math.sin(2.7 * i) for i in range(40)]   # +0.02 per part
    >>> first = next(r for r in map(tr.update, data) if r.alarm)
    >>> first.n, first.fit.model, round(first.fit.slope, 3)
    (18, 'linear', 0.021)
    """

    def __init__(
        self,
        scale: float = 1.0,
        window: int = 60,
        prior_sigma: float | None = None,
        prior_dof: float = 4.0,
        sigma: float | None = None,
        setup_sd: float | None = None,
        odds: float = 100.0,
        phi_prior: Sequence[float] | None = None,
    ) -> None:
        self.scale = check_range("scale", scale, 0.0, lo_open=True)
        self.window = int(check_range("window", window, 8, 400))
        self.prior_sigma = check_range("prior_sigma", prior_sigma, 0.0, lo_open=True) if prior_sigma is not None else None
        self.prior_dof = check_range("prior_dof", prior_dof, 0.5, 10_000)
        self.sigma = check_range("sigma", sigma, 0.0, lo_open=True) if sigma is not None else None
        self.setup_sd = check_range("setup_sd", setup_sd, 0.0, lo_open=True) if setup_sd is not None else None
        self.odds = check_range("odds", odds, 0.0, lo_open=True)
        prior = tuple(float(w) for w in (phi_prior if phi_prior is not None else _PHI_PRIOR))
        if len(prior) != len(PHIS) or not all(math.isfinite(w) and w > 0 for w in prior):
            raise DetectionError(f"phi_prior needs {len(PHIS)} positive weights (one per phi in {PHIS}); got {prior}")
        self.phi_prior = tuple(w / sum(prior) for w in prior)
        self._prior_cache: dict[tuple[int, bool, bool], _Priors] = {}
        self.reset()

    # ------------------------------------------------------------------------------ state
    def reset(self) -> None:
        self._values: deque[float] = deque(maxlen=self.window)
        self._count = 0  # values of the current regime
        self._regime = 0  # absolute value count at which the regime began
        self._n = 0  # values seen
        self._from_start = True  # regime is the batch start: the level prior is nominal
        self._known: list[KnownStep] = []
        self._pending_shift: float | None = None
        self._pending = False
        self._fit: TrendFit | None = None
        self._post: _Posterior | None = None

    @property
    def n(self) -> int:
        return self._n

    @property
    def at_batch_start(self) -> bool:
        """The current regime began with the batch's first value (no step, re-centring or window
        cut since): its level still has the nominal prior."""
        return self._from_start and self._regime == 0 and self._count == self._n

    @property
    def fit(self) -> TrendFit | None:
        """The latest fit (recomputed after a restore)."""
        return self._fit

    def expect_step(self, shift: float | None = None) -> None:
        """The next value follows a known level shift (an offset change of ``shift`` mm, if known)."""
        self._pending = True
        self._pending_shift = None if shift is None or not math.isfinite(shift) else float(shift)

    def start_regime(self, keep: int = 0, from_start: bool = False) -> None:
        """Start a regime with the latest ``keep`` values (after a step, a re-centring or a new batch).

        ``from_start``: the regime is the start of a batch, so its level has the nominal prior."""
        kept = list(self._values)[-keep:] if keep > 0 else []
        dropped = self._count - len(kept)
        self._values.clear()
        self._values.extend(kept)
        self._count = len(kept)
        self._regime = self._n - len(kept)
        self._from_start = from_start
        self._known = [KnownStep(s.at - dropped, s.shift) for s in self._known if s.at - dropped > 1]
        with np.errstate(all="ignore"):
            self._refit()

    # ------------------------------------------------------------------------------ update
    def update(self, x: float) -> TrendResult:
        if not check_finite(x):
            return TrendResult(self._n, self._fit, self._alarm(), skipped=True)
        if self._pending:
            self._known.append(KnownStep(self._count + 1, self._pending_shift))
            self._pending = False
            self._pending_shift = None
        self._values.append(float(x))
        self._count += 1
        self._n += 1
        with np.errstate(all="ignore"):
            self._refit()
            new_regime = self._maybe_new_regime()
        return TrendResult(self._n, self._fit, self._alarm(), new_regime)

    def _alarm(self) -> bool:
        return self._fit is not None and self._fit.drift_odds >= self.odds

    def _maybe_new_regime(self) -> bool:
        """A step the data clearly show, at least three values back, starts a new regime from it."""
        post, fit = self._post, self._fit
        if post is None or fit is None or fit.model != "step" or fit.drift_odds < self.odds:
            return False
        if fit.model_probability < 0.9 or fit.step_parts_ago is None or fit.step_parts_ago < 3:
            return False
        self.start_regime(keep=fit.step_parts_ago)
        return True

    def _prior_sigma(self) -> float:
        if self.sigma is not None:
            return self.sigma
        return self.prior_sigma if self.prior_sigma is not None else self.scale / 4.0

    def _refit(self) -> None:
        y = np.fromiter(self._values, dtype=float)
        n = y.size
        if n == 0:
            self._fit, self._post = None, None
            return
        k0 = self._count - n  # values of the regime before the window
        at_start = k0 == 0
        grid = _grid(n, at_start)
        known = [(s.at - 1 - k0, s.shift) for s in self._known if s.at - 1 - k0 > 0]
        nominal_prior = at_start and self._from_start
        key = (n, at_start, nominal_prior)
        pri = self._prior_cache.get(key)
        if pri is None:
            level_sd = (self.setup_sd if self.setup_sd is not None else self.scale / 4.0) if nominal_prior else 2 * self.scale
            pri = _shared_priors(n, at_start, self.scale, level_sd, self._prior_sigma(), self.prior_dof, self.phi_prior)
            self._prior_cache[key] = pri
            if len(self._prior_cache) > _PRIOR_CACHE:
                del self._prior_cache[next(iter(self._prior_cache))]
        post = _fit_models(y, grid, known, self.scale, pri, self.sigma)
        self._post = post
        self._fit = post.summary(self._count, self._regime)

    # ------------------------------------------------------------------------------ forecasting
    def predict_next(self) -> tuple[float, float] | None:
        """Mean and sd of the next single value under the posterior (None before two values)."""
        if self._post is None or self._n < 2:
            return None
        return self._post.predict_next()

    def draws(self, horizon: int, axis: int = 0) -> Draws:
        """Posterior predictive samples of single parts 1..``horizon`` ahead (``axis`` picks the pool)."""
        if self._post is None:
            raise DetectionError("no values yet: nothing to forecast")
        h = int(check_range("horizon", horizon, 1, _SEARCH))
        with np.errstate(all="ignore"):
            return self._post.draws(h, axis % _Z_NOISE.shape[0])

    def sampler(self, axis: int = 0) -> DrawSource:
        """The posterior predictive draws with their parts ahead computed on demand (:class:`DrawSource`);
        ``sampler(axis).columns(0, h)`` is ``draws(h, axis)``."""
        if self._post is None:
            raise DetectionError("no values yet: nothing to forecast")
        with np.errstate(all="ignore"):
            return self._post.sampler(axis % _Z_NOISE.shape[0])

    def posterior_arrays(self, axis: int = 0) -> PosteriorArrays:
        """The posterior as arrays for the compiled breach forecast (:mod:`monitor.detect.kernels`),
        which draws from them what ``sampler(axis)`` draws."""
        if self._post is None:
            raise DetectionError("no values yet: nothing to forecast")
        return self._post.arrays(axis % _Z_NOISE.shape[0])

    # ------------------------------------------------------------------------------ persistence
    def settings(self) -> dict[str, Any]:
        """The hyper-parameters a program file sets (not the priors carried over from earlier batches)."""
        return {"scale": self.scale, "window": self.window, "sigma": self.sigma, "setup_sd": self.setup_sd, "odds": self.odds}

    def state(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "window": self.window,
            "prior_sigma": self.prior_sigma,
            "prior_dof": self.prior_dof,
            "sigma": self.sigma,
            "setup_sd": self.setup_sd,
            "odds": self.odds,
            "phi_prior": list(self.phi_prior),
            "values": list(self._values),
            "count": self._count,
            "regime": self._regime,
            "n": self._n,
            "from_start": self._from_start,
            "known": [[s.at, s.shift] for s in self._known],
            "pending": self._pending,
            "pending_shift": self._pending_shift,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TrendModel:
        obj = cls(
            state["scale"],
            state["window"],
            state["prior_sigma"],
            state["prior_dof"],
            state["sigma"],
            state["setup_sd"],
            state["odds"],
            state["phi_prior"],
        )
        obj._values.extend(float(v) for v in state["values"])
        obj._count, obj._regime, obj._n = int(state["count"]), int(state["regime"]), int(state["n"])
        obj._from_start = bool(state["from_start"])
        obj._known = [KnownStep(int(a), None if s is None else float(s)) for a, s in state["known"]]
        obj._pending = bool(state["pending"])
        obj._pending_shift = None if state["pending_shift"] is None else float(state["pending_shift"])
        if obj._values:
            with np.errstate(all="ignore"):
                obj._refit()
        return obj

    def phi_posterior(self) -> tuple[float, ...]:
        """Posterior weights over :data:`PHIS` (the prior before any value): carried to the next batch."""
        if self._post is None:
            return self.phi_prior
        return tuple(float(v) for v in self._post.phi_weights)

    def sigma_posterior(self) -> tuple[float, float]:
        """(marginal scatter, degrees of freedom behind it): the scatter prior of the next batch."""
        if self._fit is None:
            return self._prior_sigma(), self.prior_dof
        return self._fit.sigma, self.prior_dof + self._fit.n


# --------------------------------------------------------------------------------- the algebra
class _Posterior:
    """Normal-inverse-gamma posteriors of every (phi, model) pair and their weights.

    Coefficient ``k`` of every pair is ``coef[k]`` (P x G); ``cov[(i, j)]`` is the posterior
    covariance of coefficients i and j divided by sigma^2 (i <= j).
    """

    def __init__(
        self,
        y: np.ndarray,
        grid: _Grid,
        known: list[tuple[int, float | None]],
        weights: np.ndarray,
        coef: list[np.ndarray],
        cov: dict[tuple[int, int], np.ndarray],
        a: float,
        b: np.ndarray,
        known_sigma: float | None,
        spread: np.ndarray | None = None,
        stats: np.ndarray | None = None,
    ) -> None:
        self.y, self.grid, self.known = y, grid, known
        self.weights, self.coef, self.cov = weights, coef, cov
        self.a, self.b, self.known_sigma = a, b, known_sigma
        self.spread = spread
        """The next value's variance per unit innovation variance, when it does not depend on the
        values (no recorded step in the window: it comes with the prior terms)."""
        self.stats = stats
        """What the compiled fit computed of the summary and the next value (:func:`monitor.detect.kernels.fit`),
        None when the posterior was computed with numpy (a window with a recorded step)."""

    @cached_property
    def phi_weights(self) -> np.ndarray:
        return np.asarray(self.weights.sum(axis=1))

    @cached_property
    def fitted_last(self) -> np.ndarray:
        """The fitted mean at the latest value under every (phi, model) pair."""
        n = self.y.size
        fitted = self.coef[0] + self.coef[1] * self.grid.f[None, :, -1]
        for j, (at, _) in enumerate(self.known):
            if n - 1 >= at:
                fitted = fitted + self.coef[2 + j]
        return np.asarray(fitted)

    @cached_property
    def resid_last(self) -> np.ndarray:
        return np.asarray(self.y[-1] - self.fitted_last)

    def _s2(self) -> np.ndarray:
        """Posterior mean innovation variance of every pair (P x G)."""
        if self.known_sigma is not None:
            return np.broadcast_to(self.known_sigma**2 * (1 - _PHI[:, None] ** 2), self.weights.shape)
        return self.b / max(self.a - 1.0, 0.5)

    def _beta(self, p: np.ndarray, g: np.ndarray) -> np.ndarray:
        return np.stack([c[p, g] for c in self.coef], axis=-1)

    def _covariance(self, p: np.ndarray, g: np.ndarray) -> np.ndarray:
        k = len(self.coef)
        out = np.empty((*np.shape(p), k, k))
        for (i, j), v in self.cov.items():
            out[..., i, j] = out[..., j, i] = v[p, g]
        return out

    def summary(self, count: int, regime: int) -> TrendFit:
        w = self.weights
        grid = self.grid
        n_models = w.shape[1]
        st = self.stats
        if st is not None:  # chosen by the compiled fit, as below
            stats = st.tolist()  # Python floats at once, not numpy scalars one by one
            fam_w: list[float] = stats[:5]
            best_fam = max(range(len(FAMILIES)), key=fam_w.__getitem__)
            p, g = divmod(int(stats[5]), n_models)
            pd_, gd = divmod(int(stats[6]), n_models)
            phi = stats[7]
        else:
            fam = np.bincount(grid.family, weights=w.sum(axis=0), minlength=len(FAMILIES)).astype(float)
            fam_w = (fam / fam.sum()).tolist()
            best_fam = int(np.argmax(fam_w))
            # the representative model: the heaviest (phi, model) pair of the chosen family
            p, g = divmod(int(np.where(grid.family == best_fam, w, -1.0).argmax()), n_models)
            # and the heaviest drift model (for the scatter around it)
            pd_, gd = divmod(int(np.where(grid.family != 0, w, -1.0).argmax()), n_models)
            phi = float(self.phi_weights @ _PHI)
        stable = fam_w[0]
        odds = (1.0 - stable) / max(stable, 1e-300)
        s2 = (
            float(self.known_sigma**2 * _OMPHI2[p])
            if self.known_sigma is not None
            else float(self.b[p, g]) / max(self.a - 1.0, 0.5)
        )
        n = self.y.size
        b0, b1 = float(self.coef[0][p, g]), float(self.coef[1][p, g])
        cov = self.cov
        v00, v01, v11 = float(cov[(0, 0)][p, g]) * s2, float(cov[(0, 1)][p, g]) * s2, float(cov[(1, 1)][p, g]) * s2
        f_last = float(grid.f[g, -1])
        level = b0 + b1 * f_last if st is not None else float(self.fitted_last[p, g])
        var_level = v00 + 2 * f_last * v01 + f_last * f_last * v11
        if self.known:
            x = np.zeros(len(self.coef))
            x[0], x[1] = 1.0, f_last
            for j, (at, _) in enumerate(self.known):
                x[2 + j] = 1.0 if n - 1 >= at else 0.0
            pi, gi = np.array(p), np.array(g)
            var_level = float(x @ (self._covariance(pi, gi) * s2) @ x)
        ds = float(grid.slope_now[g])
        slope = b1 * ds
        slope_sd = abs(ds) * math.sqrt(max(v11, 0.0))
        family = FAMILIES[best_fam]
        param = float(grid.param[g])
        plateau = tau = None
        step_ago = None
        if family == "saturating":
            tau = abs(param)
            # growth (param > 0): plateau = level at start + b; settling (param < 0): plateau = level
            plateau = b0 + b1 if param > 0 else b0
            for j, (at, _) in enumerate(self.known):
                plateau += float(self.coef[2 + j][p, g]) if n - 1 >= at else 0.0
        elif family == "step":
            step_ago = n - int(param)
        sigma_e = math.sqrt(s2)
        # scatter around the heaviest drift model (not inflated by a drift the stable model misfits)
        s2d = (
            float(self.known_sigma**2 * _OMPHI2[pd_])
            if self.known_sigma is not None
            else float(self.b[pd_, gd]) / max(self.a - 1.0, 0.5)
        )
        sigma_drift = math.sqrt(s2d / _OMPHI2[pd_])
        return TrendFit(
            n=n,
            regime_start=regime,
            model=family,
            model_probability=float(fam_w[best_fam]),
            families=dict(zip(FAMILIES, fam_w, strict=True)),
            drift_odds=min(odds, 1e12),
            level=level,
            level_sd=math.sqrt(max(var_level, 0.0)),
            slope=slope,
            slope_interval=(slope - 1.645 * slope_sd, slope + 1.645 * slope_sd),
            plateau=plateau,
            tau=tau,
            step_parts_ago=step_ago,
            sigma=sigma_e / math.sqrt(1.0 - PHIS[p] ** 2),
            sigma_innovation=sigma_e,
            phi=phi,
            sigma_drift=sigma_drift,
        )

    def predict_next(self) -> tuple[float, float]:
        """Mean and sd of the next value, moment-matched over the (phi, model) mixture."""
        if self.stats is not None:  # computed by the compiled fit
            return float(self.stats[8]), math.sqrt(max(float(self.stats[9]), 0.0))
        w = self.weights
        f = self.grid.future[:, 0]
        mean = self.coef[0] + self.coef[1] * f + _PHI_COL * self.resid_last
        for j in range(len(self.known)):
            mean = mean + self.coef[2 + j]
        spread = self.spread if self.spread is not None else _next_spread(self.cov, f)
        var = self._s2() * spread
        m = float((w * mean).sum())
        v = float((w * (var + (mean - m) ** 2)).sum())
        return m, math.sqrt(max(v, 0.0))

    def arrays(self, pool: int) -> PosteriorArrays:
        """What :meth:`sampler` draws from, as the compiled forecast takes it (every array of one kind
        equally read-only, so the kernel is compiled for one type of each)."""
        known = self.known
        if not known:
            steps, step_on = _NO_STEPS, _NO_STEPS_ON
            v00, v01, v11 = self.cov[(0, 0)], self.cov[(0, 1)], self.cov[(1, 1)]
        else:
            n = self.y.size
            steps = np.ascontiguousarray(np.stack(self.coef[2:]))
            step_on = np.array([1.0 if n - 1 >= at else 0.0 for at, _ in known])
            v00, v01, v11 = (np.ascontiguousarray(self.cov[key]) for key in ((0, 0), (0, 1), (1, 1)))
            for a in (steps, step_on, v00, v01, v11):
                a.setflags(write=False)
        c0, c1 = np.ascontiguousarray(self.coef[0]), np.ascontiguousarray(self.coef[1])
        known_sigma = math.nan if self.known_sigma is None else self.known_sigma
        grid = self.grid
        return PosteriorArrays(
            (self.weights, np.ascontiguousarray(self.b), c0, c1, v00, v01, v11, steps, step_on, grid.f_t[-1], grid.future),
            (self.a, known_sigma, float(self.y[-1]), float(pool)),
        )

    def draws(self, horizon: int, pool: int) -> Draws:
        """Samples of the posterior predictive (systematic resampling of (phi, model) by weight)."""
        return self.sampler(pool).columns(0, horizon)

    def sampler(self, pool: int) -> DrawSource:
        """The posterior predictive's draws, their parts ahead computed on demand (:class:`DrawSource`)."""
        w = self.weights.ravel()
        cum = np.cumsum(w)
        u = (np.arange(_DRAWS) + 0.5) / _DRAWS * cum[-1]
        idx = np.minimum(np.searchsorted(cum, u), w.size - 1)
        p_idx, g_idx = np.divmod(idx, self.weights.shape[1])
        phi = _PHI[p_idx]
        # scatter: sigma^2 = b / Gamma(a, 1), the gamma quantile by Wilson-Hilferty
        if self.known_sigma is not None:
            s2 = self.known_sigma**2 * (1 - phi**2)
        else:
            nu = 2.0 * self.a
            zs = _Z_SIGMA[pool]
            chi = nu * np.maximum(1.0 - 2.0 / (9 * nu) + zs * math.sqrt(2.0 / (9 * nu)), 0.05) ** 3
            s2 = 2.0 * self.b[p_idx, g_idx] / chi
        beta = self._beta(p_idx, g_idx)  # (D, p)
        v00 = self.cov[(0, 0)][p_idx, g_idx] * s2
        v01 = self.cov[(0, 1)][p_idx, g_idx] * s2
        v11 = self.cov[(1, 1)][p_idx, g_idx] * s2
        # Cholesky of the 2x2 (level, shape) block; known-step coefficients at their means
        c00 = np.sqrt(np.maximum(v00, 0.0))
        c10 = np.where(c00 > 0, v01 / np.where(c00 > 0, c00, 1.0), 0.0)
        c11 = np.sqrt(np.maximum(v11 - c10**2, 0.0))
        z = _Z_PARAM[pool]
        beta[:, 0] += c00 * z[:, 0]
        beta[:, 1] += c10 * z[:, 0] + c11 * z[:, 1]
        n = self.y.size
        fitted_last = beta[:, 0] + beta[:, 1] * self.grid.f[g_idx, -1]
        steps = []
        for j, (at, _) in enumerate(self.known):
            fitted_last = fitted_last + beta[:, 2 + j] * (1.0 if n - 1 >= at else 0.0)
            steps.append(beta[:, 2 + j : 3 + j])
        resid = self.y[-1] - fitted_last
        return DrawSource(
            self.grid.future, pool, p_idx, g_idx, beta[:, 0:1], beta[:, 1:2], tuple(steps), resid[:, None], np.sqrt(s2)[:, None]
        )


_NO_STEPS = np.zeros((0, 1, 1))
_NO_STEPS_ON = np.zeros(0)
_NO_STEPS.setflags(write=False)
_NO_STEPS_ON.setflags(write=False)


@dataclass(frozen=True, slots=True, eq=False)
class PosteriorArrays:
    """One channel's posterior as the compiled breach forecast takes it (:mod:`monitor.detect.kernels`).

    ``arrays``: the (phi, model) weights, the inverse-gamma ``b``, the coefficient means (level,
    shape) and covariances / sigma^2 (00, 01, 11), all P x G; the recorded steps' coefficients (nk x
    P x G) and whether each is in effect at the latest value (nk); the shape columns at the latest
    value (G) and past the window (G x S). ``scalars`` = (inverse-gamma ``a``, known sigma or NaN,
    latest value, noise pool)."""

    arrays: tuple[np.ndarray, ...]
    scalars: tuple[float, float, float, float]


@dataclass(frozen=True, slots=True, eq=False)
class DrawSource:
    """The posterior predictive draws of one channel (model, coefficients and scatter drawn), whose
    single parts ahead are computed on demand: :meth:`columns` gives parts ``start + 1 .. stop``
    ahead. Every part ahead is computed on its own (elementwise in the draws), so the columns of a
    slice are the same doubles as those of the whole horizon; a forecast can stop once the parts it
    has seen decide it (:func:`monitor.detect.forecast.breach_forecast_sampled`)."""

    future: np.ndarray  # (G, _SEARCH) the grid's shape columns past the window
    pool: int
    p_idx: np.ndarray  # (D,) phi of each draw
    g_idx: np.ndarray  # (D,) model of each draw
    b0: np.ndarray  # (D, 1) level
    b1: np.ndarray  # (D, 1) shape coefficient
    steps: tuple[np.ndarray, ...]  # (D, 1) each known step's coefficient
    resid: np.ndarray  # (D, 1) the latest value's residual under each draw
    sigma: np.ndarray  # (D, 1) the draw's innovation sd

    @property
    def horizon(self) -> int:
        return _SEARCH

    def columns(self, start: int, stop: int) -> Draws:
        """Draws of parts ``start + 1 .. stop`` ahead (0 <= start < stop <= the longest horizon)."""
        # in place, each operation on the same operands as ``b0 + b1 * future (+ steps) + carry *
        # resid``, ``sigma * sd``, ``mean + sigma * noise``
        mean_path = self.future[self.g_idx, start:stop]
        mean_path *= self.b1
        mean_path += self.b0
        for step in self.steps:
            mean_path += step
        carry_t, sd_t = _carry_tables()
        carry = carry_t[self.p_idx, start:stop]
        carry *= self.resid
        mean_path += carry
        sd = sd_t[self.p_idx, start:stop]
        sd *= self.sigma
        paths = _ar_noise()[self.pool, self.p_idx, np.arange(_DRAWS), start:stop]
        paths *= self.sigma
        paths += mean_path
        return Draws(mean_path, sd, paths)


def _next_spread(cov: dict[tuple[int, int], np.ndarray], f: np.ndarray) -> np.ndarray:
    """Variance of the next value per unit innovation variance: 1 + the coefficients' share."""
    return np.asarray(1.0 + cov[(0, 0)] + f * (f * cov[(1, 1)] + 2 * cov[(0, 1)]))


@lru_cache(maxsize=1)
def _carry_tables() -> tuple[np.ndarray, np.ndarray]:
    """Per phi and parts ahead h: ``phi^h`` (how much of the latest residual carries over) and the
    sd of the AR(1) sum of h innovations of unit sd, ``sqrt((1 - phi^2h) / (1 - phi^2))``."""
    h = np.arange(1, _SEARCH + 1, dtype=float)
    carry = _PHI[:, None] ** h[None, :]
    sd = np.sqrt((1.0 - carry**2) / _OMPHI2[:, None])
    carry.setflags(write=False)
    sd.setflags(write=False)
    return carry, sd


def noise_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The tables every forecast draws from: ``phi^h`` and the AR(1) sd per phi and part ahead (P x
    S), the AR(1) noise pools (pool x P x D x S), and the pools for the scatter (pool x D) and the
    coefficients (pool x D x 2)."""
    carry, sd = _carry_tables()
    return carry, sd, _ar_noise(), _Z_SIGMA, _Z_PARAM


@lru_cache(maxsize=1)
def _ar_noise() -> np.ndarray:
    """The noise pools filtered to unit-innovation AR(1) sequences for every phi: (pool, P, D, S).

    The recursion ``y[t] = x[t] + phi y[t-1]`` from ``y[0] = x[0]``: the same doubles as scipy's
    ``lfilter([1], [1, -phi], x)`` (tests/detect/test_fast_paths.py), without importing
    scipy.signal, which loads scipy.stats and more (0.45 s of CPU in every process that fits a trend)."""
    out = np.empty((_Z_NOISE.shape[0], len(PHIS), _DRAWS, _SEARCH))
    for k, phi in enumerate(PHIS):
        y = out[:, k]
        y[..., 0] = _Z_NOISE[..., 0]
        for t in range(1, _SEARCH):
            np.multiply(y[..., t - 1], phi, out=y[..., t])
            y[..., t] += _Z_NOISE[..., t]
    out.setflags(write=False)
    return out


@dataclass(frozen=True, slots=True, eq=False)
class _Priors:
    """The prior terms of one channel on one grid (constant while its settings are)."""

    s_e2: np.ndarray  # (P, 1) prior innovation variance
    pc: np.ndarray  # (P, 1) prior precision of the level, in units of 1/sigma^2
    pf: np.ndarray  # (P, G) same for the shape coefficient
    a11: np.ndarray  # (P, G) pf + f'Qf
    log_pcpf: np.ndarray  # (P, G)
    b0: np.ndarray  # (P, 1)
    a0: float
    log_b0_term: np.ndarray  # (P, 1) a0 log b0
    log_prior: np.ndarray  # (P, G) model and phi prior, Jacobian included
    # the posterior's parts that do not depend on the values (a window without a known step):
    a00: np.ndarray  # (P, 1) pc + c'Qc
    inv: np.ndarray  # (P, G) 1 / det of the (level, shape) precision
    cov: dict[tuple[int, int], np.ndarray]  # posterior covariance / sigma^2
    half_logdet: np.ndarray  # (P, G) (log|Vn| - log|V0|) / 2
    ml_base: np.ndarray  # (P, G) half_logdet + a0 log b0
    spread: np.ndarray  # (P, G) the next value's variance per unit innovation variance
    # the same terms as the compiled fit takes them (kernels.fit): two arguments instead of ten, each
    # an argument numba types and unboxes on every call (the fields above are views into them)
    fit_pg: np.ndarray  # (7, P, G) a11, inv, ml_base, half_logdet, log_prior, spread, and the grid's scf
    fit_p: np.ndarray  # (3, P) a00, b0, s_e2


@lru_cache(maxsize=_SHARED_PRIORS)
def _shared_priors(
    n: int, at_start: bool, scale: float, level_sd: float, sigma: float, prior_dof: float, phi_prior: tuple[float, ...]
) -> _Priors:
    """The prior terms for these settings, one object for every channel that has them: the same
    feature on every machine of a cell, both axes of a position (their windows fill in step)."""
    return _priors(_grid(n, at_start), scale, level_sd, sigma, prior_dof, np.log(np.asarray(phi_prior)))


def _priors(grid: _Grid, scale: float, level_sd: float, sigma: float, prior_dof: float, log_phi_prior: np.ndarray) -> _Priors:
    n_phi, n_models = grid.scf.shape
    fit_pg = np.empty((7, n_phi, n_models))
    fit_p = np.empty((3, n_phi))
    s_e2 = sigma**2 * _OMPHI2[:, None]
    pc = s_e2 / level_sd**2
    pf = np.where(grid.stable_row, 1.0, s_e2 * grid.prior_precision / scale**2)
    a0 = prior_dof / 2.0
    b0 = prior_dof * s_e2 / 2.0
    a11 = pf + grid.sff
    log_pcpf = np.log(pc * pf)
    log_b0_term = a0 * np.log(b0)
    scf = grid.scf
    a00 = pc + grid.scc
    inv = 1.0 / (a00 * a11 - scf * scf)
    half_logdet = 0.5 * (log_pcpf + np.log(inv))  # log|Vn| - log|V0|
    cov = {(0, 0): a11 * inv, (0, 1): -scf * inv, (1, 1): a00 * inv}
    for a in cov.values():
        a.setflags(write=False)
    terms = (a11, inv, half_logdet + log_b0_term, half_logdet, grid.base_log_prior + log_phi_prior[:, None])
    for k, term in enumerate((*terms, _next_spread(cov, grid.future[:, 0]), scf)):
        fit_pg[k] = term
    for k, term in enumerate((a00, b0, s_e2)):
        fit_p[k] = term[:, 0]
    fit_pg.setflags(write=False)
    fit_p.setflags(write=False)
    return _Priors(
        s_e2=s_e2,
        pc=pc,
        pf=pf,
        a11=fit_pg[0],
        log_pcpf=log_pcpf,
        b0=b0,
        a0=a0,
        log_b0_term=log_b0_term,
        log_prior=fit_pg[4],
        a00=a00,
        inv=fit_pg[1],
        cov=cov,
        half_logdet=fit_pg[3],
        ml_base=fit_pg[2],
        spread=fit_pg[5],
        fit_pg=fit_pg,
        fit_p=fit_p,
    )


def _fit_models(
    y: np.ndarray,
    grid: _Grid,
    known: list[tuple[int, float | None]],
    scale: float,
    pri: _Priors,
    known_sigma: float | None,
    compiled: bool = True,
) -> _Posterior:
    """Posterior of every (phi, model): conjugate normal-inverse-gamma GLS with AR(1) errors.

    A window without a recorded step (nearly every part) is fitted by the compiled
    :func:`monitor.detect.kernels.fit`, which also computes what the summary and the next value's
    prediction need; ``compiled=False`` gives the numpy form below, its reference
    (``tests/detect/test_kernels.py``) and what windows with a recorded step use.

    With the Prais-Winsten transform T(phi), the GLS normal equations need ``X' Q X`` and
    ``X' Q y`` with ``Q = T'T`` tridiagonal (diagonal 1, 1+phi^2, ..., 1+phi^2, 1; off-diagonal
    -phi), so the sums over the window come from cached per-model sums and one matrix product.
    """
    n = y.size
    if not known and compiled:
        from monitor.detect.kernels import fit  # numba's import (0.15 s of CPU) on the first fit only

        sigma = math.nan if known_sigma is None else known_sigma
        out, stats = fit(y, grid.f_t, grid.future_first, grid.family, pri.fit_pg, pri.fit_p, _PHI, pri.a0, sigma)
        w, m_c, m_f, b_n = out
        return _Posterior(y, grid, known, w, [m_c, m_f], pri.cov, pri.a0 + n / 2.0, b_n, known_sigma, pri.spread, stats)
    # Q y for every phi: (P, n)
    qy = _ONEPPHI2 * y
    qy[:, 0] -= _PHI2 * y[0]
    qy[:, -1] -= _PHI2 * y[-1]
    qy[:, 1:] -= _PHI_COL * y[:-1]
    qy[:, :-1] -= _PHI_COL * y[1:]
    syy = (qy @ y)[:, None]  # (P, 1)
    scy = qy.sum(axis=1)[:, None]  # (P, 1)
    sfy = qy @ grid.f_t  # (P, G)
    scf = grid.scf
    a_n = pri.a0 + n / 2.0
    coef: list[np.ndarray]
    cov: dict[tuple[int, int], np.ndarray]
    if not known:
        a00, a11, inv = pri.a00, pri.a11, pri.inv
        m_c = (a11 * scy - scf * sfy) * inv
        m_f = (a00 * sfy - scf * scy) * inv
        resid = syy - (scy * m_c + sfy * m_f)
        coef = [m_c, m_f]
        cov = pri.cov  # shared, read-only: it does not depend on the values
        half_logdet, ml_base = pri.half_logdet, pri.ml_base
    else:
        coef, cov, quad, logdet_ratio, prior_quad = _with_known_steps(
            y, grid, known, scale, pri.s_e2, pri.pc, pri.pf, grid.scc, scf, grid.sff, scy, sfy
        )
        resid = syy + prior_quad - quad
        half_logdet = 0.5 * logdet_ratio
        ml_base = half_logdet + pri.log_b0_term
    if known_sigma is not None:
        # sigma known: Gaussian evidence, no inverse-gamma
        log_ml = half_logdet - resid / (2 * pri.s_e2) - 0.5 * n * np.log(pri.s_e2)
        b_n = pri.s_e2 * a_n * np.ones_like(resid)
    else:
        b_n = pri.b0 + 0.5 * np.maximum(resid, 1e-300)
        log_ml = ml_base - a_n * np.log(b_n)
    logw = log_ml + pri.log_prior
    w = np.exp(logw - np.max(logw))
    total = w.sum()
    if not np.isfinite(total) or total <= 0:
        w = np.full(logw.shape, 1.0 / logw.size)
    else:
        w /= total
    return _Posterior(y, grid, known, w, coef, cov, a_n, b_n, known_sigma, None if known else pri.spread)


_KNOWN_SHIFT_SD = 0.1
"""Prior sd of a recorded step of known size, as a share of that size: an offset written on the
controller moves the parts by about its change (a wear offset through the cut, not exactly).
A step of unknown size (a tool changed) keeps a prior sd of one scale around no step."""
_KNOWN_SHIFT_FLOOR = 0.1
"""...and at least this share of the scale (the controller's resolution, the part's own scatter):
before, a known size had the unknown size's prior (one scale), so the first part after an applied
offset set the level on its own and a noisy one kept the old level and its breach forecast
(bench/forecast_after_step.py)."""


def _with_known_steps(
    y: np.ndarray,
    grid: _Grid,
    known: list[tuple[int, float | None]],
    scale: float,
    s_e2: np.ndarray,
    pc: np.ndarray,
    pf: np.ndarray,
    scc: np.ndarray,
    scf: np.ndarray,
    sff: np.ndarray,
    scy: np.ndarray,
    sfy: np.ndarray,
) -> tuple[list[np.ndarray], dict[tuple[int, int], np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """The general (level, shape, known steps) solve, for windows that hold a recorded step."""
    n, nk = y.size, len(known)
    n_phi, n_models = sfy.shape
    p = 2 + nk
    steps = np.zeros((n, nk))
    m0k = np.zeros(nk)
    sdk = np.full(nk, scale)
    for j, (at, shift) in enumerate(known):
        steps[at:, j] = 1.0
        m0k[j] = 0.0 if shift is None else shift
        if shift is not None:
            sdk[j] = max(_KNOWN_SHIFT_SD * abs(shift), _KNOWN_SHIFT_FLOOR * scale)
    qk = _q_apply(steps, _PHI)  # (P, n, nk)
    skk = np.einsum("pnj,nk->pjk", qk, steps)
    sck = qk.sum(axis=1)
    sfk = np.einsum("pnj,gn->pgj", qk, grid.f)
    sky = np.einsum("pnj,n->pj", qk, y)
    pk = s_e2 / sdk[None, :] ** 2  # (P, nk): each step's prior precision around its expected shift
    a = np.zeros((n_phi, n_models, p, p))
    a[..., 0, 0] = pc + scc
    a[..., 0, 1] = a[..., 1, 0] = scf
    a[..., 1, 1] = pf + sff
    a[..., 0, 2:] = a[..., 2:, 0] = sck[:, None, :]
    a[..., 1, 2:] = sfk
    a[..., 2:, 1] = sfk
    a[..., 2:, 2:] = skk[:, None, :, :] + np.eye(nk)[None, None] * pk[:, None, None, :]
    bvec = np.zeros((n_phi, n_models, p))
    bvec[..., 0] = scy
    bvec[..., 1] = sfy
    bvec[..., 2:] = (sky + pk * m0k[None, :])[:, None, :]
    inv = np.linalg.inv(a)
    mean = np.einsum("pgij,pgj->pgi", inv, bvec)
    quad = np.einsum("pgi,pgi->pg", bvec, mean)
    _, logdet_a = np.linalg.slogdet(a)
    logdet_ratio = np.log(pc) + np.log(pf) + np.log(pk).sum(axis=1, keepdims=True) - logdet_a
    prior_quad = np.broadcast_to((pk * m0k[None, :] ** 2).sum(axis=1, keepdims=True), (n_phi, n_models))
    coef = [mean[..., k] for k in range(p)]
    cov = {(i, j): inv[..., i, j] for i in range(p) for j in range(i, p)}
    return coef, cov, quad, logdet_ratio, prior_quad


def _q_apply(x: np.ndarray, phis: np.ndarray) -> np.ndarray:
    """``Q(phi) x`` for every phi: (P, n, k) from (n, k)."""
    phi = phis[:, None, None]
    out = (1.0 + phi**2) * x[None]
    out[:, 0] -= phis[:, None] ** 2 * x[0]
    out[:, -1] -= phis[:, None] ** 2 * x[-1]
    out[:, 1:] -= phi * x[None, :-1]
    out[:, :-1] -= phi * x[None, 1:]
    return np.asarray(out)
