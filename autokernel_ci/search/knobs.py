"""The knobs of a kernel file, read and rewritten through its syntax tree.

A knob is something the tuner may set without understanding the kernel:

* a top-level constant the op declares tunable (`OpSpec.tunables`: `BLOCK_SIZE = 1024`);
* in a user kernel with no declared space, a top-level integer constant whose name says it is a
  tile, warp, stage, group or split count (`BLOCK_M = 64`, `NUM_WARPS = 4`);
* a `@triton.autotune(configs=[...])` list, which the tuner may pin to one of its configs by
  slicing it (`configs=[c0, c1, c2][1:2]`): the list stays in the file, readable and re-tunable.

Rewriting replaces only the bytes of the value expression (located by the parser's line and column
offsets), so comments, formatting and everything else in the file survive untouched.

**Per GPU.** A kernel file may hold a top-level dict `CONFIGS` of knob values per GPU, keyed by the
device name as torch reports it (`"NVIDIA H200"`), or by the name and a shape bucket
(`"NVIDIA H200/decode"`); the launcher looks up the running device there and falls back to the
top-level constants, the default. With a `device`, `read_point` reads that GPU's entry over the
defaults and `apply_point` writes that GPU's entry (adding `CONFIGS` if the file has none), leaving
the defaults and every other GPU's entry as they are.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autokernel_ci.ops.base import OpSpec

AUTOTUNE_PREFIX = "autotune:"
# Names of integer constants that are launch knobs in most Triton code.
KNOB_NAME = re.compile(r"(^|_)(BLOCK|WARPS|STAGES|GROUP|TILE|SPLITS?)(_|$)")
WARP_VALUES = (1, 2, 4, 8, 16)
CONFIGS_NAME = "CONFIGS"
STAGE_VALUES = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class Knob:
    """One dimension of the search space: its name, the values worth trying and the file's current one."""

    name: str
    values: tuple[Any, ...]
    current: Any
    kind: str  # "constant" or "autotune"
    help: str = ""
    labels: tuple[str, ...] = ()  # autotune: the source text of each config

    def label(self, value: Any) -> str:
        if self.kind == "autotune":
            if value is None:
                return "all configs"
            text = self.labels[value] if 0 <= value < len(self.labels) else f"config {value}"
            return f"config {value} ({_shorten(text)})"
        return "auto" if value is None else repr(value)  # None: the launcher picks it from the shape


class KnobError(ValueError):
    """A point cannot be written into the kernel file (unknown knob or a value the file cannot hold)."""


def discover_knobs(source: str, spec: OpSpec | None = None) -> list[Knob]:
    """The knobs in `source`: the op's declared tunables that the file assigns at top level (or, with
    none declared, constants named like launch knobs), then any autotune config lists."""
    tree = ast.parse(source)
    constants = _top_level_values(tree)
    knobs: list[Knob] = []
    declared = spec.tunables if spec is not None else ()
    if declared:
        for tunable in declared:
            if tunable.name not in constants:
                continue
            current = constants[tunable.name]
            values = tuple(v for v in tunable.values if v is not None or _handles_none(tree, tunable.name)
                           or current is None)
            knobs.append(Knob(tunable.name, values, current, "constant", tunable.help))
    else:
        for name, value in constants.items():
            if isinstance(value, int) and not isinstance(value, bool) and name.isupper() and KNOB_NAME.search(name):
                knobs.append(Knob(name, _heuristic_values(name, value), value, "constant",
                                  "an integer launch constant, found by its name"))
    knobs += _autotune_knobs(tree, source)
    return knobs


def read_point(source: str, knobs: list[Knob], device: str | None = None) -> dict[str, Any]:
    """The knobs' values in `source`: the defaults, with `device`'s `CONFIGS` entry over them."""
    point = {k.name: k.current for k in knobs}
    entry = gpu_configs(source).get(device) if device else None
    if entry:
        point.update({k: v for k, v in entry.items() if k in point})
    return point


def gpu_configs(source: str) -> dict[str, dict[str, Any]]:
    """The file's `CONFIGS`: device (or "device/bucket") → knob values; {} when it has none."""
    node = _top_level_targets(ast.parse(source)).get(CONFIGS_NAME)
    if node is None:
        return {}
    try:
        value = ast.literal_eval(node)
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): dict(v) for k, v in value.items() if isinstance(v, dict)}


