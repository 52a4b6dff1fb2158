"""The ε figures of one site's row in the privacy summary: what each one is, and the range stated
for a site that stopped answering. The card, the terminal and the live view read them from here."""

from __future__ import annotations

from typing import Any

from fedward.common.run_config import RunConfig

# What each ε figure of a site's row is: the card, the terminal and the live view say the same.
EPSILON_FIGURES = {
    "epsilon_model": "ε of the released model at this site: every mechanism whose output shaped "
    "it, composed by the site's own ledger — the tuning trials that chose its settings, the DP "
    "preprocessing release and the final run's training. The run's target ε bounds this figure.",
    "epsilon": "ε of the final run alone (its DP preprocessing release and training rounds).",
    "epsilon_tuning": "ε of every tuning trial this dataset has ever run, composed.",
    "companion_epsilon": "ε each other federation of this invocation spent at the site "
    "(federated baseline, controls): not part of the released model, but spent from the same "
    "lifetime budget.",
    "epsilon_lifetime": "ε of everything the site's ledger holds for this dataset, across runs.",
    "epsilon_bound": "for a site that stopped answering: at least the ε of its last answer, at "
    "most the run's target, which its ledger enforces.",
}


def model_epsilon(site: dict[str, Any]) -> float | None:
    """A site that predates the figure reports only its run's ε, which is then the model's."""
    value = site.get("epsilon_model")
    return value if value is not None else site.get("epsilon")


def trained_rounds_text(rounds: list[int]) -> str:
    """[1, 2, 3, 5] -> "rounds 1–3, 5"; [1] -> "round 1"."""
    spans: list[list[int]] = []
    for r in sorted(set(rounds)):
        if spans and r == spans[-1][1] + 1:
            spans[-1][1] = r
        else:
            spans.append([r, r])
    text = ", ".join(str(a) if a == b else f"{a}–{b}" for a, b in spans)
    return ("round " if len(spans) == 1 and spans[0][0] == spans[0][1] else "rounds ") + text


# A site in one of these states was asked to train and sent no answer with its ε: a round may
# have been spent (the ledger records the spend before training) without the coordinator hearing.
UNANSWERED = ("dropped", "failed", "error")


def epsilon_bound(run: RunConfig, site: dict[str, Any]) -> dict[str, Any] | None:
    """What is known of the ε of a site that stopped answering: a range, and why.

    Its last answer states its ε up to that round; a round it was asked for and did not answer
    may have been spent (the ledger records a spend before training), so the figure is a lower
    bound. Its ledger never lets the run go past the run's target: that is the upper bound.
    """
    if not run.privacy.dp or site.get("status") not in UNANSWERED:
        return None
    rounds = list(site.get("trained_rounds") or [])
    last = model_epsilon(site)
    trained = f"trained {trained_rounds_text(rounds)}, then" if rounds else "never trained, and"
    dropouts = site.get("dropouts") or []
    if site.get("status") == "dropped" and dropouts:
        lost = dropouts[-1]
        ended = f"stopped answering in round {lost.get('round')} ({lost.get('phase')})"
    else:
        ended = f"ended in {site.get('status')} ({site.get('reason')})"
    return {
        "at_least": last if last is not None else 0.0,
        "at_most": run.privacy.target_epsilon,
        "reason": f"the site {trained} {ended}: ε is from its last answer; a round it was "
        "asked for may have been spent without an answer, and its ledger keeps the released "
        "model within the target",
    }
