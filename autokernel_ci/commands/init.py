"""`autokernel-ci init`: set a repository up: the workflows, review rules, and a starter `.autokernel.yml`.

It writes `.github/workflows/autokernel-{gate,gate-report,optimize,review}.yml` (copies of the package's
`workflows/`, with the two runner labels and the action's reference filled in), `.github/CODEOWNERS`
(owners for every kernel file, `.autokernel.yml` and `.github/`, so GitHub's "require review from code
owners" covers what the bot and contributors change), `.github/dependabot.yml` (keeps the pinned actions
current) and `.autokernel.yml` with one kernel task per file that defines a `@triton.jit` kernel:

- a file whose `kernel_fn` takes the arguments of a built-in op (`kernel_fn(x, weight, eps=1e-6)` is
  `rmsnorm`) becomes `op: <that op>`: the built-in reference, inputs, shapes and tolerances apply;
- any other file is listed as a commented template asking for its `reference:` and `inputs:`.

Existing files are never overwritten without `--force`; a file that exists is reported and left alone.
The config written is validated with the same loader `eval` and `optimize` use.
"""

from __future__ import annotations

import argparse
import ast
import re
from dataclasses import dataclass
from pathlib import Path

from autokernel_ci.errors import AutokernelError

WORKFLOWS = ("autokernel-gate.yml", "autokernel-gate-report.yml", "autokernel-optimize.yml", "autokernel-review.yml")
MATRIX_WORKFLOW = "autokernel-optimize-matrix.yml"
DEFAULT_LABEL = "gpu"
DEFAULT_GATE_LABEL = "gpu-untrusted"
DEFAULT_ACTION = "autokernel-ci/autokernel-ci@v0"
LABEL_DEFAULT_TEXT = "vars.AUTOKERNEL_RUNNER_LABEL || 'gpu'"  # how the workflows spell the default label
GATE_LABEL_DEFAULT_TEXT = "vars.AUTOKERNEL_GATE_RUNNER_LABEL || 'gpu-untrusted'"
SHA_PINNED = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+@[0-9a-f]{40}$")
OWNER_RE = re.compile(r"^@[A-Za-z0-9-]+(/[A-Za-z0-9_.-]+)?$|^[^@\s]+@[^@\s]+\.[^@\s]+$")
DEPENDABOT = """\
# Written by `autokernel-ci init`: keeps the commit-SHA pins of the workflows' actions current. Each
# update is a pull request that changes .github/, which CODEOWNERS sends to the owners for review.
version: 2
updates:
  - package-ecosystem: github-actions
    directory: /
    schedule:
      interval: weekly
    cooldown:
      default-days: 7
"""
SKIP_DIRS = {".git", ".hg", ".venv", "venv", "env", "node_modules", "site-packages", "build", "dist", "__pycache__",
             "autokernel-out", ".tox", ".nox", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
LABEL_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
ACTION_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+@[A-Za-z0-9_.-]+$|^\./[A-Za-z0-9_./-]*$")
GENERIC_ARGS = {"x", "a", "b"}  # a signature made only of these says little: the op's name must appear too


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init", help="write the autokernel workflows and a starter .autokernel.yml into a repository",
                       description="Write .github/workflows/autokernel-{gate,optimize,review}.yml and a starter "
                                   ".autokernel.yml listing the repository's Triton kernel files (@triton.jit) as "
                                   "tasks. Existing files are left alone unless --force.")
    p.add_argument("--repo", default=".", metavar="PATH", help="the repository (default: the current folder)")
    p.add_argument("--runner-label", default=DEFAULT_LABEL, metavar="LABEL",
                   help=f"the self-hosted GPU runners' label (default {DEFAULT_LABEL}; the repository variable "
                        "AUTOKERNEL_RUNNER_LABEL overrides it at run time)")
    p.add_argument("--gate-runner-label", default=DEFAULT_GATE_LABEL, metavar="LABEL",
                   help=f"the label of the runners that gate pull requests, which run pull-request code (default "
                        f"{DEFAULT_GATE_LABEL}; the repository variable AUTOKERNEL_GATE_RUNNER_LABEL overrides it); "
                        "never on the optimize runners")
    p.add_argument("--action", default=DEFAULT_ACTION, metavar="REF",
                   help=f"how the workflows refer to the action: owner/repo@<full commit SHA> of the release you "
                        f"reviewed (default {DEFAULT_ACTION}, a tag, which `autokernel-ci doctor` reports as unpinned)")
    p.add_argument("--action-version", default=None, metavar="VERSION",
                   help="the release the --action commit is, written as a comment beside the pin (default: this "
                        "package's version)")
    p.add_argument("--codeowners", action="append", metavar="OWNER",
                   help="who owns the kernels, the config and .github/ in CODEOWNERS: @user, @org/team or an e-mail "
                        "(repeatable; default: the owner of the origin remote on GitHub)")
    p.add_argument("--matrix", action="store_true",
                   help=f"also write {MATRIX_WORKFLOW}: optimize sharded over several runners, merged into one PR")
    p.add_argument("--force", action="store_true", help="overwrite files that exist")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    repo = Path(args.repo).resolve()
    done = init_repository(repo, runner_label=args.runner_label, action=args.action, matrix=args.matrix,
                           force=args.force, gate_runner_label=args.gate_runner_label,
                           action_version=args.action_version, codeowners=args.codeowners)
    for path, what in done.items():
        print(f"{what}: {path.relative_to(repo)}")
    kept = [p for p, w in done.items() if w.startswith("kept")]
    if kept:
        print("pass --force to replace the files kept above")
    if not SHA_PINNED.match(args.action) and not args.action.startswith("./"):
        print(f"warning: the workflows use {args.action}, a tag that can be moved; pin the release's commit with "
              "--action owner/repo@<full SHA>")
    codeowners = repo / ".github" / "CODEOWNERS"
    if done.get(codeowners, "").startswith(("wrote", "replaced")) and "@OWNER" in codeowners.read_text():
        print("warning: no owner was given or found: name them in .github/CODEOWNERS (--codeowners @org/team)")
    print("next: commit these files; label the GPU runners that gate pull requests 'self-hosted' and "
          f"{args.gate_runner_label!r} (ephemeral, nothing else on them) and the ones that optimize 'self-hosted' "
          f"and {args.runner_label!r}; apply the README's ruleset; run `autokernel-ci doctor`; and check the tasks "
          "in .autokernel.yml with `autokernel-ci eval --task NAME --candidate FILE`")
    return 0


