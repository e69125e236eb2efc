"""The tuner: a model-based search over a kernel's knobs, with no LLM.

The space is what `knobs.discover_knobs` finds in the current best kernel file: the op's declared
tunables, launch constants named like knobs, and autotune config lists. Points that the op's
`check_config` refuses (tiles that would spill, shared memory that does not fit) are never proposed,
nor is any point already tried, by this proposer or another, in this run or the one it resumes.

The strategy:

1. **Space-filling start.** The first few points are chosen greedily to be as far (in knobs
   changed) from every point tried so far as possible, so each knob's values are seen early and
   the model has main effects to learn from.
2. **Model-based search.** Then a Bayesian linear model of log time (one-hot main effects of each
   knob's value plus pairwise interactions, shrunk harder) is fitted to every measured point, and the
   untried point with the lowest optimistic prediction (mean − κ·sd) is proposed: it exploits what
   the measurements show and explores values whose effect is still uncertain. Failed points (wrong
   answers, crashes, timeouts) enter as "slow", which steers the search away from their region.
3. **Stop** when no untried valid point remains, or when even a very optimistic prediction
   (mean − 2.5·sd) of every untried point is no better than the incumbent.

Small spaces (at most `exhaustive_limit` valid points) are searched exhaustively, best-predicted
first. The score is the geometric mean over the timed shapes of each shape's median: one kernel
must serve every benchmark shape (a per-shape choice is fine when the kernel file dispatches on the
shape itself, as the built-in kernels' None values do).
"""

from __future__ import annotations

import itertools
import math
import random
from typing import TYPE_CHECKING, Any

from autokernel_ci.search.knobs import Knob, apply_point, describe_change, discover_knobs, read_point
from autokernel_ci.search.proposer import INCUMBENT_VERDICTS, Candidate, Experiment, Proposer

if TYPE_CHECKING:
    import numpy as np

    from autokernel_ci.results import EvalResult
    from autokernel_ci.tasks import KernelTask

# Beyond this many points the candidates are a random sample of the space (plus the incumbent's
# neighbours), so one proposal stays well under a second.
MAX_POOL = 4000
# Observation noise of log time, and the prior spread of main effects and interactions.
OBS_SD = 0.05
MAIN_SD = 0.5
PAIR_SD = 0.2
FAILED = ("fail", "crash", "timeout", "rejected")


def _running_device() -> str | None:
    """The name of the GPU this process would run on, or None without one."""
    try:
        import torch

        return torch.cuda.get_device_name() if torch.cuda.is_available() else None
    except Exception:  # no usable CUDA: the defaults are tuned
        return None


def _key(point: dict[str, Any]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in point.items()))


