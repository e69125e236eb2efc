"""The proposer interface: given what is known, say which kernel to try next, or that there is nothing left.

A proposer sees the task, the source and `EvalResult` of the current best kernel, and the history of
every experiment so far (kept or not, from this run and any run it resumes). It returns a `Candidate`:
the full text of a new kernel file, a one-line description for logs and commit messages, and the
parameters that identify it (the tuner's point in its search space; whatever an LLM proposer wants
to remember). It returns None when it has nothing more worth trying, and may say why in
`done_reason`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autokernel_ci.results import EvalResult
    from autokernel_ci.tasks import KernelTask

# Experiments that made the kernel the incumbent: the first measurement of a run (or of a resumed
# run) and every kept candidate.
INCUMBENT_VERDICTS = ("baseline", "remeasure", "kept")
# Reasons a candidate was not kept, in the order reports list them.
REVERT_VERDICTS = ("slower", "within-noise", "not-confirmed", "fail", "crash", "timeout", "rejected",
                   "duplicate", "invalid", "error")


@dataclass
class Candidate:
    """A kernel file to try: its whole source, what changed in one line, and the proposer's parameters."""

    source: str
    description: str
    params: dict[str, Any] = field(default_factory=dict)
    proposer: str = ""


@dataclass
class Experiment:
    """One row of `results.jsonl`: a measured incumbent or a tried candidate, and what became of it.

    Times are geometric means over the timed shapes of the per-shape medians, in microseconds, so a
    kernel must serve every shape to score well. `score_us` is the screening measurement (the same
    reduced gate for every candidate); `gate_score_us` is the full gate's, measured only for candidates
    that screened faster, and for incumbents. `ratio` is candidate ÷ incumbent (below 1 is faster), with
    `ratio_hi` its upper confidence bound; `threshold` is the noise a gain had to clear.
    """

    n: int
    task: str
    verdict: str  # one of INCUMBENT_VERDICTS or REVERT_VERDICTS
    description: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    proposer: str = ""
    status: str | None = None  # the EvalResult status that decided the verdict
    stage: str | None = None  # "screen" or "gate": which evaluation decided it
    message: str = ""
    score_us: float | None = None
    gate_score_us: float | None = None
    ratio: float | None = None
    ratio_hi: float | None = None
    gate_ratio: float | None = None
    threshold: float | None = None
    # Start ÷ this, from what the loop compared: for the incumbents (baseline, kept), the full gate's score
    # of the start ÷ theirs; for any other candidate, the incumbent's figure × the candidate's speed-up over
    # it in the comparison that decided it (`ratio`, or `gate_ratio` when the full gate ran). Every report
    # (TSV, terminal, summary, PR body, plot) shows this one figure.
    speedup_vs_start: float | None = None
    pct_roofline: float | None = None  # mean over the timed shapes
    timings: list[dict[str, Any]] = field(default_factory=list)  # per shape: shape, dtype, median_us, pct_roofline
    representative: bool = False  # False on the CPU interpreter: the times say nothing about GPU speed
    candidate_sha256: str = ""
    commit: str | None = None
    branch: str = ""
    started_at: str = ""
    duration_s: float = 0.0
    note: str = ""

    @property
    def kept(self) -> bool:
        return self.verdict == "kept"

    @property
    def is_incumbent(self) -> bool:
        return self.verdict in INCUMBENT_VERDICTS

    @property
    def is_experiment(self) -> bool:
        """A tried candidate (not a measurement of the incumbent)."""
        return self.verdict not in ("baseline", "remeasure")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Experiment:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class Proposer(ABC):
    """Proposes the next candidate kernel; stateless between calls except for what it chooses to cache."""

    name: str = "proposer"
    # Why the last `propose` returned None, for the log and the summary.
    done_reason: str = ""

    @abstractmethod
    def propose(self, task: KernelTask, best_source: str, best_result: EvalResult | None,
                history: list[Experiment]) -> Candidate | None:
        """The next candidate, or None when there is nothing left worth trying.

        `history` holds every experiment of this task so far, oldest first, including those of a run
        being resumed; a proposer must not propose a candidate it (or anyone) already tried.
        """

    def params_of(self, task: KernelTask, source: str) -> dict[str, Any]:
        """The parameters this proposer would give `source`: recorded for the incumbent's log row."""
        return {}
