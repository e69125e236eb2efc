"""risk.py: which changes need a human, and the section that tells the reviewer why."""

from __future__ import annotations

import pytest

from autokernel_ci.errors import ConfigError
from autokernel_ci.report.risk_md import RISK_SECTION_MARKER, render_risk_section
from autokernel_ci.risk import RiskConfig, added_lines, classify, iter_diff

NORM_DIFF = """\
diff --git a/kernels/rmsnorm.py b/kernels/rmsnorm.py
index 3b18e51..a9c0f4d 100644
--- a/kernels/rmsnorm.py
+++ b/kernels/rmsnorm.py
@@ -5,7 +5,8 @@ import triton.language as tl
 @triton.jit
 def rmsnorm_kernel(X, Y, W, stride, n_cols, eps, BLOCK: tl.constexpr):
     row = tl.program_id(0)
-    cols = tl.arange(0, BLOCK)
+    cols = tl.arange(0, BLOCK)  # one pass: load once, reduce once
+    mask = cols < n_cols
     x = tl.load(X + row * stride + cols, mask=mask, other=0.0).to(tl.float32)
     rms = tl.sqrt(tl.sum(x * x, axis=0) / n_cols + eps)
     tl.store(Y + row * stride + cols, x / rms, mask=mask)
"""

MATMUL_DIFF = """\
diff --git a/kernels/matmul.py b/kernels/matmul.py
index 1111111..2222222 100644
--- a/kernels/matmul.py
+++ b/kernels/matmul.py
@@ -1,4 +1,4 @@
 import triton
 import triton.language as tl
-ALLOW_TF32 = False
+ALLOW_TF32 = True
 BLOCK = 64
@@ -20,4 +20,7 @@ def matmul_kernel(A, B, C, M, N, K, BM: tl.constexpr, BN: tl.constexpr):
     acc = tl.zeros((BM, BN), dtype=tl.float32)
     for k in range(0, K, BK):
         a = tl.load(A + k)
+        b = tl.load(B + k)
+        acc += tl.dot(a, b, input_precision="tf32")
+    tl.atomic_add(C, acc)
     return
diff --git a/README.md b/README.md
index 3333333..4444444 100644
--- a/README.md
+++ b/README.md
@@ -1 +1,2 @@
 # models
+Uses cuBLAS for the projection.
"""


def test_norm_change_without_risky_lines_is_low_risk():
    report = classify("norm", NORM_DIFF)
    assert report.level == "low" and report.triggers == []
    assert report.files == ["kernels/rmsnorm.py"]
    assert report.label() == "autokernel: low-risk"


@pytest.mark.parametrize("family", ["matmul", "attention", "conv", "MatMul"])
def test_matmul_attention_and_conv_families_are_high_risk_by_themselves(family):
    report = classify(family, NORM_DIFF)
    assert report.is_high
    assert [t.category for t in report.triggers] == ["op family"]
    assert report.label() == "autokernel: needs-human-review"


def test_triggers_name_file_new_line_number_text_and_reason():
    report = classify("norm", MATMUL_DIFF)
    found = [(t.file, t.line, t.text) for t in report.triggers]
    assert found == [
        ("kernels/matmul.py", 3, "ALLOW_TF32 = True"),
        ("kernels/matmul.py", 24, 'acc += tl.dot(a, b, input_precision="tf32")'),
        ("kernels/matmul.py", 25, "tl.atomic_add(C, acc)"),
        ("README.md", 2, "Uses cuBLAS for the projection."),
    ]
    reasons = [t.reason for t in report.triggers]
    assert "TF32" in reasons[0] and reasons[1].startswith("tl.dot") and "atomics" in reasons[2]
    assert "cuBLAS" in reasons[3]
    assert report.files == ["kernels/matmul.py", "README.md"]


def test_added_line_numbers_follow_hunks_in_the_new_file():
    lines = [(a.file, a.line, a.text) for a in added_lines(MATMUL_DIFF)]
    assert lines[0] == ("kernels/matmul.py", 3, "ALLOW_TF32 = True")
    assert lines[1:3] == [("kernels/matmul.py", 23, "        b = tl.load(B + k)"),
                          ("kernels/matmul.py", 24, '        acc += tl.dot(a, b, input_precision="tf32")')]


