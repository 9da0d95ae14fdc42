"""The fake's recordings: deterministic generation, the store, filters and list order.

Pure: no aiohttp, no sockets. Recordings are generated from the seed and their position on
demand, so a catalogue of 100,000 holds no per-recording state until something asks; media
bodies are produced block by block (:data:`BLOCK`), so any byte range is cheap.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import hashlib
import math
import random
import struct
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, Final, Protocol
from urllib.parse import quote

import attrs

BLOCK: Final = 64 * 1024  # body generation unit: any block can be made without the earlier ones

_M64: Final = (1 << 64) - 1
_M62: Final = (1 << 62) - 1
_MUL: Final = 0x2545F4914F6CDD1D & _M62  # odd, so invertible modulo 2**62
_MUL_INV: Final = pow(_MUL, -1, 1 << 62)

_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_IST_MINUTES: Final = 330
# The newest generated recording: 2026-05-07 09:45:35.79276+05:30.
_ANCHOR_US: Final = 1_778_127_335_792_760
_NOW_US: Final = _ANCHOR_US + 6 * 3600 * 1_000_000
_OFFSETS: Final = (330, 330, 330, 330, 330, 330, 330, 0, 240, -300)
_CONFERENCES: Final = ("standup", "sales-sync", "support-bridge", "ops-review", "board")


def _mix64(x: int) -> int:
    """Return the splitmix64 finaliser of ``x``: a cheap, well-spread 64-bit hash."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _scramble(x: int) -> int:
    """Permute 62-bit integers invertibly (see :func:`_unscramble`)."""
    for _ in range(2):
        x = (x * _MUL) & _M62
        x ^= x >> 31
    return x


def _unscramble(y: int) -> int:
    """Invert :func:`_scramble`."""
    for _ in range(2):
        y ^= y >> 31
        y = (y * _MUL_INV) & _M62
    return y


def _encode_uuid(index: int, key: int) -> str:
    """Return a uuid4-shaped id from which :func:`_decode_uuid` recovers ``index``."""
    low = _scramble((index ^ key) & _M62)
    high = (_mix64(low ^ key) & ~0xF000 & _M64) | 0x4000
    return str(uuid.UUID(int=(high << 64) | (0b10 << 62) | low))


def _decode_uuid(text: str, key: int) -> int | None:
    """Return the index :func:`_encode_uuid` would have built ``text`` from (unverified)."""
    if len(text) != 36:
        return None
    try:
        value = uuid.UUID(text).int
    except ValueError:
        return None
    return (_unscramble(value & _M62) ^ key) & _M62


def seed_bytes(*parts: object) -> bytes:
    return ":".join(str(p) for p in parts).encode("utf-8", "surrogatepass")


def format_add_time(instant_us: int, offset_minutes: int) -> str:
    """Format an instant the way Vobiz does: ``2026-05-07 09:45:35.79276+05:30``."""
    tz = dt.timezone(dt.timedelta(minutes=offset_minutes))
    moment = (_EPOCH + dt.timedelta(microseconds=instant_us)).astimezone(tz)
    fraction = f"{moment.microsecond:06d}".rstrip("0") or "0"
    sign = "+" if offset_minutes >= 0 else "-"
    hours, minutes = divmod(abs(offset_minutes), 60)
    return f"{moment:%Y-%m-%d %H:%M:%S}.{fraction}{sign}{hours:02d}:{minutes:02d}"


def _instant_of(moment: dt.datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone(dt.timedelta(minutes=_IST_MINUTES)))
    return (moment - _EPOCH) // dt.timedelta(microseconds=1)


def parse_instant(text: str) -> int:
    """Parse a filter or ``add_time`` value to epoch microseconds; naive means IST."""
    return _instant_of(dt.datetime.fromisoformat(text.strip()))


def _wav_header(size: int) -> bytes:
    """Return a 44-byte RIFF/WAVE header for 8 kHz 16-bit mono PCM of ``size`` bytes in all."""
    data = max(0, size - 44)
    return (
        b"RIFF"
        + struct.pack("<I", min(size - 8, 0xFFFFFFFF) if size >= 8 else 0)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16)
        + b"data"
        + struct.pack("<I", min(data, 0xFFFFFFFF))
    )


