"""The OS sandbox around every process that runs repository code: bubblewrap (`bwrap`).

A sandboxed worker gets new user, PID, network, IPC and UTS namespaces, its own session, and dies
with its parent. It sees the interpreter, its site-packages, the package and the system libraries
read-only; the task's repository and the candidate's folder read-only with `.git` hidden; one
private scratch folder (the only writable place besides a private `/tmp` and `HOME`); for CUDA
work the GPU device nodes. It sees no other process (the runner's, ours included), not the
runner's home or caches, and no network. Its environment is built from an allowlist.

Where bubblewrap cannot run, `sandbox_mode()` decides: in CI it refuses (`SandboxUnavailable`,
with how to install it and how to opt out); on a developer's machine it warns once and runs the
worker as a plain child process (`process`), and every result says "unsandboxed".
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from autokernel_ci.errors import HarnessError

MODE_ENV = "AUTOKERNEL_SANDBOX"  # "bwrap" | "process"; set by --sandbox
REQUIRE_ENV = "AUTOKERNEL_REQUIRE_SANDBOX"  # set by `gate --github` and the action: refuse rather than warn
MODES = ("bwrap", "process")
# Where a worker's private build caches (its scratch's .cache: Triton's, load_inline's) appear inside.
CACHE_DIR = "/var/cache/autokernel"
UNSANDBOXED = "process (unsandboxed)"
SANDBOXED = "bubblewrap"
# The variables a worker may inherit, whatever else the parent holds. Everything else is dropped.
ALLOWED_ENV = (
    "PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM",
    "CUDA_VISIBLE_DEVICES", "CUDA_HOME", "CUDA_PATH", "CUDA_DEVICE_ORDER", "CUDA_MODULE_LOADING",
    "LD_LIBRARY_PATH", "TRITON_PTXAS_PATH", "TRITON_LIBCUDA_PATH", "TRITON_CUDACRT_PATH",
    "TRITON_CUDART_PATH", "TORCH_CUDA_ARCH_LIST", "MAX_JOBS", "CC", "CXX", "NVCC_APPEND_FLAGS",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
    "LITELLM_LOCAL_MODEL_COST_MAP",
    # The harness's own switches.
    "AUTOKERNEL_CACHE_DIR", "AUTOKERNEL_STANDBY", "AUTOKERNEL_WORKER_PROFILE", "AUTOKERNEL_SLOT",
)
INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: `sudo apt-get install -y bubblewrap`; Fedora: "
                "`sudo dnf install bubblewrap`) and make sure unprivileged user namespaces are enabled, or "
                "opt out explicitly with `--sandbox=process` (every report then says \"unsandboxed\")")


class SandboxUnavailable(HarnessError):
    """bubblewrap is needed here (CI, the action, `gate --github`) and cannot run."""


@functools.lru_cache(maxsize=1)
def _probe() -> str | None:
    """None when bwrap runs here with the namespaces we use, else why not (one line)."""
    exe = shutil.which("bwrap")
    if exe is None:
        return "bubblewrap (bwrap) is not installed"
    try:
        done = subprocess.run([exe, *_namespace_flags(), "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev",
                               "true"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap failed to start: {exc}"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return f"bubblewrap cannot create its namespaces here ({last[:200]})"
    return None


def unavailable_reason() -> str | None:
    return _probe()


def in_ci(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return any(env.get(k, "").strip().lower() in ("1", "true", "yes") for k in ("CI", "GITHUB_ACTIONS", REQUIRE_ENV))


_warned = False


def sandbox_mode(env: Mapping[str, str] | None = None) -> str:
    """`bwrap` or `process`, as asked (`--sandbox` / $AUTOKERNEL_SANDBOX) or as this machine allows."""
    global _warned
    env = os.environ if env is None else env
    asked = env.get(MODE_ENV, "").strip().lower()
    if asked and asked not in MODES:
        raise HarnessError(f"--sandbox must be one of {', '.join(MODES)}, got {asked!r}")
    if asked == "process":
        return "process"
    reason = unavailable_reason()
    if reason is None:
        return "bwrap"
    if asked == "bwrap" or in_ci(env):
        where = "--sandbox=bwrap was asked for" if asked == "bwrap" else "in CI every evaluation runs sandboxed"
        raise SandboxUnavailable(f"{reason}; {where}: {INSTALL_HINT}")
    if not _warned:
        _warned = True
        warnings.warn(f"autokernel-ci: {reason}: repository code runs in a plain child process (unsandboxed); "
                      f"{INSTALL_HINT}", RuntimeWarning, stacklevel=2)
    return "process"


def label(mode: str) -> str:
    return SANDBOXED if mode == "bwrap" else UNSANDBOXED


def allowed_environment(env: Mapping[str, str]) -> dict[str, str]:
    """Only the allowlisted variables of `env`: a token under any name stays behind."""
    return {k: env[k] for k in ALLOWED_ENV if k in env}


@dataclass(frozen=True)
class Mounts:
    """What a sandboxed worker may see besides the interpreter: `scratch` writable, `read_only` folders
    (the task's repository, candidate folders) with any `.git` inside hidden, `writable` cache folders
    private to what is evaluated."""

    scratch: Path
    read_only: tuple[Path, ...] = ()
    writable: tuple[Path, ...] = ()
    gpu: bool = False

    def key(self) -> tuple:
        """Everything but the scratch folder: two workers with the same key see the same files."""
        return (self.read_only, self.writable, self.gpu)


@dataclass
class _Binds:
    args: list[str] = field(default_factory=list)
    seen: set[tuple[str, str]] = field(default_factory=set)
    read_only: set[str] = field(default_factory=set)

    def add(self, flag: str, path: Path, dest: Path | None = None) -> None:
        src = str(path)
        if (flag, src) in self.seen or not os.path.exists(src):
            return
        # Inside a folder already shown read-only (CUDA_HOME under /usr): nothing to add, and a bind onto a
        # path through a symbolic link there fails.
        if dest is None and flag == "--ro-bind" and any(src.startswith(ro.rstrip("/") + "/") for ro in self.read_only):
            return
        if flag == "--ro-bind" and dest is None:
            self.read_only.add(src)
        self.seen.add((flag, src))
        self.args += [flag, src, str(dest or path)]


def _namespace_flags() -> list[str]:
    return ["--unshare-user-try", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session"]


def _system_paths() -> list[Path]:
    """What the interpreter and its libraries need, read-only: never a home folder as a whole."""
    paths = [Path(p) for p in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")]
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths += [Path(p) for p in sorted(prefixes)]
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        value = sysconfig.get_paths().get(key)
        if value:
            paths.append(Path(value))
    paths += [Path(p) for p in sys.path if p and Path(p).is_dir() and "site-packages" in p]
    exe = Path(sys.executable)
    paths += [exe.parent, exe.resolve().parent]
    paths.append(package_root() / "autokernel_ci")
    paths += _toolchain_roots()
    for name in ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "ssl", "ca-certificates", "localtime",
                 "nsswitch.conf", "passwd", "group", "hosts"):
        paths.append(Path("/etc") / name)
    return paths


def _toolchain_roots() -> list[Path]:
    """Where the C/C++ compilers Triton and load_inline call live, when outside /usr (a runner's /opt/gcc):
    the folder above their `bin/`, so their own libraries and headers come along."""
    roots = []
    for name in (os.environ.get("CC"), os.environ.get("CXX"), "cc", "gcc", "c++", "g++", "nvcc", "ninja"):
        found = shutil.which(name) if name else None
        if not found:
            continue
        for exe in {Path(found), Path(os.path.realpath(found))}:
            folder = exe.parent.parent if exe.parent.name == "bin" else exe.parent
            if str(folder) not in ("/", "/usr", "/usr/local") and not str(folder).startswith("/usr/"):
                roots.append(folder)
    return roots


def _gpu_paths() -> list[Path]:
    """The GPU's device nodes (/dev/nvidia0.., nvidiactl, nvidia-uvm, nvidia-uvm-tools, nvidia-caps)."""
    return sorted(Path("/dev").glob("nvidia*"))


def package_root() -> Path:
    return Path(__file__).resolve().parents[2]


def command(argv: list[str], mounts: Mounts, env: Mapping[str, str]) -> list[str]:
    """`argv` wrapped in bwrap with `mounts`, in an environment of exactly `env` (plus HOME and TMPDIR)."""
    exe = shutil.which("bwrap") or "bwrap"
    binds = _Binds()
    for path in _system_paths():
        binds.add("--ro-bind", path)
    masks: list[str] = []
    for path in mounts.read_only:
        binds.add("--ro-bind", path)
        git = path / ".git"
        if git.is_dir():
            masks += ["--tmpfs", str(git)]
        elif git.exists():
            masks += ["--ro-bind", "/dev/null", str(git)]
    if mounts.gpu:
        for path in _gpu_paths():
            binds.add("--dev-bind", path)
        for path in (Path("/sys"), Path("/etc/nvidia")):
            binds.add("--ro-bind", path)
        # A CUDA toolchain outside the folders above (CUDA_HOME) must be visible for load_inline.
        for var in ("CUDA_HOME", "CUDA_PATH"):
            if env.get(var):
                binds.add("--ro-bind", Path(env[var]))
    if env.get("PYTHONPYCACHEPREFIX"):  # the bytecode the parent prepared (harness.bytecode): read, never written
        binds.add("--ro-bind", Path(env["PYTHONPYCACHEPREFIX"]))
    for path in mounts.writable:
        path.mkdir(parents=True, exist_ok=True)
        binds.add("--bind", path)
    home = "/tmp/home"
    # The scratch's private build caches, at one fixed path whatever the scratch folder is: a load_inline
    # build records absolute paths in its build.ninja, and a path that changed is a rebuild.
    (mounts.scratch / ".cache").mkdir(exist_ok=True)
    out = [exe, *_namespace_flags(), "--hostname", "autokernel-sandbox", "--proc", "/proc", "--dev", "/dev",
           "--tmpfs", "/tmp", "--dir", home, *binds.args, *masks,
           "--bind", str(mounts.scratch), str(mounts.scratch), "--bind", str(mounts.scratch / ".cache"), CACHE_DIR,
           "--chdir", str(mounts.scratch),
           "--clearenv"]
    for key, value in {**env, "HOME": home, "TMPDIR": "/tmp"}.items():
        out += ["--setenv", key, value]
    return [*out, "--", *argv]


def read_only_paths(paths: Iterable[Path | str | None]) -> tuple[Path, ...]:
    """The folders to show read-only, resolved, without duplicates or ones inside another."""
    folders = sorted({Path(p).resolve() for p in paths if p})
    kept: list[Path] = []
    for folder in folders:
        if not any(folder.is_relative_to(k) for k in kept):
            kept.append(folder)
    return tuple(kept)


INSIDE_ENV = "AUTOKERNEL_INSIDE_SANDBOX"
# Commands that build and run the user's models (repository code from first to last): the whole
# command runs inside the sandbox, with only its output files writable.
MODEL_COMMANDS = ("profile", "verify")


def run_command_inside(argv: list[str], outputs: Iterable[str | None], module: str = "autokernel_ci") -> int:
    """Run `python -m autokernel_ci ARGV` inside bubblewrap and return its exit status. It sees the
    current folder (the user's repository) read-only, the folders of `outputs` writable, the GPU when
    there is one, and an allowlisted environment. Its output goes straight to ours."""
    from autokernel_ci.harness.device import cache_root

    gpu = any(Path("/dev").glob("nvidia*"))
    from autokernel_ci.harness.sandbox import child_environment

    env = child_environment(device="cuda" if gpu else "cpu", mode="bwrap")
    env[INSIDE_ENV] = "1"
    cache = cache_root().expanduser().resolve()
    env["AUTOKERNEL_CACHE_DIR"] = str(cache)
    writable = []
    for out in outputs:
        if out:
            folder = Path(out).expanduser().resolve().parent
            folder.mkdir(parents=True, exist_ok=True)
            writable.append(folder)
    cwd = Path.cwd().resolve()
    scratch = Path(tempfile.mkdtemp(prefix="autokernel-model-"))
    try:
        named = [Path(v).resolve().parent for a in argv for v in (a, a.partition("=")[2]) if v and os.path.exists(v)]
        mounts = Mounts(scratch=scratch, read_only=read_only_paths([cwd, cache if cache.is_dir() else None, *named]),
                        writable=tuple(writable), gpu=gpu)
        wrapped = command([sys.executable, "-m", module, *argv], mounts, env)
        at = wrapped.index("--chdir")
        wrapped[at + 1] = str(cwd)  # relative paths on the command line mean what they meant
        return subprocess.run(wrapped, env={"PATH": os.environ.get("PATH", os.defpath)}).returncode
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
