"""Simulate a batch against a token-bucket media host: `vobiz_async.pacing` versus none.

A discrete-event simulation, no sockets and no sleeping, so it runs in milliseconds and is
exact for a given model: `N` recordings, each request takes `latency` seconds, the host lets
`rate` requests/s through with bursts of `burst` and answers the others 429 with
`Retry-After: retry_after`. Two clients:

- `no pacing`: `concurrency` in flight, each 429 retried by its own request after the
  Retry-After, at most `attempts` attempts per recording (the library before issue 17);
- `PacingPolicy(...)`: every request passes the pure AIMD policy (what `PacingGate` does),
  a 429 is retried, never counted as a failed attempt.

    .venv/bin/python benchmarks/experiments/pacing_sim.py [--recordings 600] [--concurrency 64]

It prints, per latency and client: wall time, recordings archived, 429s received and the
pacing report. Use it to tune the policy before measuring the real thing with
`benchmarks/run --profile wan`.
"""

from __future__ import annotations

import argparse
import heapq
from dataclasses import dataclass

from vobiz_async.pacing import PacingPolicy


@dataclass
class Bucket:
    rate: float
    burst: int
    tokens: float = 0.0
    then: float = 0.0

    def __post_init__(self) -> None:
        self.tokens = float(self.burst)

    def take(self, now: float) -> bool:
        self.tokens = min(float(self.burst), self.tokens + (now - self.then) * self.rate)
        self.then = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(frozen=True)
class Outcome:
    wall_s: float
    archived: int
    http_429: int
    note: str


def unpaced(
    n: int, concurrency: int, latency: float, bucket: Bucket, retry_after: float, attempts: int
) -> Outcome:
    """A fixed number in flight; each 429 waits its own Retry-After, up to `attempts` tries."""
    now, seq, n429, done, failed = 0.0, 0, 0, 0, 0
    ready = list(range(n))  # recordings ready to start now
    tries = [0] * n
    waiting: list[tuple[float, int, int]] = []  # (ready again at, seq, recording)
    running: list[tuple[float, int, int, bool]] = []  # (ends at, seq, recording, ok)
    while done + failed < n:
        while ready and len(running) < concurrency:
            rec = ready.pop()
            tries[rec] += 1
            seq += 1
            heapq.heappush(running, (now + latency, seq, rec, bucket.take(now)))
        now = min(
            running[0][0] if running else float("inf"), waiting[0][0] if waiting else float("inf")
        )
        while waiting and waiting[0][0] <= now:
            ready.append(heapq.heappop(waiting)[2])
        while running and running[0][0] <= now:
            _, _, rec, ok = heapq.heappop(running)
            if ok:
                done += 1
            elif tries[rec] >= attempts:
                n429 += 1
                failed += 1
            else:
                n429 += 1
                seq += 1
                heapq.heappush(waiting, (now + retry_after, seq, rec))
    return Outcome(now, done, n429, f"{failed} failed after {attempts} attempts")


def paced(
    n: int, policy: PacingPolicy, latency: float, bucket: Bucket, retry_after: float
) -> Outcome:
    """Every request through the pure policy; a 429 goes back to the queue."""
    state = policy.start(0.0)
    now, seq, n429, done, queued, in_flight = 0.0, 0, 0, 0, n, 0
    running: list[tuple[float, int, int, bool]] = []  # (ends at, seq, ticket, ok)
    while done < n:
        while queued and policy.may_start(state, now, in_flight):
            queued -= 1
            in_flight += 1
            seq += 1
            heapq.heappush(running, (now + latency, seq, state.decreases, bucket.take(now)))
            state = policy.started(state, now)
        upcoming = running[0][0] if running else float("inf")
        if queued and (wait := policy.wait(state, now)) > 0:
            upcoming = min(upcoming, now + wait)
        now = upcoming
        while running and running[0][0] <= now:
            _, _, ticket, ok = heapq.heappop(running)
            in_flight -= 1
            if ok:
                done += 1
                state = policy.succeeded(state, now, ticket)
            else:
                n429 += 1
                queued += 1
                state = policy.rate_limited(state, now, retry_after, ticket)
    return Outcome(now, done, n429, policy.report(state, now).describe() or "never limited")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recordings", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rate", type=float, default=150.0)
    parser.add_argument("--burst", type=int, default=20)
    parser.add_argument("--retry-after", type=float, default=1.0)
    parser.add_argument("--attempts", type=int, default=5)
    parser.add_argument("--latency-ms", type=float, action="append")
    args = parser.parse_args()
    latencies = args.latency_ms or [60.0, 30.0, 2.0]
    ideal = args.recordings / args.rate
    print(
        f"{args.recordings} recordings, {args.concurrency} in flight, host {args.rate:g}/s "
        f"burst {args.burst}, Retry-After {args.retry_after:g} s; ideal {ideal:.1f} s"
    )
    print("| latency ms | client | wall s | archived | 429s | note |")
    print("|---|---|---|---|---|---|")
    for latency_ms in latencies:
        latency = latency_ms / 1000
        rows = [
            (
                "no pacing",
                unpaced(
                    args.recordings,
                    args.concurrency,
                    latency,
                    Bucket(args.rate, args.burst),
                    args.retry_after,
                    args.attempts,
                ),
            )
        ]
        for label, policy in (
            ("AIMD + start rate (defaults)", PacingPolicy(args.concurrency)),
            ("slow_gain 2", PacingPolicy(args.concurrency, slow_gain=2.0)),
            ("rate_step 20", PacingPolicy(args.concurrency, rate_step=20.0)),
            ("concurrency only", PacingPolicy(args.concurrency, slow_gain=1e-9, min_rate=1e9)),
        ):
            rows.append(
                (
                    label,
                    paced(
                        args.recordings,
                        policy,
                        latency,
                        Bucket(args.rate, args.burst),
                        args.retry_after,
                    ),
                )
            )
        for label, out in rows:
            print(
                f"| {latency_ms:g} | {label} | {out.wall_s:.2f} | {out.archived} | "
                f"{out.http_429} | {out.note} |"
            )


if __name__ == "__main__":
    main()
