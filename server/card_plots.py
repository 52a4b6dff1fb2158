"""The model card's figures, drawn from the card's own JSON so that anyone can redraw them.

Every curve comes from the sites' coarsened score histograms (counts of positives and negatives per
score bin, small cells merged), never from raw scores: ROC and precision-recall per site and pooled,
a reliability diagram (calibration), a privacy-utility scatter (each site's ε against its test
AUROC) and the membership audit's log-log ROC with the DP bound TPR ≤ e^ε·FPR + δ, drawn by the
audit report's own helper. The figures are PNGs (matplotlib's Agg backend) encoded as base64 so
the HTML card needs nothing from the network.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedward.common.metrics import CoarseHistogram
from fedward.server.audit_report import audit_roc_png, roc_points

CALIBRATION_BINS = 10
"""Equal-width bins of the reliability diagram (the per-site panel's ECE uses 10 too)."""


@dataclass(frozen=True)
class Figure:
    """One planned figure: its name in the card's graphics collection and what it shows."""

    name: str
    description: str


def _usable(histograms: Mapping[str, Any]) -> dict[str, CoarseHistogram]:
    """The sites whose histogram has both classes; a suppressed class makes ROC meaningless."""
    out = {}
    for site, record in sorted(histograms.items()):
        if not record:
            continue
        hist = CoarseHistogram.from_record(record)
        if hist.pos_suppressed or hist.neg_suppressed:
            continue
        pos, neg = hist.expand()
        if pos.sum() > 0 and neg.sum() > 0:
            out[site] = hist
    return out


def _pooled_counts(hists: Mapping[str, CoarseHistogram]) -> tuple[np.ndarray, np.ndarray] | None:
    if not hists:
        return None
    bins = {h.bins for h in hists.values()}
    if len(bins) != 1:
        return None
    pos = np.zeros(bins.pop())
    neg = np.zeros_like(pos)
    for h in hists.values():
        p, q = h.expand()
        pos += p
        neg += q
    return pos, neg


def _roc_pr(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, ...]:
    """FPR, TPR, recall, precision at every bin threshold, from the top bin down."""
    tp = np.concatenate([[0.0], np.cumsum(pos[::-1])])
    fp = np.concatenate([[0.0], np.cumsum(neg[::-1])])
    tpr = tp / max(float(pos.sum()), 1e-12)
    fpr = fp / max(float(neg.sum()), 1e-12)
    predicted = tp + fp
    precision = np.divide(tp, predicted, out=np.ones_like(tp), where=predicted > 0)
    return fpr, tpr, tpr[1:], precision[1:]


def plan(card: Mapping[str, Any]) -> list[Figure]:
    """The figures this card can show, in order; the same list names the card's graphics."""
    qa = card["quantitative_analysis"]
    hists = _usable(qa.get("score_histograms") or {})
    figures: list[Figure] = []
    if hists:
        names = ", ".join(hists)
        figures += [
            Figure(
                "roc",
                f"ROC on the sealed test splits, per site ({names}) and pooled over them, from the "
                "sites' coarsened score histograms.",
            ),
            Figure(
                "precision_recall",
                "Precision-recall on the test splits, per site and pooled; a random model's "
                "precision is the prevalence.",
            ),
            Figure(
                "calibration",
                f"Reliability diagram: observed share of positives against the predicted "
                f"probability in {CALIBRATION_BINS} bins, per site and pooled (groups the sites "
                "merged are spread evenly over their bins, so this is approximate).",
            ),
        ]
    if any(s.get("epsilon") is not None for s in card["privacy"]["sites"]) and any(
        m.get("slice", "").startswith("site=") and m["type"] == "auroc"
        for m in qa["performance_metrics"]
    ):
        figures.append(
            Figure(
                "privacy_utility",
                "Privacy against utility: each site's ε for this run against its test AUROC "
                "(interval bars), with the pooled AUROC and, where measured, the best baseline and "
                "the centralised reference.",
            )
        )
    audit = card["privacy"]["audit"]
    run_model = (audit.get("models") or {}).get("run") or {} if audit.get("done") else {}
    for site, entry in (run_model.get("sites") or {}).items():
        if entry.get("status") == "ok" and any(
            r.get("hist") for r in (entry.get("attacks") or {}).values()
        ):
            figures.append(
                Figure(
                    f"audit_roc_{site}",
                    f"Membership-inference audit at {site}: each attack's ROC (log-log) against "
                    "the bound TPR ≤ e^ε·FPR + δ that the site's DP guarantee implies.",
                )
            )
    return figures


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _axes(title: str) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 3.8), dpi=100)
    ax.set_title(title, fontsize=10)
    return fig, ax


def _roc(hists: Mapping[str, CoarseHistogram], records: Mapping[str, Any]) -> str:
    fig, ax = _axes("ROC, test splits")
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", label="chance")
    for site in hists:
        fpr, tpr = roc_points(records[site])
        ax.plot(fpr, tpr, linewidth=1, label=site)
    pooled = _pooled_counts(hists)
    if pooled is not None:
        fpr, tpr, _, _ = _roc_pr(*pooled)
        ax.plot(fpr, tpr, color="black", linewidth=2, label="pooled")
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


