from __future__ import annotations

import numpy as np
import pytest

from pipeline.components.calibration import (
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    softmax,
)


def test_fit_temperature_recovers_the_temperature_that_made_the_labels() -> None:
    """Labels drawn from softmax(z); the model reports 4 z: the fitted T undoes the 4."""
    rng = np.random.default_rng(0)
    z = rng.standard_normal((4000, 5)) * 2
    draw = rng.random((4000, 1))
    labels = (softmax(z).cumsum(axis=1) < draw).sum(axis=1)  # inverse-CDF sampling
    assert fit_temperature(4 * z, labels) == pytest.approx(4.0, rel=0.1)
    assert fit_temperature(z / 3, labels) == pytest.approx(1 / 3, rel=0.1)  # sharpened
    assert fit_temperature(np.empty((0, 5)), np.empty(0, dtype=np.int64)) == 1.0


def test_a_few_rows_all_right_do_not_make_the_model_certain() -> None:
    """5 validation rows, all right: plain NLL would send T to its bound (confidence 1.0);
    the smoothed fit stops near the rule of succession's 6 / 7."""
    logits = np.eye(5) * 2.0 + 0.1  # right, but flat: softmax gives 0.29 to the true class
    t = fit_temperature(logits, np.arange(5))
    confidence = softmax(logits, t).max(axis=1)
    assert confidence.min() > 0.8 and confidence.max() < 0.95


def test_a_sharp_model_that_is_right_keeps_its_own_confidence() -> None:
    """5 validation rows, all right with ~0.99 confidence (a saturated fine-tune): the
    smoothed fit alone would soften it to ~6/7 and worsen its calibration on test rows it
    also gets right (ECE 0.063 -> 0.131 on the real 5 x 11 headshots); T stays 1."""
    logits = np.eye(5) * 9.0
    labels = np.arange(5)
    assert fit_temperature(logits, labels) == 1.0
    test = np.eye(5)[[0, 1, 2, 3, 4, 0, 1, 2]] * 9.0  # more right answers, as sure
    truth = np.array([0, 1, 2, 3, 4, 0, 1, 2])
    ece = expected_calibration_error(softmax(test, fit_temperature(logits, labels)), truth)
    assert ece < 0.01


def test_an_overconfident_model_with_mistakes_is_softened() -> None:
    """10 rows at ~1.0 confidence, 3 of them wrong: T > 1 and the validation NLL falls."""
    labels = np.arange(10) % 5
    predicted = labels.copy()
    predicted[:3] = (labels[:3] + 1) % 5
    logits = np.eye(5)[predicted] * 12.0
    t = fit_temperature(logits, labels)
    assert t > 1.5
    nll = negative_log_likelihood
    assert nll(softmax(logits, t), labels) < nll(softmax(logits), labels) / 2


def test_ece_and_nll_on_known_cases() -> None:
    labels = np.array([0, 1, 0, 1])
    sure_right = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(sure_right, labels) == pytest.approx(0.0)
    assert negative_log_likelihood(sure_right, labels) == pytest.approx(0.0, abs=1e-9)
    # 0.8 confident everywhere, right 2 times in 4: the gap is 0.3
    probs = np.array([[0.8, 0.2], [0.8, 0.2], [0.2, 0.8], [0.2, 0.8]])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.3)
    assert negative_log_likelihood(probs, labels) == pytest.approx(
        -(np.log(0.8) * 2 + np.log(0.2) * 2) / 4
    )
    wrong_and_certain = np.array([[0.0, 1.0]])
    assert np.isfinite(negative_log_likelihood(wrong_and_certain, np.array([0])))


def test_softmax_with_temperature_keeps_the_ranking() -> None:
    logits = np.array([[2.0, 1.0, -1.0]])
    assert softmax(logits).sum() == pytest.approx(1.0)
    assert softmax(logits, 0.5).max() > softmax(logits).max() > softmax(logits, 3.0).max()
    assert softmax(logits, 3.0).argmax() == 0
