"""Training: the Accelerate loop (`loop`), the Trainer subclass (`trainer`), their arguments, checkpointing,
the distributed set-up, optimizer and schedule, presets (`models`) and loss logging."""
