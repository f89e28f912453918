"""MicroBatcher: concurrent requests share model calls, each gets its own rows, and cheap calls
run on the event loop while slow ones run on the model thread."""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from service.batching import DIRECT_ROWS, MicroBatcher, ModelRefused
from service.inference.model import Outputs


class Echo:
    """A stand-in model: predicts each row's `x`, sleeping `delay_s` per call."""

    name, version = "echo", 1

    def __init__(self, delay_s: float = 0.0, fail_on: Any = None) -> None:
        self.delay_s = delay_s
        self.fail_on = fail_on
        self.calls: list[tuple[int, str]] = []

    def predict_columns(self, columns: dict[str, list[Any]]) -> Outputs:
        self.calls.append((len(columns["x"]), threading.current_thread().name))
        time.sleep(self.delay_s)
        if self.fail_on in columns["x"]:
            raise ValueError("bad row")
        return Outputs(list(columns["x"]), None)


async def gather(batcher: MicroBatcher, requests: list[list[int]]) -> list[Outputs]:
    batcher.start()
    try:
        return await asyncio.gather(*(batcher.predict({"x": r}, len(r)) for r in requests))
    finally:
        await batcher.close()


def run(model: Echo, requests: list[list[int]], **kw: Any) -> list[Outputs]:
    with ThreadPoolExecutor(1, thread_name_prefix="model") as ex:
        batcher = MicroBatcher(model, ex, max_rows=kw.pop("max_rows", 64), max_wait_s=0.001, **kw)  # type: ignore[arg-type]
        return asyncio.run(gather(batcher, requests))


def test_concurrent_requests_share_calls_and_get_their_own_rows() -> None:
    model = Echo(delay_s=0.01)
    requests = [[i, i + 100] for i in range(20)]
    outs = run(model, requests)
    assert [o.predictions for o in outs] == requests
    assert len(model.calls) < len(requests)  # gathered into fewer model calls
    assert sum(n for n, _ in model.calls) == 40


def test_batches_stop_at_max_rows() -> None:
    model = Echo(delay_s=0.005)
    run(model, [[i] for i in range(30)], max_rows=4)
    assert max(n for n, _ in model.calls) <= 4


def test_cheap_calls_move_to_the_loop_and_slow_ones_stay_on_the_model_thread() -> None:
    fast = Echo()
    run(fast, [[i] for i in range(5)], inline_max_s=0.01)
    threads = [t for _, t in fast.calls]
    assert threads[0].startswith("model")  # the first call measures the cost on the thread
    assert all(t == "MainThread" for t in threads[1:])

    slow = Echo(delay_s=0.02)
    run(slow, [[i] for i in range(3)], inline_max_s=0.01)
    assert all(t.startswith("model") for _, t in slow.calls)

    never = Echo()
    run(never, [[i] for i in range(3)], inline_max_s=0.0)
    assert all(t.startswith("model") for _, t in never.calls)


@pytest.mark.parametrize("inline", [0.0, 1.0])
def test_a_failing_call_fails_its_callers_and_the_batcher_goes_on(inline: float) -> None:
    model = Echo(fail_on=13)

    async def scenario() -> tuple[list[Any], Outputs]:
        with ThreadPoolExecutor(1) as ex:
            batcher = MicroBatcher(model, ex, max_rows=1, max_wait_s=0, inline_max_s=inline)  # type: ignore[arg-type]
            batcher.start()
            try:
                first = await asyncio.gather(
                    batcher.predict({"x": [1]}, 1),
                    batcher.predict({"x": [13]}, 1),
                    return_exceptions=True,
                )
                after = await batcher.predict({"x": [2]}, 1)
            finally:
                await batcher.close()
            return first, after

    first, after = asyncio.run(scenario())
    assert first[0].predictions == [1]
    assert isinstance(first[1], ModelRefused) and first[1].status_code == 422
    assert "ValueError: bad row" in first[1].message
    assert after.predictions == [2]


class Broken(Echo):
    """A model whose every call raises an error that is no input's fault."""

    def predict_columns(self, columns: dict[str, list[Any]]) -> Outputs:
        self.calls.append((len(columns["x"]), threading.current_thread().name))
        raise RuntimeError("model file corrupt")


@pytest.mark.parametrize("inline", [0.0, 1.0])
def test_a_batch_that_raises_is_split_until_each_request_has_its_own_answer(
    inline: float,
) -> None:
    """One request of 32 in a micro-batch carries a row the model refuses: the batch is halved
    and called again until that request alone fails (its bad row named), the 31 others get
    their predictions; a few calls, not one per request. An error that is no input's fault
    reaches each request as it is (a 500 each), still one answer per request."""
    model = Echo(delay_s=0.002, fail_on=-1)
    requests = [[i, -1] if i == 7 else [i, i + 100] for i in range(32)]

    async def scenario(m: Echo) -> list[Any]:
        with ThreadPoolExecutor(1, thread_name_prefix="model") as ex:
            batcher = MicroBatcher(m, ex, max_rows=256, max_wait_s=0.01, inline_max_s=inline)  # type: ignore[arg-type]
            batcher.start()
            try:
                return await asyncio.gather(
                    *(batcher.predict({"x": r}, len(r)) for r in requests),
                    return_exceptions=True,
                )
            finally:
                await batcher.close()

    got = asyncio.run(scenario(model))
    for i, out in enumerate(got):
        if i == 7:
            assert isinstance(out, ModelRefused)
            assert [d["instance"] for d in out.details or []] == [1]
        else:
            assert out.predictions == requests[i]
    assert len(model.calls) <= 2 * 32 + 4  # halving: bounded by twice the requests (and rows)
    broken = Broken()
    got = asyncio.run(scenario(broken))
    assert all(isinstance(out, RuntimeError) for out in got)


