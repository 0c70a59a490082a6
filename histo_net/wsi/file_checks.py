"""Checks made before a slide file is read, and a hard time limit for the C open call.

* :func:`check_slide_path` refuses what is not a regular file (named pipe, device, socket,
  symlink loop, broken link, folder) with a typed one-line error naming what it is, so
  nothing ever blocks reading a FIFO or ``/dev/zero``; a folder of DICOM instances becomes
  one of its instance files (OpenSlide reads the whole series from any one of them).
* :func:`check_dicom_folder` refuses a DICOM file whose folder holds a non-regular entry:
  OpenSlide's DICOM backend opens every file of the folder and blocks forever on a FIFO.
* :func:`call_with_limit` runs a call (OpenSlide's open + probe) in a daemon thread and
  gives up after ``timeout_s``: a blocked C call cannot be interrupted from Python, so it
  is abandoned (its handle is closed if it ever returns) and ``SlideTimeoutError`` raised.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from histo_net.errors import NotAFileError, SlideOpenError, SlideTimeoutError

T = TypeVar("T")

#: file-name suffixes of DICOM instances (files without a suffix are recognised by content)
DICOM_SUFFIXES: frozenset[str] = frozenset({".dcm", ".dicom"})
_DICOM_MAGIC_OFFSET = 128
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_MODE_NAMES: tuple[tuple[Callable[[int], bool], str], ...] = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def non_regular_kind(mode: int) -> str | None:
    """What a non-regular, non-directory ``st_mode`` is ("a named pipe (FIFO)", ...), else None."""
    for test, name in _MODE_NAMES:
        if test(mode):
            return name
    return None


def _stat(path: Path) -> os.stat_result:
    """``path.stat()`` with typed one-line errors for loops, broken links and permissions."""
    try:
        return path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotAFileError(f"{path}: symbolic link loop (the link points back to itself)") from None
        if isinstance(exc, FileNotFoundError):
            if path.is_symlink():
                raise NotAFileError(
                    f"{path}: broken symbolic link (target {os.readlink(path)!r} does not exist)"
                ) from None
            raise SlideOpenError(f"{path}: file not found") from None
        if isinstance(exc, PermissionError):
            raise SlideOpenError(f"{path}: permission denied") from None
        raise SlideOpenError(f"{path}: cannot stat file ({exc.strerror or exc})") from None


def _has_dicom_magic(path: Path) -> bool:
    """True for a regular file with the DICOM ``DICM`` marker at byte 128 (reads 132 bytes)."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # never open a FIFO or device
            return False
        with open(path, "rb") as fh:
            head = fh.read(_DICOM_MAGIC_OFFSET + 4)
    except OSError:
        return False
    return head[_DICOM_MAGIC_OFFSET:] == b"DICM"


def is_dicom_file(path: Path) -> bool:
    """A DICOM instance by suffix (``.dcm``, ``.dicom``) or, without a suffix, by content."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    return path.suffix == "" and _has_dicom_magic(path)


def dicom_instances(folder: Path) -> list[Path]:
    """Sorted regular DICOM instance files directly inside ``folder`` ([] when none)."""
    try:
        entries = sorted(Path(folder).iterdir())
    except OSError:
        return []
    out = []
    for entry in entries:
        if entry.name.startswith("._") or not is_dicom_file(entry):
            continue
        try:
            if stat.S_ISREG(entry.stat().st_mode):
                out.append(entry)
        except OSError:
            continue
    return out


def check_dicom_folder(dicom_file: Path) -> None:
    """``SlideOpenError`` when ``dicom_file``'s folder holds an entry that would block
    OpenSlide's DICOM folder scan (a named pipe, device or socket)."""
    folder = Path(dicom_file).parent
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise SlideOpenError(f"{dicom_file}: cannot list its folder ({exc.strerror or exc})") from None
    for entry in entries:
        try:
            kind = non_regular_kind(entry.lstat().st_mode)
        except OSError:
            continue
        if kind is not None:
            raise SlideOpenError(
                f"{dicom_file}: its folder holds {kind} '{entry.name}', which would block "
                "OpenSlide's scan of the DICOM folder; move it out of the folder")


