"""The pycocotools evaluator: perfect, missing, shifted and mislabelled predictions, merging, post-processing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modeling_detr_custom.data import CategoryMapping, build_coco_gt, default_processor
from modeling_detr_custom.evaluation.coco_evaluator import (
    DUPLICATE_RATE,
    METRIC_NAMES,
    CocoEvaluator,
    format_metrics_table,
    predictions_from_outputs,
)
from modeling_detr_custom.evaluation.duplicates import count_duplicates, duplicate_rate

MAPPING = CategoryMapping([3, 10], ["circle", "square"])


def _records() -> list[dict]:
    """4 images of 100x80; image 4 has no objects. Boxes are xywh, categories 3 and 10."""
    boxes = {
        1: [([10, 10, 30, 20], 3), ([50, 30, 40, 40], 10)],
        2: [([0, 0, 60, 50], 10)],
        3: [([20, 20, 10, 10], 3), ([60, 10, 20, 30], 3), ([5, 40, 30, 30], 10)],
        4: [],
    }
    annotation_id = iter(range(1, 100))
    return [
        {
            "image_id": image_id,
            "file_name": f"{image_id}.png",
            "width": 100,
            "height": 80,
            "annotations": [
                {"id": next(annotation_id), "bbox": box, "category_id": category, "area": box[2] * box[3], "iscrowd": 0}
                for box, category in objects
            ],
        }
        for image_id, objects in boxes.items()
    ]


@pytest.fixture(scope="module")
def coco_gt():
    return build_coco_gt(_records(), MAPPING)


def _predictions(shift: float = 0.0, relabel: bool = False) -> list[dict]:
    """Ground truth as predictions (contiguous labels, xyxy tensors), boxes moved right by `shift` x width."""
    predictions = []
    for record in _records():
        boxes_xyxy = [
            [x + shift * w, y, x + w + shift * w, y + h] for x, y, w, h in (a["bbox"] for a in record["annotations"])
        ]
        labels = [MAPPING.to_label(a["category_id"]) for a in record["annotations"]]
        if relabel:
            labels = [1 - label for label in labels]
        predictions.append(
            {
                "image_id": record["image_id"],
                "scores": torch.linspace(0.9, 0.5, len(labels)),
                "labels": torch.tensor(labels, dtype=torch.int64),
                "boxes": torch.tensor(boxes_xyxy, dtype=torch.float32).reshape(-1, 4),
            }
        )
    return predictions


def _evaluate(coco_gt, predictions: list[dict]) -> dict[str, float]:
    evaluator = CocoEvaluator(coco_gt, MAPPING)
    evaluator.update(predictions)
    return evaluator.compute()


def test_perfect_predictions_give_ap_1(coco_gt) -> None:
    metrics = _evaluate(coco_gt, _predictions())
    assert set(metrics) == {*METRIC_NAMES, "per_class", DUPLICATE_RATE}
    assert metrics[DUPLICATE_RATE] == 0.0  # one box per object
    for name in ("AP", "AP50", "AP75", "AR10", "AR100"):
        assert metrics[name] == pytest.approx(1.0), name


def test_duplicate_rate_counts_both_boxes_of_a_pair_above_the_drawing_threshold(coco_gt) -> None:
    predictions = _predictions()  # 4 of the 6 detections are drawn (> 0.5); those at exactly 0.5 are not
    first = predictions[0]  # image 1: its first box (30 px wide) drawn a second time, 1 px to the right
    moved = first["boxes"][0] + torch.tensor([1.0, 0.0, 1.0, 0.0])
    first.update(
        scores=torch.cat([first["scores"], torch.tensor([0.8])]),
        labels=torch.cat([first["labels"], first["labels"][:1]]),
        boxes=torch.cat([first["boxes"], moved[None]]),
    )
    assert _evaluate(coco_gt, predictions)[DUPLICATE_RATE] == pytest.approx(2 / 5)


@pytest.mark.parametrize(
    ("second_box", "second_label", "second_score", "expected"),
    [
        ([0, 0, 10, 10], 0, 0.9, (2, 2)),  # the same box twice
        ([0, 0, 10, 8], 0, 0.9, (2, 2)),  # IoU 0.8 > 0.7
        ([0, 0, 10, 7], 0, 0.9, (0, 2)),  # IoU exactly 0.7: not a duplicate
        ([0, 0, 10, 10], 1, 0.9, (0, 2)),  # another class on the same box (a confusion, not a duplicate)
        ([0, 0, 10, 10], 0, 0.5, (0, 1)),  # not above the drawing threshold: neither drawn nor counted
        ([20, 20, 30, 30], 0, 0.9, (0, 2)),  # elsewhere
    ],
)
def test_count_duplicates_by_hand(second_box: list, second_label: int, second_score: float, expected: tuple) -> None:
    scores = [0.95, second_score, 0.2]  # the third, below the threshold, overlaps both and never counts
    boxes = [[0, 0, 10, 10], second_box, [0, 0, 10, 10]]
    assert count_duplicates(scores, [0, second_label, 0], boxes) == expected


def test_duplicate_rate_over_images_and_without_detections() -> None:
    image = {
        "scores": [0.9, 0.8, 0.7],
        "labels": [0, 0, 0],
        "boxes": [[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]],
    }
    other_image = {**image, "boxes": [[0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 10]]}  # the pair is not adjacent
    assert duplicate_rate([image, other_image]) == pytest.approx(4 / 6)
    # boxes of different images never overlap each other
    single = {"scores": [0.9], "labels": [0], "boxes": [[0, 0, 10, 10]]}
    assert duplicate_rate([single, single]) == 0.0
    assert duplicate_rate([{"scores": [0.1], "labels": [0], "boxes": [[0, 0, 1, 1]]}]) == 0.0
    assert duplicate_rate([]) == 0.0


def test_no_predictions_give_0_not_a_crash(coco_gt) -> None:
    evaluator = CocoEvaluator(coco_gt, MAPPING)
    assert evaluator.compute()["AP"] == 0.0  # nothing seen: every ground-truth image, no detections
    evaluator.update([{"image_id": i, "scores": [], "labels": [], "boxes": np.zeros((0, 4))} for i in (1, 2, 3, 4)])
    metrics = evaluator.compute()
    assert metrics["AP"] == 0.0 and metrics["AP50"] == 0.0 and metrics["AR100"] == 0.0


def test_shifted_predictions_score_lower(coco_gt) -> None:
    ap = [_evaluate(coco_gt, _predictions(shift))["AP"] for shift in (0.0, 0.1, 0.3, 0.6)]
    assert ap[0] == pytest.approx(1.0) and ap[0] > ap[1] > ap[2] > ap[3]
    assert _evaluate(coco_gt, _predictions(0.6))["AP50"] == 0.0


def test_labels_are_mapped_back_to_the_data_set_ids(coco_gt) -> None:
    assert _evaluate(coco_gt, _predictions(relabel=True))["AP"] == 0.0
    evaluator = CocoEvaluator(coco_gt, MAPPING)
    evaluator.update(_predictions())
    assert {d["category_id"] for d in evaluator.detections()} == {3, 10}


def test_false_positive_on_an_image_without_objects_lowers_precision(coco_gt) -> None:
    predictions = _predictions()
    predictions[3] = {"image_id": 4, "scores": [0.95], "labels": [0], "boxes": [[10.0, 10.0, 40.0, 30.0]]}
    assert _evaluate(coco_gt, predictions)["AP"] < 1.0


def test_merging_process_results_deduplicates_image_ids(coco_gt) -> None:
    """Two processes, the distributed sampler repeating image 1 on the second: same numbers as one process."""
    predictions = _predictions(0.1)
    process_0, process_1 = CocoEvaluator(coco_gt, MAPPING), CocoEvaluator(coco_gt, MAPPING)
    process_0.update(predictions[:2])
    process_1.update(predictions[2:] + predictions[:1])
    merged = CocoEvaluator(coco_gt, MAPPING)
    merged.merge([process_0.results(), process_1.results()])
    assert len(merged.predictions) == 4
    assert merged.compute() == _evaluate(coco_gt, predictions)
    flat = CocoEvaluator(coco_gt, MAPPING)
    flat.merge(process_0.results() + process_1.results())  # what accelerate's gather_object returns
    assert flat.compute() == merged.compute()


def test_evaluates_only_the_images_it_was_given(coco_gt) -> None:
    """An evaluation over part of a split (e.g. a few eval batches) is not penalised for the rest."""
    assert _evaluate(coco_gt, _predictions()[:2])["AP"] == pytest.approx(1.0)


def test_keeps_small_cpu_arrays_not_tensors(coco_gt) -> None:
    evaluator = CocoEvaluator(coco_gt, MAPPING)
    evaluator.update(_predictions())
    for entry in evaluator.predictions.values():
        assert all(isinstance(v, (np.ndarray, np.integer)) for v in entry.values())
        assert entry["boxes"].dtype == np.float32


def test_rejects_unknown_images_and_unmappable_labels(coco_gt) -> None:
    evaluator = CocoEvaluator(coco_gt, MAPPING)
    with pytest.raises(ValueError, match="image_id 99"):
        evaluator.update([{"image_id": 99, "scores": [1.0], "labels": [0], "boxes": [[0, 0, 1, 1]]}])
    with pytest.raises(ValueError, match="outside 0..1"):
        evaluator.update([{"image_id": 1, "scores": [1.0], "labels": [2], "boxes": [[0, 0, 1, 1]]}])
    with pytest.raises(ValueError, match="CategoryMapping"):
        CocoEvaluator(coco_gt).update(_predictions())


def test_predictions_from_outputs_keep_every_query_in_original_pixels(coco_gt) -> None:
    processor = default_processor(64)
    logits = torch.full((2, 3, 3), -5.0)  # (B, Q, num_labels + 1)
    logits[0, 0, 1] = logits[1, :, 0] = 5.0
    pred_boxes = torch.tensor([[0.25, 0.5, 0.1, 0.2]]).expand(2, 3, 4)  # normalised cxcywh
    target_sizes = torch.tensor([[80, 100], [40, 50]])  # (height, width)
    predictions = predictions_from_outputs(
        {"logits": logits, "pred_boxes": pred_boxes}, processor, target_sizes, [1, 2], MAPPING
    )
    assert [len(p["scores"]) for p in predictions] == [3, 3]  # threshold 0: all queries
    np.testing.assert_allclose(predictions[0]["boxes"][0], [20.0, 32.0, 30.0, 48.0], atol=1e-4)
    np.testing.assert_allclose(predictions[1]["boxes"][0], [10.0, 16.0, 15.0, 24.0], atol=1e-4)
    assert predictions[0]["labels"][0] == 1 and predictions[0]["category_ids"][0] == 10
    assert predictions[1]["category_ids"].tolist() == [3, 3, 3]
    CocoEvaluator(coco_gt).update(predictions)  # category_ids suffice without a mapping


def test_metrics_table_lists_every_metric() -> None:
    table = format_metrics_table({name: 0.5 for name in METRIC_NAMES} | {"APl": -1.0})
    lines = table.splitlines()
    assert len(lines) == 2 + len(METRIC_NAMES)
    assert lines[2].split()[:2] == ["AP", "0.5000"] and "n/a" in table


# ---------------------------------------------------------------------------------------------------------------
# Diagnostics: per-class metrics, -1 as null, precision/recall/F1 and the confusion matrix at a score threshold
# ---------------------------------------------------------------------------------------------------------------

WITH_EMPTY_CLASS = CategoryMapping([3, 10, 42], ["circle", "square", "hexagon"])  # no object is a hexagon


def _imperfect_predictions() -> list[dict]:
    """Shifted boxes, some wrong labels, random scores and extra boxes: every per-class number strictly between 0
    and 1 and different between classes."""
    generator = torch.Generator().manual_seed(0)
    predictions = []
    for prediction in _predictions(shift=0.15):
        count = len(prediction["labels"]) + 3
        extra = torch.rand(3, 2, generator=generator) * 60
        predictions.append(
            {
                "image_id": prediction["image_id"],
                "scores": torch.rand(count, generator=generator),
                "labels": torch.cat([prediction["labels"], torch.randint(0, 3, (3,), generator=generator)]),
                "boxes": torch.cat([prediction["boxes"], torch.cat([extra, extra + 25], dim=1)]),
            }
        )
    predictions[0]["labels"][0] = 1  # a circle called a square
    return predictions


def test_per_class_metrics_equal_pycocotools_run_on_each_class_alone() -> None:
    import contextlib
    import io

    from pycocotools.cocoeval import COCOeval

    gt = build_coco_gt(_records(), WITH_EMPTY_CLASS)
    evaluator = CocoEvaluator(gt, WITH_EMPTY_CLASS)
    evaluator.update(_imperfect_predictions())
    per_class = evaluator.compute()["per_class"]
    assert list(per_class) == ["circle", "square", "hexagon"]
    coco_dt = evaluator._detections_as_coco()
    for category_id, name in zip(WITH_EMPTY_CLASS.category_ids, WITH_EMPTY_CLASS.names):
        alone = COCOeval(gt, coco_dt, iouType="bbox")
        alone.params.catIds = [category_id]
        with contextlib.redirect_stdout(io.StringIO()):
            alone.evaluate()
            alone.accumulate()
            alone.summarize()
        own = {"AP": alone.stats[0], "AP50": alone.stats[1], "AR100": alone.stats[8]}
        assert {k: per_class[name][k] for k in own} == own, name  # equal, not approximately
    assert 0 < per_class["circle"]["AP"] < 1 and per_class["circle"]["AP"] != per_class["square"]["AP"]
    assert per_class["circle"]["num_objects"] == 3 and per_class["square"]["num_objects"] == 3
    assert per_class["hexagon"] == {"AP": -1.0, "AP50": -1.0, "AR100": -1.0, "num_objects": 0}


def test_minus_one_is_null_in_json_and_absent_from_trackers() -> None:
    import json

    from modeling_detr_custom.evaluation.coco_evaluator import metrics_for_json, metrics_for_trackers

    gt = build_coco_gt(_records(), WITH_EMPTY_CLASS)
    evaluator = CocoEvaluator(gt, WITH_EMPTY_CLASS)
    evaluator.update(_imperfect_predictions())
    metrics = evaluator.compute()
    assert metrics["APl"] == -1.0  # no object above 96x96 px
    saved = json.loads(json.dumps(metrics_for_json(metrics)))
    assert saved["APl"] is None and saved["per_class"]["hexagon"]["AP"] is None
    assert saved["per_class"]["circle"]["AP"] == metrics["per_class"]["circle"]["AP"]
    logged = metrics_for_trackers(metrics, "eval/")
    assert "eval/APl" not in logged and "eval/per_class/hexagon/AP" not in logged
    assert logged["eval/per_class/square/AP50"] == metrics["per_class"]["square"]["AP50"]
    assert logged["eval/AP"] == metrics["AP"] and all(v != -1 for v in logged.values())


def test_metrics_table_has_a_row_per_class() -> None:
    gt = build_coco_gt(_records(), WITH_EMPTY_CLASS)
    evaluator = CocoEvaluator(gt, WITH_EMPTY_CLASS)
    evaluator.update(_imperfect_predictions())
    metrics = evaluator.compute()
    lines = format_metrics_table(metrics).splitlines()
    circle = next(line for line in lines if line.startswith("circle "))
    assert circle.split() == ["circle", f"{metrics['per_class']['circle']['AP']:.4f}",
                              f"{metrics['per_class']['circle']['AP50']:.4f}",
                              f"{metrics['per_class']['circle']['AR100']:.4f}", "3"]  # fmt: skip
    assert next(line for line in lines if line.startswith("hexagon ")).split() == ["hexagon", "n/a", "n/a", "n/a", "0"]


def _scene_predictions() -> list[dict]:
    """Image 1: circle found (0.9), the square called a circle (0.8), a false square on nothing (0.7), a square on
    the circle below the threshold (0.3). Image 2: its square found (0.6). Image 3: nothing found (2 circles and a
    square missed)."""
    return [
        {"image_id": 1, "scores": [0.9, 0.8, 0.7, 0.3], "labels": [0, 0, 1, 1],
         "boxes": [[10, 10, 40, 30], [50, 30, 90, 70], [0, 60, 10, 70], [10, 10, 40, 30]]},
        {"image_id": 2, "scores": [0.6], "labels": [1], "boxes": [[0, 0, 60, 50]]},
        {"image_id": 3, "scores": [], "labels": [], "boxes": np.zeros((0, 4))},
        {"image_id": 4, "scores": [], "labels": [], "boxes": np.zeros((0, 4))},
    ]  # fmt: skip


def test_precision_recall_f1_and_confusion_matrix_at_a_score_threshold() -> None:
    from modeling_detr_custom.evaluation.threshold_metrics import threshold_metrics

    evaluator = CocoEvaluator(build_coco_gt(_records(), MAPPING), MAPPING)
    evaluator.update(_scene_predictions())
    evaluator.compute()
    result = threshold_metrics(evaluator.coco_eval, score_threshold=0.5)
    # rows: true circle, square, background; columns: predicted circle, square, background
    assert result["confusion_matrix"] == {
        "labels": ["circle", "square", "background"],
        "matrix": [[1, 0, 2], [1, 1, 1], [0, 1, 0]],
    }
    circle, square = result["per_class"]["circle"], result["per_class"]["square"]
    assert (circle["tp"], circle["fp"], circle["fn"]) == (1, 1, 2)  # the square called a circle is a false circle
    assert (square["tp"], square["fp"], square["fn"]) == (1, 1, 2)
    assert circle["precision"] == 0.5 and circle["recall"] == pytest.approx(1 / 3)
    assert circle["f1"] == pytest.approx(0.4)
    assert (result["tp"], result["fp"], result["fn"]) == (2, 2, 4)
    assert result["precision"] == 0.5 and result["recall"] == pytest.approx(1 / 3)
    # a lower threshold lets the 0.3 square in: a false square on the (already found) circle
    low = threshold_metrics(evaluator.coco_eval, score_threshold=0.2)
    assert low["per_class"]["square"]["fp"] == 2 and low["confusion_matrix"]["matrix"][2] == [0, 2, 0]
    with pytest.raises(ValueError, match="iou_threshold must be one of"):
        threshold_metrics(evaluator.coco_eval, iou_threshold=0.42)


def test_plots_are_written(tmp_path) -> None:
    from PIL import Image

    from modeling_detr_custom.evaluation.plots import plot_confusion_matrix, plot_pr_curves
    from modeling_detr_custom.evaluation.threshold_metrics import threshold_metrics

    evaluator = CocoEvaluator(build_coco_gt(_records(), WITH_EMPTY_CLASS), WITH_EMPTY_CLASS)
    evaluator.update(_imperfect_predictions())
    evaluator.compute()
    at_threshold = threshold_metrics(evaluator.coco_eval)
    curves = plot_pr_curves(evaluator.coco_eval, tmp_path, at_threshold)
    assert [p.name for p in curves] == ["pr_curve_circle.png", "pr_curve_square.png", "pr_curve_hexagon.png"]
    matrix = plot_confusion_matrix(at_threshold["confusion_matrix"], tmp_path / "confusion_matrix.png")
    for path in [*curves, matrix]:
        with Image.open(path) as image:
            assert image.width >= 500 and image.height >= 400
            assert len(set(image.convert("L").getdata())) > 10  # something was drawn
