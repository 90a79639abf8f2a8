"""Pictures of an evaluation a person looks at: a precision-recall curve per class and the confusion matrix.

matplotlib is an optional dependency (`pip install "detr-custom[plots]"`); it is imported only here, on use, and
drawn with the non-interactive Agg backend (no display needed).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.cocoeval import COCOeval

__all__ = ["plot_confusion_matrix", "plot_pr_curves", "pyplot", "safe_file_name"]


def pyplot() -> Any:
    """`matplotlib.pyplot` on the Agg backend, or an ImportError saying which extra installs it."""
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError(
            'Plots need matplotlib: pip install "detr-custom[plots]" (or pip install matplotlib).'
        ) from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def safe_file_name(name: str) -> str:
    """A class name as a file-name part: letters, digits, `-`, `_` and `.` kept, anything else `_`."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "class"


def plot_pr_curves(coco_eval: COCOeval, folder: str | Path, at_threshold: dict[str, Any] | None = None) -> list[Path]:
    """Writes `pr_curve_<class>.png` per class: precision over recall at IoU 0.5 and 0.75 (pycocotools'
    interpolated precision at its 101 recall points, area "all", 100 detections), AP in the legend, and the
    operating point at the score threshold when `at_threshold` (`threshold_metrics`' result) is given.

    Returns:
        The written files, in class order.
    """
    plt = pyplot()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    params = coco_eval.params
    precision = coco_eval.eval["precision"]  # (T, R, K, A, M)
    area, max_dets = params.areaRngLbl.index("all"), params.maxDets.index(100)
    written = []
    for k, category_id in enumerate(params.catIds):
        name = str(coco_eval.cocoGt.cats[category_id]["name"])
        figure, axes = plt.subplots(figsize=(6, 5), dpi=110)
        for iou, style in ((0.5, "-"), (0.75, "--")):
            t = int(np.where(np.isclose(params.iouThrs, iou))[0][0])
            curve = precision[t, :, k, area, max_dets]
            if (curve > -1).any():
                ap = float(curve[curve > -1].mean())
                axes.plot(params.recThrs, np.clip(curve, 0, None), style, lw=2, label=f"IoU {iou:.2f} (AP {ap:.3f})")
        point = (at_threshold or {}).get("per_class", {}).get(name)
        if point and point["precision"] is not None and point["recall"] is not None:
            label = f"score >= {at_threshold['score_threshold']:g}: P {point['precision']:.2f}, R {point['recall']:.2f}"
            axes.plot([point["recall"]], [point["precision"]], "o", ms=9, color="black", label=label)
        if not axes.lines:
            axes.text(0.5, 0.5, "no objects of this class\nin the evaluated images", ha="center", va="center",
                      fontsize=12)  # fmt: skip
        axes.set(xlim=(0, 1.01), ylim=(0, 1.01), xlabel="recall", ylabel="precision",
                 title=f"Precision-recall: {name}")  # fmt: skip
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(loc="lower left", fontsize=9)
        figure.tight_layout()
        path = folder / f"pr_curve_{safe_file_name(name)}.png"
        figure.savefig(path)
        plt.close(figure)
        written.append(path)
    return written


def plot_confusion_matrix(confusion: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """Writes the confusion matrix (`threshold_metrics`' `confusion_matrix`) as a PNG: rows = true class,
    columns = predicted class, each with "background"; cells show counts, colour = share of the row."""
    plt = pyplot()
    labels, matrix = confusion["labels"], np.asarray(confusion["matrix"], dtype=np.int64)
    rows = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=float), where=rows > 0)
    side = max(5.0, 0.6 * len(labels) + 2.5)
    figure, axes = plt.subplots(figsize=(side + 1, side), dpi=110)
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the true class's row")
    ticks = range(len(labels))
    axes.set_xticks(ticks, labels, rotation=45, ha="right")
    axes.set_yticks(ticks, labels)
    axes.set(xlabel="predicted  (background column: objects nothing found)",
             ylabel="true  (background row: detections of nothing)", title=title or "Confusion matrix")  # fmt: skip
    font = max(6, min(11, int(120 / max(len(labels), 1))))
    for i in ticks:
        for j in ticks:
            if i == len(labels) - 1 and j == len(labels) - 1:
                axes.text(j, i, "-", ha="center", va="center", color="gray", fontsize=font)
                continue
            colour = "white" if shares[i, j] > 0.5 else "black"
            axes.text(j, i, str(matrix[i, j]), ha="center", va="center", color=colour, fontsize=font)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