# ID3v2.3 tag with no frames, then an MPEG-2.5 layer III frame header (FF E3), 8 kHz mono.
_ID3_HEADER: Final = b"ID3\x03\x00\x00\x00\x00\x00\x00" + b"\xff\xe3\x88\xc4"
_SYNC_HEADER: Final = b"\xff\xe3\x88\xc4"
_BYTES_PER_MS: Final = {"wav": 16, "mp3": 8}  # 8 kHz 16-bit PCM; 64 kbit/s MP3


def _header_for(container: str, header: str, size: int) -> bytes:
    if container == "wav":
        return _wav_header(size)
    return _ID3_HEADER if header == "id3" else _SYNC_HEADER


def _draw_duration_ms(rng: random.Random) -> int:
    """Draw a call length like real ones: median 40 s, from a few seconds to ten minutes."""
    seconds = min(600.0, max(3.0, rng.lognormvariate(math.log(40.0), 0.85)))
    return int(seconds * 1000) // 10 * 10


class RecordingOwner(Protocol):
    """What a recording asks of the fake serving it: its account, URL and body."""

    auth_id: str

    def recording_url(self, rid: str) -> str: ...

    def body(self, rid: str) -> bytes: ...

    def sha256(self, rid: str) -> str: ...


@attrs.frozen
class FakeRecording:
    """One recording of the fake: its wire fields plus the facts behind its media body."""

    recording_id: str
    call_uuid: str
    recording_format: str  #: what the API claims
    container: str  #: what the bytes really are: "mp3" or "wav"
    recording_type: str
    add_time: str
    recording_duration_ms: str
    recording_start_ms: str | None
    recording_end_ms: str | None
    rounded_recording_duration: int
    from_number: str
    to_number: str
    conference_name: str | None
    recording_storage_duration: int
    recording_storage_rate: float
    monthly_recording_storage_amount: int | float
    extra_fields: Mapping[str, Any] = attrs.field(hash=False)
    size: int
    redirect_foreign: bool
    extra_hops: int
    url_override: str | None
    header: str = attrs.field(repr=False)  #: "id3", "sync" or "riff"
    instant_us: int = attrs.field(repr=False)
    seeded_fault: int | None = attrs.field(repr=False)
    _owner: RecordingOwner = attrs.field(repr=False, eq=False)

    @property
    def recording_url(self) -> str:
        """The URL the API currently hands out (it changes after an ``expired`` fault)."""
        return self._owner.recording_url(self.recording_id)

    def wire(self) -> dict[str, Any]:
        """Return the object as the list endpoint sends it (retrieve adds ``api_id``)."""
        data: dict[str, Any] = {
            "add_time": self.add_time,
            "call_uuid": self.call_uuid,
            "conference_name": self.conference_name,
            "from_number": self.from_number,
            "monthly_recording_storage_amount": self.monthly_recording_storage_amount,
            "recording_duration_ms": self.recording_duration_ms,
            "recording_end_ms": self.recording_end_ms,
            "recording_format": self.recording_format,
            "recording_id": self.recording_id,
            "recording_start_ms": self.recording_start_ms,
            "recording_storage_duration": self.recording_storage_duration,
            "recording_storage_rate": self.recording_storage_rate,
            "recording_type": self.recording_type,
            "recording_url": self.recording_url,
            "resource_uri": (
                f"/v1/Account/{self._owner.auth_id}/Recording/{quote(self.recording_id, safe='')}/"
            ),
            "rounded_recording_duration": self.rounded_recording_duration,
            "to_number": self.to_number,
        }
        data.update(self.extra_fields)
        return data

    def body(self) -> bytes:
        """Return the exact bytes the media URL serves."""
        return self._owner.body(self.recording_id)

    def sha256(self) -> str:
        """Return the hex sha256 of :meth:`body`."""
        return self._owner.sha256(self.recording_id)


