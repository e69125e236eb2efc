"""The OS sandbox, attacked: each test is a candidate that tries what the old child-process sandbox let
through, with the static scan switched off for it so that only the boundary outside the candidate's
process stands in its way. Real bubblewrap, real processes, the CPU interpreter."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from autokernel_ci.harness import bwrap
from autokernel_ci.harness.sandbox import evaluate
from autokernel_ci.results import Status
from autokernel_ci.tasks import builtin_task

ROOT = Path(__file__).resolve().parents[1]
RIGHT = (ROOT / "examples" / "kernels" / "rmsnorm.py").read_text()
WRONG = RIGHT.replace("(x * rstd * w)", "(x * rstd * w * 1.5)")
assert WRONG != RIGHT
SMOKE = ("smoke",)
NETS_OFF = ("static.escape", "static.introspection", "static.monkeypatch", "static.fallback")

pytestmark = pytest.mark.skipif(bwrap.unavailable_reason() is not None and not bwrap.in_ci(),
                                reason="needs bubblewrap: .ci/run installs it, so CI never skips these")


def at_import(source: str, prelude: str) -> str:
    return "import os, sys, subprocess, threading, atexit, weakref, signal, socket, time\n" + prelude + "\n" + source


def in_call(source: str, body: str) -> str:
    anchor = "    shape = x.shape\n"
    assert anchor in source
    body = "".join(f"    {line}\n" for line in body.strip("\n").splitlines())
    return "import os, sys, subprocess, threading, socket, time\n" + source.replace(anchor, body + anchor, 1)


def run(tmp_path: Path, source: str, name: str = "candidate", task=None, **kwargs):
    folder = tmp_path / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "candidate.py"
    path.write_text(source)
    task = task or builtin_task("rmsnorm")
    task = dataclasses.replace(task, allow=tuple(task.allow) + NETS_OFF)
    return evaluate(task, path, device="cpu", seed=11, stages=kwargs.pop("stages", SMOKE), timeout=120, **kwargs)


def test_the_honest_kernel_passes_inside_bubblewrap(tmp_path: Path) -> None:
    result = run(tmp_path, RIGHT)
    assert result.status is Status.PASS, result.message
    assert result.sandbox == "bubblewrap"


def test_no_process_environment_outside_the_sandbox_is_readable(tmp_path: Path, monkeypatch) -> None:
    """The old worker read the parent's /proc/<ppid>/environ, where the gate step held GITHUB_TOKEN."""
    token = f"ghs_{uuid.uuid4().hex}"
    monkeypatch.setenv("GITHUB_TOKEN", token)
    monkeypatch.setenv("SOMETHING_HARMLESS_LOOKING", token)
    body = f"""
found = []
for pid in os.listdir('/proc'):
    if pid.isdigit():
        try:
            found.append(open(f'/proc/{{pid}}/environ', 'rb').read())
        except OSError:
            pass
found.append(repr(dict(os.environ)).encode())
if any({token!r}.encode() in blob for blob in found):
    raise RuntimeError('saw the token ' + {token!r})
if len([p for p in os.listdir('/proc') if p.isdigit()]) > 4:
    raise RuntimeError('sees other processes')
"""
    result = run(tmp_path, in_call(RIGHT, body))
    assert result.status is Status.PASS, result.message
    assert token not in result.to_json()


@pytest.mark.parametrize("hook", [
    "atexit.register(rewrite)",
    "_keep = weakref.finalize(sys.modules[__name__], rewrite)",
    "signal.signal(signal.SIGTERM, lambda *a: (rewrite(), os._exit(0)))",
])
def test_a_late_rewrite_of_the_results_changes_no_verdict(tmp_path: Path, hook: str) -> None:
    """A wrong kernel whose exit hook forges a passing report: files are never read, and a message
    after the last one makes the run a crash."""
    prelude = f"""
def rewrite():
    import json
    open('result.json', 'w').write(json.dumps({{'protocol': 2, 'cases': [], 'status': 'PASS'}}))
    fd = int(os.environ.get('AUTOKERNEL_RESULT_FD', '3'))
    body = json.dumps({{'type': 'case', 'report': {{'index': 0}}, 'tensors': []}}).encode()
    try:
        os.write(fd, len(body).to_bytes(4, 'big') + body)
    except OSError:
        pass
{hook}
"""
    result = run(tmp_path, at_import(WRONG, prelude))
    assert result.status in (Status.FAIL, Status.CRASH), result.message
    assert result.status is not Status.PASS


