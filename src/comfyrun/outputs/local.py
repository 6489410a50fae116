"""Output storage in a local (or shared) directory: "file:///abs/dir".

Each object is a file at <root>/<key>; its content type and hash are a small JSON document in
the file's extended attribute `user.comfyrun`, or, on a filesystem without user attributes, in
a sidecar file at <root>/.comfyrun-meta/<key>.json (read where the attribute is missing: objects
stored by earlier versions). The attribute is set before the file is renamed into place, with
it; the sidecar cost a folder per job and node and a file of its own, each a new inode (~0.5 ms
of the kernel's CPU each on the ext4 these benchmarks run on, a round trip each on NFS). `put`
writes to <root>/.comfyrun-tmp/ and renames into place, so readers never see a partial file and
several API nodes sharing the directory agree. Blocking file calls run in threads so the event
loop never waits on the disk, except a small output of a managed backend stored on this
machine's own disk (`put_read` with `on_loop`, outputs.local_disk).

Small objects written with `put_bytes` stay in memory for a short while (`Recent`): the usual
client downloads a job's outputs right after it finished, and is answered without a trip to
the disk. This process's own `put`, `delete` and `delete_prefix` drop them at once; a change
made by another process sharing the directory is seen once the entry expires (RECENT_TTL_S).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable
from pathlib import Path
from typing import IO, Any, TypeVar

import blake3

from comfyrun.errors import NotFound, StorageError
from comfyrun.outputs.base import FileBytes, StoredObject
from comfyrun.outputs.classify import content_type_for
from comfyrun.outputs.keys import validate_key, validate_prefix
from comfyrun.outputs.local_disk import on_local_disk
from comfyrun.outputs.recent import Recent

log = logging.getLogger(__name__)
T = TypeVar("T")

META_DIR = ".comfyrun-meta"
#: The extended attribute holding an object's content type and hash.
META_XATTR = "user.comfyrun"
TMP_DIR = ".comfyrun-tmp"
#: Bytes gathered before one write call (fewer thread hops for small chunks).
WRITE_BATCH = 1 << 20
READ_CHUNK = 1 << 20


class LocalOutputStorage:
    """Objects as files under `root` (created on first use)."""

    scheme = "file"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        #: whether `root` is on a disk of this machine (outputs.local_disk)
        self.on_local_disk = on_local_disk(self.root)
        self.recent = Recent()

    def __repr__(self) -> str:
        return f"LocalOutputStorage({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def _meta_path(self, key: str) -> Path:
        return self.root / META_DIR / f"{validate_key(key)}.json"

    async def put(
        self, key: str, chunks: AsyncIterable[bytes], *, content_type: str
    ) -> StoredObject:
        target = self._path(key)
        tmp_dir = self.root / TMP_DIR
        self.recent.drop(key)
        try:
            await asyncio.to_thread(tmp_dir.mkdir, parents=True, exist_ok=True)
            tmp = tmp_dir / uuid.uuid4().hex
            fh = await asyncio.to_thread(tmp.open, "wb")
        except OSError as exc:
            raise StorageError(f"cannot write under {self.root}: {exc}") from exc
        hasher = blake3.blake3()
        size = 0
        try:
            try:
                batch = bytearray()
                async for chunk in chunks:  # a failing producer's error passes through as is
                    batch += chunk
                    if len(batch) >= WRITE_BATCH:
                        size += await _disk(key, _write, fh, hasher, bytes(batch))
                        batch.clear()
                size += await _disk(key, _write, fh, hasher, bytes(batch))
                await _disk(key, fh.flush)
            finally:
                await asyncio.to_thread(fh.close)
            stored = StoredObject(key, size, f"blake3:{hasher.hexdigest()}", content_type)
            await _disk(key, self._commit, tmp, target, stored)
        except BaseException:
            await asyncio.to_thread(tmp.unlink, missing_ok=True)
            raise
        return stored

    async def put_bytes(self, key: str, data: bytes, *, content_type: str) -> StoredObject:
        stored = await self.put_read(key, lambda: data, content_type=content_type)
        assert stored is not None  # the read gave bytes
        return stored

    async def put_read(
        self,
        key: str,
        read: Callable[[], bytes | FileBytes | None],
        *,
        content_type: str,
        on_loop: bool = False,
    ) -> StoredObject | None:
        """`put_bytes` of what the blocking `read()` returns (a managed backend's output
        file), read and written in one trip to a thread; None, storing nothing, when `read`
        returns None. A `FileBytes` file is linked into place where it can be (the same
        filesystem), its bytes written where it cannot. `on_loop` (`read` is quick: a small
        file on this machine's disk) with this storage's folder on such a disk too: all of it
        on the event loop (~0.2 ms in a busy `serve`, the job's folders made), where the trip
        to a thread cost the job ~0.45 ms: the thread began ~0.13 ms after it was asked and
        took ~0.25 ms for calls that take ~0.03 ms alone, its every call waiting for the GIL
        while the loop handled the job's other messages."""
        target = self._path(key)
        self.recent.drop(key)

        def read_and_put() -> tuple[StoredObject, bytes] | None:
            got = read()
            if got is None:
                return None
            data, source = (got.data, got.path) if isinstance(got, FileBytes) else (got, None)
            digest = f"blake3:{blake3.blake3(data).hexdigest()}"
            stored = StoredObject(key, len(data), digest, content_type)
            return self._put_now(target, data, stored, source), data

        if on_loop and self.on_local_disk:
            try:
                done = read_and_put()
            except OSError as exc:
                raise StorageError(f"cannot store {key!r}: {exc}") from exc
        else:
            done = await _disk(key, read_and_put)
        if done is None:
            return None
        self.recent.add(key, *done)
        return done[0]

    def _put_now(
        self, target: Path, data: bytes, stored: StoredObject, source: Path | None = None
    ) -> StoredObject:
        """Write (or link `source`, whose content `data` is), then rename into place: all of
        `put_bytes` in one blocking call. Folders are made when a write finds them missing,
        not looked for on every write."""
        if source is not None and _linked_in_place(source, target, stored):
            return stored
        tmp = self.root / TMP_DIR / uuid.uuid4().hex
        try:
            if source is None or not _linked(source, tmp):
                _in_folder(tmp, tmp.write_bytes, data)
            self._commit(tmp, target, stored)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return stored

    async def read_small(
        self, key: str, max_bytes: int
    ) -> tuple[StoredObject, bytes | None] | None:
        path, meta = self._path(key), self._meta_path(key)
        recent = self.recent.get(key)
        if recent is not None:
            stored, data = recent
            return stored, data if len(data) <= max_bytes else None

        def read() -> tuple[StoredObject, bytes | None] | None:
            try:
                with path.open("rb") as fh:
                    size = os.fstat(fh.fileno()).st_size
                    data = fh.read() if size <= max_bytes else None
                    info = _read_meta(fh.fileno(), meta)
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                return None
            obj = StoredObject(
                key=key,
                size_bytes=size if data is None else len(data),
                hash=info.get("hash"),
                content_type=info.get("content_type") or content_type_for(key),
            )
            return obj, data

        try:
            return await asyncio.to_thread(read)
        except OSError as exc:
            raise StorageError(f"cannot read {key!r}: {exc}") from exc

    def _commit(self, tmp: Path, target: Path, stored: StoredObject) -> None:
        document = _meta_document(stored)
        if _set_meta(tmp, document):
            _in_folder(target, os.replace, tmp, target)
            return
        meta = self._meta_path(stored.key)
        meta_tmp = tmp.with_suffix(".json")
        meta_tmp.write_text(document, encoding="utf-8")
        _in_folder(target, os.replace, tmp, target)
        _in_folder(meta, os.replace, meta_tmp, meta)

    async def open(
        self, key: str, *, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            fh = await asyncio.to_thread(path.open, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise NotFound(f"output {key!r} does not exist", details={"key": key}) from exc
        except OSError as exc:
            raise StorageError(f"cannot read {key!r}: {exc}") from exc
        try:
            if offset:
                await asyncio.to_thread(fh.seek, offset)
            remaining = length
            while remaining is None or remaining > 0:
                want = READ_CHUNK if remaining is None else min(READ_CHUNK, remaining)
                chunk = await asyncio.to_thread(fh.read, want)
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
        finally:
            # closed here, not in a thread: a cancelled stream (the client went away) would
            # cancel that await too and leave the file to the garbage collector
            fh.close()

    async def url(
        self,
        key: str,
        *,
        expires_s: int | None = None,
        content_type: str | None = None,
        filename: str | None = None,
    ) -> tuple[str | None, float | None]:
        validate_key(key)
        return None, None

    async def delete(self, key: str) -> None:
        path, meta = self._path(key), self._meta_path(key)
        self.recent.drop(key)

        def unlink() -> None:
            if path.is_file():
                path.unlink(missing_ok=True)
            meta.unlink(missing_ok=True)

        await asyncio.to_thread(unlink)

    async def delete_prefix(self, prefix: str) -> int:
        validate_prefix(prefix)
        self.recent.drop_prefix(prefix)
        folder = self.root / prefix.rstrip("/")
        meta_folder = self.root / META_DIR / prefix.rstrip("/")

        def remove() -> int:
            if not folder.is_dir():
                return 0
            # (os.walk passes over what another delete removes meanwhile: rglob raised, a 500
            # for one of two DELETEs of a job at once)
            count = sum(len(files) for _, _, files in os.walk(folder))
            shutil.rmtree(folder, ignore_errors=True)
            shutil.rmtree(meta_folder, ignore_errors=True)
            return count

        count = await asyncio.to_thread(remove)
        log.info(
            "deleted %d objects under %s", count, prefix, extra={"action": "storage.delete_prefix"}
        )
        return count

    async def stat(self, key: str) -> StoredObject | None:
        recent = self.recent.get(key)
        if recent is not None:  # just written: known without a trip to the disk's thread
            return recent[0]
        path, meta = self._path(key), self._meta_path(key)

        def read() -> StoredObject | None:
            try:
                st = path.stat()
            except (FileNotFoundError, NotADirectoryError):
                return None
            if not path.is_file():
                return None
            info = _read_meta(path, meta)
            return StoredObject(
                key=key,
                size_bytes=st.st_size,
                hash=info.get("hash"),
                content_type=info.get("content_type") or content_type_for(key),
            )

        return await asyncio.to_thread(read)

    async def close(self) -> None:
        return None


def _meta_document(stored: StoredObject) -> str:
    return json.dumps({"hash": stored.hash, "content_type": stored.content_type})


def _linked_in_place(source: Path, target: Path, stored: StoredObject) -> bool:
    """`source` (a whole file nobody will change) made the object at `target` in one step:
    its metadata attribute set first (on the file itself, so it comes with the new name), then
    linked there. Two calls to the disk where a temporary name takes four; False, having
    stored nothing, where it cannot be (the key is there already, another filesystem, no user
    attributes): the caller goes the long way."""
    if not _set_meta(source, _meta_document(stored)):
        return False
    try:
        _in_folder(target, os.link, source, target)
    except OSError:
        return False
    return True


def _linked(source: Path, tmp: Path) -> bool:
    """`tmp` made a second name of the file `source` (no new file, no bytes written); False
    where it cannot be (another filesystem, no hard links there)."""
    try:
        _in_folder(tmp, os.link, source, tmp)
    except OSError:
        return False
    return True


def _set_meta(path: Path, document: str) -> bool:
    """Give the file its metadata attribute; False where the filesystem (or the platform) has
    no user attributes."""
    try:
        os.setxattr(path, META_XATTR, document.encode())
    except (OSError, AttributeError):
        return False
    return True


def _read_meta(file: int | Path, sidecar: Path) -> dict[str, str | None]:
    """An object's metadata: its attribute (`file`: the open file or its path), else its
    sidecar, else nothing known."""
    with contextlib.suppress(OSError, AttributeError, ValueError):
        info = json.loads(os.getxattr(file, META_XATTR))
        if isinstance(info, dict):
            return info
    with contextlib.suppress(OSError, ValueError):
        info = json.loads(sidecar.read_text(encoding="utf-8"))
        if isinstance(info, dict):
            return info
    return {}


def _in_folder(path: Path, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)`, which writes `path`; when its folder is missing (never made, or removed
    since), the folder is made and `fn` called again."""
    try:
        return fn(*args)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return fn(*args)


async def _disk(key: str, fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking file call in a thread; the disk's errors become StorageError."""
    try:
        return await asyncio.to_thread(fn, *args)
    except OSError as exc:
        raise StorageError(f"cannot store {key!r}: {exc}") from exc


def _write(fh: IO[bytes], hasher: blake3.blake3, data: bytes) -> int:
    hasher.update(data)
    fh.write(data)
    return len(data)


__all__ = ["LocalOutputStorage"]
