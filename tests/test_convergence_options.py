"""Opt-in convergence speed-ups: query groups (Group DETR), query anchor boxes, and the sigmoid focal loss with its
matching cost.

Their defaults must leave the original DETR untouched (no new weights, same outputs and loss); turned on, group 0
alone must be what inference sees, and the focal terms must equal the textbook formulas.
"""

import dataclasses
import math

import pytest
import torch

from modeling_detr_custom import DetrCustomConfig, DetrCustomForObjectDetection
from modeling_detr_custom.model.box_ops import box_cxcywh_to_xyxy
from modeling_detr_custom.model.box_refinement import refine_boxes
from modeling_detr_custom.model.criterion import SetCriterion, sigmoid_focal_loss, varifocal_loss
from modeling_detr_custom.model.denoising import DenoisingQueries, decode_denoising
from modeling_detr_custom.model.matcher import HungarianMatcher
from modeling_detr_custom.model.query_anchors import grid_anchor_boxes
from tests.conftest import make_labels, make_pixel_inputs, make_tiny_config

NUM_GROUPS = 3
# Without dropout a model with frozen BatchNorm computes the same function in train and eval mode.
DETERMINISTIC = {"dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0}


def _model(**overrides: object) -> DetrCustomForObjectDetection:
    torch.manual_seed(0)
    return DetrCustomForObjectDetection(make_tiny_config(**{**DETERMINISTIC, **overrides}))


def test_defaults_add_no_weights_and_keep_the_original_loss() -> None:
    config = DetrCustomConfig()
    assert (config.num_query_groups, config.class_loss_type) == (1, "cross_entropy")
    model = _model()
    assert not any("extra_query" in name or "anchor" in name for name in model.state_dict())
    assert model.criterion.class_loss_type == "cross_entropy"
    assert model.criterion.matcher.class_cost_type == "probability"


def test_query_groups_train_on_all_groups_and_infer_with_group_zero_only() -> None:
    model = _model(num_query_groups=NUM_GROUPS)
    num_queries = model.config.num_queries
    assert model.model.extra_query_position_embeddings.weight.shape == ((NUM_GROUPS - 1) * num_queries, 32)
    inputs = make_pixel_inputs()

    training = model.train()(**inputs)
    assert training.logits.shape == (2, NUM_GROUPS * num_queries, 4)
    assert training.pred_boxes.shape == (2, NUM_GROUPS * num_queries, 4)
    assert all(aux["logits"].shape == training.logits.shape for aux in training.auxiliary_outputs)

    with torch.no_grad():
        inference = model.eval()(**inputs)
    assert inference.logits.shape == (2, num_queries, 4)
    torch.testing.assert_close(training.logits[:, :num_queries], inference.logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(training.pred_boxes[:, :num_queries], inference.pred_boxes, rtol=1e-4, atol=1e-5)


def test_query_groups_do_not_attend_to_each_other() -> None:
    """Group g in training gives what a one-group model whose query table is group g's gives alone."""
    model = _model(num_query_groups=NUM_GROUPS).train()
    num_queries = model.config.num_queries
    inputs = make_pixel_inputs()
    grouped = model(**inputs)

    single = _model().train()
    state = {k: v for k, v in model.state_dict().items() if "extra_query" not in k}
    single.load_state_dict(state)
    extra_queries = model.model.extra_query_position_embeddings.weight.detach()
    for group in range(1, NUM_GROUPS):
        with torch.no_grad():
            single.model.query_position_embeddings.weight.copy_(extra_queries.view(-1, num_queries, 32)[group - 1])
        alone = single(**inputs)
        group_slice = slice(group * num_queries, (group + 1) * num_queries)
        torch.testing.assert_close(grouped.logits[:, group_slice], alone.logits, rtol=1e-4, atol=1e-5)


def test_group_model_checkpoint_serves_a_standard_model(tmp_path) -> None:
    """Dropping the extra query table leaves a checkpoint that a plain DETR of the same size loads and runs."""
    model = _model(num_query_groups=NUM_GROUPS).eval()
    model.save_pretrained(tmp_path / "groups")
    reloaded = DetrCustomForObjectDetection.from_pretrained(tmp_path / "groups").eval()
    inputs = make_pixel_inputs()
    with torch.no_grad():
        expected = model(**inputs).logits
        torch.testing.assert_close(reloaded(**inputs).logits, expected)
        plain = _model().eval()
        missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
        assert missing == [] and unexpected == ["model.extra_query_position_embeddings.weight"]
        torch.testing.assert_close(plain(**inputs).logits, expected)


@pytest.mark.parametrize("class_loss_type", ["cross_entropy", "sigmoid_focal"])
def test_grouped_loss_is_the_mean_of_the_per_group_losses(class_loss_type: str) -> None:
    generator = torch.Generator().manual_seed(0)
    batch_size, num_queries, num_labels = 3, 5, 4
    logits = torch.randn(batch_size, NUM_GROUPS * num_queries, num_labels + 1, generator=generator)
    pred_boxes = 0.1 + 0.5 * torch.rand(batch_size, NUM_GROUPS * num_queries, 4, generator=generator)
    auxiliary = [{"logits": logits.flip(1), "pred_boxes": pred_boxes.flip(1)}]
    targets = make_labels((2, 0, 7), num_labels=num_labels, seed=1)  # 7 > num_queries: every query is matched
    cost_type = "focal" if class_loss_type == "sigmoid_focal" else "probability"
    criterion = SetCriterion(num_labels, HungarianMatcher(class_cost_type=cost_type), class_loss_type=class_loss_type)

    _, grouped = criterion(logits, pred_boxes, targets, auxiliary, num_query_groups=NUM_GROUPS)
    per_group = []
    for group in range(NUM_GROUPS):
        part = slice(group * num_queries, (group + 1) * num_queries)
        aux_part = [{key: value[:, part] for key, value in auxiliary[0].items()}]
        per_group.append(criterion(logits[:, part], pred_boxes[:, part], targets, aux_part)[1])
    for name in ("loss_ce", "loss_bbox", "loss_giou", "cardinality_error", "loss_ce_0", "loss_bbox_0", "loss_giou_0"):
        expected = torch.stack([losses[name] for losses in per_group]).mean()
        torch.testing.assert_close(grouped[name], expected, msg=name)


def test_sigmoid_focal_loss_equals_the_formula() -> None:
    logits = torch.tensor([[2.0, -1.0], [0.5, -3.0]])
    is_target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    alpha, gamma = 0.25, 2.0
    expected = torch.empty(2, 2)
    for index in range(4):
        z, y = logits.flatten()[index].item(), is_target.flatten()[index].item()
        p = 1 / (1 + math.exp(-z))
        if y == 1:
            expected.view(-1)[index] = -alpha * (1 - p) ** gamma * math.log(p)
        else:
            expected.view(-1)[index] = -(1 - alpha) * p**gamma * math.log(1 - p)
    torch.testing.assert_close(sigmoid_focal_loss(logits, is_target, alpha, gamma), expected)
    # gamma 0 and alpha 0.5 leave half the binary cross-entropy.
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, is_target, reduction="none")
    torch.testing.assert_close(sigmoid_focal_loss(logits, is_target, 0.5, 0.0), 0.5 * bce)


def test_focal_criterion_loss_by_hand() -> None:
    """Two queries, one target matched to query 1 by its box: every (query, class) pair is a binary problem."""
    logits = torch.tensor([[[0.3, -0.2, 5.0], [1.5, -1.0, -5.0]]])  # (1, 2, 2 + 1); no-object column ignored
    pred_boxes = torch.tensor([[[0.2, 0.2, 0.1, 0.1], [0.6, 0.6, 0.3, 0.3]]])
    targets = [{"class_labels": torch.tensor([0]), "boxes": torch.tensor([[0.6, 0.6, 0.3, 0.3]])}]
    matcher = HungarianMatcher(class_cost=1.0, bbox_cost=5.0, giou_cost=2.0, class_cost_type="focal")
    criterion = SetCriterion(2, matcher, class_loss_type="sigmoid_focal", focal_alpha=0.25, focal_gamma=2.0)
    _, loss_dict = criterion(logits, pred_boxes, targets)

    def focal(z: float, positive: bool) -> float:
        p = 1 / (1 + math.exp(-z))
        return -0.25 * (1 - p) ** 2 * math.log(p) if positive else -0.75 * p**2 * math.log(1 - p)

    expected = focal(0.3, False) + focal(-0.2, False) + focal(1.5, True) + focal(-1.0, False)  # / num_boxes = 1
    torch.testing.assert_close(loss_dict["loss_ce"], torch.tensor(expected))
    torch.testing.assert_close(loss_dict["loss_bbox"], torch.tensor(0.0))
    assert loss_dict["class_error"].item() == 0.0


def test_focal_matching_cost_uses_sigmoid_scores_not_the_softmax() -> None:
    """Query 0 has a high sigmoid score for class 0 but shares its softmax with class 1; query 1 the opposite.
    Only the classification cost decides (box costs 0), so the two costs choose different queries."""
    logits = torch.tensor([[[2.0, 2.0, -9.0], [0.0, -9.0, -9.0]]])
    pred_boxes = torch.full((1, 2, 4), 0.5)
    targets = [{"class_labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    costs = {"class_cost": 1.0, "bbox_cost": 0.0, "giou_cost": 0.0}
    ((focal_queries, _),) = HungarianMatcher(**costs, class_cost_type="focal")(logits, pred_boxes, targets)
    ((softmax_queries, _),) = HungarianMatcher(**costs)(logits, pred_boxes, targets)
    assert focal_queries.tolist() == [0]
    assert softmax_queries.tolist() == [1]


def test_focal_model_pins_the_no_object_logit_and_starts_at_the_prior() -> None:
    model = _model(class_loss_type="sigmoid_focal").eval()
    with torch.no_grad():
        outputs = model(**make_pixel_inputs())
    assert torch.equal(outputs.logits[..., -1], torch.zeros_like(outputs.logits[..., -1]))
    bias = model.class_labels_classifier.bias[:-1]
    torch.testing.assert_close(bias.sigmoid(), torch.full_like(bias, 0.01))
    # The softmax post-processing then gives scores close to the sigmoid ones (one class dominates here).
    scores = outputs.logits.softmax(-1)[..., :-1]
    torch.testing.assert_close(scores, outputs.logits[..., :-1].sigmoid(), rtol=0.1, atol=0.01)


def test_focal_model_trains_with_labels() -> None:
    model = _model(class_loss_type="sigmoid_focal", num_query_groups=2).train()
    outputs = model(**make_pixel_inputs(), labels=make_labels())
    assert torch.isfinite(outputs.loss)
    outputs.loss.backward()
    no_object_row = model.class_labels_classifier.weight.grad[-1]
    assert torch.count_nonzero(no_object_row) == 0  # the pinned logit never trains
    assert model.model.extra_query_position_embeddings.weight.grad.abs().sum() > 0


def test_varifocal_loss_equals_the_formula() -> None:
    """Positives: BCE towards the IoU, weighted by the IoU; negatives: BCE towards 0, weighted by alpha * p^gamma."""
    logits = torch.tensor([[2.0, -1.0], [0.5, -3.0]])
    quality = torch.tensor([[0.6, 0.0], [0.0, 0.9]])
    alpha, gamma = 0.75, 2.0
    expected = torch.empty(4)
    for index, (z, q) in enumerate(zip(logits.flatten().tolist(), quality.flatten().tolist())):
        p = 1 / (1 + math.exp(-z))
        bce = -(q * math.log(p) + (1 - q) * math.log(1 - p))
        expected[index] = q * bce if q > 0 else alpha * p**gamma * bce
    torch.testing.assert_close(varifocal_loss(logits, quality, alpha, gamma), expected.view(2, 2))


def test_varifocal_criterion_targets_the_iou_of_the_matched_box() -> None:
    """One target, matched to query 1 whose box is the target's, shifted: its class target is that IoU."""
    logits = torch.tensor([[[0.3, -0.2, 5.0], [1.5, -1.0, -5.0]]])  # (1, 2, 2 + 1); no-object column ignored
    pred_boxes = torch.tensor([[[0.2, 0.2, 0.1, 0.1], [0.65, 0.6, 0.3, 0.3]]])  # IoU 0.25 / 0.35 with the target
    targets = [{"class_labels": torch.tensor([0]), "boxes": torch.tensor([[0.6, 0.6, 0.3, 0.3]])}]
    matcher = HungarianMatcher(class_cost_type="focal")
    criterion = SetCriterion(2, matcher, class_loss_type="varifocal", focal_alpha=0.75, focal_gamma=2.0)
    _, loss_dict = criterion(logits, pred_boxes, targets)

    def varifocal(z: float, quality: float) -> float:
        p = 1 / (1 + math.exp(-z))
        bce = -(quality * math.log(p) + (1 - quality) * math.log(1 - p))
        return quality * bce if quality > 0 else 0.75 * p**2 * bce

    iou = 0.25 / 0.35
    expected = varifocal(0.3, 0) + varifocal(-0.2, 0) + varifocal(1.5, iou) + varifocal(-1.0, 0)  # / num_boxes 1
    torch.testing.assert_close(loss_dict["loss_ce"], torch.tensor(expected))
    # The score (sigmoid 1.5 = 0.82) is pushed up towards 1 for a perfect box, down towards 0.71 for this one.
    for box, direction in ((targets[0]["boxes"][0], -1.0), (pred_boxes[0, 1], 1.0)):
        trained = logits.clone().requires_grad_(True)
        boxes = pred_boxes.clone()
        boxes[0, 1] = box
        criterion(trained, boxes, targets)[1]["loss_ce"].backward()
        assert torch.sign(trained.grad[0, 1, 0]) == direction


def test_varifocal_model_trains_and_keeps_the_sigmoid_scores(tmp_path) -> None:
    model = _model(class_loss_type="varifocal", query_anchor_boxes=True).train()
    assert model.criterion.matcher.class_cost_type == "focal"
    bias = model.class_labels_classifier.bias[:-1]
    torch.testing.assert_close(bias.sigmoid(), torch.full_like(bias, 0.01))
    outputs = model(**make_pixel_inputs(), labels=make_labels())
    assert torch.isfinite(outputs.loss) and outputs.logits.shape == (2, model.config.num_queries, 4)
    assert torch.equal(outputs.logits[..., -1], torch.zeros_like(outputs.logits[..., -1]))
    outputs.loss.backward()
    assert model.class_labels_classifier.weight.grad[:-1].abs().sum() > 0
    assert torch.count_nonzero(model.class_labels_classifier.weight.grad[-1]) == 0
    model.save_pretrained(tmp_path)
    reloaded = DetrCustomForObjectDetection.from_pretrained(tmp_path)
    assert reloaded.config.class_loss_type == "varifocal" and reloaded.criterion.class_loss_type == "varifocal"
    inputs = make_pixel_inputs()
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(**inputs).logits, model.eval()(**inputs).logits)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"num_query_groups": 0}, "num_query_groups"),
        ({"class_loss_type": "softmax_focal"}, "class_loss_type"),
        ({"focal_alpha": 1.5}, "focal_alpha"),
        ({"focal_gamma": -1}, "focal_gamma"),
        ({"anchor_box_size": 1.0}, "anchor_box_size"),
        ({"box_refinement": "deformable"}, "box_refinement"),
        ({"num_denoising_groups": -1}, "num_denoising_groups"),
        ({"denoising_box_noise_scale": 0.0}, "denoising_box_noise_scale"),
        ({"denoising_label_noise_ratio": 1.5}, "denoising_label_noise_ratio"),
    ],
)
def test_bad_option_values_raise_naming_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        make_tiny_config(**overrides)


