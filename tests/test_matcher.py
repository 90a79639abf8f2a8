"""HungarianMatcher: optimal against brute force, batched = per image, empty targets, errors, autocast."""

import itertools
from collections.abc import Callable

import pytest
import torch
import torchvision

from modeling_detr_custom.model.matcher import HungarianMatcher

NUM_LABELS = 4


def _make_batch(
    num_targets: list[int], num_queries: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, torch.Tensor]]]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(len(num_targets), num_queries, NUM_LABELS + 1, generator=generator)
    pred_boxes = torch.rand(len(num_targets), num_queries, 4, generator=generator) * 0.5 + 0.1
    targets = [
        {
            "class_labels": torch.randint(0, NUM_LABELS, (count,), generator=generator),
            "boxes": torch.rand(count, 4, generator=generator) * 0.5 + 0.1,
        }
        for count in num_targets
    ]
    return logits, pred_boxes, targets


def _reference_cost(logits: torch.Tensor, pred_boxes: torch.Tensor, target: dict[str, torch.Tensor]) -> torch.Tensor:
    """The DETR matching cost of one image, `(num_queries, n)`, written independently (torchvision GIoU)."""
    probabilities = logits.softmax(-1)[:, target["class_labels"]]
    l1 = (pred_boxes[:, None, :] - target["boxes"][None, :, :]).abs().sum(-1)
    giou = torchvision.ops.generalized_box_iou(
        torchvision.ops.box_convert(pred_boxes, "cxcywh", "xyxy"),
        torchvision.ops.box_convert(target["boxes"], "cxcywh", "xyxy"),
    )
    return -1.0 * probabilities + 5.0 * l1 - 2.0 * giou


def _brute_force_minimum(cost: torch.Tensor) -> float:
    """Smallest total cost over every one-to-one assignment of min(Q, n) pairs."""
    num_queries, num_targets = cost.shape
    if num_targets <= num_queries:  # every target gets a distinct query
        return min(
            sum(cost[query, target].item() for target, query in enumerate(queries))
            for queries in itertools.permutations(range(num_queries), num_targets)
        )
    return min(  # every query gets a distinct target
        sum(cost[query, target].item() for query, target in enumerate(chosen))
        for chosen in itertools.permutations(range(num_targets), num_queries)
    )


@pytest.mark.parametrize("seed", range(6))
def test_matching_is_optimal_against_brute_force(seed: int) -> None:
    generator = torch.Generator().manual_seed(100 + seed)
    num_queries = int(torch.randint(2, 6, (1,), generator=generator))
    num_targets = [int(n) for n in torch.randint(0, 7, (3,), generator=generator)]
    logits, pred_boxes, targets = _make_batch(num_targets, num_queries, seed)

    indices = HungarianMatcher()(logits, pred_boxes, targets)

    for image, ((pred_indices, target_indices), target) in enumerate(zip(indices, targets)):
        cost = _reference_cost(logits[image], pred_boxes[image], target)
        expected_pairs = min(num_queries, num_targets[image])
        assert len(pred_indices) == len(target_indices) == expected_pairs
        assert pred_indices.dtype == target_indices.dtype == torch.int64
        assert len(set(pred_indices.tolist())) == len(set(target_indices.tolist())) == expected_pairs
        if expected_pairs:
            assert cost[pred_indices, target_indices].sum().item() == pytest.approx(
                _brute_force_minimum(cost), abs=1e-5
            )


def test_batched_matching_equals_per_image_matching() -> None:
    num_targets = [3, 0, 8, 1, 5]
    logits, pred_boxes, targets = _make_batch(num_targets, num_queries=10, seed=0)
    matcher = HungarianMatcher()
    batched = matcher(logits, pred_boxes, targets)
    for image, target in enumerate(targets):
        (single,) = matcher(logits[image : image + 1], pred_boxes[image : image + 1], [target])
        torch.testing.assert_close(batched[image][0], single[0])
        torch.testing.assert_close(batched[image][1], single[1])


def test_query_groups_are_matched_independently() -> None:
    logits, pred_boxes, targets = _make_batch([2, 4, 0], num_queries=6, seed=3)
    logits2, pred_boxes2, _ = _make_batch([2, 4, 0], num_queries=6, seed=4)
    matcher = HungarianMatcher()
    grouped = matcher(torch.cat([logits, logits2], 1), torch.cat([pred_boxes, pred_boxes2], 1), targets, num_groups=2)
    first, second = matcher(logits, pred_boxes, targets), matcher(logits2, pred_boxes2, targets)
    for image in range(3):
        torch.testing.assert_close(grouped[image][0], torch.cat([first[image][0], second[image][0] + 6]))
        torch.testing.assert_close(grouped[image][1], torch.cat([first[image][1], second[image][1]]))


