"""Box conversions, IoU and generalized IoU: known values, round trips, degenerate boxes, torchvision parity."""

import pytest
import torch
import torchvision

from modeling_detr_custom.model.box_ops import (
    box_area,
    box_cxcywh_to_xyxy,
    box_iou,
    box_xywh_to_xyxy,
    box_xyxy_to_cxcywh,
    box_xyxy_to_xywh,
    generalized_box_iou,
    paired_generalized_box_iou,
)


def _random_boxes_xyxy(num_boxes: int, generator: torch.Generator) -> torch.Tensor:
    corner = torch.rand(num_boxes, 2, generator=generator)
    size = torch.rand(num_boxes, 2, generator=generator) * 0.5 + 0.01
    return torch.cat([corner, corner + size], dim=-1)


def test_conversions_known_values() -> None:
    boxes_cxcywh = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    boxes_xyxy = torch.tensor([[0.4, 0.3, 0.6, 0.7]])
    torch.testing.assert_close(box_cxcywh_to_xyxy(boxes_cxcywh), boxes_xyxy)
    torch.testing.assert_close(box_xyxy_to_cxcywh(boxes_xyxy), boxes_cxcywh)
    torch.testing.assert_close(
        box_xyxy_to_xywh(torch.tensor([[10.0, 20.0, 40.0, 60.0]])), torch.tensor([[10.0, 20, 30, 40]])
    )
    torch.testing.assert_close(
        box_xywh_to_xyxy(torch.tensor([[10.0, 20.0, 30.0, 40.0]])), torch.tensor([[10.0, 20, 40, 60]])
    )


@pytest.mark.parametrize("shape", [(7,), (3, 5), (0,)])
def test_conversion_round_trips_keep_leading_shape(shape: tuple[int, ...]) -> None:
    generator = torch.Generator().manual_seed(0)
    boxes_xyxy = _random_boxes_xyxy(max(1, torch.Size(shape).numel()), generator)[: torch.Size(shape).numel()]
    boxes_xyxy = boxes_xyxy.reshape(*shape, 4)
    assert box_cxcywh_to_xyxy(boxes_xyxy).shape == (*shape, 4)
    torch.testing.assert_close(box_cxcywh_to_xyxy(box_xyxy_to_cxcywh(boxes_xyxy)), boxes_xyxy)
    torch.testing.assert_close(box_xywh_to_xyxy(box_xyxy_to_xywh(boxes_xyxy)), boxes_xyxy)
    boxes_cxcywh = box_xyxy_to_cxcywh(boxes_xyxy)
    torch.testing.assert_close(box_xyxy_to_cxcywh(box_cxcywh_to_xyxy(boxes_cxcywh)), boxes_cxcywh)


def test_area_and_union() -> None:
    boxes_xyxy = torch.tensor([[0.0, 0.0, 2.0, 3.0], [1.0, 1.0, 1.0, 5.0]])
    torch.testing.assert_close(box_area(boxes_xyxy), torch.tensor([6.0, 0.0]))
    # Two 2 x 2 boxes overlapping on a 1 x 2 strip: union 4 + 4 - 2.
    _, union = box_iou(torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[1.0, 0.0, 3.0, 2.0]]))
    assert union.item() == pytest.approx(6.0)


@pytest.mark.parametrize(
    ("box1", "box2", "expected_iou", "expected_giou"),
    [
        ([0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0], 1.0, 1.0),  # identical
        ([0.0, 0.0, 2.0, 2.0], [1.0, 0.0, 3.0, 2.0], 1 / 3, 1 / 3),  # half of each overlaps: 2 / 6, enclosing = union
        ([0.0, 0.0, 2.0, 2.0], [0.5, 0.5, 1.5, 1.5], 0.25, 0.25),  # contained
        ([0.0, 0.0, 1.0, 1.0], [2.0, 0.0, 3.0, 1.0], 0.0, -1 / 3),  # disjoint: union 2, enclosing 3
        ([0.0, 0.0, 1.0, 1.0], [3.0, 3.0, 4.0, 4.0], 0.0, -14 / 16),  # disjoint: union 2, enclosing 16
        ([0.0, 0.0, 1.0, 1.0], [1.0, 0.0, 2.0, 1.0], 0.0, 0.0),  # touching: enclosing = union
    ],
)
def test_iou_and_giou_known_values(
    box1: list[float], box2: list[float], expected_iou: float, expected_giou: float
) -> None:
    boxes1, boxes2 = torch.tensor([box1]), torch.tensor([box2])
    iou, _ = box_iou(boxes1, boxes2)
    assert iou.item() == pytest.approx(expected_iou, abs=1e-6)
    assert generalized_box_iou(boxes1, boxes2).item() == pytest.approx(expected_giou, abs=1e-6)
    # Symmetric.
    assert generalized_box_iou(boxes2, boxes1).item() == pytest.approx(expected_giou, abs=1e-6)


