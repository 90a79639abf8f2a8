"""Turning the criterion's `loss_dict` into the numbers a person reads: main terms plus summed auxiliary terms."""

from __future__ import annotations

import re
import sys
from collections import defaultdict

import torch

__all__ = ["LossMeter", "progress_interval", "summarize_loss_dict"]

_AUX_SUFFIX = re.compile(r"^(.*)_(\d+)$")


def summarize_loss_dict(loss_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep the final-layer terms and sum each auxiliary term over decoder layers (`loss_ce_0 + loss_ce_1 + ...`
    -> `loss_ce_aux`), so the log has one line per kind of term whatever the depth of the decoder."""
    summary: dict[str, torch.Tensor] = {}
    for name, value in loss_dict.items():
        match = _AUX_SUFFIX.match(name)
        key = f"{match.group(1)}_aux" if match else name
        value = value.detach().float()
        summary[key] = summary[key] + value if key in summary else value
    return summary


class LossMeter:
    """Running means of the logged terms between two logging steps."""

    def __init__(self) -> None:
        self.totals: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros(()))
        self.count = 0

    def update(self, loss: torch.Tensor, loss_dict: dict[str, torch.Tensor]) -> None:
        terms = {"loss": loss.detach().float(), **summarize_loss_dict(loss_dict)}
        for name, value in terms.items():
            self.totals[name] = self.totals[name].to(value.device) + value
        self.count += 1

    def means(self) -> dict[str, torch.Tensor]:
        """A stacked tensor per term (on the device of the terms), so one reduce covers every process."""
        return {name: total / max(self.count, 1) for name, total in self.totals.items()}

    def reset(self) -> None:
        self.totals.clear()
        self.count = 0


def progress_interval() -> float:
    """Seconds between progress-bar refreshes: tqdm's 0.1 on a terminal, 10 when stderr is a file or a pipe (CI
    logs, `make demo > log`), where every refresh is a new line of the log."""
    return 0.1 if sys.stderr.isatty() else 10.0