def test_empty_targets_give_empty_int64_indices() -> None:
    matcher = HungarianMatcher()
    for num_targets in ([0, 0], [0, 3]):
        logits, pred_boxes, targets = _make_batch(num_targets, num_queries=5, seed=1)
        indices = matcher(logits, pred_boxes, targets)
        pred_indices, target_indices = indices[0]
        assert pred_indices.shape == target_indices.shape == (0,)
        assert pred_indices.dtype == target_indices.dtype == torch.int64
    assert len(indices[1][0]) == 3


def test_more_targets_than_queries_matches_every_query_once() -> None:
    logits, pred_boxes, targets = _make_batch([9, 2], num_queries=4, seed=2)
    (pred_indices, target_indices), (pred_small, _) = HungarianMatcher()(logits, pred_boxes, targets)
    assert pred_indices.tolist() == [0, 1, 2, 3]
    assert len(set(target_indices.tolist())) == 4 and max(target_indices.tolist()) < 9
    assert len(pred_small) == 2


@pytest.mark.parametrize(
    ("costs", "message"),
    [
        ({"class_cost": 0, "bbox_cost": 0, "giou_cost": 0}, "all 0"),
        ({"class_cost": -1.0}, "class_cost"),
        ({"bbox_cost": float("nan")}, "bbox_cost"),
        ({"giou_cost": float("inf")}, "giou_cost"),
    ],
)
def test_bad_cost_weights_raise(costs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HungarianMatcher(**costs)


def test_nan_logits_raise_naming_image_and_queries() -> None:
    logits, pred_boxes, targets = _make_batch([2, 3], num_queries=6, seed=5)
    logits[1, 4, 0] = float("nan")
    pred_boxes[1, 2, 1] = float("inf")
    with pytest.raises(ValueError, match=r"image 1 at query indices \[2, 4\]"):
        HungarianMatcher()(logits, pred_boxes, targets)


def test_nan_target_box_is_named() -> None:
    logits, pred_boxes, targets = _make_batch([2, 3], num_queries=6, seed=5)
    targets[0]["boxes"][1, 0] = float("nan")
    with pytest.raises(ValueError, match=r"targets\[0\]\['boxes'\] must be finite"):
        HungarianMatcher()(logits, pred_boxes, targets)


def test_nan_in_an_image_without_targets_does_not_block_the_batch() -> None:
    logits, pred_boxes, targets = _make_batch([0, 3], num_queries=6, seed=6)
    logits[0] = float("nan")
    indices = HungarianMatcher()(logits, pred_boxes, targets)
    assert len(indices[0][0]) == 0 and len(indices[1][0]) == 3


def test_bf16_inputs_under_autocast_match_in_float32() -> None:
    # Large enough that costs computed in bfloat16 would change some assignments (checked for this seed).
    logits, pred_boxes, targets = _make_batch([15, 15], num_queries=40, seed=2)
    logits_bf16, pred_boxes_bf16 = logits.bfloat16(), pred_boxes.bfloat16()
    matcher = HungarianMatcher()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        indices = matcher(logits_bf16, pred_boxes_bf16, targets)
    expected = matcher(logits_bf16.float(), pred_boxes_bf16.float(), targets)
    for (pred_indices, target_indices), (expected_pred, expected_target) in zip(indices, expected):
        torch.testing.assert_close(pred_indices, expected_pred)
        torch.testing.assert_close(target_indices, expected_target)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda targets: targets[1]["class_labels"].fill_(NUM_LABELS),
            r"targets\[1\]\['class_labels'\] has ids \[4, 4, 4\] outside \[0, 4\)",
        ),
        (
            lambda targets: targets[0]["class_labels"].fill_(-1),
            r"targets\[0\]\['class_labels'\] has ids \[-1, -1\] outside",
        ),
        (lambda targets: targets[0].pop("boxes"), r"targets\[0\] is missing key 'boxes'"),
        (
            lambda targets: targets[1].update(boxes=torch.zeros(2, 4)),
            r"targets\[1\]\['boxes'\] must be a float tensor of shape \(3, 4\)",
        ),
        (
            lambda targets: targets[1].update(class_labels=torch.zeros(3)),
            r"targets\[1\]\['class_labels'\] must be an int64",
        ),
        (lambda targets: targets.pop(), "2 images"),
    ],
)
def test_bad_targets_raise(mutate: Callable[[list[dict[str, torch.Tensor]]], object], message: str) -> None:
    logits, pred_boxes, targets = _make_batch([2, 3], num_queries=6, seed=8)
    mutate(targets)
    with pytest.raises(ValueError, match=message):
        HungarianMatcher()(logits, pred_boxes, targets)


def test_bad_prediction_shapes_raise() -> None:
    logits, pred_boxes, targets = _make_batch([2, 3], num_queries=6, seed=9)
    with pytest.raises(ValueError, match="pred_boxes must have shape"):
        HungarianMatcher()(logits, pred_boxes[:, :5], targets)
    with pytest.raises(ValueError, match="num_groups"):
        HungarianMatcher()(logits, pred_boxes, targets, num_groups=4)