def apply_point(source: str, point: Mapping[str, Any], device: str | None = None) -> str:
    """`source` with each knob of `point` set to its value; nothing else in the file changes.

    With `device`, and a file that has `CONFIGS` (so its launcher reads it), the constant knobs go into
    `CONFIGS[device]` instead of the top-level defaults; a file without it has only the defaults, and
    they are written. Autotune pins, which have no per-GPU form, are written in place."""
    if device and CONFIGS_NAME in _top_level_targets(ast.parse(source)):
        constants = {k: v for k, v in point.items() if not k.startswith(AUTOTUNE_PREFIX)}
        rest = {k: v for k, v in point.items() if k.startswith(AUTOTUNE_PREFIX)}
        tree = ast.parse(source)
        missing = [k for k in constants if k not in _top_level_targets(tree)]
        if missing:
            raise KnobError(f"the kernel file assigns no top-level {missing[0]}")
        source = _write_gpu_entry(source, device, constants)
        if not rest:
            return source
        point = rest
    tree = ast.parse(source)
    edits: list[tuple[int, int, str]] = []
    targets = _top_level_targets(tree)
    autotunes = {name: node for name, node in _autotune_nodes(tree)}
    offsets = _line_offsets(source)
    for name, value in point.items():
        if name.startswith(AUTOTUNE_PREFIX):
            node = autotunes.get(name)
            if node is None:
                raise KnobError(f"the kernel file has no autotuned kernel {name[len(AUTOTUNE_PREFIX):]!r}")
            base = node.value if _is_pin(node) else node
            text = _segment(source, offsets, base)
            new = text if value is None else f"{text}[{int(value)}:{int(value) + 1}]"
            edits.append((*_span(offsets, node), new))
        else:
            node = targets.get(name)
            if node is None:
                raise KnobError(f"the kernel file assigns no top-level {name}")
            edits.append((*_span(offsets, node), _literal(value)))
    data = source.encode()
    for start, end, text in sorted(edits, reverse=True):
        data = data[:start] + text.encode() + data[end:]
    return data.decode()


def _write_gpu_entry(source: str, device: str, values: Mapping[str, Any]) -> str:
    configs = gpu_configs(source)
    configs[device] = {**configs.get(device, {}), **values}
    lines = [f"{CONFIGS_NAME} = {{"]
    for key in configs:
        inner = ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in configs[key].items())
        lines.append(f"    {_literal(key)}: {{{inner}}},")
    text = "\n".join(lines) + "\n}"
    tree = ast.parse(source)
    node = _top_level_targets(tree).get(CONFIGS_NAME)
    offsets = _line_offsets(source)
    data = source.encode()
    assert node is not None  # apply_point writes per GPU only into a file that has CONFIGS
    start, end = _span(offsets, node)
    return (data[:start] + text.removeprefix(f"{CONFIGS_NAME} = ").encode() + data[end:]).decode()


def describe_change(knobs: list[Knob], old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """'BLOCK_SIZE 1024→4096, NUM_WARPS 4→8': the knobs that differ, in the file's order."""
    parts = []
    for knob in knobs:
        if knob.name in new and old.get(knob.name) != new[knob.name]:
            name = knob.name.replace(AUTOTUNE_PREFIX, "autotune ") if knob.kind == "autotune" else knob.name
            parts.append(f"{name} {knob.label(old.get(knob.name))}→{knob.label(new[knob.name])}")
    return ", ".join(parts) or "no change"


# -- reading the tree ------------------------------------------------------------------------------


def _top_level_targets(tree: ast.Module) -> dict[str, ast.expr]:
    """Name → the value expression of its last top-level assignment (the one that takes effect)."""
    out: dict[str, ast.expr] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            out[node.targets[0].id] = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            out[node.target.id] = node.value
    return out


def _top_level_values(tree: ast.Module) -> dict[str, Any]:
    """Top-level constants whose value is a literal (numbers, strings, None, booleans)."""
    out = {}
    for name, node in _top_level_targets(tree).items():
        try:
            value = ast.literal_eval(node)
        except ValueError:
            continue
        if value is None or isinstance(value, (int, float, str, bool)):
            out[name] = value
    return out


def _handles_none(tree: ast.Module, name: str) -> bool:
    """Whether the file compares `name` (or a local copied from it) with None, i.e. None means something."""
    aliases = {name}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and _reads(node.value, name):
            aliases.update(t.id for t in node.targets if isinstance(t, ast.Name))
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Is, ast.IsNot)) for op in node.ops):
            operands = [node.left, *node.comparators]
            has_none = any(isinstance(o, ast.Constant) and o.value is None for o in operands)
            if has_none and any(isinstance(o, ast.Name) and o.id in aliases for o in operands):
                return True
    return False


