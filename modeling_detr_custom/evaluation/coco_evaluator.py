"""COCO bbox evaluation with pycocotools, shared by every script (train, Trainer, evaluate).

    evaluator = CocoEvaluator(split.coco, split.mapping)
    for batch in loader:
        outputs = model(pixel_values=batch["pixel_values"], pixel_mask=batch["pixel_mask"])
        sizes = torch.stack([t["orig_size"] for t in batch["labels"]])
        ids = [int(t["image_id"]) for t in batch["labels"]]
        evaluator.update(predictions_from_outputs(outputs, processor, sizes, ids))
    print(format_metrics_table(evaluator.compute()))

Predictions are kept per image as small CPU numpy arrays (never device tensors), keyed by image id, so results
gathered from several processes merge by de-duplicating image ids, and the numbers do not depend on the batch
size or the number of processes.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from modeling_detr_custom.data.categories import CategoryMapping
from modeling_detr_custom.evaluation.duplicates import DUPLICATE_SCORE_THRESHOLD, duplicate_rate
from modeling_detr_custom.model.box_ops import box_xyxy_to_xywh

__all__ = [
    "DUPLICATE_RATE",
    "METRIC_NAMES",
    "PER_CLASS_METRIC_NAMES",
    "CocoEvaluator",
    "format_metrics_table",
    "metrics_for_json",
    "metrics_for_trackers",
    "per_class_metrics",
    "predictions_from_outputs",
]

# The first 9 of the 12 COCOeval.stats, in order; the 3 AR-by-area entries are not reported.
METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")
_METRIC_DESCRIPTIONS = {
    "AP": "AP @ IoU=0.50:0.95, all areas, maxDets=100",
    "AP50": "AP @ IoU=0.50",
    "AP75": "AP @ IoU=0.75",
    "APs": "AP, small objects (< 32^2 px)",
    "APm": "AP, medium objects (32^2 - 96^2 px)",
    "APl": "AP, large objects (> 96^2 px)",
    "AR1": "AR, 1 detection per image",
    "AR10": "AR, 10 detections per image",
    "AR100": "AR, 100 detections per image",
    "duplicate_rate": "detections > 0.5 overlapping one of their class (IoU > 0.7)",
}
# The mask AP of instance segmentation (evaluation/segmentation_loop.py) under the bbox names with a `segm_` prefix.
_METRIC_DESCRIPTIONS.update({f"segm_{name}": f"mask {_METRIC_DESCRIPTIONS[name]}" for name in METRIC_NAMES})
# Per class, from the same precision/recall arrays `COCOeval.summarize` averages (stats 0, 1 and 8).
PER_CLASS_METRIC_NAMES = ("AP", "AP50", "AR100")
# Reported next to the COCO metrics (evaluation/duplicates.py): lower is better.
DUPLICATE_RATE = "duplicate_rate"


class CocoEvaluator:
    """Accumulates detections and scores them with `pycocotools.cocoeval.COCOeval` (bbox, or segm for masks).

    Args:
        coco_gt: Ground truth of the evaluated split (e.g. `DetectionSplit.coco`), with the data set's own
            category ids.
        mapping: Maps predicted contiguous `labels` back to those category ids. May be omitted when every
            prediction carries `category_ids` (as `predictions_from_outputs(..., mapping=...)` returns).
        verbose: Let pycocotools print its own summary.
        iou_type: `"bbox"` (boxes) or `"segm"` (mask AP: every prediction also carries `masks`, and the ground
            truth its `segmentation`).
    """

    def __init__(
        self, coco_gt: COCO, mapping: CategoryMapping | None = None, verbose: bool = False, iou_type: str = "bbox"
    ) -> None:
        if iou_type not in ("bbox", "segm"):
            raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}.")
        self.iou_type = iou_type
        self.coco_gt = coco_gt
        self.mapping = mapping
        self.verbose = verbose
        self.predictions: dict[int, dict[str, np.ndarray]] = {}
        self.coco_eval: COCOeval | None = None  # of the last `compute`, for per-class and threshold diagnostics

    def reset(self) -> None:
        """Forgets every prediction."""
        self.predictions = {}

    def update(self, predictions: Iterable[Mapping[str, Any]]) -> None:
        """Adds the detections of some images (a later update of the same image id replaces the earlier one).

        Args:
            predictions: Per image `{"image_id": int, "scores": (n,), "labels": (n,) contiguous labels,
                "boxes": (n, 4) xyxy absolute pixels of the original image}`, tensors or arrays; optionally
                `"category_ids": (n,)` (the data set's ids), used instead of mapping `labels`; for `iou_type="segm"`
                `"masks": (n, height, width)` bool in the original image (kept as COCO RLE).

        Raises:
            ValueError: For an image id missing from the ground truth, mismatched lengths, or labels that
                cannot be mapped.
        """
        for prediction in predictions:
            entry = self._to_numpy(prediction)
            self.predictions[int(entry["image_id"])] = entry

    def compact(self, prediction: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """One image's prediction in the evaluator's own small form (CPU arrays, masks as COCO RLE): what to gather
        from every process instead of full-size masks; `update` takes it as it is."""
        return self._to_numpy(prediction)

    def results(self) -> list[dict[str, np.ndarray]]:
        """This process's predictions, small and picklable, for `merge` on the main process."""
        return list(self.predictions.values())

    def merge(self, gathered: Iterable[Mapping[str, Any] | Iterable[Mapping[str, Any]]]) -> None:
        """Adds predictions gathered from several processes: per-process lists, or one flat list.

        Image ids seen twice (a distributed sampler repeats samples to even out the last batch) count once.
        """
        for item in gathered:
            self.update([item] if isinstance(item, Mapping) else item)

    def compute(self) -> dict[str, float]:
        """COCO bbox metrics over the images seen by `update` (all ground-truth images if none were).

        Returns:
            `{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100"}` as floats in [0, 1]; -1 means
            the split has no ground truth in that area range (pycocotools' convention). No detections give 0.
            Also `"per_class"`: `{class name: {"AP", "AP50", "AR100", "num_objects"}}` (`per_class_metrics`).
            `metrics_for_json` and `metrics_for_trackers` turn -1 into null / leave it out.
            Plus `duplicate_rate` (`evaluation/duplicates.py`): the fraction of detections scored above 0.5 that
            overlap another one of their class with IoU > 0.7.
        """
        coco_dt = self._detections_as_coco()
        coco_eval = COCOeval(self.coco_gt, coco_dt, iouType=self.iou_type)
        if self.predictions:
            coco_eval.params.imgIds = sorted(self.predictions)
        output = contextlib.nullcontext() if self.verbose else contextlib.redirect_stdout(io.StringIO())
        with output:
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        self.coco_eval = coco_eval
        metrics: dict[str, Any] = {name: float(coco_eval.stats[i]) for i, name in enumerate(METRIC_NAMES)}
        metrics["per_class"] = per_class_metrics(coco_eval)
        metrics[DUPLICATE_RATE] = duplicate_rate(self.predictions.values(), DUPLICATE_SCORE_THRESHOLD)
        return metrics

    def _to_numpy(self, prediction: Mapping[str, Any]) -> dict[str, np.ndarray]:
        image_id = int(_as_array(prediction["image_id"]).reshape(-1)[0])
        if image_id not in self.coco_gt.imgs:
            raise ValueError(f"Prediction for image_id {image_id}, which is not in the ground truth of this split.")
        scores = _as_array(prediction["scores"]).astype(np.float32).reshape(-1)
        boxes_xyxy = _as_array(prediction["boxes"]).astype(np.float32).reshape(-1, 4)
        if "category_ids" in prediction:
            category_ids = _as_array(prediction["category_ids"]).astype(np.int64).reshape(-1)
        elif self.mapping is not None:
            labels = _as_array(prediction["labels"]).reshape(-1)
            category_ids = np.array([self.mapping.to_category_id(int(label)) for label in labels], dtype=np.int64)
        else:
            raise ValueError(
                "Predictions have contiguous `labels` but the evaluator has no CategoryMapping to map them to the "
                "data set's category ids: pass `mapping=` to CocoEvaluator or to predictions_from_outputs."
            )
        if not len(scores) == len(boxes_xyxy) == len(category_ids):
            raise ValueError(
                f"image_id {image_id}: {len(scores)} scores, {len(boxes_xyxy)} boxes and {len(category_ids)} labels; "
                "they must have the same length."
            )
        converted = {
            "image_id": np.int64(image_id),
            "scores": scores,
            "boxes": boxes_xyxy,
            "category_ids": category_ids,
        }
        if self.iou_type == "segm":
            rles = prediction.get("segmentation")  # already compact
            converted["segmentation"] = (
                rles if rles is not None else _masks_to_rles(prediction.get("masks"), len(scores), image_id)
            )
        return converted

    def detections(self) -> list[dict[str, Any]]:
        """The detections in COCO results format: `[{"image_id", "category_id", "bbox" (xywh), "score"}]`.

        Category ids are the data set's own, so the list can be written as a COCO detections JSON file.
        """
        detections = []
        for prediction in self.predictions.values():
            boxes_xywh = box_xyxy_to_xywh(torch.from_numpy(prediction["boxes"])).tolist()
            rles = prediction.get("segmentation", [None] * len(boxes_xywh))
            for box, score, category_id, rle in zip(
                boxes_xywh, prediction["scores"].tolist(), prediction["category_ids"], rles
            ):
                detection = {"image_id": int(prediction["image_id"]), "category_id": int(category_id), "bbox": box}
                detections.append({**detection, "score": score, **({} if rle is None else {"segmentation": rle})})
        return detections

    def _detections_as_coco(self) -> COCO:
        """The detections as a COCO results object (also when there are none, which `loadRes` rejects)."""
        annotations = [
            {**detection, "id": index, "area": _area(detection), "iscrowd": 0}
            for index, detection in enumerate(self.detections(), start=1)
        ]
        coco_dt = COCO()
        coco_dt.dataset = {
            "images": copy.deepcopy(self.coco_gt.dataset["images"]),
            "categories": copy.deepcopy(self.coco_gt.dataset["categories"]),
            "annotations": annotations,
        }
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt.createIndex()
        return coco_dt


def _area(detection: Mapping[str, Any]) -> float:
    if "segmentation" in detection:
        return float(mask_utils.area(detection["segmentation"]))
    return detection["bbox"][2] * detection["bbox"][3]


def _masks_to_rles(masks: Any, count: int, image_id: int) -> list[dict[str, Any]]:
    """`(n, height, width)` binary masks -> n COCO RLEs (`segm` evaluation needs one per prediction)."""
    if masks is None:
        raise ValueError(f"image_id {image_id}: iou_type='segm' needs 'masks' (n, height, width) in every prediction.")
    masks = _as_array(masks).astype(np.uint8)
    if masks.ndim != 3 or len(masks) != count:
        raise ValueError(f"image_id {image_id}: 'masks' has shape {masks.shape}; expected ({count}, height, width).")
    return [mask_utils.encode(np.asfortranarray(mask)) for mask in masks]


def predictions_from_outputs(
    outputs: Any,
    processor: Any,
    target_sizes: torch.Tensor | Sequence[Sequence[int]],
    image_ids: Sequence[int],
    mapping: CategoryMapping | None = None,
) -> list[dict[str, np.ndarray]]:
    """Post-processes a batch of model outputs into per-image detections for `CocoEvaluator.update`.

    Every query is kept (threshold 0): COCO AP is computed over the ranked list, as the original DETR does.

    Args:
        outputs: Model outputs with `logits` `(B, Q, num_labels + 1)` and `pred_boxes` `(B, Q, 4)`.
        processor: The image processor (`post_process_object_detection`).
        target_sizes: `(B, 2)` original `(height, width)` of each image (the labels' `orig_size`).
        image_ids: `B` image ids.
        mapping: If given, each detection also carries `category_ids` (the data set's ids).

    Returns:
        Per image `{"image_id", "scores" (Q,), "labels" (Q,), "boxes" (Q, 4) xyxy pixels}` as CPU numpy arrays,
        plus `"category_ids"` with `mapping`.
    """
    detections = processor.post_process_object_detection(outputs, threshold=0.0, target_sizes=target_sizes)
    if len(detections) != len(image_ids):
        raise ValueError(f"Got outputs for {len(detections)} images but {len(image_ids)} image ids.")
    results = []
    for image_id, detection in zip(image_ids, detections):
        labels = _as_array(detection["labels"]).astype(np.int64)
        result = {
            "image_id": np.int64(int(image_id)),
            "scores": _as_array(detection["scores"]).astype(np.float32),
            "labels": labels,
            "boxes": _as_array(detection["boxes"]).astype(np.float32),
        }
        if mapping is not None:
            result["category_ids"] = np.array([mapping.to_category_id(int(x)) for x in labels], dtype=np.int64)
        results.append(result)
    return results


def per_class_metrics(coco_eval: COCOeval) -> dict[str, dict[str, float]]:
    """AP, AP50 and AR100 of every category, from an evaluated and accumulated `COCOeval`.

    Computed from `coco_eval.eval["precision"]` `(T, R, K, A, M)` and `["recall"]` `(T, K, A, M)` exactly as
    `COCOeval.summarize` computes stats 0, 1 and 8 (area "all", 100 detections, entries of -1 left out of the
    mean), restricted to one category: the numbers equal pycocotools' own for a run on that category alone.
    -1 means the category has no (non-crowd) object in the evaluated images. `num_objects` counts those objects.

    Returns:
        `{category name: {"AP", "AP50", "AR100", "num_objects"}}` in category id order.
    """
    params = coco_eval.params
    precision, recall = coco_eval.eval["precision"], coco_eval.eval["recall"]
    area = params.areaRngLbl.index("all")
    max_dets = params.maxDets.index(100)
    iou_50 = np.where(params.iouThrs == 0.5)[0]
    image_ids = set(params.imgIds)
    result = {}
    for k, category_id in enumerate(params.catIds):
        annotations = coco_eval.cocoGt.loadAnns(coco_eval.cocoGt.getAnnIds(catIds=[category_id], iscrowd=False))
        result[str(coco_eval.cocoGt.cats[category_id]["name"])] = {
            "AP": _mean_of_valid(precision[:, :, k, area, max_dets]),
            "AP50": _mean_of_valid(precision[iou_50, :, k, area, max_dets]),
            "AR100": _mean_of_valid(recall[:, k, area, max_dets]),
            "num_objects": sum(1 for a in annotations if a["image_id"] in image_ids),
        }
    return result


def _mean_of_valid(values: np.ndarray) -> float:
    """`COCOeval.summarize`'s rule: the mean over entries > -1, or -1 when there are none."""
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def metrics_for_json(metrics: Any) -> Any:
    """The metrics with pycocotools' -1 ("no ground truth in that range") as None, so JSON says `null`."""
    if isinstance(metrics, Mapping):
        return {key: metrics_for_json(value) for key, value in metrics.items()}
    if isinstance(metrics, (list, tuple)):
        return [metrics_for_json(value) for value in metrics]
    if isinstance(metrics, float) and metrics == -1.0:
        return None
    return metrics


def metrics_for_trackers(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Flat scalar metrics for TensorBoard / W&B: -1 and None left out, `per_class` as `per_class/<name>/AP`."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            flat.update(metrics_for_trackers(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and value != -1:
            flat[f"{prefix}{key}"] = value
    return flat


def format_metrics_table(metrics: Mapping[str, Any]) -> str:
    """A readable table of the metrics (`METRIC_NAMES` first, in order, then any other scalars), followed by a
    per-class table (AP, AP50, AR100, number of objects) when `metrics` has `per_class`."""
    names = [n for n in METRIC_NAMES if n in metrics]
    names += [n for n in metrics if n not in METRIC_NAMES and not isinstance(metrics[n], Mapping)]
    width = max(7, *(len(name) for name in names)) if names else 7
    lines = [f"{'metric':<{width}} {'value':>7}  description", f"{'-' * width} {'-' * 7}  {'-' * 42}"]
    for name in names:
        lines.append(f"{name:<{width}} {_shown(metrics[name]):>7}  {_METRIC_DESCRIPTIONS.get(name, '')}".rstrip())
    per_class = metrics.get("per_class")
    if per_class:
        width = max(12, *(len(name) for name in per_class))
        lines += ["", f"{'class':<{width}} {'AP':>7} {'AP50':>7} {'AR100':>7} {'objects':>8}"]
        lines.append(f"{'-' * width} {'-' * 7} {'-' * 7} {'-' * 7} {'-' * 8}")
        for name, values in per_class.items():
            shown = " ".join(f"{_shown(values.get(key)):>7}" for key in PER_CLASS_METRIC_NAMES)
            lines.append(f"{name:<{width}} {shown} {values.get('num_objects', ''):>8}")
    return "\n".join(lines)


def _shown(value: float | None) -> str:
    return "n/a" if value is None or value < 0 else f"{value:.4f}"


def _as_array(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.float64 if value.is_floating_point() else torch.int64).numpy()
    return np.asarray(value)
