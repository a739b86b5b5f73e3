"""Plain-line progress for non-terminals: one line per finished step with rate and ETA."""

from __future__ import annotations

import io

import pytest

from medcl.pretrain.progress import ProgressLines, format_duration, format_rate, is_terminal


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("seconds", "text"), [
    (8.25, "8.2s"), (75, "1m15s"), (3725, "1h02m05s"), (-1, "?"), (float("nan"), "?"), (float("inf"), "?"),
])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_format_rate_picks_the_readable_direction() -> None:
    assert format_rate(10, 4.0, "step") == "2.5 step/s"
    assert format_rate(2, 24.0, "run") == "12.0 s/run"
    assert format_rate(0, 5.0, "run") == "? run/s"


def test_lines_carry_position_rate_and_eta_from_the_mean_step_time() -> None:
    stream, clock = io.StringIO(), FakeClock()
    assert not is_terminal(stream)
    lines = ProgressLines(total=10, stream=stream, unit="run", clock=clock)
    clock.now += 30.0  # 2 runs in 30 s: 15 s each, 8 left -> 2 minutes
    assert lines.update(2, "kdu_age (seed 0)") == "[2/10] kdu_age (seed 0) | 30.0s elapsed, 15.0 s/run, ETA 2m00s"
    clock.now += 120.0
    lines.update(10, "report", extra="loss 3.9100")
    assert stream.getvalue().splitlines() == [
        "[2/10] kdu_age (seed 0) | 30.0s elapsed, 15.0 s/run, ETA 2m00s",
        "[10/10] report | 2m30s elapsed, 15.0 s/run, done, loss 3.9100",
    ]
    assert ProgressLines(stream=stream, clock=clock).line(0, "start") == "[0] start | 0.0s elapsed, ? step/s, ETA ?"
