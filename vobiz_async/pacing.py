"""One politeness for a whole batch: an AIMD limit on transfers in flight under rate limits.

A 429 (or a 503 with ``Retry-After``) on any request of the batch lowers the number of
transfers allowed in flight (multiplicative decrease, never below one) and holds every new
request until the ``Retry-After`` has passed; successes raise the limit back gradually
(additive increase: about one more transfer per limit's worth of successes) toward the
configured concurrency.

Concurrency alone cannot bound the request *rate* on a fast path (2 ms answers at 64 in flight
are 30,000 requests/s), so a signal also paces request *starts*: the first start after the
hold sets a start rate from the successes per second measured over the last ``window``, and
starts are then spaced by ``1 / rate``. The rate grows by ``slow_gain`` per success until a
second signal says where the host's limit is (slow start, which then ends at half the rate
reached), and by ``rate_step`` per second after it (additive increase).

Two layers, as everywhere in this package:

- :class:`PacingPolicy` is the pure decision core. Its methods take a :class:`PacingState`
  and the current time (any monotonic clock, in seconds) and return a new state; nothing in
  it sleeps, reads a clock or knows asyncio, so it is tested by tables.
- :class:`PacingGate` is the asyncio seam: ``acquire()``/``release()`` around each request,
  ``on_rate_limited(retry_after, ticket)`` and ``on_success(ticket)`` after it. Its clock is
  the event loop's.

A burst of 429s that answers requests sent *before* the latest decrease says nothing new
about the current limit, so it only extends the hold: one decrease per round of requests,
as in TCP's congestion control. Likewise only successes of requests sent since the latest
decrease raise the limit again. A request's round is its *ticket*: the number of decreases
applied when it was let go (``acquire()`` returns it), so no clock resolution is involved.

:meth:`PacingGate.report` says what happened for a progress event or a summary, e.g.
"rate limited 12 times: concurrency lowered to 6 for 40 s".
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator

import attrs

__all__ = [
    "Answered",
    "PacingGate",
    "PacingPolicy",
    "PacingReport",
    "PacingState",
    "allowed",
    "batch_gate",
    "current_gate",
    "is_stale",
    "passage",
]

#: The gate of the batch this task works for: `AsyncSession.request` passes it too, so the
#: listing pager a batch iterates (and its page prefetches, tasks that copy the context)
#: shares the batch's politeness.
_CURRENT_GATE: contextvars.ContextVar[PacingGate | None] = contextvars.ContextVar(
    "vobiz_async_pacing_gate", default=None
)


@attrs.frozen
class PacingState:
    """Where a batch's pacing stands. Times are on the clock the policy was given."""

    #: Transfers allowed in flight, fractional so additive increase can be gradual.
    limit: float
    #: No new request may start before this time.
    hold_until: float
    #: Rate-limit signals received (429s, and 503s with Retry-After).
    signals: int = 0
    #: Decreases applied so far: the current round, the ticket of a request let go now.
    decreases: int = 0
    #: The lowest number of transfers allowed in flight so far.
    lowest: int = 0
    #: Since when the allowed number has been below the configured concurrency (None: not).
    below_since: float | None = None
    #: Seconds spent below the configured concurrency in earlier, closed spells.
    below_seconds: float = 0.0
    #: Request starts allowed per second (None: unpaced, before the first signal).
    rate: float | None = None
    #: No new request may start before this time either: starts are spaced by ``1 / rate``.
    next_start: float = 0.0
    #: Where slow start ends and additive increase begins (None: slow start until a
    #: signal says where the host's rate is).
    threshold: float | None = None
    #: The success meter: successes since ``meter_since``, and in the window before it.
    meter_since: float = 0.0
    meter_count: int = 0
    meter_prev: int = 0
    #: The lowest start rate so far (None: never paced).
    lowest_rate: float | None = None
    #: A signal arrived: the first start after the hold sets the rate from the meter (by
    #: then the answers of the signalled round have arrived and been counted).
    rate_due: bool = False
    #: Successes per second measured when the latest fresh signal arrived.
    signalled_at_rate: float = 0.0


