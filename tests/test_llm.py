"""The LLM proposer, through litellm over real HTTP, against a local OpenAI-compatible server.

The server (`llm_server.py`) replays scripted replies: a faster kernel wrapped in chatter, a wrong
one, a cheat, chatter with no code, a rate limit before a crashing kernel, a stall past the client's
timeout before an unchanged file. The loop runs for real on a small RMSNorm under the Triton
interpreter, in a temporary git repository; litellm is configured only through the environment a
user would set (`OPENAI_API_BASE`, `OPENAI_API_KEY`) and a price registered for the test model.
"""

from __future__ import annotations

import json
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import git
import pytest
from llm_server import LLMServer, Reply

from autokernel_ci.config import OptimizeSettings, load_config
from autokernel_ci.harness.anticheat import scan_source
from autokernel_ci.loop import LoopSettings, init_repository, run_loop
from autokernel_ci.search import TunerProposer, make_proposer
from autokernel_ci.search.llm import LLMProposer, ReplyError, build_messages, extract_candidate
from autokernel_ci.tasks import builtin_task, resolve_task

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = (ROOT / "examples" / "kernels" / "rmsnorm.py").read_text()
SLOW_START = EXAMPLE.replace("BLOCK_SIZE = 1024", "BLOCK_SIZE = 128")
MODEL = "openai/autokernel-test-model"
API_KEY = "sk-autokernel-test-0123456789abcdef"
PLANTED = "planted-deploy-credential-7f3a9c"  # the value of a secret-looking variable, also left in the kernel
CONFIG = textwrap.dedent("""\
    version: 1
    kernels:
      - name: rmsnorm
        path: kernels/rmsnorm.py
        op: rmsnorm
        shapes: [{rows: 3, dim: 7}, {rows: 4, dim: 4096}]
        dtypes: [fp32]
    optimize:
      proposer: llm
      llm: {model: openai/autokernel-test-model, max_cost_usd: 0.013, parallel: 1, timeout_s: 2}
""")
# Each successful request reports 1000 prompt and 500 completion tokens: $0.002 at the registered price.
PRICE = {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}
DATE = "20250101"
BRANCH = f"autokernel/rmsnorm-{DATE}"

FAST = EXAMPLE.replace("BLOCK_SIZE = 1024", "BLOCK_SIZE = 4096")
WRONG = SLOW_START.replace("acc += x * x", "acc += x * x * 1.5")
CHEAT = SLOW_START + ("\n\ndef kernel_fn(x, weight, eps=1e-6):  # noqa: F811\n"
                      "    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight\n")
CRASHES = SLOW_START + '\nraise RuntimeError("broken at import")\n'


def reply(source: str, description: str, before: str = "", after: str = "") -> Reply:
    return Reply(f"{before}Description: {description}\n\n```python\n{source}```\n{after}")


@pytest.fixture(scope="module", autouse=True)
def priced_model():
    import litellm

    litellm.register_model({MODEL: {**PRICE, "litellm_provider": "openai", "mode": "chat", "max_tokens": 8192}})


@pytest.fixture
def server(monkeypatch):
    with LLMServer() as srv:
        monkeypatch.setenv("OPENAI_API_BASE", srv.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
        monkeypatch.setenv("AUTOKERNEL_DEPLOY_TOKEN", PLANTED)
        monkeypatch.delenv("AUTOKERNEL_LLM_MODEL", raising=False)
        yield srv


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "kernels").mkdir(parents=True)
    (root / "kernels" / "rmsnorm.py").write_text(SLOW_START + f"\n# deploy note (should never leave): {PLANTED}\n")
    (root / ".autokernel.yml").write_text(CONFIG)
    init_repository(root, "A repository with a slow kernel")
    return root


def proposer(**options) -> LLMProposer:
    return LLMProposer(MODEL, **{"timeout_s": 5.0, "backoff_s": 0.05, **options})


