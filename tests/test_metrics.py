import numpy as np
import pytest

import evaluate
import util


def test_per_class_accuracy_differs_from_overall():
    labels = np.array([0] * 8 + [1] * 2)
    pred = np.array([0] * 8 + [0, 0])  # every class-0 image right, every class-1 image wrong
    assert (pred == labels).mean() == pytest.approx(0.8)
    assert util.per_class_accuracy(pred, labels) == pytest.approx(0.5)


def test_per_class_accuracy_only_counts_present_classes():
    labels = np.array([3, 3, 5, 5])
    pred = np.array([3, 0, 5, 5])
    assert util.per_class_accuracy(pred, labels) == pytest.approx((0.5 + 1.0) / 2)


def test_harmonic_mean():
    assert util.harmonic_mean(0.5, 0.5) == pytest.approx(0.5)
    assert util.harmonic_mean(0.2, 0.8) == pytest.approx(0.32)
    assert util.harmonic_mean(0.0, 0.9) == 0.0
    assert util.harmonic_mean(0.0, 0.0) == 0.0


def test_best_gzsl_epoch_is_first_best_H_and_zero_when_H_never_positive():
    hist = [{"seen": 0.9, "unseen": 0.1}, {"seen": 0.5, "unseen": 0.5}, {"seen": 0.5, "unseen": 0.5}]
    assert evaluate.best_gzsl_epoch(hist) == {"U": 0.5, "S": 0.5, "H": 0.5}
    assert evaluate.best_gzsl_epoch([{"seen": 0.9, "unseen": 0.0}]) == {"U": 0.0, "S": 0.0, "H": 0.0}


def test_summary_reports_paper_and_last_rules():
    from report import summarize
    rows = [dict(iteration=10, U=40, S=60, H=48, U_last=30, S_last=60, H_last=40, T1=55, T1_last=50),
            dict(iteration=20, U=50, S=50, H=50, U_last=45, S_last=50, H_last=47.4, T1=52, T1_last=51)]
    s = summarize(rows)
    assert s["paper"] == {"iteration": 20, "U": 50, "S": 50, "H": 50, "T1": 55, "T1_iteration": 10}
    assert s["last"] == {"iteration": 20, "U": 45, "S": 50, "H": 47.4, "T1": 51}