def test_a_message_after_the_last_one_is_a_crash(tmp_path: Path) -> None:
    prelude = """
def late():
    import json
    fd = int(os.environ['AUTOKERNEL_RESULT_FD'])
    body = json.dumps({'type': 'case', 'report': {'index': 0}, 'tensors': []}).encode()
    os.write(fd, len(body).to_bytes(4, 'big') + body)
atexit.register(late)
"""
    result = run(tmp_path, at_import(RIGHT, prelude))
    assert result.status is Status.CRASH
    assert "after the last one" in result.message


def test_bytecode_and_caches_written_by_one_candidate_never_reach_another(tmp_path: Path) -> None:
    """The old worker shared a writable PYTHONPYCACHEPREFIX: one candidate's .pyc of the anti-cheat
    module ran in every later evaluation. Now every place it tries is read-only or private."""
    from autokernel_ci.harness import anticheat

    marker = tmp_path / f"poisoned-{uuid.uuid4().hex}"
    package = Path(anticheat.__file__).parent
    targets = [package / "__pycache__" / "anticheat.cpython-311.pyc", package / "poison.py",
               Path.home() / ".cache" / "autokernel-ci" / "pycache" / "poison.pyc",
               Path(sys.prefix) / "poison.pth"]
    payload = f"open({str(marker)!r}, 'w').write('ran')"
    body = f"""
written = []
for target in {[str(t) for t in targets]!r}:
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, 'w').write({payload!r})
        written.append(target)
    except OSError:
        pass
"""
    first = run(tmp_path, in_call(RIGHT, body), name="first")
    assert first.status is Status.PASS, first.message
    assert not any(t.exists() and "poisoned" in t.read_text(errors="replace") for t in targets if t.is_file())
    second = run(tmp_path, RIGHT, name="second")
    assert second.status is Status.PASS and not marker.exists()


