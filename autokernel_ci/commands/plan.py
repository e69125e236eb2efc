"""`autokernel-ci plan`: split the kernels into shards of about equal expected gain, as an Actions matrix.

Each shard is one job of a GitHub Actions matrix: it runs `autokernel-ci optimize --shard I --shards N`
(which recomputes the same split, so the matrix only has to carry the shard's number) and uploads its
results folder; a final job runs `autokernel-ci merge` over all of them and opens one pull request.

What a task is expected to gain, in order of preference:

1. a profile plan (`autokernel-ci profile --json`, or the `plan.json` of `optimize --model`): the
   end-to-end time a kernel could save by Amdahl's law, as `orchestrate.rank` computes it; a kernel
   whose op does not show up in the profile is expected to gain nothing for that model;
2. bench results (`autokernel-ci bench --json`): the gap to the measured roofline, 1 − % roofline;
3. nothing: every task weighs the same.

A task the chosen source says nothing about weighs the mean of those it does. The split is the
longest-processing-time-first rule (heaviest task to the lightest shard), deterministic, so every
shard job computes the same one from the same inputs.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from autokernel_ci.commands import at_least_one, write_text
from autokernel_ci.errors import AutokernelError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="split the kernels into N shards of about equal expected gain (an Actions matrix)",
                       description="Print a GitHub Actions matrix, {\"include\": [{\"shard\": 0, \"shards\": N, "
                                   "\"tasks\": \"a,b\", \"expected_gain\": …}, …]}, on one line of standard output. "
                                   "Each shard job runs `autokernel-ci optimize --shard I --shards N`, which computes "
                                   "the same split; `autokernel-ci merge` combines their results into one pull "
                                   "request. Shards left without a task are left out of the matrix.")
    p.add_argument("--shards", type=at_least_one, required=True, metavar="N", help="how many shard jobs")
    p.add_argument("--task", action="append", metavar="NAME",
                   help="a kernel named in .autokernel.yml (repeatable; default: all of them)")
    p.add_argument("--weights", metavar="FILE",
                   help="what each task is expected to gain: a profile plan (`autokernel-ci profile --json`) or "
                        "bench results (`autokernel-ci bench --json`); default: equal weights")
    p.add_argument("--json", metavar="OUT", help="also write the plan (shards, weights, their source) here")
    p.add_argument("--config", metavar="FILE", help="config file (default: ./.autokernel.yml)")
    p.set_defaults(handler=run)


@dataclass
class Shard:
    index: int
    tasks: list[str] = field(default_factory=list)
    expected_gain: float = 0.0


@dataclass
class ShardPlan:
    """The split of a config's tasks into shards, with the weights that decided it and where they came from."""

    shards: list[Shard]
    weights: dict[str, float]
    source: str  # "equal", or the file the weights were read from

    @property
    def count(self) -> int:
        return len(self.shards)

    def tasks_of(self, index: int) -> list[str]:
        if not 0 <= index < self.count:
            raise AutokernelError(f"--shard {index} is not one of the {self.count} shards (0 … {self.count - 1})")
        return list(self.shards[index].tasks)

    def matrix(self) -> dict[str, Any]:
        """The `strategy.matrix` value: one entry per shard that has a task."""
        return {"include": [{"shard": s.index, "shards": self.count, "tasks": ",".join(s.tasks),
                             "expected_gain": round(s.expected_gain, 6)} for s in self.shards if s.tasks]}

    def to_dict(self) -> dict[str, Any]:
        return {"shards": [asdict(s) for s in self.shards], "weights": self.weights, "source": self.source,
                "matrix": self.matrix()}


def run(args: argparse.Namespace) -> int:
    plan = plan_shards(args.shards, config=Path(args.config) if args.config else None, tasks=args.task,
                       weights_file=Path(args.weights) if args.weights else None)
    print(json.dumps(plan.matrix(), separators=(",", ":")))
    for s in plan.shards:
        print(f"shard {s.index}: {', '.join(s.tasks) or '(no task)'}  expected gain {s.expected_gain:.3g}",
              file=sys.stderr)
    print(f"weights: {plan.source}", file=sys.stderr)
    if args.json:
        write_text(args.json, json.dumps(plan.to_dict(), indent=1) + "\n")
    return 0


# -- the split -------------------------------------------------------------------------------------------


