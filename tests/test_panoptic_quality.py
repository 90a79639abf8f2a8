"""Panoptic quality on hand-computed cases (COCO panoptic definition: IoU > 0.5, void and crowd handling)."""

import numpy as np
import pytest

from modeling_detr_custom.evaluation.panoptic_quality import PanopticQualityEvaluator

CATEGORIES = [{"id": 1, "isthing": 1, "name": "thing"}, {"id": 2, "isthing": 0, "name": "stuff"}]


def _ground_truth() -> tuple[np.ndarray, list[dict]]:
    """10x10: thing segment 1 on rows 0-4 x columns 0-4 (25 px), stuff segment 2 on rows 5-9 (50 px), and void
    (id 0) on rows 0-4 x columns 5-9."""
    ids = np.zeros((10, 10), dtype=np.int64)
    ids[:5, :5] = 1
    ids[5:] = 2
    return ids, [{"id": 1, "category_id": 1, "iscrowd": 0}, {"id": 2, "category_id": 2, "iscrowd": 0}]


def test_perfect_predictions_score_100() -> None:
    evaluator = PanopticQualityEvaluator(CATEGORIES)
    ids, segments = _ground_truth()
    evaluator.update(ids, segments, ids, [{"id": s["id"], "category_id": s["category_id"]} for s in segments])
    result = evaluator.compute()
    assert result["PQ"] == result["SQ"] == result["RQ"] == 100.0
    assert result["N"] == 2 and result["N_th"] == 1 and result["N_st"] == 1


def test_hand_computed_void_threshold_and_false_positives() -> None:
    ids, segments = _ground_truth()
    predicted = np.zeros((10, 10), dtype=np.int64)
    predicted[:5, :4] = 7  # 20 px on the thing ...
    predicted[:5, 5] = 7  # ... and 5 px on void: IoU = 20 / (25 + 25 - 20 - 5) = 0.8, a match
    predicted[5:, :5] = 8  # stuff, 25 of 50 px: IoU = 25 / 50 = 0.5, not above 0.5: one FP and one FN
    predicted[:5, 6:] = 9  # a thing entirely on void: ignored
    evaluator = PanopticQualityEvaluator(CATEGORIES)
    evaluator.update(ids, segments, predicted, [{"id": 7, "category_id": 1}, {"id": 8, "category_id": 2},
                                               {"id": 9, "category_id": 1}])  # fmt: skip
    result = evaluator.compute()
    assert result["per_class"][1] == pytest.approx({"PQ": 80.0, "SQ": 80.0, "RQ": 100.0})
    assert result["per_class"][2] == pytest.approx({"PQ": 0.0, "SQ": 0.0, "RQ": 0.0})  # TP 0, FP 1, FN 1
    assert (result["PQ"], result["SQ"], result["RQ"]) == pytest.approx((40.0, 40.0, 50.0))
    assert (result["PQ_th"], result["PQ_st"]) == pytest.approx((80.0, 0.0))
    # A second, perfectly predicted image: the thing class has TP 2 with IoU 0.8 + 1.0.
    evaluator.update(ids, segments, ids, [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 2}])
    result = evaluator.compute()
    assert result["per_class"][1]["PQ"] == pytest.approx(90.0)
    # stuff: TP 1 (IoU 1), FP 1, FN 1: PQ = 1 / (1 + 0.5 + 0.5) = 50 %, SQ 100 %, RQ 50 %
    assert result["per_class"][2] == pytest.approx({"PQ": 50.0, "SQ": 100.0, "RQ": 50.0})


def test_crowd_regions_are_neither_missed_nor_false_positives() -> None:
    ids = np.zeros((10, 10), dtype=np.int64)
    ids[:, :5] = 3  # a crowd of things
    ids[:, 5:] = 2  # stuff
    segments = [{"id": 3, "category_id": 1, "iscrowd": 1}, {"id": 2, "category_id": 2, "iscrowd": 0}]
    predicted = np.zeros((10, 10), dtype=np.int64)
    predicted[:, :3] = 5  # a thing on its crowd (30 px, all of it): not a false positive, even unmatched
    predicted[:, 3:5] = 6  # stuff on the crowd of another category: a false positive
    predicted[:, 5:] = 2  # the stuff, perfectly
    evaluator = PanopticQualityEvaluator(CATEGORIES)
    evaluator.update(ids, segments, predicted, [{"id": 5, "category_id": 1}, {"id": 6, "category_id": 2},
                                               {"id": 2, "category_id": 2}])  # fmt: skip
    result = evaluator.compute()
    assert 1 not in result["per_class"]  # the thing category: no TP, no FP, no FN (crowd never counts)
    # stuff: TP 1 (IoU 1), FP 1 -> PQ = 1 / 1.5
    assert result["per_class"][2] == pytest.approx({"PQ": 100 / 1.5, "SQ": 100.0, "RQ": 100 / 1.5})
    assert result["N_th"] == 0 and result["PQ_th"] == 0.0


def test_bad_predictions_are_refused_by_name() -> None:
    evaluator = PanopticQualityEvaluator(CATEGORIES)
    ids, segments = _ground_truth()
    with pytest.raises(ValueError, match="category 5, not one of"):
        evaluator.update(ids, segments, ids, [{"id": 1, "category_id": 5}])
    with pytest.raises(ValueError, match="same shape"):
        evaluator.update(ids, segments, ids[:5], [])
    with pytest.raises(ValueError, match="unique and > 0"):
        evaluator.update(ids, segments, ids, [{"id": 1, "category_id": 1}, {"id": 1, "category_id": 2}])