@pytest.mark.parametrize("line, category", [
    ("acc = tl.dot_scaled(a, sa, 'e4m3', b, sb, 'e4m3')", "tensor cores"),
    ('asm volatile("wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 ...");', "tensor cores"),
    ('asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 ...");', "tensor cores"),
    ("nvcuda::wmma::mma_sync(c_frag, a_frag, b_frag, c_frag);", "tensor cores"),
    ("desc = tl.make_tensor_descriptor(a_ptr, shape=[M, K], strides=[K, 1], block_shape=[BM, BK])", "tensor cores"),
    ("from triton.tools.tensor_descriptor import TensorDescriptor", "tensor cores"),
    ("#include <cutlass/gemm/device/gemm.h>", "vendor library"),
    ("cublasLtMatmul(handle, desc, &alpha, A, Adesc, B, Bdesc, &beta, C, Cdesc, C, Cdesc, &algo, ws, n, s);",
     "vendor library"),
    ("acc = tl.zeros((BM, BN), dtype=tl.float16)", "numerics"),
    ("c = tl.dot(a, b, out_dtype=tl.float16)", "tensor cores"),  # tl.dot is the first reason on the line
    ("torch.backends.cuda.matmul.allow_tf32 = True", "numerics"),
    ('torch.set_float32_matmul_precision("high")', "numerics"),
    ("x = x.to(tl.float8e4nv)", "numerics"),
    ('extra_cuda_cflags=["--use_fast_math"]', "numerics"),
    ("y = __expf(x);", "numerics"),
    ('asm("ex2.approx.f32 %0, %1;")', "numerics"),
    ("tl.atomic_add(out_ptr + idx, partial)", "numerics"),
    ("atomicAdd(&out[i], v);", "numerics"),
    ("torch.use_deterministic_algorithms(False)", "numerics"),
])
def test_each_risky_construct_is_caught(line, category):
    diff = f"diff --git a/k.py b/k.py\n--- a/k.py\n+++ b/k.py\n@@ -0,0 +1 @@\n+{line}\n"
    report = classify("norm", diff)
    assert report.is_high, line
    assert report.triggers[0].category == category and report.triggers[0].line == 1


@pytest.mark.parametrize("line", [
    "x = tl.load(X + offs, mask=mask).to(tl.float32)",
    "torch.backends.cuda.matmul.allow_tf32 = False",
    "comma, separated = 1, 2",
    "acc = tl.zeros((BM,), dtype=tl.float32)",
    "assert out == pytest.approx(ref)",
])
def test_harmless_lines_are_not_triggers(line):
    diff = f"diff --git a/k.py b/k.py\n--- a/k.py\n+++ b/k.py\n@@ -0,0 +1 @@\n+{line}\n"
    assert classify("norm", diff).triggers == []


def test_removed_and_context_lines_never_trigger():
    diff = ("diff --git a/k.py b/k.py\n--- a/k.py\n+++ b/k.py\n@@ -1,3 +1,2 @@\n"
            " acc += tl.dot(a, b)\n-tl.atomic_add(p, v)\n x = 1\n")
    assert classify("norm", diff).triggers == []


def test_added_line_that_looks_like_a_header_is_still_an_added_line():
    diff = ("diff --git a/k.py b/k.py\n--- a/k.py\n+++ b/k.py\n@@ -1,1 +1,3 @@\n x = 1\n"
            "+++ tl.atomic_add(p, v)  # odd but valid python\n+--y\n")
    lines = added_lines(diff)
    assert [(a.line, a.text) for a in lines] == [(2, "++ tl.atomic_add(p, v)  # odd but valid python"), (3, "--y")]
    assert classify("norm", diff).triggers[0].line == 2


def test_a_hunk_shorter_than_its_header_does_not_swallow_the_next_file():
    diff = ("diff --git a/a.py b/a.py\n--- a/a.py\n+++ b/a.py\n@@ -1,5 +1,5 @@\n+x = 1\n"
            "diff --git a/b.py b/b.py\n--- a/b.py\n+++ b/b.py\n@@ -0,0 +1 @@\n+tl.atomic_add(p, v)\n")
    report = classify("norm", diff)
    assert report.files == ["a.py", "b.py"]
    assert [(t.file, t.line) for t in report.triggers] == [("b.py", 1)]


