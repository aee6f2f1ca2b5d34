"""Linear probe: L2 softmax regression on features, strength chosen on validation."""

import numpy as np
import pytest

from kerasimpl.probe import _objective, fit_linear_probe


def blobs(n, d=12, k=3, noise=1.0, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2.0, (k, d))
    y = np.arange(n) % k
    x = centres[y] + rng.normal(0, noise, (n, d)) + 5.0  # offset: raw features are not centred
    return x * rng.uniform(0.1, 10, d), y  # and of very different scales


def test_objective_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    a, y = rng.normal(size=(20, 4)), np.arange(20) % 3
    onehot = np.eye(3)[y]
    theta = rng.normal(size=(4 + 1) * 3)
    _, grad = _objective(theta, a, onehot, 0.1, 3)
    eps = 1e-6
    numeric = [(_objective(theta + eps * e, a, onehot, 0.1, 3)[0] - _objective(theta - eps * e, a, onehot, 0.1, 3)[0])
               / (2 * eps) for e in np.eye(len(theta))]
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-8)


def test_probe_solves_the_regularised_problem_on_raw_features():
    """The returned raw-feature kernel/bias, mapped back to standardised
    features, is a stationary point of the penalised loss (the optimum: the
    problem is strictly convex)."""
    x, y = blobs(300, noise=3.0)
    fit = fit_linear_probe(x, y, x[:60], y[:60], 3, grid=(1e-2,))
    mean, std = x.mean(0), x.std(0) + 1e-6
    w = fit.kernel.astype(np.float64) * std[:, None]
    c = fit.bias.astype(np.float64) + mean @ fit.kernel.astype(np.float64)
    _, grad = _objective(np.concatenate([w.ravel(), c]), (x - mean) / std, np.eye(3)[y], 1e-2, 3)
    assert np.abs(grad).max() < 1e-4


def test_probe_picks_the_strength_with_the_best_validation_accuracy():
    x, y = blobs(240, noise=2.0, seed=1)
    x_train, y_train, x_val, y_val = x[:150], y[:150], x[150:], y[150:]
    fit = fit_linear_probe(x_train, y_train, x_val, y_val, 3)
    table = list(fit.table)
    assert [r["l2"] for r in table] == sorted((r["l2"] for r in table), reverse=True)
    best = max(r["val_accuracy"] for r in table)
    chosen = next(r for r in table if r["l2"] == fit.l2)
    assert chosen["val_accuracy"] == best
    logits = x_val @ fit.kernel + fit.bias  # raw features in, as the classifier's Dense does
    assert (logits.argmax(1) == y_val).mean() == pytest.approx(chosen["val_accuracy"], abs=1e-9)
    assert best > 0.8  # the blobs are separable enough


def test_bad_grid_is_refused():
    x, y = blobs(30)
    with pytest.raises(ValueError, match="grid must hold"):
        fit_linear_probe(x, y, x, y, 3, grid=())