def test_a_retired_batcher_still_answers_and_never_strands_a_call() -> None:
    """After close() (its version swapped out) a late call is answered directly; a call still
    queued when close() gives up gets a 503, never an endless wait."""
    from service.errors import Unavailable

    async def scenario() -> tuple[Outputs, BaseException | None]:
        with ThreadPoolExecutor(1, thread_name_prefix="model") as ex:
            retired = MicroBatcher(Echo(), ex, max_rows=8, max_wait_s=0.0)  # type: ignore[arg-type]
            retired.start()
            await retired.close()
            late = await asyncio.wait_for(retired.predict({"x": [7]}, 1), timeout=5)
            slow = MicroBatcher(Echo(delay_s=0.5), ex, max_rows=1, max_wait_s=0.0)  # type: ignore[arg-type]
            slow.start()
            first = asyncio.ensure_future(slow.predict({"x": [1]}, 1))
            queued = asyncio.ensure_future(slow.predict({"x": [2]}, 1))
            await asyncio.sleep(0.05)
            await slow.close(timeout_s=0.01)
            outcome = await asyncio.wait_for(
                asyncio.gather(first, queued, return_exceptions=True), timeout=5
            )
            return late, next((o for o in outcome if isinstance(o, BaseException)), None)

    late, refused = asyncio.run(scenario())
    assert late.predictions == [7]
    assert isinstance(refused, Unavailable) and "retired" in str(refused)


def run_after_one(
    model: Echo, requests: list[list[int]], inline_max_s: float, *, one_by_one: bool = False
) -> list[Outputs]:
    """`requests` at once (or one after another), after a single-row call measured the cost."""

    async def go(batcher: MicroBatcher) -> list[Outputs]:
        batcher.start()
        try:
            await batcher.predict({"x": [0]}, 1)
            if one_by_one:
                return [await batcher.predict({"x": r}, len(r)) for r in requests]
            return await asyncio.gather(*(batcher.predict({"x": r}, len(r)) for r in requests))
        finally:
            await batcher.close()

    with ThreadPoolExecutor(1, thread_name_prefix="model") as ex:
        batcher = MicroBatcher(model, ex, max_rows=256, max_wait_s=0.001, inline_max_s=inline_max_s)  # type: ignore[arg-type]
        return asyncio.run(go(batcher))


def test_large_requests_to_an_inline_model_are_called_at_once_and_still_named_when_refused() -> (
    None
):
    """Requests of DIRECT_ROWS rows or more skip the queue when the model runs on the loop (one
    call each, never merged); on the model thread they are still merged; a refused row of a
    direct call is named as in a batched one."""
    big = [list(range(k * 100, k * 100 + DIRECT_ROWS)) for k in range(6)]

    inline = Echo()
    outs = run_after_one(inline, big, inline_max_s=1.0)
    assert [o.predictions for o in outs] == big
    assert [n for n, _ in inline.calls[1:]] == [DIRECT_ROWS] * len(big)  # one call each
    assert all(t == "MainThread" for _, t in inline.calls[1:])

    threaded = Echo(delay_s=0.01)
    outs = run_after_one(threaded, big, inline_max_s=0.001)
    assert [o.predictions for o in outs] == big
    assert len(threaded.calls) < len(big)  # merged on the model thread

    refusing = Echo(fail_on=203)
    with pytest.raises(ModelRefused) as err:
        run_after_one(refusing, [big[2]], inline_max_s=1.0)
    assert [d["instance"] for d in err.value.details or []] == [3]


def test_a_few_slow_calls_do_not_move_a_cheap_model_off_the_loop() -> None:
    """The median of recent calls decides: two calls descheduled for 100 ms among cheap ones (a
    loaded machine) leave the model on the event loop."""

    class Stalls(Echo):
        def predict_columns(self, columns: dict[str, list[Any]]) -> Outputs:
            self.delay_s = 0.1 if len(self.calls) in (3, 6) else 0.0
            return super().predict_columns(columns)

    model = Stalls()
    run_after_one(model, [[i] * DIRECT_ROWS for i in range(12)], 0.01, one_by_one=True)
    assert [n for n, _ in model.calls] == [1] + [DIRECT_ROWS] * 12
    assert all(t == "MainThread" for _, t in model.calls[1:])
