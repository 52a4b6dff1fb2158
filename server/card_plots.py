"""The model card's figures, drawn from the card's own JSON so that anyone can redraw them.

Every curve comes from the sites' coarsened score histograms (counts of positives and negatives per
score bin, small cells merged), never from raw scores: ROC and precision-recall per site and pooled,
a reliability diagram (calibration), a privacy-utility scatter (each site's ε against its test
AUROC; sites at the same ε are drawn side by side and labelled, so none hides another) and the
membership audit's log-log ROC with the DP bound TPR ≤ e^ε·FPR + δ, its axes spanning only what the
site's audit could measure (an FPR below one over its non-members is never observed). The figures are PNGs (matplotlib's Agg backend) encoded as base64 so
the HTML card needs nothing from the network.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedward.common.score_histograms import CoarseHistogram
from fedward.server.report_audit_rows import ATTACK_NAMES

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


def roc_points(hist: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) from a coarse members/non-members histogram of rank scores (high = member)."""
    fpr, tpr, _, _ = _roc_pr(*CoarseHistogram.from_record(hist).expand())
    return fpr, tpr


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
                "Privacy against utility: each site's ε for the released model against its test "
                "AUROC (interval bars; sites at the same ε are set side by side and labelled), "
                "with the pooled AUROC and, where measured, the best baseline and the centralised "
                "reference.",
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
                    "the bound TPR ≤ e^ε·FPR + δ that the site's DP guarantee implies; the axes "
                    "start near one over the number of non-members (FPR) and members (TPR), the "
                    "smallest rates the audit can measure.",
                )
            )
    return figures


def png(fig: Any) -> str:
    """A finished figure as a base64 PNG (closed afterwards)."""
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
    return png(fig)


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
    return png(fig)


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
    return png(fig)


def _site_epsilon(site: Mapping[str, Any]) -> float | None:
    """The released model's ε at a site (older cards carry only the run's)."""
    value = site.get("epsilon_model")
    value = value if value is not None else site.get("epsilon")
    return float(value) if value is not None else None


def dodge(values: Mapping[str, float], width: float) -> dict[str, float]:
    """x positions that keep points of equal x apart: ties spread evenly over `width`, by name.

    Deterministic (sorted by name), so a redrawn card is identical; a lone point keeps its x.
    """
    groups: dict[float, list[str]] = {}
    for name, x in sorted(values.items()):
        key = next((k for k in groups if abs(k - x) <= width / 4), x)
        groups.setdefault(key, []).append(name)
    out = {}
    for names in groups.values():
        step = width / max(len(names) - 1, 1)
        for i, name in enumerate(names):
            offset = (i - (len(names) - 1) / 2) * step if len(names) > 1 else 0.0
            out[name] = values[name] + offset
    return out


def privacy_utility_figure(card: Mapping[str, Any]) -> Any:
    """Each site's ε against its test AUROC; sites at the same ε are dodged and labelled."""
    fig, ax = _axes("Privacy and utility")
    eps = {s["site"]: _site_epsilon(s) for s in card["privacy"]["sites"]}
    metrics = card["quantitative_analysis"]["performance_metrics"]
    auroc = {
        m["slice"].removeprefix("site="): m
        for m in metrics
        if m["type"] == "auroc" and m["slice"].startswith("site=")
    }
    shown = {site: e for site, e in eps.items() if e is not None and site in auroc}
    xs: list[float] = list(shown.values())
    span = max(xs, default=1.0) or 1.0
    width = 0.08 * span
    positions = dodge(shown, width)
    tied = {a for a in shown for b in shown if a != b and abs(shown[a] - shown[b]) <= width / 4}
    for site in sorted(shown):
        m = auroc[site]
        ci = m.get("confidence_interval")
        yerr = (
            [[m["value"] - ci["lower_bound"]], [ci["upper_bound"] - m["value"]]]
            if ci is not None
            else None
        )
        x = positions[site]
        ax.errorbar([x], [m["value"]], yerr=yerr, fmt="o", capsize=3, label=site)
        if site in tied:
            ax.annotate(
                site,
                (x, m["value"]),
                xytext=(0, 6),
                textcoords="offset points",
                fontsize=6,
                ha="center",
                rotation=90,
            )
    pooled = next(
        (m["value"] for m in metrics if m["type"] == "auroc" and m["slice"] == "pooled"), None
    )
    if pooled is not None:
        ax.axhline(
            pooled,
            color="black",
            linewidth=1.5,
            label="federated model, pooled (histograms; ties pull it toward 0.5)",
        )
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
    ax.set_xlabel("ε of the released model (smaller = more private)")
    ax.set_ylabel("test AUROC")
    ax.set_ylim(0, 1.02)
    right = max([*xs, *positions.values()], default=1.0)
    ax.set_xlim(min(0.0, *positions.values()), 1.25 * right if right > 0 else 1.0)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def _privacy_utility(card: Mapping[str, Any]) -> str:
    return png(privacy_utility_figure(card))