def test_loop_keeps_the_faster_kernel_reverts_the_rest_retries_and_stops_at_the_budget(server, repo: Path):
    server.script(
        reply(FAST, "BLOCK_SIZE 128→4096: a row in one step", before="Sure! The row loop takes 32 steps.\n\n",
              after="\nThis should be much faster.\n"),
        reply(WRONG, "accumulate x² with a scale"),
        reply(CHEAT, "let PyTorch do it"),
        Reply("I would try shared memory next, but I am not sure how. Shall I write it?"),
        Reply.rate_limited(0.2), reply(CRASHES, "a module-level precompute"),
        Reply.stall(4.0), reply(FAST, "the same again"),
    )
    config = repo / ".autokernel.yml"
    chosen, note = make_proposer("llm", load_config(config).optimize)
    assert note is None and isinstance(chosen, LLMProposer)
    chosen.settings.backoff_s = 0.05
    start = git.Repo(repo).head.commit.hexsha

    result = run_loop(resolve_task("rmsnorm", config), chosen,
                      LoopSettings(device="cpu", timeout=25.0, date=DATE, budget_minutes=15.0))

    # The faster kernel is kept; the wrong, cheating and crashing ones are reverted; the chatter and the
    # unchanged file never reach an evaluation.
    assert [e.verdict for e in result.experiments] == ["baseline", "kept", "fail", "rejected", "crash"]
    assert result.stop_reason.startswith("the llm has nothing left to try: the LLM budget is spent: $0.0120 of $0.013")
    r = git.Repo(repo)
    assert r.git.show(f"{BRANCH}:kernels/rmsnorm.py") + "\n" == FAST
    assert len(list(r.iter_commits(f"{start}..{BRANCH}"))) == 1
    kept = result.experiments[1]
    assert kept.description == "BLOCK_SIZE 128→4096: a row in one step"
    assert kept.proposer == f"llm ({MODEL})" and kept.params["llm_request"] == 1
    assert kept.params["llm_tokens"] == 1500 and kept.params["llm_cost_usd"] == pytest.approx(0.002)
    assert r.git.status("--porcelain", "--untracked-files=all") == ""

    # Eight HTTP requests: six answered, one 429 and one stall retried; nothing asked past the budget.
    assert len(server.requests) == 8 and server.replies == []
    assert server.requests[0].headers.get("authorization") == f"Bearer {API_KEY}"
    bodies = server.bodies()
    for body in bodies:
        assert PLANTED not in body and API_KEY not in body
    assert "[redacted]" in bodies[0]
    first = json.loads(bodies[0])
    assert first["model"] == "autokernel-test-model" and first["max_tokens"] == 8192
    prompt = first["messages"][1]["content"]
    for expected in ("kernel_fn(x, weight, eps=1e-6)", "def reference(", "BLOCK_SIZE = 128", "fp32 atol 1e-05",
                     "Bound: memory", "Triton's interpreter", "| 0 | baseline |", "Tunable space", "Playbook",
                     "**2. Memory access**"):
        assert expected in prompt, expected
    # The prefetched request went out while the first candidate was evaluated, and knew it was pending.
    assert "Being evaluated now" in json.loads(bodies[1])["messages"][1]["content"]
    later = json.loads(bodies[5])["messages"][1]["content"]  # the request after the chatter, after its 429
    assert "| 1 | kept |" in later and "| 2 | fail |" in later and "| 3 | rejected |" in later
    assert "max abs err" in later and "torch-compute" in later
    assert "no fenced Python code block" in later

    # The audit trail: every prompt and reply, with its tokens, cost and fate; the run's totals.
    audit = repo / "autokernel-out" / "llm"
    meta = {n: json.loads((audit / "rmsnorm" / f"{n:04d}.json").read_text()) for n in range(1, 7)}
    assert [m["replies"][0]["outcome"] for m in meta.values()] == [
        "experiment 1", "experiment 2", "experiment 3", "discarded: the reply has no fenced Python code block",
        "experiment 4", "discarded: the reply's kernel file is the current best file, unchanged"]
    assert "RateLimitError" in meta[5]["attempts"][0] and "Timeout" in meta[6]["attempts"][0]
    assert meta[1]["usage"]["total_tokens"] == 1500 and meta[1]["usage"]["cost_usd"] == pytest.approx(0.002)
    assert "Current best kernel" in (audit / "rmsnorm" / "0001.prompt.md").read_text()
    assert "This should be much faster." in (audit / "rmsnorm" / "0001.reply.md").read_text()
    summary = json.loads((audit / "summary.json").read_text())
    assert summary["total"]["cost_usd"] == pytest.approx(0.012) and summary["total"]["requests"] == 6
    assert summary["total"]["retries"] == 2 and summary["total"]["total_tokens"] == 9000
    assert any("$0.0120 of $0.013" in n for n in result.notes)