def test_bad_criterion_and_matcher_options_raise() -> None:
    with pytest.raises(ValueError, match="class_loss_type"):
        SetCriterion(3, HungarianMatcher(), class_loss_type="focal")
    with pytest.raises(ValueError, match="class_cost_type"):
        HungarianMatcher(class_cost_type="sigmoid")
    criterion = SetCriterion(3, HungarianMatcher())
    logits, boxes = torch.zeros(1, 5, 4), torch.full((1, 5, 4), 0.5)
    with pytest.raises(ValueError, match="num_query_groups"):
        criterion(logits, boxes, make_labels((1,)), num_query_groups=2)


def test_grid_anchor_boxes_cover_the_image_row_after_row() -> None:
    boxes = grid_anchor_boxes(6, 0.25)  # 3 columns, 2 rows
    expected_centres = [[x / 6, y / 4] for y in (1, 3) for x in (1, 3, 5)]
    torch.testing.assert_close(boxes[:, :2], torch.tensor(expected_centres))
    torch.testing.assert_close(boxes[:, 2:], torch.full((6, 2), 0.25))


def test_query_anchor_boxes_start_every_query_at_its_anchor() -> None:
    model = _model(query_anchor_boxes=True, anchor_box_size=0.3, num_query_groups=2)
    num_queries = model.config.num_queries
    assert model.query_anchor_boxes.weight.shape == (2 * num_queries, 4)
    inputs = make_pixel_inputs()
    anchors = grid_anchor_boxes(num_queries, 0.3)
    training = model.train()(**inputs, labels=make_labels())
    torch.testing.assert_close(training.pred_boxes, anchors.repeat(2, 1).expand(2, -1, -1))
    with torch.no_grad():
        inference = model.eval()(**inputs)
    torch.testing.assert_close(inference.pred_boxes, anchors.expand(2, -1, -1))
    training.loss.backward()
    assert model.query_anchor_boxes.weight.grad.abs().sum() > 0


