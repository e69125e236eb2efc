"""Render what the bot writes, from real H100 measurements: an optimization PR body and a gate comment.

    python examples/render_examples.py

Inputs (examples/data/, copied unchanged from the GPU runs of 2026-11-25 recorded in
benchmarks/RESULTS.md, except device_run1.json, which keeps only the device record of its run):

- eval_rmsnorm_run2.json: run 2 (18:43 UTC), the `EvalResult` of the library's starter rmsnorm
  kernel through the full gate and timed beside the eager, vendor and torch.compile baselines
  (`benchmarks/eval_builtins.py`).
- device_run1.json: the device probe of run 1 (18:41 UTC, `benchmarks/calibrate_check.py`), the
  only record of that day's GPU driver before run 2 (an EvalResult does not record the driver).
- gate_detection_run8.json: run 8 (23:22 UTC, two H100s), full `gate` runs over the 7 starter
  kernels with one worker and with a worker per GPU (`benchmarks/gate_detection.py --skip-trials
  --gate-workers 1,2`; head = base + a comment in every kernel file).

Outputs: examples/pr_body.md and examples/gate_comment.md. Every figure in them comes from those
files; what the runs did not record is left empty or marked so, and each file's header says which
run it came from and what is missing.

From a new GPU run instead:

    python examples/render_examples.py --gate-json gate.json [--plan plan.json] [--history DIR] \
        [--verify-base base.json --verify-head head.json] [--chart-url URL] [--run-url URL] \
        [--eval-json eval.json --run-dir OPTIMIZE_OUT]

renders gate_comment.md from that gate JSON (`autokernel-ci gate --json`) with the renderer and
context `autokernel-ci report-check` posts (the model-level line from the profiles, numerics from the
history), and, with --eval-json, pr_body.md from that EvalResult (`autokernel-ci eval --json`), its
end-to-end line from the run folder's plan.json / verify.json as `autokernel-ci publish` does.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from autokernel_ci.gate import GateReport, Measurement, ShapeComparison, TaskVerdict
from autokernel_ci.github import DEFAULT_PR_LABELS, GATE_COMMENT_MARKER, PERF_CONTEXT
from autokernel_ci.loop import LoopResult
from autokernel_ci.ops import get_op, starter_source
from autokernel_ci.report.gate_md import render_markdown, status_description
from autokernel_ci.report.pr_body import pr_title, render_pr_body
from autokernel_ci.results import EvalResult
from autokernel_ci.risk import RiskConfig, classify

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
KERNEL_PATH = "kernels/rmsnorm.py"


def load(name: str) -> dict:
    return json.loads((DATA / name).read_text())


# -- the optimization pull request --------------------------------------------------------------------


def new_file_diff(path: str, text: str) -> str:
    """The git diff that adds `path` with `text`: what the risk classifier reads."""
    lines = text.splitlines()
    return "\n".join([f"diff --git a/{path} b/{path}", "new file mode 100644", "--- /dev/null", f"+++ b/{path}",
                      f"@@ -0,0 +1,{len(lines)} @@", *("+" + line for line in lines)]) + "\n"


def pr_body_example() -> str:
    result = EvalResult.from_dict(load("eval_rmsnorm_run2.json"))
    device = load("device_run1.json")
    run = LoopResult(task="rmsnorm", kernel_path=KERNEL_PATH, repo="", branch="", start_commit="", head_commit="",
                     proposer="none", out_dir=DATA, experiments=[], start_result=None, best_result=result,
                     stop_reason="no experiment loop ran: this is the starter kernel as measured in run 2",
                     elapsed_s=0.0, noise=None, representative=result.representative_timing, device=result.device)
    config = RiskConfig()
    risk = classify(get_op("rmsnorm").family, new_file_diff(KERNEL_PATH, starter_source("rmsnorm")), config)
    driver = device["device"]["driver_version"]
    body = render_pr_body(
        [run], risk=risk, risk_config=config,
        environment={"driver": f"{driver} (device probe of run 1 at 18:41 UTC; run 2's results do not record it)"},
        reproduce=["autokernel-ci bench --task rmsnorm --device cuda   # the gate, then timings beside the baselines",
                   "python benchmarks/eval_builtins.py                 # the script that produced these numbers"])
    header = f"""\
# Example: the body of an optimization pull request

Rendered by `python examples/render_examples.py` with `report/pr_body.py`, the renderer `autokernel-ci
publish` uses, from real measurements: run 2 of `benchmarks/RESULTS.md` (2026-11-25 18:43 UTC, one
{result.device}), the `EvalResult` of the library's starter rmsnorm kernel through the full
5-stage gate and timed beside the eager, vendor (`F.rms_norm`) and `torch.compile` baselines
(`examples/data/eval_rmsnorm_run2.json`).

