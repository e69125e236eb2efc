"""`.autokernel.yml`: the schema, its defaults, and validation that names the file and the key.

Loading never imports the user's code: a `module:callable` is checked by finding the module's source
and looking for a top-level definition of that name, so a config can be validated without a GPU and
without running anything.
"""

from __future__ import annotations

import ast
import difflib
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autokernel_ci.errors import ConfigError

CONFIG_NAMES = (".autokernel.yml", ".autokernel.yaml")
DTYPE_CHOICES = ("fp32", "fp16", "bf16")
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
CALLABLE_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
LLM_MODEL_ENV = "AUTOKERNEL_LLM_MODEL"  # the LLM model when optimize.llm.model is not set


@dataclass
class KernelEntry:
    name: str
    path: str
    op: str | None = None
    reference: str | None = None
    inputs: str | None = None
    kernelbench: str | None = None
    entry: str | None = None
    shapes: list[dict[str, int]] = field(default_factory=list)
    bench_shapes: list[dict[str, int]] = field(default_factory=list)
    dtypes: list[str] = field(default_factory=list)
    tolerance: dict[str, tuple[float, float]] = field(default_factory=dict)
    risk: str | None = None
    allow: list[str] = field(default_factory=list)


@dataclass
class ModelEntry:
    name: str
    factory: str
    dtype: str = "bf16"
    swap: list[str] = field(default_factory=list)
    tolerance: tuple[float, float] | None = None


@dataclass
class GateSettings:
    threshold: float = 0.03
    max_minutes: float = 10.0
    all_tasks: bool = False


@dataclass
class OptimizeSettings:
    budget_minutes: float = 60.0
    max_experiments: int = 200
    patience: int = 40
    proposer: str = "tuner"
    llm_model: str | None = field(default_factory=lambda: os.environ.get(LLM_MODEL_ENV) or None)
    llm_max_cost_usd: float = 10.0
    llm_max_total_tokens: int | None = None  # prompt + completion over the run; None: no token budget
    llm_max_reply_tokens: int = 8192
    llm_parallel: int = 1  # candidates per round (n where the provider supports it, else parallel requests)
    llm_timeout_s: float = 300.0


@dataclass
class Config:
    path: Path
    root: Path
    kernels: list[KernelEntry] = field(default_factory=list)
    models: list[ModelEntry] = field(default_factory=list)
    gate: GateSettings = field(default_factory=GateSettings)
    optimize: OptimizeSettings = field(default_factory=OptimizeSettings)
    risk: dict[str, Any] = field(default_factory=dict)

    def kernel(self, name: str) -> KernelEntry | None:
        return next((k for k in self.kernels if k.name == name), None)


def find_config(start: Path | None = None) -> Path | None:
    """The config file in `start` (default: the current directory), or None."""
    start = Path.cwd() if start is None else start
    for name in CONFIG_NAMES:
        candidate = start / name
        if candidate.is_file():
            return candidate
    return None