class TunerProposer(Proposer):
    name = "tuner"

    def __init__(self, *, seed: int = 0, exhaustive_limit: int = 16, initial_points: int | None = None,
                 kappa: float = 1.0, stop_kappa: float = 2.5, min_gain: float = 0.01,
                 device: str | None = "auto") -> None:
        self.seed = seed
        # The GPU whose CONFIGS entry is read and written in a kernel file that has one ("auto": the one
        # this process sees; None: the file's defaults).
        self.device = _running_device() if device == "auto" else device
        self.exhaustive_limit = exhaustive_limit
        self.initial_points = initial_points
        self.kappa = kappa
        self.stop_kappa = stop_kappa
        self.min_gain = min_gain
        self.done_reason = ""
        self._valid_cache: dict[tuple, list[dict[str, Any]]] = {}

    def params_of(self, task: KernelTask, source: str) -> dict[str, Any]:
        return read_point(source, discover_knobs(source, task.spec), self.device)

    def propose(self, task: KernelTask, best_source: str, best_result: EvalResult | None,
                history: list[Experiment]) -> Candidate | None:
        knobs = discover_knobs(best_source, task.spec)
        if not knobs:
            self.done_reason = "the kernel file has no knobs the tuner can set"
            return None
        current = read_point(best_source, knobs, self.device)
        names = [k.name for k in knobs]
        tried = {_key(current)}
        observations: list[tuple[dict[str, Any], float | None]] = []
        for row in history:
            point = {n: row.params[n] for n in names if n in row.params}
            if len(point) != len(names):
                continue  # a candidate from another proposer that changed the knobs themselves
            tried.add(_key(point))
            if row.verdict in FAILED or row.verdict in ("invalid",):
                observations.append((point, None))
            elif row.score_us and row.score_us > 0:
                observations.append((point, math.log(row.score_us)))
        incumbent = next((r for r in reversed(history) if r.verdict in INCUMBENT_VERDICTS and r.score_us), None)
        best_log = math.log(incumbent.score_us) if incumbent else None

        rng = random.Random(self.seed + len(history))
        space_size, pool = self._pool(task, knobs, current, tried, rng)
        if not pool:
            self.done_reason = f"all {space_size} valid points of the space have been tried"
            return None
        measured = [(p, y) for p, y in observations if y is not None]
        n_init = self.initial_points or min(max(4, len(knobs) + 2), 8)
        if space_size > self.exhaustive_limit and len(measured) < n_init:
            point = self._farthest(pool, tried, rng)
            how = "space-filling"
        else:
            mean, sd = self._fit_predict(knobs, observations, pool)
            if space_size > self.exhaustive_limit and best_log is not None:
                optimistic = mean - self.stop_kappa * sd
                if float(optimistic.min()) > best_log - math.log1p(self.min_gain):
                    self.done_reason = (f"no untried point is predicted to beat the best by {self.min_gain:.0%}, "
                                        f"even optimistically ({len(measured)} points measured)")
                    return None
            point = pool[int((mean - self.kappa * sd).argmin())]
            how = "exhaustive, model-ordered" if space_size <= self.exhaustive_limit else "model"
        source = apply_point(best_source, point, self.device)
        description = describe_change(knobs, current, point)
        if self.device and source != apply_point(best_source, point):
            description += f" (for {self.device})"  # written into the file's CONFIGS entry for this GPU
        return Candidate(source=source, description=description, params=dict(point), proposer=f"{self.name} ({how})")

    # -- the space -------------------------------------------------------------------------------

    def _pool(self, task: KernelTask, knobs: list[Knob], current: dict[str, Any], tried: set,
              rng: random.Random) -> tuple[int, list[dict[str, Any]]]:
        """(number of valid points, the untried valid points to choose from)."""
        total = math.prod(len(k.values) for k in knobs)
        if total <= MAX_POOL * 4:
            valid = self._valid_points(task, knobs)
            pool = [p for p in valid if _key(p) not in tried]
            if len(pool) > MAX_POOL:
                pool = rng.sample(pool, MAX_POOL)
            return len(valid), pool
        # Too many to enumerate: the incumbent's neighbours and a random sample.
        seen: set = set()
        pool = []
        neighbours = [{**current, k.name: v} for k in knobs for v in k.values if v != current[k.name]]
        randoms = ({k.name: rng.choice(k.values) for k in knobs} for _ in range(MAX_POOL * 3))
        for p in itertools.chain(neighbours, randoms):
            key = _key(p)
            if key in seen or key in tried or task.spec.check_config(_constants(p)) is not None:
                continue
            seen.add(key)
            pool.append(p)
            if len(pool) >= MAX_POOL:
                break
        return total, pool

    def _valid_points(self, task: KernelTask, knobs: list[Knob]) -> list[dict[str, Any]]:
        """Every point of the space that `check_config` accepts; the same space gives the same list,
        so it is computed once per run."""
        key = (task.spec.name, tuple((k.name, tuple(map(repr, k.values))) for k in knobs))
        if key not in self._valid_cache:
            names = [k.name for k in knobs]
            points = (dict(zip(names, values)) for values in itertools.product(*(k.values for k in knobs)))
            self._valid_cache[key] = [p for p in points if task.spec.check_config(_constants(p)) is None]
        return self._valid_cache[key]

    # -- choosing --------------------------------------------------------------------------------

    @staticmethod
    def _farthest(pool: list[dict[str, Any]], tried: set, rng: random.Random) -> dict[str, Any]:
        """The pool point whose nearest tried point differs in the most knobs (ties broken at random)."""
        import numpy as np

        names = sorted(pool[0])
        codes: dict[tuple[str, str], int] = {}
        code = lambda name, text: codes.setdefault((name, text), len(codes))
        pool_codes = np.array([[code(n, repr(p[n])) for n in names] for p in pool])
        tried_codes = np.array([[code(n, dict(key).get(n, "")) for n in names] for key in tried])
        nearest = (pool_codes[:, None, :] != tried_codes[None, :, :]).sum(axis=2).min(axis=1)
        best = np.flatnonzero(nearest == nearest.max())
        return pool[int(best[rng.randrange(len(best))])]

    def _fit_predict(self, knobs: list[Knob], observations: list[tuple[dict[str, Any], float | None]],
                     pool: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and sd of log time at each pool point.

        The model is Bayesian linear regression on one-hot features of every knob's value (prior sd
        MAIN_SD) and of every pair of knobs' values (prior sd PAIR_SD). Written in its kernel form it
        needs no features at all: two points that agree on m knobs share m main-effect features and
        m(m−1)/2 pair features, so their prior covariance is MAIN_SD²·m + PAIR_SD²·m(m−1)/2. The
        posterior is then a small Gaussian-process solve over the measured points.
        """
        import numpy as np

        measured = [y for _, y in observations if y is not None]
        if not measured:
            return np.zeros(len(pool)), np.ones(len(pool))
        penalty = max(measured) + math.log(2.0)
        ys = np.array([penalty if y is None else y for _, y in observations])
        center = float(np.median(ys))
        encode = _encoder(knobs)
        xs = encode([p for p, _ in observations])
        xp = encode(pool)
        k_xx = _covariance(xs, xs)
        k_px = _covariance(xp, xs)
        solve = np.linalg.solve(k_xx + OBS_SD**2 * np.eye(len(ys)), np.column_stack([ys - center, k_px.T]))
        mean = center + k_px @ solve[:, 0]
        prior = _covariance(xp[:1], xp[:1])[0, 0]
        var = prior - np.einsum("ij,ji->i", k_px, solve[:, 1:])
        return mean, np.sqrt(np.maximum(var, 0.0))


def _constants(point: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in point.items() if not k.startswith("autotune:")}


def _encoder(knobs: list[Knob]):
    """Points as integer codes, one column per knob (the index of its value; -1 for an unknown value)."""
    import numpy as np

    index = [{repr(v): i for i, v in enumerate(k.values)} for k in knobs]

    def encode(points: list[dict[str, Any]]):
        return np.array([[index[j].get(repr(p.get(k.name)), -1 - j) for j, k in enumerate(knobs)]
                         for p in points])

    return encode


def _covariance(a, b):
    """Prior covariance of log time between the points of `a` and of `b` (rows of knob codes)."""
    m = (a[:, None, :] == b[None, :, :]).sum(axis=2)
    return MAIN_SD**2 * m + PAIR_SD**2 * m * (m - 1) / 2