def _reads(value: ast.expr, name: str) -> bool:
    """`name` itself, or a per-GPU lookup that falls back to it (`tuned.get("X", name)`)."""
    if isinstance(value, ast.Name):
        return value.id == name
    return (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) and value.func.attr == "get"
            and len(value.args) == 2 and isinstance(value.args[1], ast.Name) and value.args[1].id == name)


def _heuristic_values(name: str, current: int) -> tuple[int, ...]:
    if "WARPS" in name:
        values = set(WARP_VALUES)
    elif "STAGES" in name:
        values = set(STAGE_VALUES)
    else:  # sizes: powers of two around the current value
        values = {current * 2**k for k in range(0, 4)} | {current // 2**k for k in range(1, 4) if current % 2**k == 0}
    return tuple(sorted(v for v in values | {current} if v >= 1))


def _is_autotune(decorator: ast.expr) -> bool:
    func = decorator.func if isinstance(decorator, ast.Call) else None
    if isinstance(func, ast.Attribute):
        return func.attr == "autotune"
    return isinstance(func, ast.Name) and func.id == "autotune"


def _autotune_nodes(tree: ast.Module):
    """(knob name, the `configs=` value) for each autotuned function."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for decorator in node.decorator_list:
                if isinstance(decorator, ast.Call) and _is_autotune(decorator):
                    value = next((kw.value for kw in decorator.keywords if kw.arg == "configs"), None)
                    if value is None and decorator.args:
                        value = decorator.args[0]
                    if value is not None:
                        yield AUTOTUNE_PREFIX + node.name, value


def _is_pin(node: ast.expr) -> bool:
    """`LIST[i:i+1]` with literal bounds: a list pinned to its i-th config."""
    if not (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice)):
        return False
    lo, hi = node.slice.lower, node.slice.upper
    return (isinstance(lo, ast.Constant) and isinstance(hi, ast.Constant) and isinstance(lo.value, int)
            and hi.value == lo.value + 1 and node.slice.step is None)


def _autotune_knobs(tree: ast.Module, source: str) -> list[Knob]:
    lists = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            if isinstance(node.value, ast.List):
                lists[node.targets[0].id] = node.value
    knobs = []
    for name, value in _autotune_nodes(tree):
        current = None
        if _is_pin(value):
            current = value.slice.lower.value
            value = value.value
        if isinstance(value, ast.Name):
            value = lists.get(value.id)
        if not isinstance(value, ast.List) or len(value.elts) < 2:
            continue  # built at run time, or nothing to choose between
        labels = tuple(ast.get_source_segment(source, e) or f"config {i}" for i, e in enumerate(value.elts))
        if current is not None and not 0 <= current < len(labels):
            continue
        knobs.append(Knob(name, (None, *range(len(labels))), current, "autotune",
                          "pin the autotuner to one config (None: let it choose at run time)", labels))
    return knobs


# -- rewriting -------------------------------------------------------------------------------------


def _line_offsets(source: str) -> list[int]:
    """Byte offset of the start of each line (1-based lines: index 0 is line 1). The parser's
    column offsets are UTF-8 byte offsets, so all slicing is done on bytes."""
    offsets = [0]
    for line in source.encode().split(b"\n")[:-1]:
        offsets.append(offsets[-1] + len(line) + 1)
    return offsets


def _span(offsets: list[int], node: ast.expr) -> tuple[int, int]:
    return offsets[node.lineno - 1] + node.col_offset, offsets[node.end_lineno - 1] + node.end_col_offset


def _segment(source: str, offsets: list[int], node: ast.expr) -> str:
    start, end = _span(offsets, node)
    return source.encode()[start:end].decode()


def _literal(value: Any) -> str:
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"' if "\n" not in value else repr(value)
    raise KnobError(f"cannot write {value!r} ({type(value).__name__}) as a constant")


def _shorten(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