def test_the_bytecode_folder_the_parent_prepares_is_read_and_never_written(tmp_path: Path, monkeypatch) -> None:
    """Where the packages were installed without bytecode, sandboxed workers read the folder the parent
    filled (harness.bytecode). A candidate that overwrites torch's bytecode there, or adds a module of its
    own, would run in every later evaluation; the folder is read-only to it. The first candidate also
    fails unless its interpreter really took torch's bytecode from that folder."""
    import hashlib

    from autokernel_ci.harness import bytecode

    monkeypatch.setenv("AUTOKERNEL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv(bytecode.ENV, "1")
    marker = tmp_path / f"poisoned-{uuid.uuid4().hex}"
    body = f"""
prefix = sys.pycache_prefix
if not prefix or not sys.modules['torch'].__cached__.startswith(prefix):
    raise RuntimeError('torch was not read from the prepared bytecode: ' + repr(prefix))
for target in (sys.modules['torch'].__cached__, os.path.join(prefix, 'poison.pyc')):
    try:
        open(target, 'w').write("open({str(marker)!r}, 'w').write('ran')")
    except OSError:
        pass
"""
    first = run(tmp_path, in_call(RIGHT, body), name="first")
    assert first.status is Status.PASS, first.message
    folder = bytecode.folder("cpu")
    assert folder is not None and (folder / bytecode.READY).is_file()
    pycs = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.pyc")}
    assert any("torch" in p.parts and p.name.startswith("__init__.") for p in pycs)
    assert not list(folder.rglob("poison.pyc"))
    assert not any(str(marker).encode() in p.read_bytes() for p in pycs)
    second = run(tmp_path, RIGHT, name="second")
    assert second.status is Status.PASS and not marker.exists()
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.pyc")} == pycs


def test_a_git_hook_or_a_cache_file_written_by_a_candidate_is_not_there_afterwards(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "kernels").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    hooks = repo / ".git" / "hooks"
    before = sorted(p.name for p in hooks.iterdir())
    cache = Path.home() / ".cache" / f"autokernel-test-{uuid.uuid4().hex}"
    body = f"""
for target in ({str(hooks / 'post-checkout')!r}, {str(cache)!r}, os.path.expanduser('~/.cache/x-{uuid.uuid4().hex}')):
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, 'w').write('#!/bin/sh\\necho owned\\n')
    except OSError:
        pass
"""
    path = repo / "kernels" / "rmsnorm.py"
    path.write_text(in_call(RIGHT, body))
    task = dataclasses.replace(builtin_task("rmsnorm"), root=repo, path=path,
                               allow=tuple(builtin_task("rmsnorm").allow) + NETS_OFF)
    result = evaluate(task, path, device="cpu", seed=3, stages=SMOKE, timeout=120)
    assert result.status is Status.PASS, result.message
    assert sorted(p.name for p in hooks.iterdir()) == before
    assert not cache.exists()


def _processes_with(token: str) -> list[int]:
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if token.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    out.append(int(pid))
            except OSError:
                pass
    return out


@pytest.mark.parametrize("how", ["setsid", "double-fork"])
def test_a_child_that_leaves_its_session_is_gone_when_the_evaluation_ends(tmp_path: Path, how: str) -> None:
    token = f"autokernel-survivor-{uuid.uuid4().hex}"
    if how == "setsid":
        spawn = (f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)', {token!r}], "
                 "start_new_session=True)")
    else:
        argv = f"[sys.executable, '-c', 'import time; time.sleep(120)', {token!r}]"
        spawn = (f"pid = os.fork()\nif pid == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                 f"        os.execv(sys.executable, {argv})\n    os._exit(0)\nos.waitpid(pid, 0)\ntime.sleep(0.3)")
    result = run(tmp_path, in_call(RIGHT, spawn))
    assert _processes_with(token) == [], "a process the candidate started outlived the evaluation"
    assert result.status is Status.REJECTED, result.message
    assert any(f.rule == "sandbox.process" for f in result.findings)


def test_a_thread_the_candidate_starts_is_a_finding(tmp_path: Path) -> None:
    body = "t = threading.Thread(target=time.sleep, args=(0.5,))\nt.start()\nt.join()"
    result = run(tmp_path, in_call(RIGHT, body))
    assert result.status is Status.REJECTED, result.message
    assert [f.rule for f in result.findings] == ["sandbox.thread"]


def test_the_network_is_not_reachable(tmp_path: Path) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    accepted = []
    server.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                accepted.append(server.accept())
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    body = f"""
try:
    socket.create_connection(('127.0.0.1', {port}), timeout=2).close()
    raise RuntimeError('connected')
except OSError:
    pass
"""
    try:
        result = run(tmp_path, in_call(RIGHT, body))
    finally:
        stop.set()
        thread.join()
        server.close()
    assert result.status is Status.PASS, result.message
    assert accepted == []


def test_in_ci_without_bubblewrap_the_command_refuses_and_says_how_to_opt_out(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("git", "sh"):
        found = subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip()
        if found:
            os.symlink(found, bin_dir / tool)
    env = {**os.environ, "PATH": str(bin_dir), "CI": "true"}
    args = [sys.executable, "-m", "autokernel_ci", "eval", "--task", "rmsnorm", "--candidate",
            str(ROOT / "examples" / "kernels" / "rmsnorm.py"), "--device", "cpu"]
    refused = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert refused.returncode != 0
    assert "Traceback" not in refused.stderr
    lines = [ln for ln in refused.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "bubblewrap" in lines[0] and "--sandbox=process" in lines[0], refused.stderr
    out = tmp_path / "result.json"
    opted = subprocess.run([*args, "--sandbox=process", "--json", str(out)], capture_output=True, text=True,
                           env=env, timeout=600)
    assert opted.returncode == 0, opted.stderr
    assert "unsandboxed" in opted.stdout
    assert '"sandbox": "process (unsandboxed)"' in out.read_text()


CUDA_RMSNORM = '''\
"""RMSNorm in CUDA C++ (fp32): one block per row, a shared-memory sum of squares."""

import torch
from torch.utils.cpp_extension import load_inline

CUDA_SRC = r"""
#include <torch/extension.h>
__global__ void rmsnorm_kernel(const float* x, const float* w, float* y, int n_cols, float eps) {
    const float* xr = x + (long)blockIdx.x * n_cols;
    __shared__ float part[256];
    float acc = 0.f;
    for (int c = threadIdx.x; c < n_cols; c += blockDim.x) acc += xr[c] * xr[c];
    part[threadIdx.x] = acc;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
    float r = rsqrtf(part[0] / n_cols + eps);
    for (int c = threadIdx.x; c < n_cols; c += blockDim.x) y[(long)blockIdx.x * n_cols + c] = xr[c] * r * w[c];
}
torch::Tensor rmsnorm(torch::Tensor x, torch::Tensor w, double eps) {
    auto y = torch::empty_like(x);
    rmsnorm_kernel<<<x.size(0), 256>>>(x.data_ptr<float>(), w.data_ptr<float>(), y.data_ptr<float>(),
                                        x.size(1), (float)eps);
    return y;
}
"""

CPP_SRC = "torch::Tensor rmsnorm(torch::Tensor x, torch::Tensor w, double eps);"
_ext = load_inline(name="rmsnorm_cuda_sandboxed", cpp_sources=CPP_SRC, cuda_sources=CUDA_SRC, functions=["rmsnorm"],
                   extra_cuda_cflags=["-O3"])


def kernel_fn(x, weight, eps=1e-6):
    # fp32 inside, the input's dtype out: bf16 and fp16 inputs are widened once, here.
    x2 = x.reshape(-1, x.shape[-1]).float().contiguous()
    return _ext.rmsnorm(x2, weight.float().contiguous(), eps).to(x.dtype).view(x.shape)
'''


@pytest.mark.gpu
def test_gpu_triton_and_load_inline_candidates_pass_in_the_sandbox_and_cuda_is_built_once(tmp_path: Path,
                                                                                          monkeypatch) -> None:
    import time

    monkeypatch.setenv("AUTOKERNEL_CACHE_DIR", str(tmp_path / "cache"))
    triton = evaluate(builtin_task("rmsnorm"), _write(tmp_path, "triton", RIGHT), device="cuda", seed=5,
                      stages=("smoke", "shapes", "dtypes"))
    assert triton.status is Status.PASS and triton.sandbox == "bubblewrap", triton.message
    task = dataclasses.replace(builtin_task("rmsnorm"), allow=tuple(builtin_task("rmsnorm").allow)
                               + ("torch.utils.cpp_extension.load_inline",))
    path = _write(tmp_path, "cuda", CUDA_RMSNORM)
    seconds = []
    for seed in (1, 2):
        started = time.monotonic()
        result = evaluate(task, path, device="cuda", seed=seed, stages=("smoke", "shapes"), timeout=600)
        seconds.append(time.monotonic() - started)
        assert result.status is Status.PASS and result.sandbox == "bubblewrap", result.message
        builds = {p: p.stat().st_mtime_ns for p in (tmp_path / "cache" / "sandbox").rglob("*.so")}
        assert builds, "the load_inline build was not kept"
        if seed == 1:
            first_builds = builds
    print(f"load_inline candidate: first evaluation {seconds[0]:.1f} s, second {seconds[1]:.1f} s")
    assert builds == first_builds, "the second evaluation rebuilt the extension"


CPU_RMSNORM = '''\
"""RMSNorm in C++ on the CPU, fp32 inside."""

import torch
from torch.utils.cpp_extension import load_inline

CPP_SRC = r"""
#include <torch/extension.h>
torch::Tensor rmsnorm(torch::Tensor x, torch::Tensor w, double eps) {
    auto xf = x.to(torch::kFloat);
    auto r = torch::rsqrt(xf.pow(2).mean(-1, true) + eps);
    return (xf * r * w.to(torch::kFloat)).to(x.scalar_type());
}
"""
_ext = load_inline(name="rmsnorm_cpp_sandboxed", cpp_sources=CPP_SRC, functions=["rmsnorm"])


def kernel_fn(x, weight, eps=1e-6):
    return _ext.rmsnorm(x.contiguous(), weight.contiguous(), eps)
'''


def test_a_load_inline_build_is_kept_and_not_rebuilt_by_the_next_evaluation(tmp_path: Path, monkeypatch) -> None:
    """A build records absolute paths (build.ninja): each sandboxed worker sees its private cache at one
    fixed path, so the kept build is reused, not rebuilt. A C++ extension on the CPU stands in for CUDA."""
    monkeypatch.setenv("AUTOKERNEL_CACHE_DIR", str(tmp_path / "cache"))
    task = builtin_task("rmsnorm")
    task = dataclasses.replace(task, allow=(*task.allow, "torch.utils.cpp_extension.load_inline",
                                            "dynamic.torch-compute", "dynamic.operator"))
    path = _write(tmp_path, "cpp", CPU_RMSNORM)
    kept = []
    for seed in (1, 2):
        result = evaluate(task, path, device="cpu", seed=seed, stages=SMOKE, timeout=600)
        assert result.status is Status.PASS and result.sandbox == "bubblewrap", result.message
        kept.append({p.relative_to(tmp_path): p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*.so")})
    assert kept[0], "the build was not kept"
    assert kept[1] == kept[0], "the second evaluation rebuilt the extension"


def _write(tmp_path: Path, name: str, source: str) -> Path:
    folder = tmp_path / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "candidate.py"
    path.write_text(source)
    return path


def test_profile_runs_the_users_model_inside_the_sandbox(tmp_path: Path) -> None:
    """`profile` and `verify` build the user's model: repository code from first to last, so the whole
    command runs in the sandbox. A factory that looks for the runner's token and writes to ~/.cache
    finds and leaves nothing."""
    token = f"ghs_{uuid.uuid4().hex}"
    leak = Path.home() / ".cache" / f"autokernel-factory-{uuid.uuid4().hex}"
    repo = tmp_path / "repo"
    (repo / "models").mkdir(parents=True)
    (repo / "models" / "__init__.py").write_text("")
    (repo / "models" / "tiny.py").write_text(f'''\
import os
import torch


def build():
    if any({token!r} in v for v in os.environ.values()):
        raise RuntimeError("the factory saw the runner's token")
    try:
        os.makedirs(os.path.dirname({str(leak)!r}), exist_ok=True)
        open({str(leak)!r}, "w").write("left behind")
    except OSError:
        pass
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.LayerNorm(16))
    return model, (torch.randn(4, 16),)
''')
    (repo / ".autokernel.yml").write_text("version: 1\nkernels: []\nmodels:\n  - name: tiny\n"
                                          "    factory: models.tiny:build\n    dtype: fp32\n")
    out = tmp_path / "out" / "plan.json"
    env = {**os.environ, "GITHUB_TOKEN": token}
    done = subprocess.run([sys.executable, "-m", "autokernel_ci", "profile", "--model", "tiny", "--json", str(out),
                           "--steps", "1"], cwd=repo, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert out.is_file(), "the plan was not written through the writable output folder"
    assert not leak.exists()
    assert token not in done.stdout + done.stderr + out.read_text()


@pytest.mark.parametrize("tell", [
    "not torch.are_deterministic_algorithms_enabled()",  # the checks run in deterministic mode, timing did not
    "_calls.append(1) or len(_calls) > 12",  # the checks are the first few calls
])
def test_right_while_checked_and_wrong_while_timed_fails(tmp_path: Path, tell: str) -> None:
    """Timed outputs used to be thrown away: a kernel that told the timing from the checks could skip
    its work there. Now some timed calls, and the last one, are judged like a case."""
    from autokernel_ci.harness.sandbox import TimingPlan

    source = "_calls = []\n" + in_call(RIGHT, f"if {tell}:\n    return torch.zeros_like(x)")
    folder = tmp_path / "c"
    folder.mkdir()
    path = folder / "candidate.py"
    path.write_text(source)
    task = builtin_task("rmsnorm")
    task = dataclasses.replace(task, allow=tuple(task.allow) + NETS_OFF + ("dynamic.torch-compute",))
    plan = TimingPlan.for_task(task, "cpu")
    result = evaluate(task, path, device="cpu", seed=2, stages=("smoke", "shapes"), timing=plan, timeout=300)
    assert result.status is Status.FAIL, result.message
    assert "timed call" in result.message
    honest = evaluate(task, _write(tmp_path, "honest", RIGHT), device="cpu", seed=2, stages=("smoke",), timing=plan)
    assert honest.status is Status.PASS, honest.message
