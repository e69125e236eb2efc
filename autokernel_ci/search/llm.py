"""The LLM proposer: a language model rewrites the kernel file; the gate judges it like any other candidate.

**Providers.** Requests go through litellm, so the model is any litellm model string
(`openai/gpt-4.1`, `anthropic/claude-sonnet-4-20250514`, `bedrock/…`, `hosted_vllm/…`, `ollama/…`, or
`openai/<name>` for any OpenAI-compatible server). Base URLs and keys come from the provider's usual
environment variables (`OPENAI_API_KEY`, `OPENAI_API_BASE`, `ANTHROPIC_API_KEY`, `AWS_*`,
`HOSTED_VLLM_API_BASE`, `OLLAMA_API_BASE`…) and never from this package. Rate limits, server errors,
dropped connections and timeouts are retried with exponential backoff (honouring `Retry-After`); any
other error ends the run cleanly with the provider's message.

**Budgets.** Dollars (litellm's price table, read locally: `LITELLM_LOCAL_MODEL_COST_MAP=True`) and
tokens, counted over the whole run (every task, and the run being resumed, through
`<out>/llm/summary.json`). A request is not sent when it would likely cross a budget (the most
expensive request so far is the estimate), so the run stops at the budget, not past it.

**The prompt** is rendered from the templates in `prompts/` (system, task, playbook) using only the
task, the incumbent and the history: the reference, the current best file, its timings and % of
roofline, the ceilings, the tunable space, and what every earlier experiment got, with the exact error
or correctness finding of each failure, trimmed. A final scrub replaces the value of any environment
variable whose name looks secret (`*TOKEN*`, `*KEY*`, `*SECRET*`, `*PASSWORD*`…) wherever it appears.

**The reply** must hold one complete kernel file in a fenced block and a `Description:` line; chatter
around it is ignored. A reply with no code, with the current file unchanged, without the entry point,
or repeating a tried file is discarded without spending an evaluation, and the next prompt says why.

**Throughput and staleness.** When `propose` hands out the last candidate it holds, it starts the next
request in a background thread, so the model works while the loop evaluates. That request is built
from what is known at that moment: the candidate being evaluated is listed as pending (so the model
proposes something else), but its outcome is not. If it is kept, the prefetched reply was written
against the previous best; it is still evaluated against the new best (it is a whole file, and the
gate decides), which costs at most one evaluation per kept candidate and keeps the GPU busy the rest
of the time. `parallel` > 1 asks for several candidates per round: one request with `n` where the
provider supports it, else that many requests at once.

**Record.** Each request's prompt and replies (`<out>/llm/<task>/NNNN.prompt.md`, `.reply.md`) and its
metadata (tokens, cost, retries, what became of each reply: which experiment, or why it was
discarded) in `NNNN.json`; the run's totals in `<out>/llm/summary.json`. Candidates carry the request,
tokens and cost in their params, so `results.jsonl` and the commit trailers point back at the prompt.
"""

from __future__ import annotations

import ast
import json
import math
import os
import random
import re
import threading
import time
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any

from autokernel_ci.errors import ProposerError
from autokernel_ci.search.proposer import Candidate, Experiment, Proposer

if TYPE_CHECKING:
    from autokernel_ci.config import OptimizeSettings
    from autokernel_ci.results import EvalResult
    from autokernel_ci.tasks import KernelTask

MODEL_ENV = "AUTOKERNEL_LLM_MODEL"
PROMPTS = Path(__file__).resolve().parent / "prompts"
REDACTED = "[redacted]"
# Environment variables whose values must never reach a prompt: the sandbox's own list of secret names.
SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)
SECRET_MIN_LEN = 6  # shorter values ("1", "true") are settings, and scrubbing them would garble the prompt
LOAD_INLINE = "torch.utils.cpp_extension.load_inline"
RETRY_STATUS = (408, 409, 429, 500, 502, 503, 504, 529)
FENCE = re.compile(r"^[ \t]*(?P<fence>```+|~~~+)[ \t]*(?P<lang>[\w+.#-]*)[^\n]*\n(?P<body>.*?)^[ \t]*(?P=fence)[ \t]*$",
                   re.DOTALL | re.MULTILINE)
DESCRIPTION = re.compile(r"^[ \t>*_#-]*description[*_]*[ \t]*[:\-–][ \t]*(?P<text>.+)$", re.IGNORECASE | re.MULTILINE)
THINKING = re.compile(r"<(think|thinking|reasoning)>.*?</\1>", re.DOTALL | re.IGNORECASE)
PYTHON_LANGS = ("", "python", "py", "python3")
ERROR_CHARS = 1500  # of each failure's evidence in the history
HISTORY_DETAILS = 8  # the most recent failures shown with their evidence
HISTORY_ROWS = 40  # rows of the history table
SOURCE_CHARS = 24000  # of a source file in the prompt
# One writer at a time for llm/summary.json (proposers of several tasks may share a process).
_SUMMARY_LOCK = threading.Lock()