No experiment loop ran in that session, so the "after" column is the starter kernel as measured
there, "before" is empty, the experiment log has no experiments, and there is no progress plot. A
real pull request fills these from the loop's `results.jsonl` and commits the plot on its branch
(`tests/test_publish.py` publishes one). The driver comes from run 1's device probe two minutes
earlier (`examples/data/device_run1.json`). The review section is the risk classifier's verdict
on the starter kernel's source added as `{KERNEL_PATH}`.

Title: `{pr_title([run])}` · labels: {", ".join(f"`{x}`" for x in [*DEFAULT_PR_LABELS, risk.label(config)])}

Below the line: the body, as sent.

---

"""
    return header + body


# -- the gate's sticky comment ------------------------------------------------------------------------


def gate_report_run8() -> tuple[GateReport, dict]:
    """The GateReport of run 8's gate run with two workers (a task per GPU), as far as its JSON records it.

    Recorded per task: verdict, reason, the GPU it ran on, the deciding head/base ratio with its 99 %
    interval, the A/A noise and the rounds; per shape, the base and head medians and the rounds. Not
    recorded: the samples and the commit SHAs (the run used a temporary repository), so the refs are
    named instead; each shape's rounds are carried by measurement records with empty sample lists.
    """
    data = load("gate_detection_run8.json")
    run = next(r for r in data["gate_runs"] if r.get("workers") == 2)
    threshold = float(data["threshold"])
    verdicts = []
    for v in run["verdicts"]:
        effective = max(threshold, v["noise"])
        # The JSON keeps the interval of the deciding shape only (the task's); the other shapes show none.
        deciding = min(v["shapes"], key=lambda sh: abs(sh["head_median_us"] / sh["base_median_us"] - v["ratio"]))
        shapes = [ShapeComparison(shape=dict(sh["shape"]), dtype="bf16", verdict=v["verdict"], reason=v["reason"],
                                  ratio=sh["head_median_us"] / sh["base_median_us"],
                                  ci_lo=v["ci_lo"] if sh is deciding else None,
                                  ci_hi=v["ci_hi"] if sh is deciding else None,
                                  effective_threshold=effective, noise=v["noise"], noise_source=sh["noise_source"],
                                  aa_ratios=list(sh["aa_ratios"]), base_median_us=sh["base_median_us"],
                                  head_median_us=sh["head_median_us"],
                                  measurements=[Measurement(decision={}, base_us=[[] for _ in range(n)],
                                                            head_us=[[] for _ in range(n)]) for n in sh["rounds"]])
                  for sh in v["shapes"]]
        verdicts.append(TaskVerdict(task=v["task"], verdict=v["verdict"], reason=v["reason"],
                                    path=f"kernels/{v['task']}.py", timing_measured=True, ratio=v["ratio"],
                                    ci_lo=v["ci_lo"], ci_hi=v["ci_hi"], threshold=threshold, noise=v["noise"],
                                    effective_threshold=effective, rounds=v["rounds"], shapes=shapes, gpu=v["gpu"]))
    dev = data["device"]
    report = GateReport(base="the 7 starter kernels", base_sha="HEAD~1", head="+ a comment in every kernel file",
                        head_sha="HEAD", device=dev["name"], timings_measured=True, threshold=threshold,
                        verdicts=verdicts, exit_code=run["exit_code"], duration_s=run["wall_s"],
                        started_at=data["date"], workers=int(run["workers"]),
                        environment={"driver": dev["driver_version"], "cuda": dev["cuda_version"],
                                     "torch": dev["torch_version"], "triton": dev["triton_version"]})
    return report, data


def gate_comment_example() -> str:
    report, data = gate_report_run8()
    comment = f"{GATE_COMMENT_MARKER}\n{render_markdown(report)}"
    dev = data["device"]
    one_worker = next(r for r in data["gate_runs"] if r.get("workers") == 1 and r["label"].startswith("cold"))
    header = f"""\
# Example: the gate's sticky comment on a pull request

Rendered by `python examples/render_examples.py` with `report/gate_md.py`, the renderer `autokernel-ci
gate` posts with, from a real gate run: run 8 of `benchmarks/RESULTS.md`
(`examples/data/gate_detection_run8.json`, the run with two workers).

- When and where: {data['date'][:16].replace('T', ' ')} UTC; 2 × {dev['name']} of one host, a task per GPU; \
driver {dev['driver_version']}, torch {dev['torch_version']}, triton {dev['triton_version']}.
- Base: the 7 built-in starter kernels in a temporary repository; head: the same files plus a
  comment, so every task is gated and nothing should change.