@attrs.frozen
class PacingReport:
    """What the pacing did over a batch, for progress events and the final summary."""

    concurrency: int
    #: Transfers allowed in flight now.
    limit: int
    #: Rate-limit signals received, and how many of them lowered the limit.
    rate_limited: int
    decreases: int
    #: The lowest number of transfers allowed in flight.
    lowest_limit: int
    #: Seconds spent below the configured concurrency, the current spell included.
    seconds_below: float
    #: Request starts allowed per second now, and the lowest so far (None: never paced);
    #: measured figures, left out of comparisons.
    rate: float | None = attrs.field(default=None, eq=False)
    lowest_rate: float | None = attrs.field(default=None, eq=False)

    @property
    def limited(self) -> bool:
        """Whether any rate-limit signal arrived."""
        return self.rate_limited > 0

    def describe(self) -> str | None:
        """One line for a summary, or None when nothing was rate limited."""
        if not self.limited:
            return None
        times = "once" if self.rate_limited == 1 else f"{self.rate_limited} times"
        paced = "" if self.rate is None else f", requests paced at {self.rate:.0f}/s"
        if self.lowest_limit >= self.concurrency:
            return f"rate limited {times}: concurrency stayed at {self.concurrency}{paced}"
        return (
            f"rate limited {times}: concurrency lowered to {self.lowest_limit} "
            f"for {self.seconds_below:.0f} s{paced}"
        )


def allowed(state: PacingState) -> int:
    """Transfers the state allows in flight: the whole part of the limit, at least one."""
    return max(1, math.floor(state.limit))


def is_stale(state: PacingState, ticket: int | None) -> bool:
    """Whether a request let go with ``ticket`` was sent before the latest decrease."""
    return ticket is not None and ticket < state.decreases