@dataclass
class LLMSettings:
    """How the LLM proposer talks to its model and how much it may spend."""

    model: str
    max_cost_usd: float | None = 10.0  # over the whole run; None: no dollar budget
    max_total_tokens: int | None = None  # prompt + completion over the whole run; None: no token budget
    max_reply_tokens: int = 8192
    parallel: int = 1  # candidates per round
    timeout_s: float = 300.0  # one request
    max_retries: int = 5  # of a request that hit a rate limit, a server error or a timeout
    backoff_s: float = 2.0  # first retry delay when the provider gives no Retry-After; doubles each time
    max_backoff_s: float = 60.0
    temperature: float | None = None  # None: the provider's default
    prefetch: bool = True
    max_unusable: int = 3  # replies in a row with no usable kernel before giving up

    @classmethod
    def from_optimize(cls, settings: OptimizeSettings) -> LLMSettings:
        model = getattr(settings, "llm_model", None) or os.environ.get(MODEL_ENV)
        if not model:
            raise ProposerError(f"no LLM model is configured: set optimize.llm.model in .autokernel.yml or {MODEL_ENV}")
        options = {"max_cost_usd": "llm_max_cost_usd", "max_total_tokens": "llm_max_total_tokens",
                   "max_reply_tokens": "llm_max_reply_tokens", "parallel": "llm_parallel", "timeout_s": "llm_timeout_s"}
        values = {k: getattr(settings, v) for k, v in options.items() if getattr(settings, v, None) is not None}
        return cls(model=model, **values)