- Wall time {report.duration_s:.1f} s from empty caches (one worker on one GPU: {one_worker['wall_s']:.1f} s).
- Not recorded by the run, so left empty: the commit SHAs (the refs `HEAD~1` and `HEAD` stand in) and
  the samples behind each median.

Commit status `{PERF_CONTEXT}`: {"success" if report.passed else "failure"}, "{status_description(report)}".

Below the line: the comment, as posted (the first line is the hidden marker that keeps it one
comment, edited in place).

---

"""
    return header + comment


def gate_comment_from_json(args: argparse.Namespace) -> str:
    """The sticky comment of the gate run in `args.gate_json`, as `report-check` would post it."""
    from autokernel_ci.commands.report_check import build_context, load_gate_json
    from autokernel_ci.harness.device import fingerprint_label

    report = load_gate_json(args.gate_json)
    ns = argparse.Namespace(history=args.history, config=None, plan=args.plan, verify_base=args.verify_base,
                            verify_head=args.verify_head, artifact_url=args.artifact_url, chart_url=args.chart_url,
                            risk=None, repo=None)
    context, _ = build_context(ns, report, args.run_url)
    comment = f"{GATE_COMMENT_MARKER}\n{render_markdown(report, context)}"
    models = "the model-level line from " + ", ".join(f"`{Path(p).name}`" for p in args.plan) if args.plan else \
        "no profile given, so no model-level line"
    header = f"""\
# Example: the gate's sticky comment on a pull request

Rendered by `python examples/render_examples.py --gate-json {Path(args.gate_json).name}` with
`report/gate_md.py`, the renderer `autokernel-ci report-check` posts with, from a real gate run:
{report.started_at[:16].replace('T', ' ')} UTC on {fingerprint_label(report.fingerprint or None)};
base `{report.base_sha[:12]}`, head `{report.head_sha[:12]}`; {models}.

Commit status `{PERF_CONTEXT}`: {"success" if report.passed else "failure"}, "{status_description(report)}".

Below the line: the comment, as posted.

---

"""
    return header + comment


def pr_body_from_json(args: argparse.Namespace) -> str:
    from autokernel_ci.commands.publish import end_to_end

    result = EvalResult.from_json(Path(args.eval_json).read_text())
    run = LoopResult(task=result.task, kernel_path=KERNEL_PATH, repo="", branch="", start_commit="", head_commit="",
                     proposer="none", out_dir=DATA, experiments=[], start_result=None, best_result=result,
                     stop_reason=f"the kernel as measured in {Path(args.eval_json).name}", elapsed_s=0.0, noise=None,
                     representative=result.representative_timing, device=result.device)
    config = RiskConfig()
    risk = classify(get_op(result.task).family, new_file_diff(KERNEL_PATH, starter_source(result.task)), config)
    e2e = end_to_end(Path(args.run_dir), [run]) if args.run_dir else None
    body = render_pr_body([run], risk=risk, risk_config=config, end_to_end=e2e)
    header = f"""\
# Example: the body of an optimization pull request

Rendered by `python examples/render_examples.py --eval-json {Path(args.eval_json).name}` with
`report/pr_body.py`, the renderer `autokernel-ci publish` uses, from the `EvalResult` of {result.task} on
{result.device}; {"the end-to-end line from " + Path(args.run_dir).name if e2e else "no end-to-end figure"}.

---

"""
    return header + body


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Render examples/gate_comment.md and examples/pr_body.md.")
    parser.add_argument("--gate-json", help="a gate JSON (gate --json) to render the comment from")
    parser.add_argument("--plan", action="append", default=[], help="a model's profile (profile --json)")
    parser.add_argument("--verify-base", action="append", default=[], help="verify --json of the base")
    parser.add_argument("--verify-head", action="append", default=[], help="verify --json of the head")
    parser.add_argument("--history", help="a folder of earlier gate JSONs (numerics)")
    parser.add_argument("--chart-url", help="the history chart to link")
    parser.add_argument("--run-url", help="the measuring run to link")
    parser.add_argument("--artifact-url", help="the gate JSON artifact to link")
    parser.add_argument("--eval-json", help="an EvalResult (eval --json) to render the PR body from")
    parser.add_argument("--run-dir", help="an optimize output folder: its plan.json / verify.json")
    args = parser.parse_args(argv)
    outputs = [("pr_body.md", pr_body_from_json(args) if args.eval_json else pr_body_example()),
               ("gate_comment.md", gate_comment_from_json(args) if args.gate_json else gate_comment_example())]
    for name, text in outputs:
        (HERE / name).write_text(text)
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main()