def test_far_apart_boxes_approach_minus_one() -> None:
    giou = generalized_box_iou(torch.tensor([[0.0, 0.0, 0.01, 0.01]]), torch.tensor([[0.99, 0.99, 1.0, 1.0]]))
    assert -1.0 < giou.item() < -0.999


def test_matches_torchvision_on_random_valid_boxes() -> None:
    generator = torch.Generator().manual_seed(0)
    boxes1, boxes2 = _random_boxes_xyxy(20, generator), _random_boxes_xyxy(30, generator)
    iou, _ = box_iou(boxes1, boxes2)
    torch.testing.assert_close(iou, torchvision.ops.box_iou(boxes1, boxes2), rtol=0, atol=1e-6)
    giou = generalized_box_iou(boxes1, boxes2)
    torch.testing.assert_close(giou, torchvision.ops.generalized_box_iou(boxes1, boxes2), rtol=0, atol=1e-6)
    assert (giou >= -1).all() and (giou <= 1).all()


def test_batched_pairwise_and_paired_equal_the_plain_matrix() -> None:
    generator = torch.Generator().manual_seed(1)
    boxes1 = _random_boxes_xyxy(3 * 5, generator).view(3, 5, 4)
    boxes2 = _random_boxes_xyxy(3 * 4, generator).view(3, 4, 4)
    batched = generalized_box_iou(boxes1, boxes2)
    assert batched.shape == (3, 5, 4)
    for index in range(3):
        torch.testing.assert_close(batched[index], generalized_box_iou(boxes1[index], boxes2[index]))
        torch.testing.assert_close(box_iou(boxes1, boxes2)[0][index], box_iou(boxes1[index], boxes2[index])[0])
    square = boxes2[0]
    torch.testing.assert_close(
        paired_generalized_box_iou(boxes1[0, :4], square), generalized_box_iou(boxes1[0, :4], square).diagonal()
    )


def test_degenerate_boxes_give_finite_values_and_gradients() -> None:
    boxes1 = torch.tensor(
        [
            [0.3, 0.3, 0.3, 0.3],  # a point
            [0.3, 0.3, 0.3, 0.3],  # the same point
            [0.1, 0.2, 0.1, 0.6],  # zero width
            [0.1, 0.2, 0.5, 0.2],  # zero height
            [0.2, 0.2, 0.6, 0.6],  # a normal box
        ],
        requires_grad=True,
    )
    boxes2 = boxes1.detach().clone().requires_grad_(True)
    giou = generalized_box_iou(boxes1, boxes2)
    iou, union = box_iou(boxes1, boxes2)
    paired = paired_generalized_box_iou(boxes1, boxes2)
    for values in (giou, iou, union, paired):
        assert torch.isfinite(values).all()
    (giou.sum() + iou.sum() + paired.sum()).backward()
    assert torch.isfinite(boxes1.grad).all() and torch.isfinite(boxes2.grad).all()
    # Two identical points: IoU 0 rather than NaN, and no enclosing-box penalty.
    assert iou[0, 1].item() == 0.0 and giou[0, 1].item() == 0.0
    # A zero-width box against a normal box: the standard formula (its area is 0, so the union is the box's).
    enclosing = (0.6 - 0.1) * (0.6 - 0.2)
    assert giou[2, 4].item() == pytest.approx(0.0 - (enclosing - 0.16) / enclosing, abs=1e-6)


def test_half_precision_is_computed_in_float32() -> None:
    generator = torch.Generator().manual_seed(2)
    boxes1, boxes2 = _random_boxes_xyxy(6, generator) * 0.01, _random_boxes_xyxy(6, generator) * 0.01
    giou_half = generalized_box_iou(boxes1.half(), boxes2.half())
    assert giou_half.dtype == torch.float32
    assert torch.isfinite(giou_half).all()
    torch.testing.assert_close(giou_half, generalized_box_iou(boxes1.half().float(), boxes2.half().float()))


@pytest.mark.parametrize(
    ("boxes1", "boxes2"),
    [
        (torch.zeros(3, 5), torch.zeros(2, 4)),
        (torch.zeros(4), torch.zeros(2, 4)),
        (torch.zeros(2, 3, 4), torch.zeros(3, 3, 4)),
    ],
)
def test_bad_shapes_raise(boxes1: torch.Tensor, boxes2: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="boxes"):
        generalized_box_iou(boxes1, boxes2)
    with pytest.raises(ValueError, match="boxes"):
        box_iou(boxes1, boxes2)


def test_paired_giou_needs_equal_counts() -> None:
    with pytest.raises(ValueError, match="as many boxes"):
        paired_generalized_box_iou(torch.zeros(3, 4), torch.zeros(2, 4))
