"""Which evaluation is better, and when to stop: `--metric_for_best_model`, `--greater_is_better`, early stopping.

The rules are those of transformers' `Trainer` and `EarlyStoppingCallback`, so both training scripts pick `best/`
and stop alike:

- a new evaluation replaces `best/` only when it is strictly better (ties keep the earlier model);
- the early-stopping counter is reset when an evaluation beats the best so far by more than
  `--early_stopping_threshold` (compared with the best *before* this evaluation), and counts up otherwise;
  training stops when it reaches `--early_stopping_patience`.
"""

from __future__ import annotations

from modeling_detr_custom.evaluation.coco_evaluator import METRIC_NAMES
from modeling_detr_custom.evaluation.panoptic_quality import PANOPTIC_METRIC_NAMES
from modeling_detr_custom.evaluation.segmentation_loop import SEGM_METRIC_NAMES

__all__ = ["check_metric_name", "early_stopping_counter", "is_better", "metric_names", "metric_value"]


def check_metric_name(name: str, option: str = "--metric_for_best_model", task: str | None = None) -> str:
    """The metric key (`AP`, `AP50`, ...; an `eval_` prefix as the Trainer accepts it is dropped).

    Args:
        task: `"detection"` allows the bbox metrics, `"panoptic"` also PQ/SQ/RQ (all, `_th`, `_st`), `"instance"`
            also the mask AP (`segm_AP`, ...); None allows all of them.

    Raises:
        ValueError: `name` is not a metric the evaluation of `task` reports; the message lists them.
    """
    key = name[len("eval_") :] if name.startswith("eval_") else name
    allowed = metric_names(task)
    if key not in allowed:
        raise ValueError(f"{option} {name!r} is not a reported metric; choose one of {', '.join(allowed)}.")
    return key


def metric_names(task: str | None = None) -> tuple[str, ...]:
    """The scalar metrics the evaluation of `task` reports (None: of every task)."""
    names = {"detection": METRIC_NAMES, "panoptic": METRIC_NAMES + PANOPTIC_METRIC_NAMES}
    names["instance"] = METRIC_NAMES + SEGM_METRIC_NAMES
    return names[task] if task is not None else METRIC_NAMES + PANOPTIC_METRIC_NAMES + SEGM_METRIC_NAMES


def metric_value(metrics: dict[str, float], name: str) -> float:
    """The value of metric `name` (with or without `eval_`) in `metrics`."""
    return float(metrics[check_metric_name(name)])


def is_better(new: float, old: float | None, greater_is_better: bool, threshold: float = 0.0) -> bool:
    """True when `new` beats `old` by more than `threshold` (strictly; anything beats None)."""
    if old is None:
        return True
    improved = new > old if greater_is_better else new < old
    return improved and abs(new - old) > threshold


def early_stopping_counter(
    counter: int, new: float, best: float | None, greater_is_better: bool, threshold: float
) -> int:
    """The number of evaluations without improvement after one scoring `new` (`best`: the best before it)."""
    return 0 if is_better(new, best, greater_is_better, threshold) else counter + 1
