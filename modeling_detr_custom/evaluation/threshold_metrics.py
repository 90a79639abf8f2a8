"""What a deployed detector does at one score threshold: precision, recall, F1 and a confusion matrix.

Everything comes from pycocotools' own matching (`COCOeval.evalImgs`, area "all", 100 detections per image and
class), so the numbers agree with the AP that the same evaluation reports:

- a detection with score >= `score_threshold` is a true positive of its class when COCOeval matched it (at
  `iou_threshold`) to an object of that class, and a false positive when it matched nothing; detections
  matched to a crowd region (or a VOC "difficult" object) are ignored, as COCOeval ignores them;
- precision = TP / (TP + FP), recall = TP / objects, F1 their harmonic mean (null when undefined); "all" sums
  the counts over the classes (micro average).

The confusion matrix has one row per true class plus "background" (detections that found nothing) and one column
per predicted class plus "background" (objects nothing found). Its diagonal is exactly the true positives above;
then the remaining detections and objects of the same image are paired across classes (highest IoU first, IoU
>= `iou_threshold`, each used once): a detection of class B on an object of class A counts in row A, column B.
What stays unpaired goes to the background column (missed objects) or row (false detections). So row sums are
the objects of each class and column sums the detections of each class above the threshold.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

__all__ = ["BACKGROUND", "threshold_metrics"]

BACKGROUND = "background"


def threshold_metrics(coco_eval: COCOeval, score_threshold: float = 0.5, iou_threshold: float = 0.5) -> dict[str, Any]:
    """Precision, recall and F1 per class and overall, and the confusion matrix, at `score_threshold`.

    Args:
        coco_eval: A `COCOeval` after `evaluate()` (as `CocoEvaluator.coco_eval` holds it after `compute`).
        score_threshold: Detections with a lower score are dropped.
        iou_threshold: One of `coco_eval.params.iouThrs` (0.5, 0.55, ..., 0.95).

    Returns:
        `{"score_threshold", "iou_threshold", "precision", "recall", "f1", "tp", "fp", "fn",
        "per_class": {name: {"precision", "recall", "f1", "tp", "fp", "fn"}},
        "confusion_matrix": {"labels": [names..., "background"], "matrix": rows = true, columns = predicted}}`.

    Raises:
        ValueError: If `iou_threshold` is not one of COCOeval's thresholds, or `coco_eval` was not evaluated.
    """
    params = coco_eval.params
    matches = np.where(np.isclose(params.iouThrs, iou_threshold))[0]
    if not matches.size:
        raise ValueError(f"iou_threshold must be one of {params.iouThrs.round(2).tolist()}; got {iou_threshold}.")
    if not coco_eval.evalImgs:
        raise ValueError("Run COCOeval.evaluate() (CocoEvaluator.compute()) before asking for threshold metrics.")
    iou_index = int(matches[0])
    names = [str(coco_eval.cocoGt.cats[c]["name"]) for c in params.catIds]
    counts = np.zeros((len(names), 3), dtype=np.int64)  # per class: tp, fp, fn
    matrix = np.zeros((len(names) + 1, len(names) + 1), dtype=np.int64)
    leftovers: dict[int, tuple[list, list]] = {}  # image id -> (unmatched detections, missed objects)
    for k, entry, image_id in _entries(coco_eval):
        found, false_ids, missed_ids = _match_one(entry, score_threshold, iou_index)
        counts[k] += (len(found), len(false_ids), len(missed_ids))
        matrix[k, k] += len(found)
        dets, gts = leftovers.setdefault(image_id, ([], []))
        dets += [(k, coco_eval.cocoDt.anns[i]["bbox"]) for i in false_ids]
        gts += [(k, coco_eval.cocoGt.anns[i]["bbox"]) for i in missed_ids]
    for dets, gts in leftovers.values():
        _pair_across_classes(dets, gts, iou_threshold, matrix)
    per_class = {name: _rates(*counts[k]) for k, name in enumerate(names)}
    return {
        "score_threshold": float(score_threshold),
        "iou_threshold": float(params.iouThrs[iou_index]),
        **_rates(*counts.sum(axis=0)),
        "per_class": per_class,
        "confusion_matrix": {"labels": [*names, BACKGROUND], "matrix": matrix.tolist()},
    }


def _entries(coco_eval: COCOeval):
    """`(class index, evalImgs entry, image id)` for area "all"; entries are None where an image has neither
    objects nor detections of the class. evalImgs is ordered class, area range, image (see COCOeval.evaluate)."""
    params = coco_eval.params
    num_areas, num_images = len(params.areaRng), len(params.imgIds)
    area = params.areaRngLbl.index("all")
    for k in range(len(params.catIds)):
        for i, image_id in enumerate(params.imgIds):
            entry = coco_eval.evalImgs[(k * num_areas + area) * num_images + i]
            if entry is not None:
                yield k, entry, image_id


def _match_one(entry: dict[str, Any], score_threshold: float, iou_index: int) -> tuple[list, list, list]:
    """COCOeval's matching of one image and class at the threshold: (found object ids, ids of detections that
    matched nothing, ids of objects no kept detection matched)."""
    scores = np.asarray(entry["dtScores"], dtype=np.float64)
    kept = scores >= score_threshold
    matched = np.asarray(entry["dtMatches"])[iou_index] if len(scores) else np.zeros(0)
    ignored = np.asarray(entry["dtIgnore"])[iou_index].astype(bool) if len(scores) else np.zeros(0, dtype=bool)
    counted = kept & ~ignored
    found = {int(g) for g in matched[counted & (matched > 0)]}
    false_ids = [int(d) for d, c, m in zip(entry["dtIds"], counted, matched) if c and m == 0]
    objects = [int(g) for g, ignore in zip(entry["gtIds"], entry["gtIgnore"]) if not ignore]
    return sorted(found), false_ids, [g for g in objects if g not in found]


def _pair_across_classes(dets: list, gts: list, iou_threshold: float, matrix: np.ndarray) -> None:
    """Adds one image's leftover detections and objects to the off-diagonal and background cells."""
    background = matrix.shape[0] - 1
    used_dets, used_gts = set(), set()
    if dets and gts:
        ious = np.asarray(mask_utils.iou([b for _, b in dets], [b for _, b in gts], [0] * len(gts)))
        pairs = [(ious[d, g], d, g) for d in range(len(dets)) for g in range(len(gts))]
        for iou, d, g in sorted(pairs, key=lambda p: -p[0]):
            if iou < iou_threshold:
                break
            if d in used_dets or g in used_gts or dets[d][0] == gts[g][0]:
                continue
            used_dets.add(d)
            used_gts.add(g)
            matrix[gts[g][0], dets[d][0]] += 1
    for g, (k, _) in enumerate(gts):
        if g not in used_gts:
            matrix[k, background] += 1
    for d, (k, _) in enumerate(dets):
        if d not in used_dets:
            matrix[background, k] += 1


def _rates(tp: int, fp: int, fn: int) -> dict[str, Any]:
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    if precision is None or recall is None:
        f1 = None
    else:
        f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": int(tp), "fp": int(fp), "fn": int(fn)}