def test_query_anchor_boxes_survive_a_save_load_round_trip(tmp_path) -> None:
    model = _model(query_anchor_boxes=True)
    with torch.no_grad():
        model.query_anchor_boxes.weight.add_(0.5)  # moved away from the grid, as after training
        model.bbox_predictor.layers[-1].bias.fill_(0.1)
    model.save_pretrained(tmp_path)
    reloaded = DetrCustomForObjectDetection.from_pretrained(tmp_path)
    torch.testing.assert_close(reloaded.query_anchor_boxes.weight, model.query_anchor_boxes.weight)
    inputs = make_pixel_inputs()
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(**inputs).pred_boxes, model.eval()(**inputs).pred_boxes)


def test_refine_boxes_chains_the_layers_in_logit_space() -> None:
    offsets = torch.tensor([0.5, -0.25, 1.0]).view(3, 1, 1, 1).expand(3, 1, 2, 4).clone().requires_grad_(True)
    anchors = torch.zeros(2, 4)
    anchors[1] = 1.0
    boxes = refine_boxes(offsets, anchors, "iterative")
    assert boxes.shape == (3, 1, 2, 4)
    cumulative = torch.tensor([0.5, 0.25, 1.25])
    torch.testing.assert_close(boxes[:, 0, 0, 0], cumulative.sigmoid())
    torch.testing.assert_close(boxes[:, 0, 1, 0], (cumulative + 1).sigmoid())
    torch.testing.assert_close(refine_boxes(offsets, anchors, "look_forward_twice"), boxes)  # same values
    torch.testing.assert_close(refine_boxes(offsets, None, "iterative")[:, 0, 1, 0], cumulative.sigmoid())
    # The last layer's loss trains only its own offset ("iterative") or every earlier one too (look forward twice).
    for mode, expected_layers in (("iterative", [2]), ("look_forward_twice", [0, 1, 2])):
        offsets.grad = None
        refine_boxes(offsets, anchors, mode)[-1].sum().backward()
        assert torch.nonzero(offsets.grad.flatten(1).abs().sum(1)).flatten().tolist() == expected_layers, mode
    with pytest.raises(ValueError, match="mode"):
        refine_boxes(offsets, anchors, "none")


