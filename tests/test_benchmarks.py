"""The benchmark harness measures what it says: alternating calls, ratios in the right direction, a parity check that
refuses to time different outputs, and peak memory of the measured process only."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from bench_common import interleaved_seconds, markdown_table, row_from_seconds  # noqa: E402
from bench_models import ParityError, _check_losses  # noqa: E402


def test_calls_alternate_and_rotate_so_neither_side_always_runs_first() -> None:
    order: list[str] = []
    times = interleaved_seconds({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=3, warmup=1)
    assert order == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert [len(values) for values in times.values()] == [3, 3]  # the warm-up round is not timed
    with pytest.raises(ValueError, match="repeats"):
        interleaved_seconds({"a": lambda: None}, repeats=0)


def test_ratios_say_how_many_times_faster_ours_is() -> None:
    row = row_from_seconds("1", "case", ours=[1.0, 2.0, 1.5], theirs=[3.0, 3.0, 6.0], unit="s/image", target=1.5)
    assert row.x_min == pytest.approx(3.0) and row.x_median == pytest.approx(2.0)
    assert row.x_paired == pytest.approx(3.0)  # median of 3/1, 3/2, 6/1.5
    assert row.passed
    slower = row_from_seconds("1", "case", ours=[2.0], theirs=[2.5], unit="s/image", per=2, target=1.5)
    assert slower.ours_min == pytest.approx(1.0) and not slower.passed


def test_markdown_table_has_one_line_per_row_and_flags_missed_targets() -> None:
    rows = [
        row_from_seconds("1", "fast case", ours=[1.0], theirs=[2.0], unit="s/image", target=1.5),
        row_from_seconds("4", "slow case", ours=[1.0], theirs=[1.1], unit="s/step", target=1.2, note="a | b"),
    ]
    lines = markdown_table(rows).splitlines()
    assert len(lines) == 4
    assert all(line.replace("\\|", "").count("|") == lines[0].count("|") for line in lines)
    assert "| fast case | 2.00 |" in lines[2] and "| yes |" in lines[2]
    assert "| slow case | 1.10 |" in lines[3] and "| **no** |" in lines[3] and "a \\| b" in lines[3]  # one cell


def test_different_losses_abort_the_timing() -> None:
    same = {"loss": 10.0, "loss_ce": 1.0, "loss_bbox": 2.0, "loss_giou": 3.0}
    assert _check_losses(same, dict(same), "case", 1) == 0.0
    with pytest.raises(ParityError, match="loss_bbox"):
        _check_losses({**same, "loss_bbox": 2.01}, same, "case", 1)


def _child_peak_mib() -> float:
    code = "import sys; sys.path.insert(0, sys.argv[1]); from bench_memory import _peak_rss_mib; print(_peak_rss_mib())"
    completed = subprocess.run(
        [sys.executable, "-c", code, str(BENCHMARKS)], capture_output=True, text=True, check=True, timeout=120
    )
    return float(completed.stdout.strip().splitlines()[-1])


def test_peak_memory_is_that_of_the_measuring_process_not_of_its_parent() -> None:
    alone = _child_peak_mib()
    # The parent holds 1.5 GiB more when it starts the child: Linux's ru_maxrss would add it to the child's figure.
    ballast = bytearray(1536 * 2**20)
    ballast[::4096] = b"x" * len(ballast[::4096])  # touch every page so it is resident
    with_ballast = _child_peak_mib()
    del ballast
    assert abs(with_ballast - alone) < 200, (alone, with_ballast)
