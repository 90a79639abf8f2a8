"""SetCriterion: parity with transformers' DETR loss, empty targets, degenerate boxes, autocast, distributed."""

import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from modeling_detr_custom.model.criterion import SetCriterion
from modeling_detr_custom.model.matcher import HungarianMatcher

NUM_LABELS = 5
NUM_QUERIES = 8
# Target boxes per image on each rank of the distributed test: 3 and 7, so 10 in all and num_boxes = 10 / 2.
BOXES_PER_RANK = ([1, 2], [3, 4])


def _make_outputs(
    num_targets: list[int], num_layers: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Per-layer logits `(L, B, Q, C+1)` and boxes `(L, B, Q, 4)` requiring grad, and targets."""
    generator = torch.Generator().manual_seed(seed)
    batch_size = len(num_targets)
    logits = torch.randn(num_layers, batch_size, NUM_QUERIES, NUM_LABELS + 1, generator=generator)
    pred_boxes = torch.rand(num_layers, batch_size, NUM_QUERIES, 4, generator=generator) * 0.5 + 0.1
    targets = [
        {
            "class_labels": torch.randint(0, NUM_LABELS, (count,), generator=generator),
            "boxes": torch.rand(count, 4, generator=generator) * 0.5 + 0.1,
        }
        for count in num_targets
    ]
    return logits.requires_grad_(True), pred_boxes.requires_grad_(True), targets


def _ours(
    logits: torch.Tensor, pred_boxes: torch.Tensor, targets: list[dict[str, torch.Tensor]], **kwargs: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Our criterion on per-layer outputs: the last layer is the final output, the others auxiliary."""
    criterion = SetCriterion(NUM_LABELS, HungarianMatcher(), **kwargs)
    auxiliary_outputs = [{"logits": logits[k], "pred_boxes": pred_boxes[k]} for k in range(len(logits) - 1)]
    return criterion(logits[-1], pred_boxes[-1], targets, auxiliary_outputs or None)


def _transformers(
    logits: torch.Tensor, pred_boxes: torch.Tensor, targets: list[dict[str, torch.Tensor]]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """transformers' DETR loss (same default costs and coefficients), auxiliary loss on when there are layers."""
    from transformers import DetrConfig
    from transformers.loss.loss_for_object_detection import ForObjectDetectionLoss

    config = DetrConfig(
        num_labels=NUM_LABELS,
        auxiliary_loss=len(logits) > 1,
        decoder_layers=len(logits),
        use_timm_backbone=False,
        use_pretrained_backbone=False,
    )
    loss, loss_dict, _ = ForObjectDetectionLoss(
        logits[-1], targets, logits.device, pred_boxes[-1], config, outputs_class=logits, outputs_coord=pred_boxes
    )
    return loss, loss_dict


@pytest.mark.parametrize("num_layers", [1, 3])
def test_loss_terms_and_gradients_equal_transformers(num_layers: int) -> None:
    logits, pred_boxes, targets = _make_outputs([2, 0, 5, 8], num_layers, seed=0)
    loss, loss_dict = _ours(logits, pred_boxes, targets)
    expected_loss, expected_dict = _transformers(logits, pred_boxes, targets)

    # transformers does not log class_error; every other key is the same.
    assert set(loss_dict) - {"class_error"} == set(expected_dict)
    for name, expected in expected_dict.items():
        torch.testing.assert_close(loss_dict[name], expected.reshape(()), rtol=0, atol=1e-5, msg=name)
    torch.testing.assert_close(loss, expected_loss, rtol=0, atol=1e-5)

    gradients = torch.autograd.grad(loss, [logits, pred_boxes])
    expected_gradients = torch.autograd.grad(expected_loss, [logits, pred_boxes])
    for gradient, expected in zip(gradients, expected_gradients):
        torch.testing.assert_close(gradient, expected, rtol=0, atol=1e-5)


def test_auxiliary_keys_and_weighted_total() -> None:
    logits, pred_boxes, targets = _make_outputs([3, 1], num_layers=3, seed=1)
    coefficients = {"ce_loss_coefficient": 0.5, "bbox_loss_coefficient": 3.0, "giou_loss_coefficient": 7.0}
    loss, loss_dict = _ours(logits, pred_boxes, targets, **coefficients)

    terms = ["loss_ce", "loss_bbox", "loss_giou", "cardinality_error"]
    expected_keys = {*terms, "class_error"} | {f"{term}_{k}" for term in terms for k in range(2)}
    assert set(loss_dict) == expected_keys
    weights = {"loss_ce": 0.5, "loss_bbox": 3.0, "loss_giou": 7.0}
    expected = sum(weights[name] * loss_dict[name + suffix] for name in weights for suffix in ("", "_0", "_1"))
    torch.testing.assert_close(loss, expected)
    # Each auxiliary layer is matched on its own outputs: its terms are those of that layer used alone.
    _, layer_alone = _ours(logits[1:2], pred_boxes[1:2], targets)
    for name in terms:
        torch.testing.assert_close(loss_dict[f"{name}_1"], layer_alone[name])


def test_empty_targets_give_zero_box_losses_with_a_graph() -> None:
    logits, pred_boxes, targets = _make_outputs([0, 0], num_layers=2, seed=2)
    loss, loss_dict = _ours(logits, pred_boxes, targets)

    assert loss_dict["loss_bbox"].item() == loss_dict["loss_giou"].item() == 0.0
    assert loss_dict["loss_bbox"].requires_grad and loss_dict["loss_giou_0"].requires_grad
    # Every query is "no object"; all weights are equal, so the weighted mean is the plain mean.
    no_object = torch.full((2 * NUM_QUERIES,), NUM_LABELS)
    expected_ce = torch.nn.functional.cross_entropy(logits[-1].flatten(0, 1), no_object)
    torch.testing.assert_close(loss_dict["loss_ce"], expected_ce)
    expected_cardinality = (logits[-1].argmax(-1) != NUM_LABELS).sum(-1).float().mean()
    torch.testing.assert_close(loss_dict["cardinality_error"], expected_cardinality)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert torch.count_nonzero(pred_boxes.grad) == 0


def test_class_and_cardinality_errors_are_logged_without_gradient() -> None:
    target = {"class_labels": torch.tensor([1, 3]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.1]])}
    logits = torch.full((1, 4, NUM_LABELS + 1), -10.0)
    logits[0, :, NUM_LABELS] = 10.0  # "no object" everywhere ...
    logits[0, 0, NUM_LABELS], logits[0, 0, 1] = -10.0, 10.0  # ... but query 0 predicts target 0's class
    logits[0, 2, NUM_LABELS], logits[0, 2, 3] = -10.0, 10.0  # ... and query 2 target 1's
    pred_boxes = torch.tensor(
        [[[0.3, 0.3, 0.2, 0.2], [0.5, 0.5, 0.1, 0.1], [0.7, 0.6, 0.3, 0.1], [0.1, 0.9, 0.1, 0.1]]]
    )
    criterion = SetCriterion(NUM_LABELS, HungarianMatcher())

    _, loss_dict = criterion(logits.requires_grad_(True), pred_boxes, [target])
    assert loss_dict["class_error"].item() == 0.0 and loss_dict["cardinality_error"].item() == 0.0
    assert not loss_dict["class_error"].requires_grad and not loss_dict["cardinality_error"].requires_grad

    wrong = logits.detach().clone()
    wrong[0, 2, 3], wrong[0, 2, 0] = -10.0, 10.0  # query 2 still matched (box), but predicts the wrong class
    wrong[0, 3, NUM_LABELS], wrong[0, 3, 4] = -10.0, 10.0  # query 3 unmatched but predicts an object
    _, loss_dict = criterion(wrong, pred_boxes, [target])
    assert loss_dict["class_error"].item() == pytest.approx(50.0)
    assert loss_dict["cardinality_error"].item() == pytest.approx(1.0)


