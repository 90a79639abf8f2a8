"""Segmentation inference side by side: the same random weights in transformers' `DetrForSegmentation` and in
`DetrCustomForSegmentation`, outputs checked equal (logits, boxes, masks within 1e-4) before anything is timed, then
the calls alternated within every repeat; the ratio is their time / ours.

    python benchmarks/bench_segmentation.py [--quick] [--repeats N] [--output benchmarks/results_segmentation.json]

`--quick` times the detr-tiny-sized model at 128x128 only; the default adds DETR-R50 at 800x1066, batch 1 (the
issue's target: >= 1.5x).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_common import interleaved_seconds, machine_description, markdown_table, row_from_seconds
from modeling_detr_custom import DetrCustomForSegmentation
from modeling_detr_custom.testing_utils import randomize_weights_

R50 = {"backbone": "resnet50"}  # d_model 256, 8 heads, 6+6 layers, 100 queries: DetrConfig's defaults
TINY = {"backbone": "resnet18", "d_model": 128, "encoder_layers": 2, "decoder_layers": 2, "num_queries": 20}


def segmentation_row(name: str, options: dict, height: int, width: int, repeats: int, folder: Path):
    """Loads one transformers checkpoint into both classes, checks parity, and times batch-1 inference."""
    torch.manual_seed(0)
    config = transformers.DetrConfig(use_timm_backbone=True, use_pretrained_backbone=False, num_labels=91, **options)
    theirs = transformers.DetrForSegmentation(config)
    randomize_weights_(theirs, seed=1)
    theirs.save_pretrained(folder / name)
    theirs = theirs.eval()
    ours = DetrCustomForSegmentation.from_pretrained(folder / name).eval()
    generator = torch.Generator().manual_seed(0)
    inputs = {"pixel_values": torch.randn(1, 3, height, width, generator=generator)}
    inputs["pixel_mask"] = torch.ones(1, height, width, dtype=torch.int64)
    with torch.inference_mode():
        expected, outputs = theirs(**inputs), ours(**inputs)
    worst = max(
        (getattr(outputs, key) - getattr(expected, key)).abs().max().item()
        for key in ("logits", "pred_boxes", "pred_masks")
    )
    if worst > 1e-4:
        raise SystemExit(f"{name}: outputs differ by {worst:.2e} > 1e-4; not timing different computations.")

    def run(model: torch.nn.Module):
        def call() -> None:
            with torch.inference_mode():
                model(**inputs)

        return call

    times = interleaved_seconds({"ours": run(ours), "theirs": run(theirs)}, repeats)
    return row_from_seconds(
        "seg", f"{name} segmentation inference fp32, batch 1, {height}x{width}", times["ours"], times["theirs"],
        "s/image", target=1.5 if name == "DETR-R50" else None, note=f"max |diff| logits/boxes/masks {worst:.1e}",
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Only the small model at 128x128.")
    parser.add_argument("--repeats", type=int, default=5, help="Timed rounds per case (after one warm-up round).")
    parser.add_argument("--output", default=None, help="Write the rows and the machine description as JSON here.")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        rows.append(segmentation_row("detr-tiny-sized", TINY, 128, 128, args.repeats * 4, folder))
        if not args.quick:
            rows.append(segmentation_row("DETR-R50", R50, 800, 1066, args.repeats, folder))
    print(markdown_table(rows))
    if args.output:
        Path(args.output).write_text(
            json.dumps({"machine": machine_description(), "rows": [row.as_dict() for row in rows]}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
