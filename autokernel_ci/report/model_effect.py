"""What a kernel change means for the model: Amdahl's law over the last profile, and verify's measurement.

The expected end-to-end change of a model is the sum over its gated ops of share × (head/base − 1),
where the share is the op's fraction of the model's time in the last profile (`autokernel-ci profile
--json`, or the `plan.json` of `optimize --model`) and head/base is the gate's measured kernel ratio.
A task is matched to a profile entry by its name: the entry's built-in op or its op family. When
`verify` ran on both base and head (its JSON), the measured change is the ratio of their patched
medians. Every line says which of the two it is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from autokernel_ci.gate import GateReport


@dataclass
class ModelEffect:
    model: str
    expected: float | None  # fractional change of the model's time (+0.02: 2 % slower); None: nothing matched
    parts: list[tuple[str, float, float]] = field(default_factory=list)  # (task, share, kernel ratio)
    measured: float | None = None
    measured_from: str = ""
    profile_device: str = ""

    def line(self) -> str:
        if self.expected is None:
            text = f"`{self.model}`: no gated kernel appears in its last profile; no end-to-end change expected"
        else:
            why = ", ".join(f"`{t}` {s * 100:.1f} % of the time × {(r - 1) * 100:+.1f} %" for t, s, r in self.parts)
            text = (f"`{self.model}`: expected **{self.expected * 100:+.2f} %** end to end (Amdahl's law: {why}; "
                    f"profile on {self.profile_device or 'an unrecorded device'})")
        if self.measured is not None:
            text += f"; measured **{self.measured * 100:+.2f} %** ({self.measured_from})"
        else:
            text += "; not measured end to end (`autokernel-ci verify --json` on base and head measures it)"
        return text


def _entries(plan: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [e for e in plan.get("entries") or [] if isinstance(e, Mapping)]


def model_effects(report: GateReport, plans: Sequence[Mapping[str, Any]],
                  verify_base: Sequence[Mapping[str, Any]] = (),
                  verify_head: Sequence[Mapping[str, Any]] = ()) -> list[ModelEffect]:
    """One ModelEffect per profiled model (`plans`: Plan dicts), from the gate's timed verdicts."""
    ratios = {t.task: t.ratio for t in report.verdicts
              if t.timing_measured and isinstance(t.ratio, (int, float)) and math.isfinite(t.ratio) and t.ratio > 0}
    effects = []
    for plan in plans:
        model = str(plan.get("model") or "model")
        parts = []
        for entry in _entries(plan):
            share = entry.get("share")
            if not isinstance(share, (int, float)) or not 0 < share <= 1:
                continue
            for name in (entry.get("builtin"), entry.get("family")):
                if isinstance(name, str) and name in ratios and all(p[0] != name for p in parts):
                    parts.append((name, float(share), float(ratios[name])))
                    break
        expected = sum(s * (r - 1.0) for _, s, r in parts) if parts else None
        effect = ModelEffect(model, expected, parts, profile_device=str(plan.get("device") or ""))
        base, head = _patched(verify_base, model), _patched(verify_head, model)
        if base and head:
            effect.measured = head / base - 1.0
            effect.measured_from = f"`verify`: patched model, head {head:.1f} µs vs base {base:.1f} µs"
        effects.append(effect)
    return effects


def _patched(records: Sequence[Mapping[str, Any]], model: str) -> float | None:
    for record in records:
        if not isinstance(record, Mapping) or str(record.get("model")) != model:
            continue
        timing = (record.get("timings") or {}).get("patched") if isinstance(record.get("timings"), Mapping) else None
        value = timing.get("median_us") if isinstance(timing, Mapping) else None
        if isinstance(value, (int, float)) and value > 0 and math.isfinite(value):
            return float(value)
    return None


def render_model_section(effects: Sequence[ModelEffect]) -> list[str]:
    """Markdown lines for the comment and the PR body (empty when no model is profiled)."""
    if not effects:
        return []
    return ["**What it means for the models**", "", *[f"- {e.line()}" for e in effects], ""]
