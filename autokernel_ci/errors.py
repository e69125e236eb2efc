"""The package's exceptions: one base class, one subclass per place things go wrong.

The CLI catches `AutokernelError` once, prints its message on one line and exits non-zero, so every
message here is written for the person who ran the command. Other libraries' exceptions (PyYAML,
GitPython, PyGithub, litellm) are translated into these where those libraries are called.
"""

from __future__ import annotations


class AutokernelError(Exception):
    """Something went wrong that the user can act on; the message says what and how."""

    exit_code = 2


class ConfigError(AutokernelError):
    """The configuration file is invalid: names the file, the key path and what was expected."""

    def __init__(self, path: str, key: str, message: str) -> None:
        self.path, self.key = path, key
        where = f"{path}: {key}: " if key else f"{path}: "
        super().__init__(where + message)


class TaskError(AutokernelError):
    """A kernel task could not be resolved or its files could not be read."""


class CandidateError(AutokernelError):
    """A candidate kernel file is missing or unreadable."""


class HarnessError(AutokernelError):
    """The evaluation harness itself failed (not the candidate): a broken worker or environment."""


class GitError(AutokernelError):
    """A git operation on the user's repository failed."""


class GitHubError(AutokernelError):
    """A call to the GitHub API failed."""


class ProposerError(AutokernelError):
    """A proposer could not produce a candidate (no model configured, budget spent, bad reply)."""
