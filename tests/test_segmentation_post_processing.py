"""The three segmentation post-processors against transformers' DetrImageProcessor on the same outputs."""

import pytest
import torch
from transformers import DetrImageProcessor
from transformers.utils import ModelOutput

from modeling_detr_custom import DetrCustomImageProcessor


def _outputs(seed: int = 0) -> ModelOutput:
    """Two images, 8 queries, 3 classes + no object; queries 0-5 confident (two of them class 1, a stuff class to
    fuse), 6-7 no object; blob-like masks at stride 4 of a 48x64 input."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 8, 4, generator=generator)
    logits[:, torch.arange(6), torch.tensor([0, 1, 1, 2, 0, 2])] += 6.0
    logits[:, 6:, -1] += 6.0
    rows, columns = torch.meshgrid(torch.arange(12.0), torch.arange(16.0), indexing="ij")
    centers = torch.rand(2, 8, 2, generator=generator) * torch.tensor([12.0, 16.0])
    distance = (rows - centers[..., 0, None, None]) ** 2 + (columns - centers[..., 1, None, None]) ** 2
    pred_masks = 3.0 - distance / 2 + 0.5 * torch.randn(2, 8, 12, 16, generator=generator)
    return ModelOutput(logits=logits, pred_masks=pred_masks)


@pytest.fixture(scope="module")
def processors() -> tuple[DetrCustomImageProcessor, DetrImageProcessor]:
    return DetrCustomImageProcessor(), DetrImageProcessor()


def _assert_same_segments(ours: list[dict], theirs: list[dict]) -> None:
    assert len(ours) == len(theirs)
    for mine, reference in zip(ours, theirs):
        assert mine["segments_info"] == reference["segments_info"]
        if isinstance(reference["segmentation"], list):  # run-length encodings
            assert mine["segmentation"] == [[int(value) for value in rle] for rle in reference["segmentation"]]
        else:
            torch.testing.assert_close(mine["segmentation"], reference["segmentation"], rtol=0, atol=0)


@pytest.mark.parametrize("target_sizes", [None, [(48, 64), (30, 50)]])
def test_panoptic_matches_transformers(processors, target_sizes) -> None:
    ours, theirs = processors
    for fuse in (None, {1}):
        expected = theirs.post_process_panoptic_segmentation(
            _outputs(), threshold=0.7, label_ids_to_fuse=fuse, target_sizes=target_sizes
        )
        result = ours.post_process_panoptic_segmentation(
            _outputs(), threshold=0.7, label_ids_to_fuse=fuse, target_sizes=target_sizes
        )
        _assert_same_segments(result, expected)
    assert any(segment["was_fused"] for segment in result[0]["segments_info"])
    assert len(result[0]["segments_info"]) >= 3  # the comparison covers real segments


@pytest.mark.parametrize("return_coco_annotation", [False, True])
def test_instance_matches_transformers(processors, return_coco_annotation) -> None:
    ours, theirs = processors
    options = {"threshold": 0.6, "target_sizes": [(48, 64), (24, 40)], "return_coco_annotation": return_coco_annotation}
    _assert_same_segments(
        ours.post_process_instance_segmentation(_outputs(1), **options),
        theirs.post_process_instance_segmentation(_outputs(1), **options),
    )


def test_nothing_kept_gives_minus_one_everywhere_as_transformers(processors) -> None:
    ours, theirs = processors
    outputs = _outputs()
    outputs["logits"][..., -1] += 100.0
    _assert_same_segments(
        ours.post_process_panoptic_segmentation(outputs, target_sizes=[(5, 7), (6, 8)]),
        theirs.post_process_panoptic_segmentation(outputs, target_sizes=[(5, 7), (6, 8)]),
    )


@pytest.mark.parametrize("target_sizes", [None, [(48, 64), (30, 50)]])
def test_semantic_matches_transformers(processors, target_sizes) -> None:
    ours, theirs = processors
    result = ours.post_process_semantic_segmentation(_outputs(2), target_sizes, return_segmentation_scores=True)
    expected = theirs.post_process_semantic_segmentation(_outputs(2), target_sizes, return_segmentation_scores=True)
    for mine, reference in zip(result, expected):
        torch.testing.assert_close(mine["segmentation"], reference["segmentation"], rtol=0, atol=0)
        torch.testing.assert_close(mine["segmentation_scores"], reference["segmentation_scores"])
    maps = ours.post_process_semantic_segmentation(_outputs(2), target_sizes)
    assert all(isinstance(item, torch.Tensor) and item.ndim == 2 for item in maps)


def test_processed_sizes_crop_the_padding_away(processors) -> None:
    """Image 1 was 20x30 inside the 48x64 padded input (masks 12x16 at stride 4): its segments have its own size,
    and mask values the upsampled image region never reads (rows > 5, columns > 8) change nothing."""
    ours, _ = processors
    outputs = _outputs()
    options = {"threshold": 0.7, "processed_sizes": [(48, 64), (20, 30)]}
    result = ours.post_process_panoptic_segmentation(outputs, **options)
    assert result[1]["segmentation"].shape == (20, 30) and result[0]["segmentation"].shape == (48, 64)
    outputs["pred_masks"][1, :, 6:], outputs["pred_masks"][1, :, :, 9:] = 9.0, -9.0
    changed = ours.post_process_panoptic_segmentation(outputs, **options)
    _assert_same_segments(changed, result)
    semantic = ours.post_process_semantic_segmentation(
        outputs, [(40, 60), (40, 60)], processed_sizes=[(48, 64), (20, 30)]
    )
    assert semantic[1].shape == (40, 60)
    with pytest.raises(ValueError, match="processed_sizes"):
        ours.post_process_instance_segmentation(outputs, processed_sizes=[(48, 64), (60, 30)])


def test_outputs_without_masks_are_refused_by_name(processors) -> None:
    ours, _ = processors
    with pytest.raises(TypeError, match="pred_masks"):
        ours.post_process_panoptic_segmentation(ModelOutput(logits=torch.zeros(1, 2, 3)))
    with pytest.raises(ValueError, match="one \\(height, width\\) per image"):
        ours.post_process_semantic_segmentation(_outputs(), target_sizes=[(4, 4)])
