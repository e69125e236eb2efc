"""The gate's report for people: the Markdown of the PR comment and job summary, and the terminal table.

Both are rendered from a `GateReport` (never from log text). The comment reads in ten seconds: a
headline naming what changed (`1 regression: rmsnorm +21.6 %; 6 unchanged`), links to the run, the
artifact and both commits, a table of the changed or blocking rows only (the rest folded in
`<details>`), the % of roofline of base and head, then the reasons, blocking ones first. While a new
push is being gated, `render_placeholder` stands in for the old verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from autokernel_ci.gate import NOT_MEASURED, GateReport, ShapeComparison, TaskVerdict

COLUMNS = ("task", "verdict", "base µs", "head µs", "change", "99 % interval", "threshold (noise)", "rounds",
           "roofline base → head")
_WORDS = {"fail": ("incorrect", "incorrect"), "regression": ("regression", "regressions"),
          "error": ("not checked", "not checked"), "improvement": ("improvement", "improvements"),
          "inconclusive": ("inconclusive", "inconclusive"), "new": ("new", "new"), "removed": ("removed", "removed"),
          "policy-changed": ("policy change", "policy changes")}
# The verdicts shown as rows in the table; the rest are folded.
_SHOWN = ("policy-changed", "fail", "regression", "error", "improvement", "inconclusive", "new", "removed")


@dataclass
class CommentContext:
    """What the comment adds to the report: links, numerics notes, the model-level effect, the history chart."""

    run_url: str | None = None  # the measuring workflow run
    artifact_url: str | None = None  # the gate JSON kept as an artifact
    commit_url: str | None = None  # "https://github.com/OWNER/REPO/commit/" (the SHA is appended)
    chart_url: str | None = None  # the latest history chart
    numerics: Sequence[Any] = ()  # report.history.NumericsChange
    models: Sequence[Any] = ()  # report.model_effect.ModelEffect
    extra: list[str] = field(default_factory=list)  # more Markdown lines, after the reasons
_ORDER = {"policy-changed": -1, "fail": 0, "regression": 1, "error": 2, "removed": 2.5, "inconclusive": 3,
          "improvement": 4, "new": 5, "pass": 7}
_STYLE = {"fail": "bold red", "regression": "bold red", "error": "bold red", "inconclusive": "yellow",
          "improvement": "green", "pass": "green", "new": "cyan", "removed": "bold red", "policy-changed": "bold red"}


def headline(report: GateReport, numerics: Sequence[Any] = ()) -> str:
    """One line: passed or blocked, then what changed by name and how many did not:
    `autokernel-ci gate blocked: 1 regression: rmsnorm +21.6 %; 6 unchanged`."""
    blocked = not report.passed or any(getattr(n, "blocking", False) for n in numerics)
    state = "passed" if not blocked else "blocked"
    groups = []
    for verdict in _SHOWN:
        tasks = [t for t in report.verdicts if t.verdict == verdict]
        if tasks:
            one, many = _WORDS[verdict]
            names = ", ".join(t.task + (f" {_pct(t.ratio, 1)}" if t.ratio is not None and verdict in
                                        ("regression", "improvement", "inconclusive") else "") for t in tasks[:4])
            more = f" and {len(tasks) - 4} more" if len(tasks) > 4 else ""
            groups.append(f"{len(tasks)} {one if len(tasks) == 1 else many}: {names}{more}")
    if numerics:
        groups.append(f"{len(numerics)} numerics-changed: {', '.join(n.task for n in numerics[:4])}")
    unchanged = sum(t.verdict == "pass" for t in report.verdicts) + len(report.unchanged)
    if unchanged:
        groups.append(f"{unchanged} unchanged")
    return f"autokernel-ci gate {state}: {'; '.join(groups) or 'no task to gate'}"


def status_description(report: GateReport) -> str:
    """A commit status's description (GitHub keeps 140 characters)."""
    text = headline(report).replace("autokernel-ci gate ", "")
    if not report.timings_measured:
        text += "; correctness only, timings not measured (no GPU)"
    return text[:140]


