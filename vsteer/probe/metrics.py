"""AUROC and ROC points (numpy; ties handled by average ranks)."""

from __future__ import annotations

import numpy as np


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties count 1/2."""
    s, y = np.asarray(scores, np.float64), np.asarray(labels, bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def roc_points(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                np.ndarray]:
    """(fpr, tpr, thresholds), thresholds descending; 'fire' means score >= threshold."""
    s, y = np.asarray(scores, np.float64), np.asarray(labels, bool)
    thr = np.unique(s)[::-1]
    tpr = np.array([(s[y] >= t).mean() for t in thr])
    fpr = np.array([(s[~y] >= t).mean() for t in thr])
    return (np.concatenate([[0.0], fpr]), np.concatenate([[0.0], tpr]),
            np.concatenate([[np.inf], thr]))


def youden_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The threshold that maximizes TPR - FPR."""
    fpr, tpr, thr = roc_points(scores, labels)
    best = int(np.argmax(tpr[1:] - fpr[1:])) + 1
    return float(thr[best])
