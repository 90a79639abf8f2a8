"""Applications on top of the model, data, training and evaluation: predict, visualize, evaluate a checkpoint,
hub (model card, upload), convert original checkpoints, the demo, and `cli` (the `detr-custom` command)."""
