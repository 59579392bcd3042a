"""The file and call layers of the fault handling, without processes: what pyrage's wrapper
hides is unwrapped, OSErrors become one line, an S3 call that never returns is abandoned at
its deadline (the processes themselves: test_fault_matrix.py, test_storage_independence.py).
"""

from __future__ import annotations

import errno
import io
import threading
from typing import Any

import pyrage
import pytest

from sbtc_ops.backup.crypto import EncryptionError, encrypt_stream
from sbtc_ops.backup.storage import S3Storage, StorageError
from sbtc_ops.config import S3Settings
from sbtc_ops.errors import describe_os_error

RECIPIENT = str(pyrage.x25519.Identity.generate().to_public())


class FailingWriter(io.RawIOBase):
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        raise self.exc


class FailingReader(io.RawIOBase):
    def __init__(self, exc: BaseException, after: int = 2) -> None:
        self.exc, self.left = exc, after

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self.left -= 1
        if self.left < 0:
            raise self.exc
        return b"x" * 4096


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO, errno.EPIPE])
def test_a_failing_write_comes_out_as_itself_not_as_pyrage_encrypterror(code: int) -> None:
    with pytest.raises(OSError) as raised:
        encrypt_stream(
            io.BytesIO(b"y" * 100_000), FailingWriter(OSError(code, "boom")), [RECIPIENT]
        )
    assert raised.value.errno == code
    assert not isinstance(raised.value, pyrage.EncryptError)


def test_an_interrupt_while_reading_comes_out_as_keyboardinterrupt() -> None:
    with pytest.raises(KeyboardInterrupt):
        encrypt_stream(FailingReader(KeyboardInterrupt()), io.BytesIO(), [RECIPIENT])


def test_what_pyrage_reports_by_itself_is_an_encryption_error() -> None:
    """A writer that returns without writing makes pyrage fail on its own: exit 2, ours."""

    class Stuck(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, data: Any) -> int:
            return 0

    with pytest.raises(EncryptionError, match="age encryption failed"):
        encrypt_stream(io.BytesIO(b"z" * 100_000), Stuck(), [RECIPIENT])


def test_os_errors_are_one_line_with_the_file() -> None:
    exc = OSError(errno.ENOSPC, "No space left on device", "/var/backups/x/signer.dump")
    assert describe_os_error(exc) == "No space left on device: /var/backups/x/signer.dump"
    assert describe_os_error(OSError(errno.EIO, "Input/output error")) == "Input/output error"


def storage(timeout_s: float = 30.0, rate: float = 2.0) -> S3Storage:
    settings = S3Settings(endpoint_url="http://127.0.0.1:9", timeout_s=timeout_s)
    settings = settings.model_copy(update={"min_transfer_mib_s": rate})
    return S3Storage("s3://bucket/prefix", settings)


def test_a_transfer_deadline_scales_with_its_size() -> None:
    s3 = storage(timeout_s=30.0, rate=2.0)
    assert s3.deadline_s() == 30.0
    assert s3.deadline_s(10 * 1024 * 1024) == 35.0  # 10 MiB at 2 MiB/s
    assert s3.deadline_s(10 << 30) == 30.0 + 5120.0


def test_a_call_past_its_deadline_is_abandoned_and_the_location_given_up() -> None:
    s3 = storage(timeout_s=0.05)
    release = threading.Event()
    try:
        with pytest.raises(StorageError, match="listing backups did not finish within 0 s"):
            s3._bounded("listing backups", release.wait)
        calls: list[str] = []
        with pytest.raises(StorageError, match="not attempted: an earlier operation"):
            s3._bounded("deleting x", lambda: calls.append("called"))
        assert calls == []  # an unreachable location is not asked again in the same run
    finally:
        release.set()


def test_the_calls_own_error_is_not_taken_for_the_deadline() -> None:
    def fails() -> None:
        raise TimeoutError("the socket's own timeout")

    with pytest.raises(TimeoutError, match="socket's own"):
        storage()._bounded("checking the bucket", fails)


def test_an_interrupt_whose_exception_was_swallowed_still_stops_the_encryption() -> None:
    """The SIGINT/SIGTERM handler's KeyboardInterrupt is lost when it lands in code whose
    exceptions Python ignores (seen: logging's at-fork callback right after pg_dump was
    started); the encryption, about to block on pg_dump's output, raises it then."""
    from sbtc_ops.proc import note_interrupt, raise_if_interrupted

    note_interrupt()
    with pytest.raises(KeyboardInterrupt):
        encrypt_stream(io.BytesIO(b"y" * 100_000), io.BytesIO(), [RECIPIENT])
    raise_if_interrupted()  # raised once: the cleanup after it is not interrupted again
