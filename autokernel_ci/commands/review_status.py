"""`autokernel-ci review-status`: re-evaluate the `autokernel/human-review` status of a pull request.

Run it from a workflow on `pull_request_review` (and `pull_request`) events: it sets the status on
the pull request's current head, pending for a high-risk pull request until someone other than the
bot and the author, with write access, approves that head commit; success otherwise. Branch
protection can then require the status. It exits 0 whatever the state: the status is the gate.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("review-status", help="set autokernel/human-review on a pull request from its reviews",
                       description="Set the autokernel/human-review status on the pull request's head commit: "
                                   "pending for a high-risk autokernel pull request until a maintainer approves "
                                   "that commit, success otherwise. Needs GITHUB_TOKEN and GITHUB_REPOSITORY.")
    p.add_argument("--pr", type=int, metavar="N",
                   help="the pull request number (default: the one of the event in GITHUB_EVENT_PATH)")
    p.add_argument("--config", metavar="FILE",
                   help="config file whose risk: section names the labels (default: ./.autokernel.yml if present)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from autokernel_ci.commands.publish import load_risk_config
    from autokernel_ci.config import find_config
    from autokernel_ci.github import HUMAN_REVIEW_CONTEXT, GitHubClient

    config = Path(args.config) if args.config else find_config()
    risk_config = load_risk_config(config)
    client = GitHubClient.from_env()
    number = args.pr if args.pr is not None else client.event_pull_request().number
    state = client.evaluate_human_review(number, risk_config=risk_config)
    print(f"{HUMAN_REVIEW_CONTEXT}: {state} on pull request #{number}")
    return 0