def measurable_rates(entry: Mapping[str, Any]) -> tuple[float, float] | None:
    """The smallest FPR and TPR one site's audit can measure: one over its non-members, members.

    Taken over every attack with a histogram (they share the site's members and non-members).
    """
    fpr_min = tpr_min = math.inf
    for r in (entry.get("attacks") or {}).values():
        if not r.get("hist"):
            continue
        pos, neg = CoarseHistogram.from_record(r["hist"]).expand()
        if neg.sum() > 0:
            fpr_min = min(fpr_min, 1.0 / float(neg.sum()))
        if pos.sum() > 0:
            tpr_min = min(tpr_min, 1.0 / float(pos.sum()))
    if not (math.isfinite(fpr_min) and math.isfinite(tpr_min)):
        return None
    return fpr_min, tpr_min


AXIS_MARGIN = 1.25
"""Log-axis headroom below the smallest measurable rate, so its points are not on the frame."""


def audit_roc_figure(site: str, entry: Mapping[str, Any], delta: float | None) -> Any:
    """A log-log ROC per attack with the DP bound, on the rates the site's audit can measure.

    The x axis starts just below one over the number of non-members (no smaller FPR is ever
    observed) and never cuts a measured point; the y axis likewise from the members.
    """
    fig, ax = _axes(site)
    curves = []
    for attack, r in (entry.get("attacks") or {}).items():
        if r.get("hist"):
            fpr, tpr = roc_points(r["hist"])
            keep = (fpr > 0) & (tpr > 0)
            curves.append((attack, fpr[keep], tpr[keep]))
    rates = measurable_rates(entry) or (1e-3, 1e-3)
    x_lo = min([rates[0], *(float(f.min()) for _, f, _ in curves if f.size)]) / AXIS_MARGIN
    y_lo = min([rates[1], *(float(t.min()) for _, _, t in curves if t.size)]) / AXIS_MARGIN
    grid = np.logspace(math.log10(x_lo), 0, 200)
    ax.plot(grid, grid, color="0.6", linestyle=":", label="chance")
    eps = entry.get("epsilon_accountant")
    if eps is not None:
        bound = np.minimum(1.0, math.exp(float(eps)) * grid + float(delta or 0.0))
        ax.plot(grid, bound, color="tab:red", linestyle="--", label=f"DP bound, ε={float(eps):.2f}")
    for attack, fpr, tpr in curves:
        ax.step(fpr, tpr, where="post", label=ATTACK_NAMES.get(attack, attack))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(x_lo, 1.0 * AXIS_MARGIN**0.25)
    ax.set_ylim(y_lo, 1.0 * AXIS_MARGIN**0.25)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.legend(fontsize=7, loc="lower right")
    return fig


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
            out[figure.name] = png(audit_roc_figure(site, audit_sites[site], deltas.get(site)))
    return out