def render_markdown(report: GateReport, context: CommentContext | None = None) -> str:
    context = context or CommentContext()
    lines = [f"## {headline(report, context.numerics)}", "", _context_line(report), ""]
    links = _links(report, context)
    if links:
        lines += [links, ""]
    if report.merge_base:
        lines += [compared_line(report), ""]
    unsandboxed = [v.task for v in report.verdicts
                   if str((v.head_result or {}).get("sandbox") or "bubblewrap") != "bubblewrap"]
    if unsandboxed:
        lines += [f"> **Unsandboxed**: {_one_line(', '.join(unsandboxed))} ran without the OS sandbox "
                  "(`--sandbox=process`): the pull request's code ran as a plain process on the runner.", ""]
    if not report.timings_measured:
        lines += ["> **Timings were not measured**: there is no GPU on this runner. Every kernel ran under the "
                  "Triton interpreter for correctness only; interpreter timings say nothing about GPU speed, so "
                  "no performance verdict was given. Run the gate on a GPU runner to gate performance.", ""]
    if report.verdicts:
        flagged = {n.task for n in context.numerics}
        shown = [t for t in _sorted(report.verdicts) if t.verdict in _SHOWN or t.task in flagged]
        folded = [t for t in _sorted(report.verdicts) if t not in shown]
        if shown:
            lines += _table(shown, report.timings_measured)
        if folded:
            lines += ["<details><summary>"
                      f"{len(folded)} unchanged task{'s' * (len(folded) != 1)}: {', '.join(t.task for t in folded)}"
                      "</summary>", ""]
            lines += _table(folded, report.timings_measured) + ["</details>", ""]
        lines += ["**Why**", ""]
        for task in shown + folded:
            where = f" (`{task.path}`)" if task.path else ""
            word = f"**{task.verdict}**" if task.blocking else task.verdict
            lines.append(f"- `{task.task}`{where}: {word}. {_one_line(task.reason)}")
        for change in context.numerics:
            word = "**numerics-changed**" if change.blocking else "numerics-changed"
            lines.append(f"- `{change.task}`: {word}. {_one_line(change.message)}")
        lines.append("")
    lines += policy_section(report)
    if context.models:
        from autokernel_ci.report.model_effect import render_model_section

        lines += render_model_section(context.models)
    if context.chart_url:
        lines += [f"Trend over the gate's history: [chart]({context.chart_url})", ""]
    lines += context.extra
    if report.unchanged:
        names = ", ".join(f"`{n}`" for n in report.unchanged)
        lines += [f"Unchanged between base and head, not gated: {names} (`--all` gates every task).", ""]
    for note in report.notes:
        if report.timings_measured or not note.startswith("timings not measured"):
            lines += [f"Note: {note}", ""]
    lines.append(f"<sub>threshold {_share(report.threshold)}, never below the measured A/A noise; a regression must "
                 "reproduce in a fresh interleaved measurement to block; 99 % bootstrap intervals of "
                 "median(head) / median(base). Inconclusive does not block.</sub>")
    return "\n".join(lines) + "\n"


def _context_line(report: GateReport) -> str:
    gated = len(report.verdicts)
    minutes, seconds = divmod(round(report.duration_s), 60)
    took = f"{minutes} min {seconds} s" if minutes else f"{seconds} s"
    device = report.device + (f" × {report.workers} (a task per GPU)" if report.workers > 1 else "")
    return (f"base `{report.base_sha[:12]}` ({report.base}) → head `{report.head_sha[:12]}` ({report.head}) · "
            f"{device} · threshold {_share(report.threshold)} · {gated} task{'s' * (gated != 1)} gated, "
            f"{len(report.unchanged)} unchanged · {took}")


def compared_line(report: GateReport) -> str:
    """Which commits were compared: the head's changes since the merge base; policy and timing from the base."""
    if report.merge_base and report.merge_base != report.base_sha:
        since = (f"the merge base `{report.merge_base[:12]}` (the base moved on since the head branched; what "
                 "the base gained after it is not the head's)")
    else:
        since = f"the merge base `{report.merge_base[:12]}`, the base itself"
    return (f"Tasks gated: those the head changed since {since}. Policy and timing: base `{report.base_sha[:12]}` "
            f"against head `{report.head_sha[:12]}`.")


def policy_section(report: GateReport) -> list[str]:
    """The policy keys the head changed, base and head value side by side, and what lifts the block."""
    if not report.policy_changes:
        return []
    accepted = next((v.accepted_by for v in report.verdicts if v.verdict == "policy-changed" and v.accepted_by), "")
    state = (f"accepted: {accepted}" if accepted else
             f"blocks until a user with write access, other than the author, approves head `{report.head_sha[:12]}`")
    lines = [f"**Policy changed by the head** ({state}). The head was judged by the base's policy "
             f"(`{report.config}` of base `{report.base_sha[:12]}`), not by its own.", "",
             "| policy key | base | head |", "| --- | --- | --- |"]
    for change in report.policy_changes:
        lines.append(f"| `{_one_line(change['key'])}` | {_cell(change['base'])} | {_cell(change['head'])} |")
    return lines + [""]


def _cell(value) -> str:
    import json

    if value is None:
        return "(not set)"
    text = value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))
    return f"`{_one_line(text)}`"


def _table(tasks: list[TaskVerdict], measured: bool) -> list[str]:
    lines = ["| " + " | ".join(COLUMNS) + " |", "| --- | --- | ---: | ---: | ---: | --- | --- | ---: | ---: |"]
    for task in tasks:
        for row in _rows(task, measured):
            lines.append("| " + " | ".join(row) + " |")
    return lines + [""]


def _links(report: GateReport, context: CommentContext) -> str:
    parts = []
    if context.run_url:
        parts.append(f"[measuring run]({context.run_url})")
    if context.artifact_url:
        parts.append(f"[gate JSON]({context.artifact_url})")
    if context.commit_url:
        for label, sha in (("base", report.base_sha), ("head", report.head_sha)):
            if sha and all(c in "0123456789abcdef" for c in sha):
                parts.append(f"{label} [`{sha[:7]}`]({context.commit_url.rstrip('/')}/{sha})")
    return " · ".join(parts)


