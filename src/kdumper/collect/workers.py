"""Compression in worker processes: every CPU compresses, none waits for the GIL.

Threads give the slow codec (zlib, ~40 us a page) a second CPU, but not the fast ones: an LZO
page takes about 4 us in C and the GIL hand-off around each ctypes call costs as much, so two
threads were slower than one (pipeline.SINGLE_THREAD_CODECS). Processes have no GIL to share.
Before the filter pass the collector forks ``workers`` processes; each inherits the open dump.
They classify the filter's windows first (``submit_window``: each window on its own, its classes
sent back through the slot), then read and compress the kept pages (``submit``).

Each worker owns ``depth`` slots of one shared anonymous mapping. For a batch, the parent sends
its pfns down that worker's task pipe; the worker reads the pages (run by run) from its copy of
the dump, finds zero pages, compresses the rest straight into the slot and answers on its
result pipe with the per-page sizes, flags and zero/lost marks (the payload stays in the slot,
where the parent's writer reads it: no copy through a pipe). Batches go to the workers in turn
(batch ``i`` to worker ``i % workers``, slot ``i % (workers * depth)``), so the parent reads the
results back in batch order. A slot is given a new batch only after the writer has written what
it took from it (:meth:`EncodeWorkers.next_slot`: the caller flushes the writer first).

Memory: ``workers * depth`` slots of a batch each (a few MiB), whatever the dump's size. An error
in a worker (a read error of the dump, say) is sent back and raised in the parent as it was
raised; a worker that dies is an error naming its pid and signal. Workers end when their task
pipe closes (:meth:`EncodeWorkers.end_tasks` or :meth:`~EncodeWorkers.close`, or the parent's
death) and never print: they leave with ``os._exit``.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import mmap
import os
import select
import signal
import struct
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from ..errors import KdumperError
from ..kernel.pages import Classified
from .encode import BatchEncoder, Encoded

ReadFn = Callable[[npt.NDArray[np.int64]], tuple[bytes | memoryview, list[int]]]
"""``read(pfns) -> (their pages back to back, batch indexes of pages the source lost)``."""
ClassifyFn = Callable[[int, int], Classified]
"""``classify(start, stop)``: one window of the filter pass on its own
(:meth:`kdumper.kernel.pages.WindowClassifier.alone`)."""

_TASK = struct.Struct("<iii")  # kind, slot, count; then ``count`` int64 (pfns, or a window)
_ENCODE, _CLASSIFY = 0, 1
_RESULT = struct.Struct("<iiqqiii")  # slot, status, payload bytes, bytes read, pages, zero, lost
_WINDOW = struct.Struct("<iiqqqqii")  # slot, status, cls bytes, start, unreadable, carry end,
#                                       carry class, all free
_OK, _FAILED = 0, 1
_PR_SET_PDEATHSIG = 1
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)

Lost = npt.NDArray[np.bool_]


class WorkerError(KdumperError):
    """A compression worker process died or could not be started."""


def can_fork() -> bool:
    """Whether this platform has ``fork`` (worker processes need it)."""
    return hasattr(os, "fork")


class EncodeWorkers:
    """``workers`` forked processes that read and encode batches; results come back in order."""

    def __init__(
        self, read: ReadFn, encoder: BatchEncoder, *, workers: int, batch_pages: int,
        depth: int = 2, classify: ClassifyFn | None = None,
    ) -> None:  # fmt: skip
        if workers < 1 or depth < 1:
            raise ValueError("workers and depth must be at least 1")
        self.classifies = classify is not None  # they can take filter windows too
        self.workers = workers
        self.depth = depth
        self.slots = workers * depth
        self.page_size = encoder.page_size
        self.slot_bytes = encoder.slot_bytes(batch_pages)
        self._map = mmap.mmap(-1, self.slots * self.slot_bytes, flags=mmap.MAP_SHARED)
        self._view = memoryview(self._map)
        self._submitted = 0
        self._received = 0
        self._procs: list[tuple[int, int, int]] = []  # pid, task pipe (write), result pipe (read)
        # the objects that exist now are out of the collector's reach in the workers, so a
        # collection there does not write to (and copy) every page of the inherited heap
        gc.freeze()
        try:
            for _ in range(workers):
                self._start(read, encoder, classify)
        except BaseException:
            self.close()
            raise
        finally:
            gc.unfreeze()

    def _start(self, read: ReadFn, encoder: BatchEncoder, classify: ClassifyFn | None) -> None:
        task_r, task_w = os.pipe()
        result_r, result_w = os.pipe()
        try:
            pid = os.fork()
        except OSError as e:
            for fd in (task_r, task_w, result_r, result_w):
                os.close(fd)
            raise WorkerError(f"cannot start a compression worker: {e.strerror}") from None
        if pid == 0:  # the worker: never returns
            code = 1
            try:
                # the parent's ends of every pipe: a worker holding them would keep the others
                # (and itself) from seeing the end of their task streams
                for _pid, w, r in self._procs:
                    os.close(w)
                    os.close(r)
                os.close(task_w)
                os.close(result_r)
                _serve(read, encoder, classify, task_r, result_w, self._view, self.slot_bytes)
                code = 0
            finally:
                os._exit(code)
        os.close(task_r)
        os.close(result_w)
        self._procs.append((pid, task_w, result_r))

    @property
    def pids(self) -> list[int]:
        """The workers' process ids (until :meth:`close`)."""
        return [pid for pid, _w, _r in self._procs]

    @property
    def in_flight(self) -> int:
        """Batches submitted and not yet collected."""
        return self._submitted - self._received

    @property
    def next_slot(self) -> int:
        """The slot the next :meth:`submit` fills (its previous payload must be written by then)."""
        return self._submitted % self.slots

    def submit(self, pfns: npt.NDArray[np.int64]) -> None:
        """Send the next batch (its pfns, ascending) to its worker (at most ``slots`` batches
        in flight); the worker finds the runs in it and reads them. Collect with
        :meth:`result`."""
        self._send(_ENCODE, np.ascontiguousarray(pfns, dtype=np.int64))

    def submit_window(self, start: int, stop: int) -> None:
        """Send the next filter window to its worker; collect it with :meth:`result_window`."""
        if not self.classifies:
            raise RuntimeError("these workers were started without a classifier")
        self._send(_CLASSIFY, np.array([start, stop], np.int64))

    def _send(self, kind: int, body: npt.NDArray[np.int64]) -> None:
        if self.in_flight >= self.slots:
            raise RuntimeError("every slot is in use: collect a result first")
        slot = self.next_slot
        _pid, task_w, _r = self._procs[self._submitted % self.workers]
        if task_w < 0:
            raise RuntimeError("end_tasks() was called")
        self._write(task_w, _TASK.pack(kind, slot, body.size) + body.tobytes(), self._submitted)
        self._submitted += 1

    def result_window(self) -> Classified:
        """The next filter window in order (as the worker classified it on its own)."""
        index, result_r = self._next_result()
        head = self._read(result_r, _WINDOW.size, index)
        slot, status, length, start, unreadable, carry_end, carry_cls, all_free = _WINDOW.unpack(
            head
        )
        self._raise_failure(status, result_r, length, index)
        at = slot * self.slot_bytes
        cls = np.frombuffer(self._view[at : at + length], np.uint8).copy()  # the slot is reused
        return Classified(start, cls, unreadable, bool(all_free), (carry_end, carry_cls))

    def ready(self) -> bool:
        """Whether the next result in order is there (:meth:`result` would not wait for it)."""
        if not self.in_flight:
            return False
        result_r = self._procs[self._received % self.workers][2]
        return bool(select.select([result_r], [], [], 0)[0])

    def _next_result(self) -> tuple[int, int]:
        if not self.in_flight:
            raise RuntimeError("nothing in flight")
        index = self._received
        self._received += 1
        return index, self._procs[index % self.workers][2]

    def _raise_failure(self, status: int, result_r: int, length: int, index: int) -> None:
        if status != _OK:
            import pickle

            raise pickle.loads(self._read(result_r, length, index))

    def result(self) -> tuple[Encoded, Lost | None, int, int]:
        """The next batch in order: its encoding (payload in the slot), lost pages, bytes read
        from the dump, and its slot. Raises what the worker raised."""
        index, result_r = self._next_result()
        head = self._read(result_r, _RESULT.size, index)
        slot, status, length, bytes_in, count, zero_count, lost_count = _RESULT.unpack(head)
        self._raise_failure(status, result_r, length, index)
        # the rest in one read: sizes, flags, then the zero marks and lost indexes if any
        body = self._read(result_r, 12 * count + (count if zero_count else 0) + 4 * lost_count,
                          index)  # fmt: skip
        sizes = np.frombuffer(body, np.int64, count)
        flags = np.frombuffer(body, np.uint32, count, 8 * count)
        zero = None
        if zero_count:
            zero = np.frombuffer(body, np.bool_, count, 12 * count)
        lost = None
        if lost_count:
            at = np.frombuffer(body, np.int32, lost_count, len(body) - 4 * lost_count)
            lost = np.zeros(count, np.bool_)
            lost[at] = True
        start = slot * self.slot_bytes
        data = self._view[start : start + length]
        return Encoded(sizes, flags, data, zero, zero_count), lost, bytes_in, slot

    def _write(self, fd: int, data: bytes, index: int) -> None:
        try:
            _write_all(fd, data)
        except OSError:
            raise self._died(index) from None

    def _read(self, fd: int, length: int, index: int) -> bytes:
        data = _read_exact(fd, length)
        if data is None:
            raise self._died(index)
        return data

    def _died(self, index: int) -> WorkerError:
        pid = self._procs[index % self.workers][0]
        how = "ended"
        # its pipes close before it is a zombie: give it a moment to become one
        deadline = time.monotonic() + 2
        with contextlib.suppress(ChildProcessError):
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done or time.monotonic() > deadline:
                    break
                time.sleep(0.005)
            if done and os.WIFSIGNALED(status):
                how = f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
            elif done:
                how = f"exited with status {os.WEXITSTATUS(status)}"
        return WorkerError(f"compression worker {pid} {how} in the middle of the dump")

    def end_tasks(self) -> None:
        """No more batches: each worker finishes the ones it has and exits while the parent
        collects them (so :meth:`close` need not wait for its exit)."""
        for i, (pid, task_w, result_r) in enumerate(self._procs):
            if task_w >= 0:
                os.close(task_w)
                self._procs[i] = (pid, -1, result_r)

    def close(self) -> None:
        """Stop the workers and wait for them; what they were doing is dropped."""
        procs, self._procs = self._procs, []
        for _pid, task_w, result_r in procs:
            with contextlib.suppress(OSError):
                if task_w >= 0:
                    os.close(task_w)  # the worker sees the end of its tasks
            with contextlib.suppress(OSError):
                os.close(result_r)  # a worker still answering gets EPIPE instead of blocking
        for pid, _w, _r in procs:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self._view.release()
        with contextlib.suppress(BufferError):
            self._map.close()

    def __enter__(self) -> EncodeWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve(
    read: ReadFn, encoder: BatchEncoder, classify: ClassifyFn | None, task_r: int,
    result_w: int, shared: memoryview, slot_bytes: int,
) -> None:  # fmt: skip
    """A worker's life: read tasks until the pipe ends, answer each one."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # die with the parent
        if os.getppid() == 1:  # the parent died before that
            return
        _keep_freed_memory(libc)
    while True:
        head = _read_exact(task_r, _TASK.size)
        if head is None:
            return
        kind, slot, count = _TASK.unpack(head)
        body = np.frombuffer(_read_exact(task_r, 8 * count) or b"", np.int64)
        out = shared[slot * slot_bytes : (slot + 1) * slot_bytes]
        try:
            if kind == _CLASSIFY:
                assert classify is not None
                answer = _classify_one(classify, int(body[0]), int(body[1]), out, slot)
            else:
                answer = _encode_one(read, encoder, body, out, slot)
        except Exception as e:  # sent to the parent, which raises it
            answer = _failure(_WINDOW if kind == _CLASSIFY else _RESULT, slot, e)
        try:
            _write_all(result_w, answer)
        except OSError:  # the parent is gone or closed the pipe
            return


def _keep_freed_memory(libc: ctypes.CDLL) -> None:
    """Have glibc keep the memory a filter window's numpy temporaries free (a few MiB).

    By default glibc maps large blocks afresh and gives freed heap tops back to the kernel, and a
    forked worker started each window by faulting them in again: ~1000 page faults a window, half
    of its classification time (measured on a 4 GiB guest's vmcore: 16 windows over two workers,
    30 -> 14 ms each; minor faults of the whole save 19.6 k -> 14.7 k). What is kept stays bounded
    by the largest window's temporaries, whatever the dump's size.
    """
    libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # glibc's ceiling for it on 64-bit
    libc.mallopt(_M_TRIM_THRESHOLD, 64 << 20)


def _classify_one(classify: ClassifyFn, start: int, stop: int, out: memoryview, slot: int) -> bytes:
    r = classify(start, stop)
    out[: r.cls.size] = r.cls.tobytes()
    end, cls = r.carry
    return _WINDOW.pack(slot, _OK, r.cls.size, r.start, r.unreadable, end, cls, int(r.all_free))


def _encode_one(
    read: ReadFn, encoder: BatchEncoder, pfns: npt.NDArray[np.int64], out: memoryview, slot: int
) -> bytes:
    data, lost_at = read(pfns)
    count = len(data) // encoder.page_size
    lost = None
    if lost_at:
        lost = np.zeros(count, np.bool_)
        lost[lost_at] = True
    enc = encoder.encode(data, lost, out)
    payload = enc.data
    if not isinstance(payload, memoryview) or payload.obj is not out.obj:
        out[: len(payload)] = payload  # an all-zero batch: b""
    parts = [
        _RESULT.pack(slot, _OK, len(payload), len(data), count, enc.zero_count, len(lost_at)),
        enc.sizes.astype(np.int64, copy=False).tobytes(),
        enc.flags.astype(np.uint32, copy=False).tobytes(),
    ]
    if enc.zero_count:
        assert enc.zero is not None
        parts.append(enc.zero.astype(np.bool_, copy=False).tobytes())
    if lost_at:
        parts.append(np.asarray(lost_at, np.int32).tobytes())
    return b"".join(parts)


def _failure(header: struct.Struct, slot: int, err: Exception) -> bytes:
    import pickle

    try:
        blob = pickle.dumps(err)
        pickle.loads(blob)
    except Exception:  # an exception that does not survive pickling: keep its text
        blob = pickle.dumps(WorkerError(f"compression worker failed: {type(err).__name__}: {err}"))
    rest = [0] * (len(header.format) - 4)  # the fields after slot, status and length
    return header.pack(slot, _FAILED, len(blob), *rest) + blob


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exact(fd: int, length: int) -> bytes | None:
    """``length`` bytes from a pipe, or None at its end (the other side closed or died)."""
    chunks: list[bytes] = []
    need = length
    while need:
        try:
            chunk = os.read(fd, need)
        except OSError:
            return None
        if not chunk:
            return None
        chunks.append(chunk)
        need -= len(chunk)
    return b"".join(chunks) if len(chunks) != 1 else chunks[0]
