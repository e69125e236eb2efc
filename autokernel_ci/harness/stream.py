"""The worker's result channel: framed messages over a pipe, read by the parent as they arrive.

Each message is a JSON header and, after it, the raw bytes of the tensors it names:

    [4-byte big-endian header length][header JSON]{[tensor bytes] for each entry of header["tensors"]}

`header["tensors"]` lists `{"dtype": "float32", "shape": [..], "nbytes": n}`. Tensors travel as their
bytes, never pickled: nothing the child sends is executed or unpickled by the parent. The parent
(`Reader`) records each message on receipt with its arrival time; it parses what it can prove well
formed and keeps the first problem it found (a malformed frame, a message after the last one) so
the caller can judge the whole run a crash.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

MAX_HEADER = 4 * 1024 * 1024
# Element types a tensor may carry over the channel (all that the ops and KernelBench problems return).
DTYPES = ("float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
          "float8_e4m3fn", "float8_e5m2")
LAST = "done"


def _dtype(name: str):
    import torch

    return getattr(torch, name)


def send(fd: int, header: dict[str, Any], tensors: tuple[Any, ...] = ()) -> None:
    """Write one message on `fd` (the worker's side). Tensors are copied to the host first."""
    import torch

    metas, payloads = [], []
    for t in tensors:
        host = t.detach().contiguous().to("cpu")
        raw = host.reshape(-1).view(torch.uint8) if host.numel() else torch.empty(0, dtype=torch.uint8)
        metas.append({"dtype": str(host.dtype).removeprefix("torch."), "shape": list(host.shape),
                      "nbytes": int(raw.numel())})
        payloads.append(raw.numpy())
    body = json.dumps({**header, "tensors": metas}, allow_nan=True).encode()
    _write_all(fd, len(body).to_bytes(4, "big") + body)
    for payload in payloads:
        _write_all(fd, memoryview(payload).cast("B"))


def _write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view[: 1 << 24])
        view = view[n:]


@dataclass
class Message:
    header: dict[str, Any]
    tensors: tuple[Any, ...]
    received: float  # time.monotonic() on arrival

    @property
    def kind(self) -> str:
        return str(self.header.get("type"))


@dataclass
class Reader:
    """Reads messages from `fd` on a thread of its own until EOF. `max_tensor_bytes` bounds what one
    message may carry (a child cannot make the parent allocate without limit)."""

    fd: int
    max_tensor_bytes: int = 1 << 40
    messages: list[Message] = field(default_factory=list)
    problem: str | None = None
    closed: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def start(self) -> Reader:
        threading.Thread(target=self._run, name="autokernel-stream-reader", daemon=True).start()
        return self

    @property
    def finished(self) -> bool:
        """The last message arrived."""
        return any(m.kind == LAST for m in self.messages)

    def count(self, kind: str) -> int:
        with self.arrived:
            return sum(1 for m in self.messages if m.kind == kind)

    def wait_for(self, kind: str, n: int, timeout: float) -> bool:
        """Block until `n` messages of `kind` arrived (True) or the stream closed / the time passed."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while sum(1 for m in self.messages if m.kind == kind) < n:
                left = deadline - time.monotonic()
                if left <= 0 or self.closed.is_set():
                    return False
                self.arrived.wait(min(left, 0.1))
            return True

    def _run(self) -> None:
        try:
            while True:
                head = self._read(4)
                if head is None:
                    return
                size = int.from_bytes(head, "big")
                if size > MAX_HEADER:
                    return self._fail(f"a message header of {size} bytes (at most {MAX_HEADER})")
                body = self._read(size)
                if body is None:
                    return self._fail("the stream ended inside a message")
                try:
                    header = json.loads(body)
                except ValueError:
                    return self._fail("a message that is not JSON")
                if not isinstance(header, dict) or not isinstance(header.get("type"), str):
                    return self._fail("a message without a type")
                if self.finished:
                    return self._fail(f"a {header['type']!r} message after the last one")
                tensors = self._tensors(header)
                if tensors is None:
                    return
                with self.arrived:
                    self.messages.append(Message(header, tensors, time.monotonic()))
                    self.arrived.notify_all()
        finally:
            self.closed.set()
            with self.arrived:
                self.arrived.notify_all()

    def _tensors(self, header: dict[str, Any]) -> tuple[Any, ...] | None:
        import torch

        metas = header.get("tensors", [])
        if not isinstance(metas, list):
            self._fail("a message whose tensor list is malformed")
            return None
        total = 0
        out = []
        for meta in metas:
            try:
                dtype, shape, nbytes = meta["dtype"], [int(s) for s in meta["shape"]], int(meta["nbytes"])
            except (KeyError, TypeError, ValueError):
                self._fail("a tensor description that is malformed")
                return None
            if dtype not in DTYPES or nbytes < 0 or any(s < 0 for s in shape):
                self._fail(f"a tensor of unsupported type {dtype!r}")
                return None
            elem = torch.empty((), dtype=_dtype(dtype)).element_size()
            numel = 1
            for s in shape:
                numel *= s
            if numel * elem != nbytes:
                self._fail("a tensor whose byte count does not match its shape")
                return None
            total += nbytes
            if total > self.max_tensor_bytes:
                self._fail(f"more tensor data in one message than the {self.max_tensor_bytes} bytes allowed")
                return None
            raw = self._read(nbytes)
            if raw is None:
                self._fail("the stream ended inside a tensor")
                return None
            flat = torch.frombuffer(raw, dtype=torch.uint8) if nbytes else torch.empty(0, dtype=torch.uint8)
            out.append(flat.view(_dtype(dtype)).reshape(shape))
        return tuple(out)

    def _read(self, n: int) -> bytearray | None:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            try:
                k = os.readv(self.fd, [view[got:]])
            except OSError:
                k = 0
            if k == 0:
                if got:
                    return None
                return None if n else buf
            got += k
        return buf

    def _fail(self, what: str) -> None:
        if self.problem is None:
            self.problem = f"the worker sent {what}"
