"""Atomic file writing, the one writer of every file bnncli replaces: checkpoints, ONNX and packed
files, run-directory logs and curves (torch-free).

A kill at any instant leaves either the old file or the complete new one, never a partial file;
a failed write (full disk, no permission) leaves the old file too and raises
:class:`~bnncli.errors.ArtifactError` naming the path. :func:`check_output` is the one policy for
where a command may write: never over its own input, never over a device or a directory, over an
existing file only when asked (``--force``).

Permissions: a new file gets what the umask gives (0644 under the usual umask 022), as ``open``
would; a replaced file keeps its own permission bits.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from bnncli.errors import ArtifactError, BnnError, UsageError

try:
    import fcntl
except ImportError:  # Windows: stale temp files are left for the user
    fcntl = None  # type: ignore[assignment]

# What a text file a command reads (class names, a run's config or metrics) may hold: far above
# any real one (1000 class names are 10 KB; a 1000-epoch metrics.jsonl about 300 KB).
MAX_TEXT_BYTES = 16 << 20


def file_kind(mode: int) -> str:
    """What a ``st_mode`` that is not a regular file is, in words ("a FIFO (named pipe)", ...)."""
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "a special file"


def _a(noun: str) -> str:
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def open_regular(path: str | os.PathLike, what: str = "file", error: type[BnnError] = UsageError) -> BinaryIO:
    """``path`` opened for binary reading if it is a regular file (symlinks followed), else ``error``
    with one line: "WHAT not found: PATH", "cannot read PATH: a FIFO (named pipe), not a WHAT".

    Checked by ``stat`` before opening and again on the descriptor, which is opened non-blocking,
    so neither a FIFO nor a file swapped for one in between can block, and a device (``/dev/zero``)
    is never read."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except OSError as e:
        raise error(f"cannot read {path}: {e.strerror or e}") from None
    if not stat.S_ISREG(mode):
        raise error(f"cannot read {path}: {file_kind(mode)}, not {_a(what)}")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as e:
        raise error(f"cannot read {path}: {e.strerror or e}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise error(f"cannot read {path}: {file_kind(mode)}, not {_a(what)}")
    return os.fdopen(fd, "rb")  # O_NONBLOCK means nothing for a regular file


def read_regular(path: str | os.PathLike, limit: int = MAX_TEXT_BYTES, what: str = "file",
                 error: type[BnnError] = UsageError) -> bytes:
    """The bytes of the regular file ``path`` (:func:`open_regular`), at most ``limit`` of them:
    a larger file is refused with one line, after reading no more than ``limit + 1`` bytes."""
    try:
        with open_regular(path, what, error) as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise error(f"cannot read {path}: {e.strerror or e}") from None
    if len(data) > limit:
        raise error(f"{path} holds more than {limit:,} bytes, more than any {what} bnncli reads")
    return data


def read_regular_text(path: str | os.PathLike, limit: int = MAX_TEXT_BYTES, what: str = "file",
                      error: type[BnnError] = UsageError) -> str:
    """:func:`read_regular` decoded as UTF-8 (one line naming the file when it is not)."""
    data = read_regular(path, limit, what, error)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"cannot read {path}: not UTF-8 text (byte {e.start})") from None


def temp_prefix(path: Path) -> str:
    """The name every temp file of :func:`atomic_open` for ``path`` starts with (and ends ``.tmp``)."""
    return f".{path.name}."


def _temp_name(path: Path) -> re.Pattern[str]:
    """The names mkstemp gives :func:`atomic_open`'s temp files for ``path``: ``.NAME.`` + 8 of
    ``[a-z0-9_]`` + ``.tmp`` (no dot among the 8, so ``.a.b.x.tmp`` of ``a`` never matches ``a.b``'s)."""
    return re.compile(re.escape(temp_prefix(path)) + r"[a-z0-9_]{8}\.tmp")


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove the temp files that writes of ``path`` killed before their rename left behind; returns them.

    A write holds an exclusive ``flock`` on its temp file until the rename, and the kernel drops it
    when the writer dies however it dies: a temp file whose lock can be taken belongs to no live
    write. (Where there is no flock, nothing is removed.)"""
    path = Path(path)
    pattern = _temp_name(path)
    removed: list[Path] = []
    try:
        names = [n for n in os.listdir(path.parent) if pattern.fullmatch(n)]
    except OSError:
        return removed
    for name in names:
        stale = path.parent / name
        try:
            fd = os.open(stale, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            continue
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode) or not _try_lock(fd):
                continue
            stale.unlink()
            removed.append(stale)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def _try_lock(fd: int) -> bool:
    """Take an exclusive flock on ``fd`` without waiting; False when someone holds it or there is no flock."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def write_error(path: Path, e: OSError) -> ArtifactError:
    """One line for a failed write: what, where, why, and that the previous file is intact."""
    why = os_reason(e)
    kept = "the previous file is kept" if path.is_file() else "nothing was written"
    return ArtifactError(f"cannot write {path}: {why} ({kept})")


