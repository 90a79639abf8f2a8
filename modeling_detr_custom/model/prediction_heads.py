"""The box head of DETR: an MLP with ReLU between its layers (`bbox_predictor.layers.N` in checkpoints).

Only torch is imported: this file is copied next to Hub checkpoints.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["DetrCustomMLPPredictionHead"]


class DetrCustomMLPPredictionHead(nn.Module):
    """MLP with ReLU between layers (the box head: `layers.0`, `layers.1`, `layers.2`).

    Args:
        input_dim: Input features.
        hidden_dim: Hidden features.
        output_dim: Output features.
        num_layers: Number of Linear layers.
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(n_in, n_out) for n_in, n_out in zip(dims_in, dims_out))

    def forward(self, hidden_states: Tensor) -> Tensor:
        """Maps `(..., input_dim)` to `(..., output_dim)`."""
        for layer in self.layers[:-1]:
            hidden_states = nn.functional.relu(layer(hidden_states))
        return self.layers[-1](hidden_states)
