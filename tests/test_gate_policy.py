"""The gate's policy comes from the base: a pull request cannot change its own verdict.

Real git repositories in temporary folders, the real correctness gate under the Triton interpreter,
and the local GitHub server over real HTTP for approvals. The expensive gate runs are shared: one
head that tries every way of changing its verdict at once (each test reads its scenario from that one
report), and one honest head branched from an older base.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from github_server import FakeGitHub

from autokernel_ci.cli import main
from autokernel_ci.closure import import_closure
from autokernel_ci.commands.gate import accept_approved_policy
from autokernel_ci.config import load_config, policy_changes
from autokernel_ci.gate import GateReport, run_gate
from autokernel_ci.github import GitHubClient, RequestPolicy
from autokernel_ci.report.gate_md import render_markdown

ROOT = Path(__file__).resolve().parents[1]
RIGHT = (ROOT / "examples" / "kernels" / "rmsnorm.py").read_text()
TEN_PERCENT_OFF = RIGHT.replace("(x * rstd * w)", "(x * rstd * w * 1.1)")
FIRST_TWO_ROWS = RIGHT.replace("_rmsnorm_kernel[(n_rows,)]", "_rmsnorm_kernel[(min(n_rows, 2),)]")
CALLS_TORCH = ("import torch.nn.functional as F\n\n\ndef kernel_fn(x, weight, eps=1e-6):\n"
               "    return F.rms_norm(x, (x.shape[-1],), weight, eps)\n")
HELPED = (RIGHT.replace("import torch\n", "import torch\nfrom kernels.rows import launched_rows\n", 1)
          .replace("_rmsnorm_kernel[(n_rows,)]", "_rmsnorm_kernel[(launched_rows(n_rows),)]"))
ROWS = "def launched_rows(n):\n    return n\n"
ROWS_HALF = "def launched_rows(n):\n    return (n + 1) // 2\n"
REFS = ("from autokernel_ci.ops.rmsnorm import make_inputs, reference\n\n\n"
        "def rms_ref(x, weight, eps=1e-6):\n    return reference(x, weight, eps)\n")
REFS_MATCHING_THE_WRONG_KERNEL = REFS.replace("return reference(x, weight, eps)",
                                              "return reference(x, weight, eps) * 1.1")
SHAPES = "[{rows: 2, dim: 8}, {rows: 5, dim: 8}]"
STAGES = ("smoke", "shapes", "dtypes")
FAST = RequestPolicy(attempts=2, backoff_s=0.01, backoff_max_s=0.05, seconds_between_requests=0.0,
                     seconds_between_writes=0.0)


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", "-c", "user.name=policy test", "-c", "user.email=policy@example.com", *args],
                         cwd=repo, capture_output=True, text=True, check=True)
    return out.stdout


def commit(repo: Path, files: dict[str, str | None], message: str) -> str:
    for name, text in files.items():
        path = repo / name
        if text is None:
            path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


def task(name: str, path: str | None = None, extra: str = "", source: str = "op: rmsnorm") -> str:
    return f"  - name: {name}\n    {source}\n    path: {path or f'kernels/{name}.py'}\n{extra}"


def shapes(text: str = SHAPES) -> str:
    return f"    shapes: {text}\n"


BASE_CONFIG = ("version: 1\ngate:\n  threshold: 0.03\nkernels:\n"
               + task("thresh", extra=shapes())
               + task("tol", extra=shapes())
               + task("shapes", extra=shapes())
               + task("dtype", extra=shapes() + "    dtypes: [fp32, fp16]\n")
               + task("allow", extra=shapes())
               + task("ref", source="reference: policy_refs:rms_ref\n    inputs: policy_refs:make_inputs",
                      extra=shapes())
               + task("gone")
               + task("renamed")
               + task("helped", extra=shapes())
               + task("moved", extra=shapes()))

ATTACK_CONFIG = (BASE_CONFIG
                 .replace("threshold: 0.03", "threshold: 0.5")
                 .replace(task("tol", extra=shapes()),
                          task("tol", extra=shapes() + "    tolerance: {fp32: [0.5, 0.5]}\n"))
                 .replace(task("shapes", extra=shapes()), task("shapes", extra=shapes("[{rows: 2, dim: 8}]")))
                 .replace("dtypes: [fp32, fp16]", "dtypes: [fp32]")
                 .replace(task("allow", extra=shapes()),
                          task("allow", extra=shapes() + "    allow: [dynamic.torch-compute]\n"))
                 .replace(task("gone"), "")
                 .replace("name: renamed", "name: renamed2")
                 .replace("path: kernels/moved.py", "path: kernels/sub/moved.py"))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("policy") / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    files: dict[str, str | None] = {".autokernel.yml": BASE_CONFIG, "policy_refs.py": REFS, "kernels/rows.py": ROWS}
    for name in ("thresh", "tol", "shapes", "dtype", "allow", "ref", "gone", "renamed", "moved"):
        files[f"kernels/{name}.py"] = RIGHT
    files["kernels/helped.py"] = HELPED
    commit(root, files, "base")
    git(root, "tag", "base0")
    # One head that tries every way a pull request could change its own verdict.
    git(root, "checkout", "-q", "-b", "attack")
    commit(root, {".autokernel.yml": ATTACK_CONFIG, "kernels/tol.py": TEN_PERCENT_OFF,
                  "kernels/shapes.py": FIRST_TWO_ROWS, "kernels/allow.py": CALLS_TORCH,
                  "policy_refs.py": REFS_MATCHING_THE_WRONG_KERNEL, "kernels/ref.py": TEN_PERCENT_OFF,
                  "kernels/gone.py": None, "kernels/rows.py": ROWS_HALF, "kernels/moved.py": None,
                  "kernels/sub/moved.py": RIGHT}, "a head that changes how it is judged")
    # An honest head that branched from the same base, which has moved on since in another kernel.
    git(root, "checkout", "-q", "-b", "honest", "base0")
    commit(root, {"kernels/thresh.py": RIGHT + "# tidied\n"}, "touch thresh only")
    git(root, "checkout", "-q", "main")
    commit(root, {"kernels/dtype.py": RIGHT + "# main moved on\n",
                  ".autokernel.yml": BASE_CONFIG.replace("threshold: 0.03", "threshold: 0.04")},
           "main changes another kernel and its own threshold")
    return root


@pytest.fixture(scope="module")
def attack(repo: Path) -> GateReport:
    return run_gate(repo, "base0", "attack", device="cpu", stages=STAGES)


@pytest.fixture(scope="module")
def honest(repo: Path) -> GateReport:
    return run_gate(repo, "main", "honest", device="cpu", stages=STAGES)


def verdicts(report: GateReport) -> dict[str, str]:
    return {v.task: v.verdict for v in report.verdicts}


def changed_keys(report: GateReport) -> dict[str, tuple]:
    return {c["key"]: (c["base"], c["head"]) for c in report.policy_changes}


# --- every attempt is named, and the head is judged by the base's policy --------------------------


def test_every_policy_change_blocks_with_its_key_and_both_values(attack: GateReport):
    keys = changed_keys(attack)
    assert keys["gate.threshold"] == (0.03, 0.5)
    assert keys["kernels.tol.tolerance.fp32"] == (None, [0.5, 0.5])
    assert keys["kernels.shapes.shapes"][1] == [{"rows": 2, "dim": 8}]
    assert keys["kernels.dtype.dtypes"] == (["fp32", "fp16"], ["fp32"])
    assert keys["kernels.allow.allow"] == ([], ["dynamic.torch-compute"])
    assert keys["kernels.ref policy code policy_refs.py"][1].startswith("sha256 ")
    # A moved file under the same name is the same task, not a policy change; nor is a kernel file.
    assert not any("moved" in k or k.endswith(".path") for k in keys)
    assert verdicts(attack)["(policy)"] == "policy-changed" and attack.exit_code == 1
    md = render_markdown(attack)
    assert "| policy key | base | head |" in md and "| `gate.threshold` | `0.03` | `0.5` |" in md
    assert "approves head" in md


def test_the_heads_kernels_are_judged_by_the_base_policy(attack: GateReport):
    """Each wrong kernel would pass under the head's own config; under the base's it fails."""
    got = {v.task: v for v in attack.verdicts}
    assert attack.threshold == 0.03  # the head's 0.5 was not used
    assert got["tol"].verdict == "fail"  # 10 % off: the base's fp32 tolerance, not [0.5, 0.5]
    assert got["shapes"].verdict == "fail"  # right for 2 rows only: the base's 5-row shape catches it
    assert got["allow"].verdict == "fail" and got["allow"].head_status == "REJECTED"  # no allow: entry in base
    assert got["ref"].verdict == "fail"  # judged against the base's reference, not the edited one
    assert got["dtype"].verdict == "pass" and "fp16" in json.dumps(got["dtype"].head_result)  # both dtypes run


def test_a_changed_helper_gates_the_kernel_that_imports_it_and_the_wrong_helper_fails(attack: GateReport):
    got = {v.task: v for v in attack.verdicts}
    assert got["helped"].verdict == "fail" and "NaN" in got["helped"].reason
    assert "thresh" in attack.unchanged  # imports nothing that changed


def test_removed_and_renamed_tasks_block_and_a_moved_file_is_the_same_task(attack: GateReport):
    got = {v.task: v for v in attack.verdicts}
    assert got["gone"].verdict == "removed" and got["gone"].blocking
    assert got["renamed"].verdict == "removed" and got["renamed2"].verdict == "new"
    assert not got["renamed2"].blocking and got["renamed2"].head_status == "PASS"
    assert got["moved"].verdict == "pass" and got["moved"].path == "kernels/sub/moved.py"
    assert got["moved"].base_status == "ok"  # run against the base's kernels/moved.py


def test_an_honest_head_behind_its_base_passes_and_is_gated_only_for_its_own_change(honest: GateReport, repo: Path):
    assert [(v.task, v.verdict) for v in honest.verdicts] == [("thresh", "pass")]
    assert "dtype" in honest.unchanged  # main changed it after the head branched: not the head's doing
    assert honest.policy_changes == []  # main's own threshold change is not the head's either
    assert honest.threshold == 0.04 and honest.exit_code == 0  # the policy of the base it merges into
    assert honest.merge_base == git(repo, "rev-parse", "base0").strip() != honest.base_sha
    assert f"merge base `{honest.merge_base[:12]}`" in render_markdown(honest)


def test_the_threshold_flag_may_tighten_the_base_never_loosen_it(repo: Path):
    looser = run_gate(repo, "main", "main", device="cpu", threshold=0.2)
    tighter = run_gate(repo, "main", "main", device="cpu", threshold=0.01)
    assert looser.threshold == 0.04 and any("only be tightened" in n for n in looser.notes)
    assert tighter.threshold == 0.01


# --- acceptance: a writer other than the author approves the gated head commit --------------------


def test_policy_changes_unit():
    """Keys the base changed after the head branched are not the head's; a new task is not a change."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in ("k.py", "n.py"):
            (root / name).write_text(RIGHT)

        def cfg(text: str):
            (root / ".autokernel.yml").write_text(text)
            return load_config(root / ".autokernel.yml")

        one = "version: 1\nkernels:\n  - {name: k, op: rmsnorm, path: k.py}\n"
        since = cfg(one)
        base = cfg(one.replace("path: k.py}", "path: k.py, dtypes: [fp32]}"))
        head = cfg(one + "  - {name: n, op: rmsnorm, path: n.py}\n")
        assert policy_changes(base, head, since) == []
        head = cfg(one.replace("op: rmsnorm", "op: layernorm"))
        assert [(c.key, c.base, c.head) for c in policy_changes(base, head, since)] == [
            ("kernels.k.op", "rmsnorm", "layernorm")]


