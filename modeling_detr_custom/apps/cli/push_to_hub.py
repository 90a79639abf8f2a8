"""Upload a checkpoint folder (a complete Hub repository, as the training scripts write it) to the Hugging Face Hub.

python scripts/push_to_hub.py outputs/detr-custom/last my-name/detr-shapes [--private] [--revision dev]

The token comes from --token, else HF_TOKEN, else `hf auth login`.
"""

from __future__ import annotations

import argparse
import sys

from modeling_detr_custom.training.hub import HubUploadError, push_folder_to_hub


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint_dir", help="Folder with config.json, model.safetensors, README.md, ...")
    parser.add_argument("repo_id", help="Hub repository, owner/name (created if it does not exist).")
    parser.add_argument("--private", action="store_true", help="Create the repository as private.")
    parser.add_argument("--revision", help="Branch to upload to (created from main if missing).")
    parser.add_argument("--token", help="Hugging Face token (default: HF_TOKEN or the stored login).")
    args = parser.parse_args(argv)
    try:
        url = push_folder_to_hub(
            args.checkpoint_dir, args.repo_id, token=args.token, private=args.private, revision=args.revision
        )
    except HubUploadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"Uploaded {args.checkpoint_dir} to {args.repo_id}: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