def load_config(path: str | Path) -> Config:
    """Read and validate a config file; every problem found is reported in one ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "", "no such file")
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(str(path), where, f"not valid YAML: {problem}") from None
    return _Validator(path).config(data)


class _Validator:
    """Walks the parsed YAML, collecting every problem before raising."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.root = path.parent.resolve()
        self.problems: list[tuple[str, str]] = []

    def fail(self, key: str, message: str) -> None:
        self.problems.append((key, message))

    def config(self, data: Any) -> Config:
        cfg = Config(path=self.path, root=self.root)
        if not isinstance(data, dict):
            raise ConfigError(str(self.path), "", "expected a mapping at the top level")
        self.keys("", data, {"version", "kernels", "models", "gate", "optimize", "risk"})
        if data.get("version") != 1:
            self.fail("version", f"expected 1, got {data.get('version')!r}")
        cfg.kernels = [self.kernel(f"kernels[{i}]", k) for i, k in enumerate(self.seq("kernels", data))]
        names = [k.name for k in cfg.kernels]
        for dup in sorted({n for n in names if names.count(n) > 1}):
            self.fail("kernels", f"the name {dup!r} is used by more than one kernel")
        cfg.models = [self.model(f"models[{i}]", m) for i, m in enumerate(self.seq("models", data))]
        cfg.gate = self.gate(data.get("gate") or {})
        cfg.optimize = self.optimize(data.get("optimize") or {})
        cfg.risk = self.mapping("risk", data.get("risk") or {})
        if self.problems:
            lines = [f"{self.path}: {key}: {msg}" if key else f"{self.path}: {msg}" for key, msg in self.problems]
            err = ConfigError(str(self.path), self.problems[0][0], self.problems[0][1])
            err.args = ("\n".join(lines),)
            err.problems = self.problems  # type: ignore[attr-defined]
            raise err
        return cfg

    # -- sections --------------------------------------------------------------------------

    def kernel(self, key: str, raw: Any) -> KernelEntry:
        allowed = {"name", "path", "op", "reference", "inputs", "kernelbench", "entry", "shapes",
                   "bench_shapes", "dtypes", "tolerance", "risk", "allow"}
        raw = self.mapping(key, raw)
        self.keys(key, raw, allowed)
        entry = KernelEntry(name=self.name(f"{key}.name", raw.get("name")), path="")
        entry.path = self.file(f"{key}.path", raw.get("path"))
        entry.op = raw.get("op")
        if entry.op is not None:
            from autokernel_ci.ops import OP_NAMES

            if entry.op not in OP_NAMES:
                self.fail(f"{key}.op", f"unknown built-in op {entry.op!r}; expected one of {', '.join(OP_NAMES)}"
                          + _suggest(str(entry.op), OP_NAMES))
        if raw.get("kernelbench") is not None:
            entry.kernelbench = self.file(f"{key}.kernelbench", raw.get("kernelbench"))
        for field_name in ("reference", "inputs"):
            if raw.get(field_name) is not None:
                setattr(entry, field_name, self.callable(f"{key}.{field_name}", raw[field_name]))
        sources = [s for s in ("op", "reference", "kernelbench") if raw.get(s) is not None]
        if len(sources) != 1:
            self.fail(key, "expected exactly one of 'op' (a built-in), 'reference' (module:callable) or "
                      f"'kernelbench' (a file), got {sources or 'none'}")
        if entry.reference and not entry.inputs:
            self.fail(f"{key}.inputs", "required with 'reference': a module:callable "
                      "(shape, dtype, generator, kind) -> args")
        if entry.reference and not raw.get("shapes"):
            self.fail(f"{key}.shapes", "required with 'reference': a list of mappings such as {rows: 7, dim: 33}")
        if raw.get("entry") is not None and not (isinstance(raw["entry"], str) and raw["entry"].isidentifier()):
            self.fail(f"{key}.entry", f"expected a Python name, got {raw['entry']!r}")
        entry.entry = raw.get("entry")
        entry.shapes = self.shapes(f"{key}.shapes", raw.get("shapes") or [])
        entry.bench_shapes = self.shapes(f"{key}.bench_shapes", raw.get("bench_shapes") or [])
        entry.dtypes = self.dtypes(f"{key}.dtypes", raw.get("dtypes") or [])
        entry.tolerance = self.tolerance(f"{key}.tolerance", raw.get("tolerance") or {})
        if raw.get("risk") is not None and raw["risk"] not in ("low", "high"):
            self.fail(f"{key}.risk", f"expected 'low' or 'high', got {raw['risk']!r}")
        entry.risk = raw.get("risk")
        entry.allow = self.strings(f"{key}.allow", raw.get("allow") or [])
        return entry

    def model(self, key: str, raw: Any) -> ModelEntry:
        raw = self.mapping(key, raw)
        self.keys(key, raw, {"name", "factory", "dtype", "swap", "tolerance"})
        model = ModelEntry(name=self.name(f"{key}.name", raw.get("name")), factory="")
        model.factory = self.callable(f"{key}.factory", raw.get("factory"))
        dtypes = self.dtypes(f"{key}.dtype", [raw.get("dtype", "bf16")])
        model.dtype = dtypes[0] if dtypes else "bf16"
        model.swap = self.strings(f"{key}.swap", raw.get("swap") or [])
        if raw.get("tolerance") is not None:
            model.tolerance = self.pair(f"{key}.tolerance", raw["tolerance"])
        return model

    def gate(self, raw: Any) -> GateSettings:
        raw = self.mapping("gate", raw)
        self.keys("gate", raw, {"threshold", "max_minutes", "all"})
        settings = GateSettings()
        settings.threshold = self.number("gate.threshold", raw.get("threshold", 0.03), 0.0, 1.0)
        settings.max_minutes = self.number("gate.max_minutes", raw.get("max_minutes", 10.0), 0.0, 1e4)
        settings.all_tasks = bool(raw.get("all", False))
        return settings

    def optimize(self, raw: Any) -> OptimizeSettings:
        raw = self.mapping("optimize", raw)
        self.keys("optimize", raw, {"budget_minutes", "max_experiments", "patience", "proposer", "llm"})
        s = OptimizeSettings()
        s.budget_minutes = self.number("optimize.budget_minutes", raw.get("budget_minutes", s.budget_minutes), 0, 1e5)
        s.max_experiments = int(self.number("optimize.max_experiments",
                                            raw.get("max_experiments", s.max_experiments), 1, 1e7))
        s.patience = int(self.number("optimize.patience", raw.get("patience", s.patience), 1, 1e7))
        proposer = raw.get("proposer", s.proposer)
        if proposer not in ("tuner", "llm"):
            self.fail("optimize.proposer", f"expected 'tuner' or 'llm', got {proposer!r}")
        s.proposer = proposer
        llm = self.mapping("optimize.llm", raw.get("llm") or {})
        self.keys("optimize.llm", llm, {"model", "max_cost_usd", "max_total_tokens", "max_reply_tokens", "parallel",
                                        "timeout_s"})
        if llm.get("model") is not None and not isinstance(llm["model"], str):
            self.fail("optimize.llm.model", f"expected a litellm model string, got {llm['model']!r}")
        s.llm_model = llm.get("model") or s.llm_model
        s.llm_max_cost_usd = self.number("optimize.llm.max_cost_usd", llm.get("max_cost_usd", 10.0), 0, 1e6)
        if llm.get("max_total_tokens") is not None:
            s.llm_max_total_tokens = int(self.number("optimize.llm.max_total_tokens", llm["max_total_tokens"], 1, 1e12))
        s.llm_max_reply_tokens = int(self.number("optimize.llm.max_reply_tokens",
                                                 llm.get("max_reply_tokens", s.llm_max_reply_tokens), 256, 1e6))
        s.llm_parallel = int(self.number("optimize.llm.parallel", llm.get("parallel", s.llm_parallel), 1, 16))
        s.llm_timeout_s = self.number("optimize.llm.timeout_s", llm.get("timeout_s", s.llm_timeout_s), 1, 3600)
        return s

    # -- value checks ----------------------------------------------------------------------

    def keys(self, key: str, raw: dict, allowed: set[str]) -> None:
        for unknown in sorted(set(raw) - allowed, key=str):
            where = f"{key}.{unknown}" if key else str(unknown)
            self.fail(where, f"unknown key; expected one of {', '.join(sorted(allowed))}"
                      + _suggest(str(unknown), allowed))

    def seq(self, key: str, data: dict) -> list[Any]:
        value = data.get(key) or []
        if not isinstance(value, list):
            self.fail(key, f"expected a list, got {type(value).__name__}")
            return []
        return value

    def mapping(self, key: str, value: Any) -> dict:
        if not isinstance(value, dict):
            self.fail(key, f"expected a mapping, got {type(value).__name__}")
            return {}
        return value

    def name(self, key: str, value: Any) -> str:
        if not isinstance(value, str) or not NAME_RE.match(value):
            self.fail(key, f"expected a name of letters, digits, '_', '.' or '-', got {value!r}")
            return str(value)
        return value

    def file(self, key: str, value: Any) -> str:
        if not isinstance(value, str) or not value:
            self.fail(key, f"expected a file path relative to {self.root}, got {value!r}")
            return ""
        if not (self.root / value).is_file():
            self.fail(key, f"file not found: {value} (looked in {self.root})")
        return value

    def callable(self, key: str, value: Any) -> str:
        if not isinstance(value, str) or not CALLABLE_RE.match(value):
            self.fail(key, f"expected 'module:callable' such as 'mypkg.refs:make_inputs', got {value!r}")
            return str(value)
        module, attr = value.split(":")
        problem = _find_definition(module, attr, self.root)
        if problem:
            self.fail(key, problem)
        return value

    def shapes(self, key: str, value: Any) -> list[dict[str, int]]:
        if not isinstance(value, list):
            self.fail(key, "expected a list of mappings such as {rows: 7, dim: 33}")
            return []
        out = []
        for i, shape in enumerate(value):
            if not isinstance(shape, dict) or not all(
                isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v > 0
                for k, v in shape.items()
            ):
                self.fail(f"{key}[{i}]", f"expected a mapping of dim names to positive integers, got {shape!r}")
                continue
            out.append(dict(shape))
        return out

    def dtypes(self, key: str, value: Any) -> list[str]:
        if not isinstance(value, list):
            value = [value]
        bad = [v for v in value if v not in DTYPE_CHOICES]
        if bad:
            self.fail(key, f"expected dtypes from {', '.join(DTYPE_CHOICES)}, got {bad}")
        return [v for v in value if v in DTYPE_CHOICES]

    def tolerance(self, key: str, value: Any) -> dict[str, tuple[float, float]]:
        value = self.mapping(key, value)
        out = {}
        for dtype, pair in value.items():
            if dtype not in DTYPE_CHOICES:
                self.fail(f"{key}.{dtype}", f"expected a dtype from {', '.join(DTYPE_CHOICES)}")
                continue
            checked = self.pair(f"{key}.{dtype}", pair)
            if checked:
                out[dtype] = checked
        return out

    def pair(self, key: str, value: Any) -> tuple[float, float] | None:
        if (not isinstance(value, (list, tuple)) or len(value) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in value)):
            self.fail(key, f"expected [atol, rtol], two non-negative numbers, got {value!r}")
            return None
        return (float(value[0]), float(value[1]))

    def strings(self, key: str, value: Any) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(key, f"expected a list of strings, got {value!r}")
            return []
        return list(value)

    def number(self, key: str, value: Any, low: float, high: float) -> float:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not (low <= value <= high):
            self.fail(key, f"expected a number between {low:g} and {high:g}, got {value!r}")
            return low
        return float(value)