def os_reason(e: BaseException) -> str:
    """Why an OSError happened, in the system's words ("No space left on device"); the same for an
    error a library raised with the errno only in its text (PyTorch's zip writer: "... error code 28")."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    text = str(e)
    if isinstance(e, OSError) and e.errno:
        return os.strerror(e.errno)
    found = re.search(r"(?:error code|errno)[: ]+(\d+)", text)
    if found and int(found[1]) in errno.errorcode:
        return os.strerror(int(found[1]))
    return text.strip().splitlines()[0] if text.strip() else type(e).__name__


def check_replaceable(path: Path) -> None:
    """Refuse to replace a directory, a device, a pipe or a socket (the rename would destroy it)."""
    if path.is_dir():
        raise UsageError(f"{path} is a directory; give a file name inside it")
    if path.exists() and not path.is_file():
        raise UsageError(f"{path} is not a regular file (a device, pipe or socket); give a file path")


def current_umask() -> int:
    """The process's umask, read without changing it where Linux shows it (/proc/self/status)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


def file_mode(path: Path) -> int:
    """The permission bits a write of ``path`` gives: those of the file it replaces, else 0666 less the umask.
    (mkstemp creates its file 0600, private, whatever the umask.)"""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``path`` only when the block ends without an error:
    a temp file with a unique name in the same folder, fsync, rename, then fsync of the folder.

    An OSError (full disk, no permission, a parent that is a file) becomes ArtifactError; the
    temp file is removed and ``path`` is left as it was. The file gets :func:`file_mode`'s
    permissions. Temp files that killed writes of ``path`` left are removed first
    (:func:`remove_stale_temps`)."""
    path = Path(path)
    check_replaceable(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise write_error(path, e) from None
    _try_lock(fd)  # held until the rename: remove_stale_temps leaves a live write's temp file alone
    try:
        with os.fdopen(fd, "wb") as f:
            with contextlib.suppress(OSError):  # a filesystem without modes (some network mounts) keeps its own
                os.fchmod(f.fileno(), file_mode(path))
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise write_error(path, e) from None
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_open(path) as f:
        f.write(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    return write_bytes(path, text.encode("utf-8"))


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file: the same inode (links included), or the same resolved path."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return Path(a).resolve() == Path(b).resolve()


def check_output(path: str | os.PathLike, *, inputs: Iterable[str | os.PathLike] = (), force: bool = False,
                 suffix: str = "") -> Path:
    """Check, before any work, that a command may write ``path``; returns it.

    Refused (UsageError): one of the command's ``inputs`` (even with ``force``), a directory, a
    device, pipe or socket, a place that cannot hold a file, and an existing file unless ``force``.
    """
    path = Path(path)
    for source in inputs:
        if same_file(path, source):
            raise UsageError(f"{path} is this command's input; it is never overwritten, not even with --force: "
                             f"choose another --output")
    if path.is_dir():
        raise UsageError(f"{path} is a directory; give a file name such as {path / ('model' + suffix)}")
    check_replaceable(path)
    if path.exists() and not force:
        raise UsageError(f"{path} exists; pass --force to replace it")
    folder = _nearest_existing(path.parent)
    if not folder.is_dir():
        raise UsageError(f"cannot write {path}: {folder} is not a directory")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write {path}: {unwritable(folder)}")
    return path


def unwritable(folder: str | os.PathLike) -> str:
    """Why this process cannot write into ``folder`` (the nearest existing folder on the way) and
    the fix, in a few words for an error line. In a container (``$BNNCLI_CONTAINER``, set by the
    Docker image) the fix is docker's: run as the folder's owner, or mount it writable."""
    folder = _nearest_existing(Path(folder))
    container = bool(os.environ.get("BNNCLI_CONTAINER"))
    try:
        st = folder.stat()
        read_only = hasattr(os, "statvfs") and bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError as e:
        return f"{folder} cannot be read ({e.strerror or e})"
    if read_only:
        fix = "mount it without :ro" if container else "choose a folder on a writable filesystem"
        return f"{folder} is on a read-only filesystem: {fix}"
    uid = os.getuid() if hasattr(os, "getuid") else None
    if uid is None:
        return f"{folder} is not writable"
    who = f"{folder} is not writable by uid {uid} (it belongs to uid {st.st_uid})"
    if container:
        return (f"{who}: run the image as the folder's owner (docker run -u \"$(id -u):$(id -g)\" for your own "
                f"folder) or make the folder writable")
    return f"{who}: choose a folder you can write to, or make it writable"


def _nearest_existing(folder: Path) -> Path:
    """``folder``, or its nearest ancestor that exists (where a missing folder would be created)."""
    folder = folder.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder
