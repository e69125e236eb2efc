"""Classify a kernel change as high or low risk from the task's op family and the diff.

High risk means a human should read the change before it merges: it runs on tensor cores (where
wrong tiling, layouts or accumulation types give answers that are close but wrong on shapes the
gate did not try), hands work to a vendor library, or changes the numerics (lower-precision
accumulation, TF32, fast-math approximations, atomics that make results depend on scheduling).

Only lines the change adds are read: a line in the diff's new file is what will run. Each trigger
records the file, the line number in the new file, the line and the reason, so a reviewer can go
straight to it. The classification is advice turned into a rule elsewhere: `github.py` labels the
pull request and holds the `autokernel/human-review` status pending until a maintainer approves.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from autokernel_ci.errors import ConfigError

HIGH = "high"
LOW = "low"

# (category, pattern, reason). Patterns are matched against each added line of the diff.
_TENSOR_CORE = "tensor cores"
_VENDOR = "vendor library"
_NUMERICS = "numerics"

DEFAULT_RULES: tuple[tuple[str, str, str], ...] = (
    (_TENSOR_CORE, r"\btl\.dot_scaled\s*\(", "tl.dot_scaled: block-scaled low-precision matmul on tensor cores"),
    (_TENSOR_CORE, r"\btl\.dot\s*\(", "tl.dot: matrix multiply on tensor cores"),
    (_TENSOR_CORE, r"\bwgmma\b", "wgmma: Hopper warpgroup tensor-core instruction"),
    (_TENSOR_CORE, r"\bmma(\.sync|\.sp)?\b|\bmma_sync\b", "mma: warp-level tensor-core instruction"),
    (_TENSOR_CORE, r"\bwmma\b", "wmma: warp-level tensor-core API"),
    (_TENSOR_CORE, r"\b(make_tensor_descriptor|TensorDescriptor|tensormap|_experimental_descriptor_\w+)\b",
     "tensor descriptor (TMA): hardware bulk copies whose bounds and strides are easy to get wrong"),
    (_TENSOR_CORE, r"\bTMA\b|cp\.async\.bulk\.tensor", "TMA bulk tensor copy"),
    (_VENDOR, r"(?i)\bcutlass\b|\bcute::", "CUTLASS/CuTe: templated tensor-core kernels"),
    (_VENDOR, r"(?i)\bcublas(lt)?\w*", "cuBLAS call: results depend on the library's algorithm choice"),
    (_NUMERICS, r"\btl\.zeros\s*\([^#]*dtype\s*=\s*tl\.(float16|bfloat16|float8\w*)",
     "accumulator allocated in lower precision than float32"),
    (_NUMERICS, r"\bout_dtype\s*=\s*tl\.(float16|bfloat16)", "dot product accumulates in 16-bit precision"),
    (_NUMERICS, r"\bacc(umulator)?_?dtype\s*=\s*(tl|torch)\.(float16|bfloat16|half)",
     "accumulation in lower precision than float32"),
    (_NUMERICS, r"(?i)\btf32\b|allow_tf32\s*=\s*True", "TF32 allowed: 10-bit mantissa inputs to float32 matmuls"),
    (_NUMERICS, r"set_float32_matmul_precision\s*\(\s*['\"](high|medium)['\"]",
     "float32 matmuls may run in TF32 or bfloat16"),
    (_NUMERICS, r"\b(float8\w*|fp8\w*|e4m3\w*|e5m2\w*)\b", "FP8 numerics"),
    (_NUMERICS, r"(?i)fast[-_]?math|\b__(expf|logf|sinf|cosf|powf|fdividef|frcp_\w+)\b|\bfast_(exp|log|div|sqrt)\w*"
     r"|\.approx\.(ftz|f16|bf16|f32|f64)\b", "fast-math approximation"),
    (_NUMERICS, r"\btl\.atomic_\w+|\batomic(Add|Max|Min|CAS|Exch)\b|\b(index_add_|scatter_add_|index_put_)\s*\(",
     "atomics: float results depend on the order threads arrive in"),
    (_NUMERICS, r"use_deterministic_algorithms\s*\(\s*False", "determinism turned off"),
)


@dataclass
class RiskConfig:
    """What counts as high risk and how the pull request shows it; every field has a working default.

    `min_triggers` is the threshold: the number of triggers at which a change becomes high risk.
    `extra_patterns` maps a regular expression (matched against added lines) to the reason shown.
    `fallback_reviewers` are requested when CODEOWNERS names nobody for the touched files.
    """

    high_label: str = "autokernel: needs-human-review"
    low_label: str = "autokernel: low-risk"
    high_risk_families: tuple[str, ...] = ("matmul", "attention", "conv")
    extra_patterns: dict[str, str] = field(default_factory=dict)
    fallback_reviewers: tuple[str, ...] = ()
    min_triggers: int = 1

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], path: str = ".autokernel.yml") -> RiskConfig:
        """Build from the `risk:` section of the config file; errors name the file and the key."""
        known = {"high_label", "low_label", "high_risk_families", "extra_patterns", "fallback_reviewers",
                 "min_triggers"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(path, f"risk.{unknown[0]}", f"unknown key; expected one of {', '.join(sorted(known))}")
        cfg = cls()
        for key in ("high_label", "low_label"):
            if key in data:
                value = data[key]
                if not isinstance(value, str) or not value.strip() or len(value) > 50:
                    raise ConfigError(path, f"risk.{key}", "expected a label name of 1 to 50 characters")
                setattr(cfg, key, value)
        for key in ("high_risk_families", "fallback_reviewers"):
            if key in data:
                value = data[key]
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ConfigError(path, f"risk.{key}", "expected a list of strings")
                setattr(cfg, key, tuple(v.lstrip("@") if key == "fallback_reviewers" else v for v in value))
        if "extra_patterns" in data:
            value = data["extra_patterns"]
            if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                      for k, v in value.items()):
                raise ConfigError(path, "risk.extra_patterns", "expected a mapping of regular expression to reason")
            for pattern in value:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ConfigError(path, f"risk.extra_patterns.{pattern}",
                                      f"invalid regular expression: {exc}") from None
            cfg.extra_patterns = dict(value)
        if "min_triggers" in data:
            value = data["min_triggers"]
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(path, "risk.min_triggers", "expected an integer of at least 1")
            cfg.min_triggers = value
        return cfg

    def rules(self) -> list[tuple[str, re.Pattern[str], str]]:
        compiled = [(cat, re.compile(pat), reason) for cat, pat, reason in DEFAULT_RULES]
        compiled += [("configured", re.compile(pat), reason) for pat, reason in self.extra_patterns.items()]
        return compiled


@dataclass(frozen=True)
class RiskTrigger:
    """One reason for high risk. `file` and `line` are empty for reasons that are not a line (the op family)."""

    reason: str
    category: str
    file: str = ""
    line: int | None = None
    text: str = ""


@dataclass
class RiskReport:
    level: str
    family: str
    triggers: list[RiskTrigger] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # every file the diff touches, in diff order

    @property
    def is_high(self) -> bool:
        return self.level == HIGH

    def label(self, config: RiskConfig | None = None) -> str:
        config = config or RiskConfig()
        return config.high_label if self.is_high else config.low_label

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AddedLine:
    file: str
    line: int  # 1-based line number in the new file
    text: str


def classify(task_family: str, diff_text: str, config: RiskConfig | None = None, *,
             declared: str | None = None) -> RiskReport:
    """Classify a change. `declared` is the task's `risk:` from the config; "high" forces high risk."""
    config = config or RiskConfig()
    triggers: list[RiskTrigger] = []
    family = (task_family or "").strip().lower()
    if family in {f.lower() for f in config.high_risk_families}:
        triggers.append(RiskTrigger(reason=f"the task's op family '{family}' runs on tensor cores or vendor GEMMs",
                                    category="op family"))
    if declared == HIGH:
        triggers.append(RiskTrigger(reason="the task is declared `risk: high` in the config", category="config"))

    files: list[str] = []
    rules = config.rules()
    for item in iter_diff(diff_text):
        if isinstance(item, str):
            files.append(item)
            continue
        for category, pattern, reason in rules:
            if pattern.search(item.text):
                triggers.append(RiskTrigger(reason=reason, category=category, file=item.file, line=item.line,
                                            text=item.text.strip()))
                break  # one reason per line keeps the list readable; the first rule is the most specific

    forced = declared == HIGH
    level = HIGH if forced or len(triggers) >= config.min_triggers else LOW
    return RiskReport(level=level, family=family, triggers=triggers, files=files)


_HUNK = re.compile(r"^@@ -\d+(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def iter_diff(diff_text: str) -> Iterator[str | AddedLine]:
    """Walk a unified git diff: yield each touched file's path (a str), then its added lines.

    Hunk line counts are followed exactly, so an added line that itself starts with `++` or `--` is
    never mistaken for a file header. A deleted file yields its old path and no lines.
    """
    path = ""
    old_path = ""
    new_line = 0
    old_left = new_left = 0
    announced: set[str] = set()
    for raw in diff_text.splitlines():
        if (old_left > 0 or new_left > 0) and raw[:1] in ("+", "-", " ", "\\", ""):
            if raw.startswith("\\"):
                continue  # "\ No newline at end of file"
            tag, text = raw[:1], raw[1:]
            if tag == "+":
                yield AddedLine(path, new_line, text)
                new_line += 1
                new_left -= 1
            elif tag == "-":
                old_left -= 1
            else:  # context (a blank context line may have lost its leading space)
                new_line += 1
                new_left -= 1
                old_left -= 1
            continue
        old_left = new_left = 0  # a header line ends any hunk whose counts ran short
        if raw.startswith("diff --git "):
            match = re.match(r"diff --git (?:\"?a/)(.*?)\"? (?:\"?b/)(.*?)\"?$", raw)
            old_path = match.group(1) if match else ""
            path = match.group(2) if match else ""
        elif raw.startswith("--- "):
            name = raw[4:].strip().strip('"')
            old_path = name[2:] if name.startswith("a/") else old_path
        elif raw.startswith("+++ "):
            name = raw[4:].strip().strip('"')
            path = name[2:] if name.startswith("b/") else (old_path if name == "/dev/null" else name)
        elif raw.startswith("rename to "):
            path = raw[len("rename to "):]
        elif raw.startswith("@@"):
            match = _HUNK.match(raw)
            if not match:
                continue
            old_left = int(match.group(1)) if match.group(1) is not None else 1
            new_line = int(match.group(2))
            new_left = int(match.group(3)) if match.group(3) is not None else 1
        else:
            continue
        if path and path not in announced:
            announced.add(path)
            yield path


def added_lines(diff_text: str) -> Iterable[AddedLine]:
    return [item for item in iter_diff(diff_text) if isinstance(item, AddedLine)]
