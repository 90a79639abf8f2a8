"""Convert a facebookresearch/detr checkpoint (.pth) into a checkpoint folder that from_pretrained loads.

python scripts/convert_original_checkpoint.py detr-r50-e632da11.pth detr-resnet-50
python scripts/convert_original_checkpoint.py detr-r101-dc5-a2e86def.pth detr-resnet-101-dc5 --dilation
python scripts/convert_original_checkpoint.py detr-r50-panoptic-00ce5173.pth detr-resnet-50-panoptic --task panoptic

The weights determine d_model, the encoder/decoder layer counts, the FFN size, the number of queries and classes,
the ResNet depth, pre-norm and the position embedding type. The options cover what they do not. The output
folder holds config.json (with auto_map), model.safetensors and preprocessor_config.json.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from modeling_detr_custom.apps.convert_original import TASKS, convert_original_checkpoint, read_id2label


@dataclass
class ConvertArguments:
    checkpoint: Path
    output_dir: Path
    num_heads: int | None
    dilation: bool | None
    pre_norm: bool | None
    id2label: Path | None
    task: str


def parse_arguments(argv: list[str] | None = None) -> ConvertArguments:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="original .pth: {'model': state_dict, ...} or a state dict")
    parser.add_argument("output_dir", type=Path, help="folder to write (created if needed, files overwritten)")
    parser.add_argument(
        "--num_heads",
        "--num-heads",
        type=int,
        default=None,
        help="attention heads (the weights cannot tell); default: the checkpoint's saved training args "
        "(nheads) when present, else 8 as in every released checkpoint",
    )
    parser.add_argument(
        "--dilation",
        action="store_true",
        default=None,
        help="the backbone's last stage is dilated (DC5 checkpoints; the weights cannot tell); default: the "
        "checkpoint's saved training args when present, else off",
    )
    parser.add_argument("--no_dilation", "--no-dilation", dest="dilation", action="store_false", help="not dilated")
    parser.add_argument(
        "--pre_norm",
        "--pre-norm",
        action="store_true",
        default=None,
        help="assert pre-norm (--pre_norm) or post-norm (--no_pre_norm) layers; default: inferred from the "
        "weights (only pre-norm models have transformer.encoder.norm), a contradiction is an error",
    )
    parser.add_argument(
        "--no_pre_norm", "--no-pre-norm", dest="pre_norm", action="store_false", help="assert post-norm layers"
    )
    parser.add_argument(
        "--id2label",
        type=Path,
        default=None,
        metavar="FILE",
        help='class names: JSON list, {"0": "N/A", "1": "person", ...}, or a config.json with id2label; '
        "default: the COCO 2017 names at their category ids for 91-class checkpoints (the original trains on "
        "raw COCO ids), LABEL_i otherwise",
    )
    parser.add_argument(
        "--task",
        choices=TASKS,
        default="detection",
        help="detection: a DETR checkpoint (detr-r50-e632da11.pth, ...); panoptic: a DETRsegm checkpoint "
        "(detr-r50-panoptic, detr-r101-panoptic), written as DetrCustomForSegmentation (default: detection)",
    )
    args = parser.parse_args(argv)
    return ConvertArguments(**vars(args))


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    try:
        id2label = None if args.id2label is None else read_id2label(args.id2label)
        model = convert_original_checkpoint(
            args.checkpoint,
            args.output_dir,
            num_heads=args.num_heads,
            dilation=args.dilation,
            pre_norm=args.pre_norm,
            id2label=id2label,
            task=args.task,
        )
    except (ValueError, FileNotFoundError) as err:
        print("error: " + " ".join(str(err).split()), file=sys.stderr)
        return 1
    config = model.config
    print(
        f"Wrote {args.output_dir}: {config.backbone_config.backbone}, d_model {config.d_model}, "
        f"{config.encoder_layers}+{config.decoder_layers} layers, {config.num_queries} queries, "
        f"{config.num_labels} classes"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
