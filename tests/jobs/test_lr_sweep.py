from __future__ import annotations

import numpy as np
import pytest

from jobs.stages.lr_sweep import lr_range_test, suggest


def _noisy(n: int = 120, dim: int = 16, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    # 30% of labels flipped at random: at a huge LR the head grows confident on wrong answers and the loss explodes.
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n)
    x = rng.normal(0, 1, size=(classes, dim))[y] + rng.normal(0, 1, size=(n, dim))
    flip = rng.random(n) < 0.3
    y[flip] = rng.integers(0, classes, size=int(flip.sum()))
    return x.astype(np.float32), y.astype(np.int64)


def test_range_test_suggests_a_sane_lr_from_an_exponential_sweep() -> None:
    x, y = _noisy()
    result = lr_range_test(x, y, num_classes=3, batch_size=16)
    assert result.lrs == sorted(result.lrs)
    assert result.lrs[0] == pytest.approx(1e-7) and len(result.lrs) == len(result.losses)
    assert 1e-4 < result.suggested_lr < 1.0
    assert result.suggestions["valley"] == result.suggested_lr
    assert set(result.suggestions) == {"valley", "steep", "minimum", "slide"}


def test_range_test_stops_when_the_loss_diverges() -> None:
    x, y = _noisy()
    result = lr_range_test(x, y, num_classes=3, batch_size=16, end_lr=1e4)
    assert result.diverged
    assert result.steps < 100
    assert result.losses[-1] > 4 * min(result.losses)


def test_suggestions_on_a_known_curve() -> None:
    lrs = list(np.logspace(-7, 1, 100))
    # Flat, then a clean descent between 1e-4 and 1e-2, then divergence.
    log_lr = np.log10(lrs)
    losses = list(np.where(log_lr < -4, 2.0, np.where(log_lr < -2, 2.0 - (log_lr + 4) * 0.8, 0.4 + (log_lr + 2) ** 2)))
    picks = suggest(lrs, losses)
    assert 1e-4 < picks["valley"] < 1e-2
    assert 1e-4 < picks["steep"] < 1e-2
    assert picks["minimum"] == pytest.approx(lrs[int(np.argmin(losses))] / 10)


def test_suggest_needs_enough_points() -> None:
    with pytest.raises(ValueError, match="at least 8"):
        suggest([1e-3] * 5, [1.0] * 5)


def _descent_then_climb(n: int = 100, bottom: int = 70) -> tuple[list[float], list[float]]:
    """Flat at 2.0, a straight descent of 0.03 per step from index 20 to `bottom`, then a quadratic climb."""
    i = np.arange(n)
    losses = np.where(i < 20, 2.0, 2.0 - 0.03 * (np.minimum(i, bottom) - 20)) + 0.002 * np.maximum(i - bottom, 0) ** 2
    return list(np.logspace(-7, 1, n)), list(losses)


def test_slide_picks_the_end_of_the_straight_descent_before_the_climb() -> None:
    lrs, losses = _descent_then_climb()
    picks = suggest(lrs, losses)
    # The 15-point window stops sliding once both of its ends sit on the straight descent: its right end at 69
    # (at the bottom, 70, the central slope already bends). The answer is the left edge of the last window that
    # still bent, the one ending at the bottom: index 70 - 15.
    assert picks["slide"] == pytest.approx(lrs[55])
    assert picks["slide"] < lrs[int(np.argmin(losses))]
    assert picks["minimum"] == pytest.approx(lrs[70] / 10)


def test_slide_on_a_straight_line_takes_the_first_window() -> None:
    lrs = list(np.logspace(-7, 1, 100))
    losses = list(np.linspace(3.0, 1.0, 100))  # one slope everywhere: the first window already matches
    # suggest() drops the last 5 points (as fastai does): the window ends at index 94, so its left edge is 79.
    assert suggest(lrs, losses)["slide"] == pytest.approx(lrs[79])


def test_range_test_uses_the_suggestion_the_job_asks_for() -> None:
    x, y = _noisy()
    for rule in ("steep", "slide"):  # not the default: the job's choice must reach the result
        result = lr_range_test(x, y, num_classes=3, batch_size=16, suggestion=rule)  # type: ignore[arg-type]
        assert (result.method, result.suggested_lr) == (rule, result.suggestions[rule])
