"""Hub-style checkpoint folders: model card, and upload with `huggingface_hub`."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from modeling_detr_custom.evaluation.coco_evaluator import DUPLICATE_RATE, METRIC_NAMES, metrics_for_json
from modeling_detr_custom.evaluation.panoptic_quality import PANOPTIC_METRIC_NAMES
from modeling_detr_custom.evaluation.segmentation_loop import SEGM_METRIC_NAMES

__all__ = [
    "HubUploadError",
    "check_hub_token",
    "hub_datasets_id",
    "hub_errors",
    "push_folder_to_hub",
    "render_model_card",
    "save_hub_checkpoint",
]


class HubUploadError(RuntimeError):
    """Uploading failed for a reason the user can fix (no token, no network, no permission)."""


def render_model_card(
    *,
    repo_id: str,
    dataset: str,
    id2label: Mapping[int, str],
    hyperparameters: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    base_model: str | None = None,
    pipeline_task: str = "object-detection",
) -> str:
    """A model card (`README.md`) with YAML metadata the Hub understands and a snippet that runs as written
    (`pipeline_task`: "object-detection", or "image-segmentation" for a segmentation model)."""
    labels = ", ".join(f"`{name}`" for _, name in sorted((int(k), v) for k, v in id2label.items()))
    dataset_id = hub_datasets_id(dataset)
    dataset = dataset_id or Path(dataset.rstrip("/")).name or dataset  # no local path leaves the machine
    yaml = [
        "---",
        "library_name: transformers",
        f"pipeline_tag: {pipeline_task}",
        "license: apache-2.0",
        "tags:",
        f"- {pipeline_task}",
        "- detr",
        "- detr-custom",
        "- vision",
    ]
    if dataset_id:
        yaml += ["datasets:", f"- {json.dumps(dataset_id)}"]  # JSON strings are YAML strings
    if base_model:
        yaml.append(f"base_model: {json.dumps(base_model)}")
    if metrics:
        yaml += _model_index(repo_id, dataset, metrics, pipeline_task)
    yaml.append("---")
    body = [
        f"# {repo_id}",
        "",
        f"DETR (DEtection TRansformer) trained with [detr-custom](https://github.com/) on `{dataset}`.",
        "",
        f"Labels ({len(id2label)}): {labels}",
        "",
        "## Usage",
        "",
        "```python",
        "from transformers import pipeline",
        "",
        f'detector = pipeline("{pipeline_task}", model="{repo_id}", trust_remote_code=True)',
        'print(detector("image.jpg", threshold=0.5))',
        "```",
    ]
    if metrics:
        title = "COCO bbox, pycocotools" if pipeline_task == "object-detection" else "COCO bbox and segmentation"
        body += ["", f"## Evaluation ({title})", "", "| metric | value |", "|---|---|"]
        body += [
            f"| {k} | {metrics[k]:.4f} |" if metrics[k] >= 0 else f"| {k} | n/a |"
            for k in (*METRIC_NAMES, DUPLICATE_RATE, *SEGM_METRIC_NAMES, *PANOPTIC_METRIC_NAMES)
            if k in metrics
        ]
    if hyperparameters:
        body += ["", "## Training hyper-parameters", "", "| name | value |", "|---|---|"]
        body += [f"| {k} | {v} |" for k, v in hyperparameters.items()]
    return "\n".join(yaml + body) + "\n"


def hub_datasets_id(dataset: str) -> str | None:
    """`dataset` when it names a Hub data set (`name` or `owner/name`, not a folder here), else None: the card's
    `datasets:` metadata links Hub data sets, and a local path would only leak a directory of this machine."""
    if dataset.startswith("synthetic") or os.path.exists(dataset) or os.path.isabs(dataset):
        return None
    return dataset if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", dataset) else None


def _model_index(repo_id: str, dataset: str, metrics: Mapping[str, float], pipeline_task: str) -> list[str]:
    lines = [
        "model-index:",
        f"- name: {json.dumps(repo_id)}",
        "  results:",
        "  - task:",
        f"      type: {pipeline_task}",
        "    dataset:",
        f"      name: {json.dumps(dataset)}",
        f"      type: {json.dumps(dataset)}",
        "    metrics:",
    ]
    for key in (*METRIC_NAMES, *SEGM_METRIC_NAMES, *PANOPTIC_METRIC_NAMES):
        if key in metrics and metrics[key] >= 0:  # pycocotools' -1 means "no object of that size", not a score
            lines += [f"    - type: {key}", f"      value: {float(metrics[key]):.4f}", f"      name: {key}"]
    return lines


def save_hub_checkpoint(
    model: Any,
    processor: Any,
    output_dir: str | os.PathLike,
    *,
    dataset: str,
    hyperparameters: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    base_model: str | None = None,
    repo_id: str | None = None,
) -> Path:
    """Write a complete Hub repository: weights, config with `auto_map`, processor, source files, model card.

    `repo_id` (default: the folder's name) is the repository the card's usage snippet loads.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    card = render_model_card(
        repo_id=repo_id or output_dir.name,
        dataset=dataset,
        id2label=model.config.id2label,
        hyperparameters=hyperparameters,
        metrics=metrics,
        base_model=base_model,
        pipeline_task="image-segmentation" if hasattr(model, "mask_head") else "object-detection",
    )
    (output_dir / "README.md").write_text(card)
    if metrics:
        (output_dir / "eval_results.json").write_text(json.dumps(metrics_for_json(dict(metrics)), indent=2))
    return output_dir


def check_hub_token(token: str | None = None, prefix: str = "") -> None:
    """Raise `HubUploadError` when no token is set (`token`, `HF_TOKEN` or `hf auth login`): called before training
    with `--push_to_hub`, so a missing token does not surface only after hours of training."""
    from huggingface_hub import get_token

    if not (token or get_token()):
        raise HubUploadError(f"{prefix}No Hugging Face token: set HF_TOKEN or run `hf auth login`.")


@contextlib.contextmanager
def hub_errors(repo_id: str, token: str | None = None) -> Iterator[None]:
    """Checks that a token exists, then turns any failure of the Hub calls inside the block into `HubUploadError`.

    Shared by `push_folder_to_hub` and the Trainer's own `--push_to_hub`, so both fail with the same one line.

    Raises:
        HubUploadError: no token (neither `token`, `HF_TOKEN` nor `hf auth login`), no network, or a refusal.
    """
    from huggingface_hub.errors import HfHubHTTPError

    check_hub_token(token)
    try:
        yield
    except HubUploadError:
        raise
    except HfHubHTTPError as err:
        raise HubUploadError(f"The Hub refused the upload to {repo_id}: {str(err).splitlines()[0]}") from err
    except Exception as err:  # network layer errors (httpx, OSError, offline mode) differ across versions
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise HubUploadError(f"Could not reach the Hub to upload {repo_id}: {reason}") from err


def push_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = "Upload DETR checkpoint",
) -> str:
    """Create the repository if needed and upload `folder`; returns the commit URL.

    Raises:
        HubUploadError: with a one-line reason when there is no token, no network or no permission.
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise HubUploadError(f"{folder} is not a checkpoint folder (no config.json)")
    try:  # a folder left half-written by an older version or a copy: never upload it
        json.loads((folder / "config.json").read_text())
    except ValueError as error:
        raise HubUploadError(f"{folder / 'config.json'} is damaged ({error}); not uploading") from error
    if not any(folder.glob("*.safetensors")):
        raise HubUploadError(f"{folder} has no weights (*.safetensors); not uploading")
    token = token or os.environ.get("HF_TOKEN")
    with hub_errors(repo_id, token):
        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id, folder_path=str(folder), revision=revision, commit_message=commit_message
        )
    return str(info)
