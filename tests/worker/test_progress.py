"""The ETA a job shows is steady: the supervisor reports a moving average of the step time, not the last step's."""

from __future__ import annotations

from worker.supervisor import smoothed_step_time


def eta_series(step_times: list[float], total: int = 100) -> list[float]:
    average, etas = None, []
    for step, seconds in enumerate(step_times, start=1):
        average = smoothed_step_time(average, seconds)
        assert average is not None
        etas.append((total - step) * average)
    return etas


def test_one_slow_step_moves_the_eta_by_a_tenth_of_its_excess_not_tenfold() -> None:
    etas = eta_series([1.0] * 20 + [10.0] + [1.0] * 5)  # step 21 ran an evaluation
    assert etas[19] == 80.0
    assert etas[20] < 1.9 * etas[19]  # the last step's time alone would say 790 s, almost ten times more
    assert etas[-1] < etas[20]  # and it settles back


def test_the_first_step_is_taken_as_it_is_and_a_step_without_a_time_changes_nothing() -> None:
    assert smoothed_step_time(None, 2.5) == 2.5
    assert smoothed_step_time(2.5, None) == 2.5
    assert smoothed_step_time(None, None) is None