def check_slide_path(path: Path) -> Path:
    """The regular file to open for ``path``, or a typed one-line error before any read.

    A folder of DICOM instances gives its first instance (OpenSlide reads the series from
    it); another folder, a FIFO, device, socket, symlink loop, broken link or empty file
    raises :class:`~histo_net.errors.NotAFileError` / ``SlideOpenError`` naming what it is.
    """
    path = Path(path)
    mode = _stat(path).st_mode
    if stat.S_ISDIR(mode):
        instances = dicom_instances(path)
        if instances:
            return instances[0]
        raise NotAFileError(f"{path}: is a directory, not a slide file (and holds no DICOM instances)")
    kind = non_regular_kind(mode)
    if kind is not None:
        raise NotAFileError(f"{path}: is {kind}, not a slide file")
    if not stat.S_ISREG(mode):
        raise NotAFileError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise SlideOpenError(f"{path}: empty file (0 bytes)")
    return path


class _Collect(logging.Handler):
    """Collects tifffile's warnings (it logs, rather than raises, on broken IFD chains)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def tiff_structure_problem(path: Path) -> str | None:
    """Why a TIFF-family file is truncated or corrupt (IFD chain, data past the end), or None.

    Used before a file OpenSlide did not recognise is read as a plain image: a truncated
    pyramidal TIFF / SVS would otherwise be read as its first page. Non-TIFF files: None.
    """
    import tifffile  # deferred: only for TIFF files OpenSlide refused

    path = Path(path)
    with open(path, "rb") as fh:
        if fh.read(4) not in _TIFF_MAGICS:
            return None
    size = path.stat().st_size
    logger = logging.getLogger("tifffile")
    collect = _Collect()
    logger.addHandler(collect)
    propagate, logger.propagate = logger.propagate, False
    try:
        with tifffile.TiffFile(path) as tif:
            for index, page in enumerate(tif.pages):
                ends = [int(o) + int(c) for o, c in zip(page.dataoffsets, page.databytecounts)]
                if ends and max(ends) > size:
                    return f"page {index} data ends at byte {max(ends)}, past the end ({size} bytes)"
            description = str(getattr(tif.pages[0], "description", "") or "") if tif.pages else ""
    except Exception as exc:  # noqa: BLE001  any parse failure is the problem itself
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    finally:
        logger.removeHandler(collect)
        logger.propagate = propagate
    if collect.messages:
        return collect.messages[0].splitlines()[0]
    if description.startswith("Aperio"):
        return "an Aperio SVS that OpenSlide cannot open"
    return None


def call_with_limit(fn: Callable[[], T], timeout_s: float, timeout_message: str,
                    cleanup: Callable[[Any], None] | None = None) -> T:
    """``fn()`` run in a daemon thread; ``SlideTimeoutError(timeout_message)`` after ``timeout_s``.

    The stuck call is abandoned (it cannot be interrupted); when it returns later its
    result is passed to ``cleanup`` (e.g. to close a slide handle). Exceptions of ``fn``
    are re-raised in the caller.
    """
    lock = threading.Lock()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            value = fn()
        except BaseException as exc:  # noqa: BLE001  handed to the caller below
            with lock:
                box["error"] = exc
            return
        with lock:
            abandoned = box.get("abandoned", False)
            box["value"] = value
        if abandoned and cleanup is not None:
            cleanup(value)

    thread = threading.Thread(target=target, name="histo-net-open", daemon=True)
    thread.start()
    thread.join(timeout_s)
    with lock:
        if thread.is_alive() and "value" not in box and "error" not in box:
            box["abandoned"] = True
            raise SlideTimeoutError(timeout_message)
    if "error" in box:
        raise box["error"]
    return box["value"]
