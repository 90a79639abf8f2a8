"""Panoptic quality (PQ = SQ x RQ) as the COCO panoptic evaluation (panopticapi `pq_compute`) defines it.

Per image, a predicted and a ground-truth segment of the same category match when their IoU is above 0.5 (which
makes the matching unique); the IoU's union leaves out the prediction's pixels on void (id 0, unlabelled) ground
truth. Crowd ground-truth segments are never matched and never count as false negatives; an unmatched prediction
is not a false positive when more than half of it lies on void or on a crowd region of its own category. Per
category: `PQ = sum(IoU of matches) / (TP + FP / 2 + FN / 2)`, `SQ = sum(IoU) / TP`, `RQ = TP / (TP + FP/2 + FN/2)`;
the reported values are the means over the categories that occur (TP + FP + FN > 0), for all, things and stuff.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["PANOPTIC_METRIC_NAMES", "PanopticQualityEvaluator", "format_panoptic_table"]

# The scalar results of `compute`, all / things / stuff (percent).
PANOPTIC_METRIC_NAMES = ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st")

_VOID = 0
_OFFSET = 1 << 32  # combines a ground-truth and a predicted id into one int64 key


class PanopticQualityEvaluator:
    """Accumulates per-category matches over images, then reports PQ, SQ and RQ.

    Args:
        categories: `{"id": int, "isthing": 0 | 1, "name": str}` per category (the `categories` of
            `panoptic_<split>.json`); predicted categories outside them raise.
    """

    def __init__(self, categories: Iterable[Mapping[str, Any]]) -> None:
        self.categories = {
            int(c["id"]): {"isthing": bool(c["isthing"]), "name": c.get("name", str(c["id"]))} for c in categories
        }
        if not self.categories:
            raise ValueError("PanopticQualityEvaluator needs at least one category.")
        self.stats = {key: defaultdict(float) for key in ("iou", "tp", "fp", "fn")}

    def update(
        self,
        gt_ids: np.ndarray,
        gt_segments: Sequence[Mapping[str, Any]],
        pred_ids: np.ndarray,
        pred_segments: Sequence[Mapping[str, Any]],
    ) -> None:
        """Adds one image.

        Args:
            gt_ids: `(height, width)` ground-truth segment ids; 0 (or any id not in `gt_segments`) is void.
            gt_segments: `{"id", "category_id", "iscrowd"?}` per ground-truth segment.
            pred_ids: `(height, width)` predicted segment ids; 0 = no segment.
            pred_segments: `{"id", "category_id"}` per predicted segment (ids > 0).

        Raises:
            ValueError: maps of different shapes, a predicted id that is 0 or repeated, or an unknown category.
        """
        gt_ids, pred_ids = np.asarray(gt_ids, dtype=np.int64), np.asarray(pred_ids, dtype=np.int64)
        if gt_ids.shape != pred_ids.shape:
            raise ValueError(f"gt_ids {gt_ids.shape} and pred_ids {pred_ids.shape} must have the same shape.")
        gt_info = {int(s["id"]): (int(s["category_id"]), bool(s.get("iscrowd", 0))) for s in gt_segments}
        pred_info = self._predicted(pred_segments)
        gt_ids = np.where(np.isin(gt_ids, list(gt_info)), gt_ids, _VOID)  # unknown ground-truth ids are void
        pred_ids = np.where(np.isin(pred_ids, list(pred_info)), pred_ids, _VOID)
        keys, counts = np.unique(gt_ids * _OFFSET + pred_ids, return_counts=True)
        overlap = {(int(k // _OFFSET), int(k % _OFFSET)): int(n) for k, n in zip(keys, counts)}
        gt_area, pred_area = defaultdict(int), defaultdict(int)
        for (gt, pred), count in overlap.items():
            gt_area[gt] += count
            pred_area[pred] += count
        matched_gt, matched_pred = set(), set()
        for (gt, pred), intersection in overlap.items():
            if gt == _VOID or pred == _VOID or gt_info[gt][1] or gt_info[gt][0] != pred_info[pred]:
                continue
            union = pred_area[pred] + gt_area[gt] - intersection - overlap.get((_VOID, pred), 0)
            iou = intersection / union
            if iou > 0.5:
                category = pred_info[pred]
                self.stats["tp"][category] += 1
                self.stats["iou"][category] += iou
                matched_gt.add(gt)
                matched_pred.add(pred)
        crowd_of_category = {}
        for gt, (category, crowd) in gt_info.items():
            if gt in matched_gt or gt_area[gt] == 0:
                continue
            if crowd:
                crowd_of_category[category] = gt
            else:
                self.stats["fn"][category] += 1
        for pred, category in pred_info.items():
            if pred in matched_pred or pred_area[pred] == 0:
                continue
            ignored = overlap.get((_VOID, pred), 0)
            if category in crowd_of_category:
                ignored += overlap.get((crowd_of_category[category], pred), 0)
            if ignored / pred_area[pred] > 0.5:
                continue
            self.stats["fp"][category] += 1

    def _predicted(self, pred_segments: Sequence[Mapping[str, Any]]) -> dict[int, int]:
        pred_info: dict[int, int] = {}
        for segment in pred_segments:
            segment_id, category = int(segment["id"]), int(segment["category_id"])
            if segment_id == _VOID or segment_id in pred_info:
                raise ValueError(f"Predicted segment ids must be unique and > 0; got {segment_id} again or 0.")
            if category not in self.categories:
                raise ValueError(
                    f"Predicted segment {segment_id} has category {category}, not one of {sorted(self.categories)}."
                )
            pred_info[segment_id] = category
        return pred_info

    def compute(self) -> dict[str, Any]:
        """`PQ`, `SQ`, `RQ` (percent) for all, things (`_th`) and stuff (`_st`) categories, the number of
        categories counted in each (`N`, `N_th`, `N_st`), and `per_class`: `{category_id: {"PQ", "SQ", "RQ"}}`."""
        per_class = {}
        for category in self.categories:
            tp, fp, fn = (self.stats[key][category] for key in ("tp", "fp", "fn"))
            if tp + fp + fn == 0:
                continue
            iou = self.stats["iou"][category]
            per_class[category] = {
                "PQ": 100 * iou / (tp + 0.5 * fp + 0.5 * fn),
                "SQ": 100 * iou / tp if tp else 0.0,
                "RQ": 100 * tp / (tp + 0.5 * fp + 0.5 * fn),
            }
        results: dict[str, Any] = {}
        for suffix, wanted in (("", None), ("_th", True), ("_st", False)):
            chosen = [c for c in per_class if wanted is None or self.categories[c]["isthing"] == wanted]
            for metric in ("PQ", "SQ", "RQ"):
                values = [per_class[c][metric] for c in chosen]
                results[f"{metric}{suffix}"] = float(np.mean(values)) if values else 0.0
            results[f"N{suffix}"] = len(chosen)
        results["per_class"] = per_class
        return results


def format_panoptic_table(metrics: Mapping[str, Any], per_class_key: str = "per_class") -> str:
    """A readable table of PQ, SQ and RQ (percent) for all, things and stuff, then per class when `metrics` has
    `per_class_key` (`{name or id: {"PQ", "SQ", "RQ"}}`)."""
    lines = [f"{'':<8} {'PQ':>6} {'SQ':>6} {'RQ':>6}", f"{'-' * 8} {'-' * 6} {'-' * 6} {'-' * 6}"]
    for title, suffix in (("all", ""), ("things", "_th"), ("stuff", "_st")):
        if f"PQ{suffix}" in metrics:
            values = " ".join(f"{metrics[f'{name}{suffix}']:>6.1f}" for name in ("PQ", "SQ", "RQ"))
            lines.append(f"{title:<8} {values}")
    per_class = metrics.get(per_class_key) or {}
    if per_class:
        width = max(8, *(len(str(name)) for name in per_class))
        lines += ["", f"{'class':<{width}} {'PQ':>6} {'SQ':>6} {'RQ':>6}"]
        for name, values in per_class.items():
            lines.append(f"{str(name):<{width}} " + " ".join(f"{values[key]:>6.1f}" for key in ("PQ", "SQ", "RQ")))
    return "\n".join(lines)