def test_several_candidates_per_round_and_the_next_round_in_flight_during_evaluation(server, tmp_path: Path):
    task = builtin_task("rmsnorm")
    first, second = EXAMPLE.replace("NUM_WARPS = 4", "NUM_WARPS = 8"), EXAMPLE.replace("NUM_WARPS = 4", "NUM_WARPS = 2")
    third = EXAMPLE.replace("BLOCK_SIZE = 1024", "BLOCK_SIZE = 2048")
    server.script(reply(first, "8 warps"), reply(second, "2 warps"), reply(third, "2048 columns a step"),
                  Reply("nothing useful"))
    llm = proposer(parallel=2)
    llm.start_run(task, tmp_path)

    a = llm.propose(task, EXAMPLE, None, [])
    b = llm.propose(task, EXAMPLE, None, [])
    assert (a.description, b.description) == ("8 warps", "2 warps")
    assert [json.loads(r.raw)["n"] for r in server.requests[:1]] == [2]
    # The round was used up by the second candidate: the next one is asked for at once, while that
    # candidate would be under evaluation, with both listed as pending.
    assert server.wait_for_requests(2, timeout=10)
    body = json.loads(server.requests[1].raw)["messages"][1]["content"]
    assert "“8 warps”" in body and "“2 warps”" in body and "one of 2 parallel proposals" in body
    c = llm.propose(task, EXAMPLE, None, [])
    assert c.description == "2048 columns a step" and c.params["llm_request"] == 2
    note = llm.finish_run()
    assert "2 request(s)" in note and "$0.0060" in note  # 1000 + 2×500 tokens per request, twice


def test_a_token_budget_stops_before_the_request_that_would_cross_it(server, tmp_path: Path):
    task = builtin_task("rmsnorm")
    server.script(reply(FAST, "one step a row"), reply(WRONG, "never asked for"))
    llm = proposer(max_total_tokens=2500, prefetch=False)
    assert llm.propose(task, SLOW_START, None, []).description == "one step a row"
    assert llm.propose(task, SLOW_START, None, []) is None
    assert llm.done_reason == "the LLM token budget is spent: 1500 of 2500 tokens (a request uses up to 1500)"
    assert len(server.requests) == 1


def test_an_error_that_retrying_cannot_fix_stops_cleanly_with_the_providers_message(server):
    task = builtin_task("rmsnorm")
    server.script(Reply(status=401))
    llm = proposer()
    assert llm.propose(task, SLOW_START, None, []) is None
    assert llm.done_reason.startswith("the LLM request failed: AuthenticationError")
    assert API_KEY not in llm.done_reason and len(server.requests) == 1


def test_server_errors_are_retried_with_backoff_until_the_retries_run_out(server):
    task = builtin_task("rmsnorm")
    server.script(Reply(status=500), Reply(status=503), Reply(status=500))
    llm = proposer(max_retries=2)
    started = time.monotonic()
    assert llm.propose(task, SLOW_START, None, []) is None
    assert llm.done_reason.startswith("the LLM request failed after 3 attempts: InternalServerError")
    assert len(server.requests) == 3 and time.monotonic() - started < 10


def test_replies_with_no_usable_kernel_are_discarded_and_the_proposer_gives_up_after_a_few(server):
    task = builtin_task("rmsnorm")
    server.script(Reply("Let me think about it."), reply(SLOW_START, "no change at all"),
                  Reply("```python\nBLOCK_SIZE = 4096\n```"))
    llm = proposer(max_unusable=3, prefetch=False)
    assert llm.propose(task, SLOW_START, None, []) is None
    assert llm.done_reason == ("3 replies in a row held no usable kernel file (the last: the reply's code is not a "
                               "complete kernel file: it defines no `kernel_fn`)")
    second = json.loads(server.requests[1].raw)["messages"][1]["content"]
    assert "reply 1.0: the reply has no fenced Python code block" in second


def test_a_cuda_cpp_reply_becomes_a_candidate_the_task_allow_list_lets_through(server):
    source = CUDA_CANDIDATE
    task = replace(builtin_task("rmsnorm"), allow=("torch.utils.cpp_extension.load_inline",))
    server.script(Reply(f"Here is a CUDA version.\n\nDescription: warp-shuffle reduction in CUDA C++\n\n"
                        f"```python\n{source}```\n\nIt compiles with nvcc at import."))
    llm = proposer(prefetch=False)
    candidate = llm.propose(task, SLOW_START, None, [])
    assert candidate.source == source and candidate.description == "warp-shuffle reduction in CUDA C++"
    assert scan_source(candidate.source, allow=task.allow) == []
    assert [f.rule for f in scan_source(candidate.source)] == ["static.escape", "static.escape"]
    prompt = json.loads(server.requests[0].raw)["messages"][1]["content"]
    assert "CUDA C++ compiled at import" in prompt
    assert "is refused for this task" in build_messages(builtin_task("rmsnorm"), SLOW_START, None, [])[1]["content"]


