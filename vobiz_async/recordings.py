"""`session.recordings`: the Recording resource."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs

from .batch import MAX_PACED_WAIT, BatchOptions, Engine
from .converter import structure
from .download import Downloader
from .errors import ResponseValidationError
from .manifest import MANIFEST_NAME, Manifest
from .models import ExportResult, Page, Recording
from .pager import AsyncPager
from .protocol import quote_path_segment
from .release import Candidates, Release
from .results import DeleteFailure, DownloadReport, DownloadResult, ProgressCallback
from .selection import Selection, Verdict
from .sinks import DirectorySink, Sink, sink_for
from .types import ApiClient, Destination, Layout, Metadata, Source

__all__ = ["MAX_PAGE_SIZE", "Recordings"]

logger = logging.getLogger("vobiz_async")

MAX_PAGE_SIZE = 100
#: DELETEs (and re-reads) in flight during `move_many`'s release pass, at most.
RELEASE_CONCURRENCY = 8
_BULK_DELETE_FILTERS = frozenset(
    {
        "add_time__gt",
        "add_time__gte",
        "add_time__lt",
        "add_time__lte",
        "call_uuid",
        "conference_name",
        "from_number",
        "to_number",
        "recording_format",
        "recording_type",
    }
)


def _query_value(value: object) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _keeper(selection: Selection, now: datetime) -> Callable[[Recording], bool | None]:
    def keep(recording: Recording) -> bool | None:
        verdict = selection.verdict(recording, now)
        return None if verdict is Verdict.UNREADABLE else verdict is Verdict.KEEP

    return keep


def _query(filters: Mapping[str, object]) -> dict[str, str]:
    return {key: _query_value(value) for key, value in filters.items() if value is not None}


def _move_index(sink: Sink, manifest: str | os.PathLike[str] | Manifest | None) -> Manifest:
    """The index `move` proves against and stamps: the caller's, or a folder's own, opened
    with `fsync` (a commit is on the disk before a DELETE relies on it)."""
    if isinstance(manifest, Manifest):
        return manifest
    if manifest is None:
        if not isinstance(sink, DirectorySink):
            raise ValueError("move needs an index (manifest=...) to prove and record deletions")
        manifest = sink.root / MANIFEST_NAME
    return Manifest(manifest, fsync=True)


class Recordings:
    """List, fetch, delete, export and download recordings."""

    def __init__(self, session: ApiClient) -> None:
        self._session = session

    async def get(self, recording_id: str) -> Recording:
        """One recording by id; `NotFoundError` when deleted or expired."""
        url = self._session.account_url("Recording", quote_path_segment(recording_id))
        body = await self._session.request("GET", url)
        if isinstance(body, Mapping) and "objects" in body:  # older docs: a list envelope
            objects = body.get("objects")
            if not isinstance(objects, list) or not objects or not isinstance(objects[0], Mapping):
                raise ResponseValidationError("recording envelope holds no object", body=body)
            body = {"api_id": body.get("api_id"), **objects[0]}
        return structure(body, Recording)

    def list(
        self,
        *,
        limit: int | None = None,
        offset: int | None = None,
        call_uuid: str | None = None,
        recording_type: str | None = None,
        page_concurrency: int = 8,
        selection: Selection | None = None,
        now: datetime | None = None,
        **filters: object,
    ) -> AsyncPager:
        """A pager: `await` it for the first `Page`, `async for` it for every `Recording`.

        `limit` is the page size (1 to 100; the API's default is 20; for large listings 100
        means fewer round trips). `page_concurrency` pages are fetched at once after the
        first. Other keyword filters
        (`add_time__gte`, `from_number`, …) are passed through; Vobiz documents only
        `call_uuid` and `recording_type` for listing.

        `selection` passes `selection.server_filters(now)` along and applies
        `selection.verdict` to every listed recording on the client (`now` defaults to the
        current time, once per listing); recordings whose needed field is unreadable are
        left out and counted in the pager's `unreadable`.
        """
        if limit is not None and not 1 <= limit <= MAX_PAGE_SIZE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}")
        if offset is not None and offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        at = now if now is not None else datetime.now(UTC)
        params = _query(
            {
                "limit": limit,
                "offset": offset,
                "call_uuid": call_uuid,
                "recording_type": recording_type,
                **(selection.server_filters(at) if selection is not None else {}),
                **filters,
            }
        )
        keep = None if selection is None else _keeper(selection, at)
        return AsyncPager(self._fetch_page, params, concurrency=page_concurrency, keep=keep)

    async def _fetch_page(self, params: Mapping[str, str]) -> Page:
        body = await self._session.request(
            "GET", self._session.account_url("Recording"), params=params
        )
        return structure(body, Page)

    async def delete(self, recording_id: str) -> None:
        """Delete one recording (204); `NotFoundError` when it is already gone."""
        url = self._session.account_url("Recording", quote_path_segment(recording_id))
        await self._session.request("DELETE", url)

    async def bulk_delete(self, *, all_recordings: bool = False, **filters: object) -> Any:
        """Delete every recording matching the filters, in the background (202).

        Filters travel in the query string (`add_time__lte`, `call_uuid`, `from_number`, …).
        With no filter this would delete the whole account, so it is refused unless
        `all_recordings=True`. Returns the parsed body, whose shape Vobiz does not document.
        """
        unknown = set(filters) - _BULK_DELETE_FILTERS
        if unknown:
            raise TypeError(f"unknown bulk_delete filter(s): {', '.join(sorted(unknown))}")
        params = _query(filters)
        if not params and not all_recordings:
            raise ValueError(
                "bulk_delete without filters deletes every recording; "
                "pass all_recordings=True if that is what you mean"
            )
        url = self._session.account_url("Recording", "BulkDelete")
        return await self._session.request("DELETE", url, params=params)

    async def export(
        self,
        recipients: Sequence[str] | str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        **storage_duration: int,
    ) -> ExportResult:
        """Ask Vobiz to e-mail an export of recordings (202). Never retried.

        Select by time (`start`/`end`) or by `recording_storage_duration[__gt|__gte|__lt|
        __lte]=days`, not both. `PermissionDeniedError` (403) means an export is already
        running.
        """
        emails = [recipients] if isinstance(recipients, str) else list(recipients)
        if not emails or not all(isinstance(e, str) and "@" in e for e in emails):
            raise ValueError("export needs at least one recipient e-mail address")
        allowed = {"recording_storage_duration"} | {
            f"recording_storage_duration__{op}" for op in ("gt", "gte", "lt", "lte")
        }
        unknown = set(storage_duration) - allowed
        if unknown:
            raise TypeError(f"unknown export filter(s): {', '.join(sorted(unknown))}")
        by_time = start is not None or end is not None
        if by_time == bool(storage_duration):
            raise ValueError(
                "export selects by start/end or by recording_storage_duration, exactly one"
            )
        payload: dict[str, Any] = {"recipient": {"customer_account": emails}}
        if by_time:
            if start is None or end is None:
                raise ValueError("export by time needs both start and end")
            payload["from"] = _query_value(start)
            payload["to"] = _query_value(end)
        payload.update(storage_duration)
        url = self._session.account_url("export", "recording")
        body = await self._session.request("POST", url, json=payload, retry=False)
        return structure(body, ExportResult)

    async def download(
        self,
        recording: Recording | str,
        dest: Destination,
        **options: Any,
    ) -> DownloadResult:
        """Download one recording (or id) into `dest`; failures come back as a failed result.

        Options are those of `download_many` except `concurrency`.
        """
        return await Downloader(
            self._session, dest, concurrency=1, lookup=self.get, **options
        ).download(recording)

    async def download_many(
        self,
        source: Source,
        dest: Destination,
        *,
        concurrency: int = 16,
        on_progress: ProgressCallback | None = None,
        manifest: str | os.PathLike[str] | Manifest | None = None,
        overwrite: bool = False,
        max_attempts: int = 5,
        fsync: bool = False,
        layout: Layout = "flat",
        trusted_hosts: Iterable[str] | None = None,
        max_paced_wait: float = MAX_PACED_WAIT,
        engine: Engine | None = None,
        metadata: Metadata | None = None,
    ) -> DownloadReport:
        """Download every recording of `source` into `dest`, `concurrency` at a time.

        `source` is any iterable or async iterable of `Recording` or id strings, such as
        `session.recordings.list()`: downloads start with its first page. One item's failure
        is recorded and the rest go on; an error raised by `source` itself propagates after
        in-flight transfers are cancelled (their `.part` files stay for a later resume).

        A transfer is tried up to `max_attempts` times; a 429 or 503 whose `Retry-After` was
        honoured is the server pacing the batch, not a failed attempt, so it only counts
        against `max_paced_wait`, the seconds one recording may spend waiting on them.

        `engine` (such as `vobiz_async.scaleout.RayEngine`) runs the job elsewhere, in
        shards; `concurrency` then stays the total in flight across the job.

        `metadata="sidecar"` stores beside each recording `<its key without extension>.json`,
        its wire object (`Recording.to_dict()`, the URL without its query), whole, before
        the recording is reported downloaded; a skipped recording whose sidecar is missing
        gets it too.
        """
        options = BatchOptions(
            concurrency=concurrency,
            on_progress=on_progress,
            manifest=manifest,
            overwrite=overwrite,
            max_attempts=max_attempts,
            fsync=fsync,
            layout=layout,
            trusted_hosts=trusted_hosts,
            max_paced_wait=max_paced_wait,
            metadata=metadata,
        )
        if engine is not None:
            return await engine.run(self._session, source, dest, options)
        downloader = Downloader(
            self._session, dest, lookup=self.get, **attrs.asdict(options, recurse=False)
        )
        return await downloader.run(source)

    async def move_many(
        self,
        source: Source,
        dest: Destination,
        *,
        max_delete: int | None = None,
        concurrency: int = 16,
        on_progress: ProgressCallback | None = None,
        manifest: str | os.PathLike[str] | Manifest | None = None,
        overwrite: bool = False,
        max_attempts: int = 5,
        fsync: bool = True,
        layout: Layout = "flat",
        trusted_hosts: Iterable[str] | None = None,
        max_paced_wait: float = MAX_PACED_WAIT,
        engine: Engine | None = None,
    ) -> DownloadReport:
        """Archive `source` as `download_many` does, then delete at Vobiz what the archive
        provably holds (`vobiz_async.release`), only after the whole source is archived.

        A changed archived copy is fetched again first. At most `max_delete` DELETEs (a 404
        counts as deleted); `report.release_stopped` says what stopped them early. Object
        storage needs `manifest`; a folder's default is `dest/vobiz-manifest.jsonl`.
        """
        if not fsync:
            raise ValueError("move always fsyncs what it archives: fsync=False is refused")
        sink = sink_for(dest, layout=layout, fsync=True)
        index = _move_index(sink, manifest)
        width = min(concurrency, RELEASE_CONCURRENCY)
        release = Release(self.delete, sink, index, max_delete=max_delete, concurrency=width)
        options: dict[str, Any] = {
            "concurrency": concurrency,
            "manifest": index,
            "max_attempts": max_attempts,
            "fsync": True,
            "layout": layout,
            "trusted_hosts": trusted_hosts,
            "max_paced_wait": max_paced_wait,
        }
        try:
            candidates = Candidates(then=on_progress)
            report = await self.download_many(
                source, dest, on_progress=candidates, overwrite=overwrite, engine=engine, **options
            )
            await release.run(candidates.found)
            replaced = await self._repair_and_release(release, dest, on_progress, options)
            await release.settle_unfinished(self.get, skip=candidates.found.keys())
        finally:
            if index is not manifest:
                index.close()
        outcome = release.outcome
        if outcome.stopped is not None:
            logger.info("%s", outcome.stopped)
        return report.with_release(
            deleted=outcome.deleted,
            replaced=replaced,
            failures=outcome.failures,
            stopped=outcome.stopped,
        )

    async def _repair_and_release(
        self,
        release: Release,
        dest: Destination,
        on_progress: ProgressCallback | None,
        options: dict[str, Any],
    ) -> dict[str, DownloadResult]:
        """Fetch again (locally, `overwrite`) the recordings whose archived copy failed its
        proof, and release those whose new copy passes; their new results, by id."""
        outcome = release.outcome
        if not outcome.repair:
            return {}
        again = Candidates(then=on_progress)
        repair = await self.download_many(
            outcome.repair, dest, on_progress=again, overwrite=True, **options
        )
        outcome.failures.extend(
            DeleteFailure(r.recording_id, r.error) for r in repair.failed if r.error is not None
        )
        await release.run(again.found, repaired=True)
        return {r.recording_id: r for r in repair.results}