@dataclass
class Usage:
    """What the model has cost so far."""

    requests: int = 0
    failed_requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    unpriced_requests: int = 0  # litellm knew no price for the model: their cost is not in cost_usd
    max_request_cost_usd: float = 0.0
    max_request_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: Usage) -> None:
        for name in ("requests", "failed_requests", "retries", "prompt_tokens", "completion_tokens", "cost_usd",
                     "unpriced_requests"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.max_request_cost_usd = max(self.max_request_cost_usd, other.max_request_cost_usd)
        self.max_request_tokens = max(self.max_request_tokens, other.max_request_tokens)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_tokens": self.total_tokens}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Usage:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class _Reply:
    text: str
    finish_reason: str | None
    outcome: str = ""


@dataclass
class _Round:
    """One round of requests: the prompt, the replies, what they cost, and what went wrong."""

    request: int
    messages: list[dict[str, str]]
    n: int
    replies: list[_Reply] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    attempts: list[str] = field(default_factory=list)  # each failed attempt's error
    error: str | None = None  # the round failed for good
    duration_s: float = 0.0
    started_at: float = 0.0


@dataclass
class _Queued:
    """A reply waiting to be handed out: its kernel file, or why it has none."""

    round: _Round
    choice: int
    source: str = ""
    description: str = ""
    problem: str = ""


class ReplyError(ProposerError):
    """A reply holds no usable kernel file (no code, the file unchanged, no entry point)."""


# -- the reply ------------------------------------------------------------------------------------


def extract_candidate(reply: str, current_source: str, entry: str = "kernel_fn") -> tuple[str, str]:
    """(the kernel file, a one-line description) from a model's reply, or ReplyError saying why not.

    The file is the last Python fenced block that is a complete file (defines `entry`, or at least
    mentions it when it does not parse: the gate reports the syntax error) and differs from
    `current_source`. Reasoning in `<think>` tags and chatter around the block are ignored.
    """
    text = THINKING.sub("", reply or "")
    blocks = [m for m in FENCE.finditer(text) if m.group("lang").lower() in PYTHON_LANGS]
    if not blocks:
        if re.search(r"^[ \t]*(```|~~~)", text, re.MULTILINE):
            raise ReplyError("the reply's code block is not closed (cut off at the reply's token limit?)")
        raise ReplyError("the reply has no fenced Python code block")
    unchanged = missing = 0
    for match in reversed(blocks):
        source = match.group("body").rstrip() + "\n"
        if _normalise(source) == _normalise(current_source):
            unchanged += 1
            continue
        if not _defines(source, entry):
            missing += 1
            continue
        outside = text[:match.start()] + text[match.end():]
        return source, _description(outside, source)
    if unchanged and not missing:
        raise ReplyError("the reply's kernel file is the current best file, unchanged")
    raise ReplyError(f"the reply's code is not a complete kernel file: it defines no `{entry}`")


def _normalise(source: str) -> str:
    return "\n".join(line.rstrip() for line in source.strip().splitlines())


def _defines(source: str, entry: str) -> bool:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return re.search(rf"\b(def|class)\s+{re.escape(entry)}\b", source) is not None
    from autokernel_ci.config import top_level_names

    return entry in top_level_names(tree)


def _description(outside: str, source: str) -> str:
    match = DESCRIPTION.search(outside)
    if match:
        text = match.group("text")
    else:
        try:
            text = (ast.get_docstring(ast.parse(source)) or "").strip().splitlines()[0]
        except (SyntaxError, ValueError, IndexError):
            text = ""
    text = " ".join(text.replace("`", "").strip(" *_").split())
    if not text:
        return "a rewrite by the model (no description given)"
    return text if len(text) <= 100 else text[:99] + "…"


# -- secrets --------------------------------------------------------------------------------------


def secret_values(env: dict[str, str] | None = None) -> list[str]:
    """Values of environment variables whose names look like credentials, longest first."""
    env = dict(os.environ) if env is None else env
    values = {v for k, v in env.items() if SECRET_NAME.search(k) and len(v.strip()) >= SECRET_MIN_LEN}
    return sorted(values, key=len, reverse=True)


def scrub(text: str, secrets: list[str]) -> str:
    for value in secrets:
        if value in text:
            text = text.replace(value, REDACTED)
    return text


# -- the prompt -----------------------------------------------------------------------------------


def _template(name: str) -> Template:
    return Template((PROMPTS / name).read_text(encoding="utf-8"))


def _trim(text: str, limit: int) -> str:
    text = text.strip()
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    return text[:head] + f"\n… [{len(text) - limit} characters cut] …\n" + text[-(limit - head):]


def _fence(text: str) -> str:
    """Text safe to put inside a ``` block: a run of three backticks would end the block early."""
    return text.replace("```", "ʼʼʼ")


def _shape_list(spec, shapes) -> str:
    return ", ".join("{" + ", ".join(f"{k}: {v}" for k, v in s.items()) + "}" for s in shapes) or "-"


def _reference_source(task: KernelTask) -> str:
    import inspect

    from autokernel_ci.tasks import InSandbox

    if isinstance(task.spec.reference, InSandbox):  # the user's own code: read, never imported here
        parts = [task.spec.reference.source_text(), getattr(task.spec.make_inputs, "source_text", lambda: "")()]
        return "\n\n".join(p.rstrip() for p in parts if p) or f"# reference: {task.spec.reference.target}"
    try:
        if task.kernelbench is not None:
            return Path(task.kernelbench).read_text(encoding="utf-8")
        parts = [inspect.getsource(task.spec.reference)]
        if task.kind != "kernelbench":
            try:
                parts.append(inspect.getsource(task.spec.make_inputs))
            except (OSError, TypeError):
                pass
        return "\n\n".join(p.rstrip() for p in parts)
    except (OSError, TypeError):
        return f"# the reference's source is not available; its signature is {task.spec.signature}"


def _tolerances(task: KernelTask) -> str:
    spec = task.spec
    shape = (spec.bench_shapes or spec.test_shapes or ({},))[0]
    parts = []
    for dtype in spec.dtypes:
        try:
            atol, rtol = spec.tolerance(shape, dtype)
        except (KeyError, TypeError):
            continue
        parts.append(f"{dtype} atol {atol:g}, rtol {rtol:g}")
    rule = " (an element passes when |out − ref| ≤ atol · rms(reference row) + rtol · |ref|)"
    return "; ".join(parts) + rule if parts else "the checker's defaults"


def _languages(task: KernelTask) -> str:
    from autokernel_ci.harness.anticheat import scan_source

    probe = f"from torch.utils.cpp_extension import load_inline\n\ndef {task.entry}(*args):\n    return load_inline\n"
    if not scan_source(probe, allow=task.allow, entry=task.entry):
        return ("Triton, or CUDA C++ compiled at import with `torch.utils.cpp_extension.load_inline` (this task's "
                "allow list permits it); the file stays a Python module either way")
    return ("Triton (CUDA C++ through `load_inline` is refused for this task: its allow list in .autokernel.yml "
            f"would have to name `{LOAD_INLINE}`)")


def _bound(task: KernelTask) -> str:
    if task.spec.bound == "compute":
        return "compute (FLOP/s is the ceiling: the % of roofline divides by the matmul peak)"
    return "memory (bytes moved is the ceiling: the % of roofline divides by the copy bandwidth)"


def _device(result: EvalResult | None) -> str:
    if result is None:
        return "Device: unknown (the current kernel has no measurement)."
    if str(result.device).startswith("cpu") or not result.device:
        return ("Device: no GPU. Kernels run on the CPU under Triton's interpreter, so times say nothing about GPU "
                "speed; compare them only with each other.")
    from autokernel_ci.harness.device import device_info, get_ceilings

    info = device_info()
    parts = [result.device]
    if info.kind == "cuda":
        parts += [f"sm_{(info.capability or '').replace('.', '')}", f"{info.sm_count} SMs",
                  f"L2 {info.l2_bytes / 2**20:.0f} MiB" if info.l2_bytes else "",
                  f"{info.memory_bytes / 2**30:.0f} GiB" if info.memory_bytes else "", f"CUDA {info.cuda_version}"]
    versions = result.environment or {}
    parts += [f"{k} {versions[k]}" for k in ("torch", "triton") if versions.get(k)]
    lines = [f"Device: {', '.join(p for p in parts if p)}."]
    ceilings = get_ceilings(result.device)
    if ceilings is not None:
        flops = ", ".join(f"{k} {v / 1e12:.0f} TFLOP/s" for k, v in ceilings.flops_per_s.items())
        lines.append(f"Ceilings ({ceilings.source}): copy bandwidth {ceilings.bandwidth_bytes_per_s / 1e9:.0f} GB/s; "
                     f"matmul {flops}.")
    return "\n".join(lines)


def _timings(task: KernelTask, result: EvalResult | None) -> str:
    if result is None or not result.timings:
        return "(no timings yet)"
    rows = ["| shape | dtype | median µs | rate | % roofline | baselines µs |",
            "| --- | --- | ---: | ---: | ---: | --- |"]
    for t in result.timings:
        rate = ""
        if t.median_us > 0:
            if task.spec.bound == "compute" and t.flops:
                rate = f"{t.flops / t.median_us / 1e6:.3g} TFLOP/s"
            elif t.bytes_moved:
                rate = f"{t.bytes_moved / t.median_us / 1e3:.3g} GB/s"
        pct = f"{t.pct_roofline:.1f}" if t.pct_roofline is not None else "-"
        base = ", ".join(f"{k} {v:.2f}" for k, v in sorted(t.baselines_us.items())) or "-"
        shape = ", ".join(f"{k}={v}" for k, v in t.shape.items()) or "default"
        rows.append(f"| {shape} | {t.dtype} | {t.median_us:.2f} | {rate or '-'} | {pct} | {base} |")
    return "\n".join(rows)


def _tunables(task: KernelTask, source: str) -> str:
    from autokernel_ci.search.knobs import discover_knobs

    lines = []
    try:
        knobs = discover_knobs(source, task.spec)
    except (SyntaxError, ValueError):
        knobs = []
    for knob in knobs:
        values = ", ".join(knob.label(v) for v in knob.values)
        lines.append(f"- `{knob.name}` = {knob.label(knob.current)} now; values worth trying: {values}"
                     + (f". {knob.help}" if knob.help else ""))
    declared = {k.name for k in knobs}
    for tunable in task.spec.tunables:
        if tunable.name not in declared:
            lines.append(f"- `{tunable.name}` (not in the current file): {list(tunable.values)}. {tunable.help}")
    lines.append("- Anything else in the file may change too, as long as `" + task.entry + "` keeps its signature.")
    return "\n".join(lines)


def _history(history: list[Experiment], out_dir: Path | None, task: KernelTask) -> str:
    tried = [r for r in history if r.is_experiment or r.verdict == "baseline"]
    if not tried:
        return "(nothing tried yet)"
    rows = ["| # | verdict | speed vs start | % roofline | description |", "| ---: | --- | ---: | ---: | --- |"]
    for r in tried[-HISTORY_ROWS:]:
        speed = r.speedup_vs_start
        speed_text = f"{speed:.3f}×" if speed else "-"
        pct = f"{r.pct_roofline:.1f}" if r.pct_roofline is not None else "-"
        rows.append(f"| {r.n} | {r.verdict} | {speed_text} | {pct} | {_cell(r.description)} |")
    if len(tried) > HISTORY_ROWS:
        rows.insert(2, f"| … | {len(tried) - HISTORY_ROWS} older rows left out | | | |")
    details = []
    for r in [r for r in tried if r.is_experiment and not r.kept][-HISTORY_DETAILS:]:
        details.append(f"- #{r.n} {r.verdict} ({r.description}): {_evidence(r, out_dir, task)}")
    if details:
        rows += ["", "What the reverted ones got (most recent):", *details]
    return "\n".join(rows)


def _cell(text: str) -> str:
    return " ".join(str(text).replace("|", "/").split())[:120]


def _evidence(row: Experiment, out_dir: Path | None, task: KernelTask) -> str:
    """The exact reason an experiment was reverted: the error, the failing check or the finding."""
    result = _saved_result(row, out_dir, task)
    message = row.message
    if result is None:
        return _trim(message, ERROR_CHARS)
    parts = [result.message or message]
    status = result.status.value
    if status == "FAIL":
        failed = [c for s in result.stages for c in s.cases if not c.passed][:3]
        for c in failed:
            err = f"max abs err {c.max_abs_err:.3g}" if c.max_abs_err is not None else "no finite output"
            tol = f" (atol {c.atol:g}, rtol {c.rtol:g})" if c.atol is not None and c.rtol is not None else ""
            shape = ", ".join(f"{k}={v}" for k, v in c.shape.items()) or "default inputs"
            detail = "" if c.message and c.message in parts[0] else f": {c.message}"
            parts.append(f"stage {c.stage}, {shape}, {c.dtype}, {c.kind} inputs: {err}{tol}{detail}")
    elif status == "REJECTED":
        parts += [f"{f.rule} at {f.where()}: {f.message}" for f in result.findings[:3]]
    elif status == "CRASH" and result.worker_log.strip():
        parts.append("worker output (tail):\n" + _trim(result.worker_log, ERROR_CHARS // 2))
    elif row.verdict in ("slower", "within-noise", "not-confirmed"):
        parts = [message]
    return _trim("\n  ".join(p for p in dict.fromkeys(parts) if p), ERROR_CHARS)


def _saved_result(row: Experiment, out_dir: Path | None, task: KernelTask) -> EvalResult | None:
    if out_dir is None or row.stage not in ("screen", "gate"):
        return None
    from autokernel_ci.results import EvalResult

    path = out_dir / "experiments" / task.name / f"{row.n:04d}.json"
    try:
        return EvalResult.from_dict(json.loads(path.read_text(encoding="utf-8"))[row.stage])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def build_messages(task: KernelTask, best_source: str, best_result: EvalResult | None, history: list[Experiment],
                   *, out_dir: Path | None = None, pending: list[str] = (), feedback: list[str] = (),
                   n: int = 1) -> list[dict[str, str]]:
    """The system and user messages for one request, from task and result data only, then scrubbed."""
    spec = task.spec
    incumbent = next((r for r in reversed(history) if r.is_incumbent), None)
    if incumbent is None:
        best_label = "the starting file"
    else:
        speed = incumbent.speedup_vs_start
        best_label = f"experiment {incumbent.n}, {incumbent.verdict}" + (f", {speed:.3f}× the start" if speed else "")
    kind_line = {"kernelbench": "A KernelBench task: the file defines `ModelNew`, a drop-in for the reference's "
                                "`Model` (same constructor and forward), built from your own kernels.",
                 "custom": ""}.get(task.kind, f"The `{spec.name}` op ({spec.family} family).")
    pending_text = ("\nBeing evaluated now (do not propose these again): "
                    + "; ".join(f"“{p}”" for p in pending) + "\n") if pending else ""
    feedback_text = ("\nYour recent replies that were discarded without running:\n"
                     + "\n".join(f"- {f}" for f in feedback) + "\n") if feedback else ""
    ask = ("Propose the next kernel file: the one idea most likely to beat the current best, different from "
           "everything in the history and the pending list.")
    if n > 1:
        ask += f" You are one of {n} parallel proposals: take a different direction from the obvious one."
    user = _template("task.md").substitute(
        name=task.name, kind_line=kind_line, signature=spec.signature, entry=task.entry, bound=_bound(task),
        test_shapes=_shape_list(spec, spec.test_shapes), bench_shapes=_shape_list(spec, spec.bench_shapes),
        dtypes=", ".join(spec.dtypes), tolerances=_tolerances(task), languages=_languages(task),
        reference=_fence(_trim(_reference_source(task), SOURCE_CHARS // 3)),
        best_label=best_label, best_source=_fence(_trim(best_source, SOURCE_CHARS)), device=_device(best_result),
        timings=_timings(task, best_result), tunables=_tunables(task, best_source),
        history=_history(history, out_dir, task), pending=pending_text, feedback=feedback_text,
        playbook=(PROMPTS / "playbook.md").read_text(encoding="utf-8").strip(), ask=ask)
    system = _template("system.md").substitute(entry=task.entry)
    secrets = secret_values()
    return [{"role": "system", "content": scrub(system, secrets)}, {"role": "user", "content": scrub(user, secrets)}]


# -- talking to the model -------------------------------------------------------------------------


def _litellm():
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    return litellm


def _retryable(exc: BaseException) -> bool:
    litellm = _litellm()
    transient = (litellm.RateLimitError, litellm.Timeout, litellm.APIConnectionError, litellm.InternalServerError,
                 litellm.ServiceUnavailableError, litellm.BadGatewayError)
    if isinstance(exc, transient):
        return True
    return getattr(exc, "status_code", None) in RETRY_STATUS


def _retry_after(exc: BaseException) -> float | None:
    """The provider's Retry-After (seconds or an HTTP date), when it sent one."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or getattr(exc, "litellm_response_headers", None) or {}
    try:
        value = headers.get("retry-after-ms")
        if value is not None:
            return max(0.0, float(value) / 1000)
        value = headers.get("retry-after")
    except (AttributeError, TypeError, ValueError):
        return None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _error_text(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return scrub(f"{type(exc).__name__}: {lines[0] if lines else ''}"[:400], secret_values())


def _in_background(fn, *args) -> Future:
    """Run `fn` on a daemon thread (a request in flight never holds up the process's exit)."""
    future: Future = Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
            future.set_exception(exc)

    threading.Thread(target=run, name="autokernel-llm", daemon=True).start()
    return future


class LLMProposer(Proposer):
    """Asks a language model (through litellm) for the next kernel file; see the module docstring."""

    name = "llm"

    def __init__(self, model: str | None = None, *, settings: LLMSettings | None = None, **options: Any) -> None:
        if settings is None:
            model = model or os.environ.get(MODEL_ENV)
            if not model:
                raise ProposerError(f"the LLM proposer needs a model (optimize.llm.model, or {MODEL_ENV})")
            settings = LLMSettings(model=model, **options)
        self.settings = settings
        self.done_reason = ""
        self.usage = Usage()  # this proposer's own spending
        self._prior = Usage()  # the rest of the run's (other tasks, the run being resumed)
        self._lock = threading.Lock()
        self._task: KernelTask | None = None
        self._out_dir: Path | None = None
        self._queue: list[_Queued] = []
        self._inflight: Future | None = None
        self._next_request = 1
        self._handed: dict[str, str] = {}  # candidate sha256 → description, until the history has it
        self._feedback: list[str] = []
        self._unusable = 0
        self._use_n: bool | None = None
        self._finished = False

    @classmethod
    def from_settings(cls, settings: OptimizeSettings) -> LLMProposer:
        return cls(settings=LLMSettings.from_optimize(settings))

    # -- the run (called by the loop) -------------------------------------------------------------

    def start_run(self, task: KernelTask, out_dir: Path) -> None:
        """Where to keep the audit trail; picks up what the run (other tasks, a resumed run) already spent."""
        self._task, self._out_dir = task, Path(out_dir)
        mine = self._read_summary().get("tasks", {}).get(task.name, {})
        self.usage = Usage.from_dict(mine.get("usage", {}))
        self._refresh_prior()
        folder = self._folder()
        if folder is not None and folder.is_dir():
            numbers = [int(p.name.split(".")[0]) for p in folder.glob("*.json") if p.name.split(".")[0].isdigit()]
            self._next_request = max(numbers, default=0) + 1

    def finish_run(self) -> str:
        """Write the totals; a line for the run's notes."""
        self._finished = True
        if self._inflight is not None and not self._inflight.done():
            self._inflight.cancel()  # not sent yet: never sent; in flight: its cost is still recorded when it ends
        for queued in self._queue:
            queued.round.replies[queued.choice].outcome = "not used: the run ended first"
            self._write_round(queued.round)
        if self._next_request > 1 or self.usage.requests:  # nothing asked, nothing to write
            self._write_summary()
        total = self._total()
        s = self.settings
        budget = f" of ${s.max_cost_usd:g}" if s.max_cost_usd is not None else ""
        unpriced = f" ({total.unpriced_requests} request(s) with no known price)" if total.unpriced_requests else ""
        return (f"LLM {s.model}: {self.usage.requests} request(s) for this task, "
                f"{self.usage.total_tokens} tokens, ${self.usage.cost_usd:.4f}; run total {total.total_tokens} tokens, "
                f"${total.cost_usd:.4f}{budget}{unpriced}")

    # -- proposing --------------------------------------------------------------------------------

    def propose(self, task: KernelTask, best_source: str, best_result: EvalResult | None,
                history: list[Experiment]) -> Candidate | None:
        tried = {r.candidate_sha256 for r in history if r.candidate_sha256}
        self._handed = {sha: d for sha, d in self._handed.items() if sha not in tried}
        n = max((r.n for r in history), default=-1) + 1
        while True:
            if not self._queue:
                round_ = self._next_round(task, best_source, best_result, history)
                if round_ is None:
                    return None
                continue
            queued = self._queue.pop(0)
            problem = self._check(queued, best_source, task, tried)
            if problem:
                self._discard(queued, problem)
                if self._unusable >= self.settings.max_unusable:
                    self.done_reason = (f"{self._unusable} replies in a row held no usable kernel file "
                                        f"(the last: {problem})")
                    return None
                continue
            self._unusable = 0
            return self._hand_out(queued, n, task, best_source, best_result, history)

    def _check(self, queued: _Queued, best_source: str, task: KernelTask, tried: set[str]) -> str | None:
        import hashlib

        if queued.problem:
            return queued.problem
        sha = hashlib.sha256(queued.source.encode()).hexdigest()
        if sha in tried or sha in self._handed:
            return "the reply's kernel file was already tried"
        if _normalise(queued.source) == _normalise(best_source):
            return "the reply's kernel file is the current best file, unchanged"
        return None

    def _discard(self, queued: _Queued, problem: str) -> None:
        self._unusable += 1
        queued.round.replies[queued.choice].outcome = f"discarded: {problem}"
        self._feedback = (self._feedback + [f"reply {queued.round.request}.{queued.choice}: {problem}"])[-3:]
        self._write_round(queued.round)

    def _hand_out(self, queued: _Queued, n: int, task: KernelTask, best_source: str, best_result: EvalResult | None,
                  history: list[Experiment]) -> Candidate:
        import hashlib

        round_ = queued.round
        round_.replies[queued.choice].outcome = f"experiment {n}"
        self._write_round(round_)
        self._handed[hashlib.sha256(queued.source.encode()).hexdigest()] = queued.description
        share = max(1, len(round_.replies))
        params = {"llm_request": round_.request, "llm_choice": queued.choice,
                  "llm_tokens": round_.usage.total_tokens // share,
                  "llm_cost_usd": round(round_.usage.cost_usd / share, 6)}
        candidate = Candidate(source=queued.source, description=queued.description, params=params,
                              proposer=f"{self.name} ({self.settings.model})")
        if not self._queue and self.settings.prefetch and self._inflight is None:
            # The model works on the next candidate while the loop evaluates this one.
            self._inflight = self._start_round(task, best_source, best_result, history)
        return candidate

    def _next_round(self, task: KernelTask, best_source: str, best_result: EvalResult | None,
                    history: list[Experiment]) -> _Round | None:
        """Wait for the round in flight (or start one and wait); queue its replies. None: stop."""
        future = self._inflight or self._start_round(task, best_source, best_result, history)
        self._inflight = None
        if future is None:
            return None
        round_ = future.result()
        if round_.error:
            self.done_reason = round_.error
            return None
        for i, reply in enumerate(round_.replies):
            try:
                source, description = extract_candidate(reply.text, best_source, task.entry)
            except ReplyError as exc:
                cut = " (the reply hit max_reply_tokens)" if reply.finish_reason == "length" else ""
                self._queue.append(_Queued(round_, i, problem=f"{exc}{cut}"))
                continue
            self._queue.append(_Queued(round_, i, source, description))
        return round_

    def _start_round(self, task: KernelTask, best_source: str, best_result: EvalResult | None,
                     history: list[Experiment]) -> Future | None:
        reason = self._over_budget()
        if reason:
            self.done_reason = reason
            return None
        pending = list(self._handed.values())
        n = max(1, self.settings.parallel)
        messages = build_messages(task, best_source, best_result, history, out_dir=self._out_dir, pending=pending,
                                  feedback=self._feedback, n=n)
        round_ = _Round(request=self._next_request, messages=messages, n=n, started_at=time.time())
        self._next_request += 1
        return _in_background(self._run_round, round_)

    def _refresh_prior(self) -> None:
        """What the rest of the run spent, from llm/summary.json (other tasks write it as they go)."""
        if self._task is None:
            return
        prior = Usage()
        for name, entry in self._read_summary().get("tasks", {}).items():
            if name != self._task.name and isinstance(entry, dict):
                prior.add(Usage.from_dict(entry.get("usage", {})))
        self._prior = prior

    def _over_budget(self) -> str:
        s = self.settings
        self._refresh_prior()
        with self._lock:
            total = self._total()
        if s.max_cost_usd is not None:
            estimate = total.max_request_cost_usd
            if total.cost_usd >= s.max_cost_usd or total.cost_usd + estimate > s.max_cost_usd:
                return (f"the LLM budget is spent: ${total.cost_usd:.4f} of ${s.max_cost_usd:g} "
                        f"(a request costs up to ${estimate:.4f})")
        if s.max_total_tokens is not None:
            estimate = total.max_request_tokens
            if total.total_tokens >= s.max_total_tokens or total.total_tokens + estimate > s.max_total_tokens:
                return (f"the LLM token budget is spent: {total.total_tokens} of {s.max_total_tokens} tokens "
                        f"(a request uses up to {estimate})")
        return ""

    def _total(self) -> Usage:
        total = Usage()
        total.add(self._prior)
        total.add(self.usage)
        return total

    # -- requests (on a background thread) --------------------------------------------------------

    def _run_round(self, round_: _Round) -> _Round:
        started = time.monotonic()
        try:
            if round_.n == 1 or self._supports_n():
                self._request(round_, round_.n)
            else:
                parts = [_Round(round_.request, round_.messages, 1) for _ in range(round_.n)]
                for future in [_in_background(self._request, part, 1) for part in parts]:
                    future.result()
                for part in parts:
                    round_.replies += part.replies
                    round_.attempts += part.attempts
                    round_.usage.add(part.usage)
                errors = [p.error for p in parts if p.error]
                if errors and not round_.replies:
                    round_.error = errors[0]
        except Exception as exc:  # noqa: BLE001 - a bug here must end the run with a message, not hang it
            round_.error = f"the LLM request failed: {_error_text(exc)}"
        round_.duration_s = round(time.monotonic() - started, 3)
        self._write_round(round_)
        self._write_summary()
        return round_

    def _supports_n(self) -> bool:
        if self._use_n is None:
            try:
                params = _litellm().get_supported_openai_params(model=self.settings.model) or []
            except Exception:  # noqa: BLE001 - an unknown provider: ask one candidate per request
                params = []
            self._use_n = "n" in params
        return self._use_n

    def _request(self, round_: _Round, n: int) -> None:
        """One completion with retries; fills `round_`'s replies and usage, or its error."""
        litellm = _litellm()
        s = self.settings
        kwargs: dict[str, Any] = {"model": s.model, "messages": round_.messages, "timeout": s.timeout_s,
                                  "max_tokens": s.max_reply_tokens, "max_retries": 0, "num_retries": 0}
        if n > 1:
            kwargs["n"] = n
        if s.temperature is not None:
            kwargs["temperature"] = s.temperature
        for attempt in range(s.max_retries + 1):
            try:
                response = litellm.completion(**kwargs)
            except Exception as exc:  # noqa: BLE001 - translated below: retried, or the run stops with its message
                text = _error_text(exc)
                round_.attempts.append(text)
                if not _retryable(exc) or attempt == s.max_retries:
                    with self._lock:
                        self.usage.failed_requests += 1
                    tries = f" after {attempt + 1} attempts" if attempt else ""
                    round_.error = f"the LLM request failed{tries}: {text}"
                    return
                with self._lock:
                    self.usage.retries += 1
                delay = _retry_after(exc)
                if delay is None:
                    delay = s.backoff_s * 2**attempt * (0.5 + random.random())
                time.sleep(min(delay, s.max_backoff_s))
                continue
            self._account(round_, response, litellm)
            return

    def _account(self, round_: _Round, response: Any, litellm: Any) -> None:
        usage = getattr(response, "usage", None)
        prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion = int(getattr(usage, "completion_tokens", 0) or 0)
        try:
            cost = float(litellm.completion_cost(completion_response=response))
            priced = math.isfinite(cost)
        except Exception:  # noqa: BLE001 - litellm knows no price for this model (a local server, say)
            cost, priced = 0.0, False
        secrets = secret_values()
        for choice in response.choices:
            message = getattr(choice, "message", None)
            round_.replies.append(_Reply(scrub(getattr(message, "content", None) or "", secrets),
                                         getattr(choice, "finish_reason", None)))
        this = Usage(requests=1, prompt_tokens=prompt, completion_tokens=completion, cost_usd=cost if priced else 0.0,
                     unpriced_requests=0 if priced else 1, max_request_cost_usd=cost if priced else 0.0,
                     max_request_tokens=prompt + completion)
        round_.usage.add(this)
        with self._lock:
            self.usage.add(this)

    # -- the record -------------------------------------------------------------------------------

    def _folder(self) -> Path | None:
        if self._out_dir is None or self._task is None:
            return None
        return self._out_dir / "llm" / self._task.name

    def _write_round(self, round_: _Round) -> None:
        folder = self._folder()
        if folder is None:
            return
        from autokernel_ci.loop import write_atomic

        stem = folder / f"{round_.request:04d}"
        prompt = "\n\n".join(f"<!-- {m['role']} -->\n\n{m['content']}" for m in round_.messages)
        write_atomic(stem.with_suffix(".prompt.md"), prompt + "\n")
        replies = "\n\n".join(f"<!-- reply {i} ({r.finish_reason}): {r.outcome or self._unused()} -->\n\n{r.text}"
                              for i, r in enumerate(round_.replies))
        if replies:
            write_atomic(stem.with_suffix(".reply.md"), replies + "\n")
        meta = {"request": round_.request, "task": self._task.name, "model": self.settings.model, "n": round_.n,
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(round_.started_at)),
                "duration_s": round_.duration_s, "usage": round_.usage.to_dict(), "attempts": round_.attempts,
                "error": round_.error, "prompt_chars": sum(len(m["content"]) for m in round_.messages),
                "replies": [{"choice": i, "finish_reason": r.finish_reason, "outcome": r.outcome or self._unused(),
                             "chars": len(r.text)} for i, r in enumerate(round_.replies)]}
        write_atomic(stem.with_suffix(".json"), json.dumps(meta, indent=1) + "\n")

    def _unused(self) -> str:
        return "not used: the run ended first" if self._finished else "not used yet"

    def _summary_path(self) -> Path | None:
        return self._out_dir / "llm" / "summary.json" if self._out_dir is not None else None

    def _read_summary(self) -> dict[str, Any]:
        path = self._summary_path()
        try:
            data = json.loads(path.read_text(encoding="utf-8")) if path is not None and path.is_file() else {}
        except (OSError, ValueError):
            data = {}
        return data if isinstance(data, dict) else {}

    def _write_summary(self) -> None:
        path = self._summary_path()
        if path is None or self._task is None:
            return
        from autokernel_ci.loop import write_atomic

        with _SUMMARY_LOCK, self._lock:
            data = self._read_summary()
            tasks = data.get("tasks", {}) if isinstance(data.get("tasks"), dict) else {}
            tasks[self._task.name] = {"model": self.settings.model, "usage": self.usage.to_dict()}
            total = Usage()
            for entry in tasks.values():
                total.add(Usage.from_dict(entry.get("usage", {})))
            s = self.settings
            budget = {"max_cost_usd": s.max_cost_usd, "max_total_tokens": s.max_total_tokens}
            data = {"model": s.model, "budget": budget, "total": total.to_dict(), "tasks": tasks}
            write_atomic(path, json.dumps(data, indent=1) + "\n")

    def params_of(self, task: KernelTask, source: str) -> dict[str, Any]:
        return {}
