"""Proposers: what to try next. `tuner` searches a kernel's knobs; `llm` (when configured) rewrites it.

Public: `Candidate`, `Experiment`, `Proposer`, `TunerProposer`, `make_proposer`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autokernel_ci.search.proposer import Candidate, Experiment, Proposer
from autokernel_ci.search.tuner import TunerProposer

if TYPE_CHECKING:
    from autokernel_ci.config import OptimizeSettings

__all__ = ["Candidate", "Experiment", "Proposer", "TunerProposer", "make_proposer"]


def make_proposer(name: str, settings: OptimizeSettings | None = None) -> tuple[Proposer, str | None]:
    """(the proposer, a note for the user when the one asked for is not available and the tuner stands in).

    `llm` needs `autokernel_ci.search.llm.LLMProposer` and a model (`optimize.llm.model` in
    `.autokernel.yml`); without either, the tuner runs instead and the note says why.
    """
    if name == "tuner":
        return TunerProposer(), None
    if name != "llm":
        raise ValueError(f"unknown proposer {name!r}; expected 'tuner' or 'llm'")
    model = settings.llm_model if settings is not None else None
    if not model:
        return TunerProposer(), ("no LLM model is configured (set optimize.llm.model in .autokernel.yml); "
                                 "using the tuner instead")
    try:
        from autokernel_ci.search.llm import LLMProposer  # type: ignore[import-not-found]
    except ImportError as exc:
        return TunerProposer(), f"the LLM proposer is not available ({exc}); using the tuner instead"
    if hasattr(LLMProposer, "from_settings"):
        return LLMProposer.from_settings(settings), None
    return LLMProposer(model=model, max_cost_usd=settings.llm_max_cost_usd), None