def _precision_recall(hists: Mapping[str, CoarseHistogram]) -> str:
    fig, ax = _axes("Precision-recall, test splits")
    for site, hist in hists.items():
        _, _, recall, precision = _roc_pr(*hist.expand())
        ax.plot(recall, precision, linewidth=1, label=site)
    pooled = _pooled_counts(hists)
    if pooled is not None:
        _, _, recall, precision = _roc_pr(*pooled)
        ax.plot(recall, precision, color="black", linewidth=2, label="pooled")
        prevalence = float(pooled[0].sum() / (pooled[0].sum() + pooled[1].sum()))
        ax.axhline(prevalence, color="0.6", linestyle=":", label="chance (pooled prevalence)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.legend(fontsize=7, loc="lower left")
    return _png(fig)


def _reliability(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean predicted probability, observed share of positives and rows, per calibration bin."""
    bins = pos.size
    mid = (np.arange(bins) + 0.5) / bins
    which = np.minimum((mid * CALIBRATION_BINS).astype(int), CALIBRATION_BINS - 1)
    n = np.bincount(which, weights=pos + neg, minlength=CALIBRATION_BINS)
    p = np.bincount(which, weights=pos, minlength=CALIBRATION_BINS)
    predicted = np.bincount(which, weights=(pos + neg) * mid, minlength=CALIBRATION_BINS)
    keep = n > 0
    return predicted[keep] / n[keep], p[keep] / n[keep], n[keep]


def _calibration(hists: Mapping[str, CoarseHistogram]) -> str:
    fig, ax = _axes("Calibration, test splits")
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", label="perfectly calibrated")
    for site, hist in hists.items():
        x, y, _ = _reliability(*hist.expand())
        ax.plot(x, y, marker="o", markersize=3, linewidth=1, label=site)
    pooled = _pooled_counts(hists)
    if pooled is not None:
        x, y, _ = _reliability(*pooled)
        ax.plot(x, y, color="black", marker="s", markersize=4, linewidth=2, label="pooled")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed share of positives")
    ax.legend(fontsize=7, loc="upper left")
    return _png(fig)


def _privacy_utility(card: Mapping[str, Any]) -> str:
    fig, ax = _axes("Privacy and utility")
    eps = {s["site"]: s.get("epsilon") for s in card["privacy"]["sites"]}
    metrics = card["quantitative_analysis"]["performance_metrics"]
    auroc = {
        m["slice"].removeprefix("site="): m
        for m in metrics
        if m["type"] == "auroc" and m["slice"].startswith("site=")
    }
    xs: list[float] = []
    for site, m in sorted(auroc.items()):
        e = eps.get(site)
        if e is None:
            continue
        xs.append(float(e))
        ci = m.get("confidence_interval")
        yerr = (
            [[m["value"] - ci["lower_bound"]], [ci["upper_bound"] - m["value"]]]
            if ci is not None
            else None
        )
        ax.errorbar([e], [m["value"]], yerr=yerr, fmt="o", capsize=3, label=site)
    pooled = next(
        (m["value"] for m in metrics if m["type"] == "auroc" and m["slice"] == "pooled"), None
    )
    if pooled is not None:
        ax.axhline(pooled, color="black", linewidth=1.5, label="federated model, pooled")
    baselines = card["baselines"]
    if baselines.get("done"):
        best = baselines.get("best_baseline") or {}
        if best.get("pooled_auroc") is not None:
            ax.axhline(
                best["pooled_auroc"],
                color="tab:gray",
                linestyle="--",
                label=f"best baseline ({best.get('name')}), pooled",
            )
        ref = baselines.get("pooled_reference") or {}
        if ref.get("auroc") is not None and ref.get("epsilon") is not None:
            xs.append(float(ref["epsilon"]))
            ax.plot(
                [ref["epsilon"]],
                [ref["auroc"]],
                marker="*",
                markersize=11,
                linestyle="none",
                color="tab:purple",
                label="centralised reference (pooled data)",
            )
    ax.set_xlabel("ε this run (smaller = more private)")
    ax.set_ylabel("test AUROC")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(0, 1.25 * max(xs, default=1.0))
    ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


def render(card: Mapping[str, Any]) -> dict[str, str]:
    """Every planned figure as a base64 PNG, by name."""
    records = card["quantitative_analysis"].get("score_histograms") or {}
    hists = _usable(records)
    deltas = {s["site"]: s.get("delta") for s in card["privacy"]["sites"]}
    audit = card["privacy"]["audit"]
    audit_sites = ((audit.get("models") or {}).get("run") or {}).get("sites") or {}
    out: dict[str, str] = {}
    for figure in plan(card):
        if figure.name == "roc":
            out[figure.name] = _roc(hists, records)
        elif figure.name == "precision_recall":
            out[figure.name] = _precision_recall(hists)
        elif figure.name == "calibration":
            out[figure.name] = _calibration(hists)
        elif figure.name == "privacy_utility":
            out[figure.name] = _privacy_utility(card)
        elif figure.name.startswith("audit_roc_"):
            site = figure.name.removeprefix("audit_roc_")
            out[figure.name] = audit_roc_png(site, audit_sites[site], deltas.get(site))
    return out
