"""The gate's findings at file and line: for check-run annotations and for SARIF 2.1.0 (code scanning).

A finding is one thing a reviewer should look at in the diff: a blocking verdict (regression, wrong
kernel, a task that could not be checked), each failing correctness case, each anti-cheat finding,
each risk trigger and each `numerics-changed` note. Everything comes from the gate's JSON, which the
reporting job reads as data: paths that leave the repository (absolute, `..`) are refused, texts are
cut to GitHub's limits, and nothing in them is executed or trusted to be well-formed.

`gate_findings` lists them; `to_sarif` writes them as one SARIF run of the tool `autokernel-ci`.
"""

from __future__ import annotations

import json
import math
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from autokernel_ci.gate import GateReport, TaskVerdict

SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
SARIF_VERSION = "2.1.0"
MAX_CASES_PER_TASK = 10  # failing cases annotated one by one; the rest are counted in the task's finding
MAX_MESSAGE = 4000  # GitHub keeps 64 KB per annotation message; a reviewer reads far less
MAX_TITLE = 255

# rule id → (short description, SARIF level)
RULES: dict[str, tuple[str, str]] = {
    "autokernel/regression": ("The kernel got slower than base beyond the threshold, confirmed twice", "error"),
    "autokernel/incorrect": ("The head's kernel is not correct (against float64)", "error"),
    "autokernel/failing-case": ("A correctness case the head's kernel failed", "error"),
    "autokernel/cheat": ("An anti-cheat finding: the kernel games the check instead of computing", "error"),
    "autokernel/unchecked": ("The task could not be checked", "error"),
    "autokernel/risk": ("A change that needs a human reviewer (tensor cores, numerics)", "warning"),
    "autokernel/numerics-changed": ("The worst error against float64 grew beyond the configured factor", "warning"),
}


@dataclass(frozen=True)
class GateFinding:
    rule: str
    level: str  # "error", "warning", "note" (SARIF's words)
    file: str
    line: int
    title: str
    message: str
    task: str = ""


def safe_path(path: Any) -> str | None:
    """`path` as a repository-relative POSIX path, or None when it is not one (absolute, `..`, odd characters)."""
    if not isinstance(path, str) or not path or len(path) > 500 or "\\" in path or "\0" in path:
        return None
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        return None
    norm = posixpath.normpath(path)
    if norm == "." or norm.startswith("../") or norm == ".." or any(ord(c) < 32 for c in norm):
        return None
    return norm


def _line(value: Any, default: int = 1) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else default


