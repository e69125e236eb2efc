"""The "Why this is high risk" section of an optimization pull request, rendered from a RiskReport."""

from __future__ import annotations

from autokernel_ci.risk import RiskReport, RiskTrigger

# Lets the PR code append the section once and find it again on update.
RISK_SECTION_MARKER = "<!-- autokernel-ci:risk-section -->"
MAX_LISTED = 40
MAX_LINE_CHARS = 160


def render_risk_section(report: RiskReport, *, blob_url: str | None = None,
                        status_context: str = "autokernel/human-review") -> str:
    """Markdown explaining why a human must review, one bullet per trigger; empty for a low-risk change.

    `blob_url` (e.g. `https://github.com/o/r/blob/<sha>`) turns each `file:line` into a link.
    """
    if not report.is_high:
        return ""
    lines = [
        RISK_SECTION_MARKER,
        "### Why this is high risk",
        "",
        f"A maintainer must approve this pull request: the `{status_context}` status stays pending until "
        "someone with write access approves the current head commit, and a new push resets it.",
        "",
    ]
    for trigger in report.triggers[:MAX_LISTED]:
        lines.extend(_bullet(trigger, blob_url))
    hidden = len(report.triggers) - MAX_LISTED
    if hidden > 0:
        lines.append(f"- … and {hidden} more")
    return "\n".join(lines) + "\n"


def _bullet(trigger: RiskTrigger, blob_url: str | None) -> list[str]:
    if not trigger.file:
        return [f"- **{trigger.category}**: {trigger.reason}"]
    where = f"{trigger.file}:{trigger.line}" if trigger.line else trigger.file
    place = _code(where)
    if blob_url:
        anchor = f"#L{trigger.line}" if trigger.line else ""
        place = f"[{place}]({blob_url.rstrip('/')}/{trigger.file}{anchor})"
    bullet = [f"- {place}: {trigger.reason}"]
    if trigger.text:
        text = trigger.text if len(trigger.text) <= MAX_LINE_CHARS else trigger.text[: MAX_LINE_CHARS - 1] + "…"
        bullet.append(f"  {_code(text)}")
    return bullet


def _code(text: str) -> str:
    """Inline code that survives backticks in the text (CommonMark: a longer fence, padded)."""
    longest = run = 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"
