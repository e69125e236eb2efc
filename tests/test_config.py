"""`.autokernel.yml`: a valid file loads; every mistake is named with the file, the key and what was expected."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from autokernel_ci.config import load_config
from autokernel_ci.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / ".autokernel.yml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "rmsnorm.py").write_text("def kernel_fn(x, weight, eps=1e-6):\n    return x\n")
    (tmp_path / "refs.py").write_text("def gelu(x):\n    return x\n\n"
                                      "def make_inputs(shape, dtype, gen, kind):\n    pass\n")
    return tmp_path


def test_valid_config_loads_with_defaults(repo: Path) -> None:
    cfg = load_config(write(repo, """
        version: 1
        kernels:
          - name: rms
            path: kernels/rmsnorm.py
            op: rmsnorm
          - name: gelu
            path: kernels/rmsnorm.py
            reference: refs:gelu
            inputs: refs:make_inputs
            shapes: [{rows: 7, dim: 33}]
            dtypes: [fp32, bf16]
            tolerance: {bf16: [0.01, 0.02]}
        gate: {threshold: 0.05}
    """))
    assert [k.name for k in cfg.kernels] == ["rms", "gelu"]
    assert cfg.kernel("gelu").tolerance == {"bf16": (0.01, 0.02)}
    assert cfg.gate.threshold == 0.05
    assert cfg.optimize.proposer == "tuner"


def test_typo_in_a_key_names_the_key_path_and_suggests_the_right_one(repo: Path) -> None:
    path = write(repo, """
        version: 1
        kernels:
          - name: rms
            path: kernels/rmsnorm.py
            op: rmsnorm
            dtpyes: [fp32]
    """)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message
    assert "kernels[0].dtpyes: unknown key" in message
    assert "did you mean 'dtypes'" in message


def test_every_problem_is_reported_at_once(repo: Path) -> None:
    path = write(repo, """
        version: 2
        kernels:
          - name: rms
            path: kernels/missing.py
            op: rmsnrom
        gate: {threshold: "fast"}
    """)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    lines = str(err.value).splitlines()
    assert any("version: expected 1" in ln for ln in lines)
    assert any("kernels[0].path: file not found: kernels/missing.py" in ln for ln in lines)
    assert any("kernels[0].op: unknown built-in op 'rmsnrom'" in ln and "did you mean 'rmsnorm'" in ln for ln in lines)
    assert any("gate.threshold: expected a number" in ln for ln in lines)


def test_bad_module_callable_paths_are_found_without_importing(repo: Path) -> None:
    (repo / "explodes.py").write_text("raise SystemExit('importing this module is a bug')\ndef ref(x):\n    return x\n")
    path = write(repo, """
        version: 1
        kernels:
          - name: a
            path: kernels/rmsnorm.py
            reference: nosuchmodule:gelu
            inputs: refs:make_inptus
            shapes: [{n: 4}]
          - name: b
            path: kernels/rmsnorm.py
            reference: "refs gelu"
            inputs: explodes:ref
            shapes: [{n: 4}]
    """)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "kernels[0].reference: module 'nosuchmodule' not found" in message
    assert "kernels[0].inputs: module 'refs'" in message and "did you mean 'make_inputs'" in message
    assert "kernels[1].reference: expected 'module:callable'" in message
    assert "kernels[1].inputs" not in message  # explodes:ref exists and was not executed


def test_invalid_yaml_reports_the_line(repo: Path) -> None:
    path = write(repo, "version: 1\nkernels: [\n  - name: x\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "not valid YAML" in str(err.value) and "line" in str(err.value)


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yml")