# -- the whole command ----------------------------------------------------------------------------------


def init_repository(repo: Path, *, runner_label: str = DEFAULT_LABEL, action: str = DEFAULT_ACTION,
                    matrix: bool = False, force: bool = False, gate_runner_label: str = DEFAULT_GATE_LABEL,
                    action_version: str | None = None, codeowners: list[str] | None = None) -> dict[Path, str]:
    """Write the workflows, CODEOWNERS, dependabot.yml and the starter config;
    {path: "wrote" | "replaced" | "kept (exists)"}."""
    if not repo.is_dir():
        raise AutokernelError(f"no folder at {repo}")
    for option, label in (("--runner-label", runner_label), ("--gate-runner-label", gate_runner_label)):
        if not LABEL_RE.match(label) or label == "self-hosted":
            raise AutokernelError(f"{option} must be letters, digits, '.', '_' or '-' (not self-hosted), got {label!r}")
    if gate_runner_label == runner_label:
        raise AutokernelError(f"--gate-runner-label and --runner-label are both {runner_label!r}: the runners that "
                              "run pull-request code must not take the optimize jobs, which hold the LLM key")
    if not ACTION_RE.match(action):
        raise AutokernelError(f"--action must look like owner/repo@ref or ./path, got {action!r}")
    owners = codeowners if codeowners is not None else _origin_owner(repo)
    bad = [o for o in owners if not OWNER_RE.match(o)]
    if bad:
        raise AutokernelError(f"--codeowners must be @user, @org/team or an e-mail address, got {bad[0]!r}")
    if action_version is None:
        from autokernel_ci import __version__

        action_version = f"v{__version__}"
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+", action_version):
        raise AutokernelError(f"--action-version must be a release name such as v0.1.0, got {action_version!r}")
    files: dict[Path, str] = {}
    names = WORKFLOWS + ((MATRIX_WORKFLOW,) if matrix else ())
    source = workflows_dir()
    for name in names:
        text = (source / name).read_text(encoding="utf-8")
        files[repo / ".github" / "workflows" / name] = customize_workflow(text, runner_label, action,
                                                                          gate_runner_label, action_version)
    files[repo / ".github" / "dependabot.yml"] = DEPENDABOT
    files[repo / ".github" / "CODEOWNERS"] = ""  # written from the config's kernel paths, below
    config = repo / ".autokernel.yml"
    files[config] = ""  # written below, and only when it will be: finding the kernels reads every .py file
    done: dict[Path, str] = {}
    for path, text in files.items():
        if path.exists() and not force:
            done[path] = "kept (exists)"
            continue
        if path == config:
            text = starter_config(repo)
        elif path.name == "CODEOWNERS":
            text = codeowners_text(repo, owners)
        what = "replaced" if path.exists() else "wrote"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        done[path] = what
    if done[config] != "kept (exists)":
        from autokernel_ci.config import load_config

        load_config(config)  # what eval and optimize will read: must load as written
    return done


