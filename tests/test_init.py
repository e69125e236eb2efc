"""`autokernel-ci init` on a temporary repository: the workflows, and a starter config that `eval` accepts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from test_action import actionlint

from autokernel_ci.cli import main
from autokernel_ci.commands.init import classify_file, find_triton_files, init_repository
from autokernel_ci.config import load_config
from autokernel_ci.ops import starter_source

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ("autokernel-gate.yml", "autokernel-gate-report.yml", "autokernel-optimize.yml", "autokernel-review.yml")
CUSTOM = '''\
import triton
import triton.language as tl


@triton.jit
def _gelu(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n)
    tl.store(y_ptr + offs, x * tl.sigmoid(1.702 * x), mask=offs < n)


def kernel_fn(x):
    return x
'''


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "user-repo"
    (root / "src" / "kernels").mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "kernels" / "rmsnorm.py", root / "src" / "kernels" / "rmsnorm.py")
    (root / "src" / "kernels" / "gelu.py").write_text(CUSTOM)
    (root / "src" / "model.py").write_text("import torch\n\n\ndef build():\n    return torch.nn.Linear(2, 2)\n")
    (root / ".venv" / "lib").mkdir(parents=True)
    (root / ".venv" / "lib" / "vendored.py").write_text(CUSTOM)  # someone else's kernels: not a task
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    return root


def test_init_writes_workflows_and_a_config_that_eval_accepts(repo: Path, capsys):
    assert main(["init", "--repo", str(repo), "--runner-label", "h100"]) == 0

    for name in WORKFLOWS:
        text = (repo / ".github" / "workflows" / name).read_text()
        assert "autokernel-ci/autokernel-ci@v0" in text
        if "self-hosted" in text:
            assert ("vars.AUTOKERNEL_RUNNER_LABEL || 'h100'" in text) != ("AUTOKERNEL_GATE_RUNNER_LABEL" in text)
    actionlint(repo / ".github" / "workflows")
    cfg = load_config(repo / ".autokernel.yml")
    assert [(k.name, k.path, k.op) for k in cfg.kernels] == [("rmsnorm", "src/kernels/rmsnorm.py", "rmsnorm")]
    text = (repo / ".autokernel.yml").read_text()
    assert "#   path: src/kernels/gelu.py" in text and "reference:" in text and "inputs:" in text
    assert "vendored" not in text

    capsys.readouterr()
    assert main(["eval", "--task", "rmsnorm", "--candidate", str(repo / "src" / "kernels" / "rmsnorm.py"),
                 "--config", str(repo / ".autokernel.yml"), "--timeout", "120"]) == 0
    assert "PASS" in capsys.readouterr().out


def test_init_never_overwrites_without_force(repo: Path, capsys):
    (repo / ".autokernel.yml").write_text("version: 1\nkernels: []\n# mine\n")
    assert main(["init", "--repo", str(repo)]) == 0
    assert (repo / ".autokernel.yml").read_text().endswith("# mine\n")
    assert "kept (exists): .autokernel.yml" in capsys.readouterr().out
    gate = repo / ".github" / "workflows" / "autokernel-gate.yml"
    gate.write_text("# my own gate\n")

    done = init_repository(repo, force=True, matrix=True, action="acme/autokernel-ci@0123abc")
    assert done[gate] == "replaced" and "acme/autokernel-ci@0123abc" in gate.read_text()
    assert (repo / ".github" / "workflows" / "autokernel-optimize-matrix.yml").is_file()
    assert load_config(repo / ".autokernel.yml").kernels[0].op == "rmsnorm"


def test_a_kernel_fn_signature_proposes_its_builtin_op(tmp_path: Path):
    kernels = tmp_path / "k"
    kernels.mkdir()
    for op in ("layernorm", "softmax", "cross_entropy", "matmul"):
        (kernels / f"my_{op}.py").write_text(starter_source(op))
    (kernels / "gelu.py").write_text(CUSTOM)  # kernel_fn(x) like softmax, but nothing says softmax
    (kernels / "notes.py").write_text("JIT = 'triton.jit is only mentioned here'\n")
    found = {p.name: classify_file(tmp_path, p).op for p in find_triton_files(tmp_path)}
    assert found == {"gelu.py": None, "my_cross_entropy.py": "cross_entropy", "my_layernorm.py": "layernorm",
                     "my_matmul.py": "matmul", "my_softmax.py": "softmax"}


def test_bad_runner_label_is_refused(repo: Path):
    assert main(["init", "--repo", str(repo), "--runner-label", "gpu' || 'evil"]) == 2
    assert not (repo / ".github").exists()


def test_init_writes_codeowners_for_the_kernels_config_and_workflows_and_dependabot(repo: Path, capsys):
    from autokernel_ci.github import owners_for, parse_codeowners

    assert main(["init", "--repo", str(repo), "--codeowners", "@acme/kernels", "--action",
                 "acme/autokernel-ci@" + "a" * 40, "--action-version", "v0.1.0"]) == 0
    rules = parse_codeowners((repo / ".github" / "CODEOWNERS").read_text())
    for path in ("src/kernels/rmsnorm.py", "src/kernels/gelu.py", ".autokernel.yml",
                 ".github/workflows/autokernel-gate.yml", ".github/CODEOWNERS"):
        assert owners_for(path, rules) == ("@acme/kernels",), path
    assert owners_for("src/model.py", rules) == ()  # only what the gate trusts and the bot edits
    dependabot = (repo / ".github" / "dependabot.yml").read_text()
    assert "package-ecosystem: github-actions" in dependabot
    gate = (repo / ".github" / "workflows" / "autokernel-gate.yml").read_text()
    assert "uses: acme/autokernel-ci@" + "a" * 40 + " # v0.1.0" in gate
    assert "AUTOKERNEL_GATE_RUNNER_LABEL || 'gpu-untrusted'" in gate
    assert "warning" not in capsys.readouterr().out


def test_init_without_a_known_owner_leaves_codeowners_for_the_user_to_fill_and_says_so(repo: Path, capsys):
    assert main(["init", "--repo", str(repo)]) == 0
    text = (repo / ".github" / "CODEOWNERS").read_text()
    assert "# /src/kernels/rmsnorm.py @OWNER" in text
    out = capsys.readouterr().out
    assert "name them in .github/CODEOWNERS" in out and "a tag that can be moved" in out


@pytest.mark.parametrize("args, said", [
    (["--runner-label", "gpu", "--gate-runner-label", "gpu"], "must not take the optimize jobs"),
    (["--codeowners", "acme"], "--codeowners must be"),
    (["--gate-runner-label", "self-hosted"], "--gate-runner-label must be"),
])
def test_init_refuses_labels_and_owners_that_would_be_unsafe(repo: Path, capsys, args, said):
    assert main(["init", "--repo", str(repo), *args]) == 2
    assert said in capsys.readouterr().err and not (repo / ".github").exists()
