"""Reward-hacking defences: refuse a candidate that wins by gaming the gate instead of by being fast.

Two layers, each returning `Finding`s (rule, one-sentence message, line or operator):

- **Static** (`scan_source`): an AST walk over the candidate's source before anything runs. It
  refuses monkeypatching of imported modules, introspection of other code's frames and globals,
  escapes from the sandbox (processes, threads, network, files, environment), fallback paths that
  replace a failed kernel launch with another implementation, side CUDA streams and graphs, and
  result caches keyed by inputs. Names are resolved through imports and simple aliases
  (`import torch as t`, `from torch import nn`, `T = torch.Tensor`), never matched as text.
- **Dynamic** (used in the worker while the candidate runs): `OpRecorder` records every ATen
  operator the call executes and `classify_ops` refuses the ones that compute the reference's
  answer in PyTorch (matmul, softmax, norms, reductions, pointwise maths…); `snapshot_module_state`
  and `diff_module_state` catch replaced functions that the harness relies on (comparisons,
  timers, serialisation, exit).

The allow-list
--------------
A task's `allow` (one list, passed to both `scan_source` and `classify_ops`; each ignores the
entries meant for the other) exempts what the task legitimately needs. An entry is one of:

- a rule name: `"static.escape"`, `"dynamic.torch-compute"` — the whole rule is off;
- a rule and a subject: `"static.escape:os.environ"` — that subject, under that rule only;
- a dotted name: `"os.environ"`, `"threading"`, `"torch.backends"` — every static finding about
  that name or anything under it (`"threading"` covers `threading.Thread`);
- an operator group: `"matmul"`, `"softmax"`, `"norm"`, `"reduction"`, `"pointwise"`, … (see
  `OP_GROUPS`) — those operators may run in PyTorch (a task that keeps cuBLAS for its matmul);
- an operator: `"aten.mm.default"`, `"aten.mm"` or `"mm"` — that one operator (every overload
  unless the overload is named).

The subject of a static finding is the dotted name it is about (`os.environ`, `torch.allclose`),
the attribute for frame access (`f_locals`), the container for caches (`_CACHE`), and the
function name for fallbacks; it is shown in each message.

Importing this module does not import torch (the static checks run in the parent process, which
may not need it): `OpRecorder` is built on first access.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import sys
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autokernel_ci.results import Finding

if TYPE_CHECKING:  # pragma: no cover - for type checkers only; see __getattr__ at the bottom
    from torch.utils._python_dispatch import TorchDispatchMode

    class OpRecorder(TorchDispatchMode):
        ops: list[str]

        def counts(self) -> dict[str, int]: ...


__all__ = [
    "DYNAMIC_RULES",
    "HARMLESS_OPS",
    "OP_GROUPS",
    "STATIC_RULES",
    "WATCHED_NAMESPACES",
    "OpRecorder",
    "classify_ops",
    "diff_module_state",
    "scan_candidate",
    "scan_source",
    "snapshot_module_state",
    "unclassified_ops",
]

MONKEYPATCH = "static.monkeypatch"
INTROSPECTION = "static.introspection"
ESCAPE = "static.escape"
FALLBACK = "static.fallback"
CUDA_STREAM = "static.cuda-stream"
CACHE = "static.cache"
SYNTAX = "static.syntax"
TORCH_COMPUTE = "dynamic.torch-compute"
UNLISTED_OP = "dynamic.operator"
HOST_TRANSFER = "dynamic.host-transfer"
MODULE_STATE = "dynamic.module-state"

STATIC_RULES = (MONKEYPATCH, INTROSPECTION, ESCAPE, FALLBACK, CUDA_STREAM, CACHE, SYNTAX)
DYNAMIC_RULES = (TORCH_COMPUTE, UNLISTED_OP, HOST_TRANSFER, MODULE_STATE)

# ---------------------------------------------------------------------------------------------
# Static checks: what is refused, and why (the reason completes the sentence "uses X, which …").
# ---------------------------------------------------------------------------------------------

_PROCESSES = "starts or signals other processes that run outside the sandbox's limits and checks"
_EXIT = "ends the worker on the candidate's terms, before the harness has judged its output"
_THREADS = "runs work on other threads or event loops, where it can outlive the call and hide from timing"
_SIGNALS = "handles or sends signals, which can defeat the harness's time limit"
_NETWORK = "reaches the network, which a candidate must never touch"
_FILES = "reads or writes files or streams, where results can be planted or reports faked"
_PICKLE = "deserialises arbitrary objects, which can run any code"
_ENVIRON = "reads or changes the environment, where tokens and API keys live"
_NATIVE = "builds or loads native code that none of the checks can see"
_HOST = "moves tensor data to the host, where computation escapes the operator recorder"
_FRAMES = "reaches other code's frames, where the harness keeps its inputs and reference results"
_MEMORY = "reads and writes raw process memory, out of sight of every check"
_GC = "can reach every live object, the harness's reference results included"
_DYNAMIC_CODE = "runs or imports code chosen at run time, out of the static checks' sight"
_SYS_MODULES = "reads or replaces the modules the harness imports"
_TRACE = "hooks every call the harness makes"
_DISPATCH = "reaches PyTorch's dispatcher internals, where operator recording can be switched off"
_STREAMS = "creates or switches CUDA streams or graphs, where work can run outside the stream the harness times"
_LIBRARY = "registers operator implementations, which can replace the ones the reference and the harness use"
_HARNESS = "reaches the harness that checks, times and reports it"
_OBSERVES = ("observes the settings the harness chooses for a call, which can tell a checked call from a "
             "timed one")
_SETTINGS = ("changes PyTorch's global settings, which the harness fixes for every candidate "
             "(poisoned memory, precision)")

# Dotted name (or prefix of one) -> (rule, reason). A name matches a key equal to it or to one of
# its dotted prefixes: "concurrent" covers "concurrent.futures.ThreadPoolExecutor".
_NAME_RULES: dict[str, tuple[str, str]] = {
    **{name: (ESCAPE, _PROCESSES) for name in (
        "subprocess", "pty", "os.system", "os.popen", "os.fork", "os.forkpty", "os.kill", "os.killpg",
        "os.register_at_fork", "multiprocessing", "torch.multiprocessing")},
    **{name: (ESCAPE, _EXIT) for name in (
        "os._exit", "os.abort", "sys.exit", "builtins.exit", "builtins.quit")},
    **{name: (ESCAPE, _THREADS) for name in ("threading", "_thread", "concurrent", "asyncio")},
    **{name: (ESCAPE, _SIGNALS) for name in ("signal",)},
    **{name: (ESCAPE, _NETWORK) for name in (
        "socket", "ssl", "urllib", "http", "requests", "httpx", "aiohttp", "ftplib", "smtplib", "telnetlib",
        "xmlrpc", "websocket", "websockets", "torch.hub", "torch.distributed")},
    **{name: (ESCAPE, _FILES) for name in (
        "builtins.open", "io.open", "io.FileIO", "codecs.open", "pathlib", "shutil", "tempfile", "glob",
        "fileinput", "mmap", "os.open", "os.fdopen", "os.read", "os.write", "os.dup", "os.dup2", "os.pipe",
        "os.remove", "os.unlink", "os.rename", "os.replace", "os.makedirs", "os.mkdir", "os.rmdir",
        "os.removedirs", "os.listdir", "os.scandir", "os.walk", "os.truncate", "os.symlink", "os.link",
        "os.chmod", "os.chdir", "os.mkfifo", "sys.stdout", "sys.stderr", "sys.stdin", "sys.__stdout__",
        "sys.__stderr__", "sys.__stdin__", "torch.save", "torch.load", "torch.from_file", "numpy.load",
        "numpy.save", "numpy.savez", "numpy.savez_compressed", "numpy.fromfile", "numpy.memmap",
        "numpy.loadtxt", "numpy.savetxt", "numpy.genfromtxt")},
    **{name: (ESCAPE, _PICKLE) for name in (
        "pickle", "_pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle", "joblib")},
    **{name: (ESCAPE, _ENVIRON) for name in (
        "os.environ", "os.environb", "os.getenv", "os.getenvb", "os.putenv", "os.unsetenv")},
    **{name: (ESCAPE, _NATIVE) for name in ("torch.utils.cpp_extension", "torch.ops.load_library", "cffi")},
    **{name: (ESCAPE, _HOST) for name in ("torch.from_numpy", "torch.from_dlpack", "torch.utils.dlpack")},
    **{name: (INTROSPECTION, _FRAMES) for name in (
        "inspect", "traceback.walk_stack", "traceback.walk_tb", "sys._getframe", "sys._current_frames",
        "sys.exc_info", "sys.exception", "sys.last_traceback")},
    **{name: (INTROSPECTION, _MEMORY) for name in ("ctypes", "_ctypes")},
    **{name: (INTROSPECTION, _GC) for name in ("gc",)},
    **{name: (INTROSPECTION, _DYNAMIC_CODE) for name in (
        "importlib", "imp", "runpy", "zipimport", "builtins.eval", "builtins.exec", "builtins.compile",
        "builtins.__import__", "builtins.globals", "builtins.breakpoint", "types.FunctionType",
        "types.CodeType", "types.ModuleType", "code", "codeop")},
    **{name: (INTROSPECTION, _SYS_MODULES) for name in ("sys.modules", "sys.meta_path", "sys.path_hooks")},
    **{name: (INTROSPECTION, _TRACE) for name in (
        "sys.settrace", "sys.setprofile", "sys.addaudithook", "sys.monitoring", "sys.breakpointhook")},
    **{name: (INTROSPECTION, _DISPATCH) for name in (
        "torch._C", "torch.utils._python_dispatch", "torch.overrides", "torch._dispatch", "torch._subclasses",
        "torch._ops", "torch.utils._mode_utils", "torch.utils._device")},
    **{name: (CUDA_STREAM, _STREAMS) for name in (
        "torch.cuda.Stream", "torch.cuda.ExternalStream", "torch.cuda.stream", "torch.cuda.set_stream",
        "torch.cuda.StreamContext", "torch.cuda.streams", "torch.cuda.graph", "torch.cuda.CUDAGraph",
        "torch.cuda.graphs", "torch.cuda.make_graphed_callables", "torch.cuda.graph_pool_handle",
        "torch.Stream", "torch.accelerator.set_stream", "torch.accelerator.Stream",
        "triton.testing.CudaGraph")},
    **{name: (MONKEYPATCH, _LIBRARY) for name in ("torch.library", "torch._library")},
    **{name: (INTROSPECTION, _HARNESS) for name in ("autokernel_ci", "__main__")},
    **{name: (INTROSPECTION, _OBSERVES) for name in (
        "torch.are_deterministic_algorithms_enabled", "torch.is_deterministic_algorithms_warn_only_enabled",
        "torch.get_deterministic_debug_mode", "torch.utils.deterministic", "torch.is_grad_enabled",
        "torch.is_inference_mode_enabled")},
    **{name: (ESCAPE, _FILES) for name in (
        "linecache", "sys.argv", "sys.orig_argv", "torch.UntypedStorage.from_file", "torch.TypedStorage.from_file",
        "torch.ByteStorage.from_file", "torch.FloatStorage.from_file", "numpy.fromregex")},
    **{name: (ESCAPE, _HOST) for name in (
        "numpy.asarray", "numpy.array", "numpy.asanyarray", "numpy.ascontiguousarray", "numpy.frombuffer",
        "numpy.copyto")},
    **{name: (ESCAPE, _THREADS) for name in ("torch.jit.fork", "torch.jit._fork", "torch.futures")},
    **{name: (MONKEYPATCH, _SETTINGS) for name in (
        "torch.use_deterministic_algorithms", "torch.set_deterministic_debug_mode", "torch.set_default_dtype",
        "torch.set_default_device", "torch.set_default_tensor_type", "torch.set_float32_matmul_precision",
        "torch.set_flush_denormal")},
}

# Prefixes of a final name component: "os.exec" covers os.execv, os.execvpe, …
_NAME_PREFIX_RULES: dict[str, tuple[str, str]] = {
    "os.exec": (ESCAPE, _PROCESSES),
    "os.spawn": (ESCAPE, _PROCESSES),
    "os.posix_spawn": (ESCAPE, _PROCESSES),
    "os.wait": (ESCAPE, _PROCESSES),
}

# Attributes that reach frames, globals or bytecode whatever object they are read from.
_FRAME_ATTRS = frozenset({
    "__globals__", "__code__", "__closure__", "__builtins__", "__subclasses__", "f_back", "f_locals",
    "f_globals", "f_builtins", "f_code", "f_trace", "tb_frame", "tb_next", "gi_frame", "cr_frame", "ag_frame",
    "gi_code", "cr_code",
})
# Methods whose name alone says what they do, whatever the receiver.
_FILE_METHODS = frozenset({"read_text", "write_text", "read_bytes", "write_bytes"})
_HOST_METHODS = frozenset({"numpy", "tolist"})
_TENSOR_CLASSES = frozenset({"torch.Tensor", "torch._C.TensorBase", "torch._C._TensorBase", "torch.nn.Parameter"})
_OVERRIDE_METHODS = frozenset({"__torch_function__", "__torch_dispatch__"})
_CACHE_DECORATORS = frozenset({"functools.cache", "functools.lru_cache", "functools.cached_property"})
_CONTAINER_FACTORIES = frozenset({
    "builtins.dict", "builtins.list", "builtins.set", "collections.OrderedDict", "collections.defaultdict",
    "collections.deque", "collections.Counter", "collections.ChainMap", "weakref.WeakValueDictionary",
    "weakref.WeakKeyDictionary", "weakref.WeakSet",
})
_CONTAINER_WRITES = frozenset({"update", "setdefault", "append", "appendleft", "add", "extend", "insert",
                               "__setitem__"})
# Calls a fallback handler may make without computing anything: reporting the error.
_REPORTING_CALLS = frozenset({"builtins.print", "warnings.warn", "traceback.print_exc", "traceback.format_exc"})
_REPORTING_METHODS = frozenset({"debug", "info", "warning", "warn", "error", "exception", "critical", "log"})
# Parts of a tensor that are tensors themselves; every other attribute (shape, dtype…) is metadata.
_TENSOR_ATTRS = frozenset({"T", "mT", "H", "mH", "data", "real", "imag", "grad"})
_SCALAR_METHODS = frozenset({
    "data_ptr", "size", "stride", "numel", "nelement", "dim", "ndimension", "element_size", "item", "tolist",
    "is_contiguous", "storage_offset", "get_device", "is_floating_point", "is_complex", "type",
})
_IDENTITY_METHODS = frozenset({"data_ptr", "untyped_storage", "storage", "_cdata", "__hash__"})
_BUILTIN_NAMES = frozenset(dir(builtins))
# Tensor methods the harness reads results through: set on an instance, they would run instead.
_TENSOR_METHODS = frozenset({
    "detach", "to", "cpu", "cuda", "clone", "contiguous", "float", "double", "numpy", "tolist", "item", "view",
    "reshape", "isnan", "isinf", "nan_to_num", "is_floating_point", "equal", "allclose", "copy_", "data_ptr",
    "__eq__", "__float__", "__bool__", "__array__", "__reduce_ex__", "__deepcopy__", "storage", "untyped_storage",
})
_SETTERS = frozenset({"builtins.setattr", "builtins.delattr", "object.__setattr__", "builtins.object.__setattr__",
                      "builtins.object.__delattr__", "builtins.type.__setattr__"})


@dataclass(frozen=True)
class _Raw:
    """A finding before the allow-list: `subject` is what an allow-list entry can name."""

    rule: str
    subject: str
    line: int | None
    message: str


def scan_source(source: str, allow: Iterable[str] = (), *, entry: str = "kernel_fn") -> list[Finding]:
    """Statically check a candidate's source and return one finding per rule and line, in line order.

    `entry` is the function (or class, for KernelBench's `ModelNew`) the harness calls; its body and
    the module-level functions it calls by name form the "kernel path" that the fallback and cache
    rules look at. When the source defines no such name, every function counts as the kernel path.
    `allow` is the task's allow-list (see the module docstring).
    """
    try:
        with warnings.catch_warnings():  # the candidate's invalid escapes are not the caller's warnings
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(source)
    except SyntaxError as exc:
        detail = exc.msg or "invalid syntax"
        return [Finding(SYNTAX, f"the source does not parse ({detail}), so it cannot be checked or run.",
                        line=exc.lineno)]
    except ValueError as exc:  # e.g. null bytes in the source
        return [Finding(SYNTAX, f"the source does not parse ({exc}), so it cannot be checked or run.")]
    scan = _Scan(tree, entry)
    raws = [*scan.names(), *scan.fallbacks(), *scan.caches()]
    allowed = frozenset(allow)
    kept: dict[tuple[str, int | None], Finding] = {}
    for raw in sorted(raws, key=lambda r: (r.line or 0, r.rule)):
        if not _allowed(raw, allowed):
            kept.setdefault((raw.rule, raw.line), Finding(raw.rule, raw.message, line=raw.line))
    return list(kept.values())


def scan_candidate(path: str | Path, source: str | None = None, allow: Iterable[str] = (), *,
                   entry: str = "kernel_fn") -> list[Finding]:
    """`scan_source` over the candidate and every file of its folder that it imports, directly or not.

    The worker puts the candidate's folder first on `sys.path`, so `import helpers`, `from pkg import
    mod` and relative imports there load repository code that runs inside the call as the candidate
    does; a finding in such a file names it (`in helpers.py: …`). Imports that resolve outside the
    folder (torch, triton) are the watched namespaces' business, not scanned here.
    """
    path = Path(path)
    root = path.resolve().parent
    text = path.read_text() if source is None else source
    findings = scan_source(text, allow, entry=entry)
    seen = {path.resolve()}
    todo = [(path.resolve(), text)]
    while todo:
        current, current_source = todo.pop()
        for imported in _imported_files(current, current_source, root):
            if imported in seen:
                continue
            seen.add(imported)
            try:
                imported_source = imported.read_text()
            except (OSError, UnicodeDecodeError) as exc:
                findings.append(Finding(SYNTAX, f"in {imported.relative_to(root)}: cannot be read ({exc}), so "
                                        "it cannot be checked."))
                continue
            label = imported.relative_to(root).as_posix()
            for finding in scan_source(imported_source, allow, entry=entry):
                findings.append(Finding(finding.rule, f"in {label}: {finding.message}", line=finding.line,
                                        operator=label))
            todo.append((imported, imported_source))
    return findings


def _imported_files(path: Path, source: str, root: Path) -> list[Path]:
    """The files under `root` that `source` (the file at `path`) imports, as the worker's `sys.path` finds them."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    names: list[tuple[Path, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(root, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = root
            if node.level:
                base = path.parent
                for _ in range(node.level - 1):
                    base = base.parent
            module = node.module or ""
            names.append((base, module))
            names += [(base, f"{module}.{alias.name}" if module else alias.name) for alias in node.names
                      if alias.name != "*"]
    found: list[Path] = []
    for base, dotted in names:
        parts = [p for p in dotted.split(".") if p]
        for i in range(1, len(parts) + 1):  # `import pkg.mod` runs pkg/__init__.py, then pkg/mod.py
            stem = base.joinpath(*parts[:i])
            for candidate in (stem.with_suffix(".py"), stem / "__init__.py"):
                resolved = candidate.resolve()
                if resolved.is_file() and resolved.is_relative_to(root):
                    found.append(resolved)
    return found


def _allowed(raw: _Raw, allow: frozenset[str]) -> bool:
    if raw.rule in allow or f"{raw.rule}:{raw.subject}" in allow:
        return True
    parts = raw.subject.split(".")
    return any(".".join(parts[:i]) in allow for i in range(1, len(parts) + 1))


def _rule_for(qualname: str) -> tuple[str, str] | None:
    """The rule and reason for a resolved dotted name, by its longest listed prefix."""
    parts = qualname.split(".")
    for i in range(len(parts), 0, -1):
        hit = _NAME_RULES.get(".".join(parts[:i]))
        if hit:
            return hit
    for stem, hit in _NAME_PREFIX_RULES.items():
        if qualname.startswith(stem):
            return hit
    return None


def _walk_local(node: ast.AST) -> Iterator[ast.AST]:
    """Like `ast.walk`, without descending into nested function, lambda or class bodies."""
    stack = list(ast.iter_child_nodes(node))
    while stack:
        child = stack.pop()
        yield child
        if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            stack.extend(ast.iter_child_nodes(child))


def _launches(node: ast.AST) -> bool:
    """Whether the code calls something subscripted, the way a Triton kernel is launched: `k[grid](…)`."""
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Subscript) for n in ast.walk(node))


_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
_TRY_STAR = (ast.TryStar,) if sys.version_info >= (3, 11) else ()
_Function = ast.FunctionDef | ast.AsyncFunctionDef


class _Scan:
    """One parsed candidate: its import aliases, its kernel path, and the three families of checks."""

    def __init__(self, tree: ast.Module, entry: str) -> None:
        self.tree = tree
        self.nodes = list(ast.walk(tree))
        self.by_type: dict[type, list[Any]] = defaultdict(list)
        for node in self.nodes:
            self.by_type[type(node)].append(node)
        self.aliases: dict[str, str] = {"__builtins__": "builtins"}
        self.local_names: set[str] = set()
        self._collect_bindings()
        self.functions: list[_Function] = self.of(*_FUNCTIONS)
        self._local: dict[int, list[ast.AST]] = {}
        self.entry_functions = self._entry_functions(entry)
        self.kernel_path = self._kernel_path()
        # Module-level names bound once, to a constant: a handler returning one supplies a default value.
        stores = Counter(n.id for n in self.of(ast.Name) if isinstance(n.ctx, ast.Store))
        self.literal_globals = {t.id for n in self.tree.body if isinstance(n, ast.Assign) for t in n.targets
                                if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant) and stores[t.id] == 1}

    def of(self, *types: type) -> list[Any]:
        """Every node of the given types, in walk order within each type."""
        return [node for kind in types for node in self.by_type.get(kind, ())]

    def local(self, fn: _Function) -> list[ast.AST]:
        """The nodes of a function's own body, nested functions excluded (computed once)."""
        nodes = self._local.get(id(fn))
        if nodes is None:
            nodes = self._local[id(fn)] = list(_walk_local(fn))
        return nodes

    # -- name resolution ---------------------------------------------------------------------

    def _collect_bindings(self) -> None:
        for node in self.of(ast.Import):
            for alias in node.names:
                root = alias.name.split(".")[0]
                self.aliases[alias.asname or root] = alias.name if alias.asname else root
        for node in self.of(ast.ImportFrom):
            if node.module and not node.level:
                for alias in node.names:
                    if alias.name != "*":
                        self.aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        # `name = dotted.name` is an alias (resolved below); any other binding shadows a builtin.
        assigns = [(n.targets[0], n.value) for n in self.of(ast.Assign)
                   if len(n.targets) == 1 and isinstance(n.targets[0], ast.Name)]
        assigns += [(n.target, n.value) for n in self.of(ast.AnnAssign, ast.NamedExpr)
                    if isinstance(n.target, ast.Name) and n.value is not None]
        assigns = [(target, value) for target, value in assigns
                   if isinstance(value, (ast.Name, ast.Attribute, ast.Call))]
        alias_targets = {id(target) for target, value in assigns if not isinstance(value, ast.Call)}
        self.local_names.update(n.name for n in self.of(*_FUNCTIONS, ast.ClassDef))
        self.local_names.update(n.arg for n in self.of(ast.arg))
        self.local_names.update(n.name for n in self.of(ast.ExceptHandler) if n.name)
        self.local_names.update(n.id for n in self.of(ast.Name)
                                if isinstance(n.ctx, ast.Store) and id(n) not in alias_targets)
        # To a fixed point, so that chains of aliases resolve too (`nn = torch.nn; F = nn.functional`).
        for _ in range(4):
            changed = False
            for target, value in assigns:
                qualname = self.qualname(value)
                if qualname and self.aliases.get(target.id) != qualname:
                    self.aliases[target.id] = qualname
                    changed = True
            if not changed:
                break

    def qualname(self, node: ast.AST) -> str | None:
        """The dotted name an expression refers to, through imports and aliases; None if not a name."""
        if isinstance(node, ast.Name):
            if node.id in self.aliases:
                return self.aliases[node.id]
            if node.id in _BUILTIN_NAMES and node.id not in self.local_names:
                return f"builtins.{node.id}"
            return None
        if isinstance(node, ast.Attribute):
            base = self.qualname(node.value)
            return f"{base}.{node.attr}" if base else None
        if isinstance(node, ast.Call) and node.args:
            getter = self._attrgetter(node.func)
            if getter is not None:  # operator.attrgetter("_C")(torch) is torch._C
                base = self.qualname(node.args[0])
                return f"{base}.{getter}" if base else None
            func = self.qualname(node.func)
            first = node.args[0]
            if func == "builtins.getattr" and len(node.args) >= 2 and _is_str(node.args[1]):
                base = self.qualname(first)
                return f"{base}.{node.args[1].value}" if base else None
            if func in ("builtins.__import__", "importlib.import_module") and _is_str(first):
                return first.value
        return None

    def _attrgetter(self, node: ast.AST) -> str | None:
        """The dotted attribute of `operator.attrgetter("a.b")` (one constant argument), else None."""
        if isinstance(node, ast.Call) and len(node.args) == 1 and _is_str(node.args[0]) \
                and self.qualname(node.func) == "operator.attrgetter":
            return node.args[0].value
        return None

    # -- the kernel path ---------------------------------------------------------------------

    def _entry_functions(self, entry: str) -> list[_Function]:
        found: list[_Function] = []
        for node in self.tree.body:
            if isinstance(node, _FUNCTIONS) and node.name == entry:
                found.append(node)
            elif isinstance(node, ast.ClassDef) and node.name == entry:
                found += [n for n in node.body if isinstance(n, _FUNCTIONS)]
        return found

    def _kernel_path(self) -> list[_Function]:
        """The entry point and every module-level function it reaches by calling it by name."""
        top = {n.name: n for n in self.tree.body if isinstance(n, _FUNCTIONS)}
        todo = list(self.entry_functions)
        if not todo:
            return list(self.functions)
        seen: dict[int, _Function] = {}
        while todo:
            fn = todo.pop()
            if id(fn) in seen:
                continue
            seen[id(fn)] = fn
            for node in self.local(fn):
                if isinstance(node, _FUNCTIONS):
                    todo.append(node)
                elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in top:
                    todo.append(top[node.func.id])
        return list(seen.values())

    # -- names: monkeypatching, introspection, escapes, streams --------------------------------

    def names(self) -> Iterator[_Raw]:
        for node in self.of(ast.Import):
            for alias in node.names:
                yield from self._name_use(alias.name, node.lineno, "imports")
        for node in self.of(ast.ImportFrom):
            if node.module and not node.level:
                yield from self._import_from(node)
        attributes = self.of(ast.Attribute)
        inner = {id(n.value) for n in attributes}
        for node in attributes:
            if id(node) not in inner:
                yield from self._attribute(node)
        for node in self.of(ast.Name):
            if isinstance(node.ctx, ast.Load) and id(node) not in inner:
                if node.id == "__builtins__":
                    yield _Raw(INTROSPECTION, "__builtins__", node.lineno,
                               f"reads `__builtins__`, which {_DYNAMIC_CODE}.")
                qualname = self.qualname(node)
                if qualname:
                    yield from self._name_use(qualname, node.lineno, "uses")
        for node in self.of(ast.Subscript):
            if isinstance(node.ctx, (ast.Store, ast.Del)):
                yield from self._subscript_store(node)
        for node in self.of(ast.Call):
            yield from self._call(node)
        for node in self.of(ast.ClassDef):
            yield from self._class(node)

    def _name_use(self, qualname: str, line: int, verb: str) -> Iterator[_Raw]:
        hit = _rule_for(qualname)
        if hit:
            rule, reason = hit
            yield _Raw(rule, qualname, line, f"{verb} `{qualname}`, which {reason}.")

    def _import_from(self, node: ast.ImportFrom) -> Iterator[_Raw]:
        module = node.module or ""
        for alias in node.names:
            if alias.name != "*":
                yield from self._name_use(f"{module}.{alias.name}", node.lineno, "imports")
                continue
            yield from self._name_use(module, node.lineno, "imports")
            hidden = sorted({_rule_for(name) for name in (*_NAME_RULES, *_NAME_PREFIX_RULES)
                             if name.startswith(f"{module}.")} - {None})
            for rule, reason in hidden[:1]:
                yield _Raw(rule, module, node.lineno,
                           f"star-imports `{module}`, which hides which of its names are used, so these checks "
                           f"cannot tell whether the candidate {reason}.")

    def _attribute(self, node: ast.Attribute) -> Iterator[_Raw]:
        qualname = self.qualname(node)
        line = node.lineno
        if qualname:
            yield from self._name_use(qualname, line, "uses")
            if "__dict__" in qualname.split("."):
                yield _Raw(INTROSPECTION, qualname, line,
                           f"reads `{qualname}`, an imported module's namespace, which {_SYS_MODULES}.")
        elif node.attr == "__dict__" and not _is_self(node.value):
            yield _Raw(INTROSPECTION, "__dict__", line,
                       f"reads the `__dict__` of `{ast.unparse(node.value)}`, a namespace, which {_SYS_MODULES}.")
        if isinstance(node.ctx, ast.Store) and node.attr in _TENSOR_METHODS and not _is_self(node.value) \
                and not self.qualname(node.value):
            yield _Raw(MONKEYPATCH, node.attr, line,
                       f"sets `.{node.attr}` on an object, shadowing the tensor method the harness reads a "
                       "result through.")
        if isinstance(node.ctx, (ast.Store, ast.Del)) and self.qualname(node.value):
            verb = "assigns to" if isinstance(node.ctx, ast.Store) else "deletes"
            yield _Raw(MONKEYPATCH, qualname or node.attr, line,
                       f"{verb} `{qualname}`, replacing part of an imported module that the reference, "
                       "the harness or the timer may rely on.")
        chain: ast.AST = node
        while isinstance(chain, ast.Attribute):
            if chain.attr in _FRAME_ATTRS:
                yield _Raw(INTROSPECTION, chain.attr, line, f"reads `.{chain.attr}`, which {_FRAMES}.")
            chain = chain.value

    def _subscript_store(self, node: ast.Subscript) -> Iterator[_Raw]:
        qualname = self.qualname(node.value)
        if qualname:
            yield _Raw(MONKEYPATCH, qualname, node.lineno,
                       f"writes into `{qualname}`, changing state of an imported module that the reference, "
                       "the harness or the timer may rely on.")

    def _call(self, node: ast.Call) -> Iterator[_Raw]:
        func = self.qualname(node.func)
        line = node.lineno
        looked_up = self.qualname(node)  # getattr(torch.cuda, "Stream"), import_module("subprocess")
        if looked_up:
            yield from self._name_use(looked_up, line, "looks up")
        first = self.qualname(node.args[0]) if node.args else None
        if func in ("builtins.setattr", "builtins.delattr") and not first and len(node.args) >= 2 \
                and _is_str(node.args[1]) and node.args[1].value in _TENSOR_METHODS:
            yield _Raw(MONKEYPATCH, node.args[1].value, line,
                       f"sets `.{node.args[1].value}` on an object, shadowing the tensor method the harness reads "
                       "a result through.")
        if func in ("builtins.setattr", "builtins.delattr") and first:
            yield _Raw(MONKEYPATCH, first, line,
                       f"calls {func.split('.')[1]} on `{first}`, replacing part of an imported module that "
                       "the reference, the harness or the timer may rely on.")
        if isinstance(node.func, ast.Attribute) and node.func.attr in ("__setattr__", "__delattr__"):
            target = self.qualname(node.func.value) or first
            if target:
                yield _Raw(MONKEYPATCH, target, line,
                           f"calls {node.func.attr} on `{target}`, replacing part of an imported module that "
                           "the reference, the harness or the timer may rely on.")
        if func == "builtins.getattr" and first and len(node.args) >= 2 and not _is_str(node.args[1]):
            yield _Raw(INTROSPECTION, first, line,
                       f"looks up an attribute of `{first}` by a computed name, which hides what the "
                       "candidate uses from these checks.")
        if func == "builtins.vars" and node.args and not _is_self(node.args[0]):
            subject = first or ast.unparse(node.args[0])
            yield _Raw(INTROSPECTION, subject, line,
                       f"reads the namespace of `{subject}` with vars(), which {_SYS_MODULES}.")
        if looked_up and "__dict__" in looked_up.split("."):
            yield _Raw(INTROSPECTION, looked_up, line,
                       f"looks up `{looked_up}`, a namespace, which {_SYS_MODULES}.")
        if func in ("operator.attrgetter", "operator.methodcaller") and (
                not all(_is_str(a) for a in node.args) or any(
                    part.startswith("_") for a in node.args if _is_str(a) for part in a.value.split("."))):
            yield _Raw(INTROSPECTION, func, line,
                       f"calls `{func}` on a private or computed name, which hides what the candidate uses "
                       "from these checks.")
        for arg in [*node.args, *(k.value for k in node.keywords)]:
            passed = self.qualname(arg)
            if passed in _SETTERS:
                yield _Raw(MONKEYPATCH, passed, line,
                           f"passes `{passed}` to another callable (`functools.partial`, `map`…), which hides "
                           "which module it will replace part of.")
        if isinstance(node.func, ast.Attribute) and not self.qualname(node.func.value):
            method = node.func.attr
            if method in _FILE_METHODS:
                yield _Raw(ESCAPE, method, line, f"calls `.{method}()`, which {_FILES}.")
            elif method in _HOST_METHODS and not node.args:
                yield _Raw(ESCAPE, method, line, f"calls `.{method}()`, which {_HOST}.")

    def _class(self, node: ast.ClassDef) -> Iterator[_Raw]:
        for base in node.bases:
            qualname = self.qualname(base)
            if qualname in _TENSOR_CLASSES:
                yield _Raw(MONKEYPATCH, qualname, node.lineno,
                           f"defines `{node.name}`, a subclass of `{qualname}`, whose overrides can change "
                           "how the harness compares or copies the returned object.")
        for item in node.body:
            if isinstance(item, _FUNCTIONS) and item.name in _OVERRIDE_METHODS:
                yield _Raw(MONKEYPATCH, item.name, item.lineno,
                           f"defines `{item.name}` on `{node.name}`, which intercepts the torch operators the "
                           "harness runs on the candidate's objects.")

    # -- fallbacks ---------------------------------------------------------------------------

    def fallbacks(self) -> Iterator[_Raw]:
        on_path = {id(n) for fn in self.kernel_path for n in self.local(fn)}
        for node in self.of(ast.Try, *_TRY_STAR):
            yield from self._try(node, id(node) in on_path)
        for node in self.of(ast.With, ast.AsyncWith):
            if id(node) in on_path or _launches(node):
                yield from self._suppress(node)

    def _try(self, node: ast.Try, on_path: bool) -> Iterator[_Raw]:
        body = ast.Module(body=node.body, type_ignores=[])
        runs = _launches(body) or (on_path and any(isinstance(n, ast.Call) for n in ast.walk(body)))
        if not runs:
            return
        body_returns = any(isinstance(n, ast.Return) for n in _walk_local(body))
        what = "launches a kernel" if _launches(body) else "runs the kernel path"
        for handler in node.handlers:
            if self._computes(handler.body):
                yield _Raw(FALLBACK, "except", handler.lineno,
                           f"the `except` handler of a try that {what} computes a result itself, a fallback "
                           "path that would replace a failing kernel instead of letting it fail.")
            elif body_returns and _falls_through(handler.body):
                yield _Raw(FALLBACK, "except", handler.lineno,
                           f"the `except` handler of a try that {what} swallows the error and carries on to "
                           "the code after the try, a fallback path that would replace a failing kernel.")
        for stmt in node.finalbody:
            for inner in (stmt, *_walk_local(stmt)):
                if isinstance(inner, ast.Return) and not _is_none(inner.value):
                    yield _Raw(FALLBACK, "finally", inner.lineno,
                               f"the `finally` clause of a try that {what} returns a value, which overrides "
                               "whatever the kernel produced or raised.")

    def _suppress(self, node: ast.With | ast.AsyncWith) -> Iterator[_Raw]:
        for item in node.items:
            expr = item.context_expr
            if isinstance(expr, ast.Call) and self.qualname(expr.func) == "contextlib.suppress":
                yield _Raw(FALLBACK, "contextlib.suppress", node.lineno,
                           "suppresses exceptions around the kernel path with contextlib.suppress, so a failing "
                           "launch silently falls through to whatever comes next.")

    def _computes(self, statements: list[ast.stmt]) -> bool:
        """Whether an except handler produces something (a value, an assignment, a call) besides reporting."""
        for stmt in statements:
            if isinstance(stmt, ast.Raise):
                continue
            nodes = [stmt, *_walk_local(stmt)]
            raised = {id(n) for s in nodes if isinstance(s, ast.Raise) for n in ast.walk(s)}
            for node in nodes:
                if id(node) in raised:
                    continue
                if isinstance(node, ast.Return) and not _is_none(node.value) and not self._literal(node.value):
                    return True
                if isinstance(node, (ast.Yield, ast.YieldFrom, ast.NamedExpr, ast.AugAssign)):
                    return True
                if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None and not isinstance(
                        node.value, (ast.Constant, ast.JoinedStr)):
                    return True
                if isinstance(node, ast.Call) and not self._reports(node):
                    return True
        return False

    def _literal(self, node: ast.AST) -> bool:
        """A default value, not a computed result: a constant, a tuple of them, or a module-level name bound
        to one (`return 132`, `return (8, 4)`, `return DEFAULT_SMS`). No tensor is ever a literal."""
        if isinstance(node, ast.Constant):
            return True
        if isinstance(node, ast.UnaryOp) and isinstance(node.operand, ast.Constant):
            return True
        if isinstance(node, (ast.Tuple, ast.List)):
            return all(self._literal(e) for e in node.elts)
        if isinstance(node, ast.Name):
            return node.id in self.literal_globals
        return False

    def _reports(self, call: ast.Call) -> bool:
        qualname = self.qualname(call.func)
        if qualname in _REPORTING_CALLS or (qualname or "").startswith("logging."):
            return True
        if isinstance(call.func, ast.Attribute) and call.func.attr in _REPORTING_METHODS:
            return True
        # str(), repr(), type() and friends only build the message.
        return qualname in ("builtins.str", "builtins.repr", "builtins.type", "builtins.format", "builtins.len")

    # -- caches ------------------------------------------------------------------------------

    def caches(self) -> Iterator[_Raw]:
        containers = self._module_containers()
        top_level = {n.name for n in self.tree.body if isinstance(n, (*_FUNCTIONS, ast.ClassDef))}
        on_path = {id(fn) for fn in self.kernel_path}
        entry = {id(fn) for fn in self.entry_functions}
        tensors = {id(fn): self._tensor_names(fn, id(fn) in on_path) for fn in self.functions}
        for fn in self.functions:
            yield from self._cache_stores(fn, tensors[id(fn)], containers, top_level)
        tensor_callees = {
            node.func.id
            for fn in self.kernel_path for node in self.local(fn)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and any(_TensorExpr(self, tensors[id(fn)]).check(a) for a in node.args)
        }
        for fn in self.functions:
            decorator = self._cache_decorator(fn)
            if decorator and (id(fn) in entry or _launches(fn) or fn.name in tensor_callees):
                yield _Raw(CACHE, fn.name, fn.lineno,
                           f"memoises `{fn.name}` with `{decorator}` on tensor arguments, so repeated calls "
                           "(the timing loop) can return a remembered result instead of running the kernel.")

    def _module_containers(self) -> set[str]:
        names: set[str] = set()
        statements = list(self.tree.body)
        while statements:
            stmt = statements.pop()
            if isinstance(stmt, (ast.If, ast.Try, ast.With)):
                statements += [*stmt.body, *getattr(stmt, "orelse", []), *getattr(stmt, "finalbody", [])]
                statements += [s for h in getattr(stmt, "handlers", []) for s in h.body]
            elif isinstance(stmt, ast.Assign) and self._is_container(stmt.value):
                names.update(t.id for t in stmt.targets if isinstance(t, ast.Name))
            elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None \
                    and self._is_container(stmt.value):
                names.add(stmt.target.id)
        return names

    def _is_container(self, value: ast.AST) -> bool:
        if isinstance(value, (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp)):
            return True
        return isinstance(value, ast.Call) and self.qualname(value.func) in _CONTAINER_FACTORIES

    def _tensor_names(self, fn: _Function, on_path: bool) -> set[str]:
        """Names in `fn` that hold tensors: its tensor parameters and what is computed from them."""
        names: set[str] = set()
        args = fn.args
        positional = [*args.posonlyargs, *args.args]
        defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
        params = [*zip(positional, defaults), *zip(args.kwonlyargs, args.kw_defaults)]
        for arg, default in params:
            if arg.annotation is not None:
                tensor = self.qualname(arg.annotation) in _TENSOR_CLASSES
            else:
                tensor = on_path and not isinstance(default, ast.Constant) and arg.arg not in ("self", "cls")
            if tensor:
                names.add(arg.arg)
        if args.vararg is not None and on_path:
            names.add(args.vararg.arg)
        assigns = [n for n in self.local(fn) if isinstance(n, (ast.Assign, ast.AnnAssign, ast.NamedExpr))]
        for _ in range(3):
            expr = _TensorExpr(self, names)
            before = len(names)
            for node in assigns:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if node.value is not None and expr.check(node.value):
                    names.update(_target_names(targets))
            if len(names) == before:
                break
        return names

    def _cache_stores(self, fn: _Function, tensors: set[str], containers: set[str],
                      top_level: set[str]) -> Iterator[_Raw]:
        expr = _TensorExpr(self, tensors)
        declared_global = {name for n in self.local(fn) if isinstance(n, ast.Global) for name in n.names}
        shadowed = {name for n in self.local(fn) if isinstance(n, ast.Assign)
                    for name in _target_names(n.targets)} - declared_global
        shadowed |= {a.arg for a in ast.walk(fn.args) if isinstance(a, ast.arg)}
        module_containers = containers - shadowed
        identity = _IdentityKey(self, self.local(fn))
        for node in self.local(fn):
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    yield from self._store(target, node.value, expr, identity, module_containers,
                                           declared_global, top_level, fn)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in _CONTAINER_WRITES and isinstance(node.func.value, ast.Name) \
                    and node.func.value.id in module_containers:
                name = node.func.value.id
                values = [*node.args, *(k.value for k in node.keywords)]
                if any(identity.check(v) for v in values[:1]):
                    yield _cache_raw(name, node.lineno)
                elif any(expr.check(v) for v in values) and self._returns_stored(
                        fn, name, [r for v in values for r in self._roots(v)]):
                    yield _cache_raw(name, node.lineno)

    def _roots(self, node: ast.AST | None) -> set[str]:
        """The names whose object an expression may be (or be a view or copy of): `y2.view(s)` -> {y2},
        `_CACHE.get(k)` -> {_CACHE}, `Holder.out` -> {Holder.out}, `torch.clone(b)` -> {b}."""
        if isinstance(node, ast.Name):
            return {node.id}
        if isinstance(node, ast.Attribute):
            if node.attr in _TENSOR_ATTRS:
                return self._roots(node.value)
            return {f"{node.value.id}.{node.attr}"} if isinstance(node.value, ast.Name) else set()
        if isinstance(node, (ast.Subscript, ast.Starred)):
            return self._roots(node.value)
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return {r for e in node.elts for r in self._roots(e)}
        if isinstance(node, ast.IfExp):
            return self._roots(node.body) | self._roots(node.orelse)
        if isinstance(node, ast.BinOp):
            return self._roots(node.left) | self._roots(node.right)
        if isinstance(node, ast.NamedExpr):
            return self._roots(node.value) | {node.target.id}
        if isinstance(node, ast.Call):
            qualname = self.qualname(node.func)
            if qualname:
                return {r for a in node.args for r in self._roots(a)} if qualname.startswith("torch.") else set()
            if isinstance(node.func, ast.Attribute) and node.func.attr not in _SCALAR_METHODS:
                return self._roots(node.func.value)
        return set()

    def _returns_stored(self, fn: _Function, subject: str, stored: Iterable[str]) -> bool:
        """Whether a tensor kept in `subject` across calls comes back as a result: the entry point returns
        it (or a view of it), read from `subject` directly, through a name, or through a helper that hands it
        out. A workspace that the entry point only passes to kernels is not a cache of results."""
        entries = self.entry_functions or self.functions
        leaky: set[str] = set()  # helpers (by name) that return the stored tensor
        for _ in range(3):
            before = len(leaky)
            for func in self.functions:
                if func.name not in leaky and self._leaks(func, subject, stored if func is fn else (), leaky):
                    leaky.add(func.name)
            if len(leaky) == before:
                break
        return any(self._leaks(f, subject, stored if f is fn else (), leaky) for f in entries)

    def _leaks(self, func: _Function, subject: str, stored: Iterable[str], leaky: set[str]) -> bool:
        tainted = {subject, *stored}

        def reads(node: ast.AST | None) -> bool:
            if self._roots(node) & tainted:
                return True
            return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in leaky
                       for n in ast.walk(node)) if node is not None else False

        assigns = [n for n in self.local(func) if isinstance(n, (ast.Assign, ast.AnnAssign, ast.NamedExpr))]
        for _ in range(3):
            before = len(tainted)
            for node in assigns:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if node.value is not None and reads(node.value):
                    tainted.update(_target_names(targets))
            if len(tainted) == before:
                break
        return any(isinstance(n, (ast.Return, ast.Yield)) and reads(n.value) for n in self.local(func))

    def _store(self, target: ast.AST, value: ast.AST, expr: _TensorExpr, identity: _IdentityKey,
               containers: set[str], declared_global: set[str], top_level: set[str],
               fn: _Function | None = None) -> Iterator[_Raw]:
        if isinstance(target, ast.Subscript):
            root = target.value
            while isinstance(root, ast.Subscript):
                root = root.value
            if isinstance(root, ast.Name) and root.id in containers:
                if identity.check(target.slice):
                    yield _Raw(CACHE, root.id, target.lineno,
                               f"keys the module-level container `{root.id}` by tensor identity (data_ptr or "
                               "id), so a later call on the same buffer can return a remembered result.")
                elif expr.check(value) and self._returned(fn, root.id, value):
                    yield _cache_raw(root.id, target.lineno)
        elif isinstance(target, ast.Name) and target.id in declared_global and expr.check(value) \
                and self._returned(fn, target.id, value):
            yield _cache_raw(target.id, target.lineno)
        elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) \
                and target.value.id in top_level and expr.check(value):
            subject = f"{target.value.id}.{target.attr}"
            if self._returned(fn, subject, value):
                yield _cache_raw(subject, target.lineno)

    def _returned(self, fn: _Function | None, subject: str, value: ast.AST) -> bool:
        return fn is None or self._returns_stored(fn, subject, self._roots(value))

    def _cache_decorator(self, fn: _Function) -> str | None:
        for decorator in fn.decorator_list:
            node = decorator.func if isinstance(decorator, ast.Call) else decorator
            qualname = self.qualname(node)
            if qualname in _CACHE_DECORATORS:
                return qualname
        return None


class _TensorExpr:
    """Decides, by a simple flow-insensitive heuristic, whether an expression evaluates to a tensor."""

    def __init__(self, scan: _Scan, names: set[str]) -> None:
        self.scan = scan
        self.names = names

    def check(self, node: ast.AST | None) -> bool:
        if isinstance(node, ast.Name):
            return node.id in self.names
        if isinstance(node, ast.Attribute):
            return node.attr in _TENSOR_ATTRS and self.check(node.value)
        if isinstance(node, (ast.Subscript, ast.Starred)):
            return self.check(node.value)
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return any(self.check(e) for e in node.elts)
        if isinstance(node, ast.Dict):
            return any(self.check(v) for v in node.values)
        if isinstance(node, ast.BinOp):
            return self.check(node.left) or self.check(node.right)
        if isinstance(node, ast.UnaryOp):
            return self.check(node.operand)
        if isinstance(node, ast.IfExp):
            return self.check(node.body) or self.check(node.orelse)
        if isinstance(node, ast.Call):
            qualname = self.scan.qualname(node.func)
            if qualname:
                return _torch_returns_tensor(qualname)
            if isinstance(node.func, ast.Attribute):
                return node.func.attr not in _SCALAR_METHODS and self.check(node.func.value)
        return False


def _torch_returns_tensor(qualname: str) -> bool:
    if not qualname.startswith("torch."):
        return False
    last = qualname.rsplit(".", 1)[-1]
    metadata = ("torch.cuda", "torch.backends", "torch.finfo", "torch.iinfo", "torch.device", "torch.Size",
                "torch.promote_types", "torch.result_type", "torch.can_cast", "torch.version")
    return not (last.startswith(("is_", "get_")) or qualname.startswith(metadata))


class _IdentityKey:
    """Decides whether a key derives from a tensor's identity (`x.data_ptr()`, `id(x)`, `hash(x)`),
    directly or through a local name assigned from one (`key = (x.data_ptr(), x.shape)`)."""

    def __init__(self, scan: _Scan, body: list[ast.AST]) -> None:
        self.scan = scan
        self.names: set[str] = set()
        # Most functions never mention an identity: skip the per-key walks for them.
        self.possible = any(
            (isinstance(n, ast.Attribute) and n.attr in _IDENTITY_METHODS)
            or (isinstance(n, ast.Name) and n.id in ("id", "hash")) for n in body)
        assigns = [n for n in body if isinstance(n, ast.Assign)] if self.possible else []
        for _ in range(2):
            for node in assigns:
                if self.check(node.value):
                    self.names.update(_target_names(node.targets))

    def check(self, node: ast.AST) -> bool:
        if not self.possible:
            return False
        for inner in ast.walk(node):
            if isinstance(inner, ast.Attribute) and inner.attr in _IDENTITY_METHODS:
                return True
            if isinstance(inner, ast.Name) and inner.id in self.names:
                return True
            if isinstance(inner, ast.Call) and self.scan.qualname(inner.func) in ("builtins.id", "builtins.hash"):
                return True
        return False


def _cache_raw(name: str, line: int) -> _Raw:
    return _Raw(CACHE, name, line,
                f"stores a tensor in `{name}`, which outlives the call, and returns it, so a later call can "
                "return a remembered result instead of computing it.")


def _target_names(targets: Iterable[ast.AST]) -> Iterator[str]:
    """The names an assignment binds (`a, *b = …`), not those it only reads (`cache[key] = …`)."""
    for target in targets:
        if isinstance(target, ast.Name):
            yield target.id
        elif isinstance(target, (ast.Tuple, ast.List)):
            yield from _target_names(target.elts)
        elif isinstance(target, ast.Starred):
            yield from _target_names([target.value])


def _falls_through(statements: list[ast.stmt]) -> bool:
    return not statements or not isinstance(statements[-1], (ast.Raise, ast.Return, ast.Continue, ast.Break))


def _is_none(node: ast.AST | None) -> bool:
    return node is None or (isinstance(node, ast.Constant) and node.value is None)


def _is_self(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id in ("self", "cls")


def _is_str(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


# ---------------------------------------------------------------------------------------------
# Dynamic check 1: torch operators on the reference's path.
# ---------------------------------------------------------------------------------------------

# Operators that compute part of an answer, by group. A group's name is also an allow-list entry.
OP_GROUPS: dict[str, frozenset[str]] = {
    "matmul": frozenset({
        "mm", "bmm", "addmm", "addbmm", "baddbmm", "addmv", "mv", "matmul", "linear", "dot", "vdot", "outer",
        "ger", "addr", "einsum", "tensordot", "chain_matmul", "_addmm_activation", "_int_mm", "_scaled_mm",
        "_weight_int4pack_mm", "_weight_int8pack_mm", "fbgemm_linear_fp16_weight", "mkldnn_linear"}),
    "softmax": frozenset({
        "_softmax", "softmax", "_log_softmax", "log_softmax", "_safe_softmax", "_masked_softmax",
        "special_softmax", "special_log_softmax"}),
    "norm": frozenset({
        "native_layer_norm", "layer_norm", "_fused_rms_norm", "rms_norm", "native_group_norm", "group_norm",
        "native_batch_norm", "batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
        "_batch_norm_impl_index", "cudnn_batch_norm", "instance_norm", "norm", "linalg_vector_norm",
        "linalg_norm", "frobenius_norm", "nuclear_norm", "renorm", "_weight_norm", "normalize"}),
    "reduction": frozenset({
        "sum", "mean", "amax", "amin", "max", "min", "logsumexp", "var", "std", "var_mean", "std_mean", "prod",
        "cumsum", "cumprod", "cummax", "cummin", "logcumsumexp", "_logcumsumexp", "argmax", "argmin",
        "aminmax", "all", "any", "count_nonzero", "nansum", "nanmean", "median", "nanmedian", "mode"}),
    "pointwise": frozenset({
        "add", "sub", "rsub", "mul", "div", "true_divide", "floor_divide", "neg", "exp", "exp2", "expm1", "log",
        "log2", "log10", "log1p", "rsqrt", "sqrt", "square", "reciprocal", "pow", "float_power", "sigmoid",
        "silu", "gelu", "tanh", "relu", "relu6", "leaky_relu", "elu", "selu", "celu", "mish", "softplus",
        "hardtanh", "hardswish", "hardsigmoid", "logsigmoid", "log_sigmoid_forward", "glu", "threshold",
        "_prelu_kernel", "prelu", "where", "maximum", "minimum", "fmax", "fmin", "clamp", "clamp_min",
        "clamp_max", "clip", "abs", "sign", "sgn", "erf", "erfc", "erfinv", "sin", "cos", "tan", "sinh", "cosh",
        "atan", "atan2", "lerp", "addcmul", "addcdiv", "fmod", "remainder", "floor", "ceil", "round", "trunc",
        "frac", "masked_fill", "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_not",
        "logical_xor", "bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not", "isnan", "isinf",
        "isfinite", "nan_to_num", "xlogy", "hypot", "dropout", "native_dropout"}),
    "attention": frozenset({
        "scaled_dot_product_attention", "_scaled_dot_product_attention_math", "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention", "_flash_attention_forward", "_efficient_attention_forward",
        "_scaled_dot_product_fused_attention_overrideable"}),
    "conv": frozenset({
        "convolution", "_convolution", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
        "conv_transpose3d", "cudnn_convolution", "cudnn_convolution_transpose", "mkldnn_convolution",
        "_convolution_mode", "slow_conv2d_forward", "_slow_conv2d_forward", "slow_conv3d_forward"}),
    "indexing": frozenset({
        "gather", "scatter", "scatter_add", "scatter_reduce", "index", "_unsafe_index", "index_select",
        "index_put", "_index_put_impl", "index_add", "index_copy", "index_fill", "masked_select", "masked_scatter",
        "take", "take_along_dim", "embedding", "embedding_bag", "_embedding_bag", "nonzero", "one_hot"}),
    "sort": frozenset({"sort", "argsort", "topk", "kthvalue", "unique", "_unique2", "unique_consecutive",
                       "searchsorted", "bucketize", "histc"}),
    "loss": frozenset({
        "cross_entropy_loss", "nll_loss", "nll_loss_forward", "nll_loss2d_forward", "nll_loss_nd", "mse_loss",
        "l1_loss", "smooth_l1_loss", "huber_loss", "binary_cross_entropy", "binary_cross_entropy_with_logits",
        "kl_div"}),
}
_GROUP_OF = {op: group for group, ops in OP_GROUPS.items() for op in ops}

# The allowlist: operators that allocate, view, copy on the device or describe memory, which is what an
# honest launcher (and Triton's CPU interpreter, which copies arguments with new_empty/set_/empty/copy_)
# runs. Anything not listed here or in OP_GROUPS is looked up in torch: a `pointwise` or `reduction`
# tag means compute (`dynamic.torch-compute`), an operator that only returns views of its inputs is
# allowed, and every other operator — unknown ones, other namespaces (prims, a registered library),
# sparse ones — is refused as `dynamic.operator` unless the task's allow-list names it. Scalar reads
# (`item`, `_local_scalar_dense`, `is_nonzero`) and copies between the host and a device are refused
# as `dynamic.host-transfer` (the recorder tells a copy's devices apart, so CPU copies under the
# interpreter are device copies).
HARMLESS_OPS = frozenset({
    # allocation
    "empty", "empty_like", "empty_strided", "empty_permuted", "new_empty", "new_empty_strided", "zeros",
    "zeros_like", "new_zeros", "ones", "ones_like", "new_ones", "full", "full_like", "new_full", "scalar_tensor",
    "arange", "lift", "lift_fresh", "lift_fresh_copy", "zero_", "fill_", "fill", "resize_", "resize_as_",
    "_resize_output_", "set_", "record_stream", "pin_memory", "_pin_memory", "is_pinned",
    # views and layout
    "view", "_unsafe_view", "reshape", "_reshape_alias", "as_strided", "as_strided_", "expand", "expand_as",
    "permute", "transpose", "transpose_", "t", "t_", "slice", "select", "narrow", "unsqueeze", "unsqueeze_",
    "squeeze", "squeeze_", "flatten", "unflatten", "split", "split_with_sizes", "chunk", "unbind", "movedim",
    "view_as", "view_as_real", "view_as_complex", "alias", "detach", "detach_", "diagonal", "unfold", "_conj",
    "conj", "resolve_conj", "resolve_neg", "_neg_view", "contiguous", "repeat", "cat", "stack",
    # copies and conversions (on one device: the recorder reports a copy across devices apart)
    "copy_", "copy", "_copy_from", "_copy_from_and_resize", "clone", "_to_copy", "to",
    # metadata
    "sym_size", "sym_stride", "sym_numel", "sym_storage_offset", "size", "stride", "numel", "dim",
    "is_contiguous", "is_same_size", "storage_offset", "_has_compatible_shallow_copy_type", "is_complex",
    "is_floating_point",
})
# Operators that read a tensor's value into Python: on a GPU, a device-to-host transfer.
SCALAR_READS = frozenset({"_local_scalar_dense", "item", "is_nonzero"})
# Copies the recorder checks for a change of device; such a copy is recorded under HOST_PREFIX + its name.
_COPY_OPS = frozenset({"_to_copy", "copy_", "_copy_from", "_copy_from_and_resize", "to"})
HOST_PREFIX = "host-transfer:"
# Allow-list entries that exempt host transfers (the exact operator name does not: a KernelBench task
# allows the operators its reference does not run, and a transfer must not slip through that way).
_HOST_ENTRIES = frozenset({HOST_TRANSFER, "host-transfer"})


def _parse_op(name: str) -> tuple[str, str, str]:
    """`aten.mm.default` -> ("aten", "mm", "default"); a bare `mm` is taken as an ATen operator."""
    parts = name.split(".")
    if len(parts) == 1:
        return "aten", parts[0], ""
    if len(parts) == 2:
        return parts[0], parts[1], ""
    return parts[0], parts[1], ".".join(parts[2:])


def _op_allowed(name: str, group: str | None, allowed: frozenset[str]) -> bool:
    namespace, base, _ = _parse_op(name)
    return bool({name, f"{namespace}.{base}", base, _canonical(base), TORCH_COMPUTE, group} & allowed)


def _canonical(base: str) -> str:
    """`add_` and `_foreach_add` compute what `add` computes."""
    if base.startswith("_foreach_"):
        base = base[len("_foreach_"):]
    if base.endswith("_") and not base.endswith("__") and base not in HARMLESS_OPS:
        base = base[:-1]
    return base


def _classify(name: str) -> str | None:
    """The compute group of an operator, "harmless", or None when it is neither known nor tagged."""
    namespace, base, overload = _parse_op(name)
    if namespace != "aten":
        return None
    if base in HARMLESS_OPS:
        return "harmless"
    group = _GROUP_OF.get(_canonical(base))
    if group:
        return group
    return _classify_by_schema(base, overload)


def _classify_by_schema(base: str, overload: str) -> str | None:
    try:
        import torch

        packet = getattr(torch.ops.aten, base)
        op = getattr(packet, overload or "default", None) or getattr(packet, packet.overloads()[0])
    except (AttributeError, IndexError, RuntimeError, ImportError):
        return None
    tags = set(op.tags)
    if torch.Tag.pointwise in tags:
        return "pointwise"
    if torch.Tag.reduction in tags:
        return "reduction"
    returns = op._schema.returns
    if returns and all(r.alias_info is not None and not r.alias_info.is_write for r in returns):
        return "harmless"
    if torch.Tag.inplace_view in tags:
        return "harmless"
    return None


def classify_ops(names: Iterable[str], allowed: Iterable[str] = ()) -> list[Finding]:
    """Refuse the torch operators in `names` that compute part of the reference's answer.

    `names` are operator names as `OpRecorder` records them (`aten.mm.default`), repeats allowed;
    `allowed` is the task's allow-list (operator groups, operators, or the rule name; static entries
    are ignored). One finding per distinct operator, in first-seen order.
    """
    allow = frozenset(allowed)
    findings: list[Finding] = []
    seen: set[str] = set()
    for name in names:
        if name in seen:
            continue
        seen.add(name)
        if _is_host(name):
            host = _host_finding(name, allow)
            if host is not None:
                findings.append(host)
            continue
        group = _classify(name)
        if group == "harmless" or _op_allowed(name, group, allow):
            continue
        if group is None:
            if UNLISTED_OP not in allow:
                findings.append(Finding(UNLISTED_OP, _unlisted_message(name), operator=name))
            continue
        findings.append(Finding(
            TORCH_COMPUTE,
            f"the call ran `{name}` ({group}) in PyTorch, computing part of the answer outside the candidate's "
            f"kernel; a task that means to keep it lists '{group}' in its allow-list.",
            operator=name,
        ))
    return findings


def _is_host(name: str) -> bool:
    namespace, base, _ = _parse_op(name)
    return name.startswith(HOST_PREFIX) or (namespace == "aten" and base in SCALAR_READS)


def _host_finding(name: str, allow: frozenset[str]) -> Finding | None:
    if name.startswith(HOST_PREFIX):
        if allow & _HOST_ENTRIES:
            return None
        op = name[len(HOST_PREFIX):]
        return Finding(HOST_TRANSFER, f"the call copied tensor data between the host and the device (`{op}`), "
                       "where computation escapes the operator recorder; a task that means to allow it lists "
                       "'host-transfer' in its allow-list.", operator=op)
    namespace, base, _ = _parse_op(name)
    if namespace == "aten" and base in SCALAR_READS and not allow & _HOST_ENTRIES:
        return Finding(HOST_TRANSFER, f"the call read a tensor's value into Python (`{name}`), a transfer to the "
                       "host where computation escapes the operator recorder; a task that means to allow it lists "
                       "'host-transfer' in its allow-list.", operator=name)
    return None


def _unlisted_message(name: str) -> str:
    namespace, base, _ = _parse_op(name)
    if namespace != "aten":
        what = f"an operator outside ATen (namespace `{namespace}`)"
    elif "sparse" in base:
        what = "a sparse operator"
    else:
        what = "an operator that is not on the allowlist (allocation, views, device copies)"
    return (f"the call ran `{name}`, {what}, which may compute part of the answer outside the candidate's "
            f"kernel; a task that means to keep it lists '{namespace}.{base}' in its allow-list.")


def unclassified_ops(names: Iterable[str], allowed: Iterable[str] = ()) -> list[str]:
    """Operators in `names` that are neither on the allowlist nor known compute (refused as `dynamic.operator`)."""
    allow = frozenset(allowed)
    result: list[str] = []
    for name in dict.fromkeys(names):
        if _is_host(name):
            continue
        if _classify(name) is None and not _op_allowed(name, None, allow):
            result.append(name)
    return result


def _make_op_recorder() -> type:
    from torch.utils._python_dispatch import TorchDispatchMode

    class OpRecorder(TorchDispatchMode):
        """Record the name of every ATen operator executed while active (`with OpRecorder() as rec:`).

        `ops` lists every call in order (`aten.mm.default`, repeats included); `counts()` tallies
        them. Ops run by Triton's CPU interpreter (argument copies) are recorded too; on a GPU a
        Triton launch runs no ATen operator at all.
        """

        def __init__(self) -> None:
            super().__init__()
            self.ops: list[str] = []
            self._names: dict[Any, str] = {}

        def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                               kwargs: dict[str, Any] | None = None) -> Any:
            name = self._names.get(func)
            if name is None:
                name = self._names[func] = str(func)
            self.ops.append(name)
            out = func(*args, **(kwargs or {}))
            if _parse_op(name)[1] in _COPY_OPS and _crosses_devices(args, out):
                self.ops.append(HOST_PREFIX + name)
            return out

        def counts(self) -> dict[str, int]:
            """How many times each operator ran, in first-seen order."""
            tally: dict[str, int] = {}
            for name in self.ops:
                tally[name] = tally.get(name, 0) + 1
            return tally

        def findings(self, allowed: Iterable[str] = ()) -> list[Finding]:
            """`classify_ops` over what was recorded."""
            return classify_ops(self.ops, allowed)

    OpRecorder.__module__ = __name__
    return OpRecorder


def _crosses_devices(args: tuple[Any, ...], out: Any) -> bool:
    """Whether a copy's tensors (its arguments and result) sit on different kinds of device."""
    import torch

    kinds = {value.device.type for value in (*args, out) if isinstance(value, torch.Tensor)}
    return len(kinds - {"meta"}) > 1


AUTOTUNE_NOTE = ("`@triton.autotune` on the CPU interpreter: only the first of the kernel's configs (after its "
                 "own pruning) ran, with no benchmarking; a GPU run benchmarks them all")


def pin_autotune_under_interpreter() -> bool:
    """Under TRITON_INTERPRET=1, make `@triton.autotune` run its first config instead of benchmarking.

    Triton's autotuner benchmarks through the GPU driver, which the interpreter does not have, so every
    autotuned kernel would fail there. Its own single-config path is taken instead: the configs left by
    the kernel's pruning (`prune_configs_by`) are cut to the first, deterministically. On a GPU nothing
    changes (the benchmarking runs on the first call of each key, before timing starts). Returns whether
    the autotuner was pinned."""
    import os

    if os.environ.get("TRITON_INTERPRET") != "1":
        return False
    from triton.runtime.autotuner import Autotuner

    original = Autotuner.prune_configs
    if getattr(original, "_autokernel_pinned", False):
        return True

    def first_config(self: Any, kwargs: dict[str, Any]) -> list[Any]:
        return list(original(self, kwargs))[:1]

    first_config._autokernel_pinned = True  # type: ignore[attr-defined]
    Autotuner.prune_configs = first_config  # type: ignore[method-assign]
    return True


def interpreter_notes(source: str) -> list[str]:
    """Notes for an evaluation on the CPU interpreter that the candidate's source calls for."""
    return [AUTOTUNE_NOTE] if "autotune" in source else []


_lazy: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    """Build `OpRecorder` on first access, so the static checks never pay for importing torch."""
    if name == "OpRecorder":
        if name not in _lazy:
            _lazy[name] = _make_op_recorder()
        return _lazy[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------------------
# Dynamic check 2: the functions the harness relies on are still the ones it imported.
# ---------------------------------------------------------------------------------------------

# The harness's own modules that run in the worker: watched like torch, and in them a name that appears
# is a change too (a replaced `OpRecorder` is served from the module's namespace before its lazy builder).
HARNESS_NAMESPACES: tuple[str, ...] = (
    "autokernel_ci.harness.anticheat", "autokernel_ci.harness.correctness", "autokernel_ci.harness.timing",
    "autokernel_ci.tasks", "autokernel_ci.ops.base",
)
# Namespaces whose every function, class and submodule is watched: the comparisons, copies and
# conversions of the correctness gate, the vendor baselines (torch.softmax, F.rms_norm…), the
# timers, the report's serialisation, and process exit. A module is imported if it is not yet.
WATCHED_NAMESPACES: tuple[str, ...] = (
    "torch", "torch.Tensor", "torch.nn.functional", "torch.testing", "torch.cuda", "torch.cuda.Event",
    "torch.utils.deterministic", "time", "json", "math", "os", "sys", "builtins", "triton", "triton.testing",
    *HARNESS_NAMESPACES,
)
_ABSENT = object()
# Names torch rebinds itself, lazily: importing torch._dynamo wraps torch.manual_seed. A change to
# one of these is tolerated when the new object wraps the old one (`__wrapped__`).
_REBOUND_BY_TORCH = frozenset({"torch.manual_seed"})


def snapshot_module_state(namespaces: Iterable[str] = WATCHED_NAMESPACES) -> dict[str, object]:
    """The objects the harness relies on, keyed by dotted name (`torch.allclose`, `time.perf_counter`).

    For each namespace (a module, or a class given by its dotted path) every attribute that is a
    function, class or module is recorded, class attributes without binding (a classmethod compares
    as itself), and each module's `sys.modules` entry too. The snapshot holds the objects, not their
    ids, so they stay alive and a later identity comparison cannot be fooled by a reused address.
    Data attributes (flags, counters) are not watched: they change for honest reasons.
    """
    state: dict[str, object] = {}
    for dotted in namespaces:
        namespace = _namespace(dotted)
        if namespace is _ABSENT:
            state[dotted] = _ABSENT
            continue
        if not isinstance(namespace, type):
            state[f"sys.modules[{dotted!r}]"] = sys.modules.get(dotted, _ABSENT)
        for name, value in _members(namespace).items():
            state.setdefault(f"{dotted}.{name}", value)
    return state


def _namespace(dotted: str) -> object:
    """The module or class a dotted path names, importing the longest importable module prefix."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        module_name = ".".join(parts[:i])
        module = sys.modules.get(module_name)
        if module is None:
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            except Exception:  # noqa: BLE001 - a broken optional module (triton) is recorded as absent
                return _ABSENT
        obj: object = module
        for part in parts[i:]:
            obj = getattr(obj, part, _ABSENT)
        return obj
    return _ABSENT


def _members(namespace: object) -> dict[str, object]:
    if isinstance(namespace, type):
        members: dict[str, object] = {}
        for klass in namespace.__mro__[:-1]:  # everything but `object`
            for name, value in vars(klass).items():
                members.setdefault(name, value)
        return {name: value for name, value in members.items() if _is_code(value)}
    return {name: value for name, value in vars(namespace).items() if _is_code(value)}


def _is_code(value: object) -> bool:
    return callable(value) or isinstance(value, (type(sys), classmethod, staticmethod, property))


def _module_of_key(key: str) -> str | None:
    """`sys.modules['json']` -> `json`; None for any other key."""
    prefix = "sys.modules["
    return ast.literal_eval(key[len(prefix):-1]) if key.startswith(prefix) else None


def diff_module_state(before: dict[str, object], after: dict[str, object], *,
                      during: str = "the candidate's import or call") -> list[Finding]:
    """One `dynamic.module-state` finding per watched name whose object changed between snapshots.

    Names that appear only in `after` (a submodule imported since) are not changes. When a whole
    module was swapped in `sys.modules`, that one change is reported instead of each of its names.
    """
    swapped = tuple(f"{_module_of_key(key)}." for key, old in before.items()
                    if _module_of_key(key) and after.get(key, _ABSENT) is not old)
    findings: list[Finding] = []
    harness = tuple(f"{n}." for n in HARNESS_NAMESPACES)
    for key in after.keys() - before.keys():
        if key.startswith(harness) and not (swapped and key.startswith(swapped)):
            findings.append(Finding(
                MODULE_STATE, f"`{key}` was added during {during}; the harness relies on its own modules to "
                "check, time or report the candidate, so the result could not be trusted.", operator=key))
    for key, old in before.items():
        new = after.get(key, _ABSENT)
        if new is old or old is _ABSENT or (swapped and key.startswith(swapped)):
            continue
        if key in _REBOUND_BY_TORCH and getattr(new, "__wrapped__", None) is old:
            continue
        change = "removed" if new is _ABSENT else "replaced"
        findings.append(Finding(
            MODULE_STATE,
            f"`{key}` was {change} during {during}; the harness relies on it to check, time or report "
            "the candidate, so the result could not be trusted.",
            operator=key,
        ))
    return findings
