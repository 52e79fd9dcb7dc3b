"""The latency guard's sequential test: timing ends early only once every round has put every
model clearly on one side of the speed-up threshold, after an even count of at least 4 rounds."""

from __future__ import annotations

import onnxslim
from onnxslim.passes.quantization._latency_guard import (
    PREFERENCE_WINDOW,
    SEQUENTIAL_MARGIN,
    SEQUENTIAL_MIN_ROUNDS,
    decided,
)
from onnxslim.runtime import InterleavedTiming, interleaved_timing


def _timing(reference: list[float], *others: list[float]) -> InterleavedTiming:
    seconds = [reference, *others]
    return InterleavedTiming(seconds=seconds, order=[[0, 1]] * len(reference))


def test_clearly_faster_or_slower_in_every_round_decides_after_four_rounds():
    until = decided(1.0, reference=0)
    # speed-ups 2.0 (clearly faster) and 0.5 (clearly slower) in every round
    assert until(_timing([2.0] * 4, [1.0] * 4, [4.0] * 4)) is True
    # three rounds are too few, five rounds an odd count (one order once more than the other)
    assert until(_timing([2.0] * 3, [1.0] * 3)) is False
    assert until(_timing([2.0] * 5, [1.0] * 5)) is False
    assert SEQUENTIAL_MIN_ROUNDS == 4


def test_one_round_inside_the_margin_or_on_the_other_side_keeps_timing():
    until = decided(1.0, reference=0)
    near = 1.0 / (SEQUENTIAL_MARGIN - 0.01)  # a candidate 1.04x as fast: inside the margin
    assert until(_timing([1.0] * 4, [0.5, 0.5, near, 0.5])) is False
    # faster in three rounds, slower in one: undecided
    assert until(_timing([1.0] * 4, [0.5, 0.5, 2.0, 0.5])) is False
    # the threshold is min_speedup's: 1.3x in every round is not clearly over 1.25x
    assert decided(1.25, reference=0)(_timing([1.3] * 4, [1.0] * 4)) is False
    assert decided(1.2, reference=0)(_timing([1.3] * 4, [1.0] * 4)) is True


def test_a_model_near_the_threshold_but_far_behind_a_clearly_fast_one_is_decided():
    """1.02x stays undecided against the 1.0x threshold, but behind a model clearly over it
    by more than PREFERENCE_WINDOW in every round it ranks after that one whatever more rounds
    say: the timing ends (the digits net's dynamic candidate, at 1.0x, beside int8 at 1.6x)."""
    until = decided(1.0, reference=0)
    near, fast = [1.0 / 1.02] * 4, [1.0 / 1.6] * 4
    assert until(_timing([1.0] * 4, near)) is False
    assert until(_timing([1.0] * 4, near, fast)) is True
    # within the window of the fast one in one round (1.5 x 0.9 = 1.35 < 1.4): undecided
    close = [1.0 / 1.02, 1.0 / 1.02, 1.0 / 1.4, 1.0 / 1.02]
    assert PREFERENCE_WINDOW * 1.5 < 1.4
    assert until(_timing([1.0] * 4, close, [1.0 / 1.5] * 4)) is False
    # the one it trails must itself be clearly over the threshold in every round
    assert until(_timing([1.0] * 4, near, [1.0 / 1.6] * 3 + [1.0])) is False


def test_reference_index_is_the_one_compared_against():
    # model 1 is the reference (the confirmation round times [candidate, input])
    until = decided(1.0, reference=1)
    assert until(_timing([1.0] * 4, [3.0] * 4)) is True  # candidate 3x as fast as the input
    assert until(_timing([1.0] * 4, [1.01] * 4)) is False


def test_interleaved_timing_stops_when_until_says_so():
    calls = [0, 0]

    def run(model):
        def one(index):
            calls[model] += 1

        return one

    timing = interleaved_timing([run(0), run(1)], rounds=10, until=lambda t: t.rounds == 3)
    assert timing.rounds == 3 and calls == [3, 3]
    timing = interleaved_timing([run(0), run(1)], rounds=10)
    assert timing.rounds == 10 and calls == [13, 13]
    assert onnxslim.runtime.interleaved_timing is interleaved_timing
