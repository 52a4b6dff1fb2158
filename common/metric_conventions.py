"""What the per-site panel, the score histograms and the pooled panel agree on.

The figures both panels state, the decision threshold accuracy is read at, the calibration bins,
and the inputs every metric accepts: 0/1 labels and probabilities of the positive class.
"""

from __future__ import annotations

import numpy as np

FIGURE_KEYS = (
    "n",
    "prevalence",
    "accuracy",
    "auroc",
    "auprc",
    "balanced_accuracy",
    "brier",
    "ece",
    "recall_at_fdr",
)
"""The figures of a panel, per site (`metric_panel`) and pooled (`pooled_panel`), in order."""

ECE_BINS = 10
"""Equal-width bins for the expected calibration error of the per-site panel."""

THRESHOLD = 0.5
"""The decision threshold of accuracy and balanced accuracy, per site and pooled."""


def checked_scores(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Refuse inputs the metrics would silently mis-handle (wrong labels, NaN, logits)."""
    y = np.asarray(y_true).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"y_true has {y.shape[0]} rows but scores has {s.shape[0]}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must hold only 0 and 1")
    if s.size and (not np.isfinite(s).all() or s.min() < 0.0 or s.max() > 1.0):
        raise ValueError("scores must be finite probabilities in [0, 1] (apply the sigmoid first)")
    return y.astype(np.int64), s