@pytest.mark.parametrize("mode", ["iterative", "look_forward_twice"])
def test_box_refinement_model_starts_at_the_anchors_and_infers_like_training(mode: str, tmp_path) -> None:
    model = _model(box_refinement=mode, query_anchor_boxes=True, auxiliary_loss=False)
    assert not any("refine" in name for name in model.state_dict())  # no new weights
    inputs = make_pixel_inputs()
    training = model.train()(**inputs, labels=make_labels())
    anchors = grid_anchor_boxes(model.config.num_queries, model.config.anchor_box_size).expand(2, -1, -1)
    torch.testing.assert_close(training.pred_boxes, anchors)
    assert training.auxiliary_outputs is not None  # every layer's refined box is trained, even without aux loss
    for auxiliary in training.auxiliary_outputs:
        torch.testing.assert_close(auxiliary["pred_boxes"], anchors)
    training.loss.backward()
    assert model.bbox_predictor.layers[-1].weight.grad.abs().sum() > 0
    with torch.no_grad():
        model.bbox_predictor.layers[-1].bias.normal_()  # away from the anchors, as after training
        trained = model(**inputs).pred_boxes
        inference = model.eval()(**inputs)
    torch.testing.assert_close(inference.pred_boxes, trained)
    offset = model.bbox_predictor.layers[-1].bias
    layers = model.config.decoder_layers
    torch.testing.assert_close(inference.pred_boxes, (torch.logit(anchors) + layers * offset).sigmoid())
    model.save_pretrained(tmp_path)
    reloaded = DetrCustomForObjectDetection.from_pretrained(tmp_path).eval()
    assert reloaded.config.box_refinement == mode
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).pred_boxes, inference.pred_boxes)