def plan_shards(shards: int, *, config: Path | None = None, tasks: list[str] | None = None,
                weights_file: Path | None = None) -> ShardPlan:
    """Split the config's kernels (or `tasks`) into `shards`, heaviest expected gain first."""
    from autokernel_ci.config import find_config, load_config

    if shards < 1:
        raise AutokernelError(f"the number of shards must be at least 1, got {shards}")
    path = config or find_config()
    if path is None:
        raise AutokernelError("plan needs a .autokernel.yml naming the kernels to split (or pass --config)")
    cfg = load_config(path)
    kernels = {k.name: k for k in cfg.kernels}
    names = list(tasks) if tasks else list(kernels)
    unknown = [n for n in names if n not in kernels]
    if unknown:
        raise AutokernelError(f"{path} names no kernel {', '.join(map(repr, unknown))}; it has "
                              f"{', '.join(kernels) or 'none'}")
    if not names:
        raise AutokernelError(f"{path} names no kernels to split into shards")
    if weights_file is None:
        known: dict[str, float | None] = {n: 1.0 for n in names}
        source = "equal"
    else:
        known = expected_gains(weights_file, {n: kernels[n].op for n in names})
        source = str(weights_file)
    weights = _fill_unknown(known)
    return ShardPlan(assign(weights, shards), weights, source)


def assign(weights: dict[str, float], shards: int) -> list[Shard]:
    """Longest processing time first: each task, heaviest first (then by name), to the shard with the
    least weight so far (then the fewest tasks, then the lowest index)."""
    out = [Shard(i) for i in range(shards)]
    for name in sorted(weights, key=lambda n: (-weights[n], n)):
        target = min(out, key=lambda s: (s.expected_gain, len(s.tasks), s.index))
        target.tasks.append(name)
        target.expected_gain += weights[name]
    return out


def _fill_unknown(known: dict[str, float | None]) -> dict[str, float]:
    values = [w for w in known.values() if w is not None]
    default = sum(values) / len(values) if values else 1.0
    return {name: (default if w is None else w) for name, w in known.items()}


def expected_gains(path: Path, ops: dict[str, str | None]) -> dict[str, float | None]:
    """{task: expected gain, or None when the file says nothing about it} from a profile plan or bench JSON."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AutokernelError(f"cannot read --weights {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise AutokernelError(f"--weights {path} is not valid JSON: {exc}") from None
    if isinstance(data, list):  # `profile --json` over several models: the savings add up
        plans = [d for d in data if isinstance(d, dict) and "entries" in d]
        if plans:
            return _sum_gains([_profile_gains(p, ops, path) for p in plans])
    if isinstance(data, dict) and "entries" in data:
        return _profile_gains(data, ops, path)
    if isinstance(data, dict) and isinstance(data.get("results"), list):
        return _roofline_gaps(data["results"], ops)
    raise AutokernelError(f"--weights {path} is neither a profile plan (`autokernel-ci profile --json`) nor bench "
                          "results (`autokernel-ci bench --json`)")


def _profile_gains(data: dict[str, Any], ops: dict[str, str | None], path: Path) -> dict[str, float | None]:
    from autokernel_ci.orchestrate import rank
    from autokernel_ci.profiling import Plan

    try:
        plan = Plan.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise AutokernelError(f"--weights {path} looks like a profile plan but cannot be read: {exc}") from None
    saving = {t.op: t.potential_saving for t in rank(plan)}
    return {name: (saving.get(op, 0.0) if op else None) for name, op in ops.items()}


def _sum_gains(parts: list[dict[str, float | None]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name in parts[0]:
        values = [p[name] for p in parts if p.get(name) is not None]
        out[name] = sum(values) if values else None
    return out


def _roofline_gaps(results: list[Any], ops: dict[str, str | None]) -> dict[str, float | None]:
    """1 − % roofline / 100 per task: what reaching the roofline would save of the kernel's own time."""
    gaps: dict[str, float | None] = {name: None for name in ops}
    for item in results:
        if not isinstance(item, dict) or item.get("task") not in gaps:
            continue
        pcts = [t["pct_roofline"] for t in item.get("timings") or []
                if isinstance(t, dict) and isinstance(t.get("pct_roofline"), (int, float))]
        if pcts:
            gaps[item["task"]] = min(1.0, max(0.0, 1.0 - sum(pcts) / len(pcts) / 100.0))
    return gaps