def render_placeholder(head_sha: str, run_url: str | None = None, previous: str | None = None) -> str:
    """The comment while a new push is gated: the old verdict is not shown as if it were about this commit."""
    where = f" ([measuring run]({run_url}))" if run_url else ""
    lines = [f"## autokernel-ci gate: gating … (`{head_sha[:7]}`)", "",
             f"A new push is being measured{where}. The verdict for `{head_sha[:12]}` replaces this comment when "
             "it is ready; until then no verdict applies to this commit.", ""]
    if previous:
        lines += [f"<sub>The last verdict was for an older commit: {_one_line(previous)}</sub>", ""]
    return "\n".join(lines)


def _sorted(verdicts: list[TaskVerdict]) -> list[TaskVerdict]:
    return sorted(verdicts, key=lambda t: (_ORDER.get(t.verdict, 9), t.task))


def _rows(task: TaskVerdict, measured: bool) -> list[list[str]]:
    word = f"**{task.verdict}**" if task.blocking else task.verdict + (" (accepted)" if task.accepted_by else "")
    if not task.shapes:
        timing = NOT_MEASURED if not measured and task.verdict in ("pass", "inconclusive") else "–"
        return [[f"`{task.task}`", word, "–", "–", timing, "–", "–", "–", "–"]]
    rows = []
    for shape in task.shapes:
        name = f"`{task.task}`" if len(task.shapes) == 1 else f"`{task.task}` {_label(shape)}"
        shape_word = f"**{shape.verdict}**" if shape.verdict == "regression" else shape.verdict
        rows.append([name, shape_word, *_numbers(shape)])
    return rows


def _numbers(shape: ShapeComparison) -> list[str]:
    return [_us(shape.base_median_us), _us(shape.head_median_us), _pct(shape.ratio),
            f"{_pct(shape.ci_lo)} … {_pct(shape.ci_hi)}" if shape.ci_lo is not None else "–",
            f"{_share(shape.effective_threshold)} (noise {_share(shape.noise)})", "+".join(map(str, shape.rounds)),
            _roofline(shape)]


def _roofline(shape: ShapeComparison) -> str:
    base, head = getattr(shape, "base_pct_roofline", None), getattr(shape, "head_pct_roofline", None)
    if base is None and head is None:
        return "–"
    source = " (datasheet)" if getattr(shape, "roofline_source", None) == "datasheet" else ""
    return f"{_pct_of(base)} → {_pct_of(head)}{source}"


def _pct_of(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} %"


def _share(fraction: float) -> str:
    return f"{fraction * 100:.1f} %"


def _label(shape: ShapeComparison) -> str:
    return "×".join(str(v) for v in shape.shape.values()) + f" {shape.dtype}"


def _us(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _pct(ratio: float | None, digits: int = 2) -> str:
    return "–" if ratio is None else f"{(ratio - 1.0) * 100:+.{digits}f} %"


def _one_line(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def print_gate_report(report: GateReport, console=None) -> None:
    """The same table in the terminal (rich), with the reasons under it."""
    from rich.markup import escape
    from rich.table import Table

    from autokernel_ci.report.terminal import make_console

    console = console or make_console()
    style = "bold green" if report.passed else "bold red"
    console.print(f"[{style}]{headline(report)}[/]")
    console.print(f"[dim]{escape(_context_line(report).replace('`', ''))}[/]")
    if not report.timings_measured:
        console.print("[yellow]timings not measured: no GPU here; correctness only, no performance verdict[/]")
    if report.verdicts:
        table = Table(show_edge=False, box=None, pad_edge=False)
        for col in COLUMNS:
            table.add_column(col, justify="right" if col in ("base µs", "head µs", "change", "rounds") else "left")
        for task in _sorted(report.verdicts):
            for row in _rows(task, report.timings_measured):
                cells = [escape(c.replace("`", "").replace("**", "")) for c in row]
                cells[1] = f"[{_STYLE.get(task.verdict, '')}]{cells[1]}[/]"
                table.add_row(*cells)
        console.print(table)
        for task in _sorted(report.verdicts):
            console.print(f"  [{_STYLE.get(task.verdict, '')}]{task.task}[/]: {escape(' '.join(task.reason.split()))}")
    if report.policy_changes:
        console.print("[bold red]policy changed by the head[/] (judged by the base's policy):")
        for change in report.policy_changes:
            console.print(f"  {escape(change['key'])}: {escape(_cell(change['base']))} → "
                          f"{escape(_cell(change['head']))}".replace("`", ""))
    if report.merge_base:
        console.print(f"[dim]{escape(compared_line(report).replace('`', ''))}[/]")
    if report.unchanged:
        console.print(f"[dim]unchanged, not gated: {', '.join(report.unchanged)} (--all gates every task)[/]")
    for note in report.notes:
        if report.timings_measured or not note.startswith("timings not measured"):
            console.print(f"[dim]note: {escape(note)}[/]")
