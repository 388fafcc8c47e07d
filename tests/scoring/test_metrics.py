"""Metrics: pooled r (not a mean of per-sequence r), truth scaling, digit expected values,
balanced accuracy and ROC-AUC, all checked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from autolabel.scoring.metrics import (
    balanced_accuracy,
    expected_digit,
    normalise_truth,
    pooled_pearson,
    roc_auc,
)


def test_pooled_pearson_is_hand_computed_and_not_mean_of_per_sequence_r() -> None:
    true = [np.array([0.0, 1.0]), np.array([2.0, 3.0])]
    pred = [np.array([0.0, 1.0]), np.array([3.0, 2.0])]
    # pooled: t=[0,1,2,3], p=[0,1,3,2]; cov=4, var=5 each -> r=0.8
    assert pooled_pearson(true, pred) == pytest.approx(0.8)
    per_sequence = np.mean([np.corrcoef(t, p)[0, 1] for t, p in zip(true, pred, strict=True)])
    assert per_sequence == pytest.approx(0.0)


def test_pooled_pearson_undefined_for_constant_inputs() -> None:
    assert pooled_pearson([np.array([1.0, 2.0])], [np.array([3.0, 3.0])]) is None
    assert pooled_pearson([np.zeros(4)], [np.arange(4.0)]) is None


def test_normalise_truth_uses_the_given_train_scale() -> None:
    np.testing.assert_allclose(normalise_truth([0, 2, 4, 8], scale=4.0), [0, 4.5, 9, 9])
    assert normalise_truth([1.0, 2.0], scale=0.0).tolist() == [0.0, 0.0]


def test_expected_digit_renormalises_over_digits_only() -> None:
    table = {"0": math.log(0.05), "9": math.log(0.025), " 3": math.log(0.025),
             "the": math.log(0.9)}
    # digits renormalised: 0 -> .5, 9 -> .25, 3 -> .25  =>  EV = 2.25 + 0.75
    assert expected_digit(table) == pytest.approx(3.0)
    assert expected_digit({"the": -0.1, "10": -1.0}) is None


def test_balanced_accuracy_and_auc() -> None:
    assert balanced_accuracy([1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 1]) == pytest.approx(0.625)
    assert roc_auc([1, 0, 1, 0], [0.9, 0.1, 0.4, 0.4]) == pytest.approx(0.875)