def test_denoising_queries_noise_positives_less_than_negatives() -> None:
    queries = DenoisingQueries(num_labels=3, hidden_size=32, num_groups=2, box_noise_scale=0.5, label_noise_ratio=0.0)
    labels = [
        {"class_labels": torch.tensor([2, 0]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.2], [0.3, 0.3, 0.2, 0.2]])},
        {"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])},
    ]
    batch = queries(labels, torch.Generator().manual_seed(0))
    assert batch.content.shape == batch.position.shape == (2 * 2, 4, 32)  # (B * G, 2M, D), M = 2
    assert batch.reference_logits.shape == (4, 4, 4)
    # image 1 has one object: slots 1 (positive) and 3 (negative) are padding, in both of its groups
    assert batch.valid.tolist() == [[True] * 4] * 2 + [[True, False, True, False]] * 2
    (queries_0, targets_0), (queries_1, targets_1) = batch.matches
    assert queries_0.tolist() == [0, 1, 4, 5] and targets_0.tolist() == [0, 1, 0, 1]
    assert queries_1.tolist() == [0, 4] and targets_1.tolist() == [0, 0]
    # without label noise the content is the embedding of the true label
    torch.testing.assert_close(batch.content[0, 0], queries.label_embeddings.weight[2])
    torch.testing.assert_close(batch.content[0, 3], queries.label_embeddings.weight[0])  # negative of object 1
    noised = batch.reference_logits.sigmoid().view(2, 2, 4, 4)  # (B, G, 2M, 4)
    truth = labels[0]["boxes"]
    corner_moves = (box_cxcywh_to_xyxy(noised[0, :, :2]) - box_cxcywh_to_xyxy(truth)).abs()
    half_sides = truth[:, 2:].repeat(1, 2) / 2
    assert (corner_moves <= 0.5 * half_sides + 1e-5).all()  # positives: within scale x half side
    negative_moves = (box_cxcywh_to_xyxy(noised[0, :, 2:]) - box_cxcywh_to_xyxy(truth)).abs()
    assert (negative_moves >= 0.5 * half_sides - 1e-5).all()  # negatives: at least that (none clamped here)
    # label noise 1: half of the labels are redrawn at random
    flipping = DenoisingQueries(3, 32, 50, 0.5, label_noise_ratio=1.0)
    same = (flipping(labels).content[:, 0] == flipping.label_embeddings.weight[2]).all(-1)[:50]
    assert 0.5 < same.float().mean() < 0.95