def workflows_dir() -> Path:
    """The bundled workflows: inside the installed package, or the repository's workflows/ folder."""
    import autokernel_ci

    package = Path(autokernel_ci.__file__).resolve().parent
    for candidate in (package / "workflows", package.parent / "workflows"):
        if all((candidate / name).is_file() for name in WORKFLOWS):
            return candidate
    raise AutokernelError(f"the bundled workflows are missing (looked in {package / 'workflows'}); reinstall "
                          "autokernel-ci")


def customize_workflow(text: str, runner_label: str, action: str, gate_runner_label: str = DEFAULT_GATE_LABEL,
                       action_version: str = "") -> str:
    text = text.replace(LABEL_DEFAULT_TEXT, f"vars.AUTOKERNEL_RUNNER_LABEL || '{runner_label}'")
    text = text.replace(GATE_LABEL_DEFAULT_TEXT, f"vars.AUTOKERNEL_GATE_RUNNER_LABEL || '{gate_runner_label}'")
    pinned = f"uses: {action} # {action_version}" if SHA_PINNED.match(action) and action_version else f"uses: {action}"
    return text.replace(f"uses: {DEFAULT_ACTION}", pinned)


def _origin_owner(repo: Path) -> list[str]:
    """@owner of the origin remote when it is on github.com; none otherwise."""
    import subprocess

    url = subprocess.run(["git", "remote", "get-url", "origin"], cwd=repo, capture_output=True, text=True).stdout
    match = re.search(r"github\.com[:/]([A-Za-z0-9-]+)/", url.strip())
    return [f"@{match.group(1)}"] if match else []


def codeowners_text(repo: Path, owners: list[str]) -> str:
    """CODEOWNERS lines for the config, .github/ and every Triton kernel file the config would list."""
    kernels = [f.relative_to(repo).as_posix() for f in find_triton_files(repo)]
    if owners:
        who = " ".join(owners)
        line = lambda path: f"/{path} {who}"  # noqa: E731
    else:
        line = lambda path: f"# /{path} @OWNER"  # noqa: E731
    lines = ["# Written by `autokernel-ci init`. With the default branch's ruleset requiring review from code owners",
             "# (the README's \"Security model\"), every change to these files needs their owners' approval: the",
             "# bot's kernel pull requests, a contributor's edit of the config, and any change to the workflows.",
             "# The last matching line wins: keep these at the end if you add broader rules above.",
             line(".autokernel.yml"), line(".github/"), *(line(k) for k in kernels)]
    if not owners:
        lines.insert(4, "# No owner was known when this was written: uncomment the lines and name the owners. OWNER")
    return "\n".join(lines) + "\n"


# -- finding the kernels --------------------------------------------------------------------------------


@dataclass
class KernelFile:
    path: str  # relative to the repository, with forward slashes
    op: str | None  # the built-in op whose signature kernel_fn has, if any
    entry_args: list[str] | None  # kernel_fn's arguments, when it has one


def find_triton_files(repo: Path) -> list[Path]:
    """Python files under `repo` that define a `@triton.jit` function, outside virtualenvs and build output."""
    found = []
    for path in sorted(repo.rglob("*.py")):
        rel = path.relative_to(repo)
        if any(part in SKIP_DIRS or (part.startswith(".") and part != ".") for part in rel.parts[:-1]):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if "jit" in text and _has_triton_jit(text):
            found.append(path)
    return found