def test_extracting_the_kernel_file_tolerates_chatter_and_reasoning():
    text = ("<think>maybe\n```python\ndef kernel_fn(x):\n    return 0\n```\n</think>\nFirst the old one:\n"
            f"```python\n{SLOW_START}```\n**Description:** one `BLOCK` of 4096\n~~~py\n{FAST}~~~\nDone.")
    source, description = extract_candidate(text, SLOW_START)
    assert source == FAST and description == "one BLOCK of 4096"
    source, description = extract_candidate(f"```\n{FAST}```", SLOW_START)
    assert description == "RMSNorm over the last dim, one row per program: y = x / sqrt(mean(x²) + eps) · weight."
    with pytest.raises(ReplyError, match="not closed"):
        extract_candidate(f"Description: cut short\n```python\n{FAST[:200]}", SLOW_START)
    with pytest.raises(ReplyError, match="unchanged"):
        extract_candidate(f"```python\n{SLOW_START.rstrip()}   \n```", SLOW_START)
    with pytest.raises(ReplyError, match="defines no `ModelNew`"):
        extract_candidate(f"```python\n{FAST}```", SLOW_START, entry="ModelNew")


def test_without_a_model_optimize_falls_back_to_the_tuner_and_says_so(monkeypatch, tmp_path: Path):
    monkeypatch.delenv("AUTOKERNEL_LLM_MODEL", raising=False)
    chosen, note = make_proposer("llm", OptimizeSettings())
    assert isinstance(chosen, TunerProposer) and "using the tuner instead" in note
    monkeypatch.setenv("AUTOKERNEL_LLM_MODEL", "anthropic/claude-sonnet-4-20250514")
    chosen, note = make_proposer("llm", OptimizeSettings())
    assert note is None and chosen.settings.model == "anthropic/claude-sonnet-4-20250514"
    (tmp_path / ".autokernel.yml").write_text("version: 1\noptimize:\n  llm: {model: openai/gpt-4.1, parallel: 4, "
                                              "max_total_tokens: 200000, max_reply_tokens: 16000, timeout_s: 120}\n")
    chosen, _ = make_proposer("llm", load_config(tmp_path / ".autokernel.yml").optimize)
    s = chosen.settings
    assert (s.model, s.parallel, s.max_total_tokens, s.max_reply_tokens, s.timeout_s) == (
        "openai/gpt-4.1", 4, 200000, 16000, 120.0)


CUDA_CANDIDATE = '''\
"""RMSNorm in CUDA C++: one block per row, warp shuffles for the sum of squares."""

import torch
from torch.utils.cpp_extension import load_inline

CUDA_SRC = r"""
#include <torch/extension.h>
__global__ void rmsnorm_kernel(const float* x, const float* w, float* y, int n_cols, float eps) {
    const float* xr = x + (long)blockIdx.x * n_cols;
    float acc = 0.f;
    for (int c = threadIdx.x; c < n_cols; c += blockDim.x) acc += xr[c] * xr[c];
    __shared__ float part[32];
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_down_sync(0xffffffff, acc, o);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = acc;
    __syncthreads();
    if (threadIdx.x < 32) {
        acc = threadIdx.x < (blockDim.x >> 5) ? part[threadIdx.x] : 0.f;
        for (int o = 16; o > 0; o >>= 1) acc += __shfl_down_sync(0xffffffff, acc, o);
        if (threadIdx.x == 0) part[0] = rsqrtf(acc / n_cols + eps);
    }
    __syncthreads();
    for (int c = threadIdx.x; c < n_cols; c += blockDim.x) y[(long)blockIdx.x * n_cols + c] = xr[c] * part[0] * w[c];
}
torch::Tensor rmsnorm(torch::Tensor x, torch::Tensor w, double eps) {
    auto y = torch::empty_like(x);
    rmsnorm_kernel<<<x.size(0), 256>>>(x.data_ptr<float>(), w.data_ptr<float>(), y.data_ptr<float>(),
                                        x.size(1), (float)eps);
    return y;
}
"""

CPP_SRC = "torch::Tensor rmsnorm(torch::Tensor x, torch::Tensor w, double eps);"
_ext = load_inline(name="rmsnorm_cuda", cpp_sources=CPP_SRC, cuda_sources=CUDA_SRC, functions=["rmsnorm"],
                   extra_cuda_cflags=["-O3"])


def kernel_fn(x, weight, eps=1e-6):
    x2 = x.reshape(-1, x.shape[-1]).contiguous()
    return _ext.rmsnorm(x2, weight.contiguous(), eps).view(x.shape)
'''
