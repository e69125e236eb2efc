"""A file's import closure inside a repository, found by reading source: nothing is imported or run.

    files = import_closure([tree / "kernels/rmsnorm.py"], tree, search=[tree / "kernels", tree])

The closure is the files themselves and every file under `tree` that they import, directly or through
other files of the tree: `import a.b` is looked up as `a.py`, `a/__init__.py`, `a/b.py`,
`a/b/__init__.py` in each folder of `search` in order (the worker's sys.path: the kernel's folder, then
the repository), `from a import b` also as the submodule `a.b`, and relative imports from the importing
file's package. An import that no folder of the tree answers (torch, the standard library) is left
out. What cannot be seen statically (`importlib.import_module(name)`, `__import__`, `exec`) is not
followed.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path


def import_closure(files: Iterable[Path], tree: Path, search: Iterable[Path] | None = None) -> set[Path]:
    """The resolved paths of `files` and of every file under `tree` they import, transitively."""
    tree = Path(tree).resolve()
    folders = [Path(f).resolve() for f in (search if search is not None else [tree])]
    seen: set[Path] = set()
    todo = [Path(f).resolve() for f in files]
    while todo:
        path = todo.pop()
        if path in seen or not path.is_file() or not path.is_relative_to(tree):
            continue
        seen.add(path)
        for found in _imports_of(path, folders):
            if found.is_relative_to(tree) and found not in seen:
                todo.append(found)
    return seen


def imported_names(path: Path) -> set[str]:
    """Every absolute module name a file imports (`a.b` also as `a`), whether or not the tree has it."""
    names: set[str] = set()
    for module, _level, members in _import_statements(path):
        if module and not _level:
            parts = module.split(".")
            names.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
            names.update(f"{module}.{m}" for m in members)
    return names


def _import_statements(path: Path) -> list[tuple[str, int, list[str]]]:
    """(module, relative level, imported members) of every import statement in the file."""
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return []
    found: list[tuple[str, int, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, 0, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", node.level, [a.name for a in node.names if a.name != "*"]))
    return found


def _imports_of(path: Path, folders: list[Path]) -> list[Path]:
    out: list[Path] = []
    for module, level, members in _import_statements(path):
        if level:
            package = path.parent
            for _ in range(level - 1):
                package = package.parent
            prefix = [p for p in module.split(".") if p]
            out += _module_files(package, prefix)
            out += [f for m in members for f in _module_files(package, [*prefix, m])]
            continue
        parts = module.split(".")
        for folder in folders:
            hits = _module_files(folder, parts)
            hits += [f for m in members for f in _module_files(folder, [*parts, m])]
            if hits:
                out += hits
                break
    return out


def _module_files(folder: Path, parts: list[str]) -> list[Path]:
    """The files `import ".".join(parts)` runs when `folder` is on sys.path: each package's `__init__.py`
    on the way, then the module (a `.py` file or a package); [] when the folder has no such module."""
    files: list[Path] = []
    here = folder
    for i, part in enumerate(parts):
        module, package = here / f"{part}.py", here / part
        if (package / "__init__.py").is_file():
            files.append((package / "__init__.py").resolve())
            here = package
        elif module.is_file() and i == len(parts) - 1:
            files.append(module.resolve())
            return files
        elif package.is_dir():  # a namespace package: nothing runs, look further in
            here = package
        else:
            return [] if i == 0 else files
    return files