@attrs.frozen
class PacingPolicy:
    """The pure AIMD decisions for one batch of at most ``concurrency`` transfers in flight.

    ``decrease`` multiplies the limit on a rate-limit signal (floor one); ``increase`` is
    added per limit's worth of successes (each success adds ``increase / limit``);
    ``default_hold`` is the hold for a 429 without a usable Retry-After; ``max_hold`` caps
    any hold.
    """

    concurrency: int
    decrease: float = 0.5
    increase: float = 1.0
    default_hold: float = 1.0
    max_hold: float = 60.0
    #: Seconds over which successes are counted to estimate the host's sustainable rate.
    window: float = 1.0
    #: A signal sets the start rate to this share of the successes per second measured.
    rate_decrease: float = 0.9
    #: Starts per second added per success in slow start (the rate grows e-fold about
    #: every ``1 / slow_gain`` seconds), and per second of successes after it. Tuned with
    #: benchmarks/pacing_sim.py: a slow start that takes a second to find the host's rate
    #: costs a second's worth of recordings, and every overshoot a Retry-After's hold.
    slow_gain: float = 3.0
    rate_step: float = 5.0
    #: The start rate never drops below this.
    min_rate: float = 1.0

    def __attrs_post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {self.concurrency}")
        if not 0.0 < self.decrease < 1.0:
            raise ValueError(f"decrease must be between 0 and 1, not {self.decrease}")
        if self.increase <= 0.0:
            raise ValueError(f"increase must be positive, not {self.increase}")
        if self.default_hold < 0.0 or self.max_hold < 0.0:
            raise ValueError("holds must not be negative")
        if not 0.0 < self.rate_decrease <= 1.0:
            raise ValueError(f"rate_decrease must be in (0, 1], not {self.rate_decrease}")
        if min(self.window, self.slow_gain, self.rate_step, self.min_rate) <= 0.0:
            raise ValueError("window, slow_gain, rate_step and min_rate must be positive")

    def start(self, now: float) -> PacingState:
        """The state of a fresh batch: the full concurrency, nothing held, unpaced."""
        return PacingState(
            limit=float(self.concurrency),
            hold_until=now,
            lowest=self.concurrency,
            next_start=now,
            meter_since=now,
        )

    def is_rate_limit(self, status: int, retry_after: float | None) -> bool:
        """Whether a response is a rate-limit signal: 429, or 503 with a Retry-After."""
        return status == 429 or (status == 503 and retry_after is not None)

    def hold_for(self, retry_after: float | None) -> float:
        """Seconds to hold new requests after a signal carrying ``retry_after``."""
        if retry_after is None or not math.isfinite(retry_after):
            return min(self.default_hold, self.max_hold)
        return min(max(0.0, retry_after), self.max_hold)

    def measured(self, state: PacingState, now: float) -> float:
        """Successes per second over the last ``window``: the current window's count plus
        the share of the previous one that the sliding window still covers."""
        rolled = self._roll(state, now)
        share = 1.0 - min(1.0, (now - rolled.meter_since) / self.window)
        return (rolled.meter_count + rolled.meter_prev * share) / self.window

    def _roll(self, state: PacingState, now: float) -> PacingState:
        """The meter moved on to the window holding ``now``."""
        elapsed = now - state.meter_since
        if elapsed < self.window:
            return state
        windows = math.floor(elapsed / self.window)
        return attrs.evolve(
            state,
            meter_since=state.meter_since + windows * self.window,
            meter_prev=state.meter_count if windows == 1 else 0,
            meter_count=0,
        )

    def started(self, state: PacingState, now: float) -> PacingState:
        """A request started at ``now``: the next may start ``1 / rate`` later. The first
        start after a signal's hold sets the rate first (`paced`)."""
        if state.rate_due:
            state = self.paced(state, now)
        if state.rate is None:
            return state
        return attrs.evolve(state, next_start=max(now, state.next_start) + 1.0 / state.rate)

    def paced(self, state: PacingState, now: float) -> PacingState:
        """The start rate after a signal: ``rate_decrease`` of the successes per second
        measured over the window before the signal, or the one before this start if more
        (a round's successes may arrive after its first 429). The first signal begins a
        slow start (it only says the host has a limit); a later one says where the limit
        is and ends it. With no success measured the rate stays as it was."""
        measured = max(state.signalled_at_rate, self.measured(state, now))
        if state.rate is not None and state.threshold is None:
            # A signal in slow start: the rate had been growing by half in about a window,
            # so half of it is what last went through (TCP's ssthresh = cwnd / 2).
            measured = max(measured, state.rate * 0.5)
        if measured <= 0.0:
            return attrs.evolve(state, rate_due=False)
        rate = max(self.min_rate, measured * self.rate_decrease)
        lowest = rate if state.lowest_rate is None else min(state.lowest_rate, rate)
        return attrs.evolve(
            state,
            rate=rate,
            threshold=None if state.rate is None else rate,
            lowest_rate=lowest,
            rate_due=False,
        )

    def rate_limited(
        self,
        state: PacingState,
        now: float,
        retry_after: float | None = None,
        ticket: int | None = None,
        rate_hint: float = 0.0,
    ) -> PacingState:
        """A rate-limit signal at ``now`` for a request let go with ``ticket`` (None:
        unknown, counted as current): hold new requests, and lower the limit and the start
        rate unless the request predates the latest decrease. ``rate_hint``: successes per
        second another gate of the job measured when it saw this signal; the start rate
        after the hold is set from it if this gate measured less (a gate that has seen no
        success yet would otherwise start unpaced)."""
        hold_until = max(state.hold_until, now + self.hold_for(retry_after))
        signals = state.signals + 1
        if is_stale(state, ticket):
            return attrs.evolve(state, hold_until=hold_until, signals=signals)
        limit = max(1.0, math.floor(state.limit * self.decrease))
        below_since = state.below_since
        if below_since is None and limit < self.concurrency:
            below_since = now
        return attrs.evolve(
            self._roll(state, now),
            limit=limit,
            hold_until=hold_until,
            signals=signals,
            decreases=state.decreases + 1,
            lowest=min(state.lowest, int(limit)),
            below_since=below_since,
            next_start=hold_until,
            rate_due=True,
            signalled_at_rate=max(self.measured(state, now), rate_hint),
        )

    def succeeded(self, state: PacingState, now: float, ticket: int | None = None) -> PacingState:
        """A success at ``now`` for a request let go with ``ticket`` (None: counted as
        current): unless the request predates the latest decrease (it says nothing about
        the current pace), count it, raise the limit by ``increase / limit`` toward the
        configured concurrency and the start rate (by ``slow_gain`` in slow start, by
        ``rate_step / rate`` after it)."""
        if is_stale(state, ticket):
            return state
        rolled = self._roll(state, now)
        counted = attrs.evolve(rolled, meter_count=rolled.meter_count + 1)
        return self._raise_rate(self._raise_limit(counted, now))

    def _raise_rate(self, state: PacingState) -> PacingState:
        rate = state.rate
        if rate is None:
            return state
        if state.threshold is None or rate < state.threshold:
            return attrs.evolve(state, rate=rate + self.slow_gain)
        return attrs.evolve(state, rate=rate + self.rate_step / rate)

    def _raise_limit(self, state: PacingState, now: float) -> PacingState:
        if state.limit >= self.concurrency:
            return state
        limit = min(float(self.concurrency), state.limit + self.increase / state.limit)
        if allowed(attrs.evolve(state, limit=limit)) < self.concurrency:
            return attrs.evolve(state, limit=limit)
        below_seconds = state.below_seconds
        if state.below_since is not None:
            below_seconds += now - state.below_since
        return attrs.evolve(state, limit=limit, below_since=None, below_seconds=below_seconds)

    def wait(self, state: PacingState, now: float) -> float:
        """Seconds a new request must still wait for the hold to pass and its turn in the
        start rate to come (0 when it may go)."""
        return max(0.0, max(state.hold_until, state.next_start) - now)

    def may_start(self, state: PacingState, now: float, in_flight: int) -> bool:
        """Whether one more request may start now with ``in_flight`` already running."""
        return now >= state.hold_until and now >= state.next_start and in_flight < allowed(state)

    def report(self, state: PacingState, now: float) -> PacingReport:
        """What happened so far, counting the current spell below the concurrency to now."""
        below = state.below_seconds
        if state.below_since is not None:
            below += max(0.0, now - state.below_since)
        return PacingReport(
            concurrency=self.concurrency,
            limit=allowed(state),
            rate_limited=state.signals,
            decreases=state.decreases,
            lowest_limit=state.lowest,
            seconds_below=below,
            rate=state.rate,
            lowest_rate=state.lowest_rate,
        )