def test_new_renamed_and_deleted_files_are_listed():
    diff = """\
diff --git a/old.py b/new.py
similarity index 90%
rename from old.py
rename to new.py
--- a/old.py
+++ b/new.py
@@ -1 +1 @@
-x = 0
+acc += tl.dot(a, b)
diff --git a/gone.py b/gone.py
deleted file mode 100644
--- a/gone.py
+++ /dev/null
@@ -1 +0,0 @@
-tl.atomic_add(p, v)
diff --git a/fresh.py b/fresh.py
new file mode 100644
--- /dev/null
+++ b/fresh.py
@@ -0,0 +1,2 @@
+import triton
+z = __expf(x)
"""
    report = classify("norm", diff)
    assert report.files == ["new.py", "gone.py", "fresh.py"]
    assert [(t.file, t.line) for t in report.triggers] == [("new.py", 1), ("fresh.py", 2)]
    assert [x for x in iter_diff(diff) if isinstance(x, str)] == report.files


def test_threshold_labels_families_and_patterns_are_configurable():
    config = RiskConfig.from_mapping({
        "high_label": "needs-kernel-review", "low_label": "kernel-ok", "high_risk_families": ["norm"],
        "extra_patterns": {r"\btl\.inline_asm_elementwise\b": "inline PTX"}, "min_triggers": 2,
        "fallback_reviewers": ["@lead"],
    })
    assert config.fallback_reviewers == ("lead",)
    one = classify("norm", NORM_DIFF, config)
    assert not one.is_high and one.label(config) == "kernel-ok"  # one trigger, threshold two
    diff = "diff --git a/k.py b/k.py\n--- a/k.py\n+++ b/k.py\n@@ -0,0 +1 @@\n+y = tl.inline_asm_elementwise(...)\n"
    two = classify("norm", diff, config)
    assert two.is_high and two.label(config) == "needs-kernel-review"
    assert two.triggers[1].reason == "inline PTX" and two.triggers[1].category == "configured"
    assert not classify("matmul", NORM_DIFF, config).is_high  # families replaced, not extended


def test_declared_high_risk_task_is_high_whatever_the_threshold():
    report = classify("norm", NORM_DIFF, RiskConfig(min_triggers=5), declared="high")
    assert report.is_high and report.triggers[0].category == "config"


@pytest.mark.parametrize("data, key", [
    ({"min_triggers": 0}, "risk.min_triggers"),
    ({"high_label": "x" * 51}, "risk.high_label"),
    ({"extra_patterns": {"(unclosed": "bad"}}, "risk.extra_patterns.(unclosed"),
    ({"high_risk_families": "matmul"}, "risk.high_risk_families"),
    ({"threshold": 2}, "risk.threshold"),
])
def test_bad_risk_config_names_the_key(data, key):
    with pytest.raises(ConfigError) as info:
        RiskConfig.from_mapping(data, path="repo/.autokernel.yml")
    assert info.value.key == key and str(info.value).startswith("repo/.autokernel.yml: " + key)


def test_report_round_trips_to_a_dict():
    report = classify("matmul", MATMUL_DIFF)
    data = report.to_dict()
    assert data["level"] == "high" and data["triggers"][2]["line"] == 24


# -- the "Why this is high risk" section ------------------------------------------------------------


def test_risk_section_lists_every_trigger_with_a_link_to_its_line():
    report = classify("matmul", MATMUL_DIFF)
    text = render_risk_section(report, blob_url="https://github.com/acme/models/blob/abc123")
    assert text.startswith(RISK_SECTION_MARKER) and "### Why this is high risk" in text
    assert "**op family**" in text
    assert "[`kernels/matmul.py:24`](https://github.com/acme/models/blob/abc123/kernels/matmul.py#L24)" in text
    assert '`acc += tl.dot(a, b, input_precision="tf32")`' in text
    assert "`autokernel/human-review`" in text


def test_risk_section_is_empty_for_a_low_risk_change():
    assert render_risk_section(classify("norm", NORM_DIFF)) == ""


def test_risk_section_survives_backticks_and_long_lines():
    diff = ("diff --git a/k.py b/k.py\n--- a/k.py\n+++ b/k.py\n@@ -0,0 +1,2 @@\n"
            "+s = `tl.dot(a, b)` + ``x``\n" + "+acc += tl.dot(a, b)" + " " * 300 + "# end\n")
    text = render_risk_section(classify("norm", diff))
    assert "``` s = `tl.dot(a, b)` + ``x`` ```" in text
    assert max(len(line) for line in text.splitlines()) < 220
