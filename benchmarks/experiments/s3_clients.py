"""Which S3 client for S3Sink: obstore or aiobotocore, streamed uploads into moto on 127.0.0.1.

    .venv/bin/python benchmarks/experiments/s3_clients.py --sizes 20 200 --reps 3

The parent starts moto (`ThreadedMotoServer`, 127.0.0.1 only) and runs every upload in a
fresh child process, so each figure is the client's own peak RSS (VmHWM of the child:
interpreter, client library, the parts in flight) and wall time of one streamed upload of
N MiB, fed as 256 KiB chunks from an async generator the way the downloader hands them
over. Both clients use 8 MiB parts with at most 4 in flight. Then the batch scenario: 16
recordings of `--batch-mib` MiB at once, through the shipped `S3Sink` (64 MiB budget) and
through 16 concurrent obstore puts with one part in flight each. A last probe per client
feeds 12 MiB and then raises (a media source that fails for good) and counts the
incomplete multipart uploads left in the bucket: the integrity contract needs zero.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator

CHUNK = 256 * 1024
PART = 8 * 1024 * 1024
IN_FLIGHT = 4
BUCKET = "bench"


class SourceFailed(Exception):
    """The media source broke for good (the abort probe)."""


async def chunks(total: int, fail_after: int | None = None) -> AsyncIterator[bytes]:
    block = os.urandom(CHUNK)
    sent = 0
    while sent < total:
        if fail_after is not None and sent >= fail_after:
            raise SourceFailed
        n = min(CHUNK, total - sent)
        yield bytes(memoryview(block)[:n])  # a fresh object, as a socket read gives
        sent += n
        await asyncio.sleep(0)


async def upload_obstore(endpoint: str, total: int, fail_after: int | None) -> None:
    import obstore
    from obstore.store import S3Store

    store = S3Store(
        BUCKET,
        endpoint=endpoint,
        region="us-east-1",
        client_options={"allow_http": True},
        checksum_algorithm="sha256",
    )
    await obstore.put_async(
        store,
        "obj.bin",
        chunks(total, fail_after),
        chunk_size=PART,
        max_concurrency=IN_FLIGHT,
        attributes={"Content-Type": "audio/mpeg"},
    )


async def upload_aiobotocore(endpoint: str, total: int, fail_after: int | None) -> None:
    """The smallest honest part loop: buffer a part, upload up to 4 at once, abort on error."""
    from aiobotocore.session import get_session

    async with get_session().create_client(
        "s3", endpoint_url=endpoint, region_name="us-east-1"
    ) as client:
        up = await client.create_multipart_upload(
            Bucket=BUCKET, Key="obj.bin", ContentType="audio/mpeg"
        )
        upload_id = up["UploadId"]
        slots = asyncio.Semaphore(IN_FLIGHT)
        parts: dict[int, str] = {}
        tasks: list[asyncio.Task[None]] = []

        async def send(number: int, body: bytes) -> None:
            try:
                resp = await client.upload_part(
                    Bucket=BUCKET,
                    Key="obj.bin",
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=body,
                    ChecksumAlgorithm="SHA256",
                )
                parts[number] = resp["ETag"]
            finally:
                slots.release()

        try:
            buf = bytearray()
            number = 0
            async for chunk in chunks(total, fail_after):
                buf += chunk
                if len(buf) >= PART:
                    await slots.acquire()
                    number += 1
                    tasks.append(asyncio.create_task(send(number, bytes(buf))))
                    buf.clear()
            if buf:
                await slots.acquire()
                number += 1
                tasks.append(asyncio.create_task(send(number, bytes(buf))))
            await asyncio.gather(*tasks)
            await client.complete_multipart_upload(
                Bucket=BUCKET,
                Key="obj.bin",
                UploadId=upload_id,
                MultipartUpload={
                    "Parts": [{"PartNumber": n, "ETag": parts[n]} for n in sorted(parts)]
                },
            )
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await client.abort_multipart_upload(Bucket=BUCKET, Key="obj.bin", UploadId=upload_id)
            raise


async def batch_s3sink(endpoint: str, total: int, fail_after: int | None) -> None:
    """The shipped S3Sink: 16 recordings of `total` bytes at once, default 64 MiB budget."""
    import datetime as dt
    from decimal import Decimal

    from vobiz_async import Recording
    from vobiz_async.sinks import S3Sink

    def rec(i: int) -> Recording:
        return Recording(
            recording_id=f"r{i}", call_uuid="c", recording_url="https://x/y",
            recording_format="mp3", recording_type="trunk",
            add_time=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), recording_duration_ms=Decimal(1),
            recording_start_ms=None, recording_end_ms=None, rounded_recording_duration=1,
            from_number="1", to_number="2", conference_name=None, recording_storage_duration=0,
            recording_storage_rate=Decimal(0), monthly_recording_storage_amount=Decimal(0),
            resource_uri="/r",
        )  # fmt: skip

    sink = S3Sink(BUCKET, "batch/", endpoint_url=endpoint, part_size=PART)
    await sink.prepare()

    async def one(i: int) -> None:
        import hashlib

        writer = await sink.open(rec(i), size_hint=total)
        digest = hashlib.sha256()
        async for chunk in chunks(total):
            digest.update(chunk)
            await writer.write(chunk)
        await writer.commit(container=None, size=total, sha256=digest.hexdigest())

    await asyncio.gather(*(one(i) for i in range(BATCH)))
    await sink.close()
    EXTRA["budget_high_water_mb"] = round(sink.budget.high_water / MIB, 1)


async def batch_obstore(endpoint: str, total: int, fail_after: int | None) -> None:
    """obstore's nearest equivalent: 16 streamed puts at once, one part in flight each."""
    import obstore
    from obstore.store import S3Store

    store = S3Store(
        BUCKET, endpoint=endpoint, region="us-east-1", client_options={"allow_http": True}
    )
    await asyncio.gather(
        *(
            obstore.put_async(
                store, f"batch/o{i}.mp3", chunks(total), chunk_size=PART, max_concurrency=1
            )
            for i in range(BATCH)
        )
    )


