"""Results as data: `EvalResult` and its parts, serialisable to JSON and back.

Every report (terminal, Markdown, PR body, plots) is rendered from these objects, never from log text.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Any


class Status(str, Enum):
    PASS = "PASS"
    FAIL = "FAIL"  # ran, but produced a wrong answer
    CRASH = "CRASH"  # the candidate process died, raised, or could not be imported
    TIMEOUT = "TIMEOUT"  # the candidate process outlived its time limit
    REJECTED = "REJECTED"  # the candidate tried to game the gate (see findings)


@dataclass
class Finding:
    """One reason a candidate was rejected: which rule, where, and what a reviewer should read."""

    rule: str
    message: str
    line: int | None = None
    operator: str | None = None

    def where(self) -> str:
        if self.line is not None:
            return f"line {self.line}"
        if self.operator:
            return self.operator
        return "-"


@dataclass
class CaseEvidence:
    """One correctness check: the inputs it was run on and how far the output was from float64."""

    stage: str
    shape: dict[str, int]
    dtype: str
    seed: int
    kind: str = "normal"
    passed: bool = False
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    atol: float | None = None
    rtol: float | None = None
    message: str = ""
    kind_problem: str | None = None  # stability: why these inputs do not look like `kind` (None: they do)


@dataclass
class StageEvidence:
    name: str
    passed: bool
    cases: list[CaseEvidence] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    exercised: bool = True  # False: the cases ran, but not on the inputs the stage is for (see notes)

    @property
    def verdict(self) -> str:
        """'pass', 'fail' or 'not exercised' (passed, on inputs that did not test what the stage claims)."""
        if not self.passed:
            return "fail"
        return "pass" if self.exercised else "not exercised"


@dataclass
class ShapeTiming:
    """Timing of one shape: every sample in microseconds, with the rate and the roofline it implies."""

    shape: dict[str, int]
    dtype: str
    median_us: float
    iqr_us: float
    count: int
    samples_us: list[float] = field(default_factory=list)
    bytes_moved: int | None = None
    flops: int | None = None
    pct_roofline: float | None = None
    roofline_source: str | None = None  # "measured" or "datasheet"
    baselines_us: dict[str, float] = field(default_factory=dict)
    sync_us: float | None = None  # per call, wall clock between whole-device synchronizes
    batch_events_us: float | None = None  # per call, the stream's events around the same batch
    representative: bool = False  # False off-GPU: the numbers prove nothing about GPU speed
    late_launches: int = 0  # repetitions whose call may have been queued after the GPU went idle


@dataclass
class EvalResult:
    status: Status
    task: str
    candidate: str
    message: str = ""
    device: str = ""
    representative_timing: bool = False
    stages: list[StageEvidence] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    timings: list[ShapeTiming] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    candidate_sha256: str = ""
    seeds: list[int] = field(default_factory=list)
    duration_s: float = 0.0
    worker_log: str = ""
    plan_seed: int | None = None  # the seed `plan_cases` drew every case's seed from
    reproduce: str = ""  # on FAIL: the `autokernel-ci eval` command that runs the same cases again
    # How the candidate ran: "bubblewrap" (the OS sandbox) or "process (unsandboxed)" (`--sandbox=process`,
    # or a developer's machine without bubblewrap). Every report that shows a result says which.
    sandbox: str = ""

    @property
    def passed(self) -> bool:
        return self.status is Status.PASS

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False, default=_json_default)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        data = dict(data)
        data["status"] = Status(data["status"])
        data["findings"] = [Finding(**f) for f in data.get("findings", [])]
        data["timings"] = [ShapeTiming(**t) for t in data.get("timings", [])]
        data["stages"] = [
            StageEvidence(
                name=s["name"],
                passed=s["passed"],
                cases=[CaseEvidence(**c) for c in s.get("cases", [])],
                notes=list(s.get("notes", [])),
                exercised=bool(s.get("exercised", True)),
            )
            for s in data.get("stages", [])
        ]
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json(cls, text: str) -> EvalResult:
        return cls.from_dict(json.loads(text))


def _json_default(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN or infinity: an error that is not finite is recorded as None (and fails)."""
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return None
    return float(value)