def test_denoising_trains_the_extra_queries_without_touching_the_matching_ones(tmp_path) -> None:
    model = _model(num_denoising_groups=3, query_anchor_boxes=True, box_refinement="iterative").train()
    inputs, labels = make_pixel_inputs(), make_labels()
    outputs = model(**inputs, labels=labels)
    assert {"dn_loss_ce", "dn_loss_bbox", "dn_loss_giou", "dn_loss_ce_0"} <= set(outputs.loss_dict)
    assert outputs.logits.shape == (2, model.config.num_queries, 4)  # the matching queries only
    plain_loss = model.criterion(outputs.logits, outputs.pred_boxes, labels, outputs.auxiliary_outputs)[0]
    dn_loss = sum(outputs.loss_dict[name] * weight for name, weight in model.criterion.weight_dict.items())
    assert outputs.loss > plain_loss and dn_loss > 0
    outputs.loss.backward()
    for name, parameter in model.denoising.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    # No leakage: the matching queries' outputs are those of the same model decoding them without denoising.
    with torch.no_grad():
        without = model(**inputs)  # training mode, no labels: no denoising queries
    torch.testing.assert_close(outputs.logits, without.logits, rtol=0, atol=0)
    torch.testing.assert_close(outputs.pred_boxes, without.pred_boxes, rtol=0, atol=0)
    # Inference: nothing of denoising runs; the same numbers as a model without the option and its weights.
    plain = _model(query_anchor_boxes=True, box_refinement="iterative").eval()
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    assert missing == [] and all(name.startswith("denoising.") for name in unexpected) and unexpected
    with torch.no_grad():
        inference = model.eval()(**inputs)
        torch.testing.assert_close(inference.logits, plain(**inputs).logits, rtol=0, atol=0)
    assert inference.loss is None
    model.save_pretrained(tmp_path)
    reloaded = DetrCustomForObjectDetection.from_pretrained(tmp_path)
    torch.testing.assert_close(reloaded.denoising.label_embeddings.weight, model.denoising.label_embeddings.weight)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(**inputs).pred_boxes, inference.pred_boxes)


def test_denoising_groups_do_not_see_each_other_and_images_without_objects_train() -> None:
    model = _model(num_denoising_groups=2).train()
    batch = model.denoising(make_labels((2, 1)), torch.Generator().manual_seed(0))
    features, positions, padding = model.model._encoder_inputs(**make_pixel_inputs(), inputs_embeds=None)
    encoded = model.model.encoder(features, positions, padding)
    # (L, B*G, 2M, D)
    both = decode_denoising(model.model.decoder, encoded.last_hidden_state, positions, padding, batch)
    first_group = dataclasses.replace(
        batch, **{name: getattr(batch, name)[0::2] for name in ("content", "position", "reference_logits", "valid")},
        num_groups=1,
    )  # fmt: skip
    alone = decode_denoising(model.model.decoder, encoded.last_hidden_state, positions, padding, first_group)
    torch.testing.assert_close(both[:, 0::2], alone)
    empty = model(**make_pixel_inputs(), labels=make_labels((0, 0)))
    assert torch.isfinite(empty.loss) and "dn_loss_ce" in empty.loss_dict
    empty.loss.backward()
    assert model.denoising.label_embeddings.weight.grad is not None
