"""Mask AP through pycocotools' segm evaluation, and the per-query masks it scores (the original PostProcessSegm)."""

import contextlib
import io

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from transformers.utils import ModelOutput

from image_processing.segmentation_masks import decode_segmentation
from modeling_detr_custom import DetrCustomImageProcessor
from modeling_detr_custom.evaluation.coco_evaluator import CocoEvaluator

POLYGONS = {1: [[5.0, 5.0, 30.0, 5.0, 30.0, 25.0, 5.0, 25.0]], 2: [[35.0, 10.0, 55.0, 10.0, 45.0, 35.0]]}


def _ground_truth() -> COCO:
    annotations = []
    for image_id in (1, 2):
        for category_id, polygon in POLYGONS.items():
            mask = decode_segmentation(polygon, 40, 60, "gt")
            rows, columns = np.nonzero(mask)
            bbox = [float(columns.min()), float(rows.min()), float(np.ptp(columns) + 1), float(np.ptp(rows) + 1)]
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "category_id": category_id, "bbox": bbox,
                 "area": float(mask.sum()), "iscrowd": 0, "segmentation": polygon}
            )  # fmt: skip
    coco = COCO()
    coco.dataset = {
        "images": [{"id": i, "width": 60, "height": 40, "file_name": f"{i}.png"} for i in (1, 2)],
        "categories": [{"id": 1, "name": "box"}, {"id": 2, "name": "triangle"}],
        "annotations": annotations,
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _predictions(shift: int = 0) -> list[dict]:
    masks = np.stack([np.roll(decode_segmentation(p, 40, 60, "pred"), shift, axis=1) for p in POLYGONS.values()])
    boxes = np.array([[5, 5, 31, 26], [35, 10, 56, 36]], dtype=np.float32)
    return [
        {
            "image_id": i,
            "scores": np.array([0.9, 0.8]),
            "category_ids": np.array([1, 2]),
            "boxes": boxes,
            "masks": masks,
        }
        for i in (1, 2)
    ]


def test_perfect_masks_give_mask_ap_1_and_shifted_masks_less() -> None:
    evaluator = CocoEvaluator(_ground_truth(), iou_type="segm")
    evaluator.update(_predictions())
    assert evaluator.compute()["AP"] == pytest.approx(1.0)
    shifted = CocoEvaluator(_ground_truth(), iou_type="segm")
    shifted.update(_predictions(shift=6))
    metrics = shifted.compute()
    assert 0.0 < metrics["AP"] < 0.7 and metrics["AP50"] > metrics["AP75"]


def test_segm_predictions_without_masks_are_refused_by_name() -> None:
    evaluator = CocoEvaluator(_ground_truth(), iou_type="segm")
    prediction = _predictions()[0]
    del prediction["masks"]
    with pytest.raises(ValueError, match="image_id 1: iou_type='segm' needs 'masks'"):
        evaluator.update([prediction])
    with pytest.raises(ValueError, match="iou_type must be"):
        CocoEvaluator(_ground_truth(), iou_type="keypoints")


def test_instance_masks_follow_the_original_post_processing() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 3, generator=generator)
    pred_masks = torch.randn(2, 5, 12, 16, generator=generator)
    outputs = ModelOutput(logits=logits, pred_masks=pred_masks)
    processor = DetrCustomImageProcessor()
    results = processor.post_process_instance_masks(outputs, target_sizes=[(40, 60), (20, 30)])
    assert [r["masks"].shape for r in results] == [(5, 40, 60), (5, 20, 30)]
    expected_scores = logits.softmax(-1)[..., :-1].max(-1).values
    torch.testing.assert_close(results[0]["scores"], expected_scores[0])
    # Without resizing, the masks are the thresholded sigmoid of the logits.
    plain = processor.post_process_instance_masks(outputs, mask_threshold=0.5)[1]["masks"]
    torch.testing.assert_close(plain, pred_masks[1] > 0)
    cropped = processor.post_process_instance_masks(outputs, processed_sizes=[(48, 64), (20, 30)], threshold=0.4)
    assert cropped[1]["masks"].shape[1:] == (20, 30)