def _suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def top_level_names(tree: ast.Module) -> set[str]:
    """The names a module defines at its top level: functions, classes, assignments and imports."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.ImportFrom, ast.Import)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def _find_definition(module: str, attr: str, root: Path) -> str | None:
    """Why `module:attr` cannot be resolved from `root`, or None. Reads source; imports and executes nothing
    (not even a parent package's `__init__.py`, which `importlib.util.find_spec` of a dotted name would run)."""
    origin = module_source(module, root)
    if origin is None:
        return f"module {module!r} not found (searched {root} and the installed packages)"
    if not origin.endswith(".py"):
        return None  # a compiled or namespace module: trust it
    try:
        tree = ast.parse(Path(origin).read_text(), filename=origin)
    except (OSError, SyntaxError, UnicodeDecodeError) as exc:
        return f"module {module!r} could not be read: {exc}"
    names = top_level_names(tree)
    if attr not in names:
        return f"module {module!r} ({origin}) defines no {attr!r}" + _suggest(attr, names)
    return None


def module_source(module: str, root: Path) -> str | None:
    """The file that `import module` would load with `root` first on sys.path (a package's
    `__init__.py`, a namespace package's folder, or an installed module's origin), found without importing."""
    parts = module.split(".")
    base = Path(root).joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return str(candidate)
    if base.is_dir():
        return str(base)
    if parts[0] in sys.builtin_module_names:
        return "built-in"
    from importlib.machinery import PathFinder

    search = [p for p in sys.path if p and Path(p).resolve() != Path(root).resolve()]
    spec = None
    for i in range(len(parts)):
        try:
            spec = PathFinder.find_spec(".".join(parts[:i + 1]), search)
        except (ImportError, ValueError):
            return None
        if spec is None:
            return None
        if i + 1 < len(parts):
            search = list(spec.submodule_search_locations or [])
            if not search:
                return None
    if spec is None:
        return None
    if spec.origin and spec.origin not in ("built-in", "frozen", "namespace"):
        return spec.origin
    return next(iter(spec.submodule_search_locations or []), None) or "built-in"


# --- the policy: what decides the gate's verdicts -----------------------------------------------------

# A task's keys that decide its verdict. `path` and `entry` are not among them: they say where the
# kernel is and what it is called, which is the pull request's to change (a moved file is the same task).
TASK_POLICY_KEYS = ("op", "reference", "inputs", "kernelbench", "shapes", "bench_shapes", "dtypes", "tolerance",
                    "allow", "risk")


@dataclass
class PolicyChange:
    """One policy key that the head changed: its value in the base and in the head (None: not set)."""

    key: str  # "gate.threshold", "risk", "kernels.rmsnorm.tolerance.fp32", …
    base: Any
    head: Any
    task: str | None = None


def policy_values(cfg: Config) -> dict[str, tuple[str | None, Any]]:
    """Every policy key of a config → (task, value), as plain data (tuples become lists)."""
    values: dict[str, tuple[str | None, Any]] = {
        "gate.threshold": (None, cfg.gate.threshold),
        "gate.max_minutes": (None, cfg.gate.max_minutes),
        "gate.all": (None, cfg.gate.all_tasks),
        "risk": (None, _plain(cfg.risk)),
    }
    for entry in cfg.kernels:
        prefix = f"kernels.{entry.name}"
        for key in TASK_POLICY_KEYS:
            if key == "tolerance":
                for dtype, pair in sorted(entry.tolerance.items()):
                    values[f"{prefix}.tolerance.{dtype}"] = (entry.name, list(pair))
                continue
            values[f"{prefix}.{key}"] = (entry.name, _plain(getattr(entry, key)))
    return values


def policy_changes(base: Config, head: Config, since: Config | None = None) -> list[PolicyChange]:
    """The policy keys of the base's tasks and `gate:` that the head set differently, in a stable order.

    `since` (the merge base's config, when the head branched from an older base) decides what the head
    changed: a key the base changed after the head branched, and the head left alone, is the base's and
    not listed. Tasks only the head has are new tasks, not policy changes; tasks only the base has are
    removed tasks, reported apart."""
    before = policy_values(since if since is not None else base)
    now, after = policy_values(base), policy_values(head)
    head_names = {k.name for k in head.kernels}
    changes = []
    for key in sorted(set(now) | set(before) | set(after), key=_policy_order):
        task = (now.get(key) or before.get(key) or after.get(key) or (None, None))[0]
        if task is not None and (base.kernel(task) is None or task not in head_names):
            continue  # a task added or removed: its own verdict
        old, new = (now.get(key) or (None, None))[1], (after.get(key) or (None, None))[1]
        if new == old or new == (before.get(key) or (None, None))[1]:
            continue
        changes.append(PolicyChange(key=key, base=old, head=new, task=task))
    return changes


def _policy_order(key: str) -> tuple[int, str]:
    return (1 if key.startswith("kernels.") else 0, key)


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value