MIB = 1024 * 1024
BATCH = 16
EXTRA: dict[str, float] = {}  # what a scenario reports besides time and RSS
UPLOADS = {
    "obstore": upload_obstore,
    "aiobotocore": upload_aiobotocore,
    "batch-s3sink": batch_s3sink,
    "batch-obstore": batch_obstore,
}


def peak_rss_mb() -> float:
    """This process's own high-water RSS (VmHWM). Not `ru_maxrss`: Linux carries that over
    `execve` from the forked parent, which here holds moto and every object it stored."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(client: str, endpoint: str, mib: int, fail_after: int | None) -> None:
    upload = UPLOADS[client]
    start = time.perf_counter()
    outcome = "ok"
    try:
        asyncio.run(upload(endpoint, mib * 1024 * 1024, fail_after))
    except SourceFailed:
        outcome = "source failed"
    except Exception as err:  # the probe reports what the client raised
        outcome = f"{type(err).__name__}"
    wall = time.perf_counter() - start
    rss_mb = peak_rss_mb()
    print(json.dumps({"wall": wall, "rss_mb": rss_mb, "outcome": outcome, **EXTRA}))


def run_child(client: str, endpoint: str, mib: int, fail_after: int | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", client, endpoint, str(mib)]
    if fail_after is not None:
        cmd.append(str(fail_after))
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if not lines:  # died before reporting (a crash of the client library): say how
        tail = proc.stderr.strip().splitlines()[-1:] or [""]
        return {
            "wall": float("nan"),
            "rss_mb": float("nan"),
            "outcome": f"rc {proc.returncode}: {tail[0][:120]}",
        }
    result: dict = json.loads(lines[-1])
    if proc.returncode:
        result["outcome"] += f" (then rc {proc.returncode})"
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        fail = int(sys.argv[5]) if len(sys.argv) > 5 else None
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), fail)
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 200])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--batch-mib", type=int, default=30, help="the batch scenario: 16 of this size at once"
    )
    args = parser.parse_args()

    import boto3
    from moto.server import ThreadedMotoServer

    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"
    )
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    try:
        for mib in args.sizes:
            for client in ("obstore", "aiobotocore"):
                runs = []
                for _ in range(args.reps):
                    runs.append(run_child(client, endpoint, mib))
                    s3.delete_object(Bucket=BUCKET, Key="obj.bin")
                # "ok (then rc -6)": the upload completed, then the process died at exit.
                bad = [r["outcome"] for r in runs if r["outcome"] != "ok"]
                runs = [r for r in runs if r["outcome"].startswith("ok")] or runs
                walls = [r["wall"] for r in runs]
                rss = [r["rss_mb"] for r in runs]
                print(
                    f"{mib:>4} MiB  {client:<11}  wall median {statistics.median(walls):.2f} s "
                    f"({min(walls):.2f}-{max(walls):.2f})  peak RSS median "
                    f"{statistics.median(rss):.1f} MB (max {max(rss):.1f})"
                    + (f"  not clean: {bad}" if bad else "")
                )
        for client in ("batch-s3sink", "batch-obstore"):
            runs = [run_child(client, endpoint, args.batch_mib) for _ in range(args.reps)]
            rss = [r["rss_mb"] for r in runs]
            walls = [r["wall"] for r in runs]
            print(
                f"{BATCH} x {args.batch_mib} MiB at once  {client:<13}  wall median "
                f"{statistics.median(walls):.2f} s  peak RSS median {statistics.median(rss):.1f}"
                f" MB (max {max(rss):.1f})  outcomes {sorted({r['outcome'] for r in runs})}"
                + "".join(f"  {k} {r[k]}" for r in runs[:1] for k in r if k.startswith("budget"))
            )
        for client in ("obstore", "aiobotocore"):
            result = run_child(client, endpoint, 20, fail_after=12 * 1024 * 1024)
            left = s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
            exists = "Contents" in s3.list_objects_v2(Bucket=BUCKET, Prefix="obj.bin")
            print(
                f"abort probe  {client:<11}  raised: {result['outcome']}; incomplete uploads "
                f"left: {len(left)}; object present: {exists}"
            )
            for item in left:
                s3.abort_multipart_upload(Bucket=BUCKET, Key=item["Key"], UploadId=item["UploadId"])
        print(f"(python {sys.version.split()[0]}, moto on {endpoint})")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
