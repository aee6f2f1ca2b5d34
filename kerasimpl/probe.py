"""Linear probe: L2-regularised softmax regression on frozen features.

The transfer-learning literature's protocol for "how good are these
features": multinomial logistic regression on the pooled features, fitted
to convergence with L-BFGS, its L2 strength chosen on the validation split.

Reference: Kornblith, Shlens & Le, "Do Better ImageNet Models Transfer
Better?", CVPR 2019, section 3 (logistic regression, L-BFGS, L2 penalty
tuned on a validation split).
"""

from __future__ import annotations

import dataclasses

import numpy as np

# L2 strengths tried (per-example loss + l2/2 * ||W||^2 on standardised features).
DEFAULT_GRID = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


@dataclasses.dataclass(frozen=True)
class ProbeFit:
    """A fitted probe on RAW features: `logits = features @ kernel + bias`.

    Attributes:
        kernel: float32 (D, K).
        bias: float32 (K,).
        l2: the chosen L2 strength.
        table: one dict per grid point: `l2`, `loss`, `accuracy`,
            `val_loss`, `val_accuracy`, `iterations`.
    """

    kernel: np.ndarray
    bias: np.ndarray
    l2: float
    table: tuple


def fit_linear_probe(x_train, y_train, x_val, y_val, num_classes, grid=DEFAULT_GRID, max_iter=1000) -> ProbeFit:
    """Fit softmax regression for every L2 strength in `grid`; keep the best
    on validation (accuracy, then loss).

    Features are standardised with the training mean and std for a well
    conditioned problem; the returned kernel and bias fold that back in, so
    they apply to raw features (the classifier's `head` Dense layer).
    Strengths run from strong to weak, each warm-started from the last.
    """
    from scipy.optimize import minimize

    if not grid or any(float(g) < 0 for g in grid):
        raise ValueError(f"grid must hold L2 strengths >= 0. Received: grid={grid}")
    x_train, x_val = np.asarray(x_train, np.float64), np.asarray(x_val, np.float64)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    a, b = (x_train - mean) / std, (x_val - mean) / std
    y_train, y_val = np.asarray(y_train), np.asarray(y_val)
    onehot = np.eye(num_classes)[y_train]
    d = a.shape[1]
    theta = np.zeros((d + 1) * num_classes)
    rows, best = [], None
    for l2 in sorted((float(g) for g in grid), reverse=True):
        res = minimize(_objective, theta, args=(a, onehot, l2, num_classes), jac=True, method="L-BFGS-B",
                       options={"maxiter": int(max_iter)})
        theta = res.x
        w, c = _unpack(theta, d, num_classes)
        row = {"l2": l2, **_scores(a, y_train, w, c, ""), **_scores(b, y_val, w, c, "val_"),
               "iterations": int(res.nit)}
        rows.append(row)
        if best is None or (row["val_accuracy"], -row["val_loss"]) > (best[0]["val_accuracy"], -best[0]["val_loss"]):
            best = (row, w.copy(), c.copy())
    row, w, c = best
    kernel = w / std[:, None]
    bias = c - (mean / std) @ w
    return ProbeFit(kernel.astype(np.float32), bias.astype(np.float32), row["l2"], tuple(rows))


def _unpack(theta, d, k):
    return theta[: d * k].reshape(d, k), theta[d * k:]


def _objective(theta, a, onehot, l2, k):
    """Mean cross-entropy + l2/2 ||W||^2 and its gradient (bias unpenalised)."""
    n, d = a.shape
    w, c = _unpack(theta, d, k)
    z = a @ w + c
    z -= z.max(1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(1, keepdims=True)
    loss = -np.sum(onehot * np.log(np.clip(p, 1e-300, None))) / n + 0.5 * l2 * np.sum(w * w)
    g = (p - onehot) / n
    return loss, np.concatenate([(a.T @ g + l2 * w).ravel(), g.sum(0)])


def _scores(a, y, w, c, prefix):
    z = a @ w + c
    z -= z.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return {f"{prefix}loss": float(-logp[np.arange(len(y)), y].mean()),
            f"{prefix}accuracy": float((z.argmax(1) == y).mean())}