def _has_triton_jit(text: str) -> bool:
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return re.search(r"^\s*@(triton\.)?jit\b", text, re.MULTILINE) is not None and "triton" in text
    jit_names = {"triton.jit"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "triton":
            jit_names.update(a.asname or a.name for a in node.names if a.name == "jit")
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for deco in node.decorator_list:
                target = deco.func if isinstance(deco, ast.Call) else deco
                if _dotted(target) in jit_names:
                    return True
    return False


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def classify_file(repo: Path, path: Path) -> KernelFile:
    """The built-in op a kernel file implements, judged by its `kernel_fn` signature."""
    text = path.read_text(encoding="utf-8")
    rel = path.relative_to(repo).as_posix()
    args = _kernel_fn_args(text)
    if args is None:
        return KernelFile(rel, None, None)
    matches = [op for op, op_args in builtin_signatures().items() if op_args == args]
    words = re.sub(r"[^a-z0-9]", "", (path.stem + " " + text).lower())
    plausible = [op for op in matches if set(args) - GENERIC_ARGS or op.replace("_", "") in words]
    # Two ops with one signature: the one the file names.
    named = [op for op in plausible if op.replace("_", "") in re.sub(r"[^a-z0-9]", "", path.stem.lower())]
    chosen = (named or plausible or [None])[0]
    return KernelFile(rel, chosen, args)


def _kernel_fn_args(text: str) -> list[str] | None:
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "kernel_fn":
            a = node.args
            return [arg.arg for arg in a.posonlyargs + a.args]
    return None


def builtin_signatures() -> dict[str, list[str]]:
    """{op: kernel_fn's argument names} for the built-in ops, read from their specs' signature text."""
    from autokernel_ci.ops import OP_NAMES, get_op

    out = {}
    for op in OP_NAMES:
        inside = get_op(op).signature.split("(", 1)[1].rsplit(")", 1)[0]
        out[op] = [part.split("=")[0].strip() for part in inside.split(",") if part.strip()]
    return out


# -- the starter config ---------------------------------------------------------------------------------


def starter_config(repo: Path) -> str:
    """`.autokernel.yml` text: a task per Triton kernel file, then the gate and optimize defaults."""
    files = [classify_file(repo, p) for p in find_triton_files(repo)]
    known = [f for f in files if f.op]
    unknown = [f for f in files if not f.op]
    lines = ["# autokernel-ci configuration, written by `autokernel-ci init`. Reference: the README's",
             "# \"Configuration reference\". Check a task with: autokernel-ci eval --task NAME --candidate FILE",
             "version: 1"]
    names: set[str] = set()
    if known:
        lines.append("kernels:")
        for f in known:
            name = _unique(_task_name(f.path), names)
            lines += [f"  # {f.path}: kernel_fn({', '.join(f.entry_args or [])}) has the signature of the built-in "
                      f"`{f.op}`",
                      f"  - name: {name}", f"    path: {f.path}", f"    op: {f.op}"]
    elif unknown:
        lines.append("kernels:   # (empty until a template below is uncommented)")
    else:
        lines.append("kernels: []  # no @triton.jit kernel was found; add tasks here")
    for f in unknown:
        name = _unique(_task_name(f.path), names)
        why = "its kernel_fn matches no built-in op" if f.entry_args is not None else "it has no kernel_fn"
        lines += ["",
                  f"  # {f.path} defines Triton kernels, but {why}. To gate and optimize it, add it under",
                  "  # `kernels:` with your own PyTorch reference and input factory:",
                  f"  # - name: {name}",
                  f"  #   path: {f.path}",
                  "  #   entry: kernel_fn                     # the Python function that launches the kernel",
                  "  #   reference: mypkg.refs:reference      # module:callable, the maths in plain PyTorch",
                  "  #   inputs: mypkg.refs:make_inputs       # (shape, dtype, generator, kind) -> args",
                  "  #   shapes: [{rows: 7, dim: 33}, {rows: 64, dim: 4096}]",
                  "  #   dtypes: [fp32, bf16]"]
    lines += ["",
              "# The pull-request gate: fail when a kernel is slower than this fraction (never below the measured",
              "# noise), or wrong.",
              "gate:",
              "  threshold: 0.03",
              "  max_minutes: 10",
              "",
              "# The experiment loop (autokernel-ci optimize and the scheduled workflow).",
              "optimize:",
              "  budget_minutes: 60",
              "  max_experiments: 200",
              "  patience: 40",
              "  proposer: tuner   # or llm, with optimize.llm.model (see the README)",
              ""]
    return "\n".join(lines)


def _task_name(rel: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", Path(rel).stem) or "kernel"


def _unique(name: str, taken: set[str]) -> str:
    candidate, k = name, 2
    while candidate in taken:
        candidate, k = f"{name}-{k}", k + 1
    taken.add(candidate)
    return candidate
