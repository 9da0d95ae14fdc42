"""Connecting to a Ray cluster, or starting a local Ray that only this machine can reach.

`connect` is the one place the Ray engine calls `ray.init`. With an address it first checks,
with a plain TCP connect and a timeout, that something listens there: `ray.init` itself
retries an unreachable address for good, deaf to Ctrl-C and SIGTERM. `auto` is resolved as
Ray resolves it for a driver (`RAY_ADDRESS`, else the record `ray start` leaves in Ray's
temporary folder), but without Ray's fallback to any Ray process it finds on the machine.
Either failure is one `ConfigurationError` line naming `--ray-address` (exit 3 in the CLI).

Without an address a Ray of our own starts on 127.0.0.1 only. Ray 2.60 replaces a loopback
`_node_ip_address` by the machine's own address unless `ENABLE_RAY_CLUSTER` is off (a
setting read once, when Ray is imported: `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`), so it is
turned off for the start, in this process and for the processes Ray starts then; the GCS,
the raylet, the workers and both agents then bind 127.0.0.1 (their gRPC servers listen on
loopback only when their node address is loopback). A Ctrl-C while Ray starts stops it.
The dashboard is off, usage stats are off, and token authentication stays on (Ray's default
for a new local Ray) without Ray's notice about it on the user's terminal.

Ray 2.60's head always starts its API server process (`dashboard.py
--modules-to-load=UsageStatsHead`), even without the dashboard, and that module asks the
cloud metadata addresses (169.254.169.254, metadata.google.internal) which cloud it is on
before it reads the usage-stats setting. No Ray setting stops it; see the README.

`shard_size_for` sizes a job's shards from its size and the cluster's CPUs.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
import os
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Any

from .errors import ConfigurationError

__all__ = [
    "ADDRESS_FLAG",
    "SHARD_SIZES",
    "check_reachable",
    "connect",
    "dialled_address",
    "planning_cpus",
    "resolve_auto",
    "shard_size_for",
    "split_address",
]

#: How the address is named in every error: the CLI's flag.
ADDRESS_FLAG = "--ray-address"
#: The shard sizes `shard_size_for` picks from: a coarse ladder, so the same job cuts the
#: same shards (and keeps its shard keys for a re-run) while it grows within a step.
SHARD_SIZES = (50, 100, 250, 500, 1000, 2000)
#: Shards per CPU the sizing aims at: a slow shard then holds up a fraction of a CPU's share.
SHARDS_PER_CPU = 4
#: The port Ray Client (`ray://host`) listens on when the address names none.
RAY_CLIENT_PORT = 10001

#: What every Ray process this library starts finds in its environment.
_LOCAL_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}
#: Ray's switch between a cluster node's address and loopback for this machine's address.
_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
#: The logger of Ray's "Token authentication is enabled ..." notice.
_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


# -- shard sizing (pure) ----------------------------------------------------------------------


def shard_size_for(total_items: int, cpus: int, requested: int | None = None) -> int:
    """Recordings per shard: `requested` when the user set one (`--shard-size`), else the
    largest of `SHARD_SIZES` that still gives about `SHARDS_PER_CPU` shards per CPU, so
    every CPU gets work and no shard runs for long (never below 50, never above 2,000)."""
    if requested is not None:
        if requested < 1:
            raise ValueError("shard_size must be >= 1")
        return requested
    target = math.ceil(max(total_items, 1) / (max(cpus, 1) * SHARDS_PER_CPU))
    fitting = [size for size in SHARD_SIZES if size <= target]
    return fitting[-1] if fitting else SHARD_SIZES[0]


def planning_cpus(ray: Any) -> int:
    """The CPUs shards are sized for: the connected cluster's, else those a local Ray
    started here would have (Ray counts this process's CPUs, as below)."""
    if ray.is_initialized():
        return max(1, int(ray.cluster_resources().get("CPU", 1)))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


# -- addresses (pure) -------------------------------------------------------------------------


def split_address(address: str) -> tuple[str, int]:
    """`(host, port)` of `HOST:PORT`, `[V6]:PORT` or `ray://HOST[:PORT]`, else a
    `ConfigurationError` naming the flag."""
    rest = address.strip()
    client = rest.startswith("ray://")
    if client:
        rest = rest.removeprefix("ray://").rstrip("/")
    host, sep, port_text = rest.rpartition(":")
    if client and (not sep or "]" in port_text):
        host, port_text = rest, str(RAY_CLIENT_PORT)
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigurationError(
            f"{ADDRESS_FLAG} {address!r} is not an address: expected HOST:PORT, "
            "ray://HOST:PORT or auto"
        )
    return host, int(port_text)


def _display(host: str, port: int) -> str:
    try:
        bracket = ipaddress.ip_address(host).version == 6
    except ValueError:
        bracket = False
    return f"[{host}]:{port}" if bracket else f"{host}:{port}"


def _reason(err: OSError) -> str:
    """A short reason for a failed connect: `connection refused`, `timed out`, ..."""
    if isinstance(err, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(err, socket.gaierror):
        return "unknown host"
    if err.errno is not None:
        return os.strerror(err.errno).lower()
    return str(err) or type(err).__name__


# -- the checks -------------------------------------------------------------------------------


def check_reachable(address: str, timeout: float, *, dialled: str | None = None) -> None:
    """A TCP connect to the cluster's GCS (or Ray Client) port, within `timeout` seconds.

    `dialled` is the address Ray will really connect to, when it differs from the one given
    (Ray replaces a loopback host by this machine's address)."""
    host, port = split_address(dialled or address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as err:
        given = _display(*split_address(address))
        via = "" if dialled in (None, address) else f"; Ray dials {_display(host, port)}"
        raise ConfigurationError(
            f"cannot reach a Ray cluster at {given} ({ADDRESS_FLAG}{via}): {_reason(err)}"
        ) from None


def dialled_address(address: str) -> str:
    """The `HOST:PORT` `ray.init` connects to for `address` (a Ray Client `ray://` address
    as given): Ray replaces 127.0.0.1 and localhost by this machine's address."""
    if address.startswith("ray://"):
        return address
    import ray._private.services as ray_services  # Ray's own reading of an address

    try:
        return str(ray_services.canonicalize_bootstrap_address(address))
    except Exception:  # Ray's own parsing failed; split_address named the flag
        return address


def resolve_auto() -> str:
    """The address `auto` means: `RAY_ADDRESS`, else the cluster `ray start` last started on
    this machine, as Ray records it (`ray_current_cluster` in Ray's temporary folder)."""
    from_env = os.environ.get("RAY_ADDRESS", "").strip()
    if from_env and from_env != "auto":
        return from_env
    import ray._private.utils as ray_utils  # Ray's reading of the record `ray start` left

    recorded = ray_utils.read_ray_address(None)
    if not recorded:
        raise ConfigurationError(
            f"no running Ray cluster found for {ADDRESS_FLAG} auto: none was started on this "
            "machine with `ray start` and RAY_ADDRESS is not set; give HOST:PORT of the "
            "cluster's head, or leave out --ray-address for a local Ray"
        )
    return str(recorded)


# -- connecting -------------------------------------------------------------------------------


def connect(ray: Any, address: str | None, *, timeout: float = 15.0) -> bool:
    """Connect this process to Ray, or start a local Ray; whether we must `ray.shutdown()`.

    Already connected: nothing to do (False). `address` None: a local Ray on 127.0.0.1
    only. Otherwise `auto` or `HOST:PORT`, checked to be reachable within `timeout` seconds
    before `ray.init`. A Ctrl-C while Ray starts interrupts it and stops what it started.
    """
    if ray.is_initialized():
        return False
    if address is None:
        with _interruptible(ray):
            _start_local(ray)
        return True
    target = resolve_auto() if address.strip() == "auto" else address.strip()
    split_address(target)
    check_reachable(target, timeout, dialled=dialled_address(target))
    with _interruptible(ray):
        ray.init(address=target, log_to_driver=False, configure_logging=False)
    return True


def _start_local(ray: Any) -> None:
    """`ray.init` for a Ray of our own, bound to 127.0.0.1 (see the module doc)."""
    import ray._private.ray_constants as constants  # ENABLE_RAY_CLUSTER: no public setting

    cluster_mode = constants.ENABLE_RAY_CLUSTER
    os.environ.update(_LOCAL_ENV)
    # Off here (read at import, so set on the module) and in the processes Ray starts now,
    # which then take 127.0.0.1 for this machine's address too.
    constants.ENABLE_RAY_CLUSTER = False
    cluster_env = os.environ.get(_CLUSTER_ENV)
    os.environ[_CLUSTER_ENV] = "0"
    # Ray turns token authentication on for a new local Ray (unless RAY_AUTH_MODE says
    # otherwise) and says so on stderr, telling how to turn it off: it stays on, unsaid.
    auth_notice = logging.getLogger(_AUTH_LOGGER)
    auth_level = auth_notice.level
    auth_notice.setLevel(logging.ERROR)
    try:
        ray.init(
            # "local" starts a Ray of our own even where another one runs on this machine
            # (None would join the latest one started there, or RAY_ADDRESS).
            address="local",
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            # Worker output stays in the session's logs/ folder: the driver's stdout is the
            # CLI's, and its last line may be a JSON summary.
            log_to_driver=False,
            configure_logging=False,
        )
    finally:
        constants.ENABLE_RAY_CLUSTER = cluster_mode
        if cluster_env is None:
            os.environ.pop(_CLUSTER_ENV, None)
        else:
            os.environ[_CLUSTER_ENV] = cluster_env
        auth_notice.setLevel(auth_level)


@contextlib.contextmanager
def _interruptible(ray: Any) -> Iterator[None]:
    """Ctrl-C raises `KeyboardInterrupt` inside `ray.init`, which then stops what it started.

    Under `asyncio.run` the first SIGINT only cancels the main task, which cannot land while
    `ray.init` blocks the event loop's thread; for that call SIGINT is Python's default.
    """
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    # Ignored (a background job) stays ignored; a handler set outside Python stays too.
    swap = previous is not None and previous is not signal.SIG_IGN
    if swap:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            ray.shutdown()
        raise
    finally:
        if swap:
            signal.signal(signal.SIGINT, previous)
