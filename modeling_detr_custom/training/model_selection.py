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

__all__ = ["check_metric_name", "early_stopping_counter", "is_better", "metric_value"]


def check_metric_name(name: str, option: str = "--metric_for_best_model") -> str:
    """The metric key (`AP`, `AP50`, ...; an `eval_` prefix as the Trainer accepts it is dropped).

    Raises:
        ValueError: `name` is not a metric the evaluation reports; the message lists them.
    """
    key = name[len("eval_") :] if name.startswith("eval_") else name
    if key not in METRIC_NAMES:
        raise ValueError(f"{option} {name!r} is not a reported metric; choose one of {', '.join(METRIC_NAMES)}.")
    return key


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