def _text(value: Any, limit: int = MAX_MESSAGE) -> str:
    text = " ".join(str(value if value is not None else "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _pct(ratio: float | None) -> str:
    return "?" if ratio is None or not math.isfinite(ratio) else f"{(ratio - 1.0) * 100:+.1f} %"


def failing_cases(task: TaskVerdict) -> list[dict[str, Any]]:
    """The correctness cases of the head that failed, in the order the harness ran them."""
    result = task.head_result if isinstance(task.head_result, dict) else {}
    cases = []
    for stage in result.get("stages") or []:
        if not isinstance(stage, dict):
            continue
        for case in stage.get("cases") or []:
            if isinstance(case, dict) and case.get("passed") is False:
                cases.append({**case, "stage": case.get("stage") or stage.get("name")})
    return cases


def _case_words(case: Mapping[str, Any]) -> str:
    shape = case.get("shape") if isinstance(case.get("shape"), dict) else {}
    dims = "×".join(str(v) for v in shape.values()) or "default inputs"
    errs = []
    for key, word in (("max_abs_err", "max abs error"), ("max_rel_err", "max rel error")):
        value = case.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            errs.append(f"{word} {value:.3g}")
    tol = ""
    if isinstance(case.get("atol"), (int, float)) and isinstance(case.get("rtol"), (int, float)):
        tol = f" (atol {case['atol']:.3g}, rtol {case['rtol']:.3g})"
    detail = ", ".join(errs) + tol
    message = _text(case.get("message"), 500)
    return (f"{case.get('stage', '?')} stage, {dims} {case.get('dtype', '?')}, seed {case.get('seed', '?')}, "
            f"{case.get('kind', 'normal')} inputs: {detail or 'failed'}" + (f"; {message}" if message else ""))


def gate_findings(report: GateReport, *, risk: Mapping[str, Any] | None = None,
                  entry_lines: Mapping[str, int] | None = None,
                  numerics: Sequence[Any] = ()) -> list[GateFinding]:
    """Every finding of a gate run, blocking ones first.

    `risk`: a `RiskReport.to_dict()` (its triggers carry file and line). `entry_lines`: the line of each
    kernel file's entry point, where a finding that has no line of its own is shown (else line 1).
    `numerics`: `report.history.NumericsChange` records. A verdict without a safe path is skipped.
    """
    lines = dict(entry_lines or {})
    out: list[GateFinding] = []
    for task in report.verdicts:
        path = safe_path(task.path)
        if path is None:
            continue
        at = _line(lines.get(path))
        name = _text(task.task, 100)
        reason = _text(task.reason)
        result = task.head_result if isinstance(task.head_result, dict) else {}
        cheats = [f for f in result.get("findings") or [] if isinstance(f, dict)]
        if task.verdict == "regression":
            out.append(GateFinding("autokernel/regression", "error", path, at, f"{name}: {_pct(task.ratio)} slower",
                                   reason, name))
        elif task.verdict == "fail":
            rule = "autokernel/cheat" if result.get("status") == "REJECTED" and cheats else "autokernel/incorrect"
            out.append(GateFinding(rule, "error", path, at, f"{name}: head is not correct", reason, name))
        elif task.verdict == "error":
            out.append(GateFinding("autokernel/unchecked", "error", path, at, f"{name}: could not be checked",
                                   reason, name))
        for finding in cheats:
            rule_name = _text(finding.get("rule"), 80) or "anti-cheat"
            where = _text(finding.get("operator"), 80)
            out.append(GateFinding("autokernel/cheat", "error", path, _line(finding.get("line"), at),
                                   f"{name}: anti-cheat {rule_name}",
                                   _text(finding.get("message")) + (f" ({where})" if where else ""), name))
        cases = failing_cases(task)
        for case in cases[:MAX_CASES_PER_TASK]:
            out.append(GateFinding("autokernel/failing-case", "error", path, at, f"{name}: failing case",
                                   _case_words(case), name))
        if len(cases) > MAX_CASES_PER_TASK:
            out.append(GateFinding("autokernel/failing-case", "error", path, at, f"{name}: more failing cases",
                                   f"{len(cases) - MAX_CASES_PER_TASK} more failing cases; the gate JSON lists "
                                   "every one", name))
    for change in numerics:
        path = safe_path(getattr(change, "path", None))
        if path is not None:
            level = "error" if getattr(change, "blocking", False) else "warning"
            out.append(GateFinding("autokernel/numerics-changed", level, path, _line(lines.get(path)),
                                   f"{_text(change.task, 100)}: numerics-changed", _text(change.message), change.task))
    for trigger in (risk or {}).get("triggers") or []:
        if not isinstance(trigger, dict):
            continue
        path = safe_path(trigger.get("file"))
        if path is None:
            continue  # a reason that is not a line (the op family) is in the summary, not on the diff
        out.append(GateFinding("autokernel/risk", "warning", path, _line(trigger.get("line")),
                               f"needs human review: {_text(trigger.get('category'), 80)}",
                               _text(trigger.get("reason")) + (f": `{_text(trigger.get('text'), 200)}`"
                                                               if trigger.get("text") else "")))
    order = {"error": 0, "warning": 1, "note": 2}
    return sorted(out, key=lambda f: order.get(f.level, 3))


def to_sarif(findings: Iterable[GateFinding], *, tool_version: str = "", base_sha: str = "",
             head_sha: str = "") -> dict[str, Any]:
    """One SARIF 2.1.0 log with one run: the rules that occur, and a result per finding."""
    findings = list(findings)
    used = sorted({f.rule for f in findings} | {"autokernel/regression", "autokernel/incorrect"})
    rules = [{"id": rule, "name": rule.split("/", 1)[1].replace("-", " ").title().replace(" ", ""),
              "shortDescription": {"text": RULES[rule][0]},
              "defaultConfiguration": {"level": RULES[rule][1]}}
             for rule in used if rule in RULES]
    index = {rule["id"]: i for i, rule in enumerate(rules)}
    results = []
    for f in findings:
        result: dict[str, Any] = {
            "ruleId": f.rule, "level": f.level, "message": {"text": f"{f.title}: {f.message}"[:MAX_MESSAGE]},
            "locations": [{"physicalLocation": {"artifactLocation": {"uri": f.file, "uriBaseId": "%SRCROOT%"},
                                                "region": {"startLine": f.line}}}],
            "partialFingerprints": {"autokernelFinding/v1": _finding_key(f)},
        }
        if f.rule in index:
            result["ruleIndex"] = index[f.rule]
        results.append(result)
    driver: dict[str, Any] = {"name": "autokernel-ci", "rules": rules}
    if tool_version:
        driver["semanticVersion" if re.fullmatch(r"\d+\.\d+\.\d+.*", tool_version) else "version"] = tool_version
    run: dict[str, Any] = {"tool": {"driver": driver}, "results": results, "columnKind": "unicodeCodePoints"}
    if head_sha or base_sha:
        run["properties"] = {"baseSha": base_sha, "headSha": head_sha}
    return {"$schema": SARIF_SCHEMA, "version": SARIF_VERSION, "runs": [run]}


def _finding_key(f: GateFinding) -> str:
    import hashlib

    return hashlib.sha256(json.dumps([f.rule, f.file, f.task, f.title]).encode()).hexdigest()[:32]


def sarif_json(report: GateReport, **kwargs: Any) -> str:
    """The SARIF text of a gate report (`gate --sarif`, `report-gate --sarif`)."""
    from autokernel_ci import __version__

    sarif = to_sarif(gate_findings(report, **kwargs), tool_version=str(__version__), base_sha=report.base_sha,
                     head_sha=report.head_sha)
    return json.dumps(sarif, indent=1) + "\n"
