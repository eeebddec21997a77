"""PCC, SCC, RMSE against hand computations, and NaN with a reason where undefined."""

from __future__ import annotations

import math

import pytest

from pronunciation.metrics import evaluate, pcc, rmse, scc


def test_known_values() -> None:
    pred, gold = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 5.0, 9.0]
    # Hand computation: means 2.5 and 5; deviations (-1.5,-.5,.5,1.5) and (-3,-1,0,4);
    # cov sum 4.5+0.5+0+6 = 11; sqrt(5 * 26) = sqrt(130).
    assert pcc(pred, gold) == pytest.approx(11 / math.sqrt(130))
    assert scc(pred, gold) == pytest.approx(1.0)
    # errors (1,2,2,5): sqrt((1+4+4+25)/4)
    assert rmse(pred, gold) == pytest.approx(math.sqrt(34 / 4))
    assert scc([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    m = evaluate(pred, gold)
    assert m.n == 4 and m.reason is None and m.pcc == pytest.approx(11 / math.sqrt(130))


def test_constant_gold_is_nan_with_reason() -> None:
    m = evaluate([9, 10, 8, 10], [10, 10, 10, 10])  # completeness in the paper
    assert math.isnan(m.pcc) and math.isnan(m.scc)
    assert m.reason == "gold scores are constant (all 10)"
    assert m.rmse == pytest.approx(math.sqrt(5 / 4))
    assert math.isnan(pcc([9, 10], [10, 10])) and math.isnan(scc([9, 10], [10, 10]))


def test_constant_predictions_and_small_n() -> None:
    assert evaluate([7, 7, 7], [1, 2, 3]).reason == "predictions are constant (all 7)"
    m = evaluate([3.0], [4.0])
    assert math.isnan(m.pcc) and "n=1" in (m.reason or "") and m.rmse == 1.0
    m = evaluate([], [])
    assert m.n == 0 and math.isnan(m.rmse) and math.isnan(m.scc)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="2 predictions but 3"):
        evaluate([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="finite"):
        evaluate([1, float("nan")], [1, 2])


def test_metric_json_has_null_for_nan() -> None:
    assert '"pcc":null' in evaluate([1, 2], [3, 3]).model_dump_json()
