"""`autokernel-ci review-status`: re-evaluate the `autokernel/human-review` status of a pull request.

Run it from the trusted review workflow, on `pull_request_target` (opened, synchronize, reopened) and on
`pull_request_review` events, without checking out the pull request's code: everything it judges comes
from the API (the diff, the reviews, the permissions) and from the base's `.autokernel.yml`. It sets the
status on the pull request's current head: pending when the change is high risk (re-classified from the
diff) or was pushed by a person, until a writer who is neither the author nor the last pusher approves
that head commit; success otherwise. It exits 0 whatever the state: the status is the gate.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("review-status", help="set autokernel/human-review on a pull request from its reviews",
                       description="Set the autokernel/human-review status on the pull request's head commit: "
                                   "pending for a high-risk autokernel pull request, or one a person pushed to, "
                                   "until a writer other than its author and last pusher approves that commit; "
                                   "success otherwise. Needs GITHUB_TOKEN and GITHUB_REPOSITORY.")
    p.add_argument("--pr", type=int, metavar="N",
                   help="the pull request number (default: the one of the event in GITHUB_EVENT_PATH)")
    p.add_argument("--pusher", metavar="LOGIN",
                   help="who pushed the head (default: the sender of a synchronize event in GITHUB_EVENT_PATH)")
    p.add_argument("--config", metavar="FILE",
                   help="config file whose risk: section names the labels (default: ./.autokernel.yml if present)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from autokernel_ci.commands.publish import load_risk_config
    from autokernel_ci.config import find_config
    from autokernel_ci.github import HUMAN_REVIEW_CONTEXT, GitHubClient, read_event

    config = Path(args.config) if args.config else find_config()
    risk_config = load_risk_config(config)
    client = GitHubClient.from_env()
    number = args.pr if args.pr is not None else client.event_pull_request().number
    pusher = args.pusher
    if pusher is None and client.event_path:
        event = read_event(client.event_path)
        if event.get("action") == "synchronize":
            pusher = str((event.get("sender") or {}).get("login") or "") or None
    state = client.evaluate_human_review(number, risk_config=risk_config, pusher=pusher,
                                         high_risk_paths=high_risk_paths(config, risk_config))
    print(f"{HUMAN_REVIEW_CONTEXT}: {state} on pull request #{number}")
    return 0


def high_risk_paths(config: Path | None, risk_config) -> list[str]:
    """Kernel files whose task is declared `risk: high` or whose op is of a high-risk family."""
    if config is None:
        return []
    from autokernel_ci.config import load_config

    families = {f.lower() for f in risk_config.high_risk_families}
    return [k.path for k in load_config(config).kernels
            if k.risk == "high" or (k.op or "").lower() in families]