@attrs.frozen
class _Traits:
    recording_type: str
    container: str
    recording_format: str
    header: str
    redirect_foreign: bool
    seeded_fault: int | None
    instant_us: int
    offset_minutes: int


@attrs.frozen
class BulkFilter:
    gte: int | None = None
    gt: int | None = None
    lte: int | None = None
    lt: int | None = None
    call_uuid: str | None = None
    recording_type: str | None = None
    recording_format: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    conference_name: str | None = None

    @property
    def needs_full(self) -> bool:
        return any(v is not None for v in (self.from_number, self.to_number, self.conference_name))

    def cheap_ok(self, instant_us: int, recording_type: str, recording_format: str) -> bool:
        return (
            (self.gte is None or instant_us >= self.gte)
            and (self.gt is None or instant_us > self.gt)
            and (self.lte is None or instant_us <= self.lte)
            and (self.lt is None or instant_us < self.lt)
            and (self.recording_type is None or recording_type == self.recording_type)
            and (self.recording_format is None or recording_format == self.recording_format)
        )

    def full_ok(self, rec: FakeRecording) -> bool:
        return (
            self.cheap_ok(rec.instant_us, rec.recording_type, rec.recording_format)
            and (self.call_uuid is None or rec.call_uuid == self.call_uuid)
            and (self.from_number is None or rec.from_number == self.from_number)
            and (self.to_number is None or rec.to_number == self.to_number)
            and (self.conference_name is None or rec.conference_name == self.conference_name)
        )


def bulk_filter(query: Mapping[str, str]) -> BulkFilter | str:
    """Build the bulk-delete filter from a query, or return the 400 message."""
    times: dict[str, int] = {}
    for suffix in ("gte", "gt", "lte", "lt"):
        raw = query.get(f"add_time__{suffix}")
        if raw is None:
            continue
        try:
            times[suffix] = parse_instant(raw)
        except ValueError:
            return f"Invalid value for add_time__{suffix}: {raw!r}."
    return BulkFilter(
        gte=times.get("gte"),
        gt=times.get("gt"),
        lte=times.get("lte"),
        lt=times.get("lt"),
        call_uuid=query.get("call_uuid"),
        recording_type=query.get("recording_type"),
        recording_format=query.get("recording_format"),
        from_number=query.get("from_number"),
        to_number=query.get("to_number"),
        conference_name=query.get("conference_name"),
    )


@attrs.frozen
class Added:
    """What `Catalogue.add` is told about a recording added by hand (see `FakeVobiz`)."""

    recording_id: str | None = None
    size: int | None = None
    container: str = "mp3"
    recording_format: str | None = None
    recording_type: str = "call"
    call_uuid: str | None = None
    redirect_foreign: bool = False
    recording_url: str | None = None
    extra_fields: Mapping[str, Any] | None = None
    add_time: str | dt.datetime | None = None
    extra_hops: int = 0


def _conference(rng: random.Random, recording_type: str) -> str | None:
    if recording_type == "conference":
        return f"{rng.choice(_CONFERENCES)}-{rng.randint(100, 999)}"
    if recording_type == "call":
        return rng.choice((None, ""))
    return None


def _extras(rng: random.Random, extra_fields: Mapping[str, Any]) -> dict[str, Any]:
    extras: dict[str, Any] = {"recording_region": "ap-south-1"}
    if rng.random() < 0.3:
        extras["recording_channels"] = 1
    extras.update(extra_fields)
    return extras