def test_degenerate_boxes_give_finite_loss_and_gradients() -> None:
    logits, _, _ = _make_outputs([3], num_layers=2, seed=3)
    pred_boxes = torch.rand(2, 1, NUM_QUERIES, 4) * 0.5 + 0.1
    pred_boxes[:, :, :4, 2:] = 0.0  # points
    pred_boxes[:, :, 4, 2] = 0.0  # zero width
    pred_boxes[:, :, 5, 3] = 0.0  # zero height
    pred_boxes[:, :, 6] = torch.tensor([0.5, 0.5, 0.0, 0.0])  # the same point as target 0
    targets = [
        {
            "class_labels": torch.tensor([0, 1, 2]),
            "boxes": torch.tensor([[0.5, 0.5, 0.0, 0.0]] * 2 + [[0.4, 0.4, 0.0, 0.2]]),
        }
    ]
    pred_boxes.requires_grad_(True)

    loss, loss_dict = _ours(logits, pred_boxes, targets)
    assert all(torch.isfinite(value).all() for value in loss_dict.values())
    loss.backward()
    assert torch.isfinite(pred_boxes.grad).all() and torch.isfinite(logits.grad).all()


def test_bf16_autocast_runs_in_float32_and_matches_float32() -> None:
    torch.manual_seed(4)
    features = torch.randn(4, 30, 16)
    class_head, box_head = torch.nn.Linear(16, NUM_LABELS + 1), torch.nn.Linear(16, 4)
    _, _, targets = _make_outputs([6, 0, 9, 12], num_layers=1, seed=4)
    criterion = SetCriterion(NUM_LABELS, HungarianMatcher())

    def heads() -> dict[str, torch.Tensor]:
        return {"logits": class_head(features), "pred_boxes": box_head(features).sigmoid()}

    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = heads()
        loss, loss_dict = criterion(outputs["logits"], outputs["pred_boxes"], targets, [outputs])
    assert outputs["logits"].dtype == torch.bfloat16
    assert loss.dtype == torch.float32 and all(value.dtype == torch.float32 for value in loss_dict.values())
    # The same bf16 outputs cast to float32 give exactly these values: nothing ran in bf16.
    outputs_fp32 = {name: value.float() for name, value in outputs.items()}
    _, loss_dict_fp32 = criterion(outputs_fp32["logits"], outputs_fp32["pred_boxes"], targets, [outputs_fp32])
    for name, value in loss_dict_fp32.items():
        torch.testing.assert_close(loss_dict[name], value, rtol=1e-6, atol=1e-6, msg=name)
    # And roughly the values of the model run entirely in float32.
    _, loss_dict_model_fp32 = criterion(*heads().values(), targets)
    for name in ("loss_ce", "loss_bbox", "loss_giou"):
        torch.testing.assert_close(loss_dict[name], loss_dict_model_fp32[name], rtol=3e-2, atol=3e-2)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in [*class_head.parameters(), *box_head.parameters()])


