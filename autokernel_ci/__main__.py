"""`python -m autokernel_ci`. In a checkout of code you do not trust, run it isolated:
`python -I -m autokernel_ci …` (the GitHub Action does), so that nothing in the current folder is on
sys.path: a checkout's own `autokernel_ci/` would otherwise run in this package's place."""

import os
import sys


def _drop_the_current_folder() -> None:
    """`python -m` puts the current folder first on sys.path, so a checkout's `github/` (or any module named
    like a dependency) would be imported in place of the real one. Without -I, drop it here, before any
    other import, unless this package itself was found there (a developer's own checkout)."""
    here = os.path.realpath(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cwd = os.path.realpath(os.getcwd())
    if here != cwd:
        sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != cwd]


if not sys.flags.isolated:
    _drop_the_current_folder()

from autokernel_ci.cli import main  # noqa: E402 - after sys.path is cleaned

raise SystemExit(main())