class Catalogue:
    """Every recording of one fake: generated ones by position, added ones by hand.

    List order is newest first: the added recordings (latest addition first), then the
    generated ones by index. Removal is remembered, never undone.
    """

    def __init__(
        self,
        owner: RecordingOwner,
        recordings: int,
        *,
        seed: int,
        wav_as_mp3_rate: float = 0.0,
        foreign_redirect_rate: float = 0.0,
        fault_rate: float = 0.0,
    ) -> None:
        self._owner = owner
        self.seed = seed
        self.count = recordings
        key = _mix64(seed & _M64) ^ _mix64((seed >> 64) & _M64)
        self._key = key
        self._id_key = _mix64(key ^ 0x1D) & _M62
        self._call_key = _mix64(key ^ 0xCA11) & _M62
        self._thresholds = (
            int(wav_as_mp3_rate * 0x10000),
            int(foreign_redirect_rate * 0x10000),
            int(fault_rate * 0x10000),
        )
        day_us = 86_400 * 1_000_000
        self._gap_us = min(3600 * 1_000_000, max(20 * 1_000_000, 29 * day_us // max(1, recordings)))

        self._added: dict[str, FakeRecording] = {}  # every added recording, removed ones too
        self._added_live: list[str] = []  # newest first
        self._added_removed: set[str] = set()
        self._added_counter = 0
        self._newest_us = _ANCHOR_US
        self._removed: set[int] = set()
        self._removed_sorted: list[int] | None = []
        self.version = 0  #: bumped on every addition and removal
        self._filter_cache: dict[tuple[str | None, str | None], tuple[int, list[str | int]]] = {}
        self.generate = functools.lru_cache(maxsize=4096)(self.generate_uncached)
        self._etag_gen: dict[str, int] = {}
        self._sha_cache: dict[tuple[str, int], str] = {}

    # ----------------------------------------------------------------- generation

    def _hash(self, index: int, salt: int) -> int:
        return _mix64(self._key ^ ((index * 0x9E3779B97F4A7C15 + salt * 0xD1B54A32D192ED03) & _M64))

    def _gen_id(self, index: int) -> str:
        return _encode_uuid(index, self._id_key)

    def _gen_index_of(self, rid: str) -> int | None:
        index = _decode_uuid(rid, self._id_key)
        if index is None or index >= self.count or self._gen_id(index) != rid:
            return None
        return index

    def _gen_type(self, index: int) -> str:
        roll = self._hash(index, 1) & 0xFFFF
        if roll < 52429:  # 80 %
            return "call"
        return "conference" if roll < 60293 else "trunk"  # 12 %, 8 %

    def _shares_call(self, index: int) -> bool:
        return index > 0 and self._hash(index, 3) & 0xF == 0

    def _call_index(self, index: int) -> int:
        if self._shares_call(index) and not self._shares_call(index - 1):
            return index - 1
        return index

    def _call_indices(self, call_uuid: str) -> list[int]:
        """Generated indices whose call_uuid is ``call_uuid``."""
        call = _decode_uuid(call_uuid, self._call_key)
        if call is None or call >= self.count or _encode_uuid(call, self._call_key) != call_uuid:
            return []
        return [i for i in (call, call + 1) if i < self.count and self._call_index(i) == call]

    def _traits(self, index: int) -> _Traits:
        wav_as_mp3, foreign, faulty = self._thresholds
        h = self._hash(index, 2)
        wav_mp3 = (h & 0xFFFF) < wav_as_mp3
        container = "wav" if wav_mp3 or (h >> 52) & 0xF < 4 else "mp3"
        time_h = self._hash(index, 4)
        gap = self._gap_us
        instant = _ANCHOR_US - index * gap - time_h % (gap - 100)
        if (time_h >> 40) % 3 == 0:  # five fraction digits
            instant -= instant % 10
            if instant % 100 == 0:
                instant -= 10
        elif instant % 10 == 0:
            instant -= 1
        return _Traits(
            recording_type=self._gen_type(index),
            container=container,
            recording_format="mp3" if wav_mp3 else container,
            header="riff" if container == "wav" else ("id3" if (h >> 56) & 1 else "sync"),
            redirect_foreign=((h >> 16) & 0xFFFF) < foreign,
            seeded_fault=(h >> 48) % 4 if ((h >> 32) & 0xFFFF) < faulty else None,
            instant_us=instant,
            offset_minutes=_OFFSETS[(time_h >> 50) % len(_OFFSETS)],
        )

    def generate_uncached(self, index: int) -> FakeRecording:
        t = self._traits(index)
        return self._build(
            random.Random(seed_bytes(self.seed, "rec", index)),
            recording_id=self._gen_id(index),
            call_uuid=_encode_uuid(self._call_index(index), self._call_key),
            recording_type=t.recording_type,
            container=t.container,
            recording_format=t.recording_format,
            header=t.header,
            instant_us=t.instant_us,
            add_time=format_add_time(t.instant_us, t.offset_minutes),
            size=None,
            redirect_foreign=t.redirect_foreign,
            extra_hops=0,
            url_override=None,
            extra_fields={},
            seeded_fault=t.seeded_fault,
        )

    def _build(
        self,
        rng: random.Random,
        *,
        recording_id: str,
        call_uuid: str,
        recording_type: str,
        container: str,
        recording_format: str,
        header: str,
        instant_us: int,
        add_time: str,
        size: int | None,
        redirect_foreign: bool,
        extra_hops: int,
        url_override: str | None,
        extra_fields: Mapping[str, Any],
        seeded_fault: int | None,
    ) -> FakeRecording:
        drawn = _draw(rng, recording_type, container, header, size, instant_us, extra_fields)
        return FakeRecording(
            recording_id=recording_id,
            call_uuid=call_uuid,
            recording_format=recording_format,
            container=container,
            recording_type=recording_type,
            add_time=add_time,
            redirect_foreign=redirect_foreign,
            extra_hops=extra_hops,
            url_override=url_override,
            header=header,
            instant_us=instant_us,
            seeded_fault=seeded_fault,
            owner=self._owner,
            **drawn,
        )

    # ----------------------------------------------------------------- lookup and order

    def lookup(self, rid: str, *, live: bool = True) -> FakeRecording | None:
        rec = self._added.get(rid)
        if rec is not None:
            return None if live and rid in self._added_removed else rec
        index = self._gen_index_of(rid)
        if index is None or (live and index in self._removed):
            return None
        return self.generate(index)

    def require(self, rid: str, *, live: bool = True) -> FakeRecording:
        rec = self.lookup(rid, live=live)
        if rec is None:
            raise KeyError(rid)
        return rec

    def live_count(self) -> int:
        return len(self._added_live) + self.count - len(self._removed)

    def _sorted_removed(self) -> list[int]:
        if self._removed_sorted is None:
            self._removed_sorted = sorted(self._removed)
        return self._removed_sorted

    def iter_ids(self) -> Iterator[str]:
        yield from list(self._added_live)
        removed = self._removed
        for index in range(self.count):
            if index not in removed:
                yield self._gen_id(index)

    def _gen_index_at(self, position: int) -> int:
        """Return the generated index at ``position`` among the live generated ones."""
        removed = self._sorted_removed()
        low, high = position, position + len(removed)
        while low < high:
            mid = (low + high) // 2
            if mid + 1 - bisect.bisect_right(removed, mid) > position:
                high = mid
            else:
                low = mid + 1
        return low

    def page(self, offset: int, limit: int) -> list[FakeRecording]:
        added = self._added_live
        page = [self._added[rid] for rid in added[offset : offset + limit]]
        position = max(0, offset - len(added))
        if len(page) < limit and position < self.count - len(self._removed):
            index = self._gen_index_at(position)
            while len(page) < limit and index < self.count:
                if index not in self._removed:
                    page.append(self.generate(index))
                index += 1
        return page

    def matching(self, call_uuid: str | None, recording_type: str | None) -> list[str | int]:
        """Live entries (added ids, generated indices) matching the list filters, cached."""
        key = (call_uuid, recording_type)
        cached = self._filter_cache.get(key)
        if cached is not None and cached[0] == self.version:
            return cached[1]
        result: list[str | int] = [
            rid
            for rid in self._added_live
            if (call_uuid is None or self._added[rid].call_uuid == call_uuid)
            and (recording_type is None or self._added[rid].recording_type == recording_type)
        ]
        candidates = range(self.count) if call_uuid is None else self._call_indices(call_uuid)
        removed = self._removed
        result.extend(
            i
            for i in candidates
            if i not in removed and (recording_type is None or self._gen_type(i) == recording_type)
        )
        if len(self._filter_cache) > 32:
            self._filter_cache.clear()
        self._filter_cache[key] = (self.version, result)
        return result

    def entry(self, entry: str | int) -> FakeRecording:
        return self._added[entry] if isinstance(entry, str) else self.generate(entry)

    # ----------------------------------------------------------------- bodies

    def etag(self, rec: FakeRecording) -> str:
        generation = self._etag_gen.get(rec.recording_id, 0)
        seed = seed_bytes(self.seed, rec.recording_id, rec.size, generation)
        return f'"{hashlib.sha256(seed).hexdigest()[:32]}"'

    def block(self, rec: FakeRecording, block: int) -> bytes:
        start = block * BLOCK
        length = min(BLOCK, rec.size - start)
        data = random.Random(seed_bytes(self.seed, rec.recording_id, block)).randbytes(length)
        if block == 0:
            head = _header_for(rec.container, rec.header, rec.size)[:length]
            data = head + data[len(head) :]
        return data

    def iter_bytes(self, rec: FakeRecording, start: int, stop: int) -> Iterator[bytes]:
        block = start // BLOCK
        while start < stop:
            data = self.block(rec, block)
            base = block * BLOCK
            yield data[start - base : min(len(data), stop - base)]
            block += 1
            start = block * BLOCK

    def bump_etag(self, rid: str) -> None:
        """Give ``rid`` a new ETag for good (the ``etag_change`` fault)."""
        self._etag_gen[rid] = self._etag_gen.get(rid, 0) + 1

    def body(self, rec: FakeRecording) -> bytes:
        """Return the exact bytes the media URL of ``rec`` serves."""
        return b"".join(self.iter_bytes(rec, 0, rec.size))

    def sha256(self, rec: FakeRecording) -> str:
        """Return the hex sha256 of :meth:`body`, computed block by block and cached."""
        key = (rec.recording_id, rec.size)
        if key not in self._sha_cache:
            digest = hashlib.sha256()
            for piece in self.iter_bytes(rec, 0, rec.size):
                digest.update(piece)
            self._sha_cache[key] = digest.hexdigest()
        return self._sha_cache[key]

    # ----------------------------------------------------------------- changes

    def add(self, spec: Added) -> FakeRecording:
        """Add a recording at the front of the list (the newest) and return it."""
        if spec.container not in ("mp3", "wav"):
            raise ValueError(f"container must be 'mp3' or 'wav', not {spec.container!r}")
        if spec.size is not None and spec.size < 0:
            raise ValueError("size must not be negative")
        if spec.recording_id is not None and self.lookup(spec.recording_id, live=False) is not None:
            raise ValueError(f"recording {spec.recording_id!r} already exists")
        counter = self._added_counter
        self._added_counter += 1
        rng = random.Random(seed_bytes(self.seed, "added", counter))
        rid = spec.recording_id or str(uuid.UUID(int=rng.getrandbits(128), version=4))
        instant, add_time = self._added_time(rng, spec.add_time)
        container = spec.container
        rec = self._build(
            rng,
            recording_id=rid,
            call_uuid=spec.call_uuid or str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            recording_type=spec.recording_type,
            container=container,
            recording_format=spec.recording_format or container,
            header="riff" if container == "wav" else rng.choice(("id3", "sync")),
            instant_us=instant,
            add_time=add_time,
            size=spec.size,
            redirect_foreign=spec.redirect_foreign,
            extra_hops=spec.extra_hops,
            url_override=spec.recording_url,
            extra_fields=spec.extra_fields or {},
            seeded_fault=None,
        )
        self._added[rid] = rec
        self._added_live.insert(0, rid)
        self.version += 1
        return rec

    def _added_time(
        self, rng: random.Random, add_time: str | dt.datetime | None
    ) -> tuple[int, str]:
        """Return the instant and ``add_time`` text of an added recording.

        None means a little after the newest so far; a string is sent verbatim (and placed
        at the newest instant when it does not parse).
        """
        if add_time is None:
            self._newest_us += rng.randint(1_000_000, 59_000_000)
            return self._newest_us, format_add_time(self._newest_us, _IST_MINUTES)
        if isinstance(add_time, dt.datetime):
            delta = add_time.utcoffset()
            offset = _IST_MINUTES if delta is None else int(delta.total_seconds()) // 60
            instant = _instant_of(add_time)
            return instant, format_add_time(instant, offset)
        try:
            return parse_instant(add_time), add_time
        except ValueError:
            return self._newest_us, add_time or format_add_time(self._newest_us, _IST_MINUTES)

    def remove(self, rid: str) -> None:
        """Delete ``rid``; raise KeyError if it is not there."""
        if rid in self._added:
            if rid in self._added_removed:
                raise KeyError(rid)
            self._added_live.remove(rid)
            self._added_removed.add(rid)
        else:
            index = self._gen_index_of(rid)
            if index is None or index in self._removed:
                raise KeyError(rid)
            self._removed.add(index)
            self._removed_sorted = None
        self.version += 1

    def matching_bulk(self, flt: BulkFilter) -> list[str]:
        """The live ids a bulk delete with ``flt`` removes, in list order."""
        doomed = [rid for rid in self._added_live if flt.full_ok(self._added[rid])]
        candidates = (
            range(self.count) if flt.call_uuid is None else self._call_indices(flt.call_uuid)
        )
        removed = self._removed
        for index in candidates:
            if index in removed:
                continue
            t = self._traits(index)
            if not flt.cheap_ok(t.instant_us, t.recording_type, t.recording_format):
                continue
            if flt.needs_full and not flt.full_ok(self.generate_uncached(index)):
                continue
            doomed.append(self._gen_id(index))
        return doomed


def _draw(
    rng: random.Random,
    recording_type: str,
    container: str,
    header: str,
    size: int | None,
    instant_us: int,
    extra_fields: Mapping[str, Any],
) -> dict[str, Any]:
    """Draw the fields of a recording that come from its random stream, in a fixed order."""
    rate = _BYTES_PER_MS[container]
    head = len(_header_for(container, header, 0))
    if size is None:
        duration_ms = _draw_duration_ms(rng)
        size = head + duration_ms * rate
    else:
        duration_ms = max(0, size - head) // rate
    end_ms = instant_us // 1000 - rng.randint(200, 3000)
    no_times = recording_type == "trunk" and rng.random() < 0.5
    to_digits = f"91{rng.randint(6_000_000_000, 9_999_999_999)}"
    conference = _conference(rng, recording_type)
    extras = _extras(rng, extra_fields)
    monthly: int | float = 0 if rng.random() < 0.6 else round(size / 1e6 * 0.004, 6)
    from_number = f"+91{rng.randint(6_000_000_000, 9_999_999_999)}"
    return {
        "recording_duration_ms": f"{duration_ms:.5f}",
        "recording_start_ms": None if no_times else f"{end_ms - duration_ms:.5f}",
        "recording_end_ms": None if no_times else f"{end_ms:.5f}",
        "rounded_recording_duration": max(60, math.ceil(duration_ms / 60_000) * 60),
        "from_number": from_number,
        "to_number": to_digits if rng.random() < 0.3 else f"+{to_digits}",
        "conference_name": conference,
        "recording_storage_duration": max(0, (_NOW_US - instant_us) // 86_400_000_000),
        "recording_storage_rate": 0.004,
        "monthly_recording_storage_amount": monthly,
        "extra_fields": extras,
        "size": size,
    }


class RecordingsView(Mapping[str, FakeRecording]):
    """The live recordings in list order, materialised only as far as a caller looks."""

    def __init__(self, catalogue: Catalogue) -> None:
        self._catalogue = catalogue

    def __getitem__(self, rid: str) -> FakeRecording:
        rec = self._catalogue.lookup(rid)
        if rec is None:
            raise KeyError(rid)
        return rec

    def __contains__(self, rid: object) -> bool:
        return isinstance(rid, str) and self._catalogue.lookup(rid) is not None

    def __iter__(self) -> Iterator[str]:
        return self._catalogue.iter_ids()

    def __len__(self) -> int:
        return self._catalogue.live_count()