def test_class_weight_buffer_moves_with_the_module_but_is_not_saved() -> None:
    criterion = SetCriterion(NUM_LABELS, HungarianMatcher(), eos_coefficient=0.25)
    assert criterion.class_weight.tolist() == [1.0] * NUM_LABELS + [0.25]
    assert "class_weight" in dict(criterion.named_buffers())
    assert "class_weight" not in criterion.state_dict()
    assert criterion.to(torch.float64).class_weight.dtype == torch.float64


def test_class_weight_survives_transformers_from_pretrained(tmp_path: Path) -> None:
    """from_pretrained leaves non-persistent buffers empty; _init_weights calling reset_parameters refills them."""
    from transformers import PretrainedConfig, PreTrainedModel

    class ToyModel(PreTrainedModel):
        config_class = PretrainedConfig

        def __init__(self, config: PretrainedConfig) -> None:
            super().__init__(config)
            self.head = torch.nn.Linear(4, NUM_LABELS + 1)
            self.criterion = SetCriterion(NUM_LABELS, HungarianMatcher(), eos_coefficient=0.25)
            self.post_init()

        def _init_weights(self, module: torch.nn.Module) -> None:
            if isinstance(module, SetCriterion):
                module.reset_parameters()

    ToyModel(PretrainedConfig()).save_pretrained(tmp_path)
    loaded = ToyModel.from_pretrained(tmp_path)
    assert loaded.criterion.class_weight.tolist() == [1.0] * NUM_LABELS + [0.25]


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="num_labels"):
        SetCriterion(0, HungarianMatcher())
    with pytest.raises(ValueError, match="eos_coefficient"):
        SetCriterion(NUM_LABELS, HungarianMatcher(), eos_coefficient=-0.1)
    logits, pred_boxes, targets = _make_outputs([1, 2], num_layers=2, seed=5)
    criterion = SetCriterion(NUM_LABELS, HungarianMatcher())
    with pytest.raises(ValueError, match="num_labels \\+ 1 = 6"):
        criterion(logits[-1, ..., :-1], pred_boxes[-1], targets)
    with pytest.raises(ValueError, match=r"auxiliary_outputs\[0\]"):
        criterion(logits[-1], pred_boxes[-1], targets, [{"logits": logits[0, :1], "pred_boxes": pred_boxes[0, :1]}])
    with pytest.raises(ValueError, match=r"auxiliary_outputs\[0\] needs keys"):
        criterion(logits[-1], pred_boxes[-1], targets, [{"logits": logits[0]}])


def _distributed_worker(rank: int, world_size: int, port: int, result_dir: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        logits, pred_boxes, targets = _make_outputs(BOXES_PER_RANK[rank], num_layers=1, seed=10 + rank)
        _, loss_dict = _ours(logits, pred_boxes, targets)
        indices = HungarianMatcher()(logits[-1], pred_boxes[-1], targets)
        local_l1_sum = sum(
            (pred_boxes[-1, image, pred] - target["boxes"][matched]).abs().sum()
            for image, ((pred, matched), target) in enumerate(zip(indices, targets))
        )
        result = {"loss_bbox": loss_dict["loss_bbox"].detach(), "local_l1_sum": local_l1_sum.detach()}
        torch.save(result, Path(result_dir) / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_distributed_num_boxes_is_the_global_mean_over_processes(tmp_path: Path) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    world_size = 2
    mp.spawn(_distributed_worker, args=(world_size, port, str(tmp_path)), nprocs=world_size)

    total_boxes = sum(sum(boxes) for boxes in BOXES_PER_RANK)
    num_boxes = total_boxes / world_size  # all_reduce(SUM) / world_size, as the original
    # transformers 5.x: accelerate's reduce() already averages, and then it divides by the world size again.
    transformers_num_boxes = total_boxes / world_size / world_size
    for rank in range(world_size):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        local_l1_sum = result["local_l1_sum"].item()
        assert result["loss_bbox"].item() == pytest.approx(local_l1_sum / num_boxes, rel=1e-6)
        assert result["loss_bbox"].item() != pytest.approx(local_l1_sum / transformers_num_boxes, rel=1e-3)
        assert result["loss_bbox"].item() != pytest.approx(local_l1_sum / sum(BOXES_PER_RANK[rank]), rel=1e-3)
