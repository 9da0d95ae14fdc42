"""Workloads: synthetic recordings on tmpfs or disk, cached by spec, with their sha256."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import struct
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

KIB = 1024
MIB = 1024 * KIB
BENCH_DIR = Path(__file__).resolve().parent.parent
WORK_DIR = BENCH_DIR / "work"
STORAGE_ROOTS = {
    "tmpfs": Path("/dev/shm/vobiz-bench"),
    "disk": WORK_DIR / "data",
}
OUTPUT_ROOTS = {
    # VOBIZ_BENCH_OUT: a folder of one's own, when another checkout benchmarks at once.
    "tmpfs": Path(os.environ.get("VOBIZ_BENCH_OUT", "/dev/shm/vobiz-bench-out")),
    "disk": WORK_DIR / "out",
}
WAV_SHARE = 0.25


@dataclass(frozen=True)
class Workload:
    """How many recordings and how big: a fixed size or log-normal sizes clamped to a range."""

    name: str
    count: int
    size: int = 0
    median: int = 0
    sigma: float = 0.0
    low: int = 0
    high: int = 0
    seed: int = 1

    @property
    def key(self) -> str:
        """Directory name of the cached data: changes whenever the spec changes."""
        digest = hashlib.sha256(repr(self).encode()).hexdigest()[:10]
        return f"{self.name}-{digest}"

    def describe(self) -> str:
        if self.size:
            return f"{self.count:,} x {human_bytes(self.size)}"
        return (
            f"{self.count:,} files, log-normal sizes (median {human_bytes(self.median)}) "
            f"between {human_bytes(self.low)} and {human_bytes(self.high)}"
        )

    def sizes(self, rng: random.Random) -> list[int]:
        if self.size:
            return [self.size] * self.count
        mu = math.log(self.median)
        return [
            min(self.high, max(self.low, int(rng.lognormvariate(mu, self.sigma))))
            for _ in range(self.count)
        ]


WORKLOADS = {
    "small": Workload("small", 2000, size=100 * KIB),
    "large": Workload("large", 100, size=10 * MIB),
    "mix": Workload("mix", 300, median=1_000_000, sigma=1.2, low=50_000, high=20_000_000),
    "listing": Workload("listing", 20_000, size=4 * KIB),
}
SMOKE_WORKLOADS = {
    "smoke": Workload("smoke", 40, median=150_000, sigma=1.0, low=50_000, high=2_000_000),
    "smoke-listing": Workload("smoke-listing", 300, size=2 * KIB),
}


@dataclass(frozen=True)
class Recording:
    """One generated file: its recording id, file name, container, size and sha256."""

    recording_id: str
    name: str
    container: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Dataset:
    workload: Workload
    storage: str
    directory: Path
    recordings: list[Recording]

    @property
    def total_bytes(self) -> int:
        return sum(rec.size for rec in self.recordings)

    @property
    def url_path(self) -> str:
        """Path prefix under which the media server exposes this dataset."""
        return f"/{self.storage}/{self.workload.key}"


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} GiB"


def syncsafe(n: int) -> bytes:
    """ID3v2 size: four 7-bit bytes."""
    return bytes((n >> shift) & 0x7F for shift in (21, 14, 7, 0))


def mp3_header() -> bytes:
    """An ID3v2.4 tag with a title frame, then an MPEG-2.5 layer III frame header."""
    title = b"\x03vobiz benchmark"
    frame = b"TIT2" + syncsafe(len(title)) + b"\x00\x00" + title
    return b"ID3\x04\x00\x00" + syncsafe(len(frame)) + frame + b"\xff\xe3\x18\xc4"


def wav_header(data_len: int) -> bytes:
    """A canonical 44-byte PCM WAV header: 8 kHz, mono, 16 bit."""
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        *(b"RIFF", 36 + data_len, b"WAVE", b"fmt ", 16, 1, 1, 8000, 16000, 2, 16),
        *(b"data", data_len),
    )


def write_recording(path: Path, container: str, size: int) -> str:
    """Write header plus random bytes, exactly `size` long; return the sha256."""
    header = wav_header(size - 44) if container == "wav" else mp3_header()
    digest = hashlib.sha256(header)
    with path.open("wb") as f:
        f.write(header)
        remaining = size - len(header)
        while remaining:
            block = os.urandom(min(remaining, 4 * MIB))
            digest.update(block)
            f.write(block)
            remaining -= len(block)
    return digest.hexdigest()


def generate(workload: Workload, directory: Path) -> list[Recording]:
    rng = random.Random(workload.seed)
    recordings = []
    for size in workload.sizes(rng):
        recording_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        container = "wav" if rng.random() < WAV_SHARE else "mp3"
        name = f"{recording_id}.{container}"
        sha = write_recording(directory / name, container, size)
        recordings.append(Recording(recording_id, name, container, size, sha))
    return recordings


def ensure_dataset(workload: Workload, storage: str) -> Dataset:
    """Generate the workload's files once per storage; later runs reuse them."""
    directory = STORAGE_ROOTS[storage] / workload.key
    index = directory / "index.json"
    if index.exists():
        recordings = [Recording(**item) for item in json.loads(index.read_text())]
    else:
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        print(f"[bench] generating {workload.name} ({workload.describe()}) in {directory}")
        recordings = generate(workload, directory)
        index.write_text(json.dumps([asdict(rec) for rec in recordings]))
    return Dataset(workload, storage, directory, recordings)


@dataclass(frozen=True)
class Verification:
    """How an output directory compares with the dataset it was downloaded from."""

    ok: bool
    missing: int
    mismatched: int
    extra: list[str]


def verify(dataset: Dataset, out_dir: Path, allowed_extra: frozenset[str]) -> Verification:
    """Check every expected file by size and sha256, and list anything unexpected."""
    present = {p.name for p in out_dir.iterdir()} if out_dir.exists() else set()
    missing = mismatched = 0
    for rec in dataset.recordings:
        path = out_dir / rec.name
        if rec.name not in present:
            missing += 1
        elif path.stat().st_size != rec.size or sha256_of(path) != rec.sha256:
            mismatched += 1
    expected = {rec.name for rec in dataset.recordings} | allowed_extra
    extra = sorted(present - expected)
    return Verification(not (missing or mismatched or extra), missing, mismatched, extra)


def sha256_of(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def fresh_output_dir(storage: str, label: str) -> Path:
    out = OUTPUT_ROOTS[storage] / label
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    return out