@pytest.fixture
def pr_repo(tmp_path: Path) -> tuple[Path, str, str]:
    """A head that only raises the threshold, and carries its own `autokernel_ci` and `github` packages."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    config = "version: 1\nkernels:\n" + task("rmsnorm", extra=shapes())
    older = commit(root, {".autokernel.yml": config, "kernels/rmsnorm.py": RIGHT}, "base")
    git(root, "checkout", "-q", "-b", "pr")
    marker = tmp_path / "MARKER"
    shadow = f"open({str(marker)!r}, 'a').write(__name__ + '\\n')\n"
    commit(root, {"autokernel_ci/__init__.py": shadow, "autokernel_ci/__main__.py": shadow,
                  "github/__init__.py": shadow}, "vendor some packages")
    head = commit(root, {".autokernel.yml": config.replace("version: 1\n", "version: 1\ngate: {threshold: 0.9}\n")},
                  "raise the threshold")
    return root, older, head


def test_a_policy_change_is_lifted_only_by_a_writer_approving_the_current_head(pr_repo, tmp_path: Path):
    root, older, head = pr_repo
    server = FakeGitHub("acme", "models").start()
    try:
        server.add_token("ghs_gate", "github-actions[bot]")
        server.add_collaborator("maintainer", "write")
        number = server.add_fork_pr("contrib", "pr", head, number=7)  # opened by contrib
        client = GitHubClient("ghs_gate", "acme/models", server.api_url, policy=FAST)
        report = run_gate(root, "main", head, device="cpu")
        assert verdicts(report) == {"(policy)": "policy-changed"} and report.exit_code == 1

        server.add_review(number, "contrib", "APPROVED", head)  # the author approving their own change
        assert not accept_approved_policy(report, client, number) and report.exit_code == 1
        server.add_review(number, "maintainer", "APPROVED", older)  # a writer, but an older commit
        assert not accept_approved_policy(report, client, number) and report.exit_code == 1
        assert "not accepted" in report.notes[-1]

        # A writer approves the head: the CLI, run the way the action runs it (isolated, from the
        # checkout of a head that carries its own autokernel_ci/ and github/), lifts the block.
        server.add_review(number, "maintainer", "APPROVED", head)
        event = tmp_path / "event.json"
        event.write_text(json.dumps({"number": number, "pull_request": {
            "number": number, "head": {"sha": head, "repo": {"full_name": "acme/models"}},
            "base": {"sha": older, "repo": {"full_name": "acme/models"}}}}))
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GITHUB_TOKEN": "ghs_gate",
               "GITHUB_REPOSITORY": "acme/models", "GITHUB_API_URL": server.api_url,
               "GITHUB_EVENT_PATH": str(event), "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
               "TRITON_INTERPRET": "1", "PYTHONPATH": str(root)}  # -I must ignore PYTHONPATH too
        launch = (f"import runpy, sys; sys.path.insert(0, {str(ROOT)!r}); "
                  "runpy.run_module('autokernel_ci', run_name='__main__')")  # the installed package, run -I
        out = subprocess.run([sys.executable, "-I", "-c", launch, "gate", "--base", "main", "--head", head,
                              "--device", "cpu", "--github", "--json", str(tmp_path / "gate.json")],
                             cwd=root, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stdout + out.stderr
        assert not (tmp_path / "MARKER").exists()
        lifted = GateReport.from_json((tmp_path / "gate.json").read_text())
        assert lifted.verdicts[0].accepted_by.startswith("approved by @maintainer")
        assert server.combined_state(head, "autokernel/perf") == "success"
        assert "policy-changed (accepted)" in (tmp_path / "summary.md").read_text()
        assert server.violations == []
    finally:
        server.stop()


def test_the_action_runs_every_interpreter_of_the_gate_isolated():
    action = (ROOT / "action.yml").read_text()
    gate_step = action[action.index("- name: Gate the pull request"):action.index("- name: Profile the models")]
    calls = [line for line in gate_step.splitlines() if '"$AK_PYTHON"' in line]
    assert len(calls) >= 3
    # Every step: a checkout's files on sys.path could shadow the package in any of them.
    every = [line for line in action.splitlines() if '"$AK_PYTHON"' in line]
    assert every and all('"$AK_PYTHON" -I ' in line for line in every), [ln for ln in every if " -I " not in ln]


# --- the import closure, read statically ----------------------------------------------------------


def test_the_import_closure_follows_repository_imports_and_runs_nothing(tmp_path: Path):
    marker = tmp_path / "RAN"
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text(f"open({str(marker)!r}, 'w')\n")
    (tmp_path / "pkg" / "deep.py").write_text("from . import leaf\n")
    (tmp_path / "pkg" / "leaf.py").write_text("import torch\n")
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "sibling.py").write_text("X = 1\n")
    kernel = tmp_path / "kernels" / "k.py"
    kernel.write_text("import torch\nfrom pkg import deep\nimport sibling\ndef f():\n    import pkg.leaf\n")
    found = import_closure([kernel], tmp_path, search=[tmp_path / "kernels", tmp_path])
    assert {p.relative_to(tmp_path).as_posix() for p in found} == {
        "kernels/k.py", "pkg/__init__.py", "pkg/deep.py", "pkg/leaf.py", "kernels/sibling.py"}
    assert not marker.exists()


# --- bad input: one clear line, a non-zero exit, no traceback --------------------------------------


def test_a_base_without_a_config_is_one_clear_error(tmp_path: Path, capsys):
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    commit(root, {"kernels/rmsnorm.py": RIGHT}, "no config yet")
    commit(root, {".autokernel.yml": "version: 1\nkernels:\n" + task("rmsnorm")}, "add one")
    code = main(["gate", "--repo", str(root), "--base", "HEAD~1", "--head", "HEAD", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "the base (HEAD~1" in err and "has no .autokernel.yml" in err
    assert "merges into" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_unrelated_histories_and_an_invalid_head_config_are_one_clear_error(repo: Path, capsys):
    git(repo, "checkout", "-q", "--orphan", "unrelated")
    try:
        commit(repo, {"README": "other history\n"}, "unrelated")
    finally:
        git(repo, "checkout", "-q", "-f", "main")
    code = main(["gate", "--repo", str(repo), "--base", "unrelated", "--head", "main", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "is not an ancestor" in err and "share no history" in err and "Traceback" not in err

    git(repo, "checkout", "-q", "-b", "broken", "main")
    try:
        commit(repo, {".autokernel.yml": BASE_CONFIG.replace("threshold: 0.03", "threshold: lots")}, "broken")
    finally:
        git(repo, "checkout", "-q", "main")
    code = main(["gate", "--repo", str(repo), "--base", "main", "--head", "broken", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "head's config is invalid" in err and "gate.threshold" in err and "Traceback" not in err


def test_a_head_module_shadowing_one_the_reference_imports_is_a_policy_change(tmp_path: Path):
    """The cheat: the reference imports `scaling`, which the base does not have (an installed module); the
    head adds its own `scaling.py` and has its kernel import it, so it would be overlaid and stand in for
    the reference's. The honest case beside it: a new helper only the kernel imports changes no policy."""
    from autokernel_ci import gate

    base, head = tmp_path / "base", tmp_path / "head"
    for tree in (base, head):
        (tree / "kernels").mkdir(parents=True)
        (tree / "refs.py").write_text("import scaling\n\ndef ref(x):\n    return x\n")
        (tree / ".autokernel.yml").write_text(
            "version: 1\nkernels:\n  - {name: k, reference: refs:ref, inputs: refs:ref, path: kernels/k.py, "
            "shapes: [{n: 1}]}\n")
    (base / "kernels" / "k.py").write_text("def kernel_fn(x):\n    return x\n")
    (head / "kernels" / "k.py").write_text("import scaling\nimport kernels.mine\ndef kernel_fn(x):\n    return x\n")
    (head / "scaling.py").write_text("SCALE = 1.1\n")
    (head / "kernels" / "mine.py").write_text("X = 1\n")
    cfg = load_config(base / ".autokernel.yml")
    changed = {"kernels/k.py", "scaling.py", "kernels/mine.py"}
    entry = cfg.kernels[0]
    overlay = gate.kernel_closure(entry, head, Path(".")) & changed
    assert overlay == changed  # both helpers are the kernel's to change
    judged = gate.judged_tree(base, head, tmp_path / "judged", overlay - gate.policy_closure(entry, base, Path(".")))
    changes = gate._policy_file_changes(cfg, base, head, judged, Path("."), changed)
    assert [(c.key, c.base) for c in changes] == [("kernels.k policy code scaling.py", "not imported")]