class PacingGate:
    """The asyncio side of :class:`PacingPolicy` for one batch; every request passes it.

    ::

        ticket = await gate.acquire()
        try:
            response = await send()
            if gate.policy.is_rate_limit(response.status, retry_after):
                gate.on_rate_limited(retry_after, ticket)
            else:
                gate.on_success(ticket)
        finally:
            gate.release()

    Waiters are served first come, first served; a slot is handed to the next waiter by
    ``release()`` (or when a hold passes, or the limit rises), so no newcomer overtakes them.
    """

    def __init__(self, concurrency: int, *, policy: PacingPolicy | None = None) -> None:
        self.policy = policy if policy is not None else PacingPolicy(concurrency)
        if self.policy.concurrency != concurrency:
            raise ValueError("policy.concurrency differs from concurrency")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._state: PacingState | None = None
        self._in_flight = 0
        self._waiters: deque[asyncio.Future[int]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def in_flight(self) -> int:
        """Requests between acquire() and release()."""
        return self._in_flight

    @property
    def waiting(self) -> int:
        """Requests waiting in acquire()."""
        return sum(1 for fut in self._waiters if not fut.done())

    @property
    def state(self) -> PacingState:
        """The current pure state (a fresh one before the first call)."""
        return self._current()

    @property
    def allowed(self) -> int:
        """Transfers allowed in flight now."""
        return allowed(self._current())

    def report(self) -> PacingReport:
        """What the pacing did so far."""
        return self.policy.report(self._current(), self._now())

    async def acquire(self) -> int:
        """Wait for a slot and for any hold to pass; return the request's ticket (pass it
        back to ``on_rate_limited`` / ``on_success``)."""
        state = self._current()
        now = self._now()
        if not self._waiters and self.policy.may_start(state, now, self._in_flight):
            self._in_flight += 1
            self._state = self.policy.started(state, now)
            return state.decreases
        fut: asyncio.Future[int] = self._get_loop().create_future()
        self._waiters.append(fut)
        self._dispatch()
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._in_flight -= 1  # handed a slot as we were cancelled: give it back
            else:
                self._forget(fut)
            self._dispatch()
            raise

    def release(self) -> None:
        """The request is over (whatever its outcome): free its slot."""
        if self._in_flight <= 0:
            raise RuntimeError("release() without a matching acquire()")
        self._in_flight -= 1
        self._dispatch()

    def on_rate_limited(
        self, retry_after: float | None = None, ticket: int | None = None, rate_hint: float = 0.0
    ) -> None:
        """A 429 (or 503 with Retry-After) answered the request let go with ``ticket``
        (``rate_hint``: see `PacingPolicy.rate_limited`)."""
        self._state = self.policy.rate_limited(
            self._current(), self._now(), retry_after, ticket, rate_hint
        )
        self._dispatch()

    def on_success(self, ticket: int | None = None) -> None:
        """The request let go with ``ticket`` succeeded."""
        self._state = self.policy.succeeded(self._current(), self._now(), ticket)
        self._dispatch()

    def answered(self, status: int, retry_after: float | None, ticket: int | None) -> bool:
        """Report an answer's status (a rate-limit signal, a success below 500, or neither);
        return whether it lowered the pace (a fresh signal)."""
        if self.policy.is_rate_limit(status, retry_after):
            before = self._current().decreases
            self.on_rate_limited(retry_after, ticket)
            return self._current().decreases != before
        if status < 500:
            self.on_success(ticket)
        return False

    # ----------------------------------------------------------------- internals

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def _now(self) -> float:
        return self._get_loop().time()

    def _current(self) -> PacingState:
        if self._state is None:
            self._state = self.policy.start(self._now())
        return self._state

    def _forget(self, fut: asyncio.Future[int]) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(fut)

    def _dispatch(self) -> None:
        """Hand free slots to waiters in order; arm a timer for the end of a hold."""
        now = self._now()
        while self._waiters and self.policy.may_start(self._current(), now, self._in_flight):
            fut = self._waiters.popleft()
            if fut.done():
                continue
            self._in_flight += 1
            state = self._current()
            self._state = self.policy.started(state, now)
            fut.set_result(state.decreases)
        wait = self.policy.wait(self._current(), now)
        if self._waiters and wait > 0 and self._timer is None:
            self._timer = self._get_loop().call_at(now + wait, self._hold_over)

    def _hold_over(self) -> None:
        self._timer = None
        self._dispatch()


def current_gate() -> PacingGate | None:
    """The gate of the batch the running task works for, if any."""
    return _CURRENT_GATE.get()


@contextlib.contextmanager
def batch_gate(gate: PacingGate) -> Iterator[None]:
    """Within the block (and in tasks created in it), requests pass ``gate``."""
    token = _CURRENT_GATE.set(gate)
    try:
        yield
    finally:
        _CURRENT_GATE.reset(token)


#: Reports an answer's status and Retry-After to the gate a request passed.
Answered = Callable[[int, float | None], bool]


def _unpaced(status: int, retry_after: float | None) -> bool:
    return False


@contextlib.asynccontextmanager
async def passage(gate: PacingGate | None) -> AsyncIterator[Answered]:
    """One request through ``gate`` (None: no gate, nothing waits): acquire a slot, yield
    the function that reports the answer, release the slot after the block."""
    if gate is None:
        yield _unpaced
        return
    ticket = await gate.acquire()
    try:
        yield lambda status, retry_after: gate.answered(status, retry_after, ticket)
    finally:
        gate.release()
