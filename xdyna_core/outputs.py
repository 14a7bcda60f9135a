"""Result files appear whole or not at all, and never over an input.

* `check_output_path`: the target is not one of the inputs (same resolved path or the same file via
  a hard link), not a folder, has an extension we really write, and its folder accepts files — all
  before any work is done.
* `atomic_output` / `partial_path` + `commit`: a writer fills a hidden temporary file beside the target;
  it is flushed to disk (fsync) and renamed into place only when complete (rename within one folder
  is atomic), with the permissions a plain new file gets under the umask. A crash, kill or power cut
  leaves the old file or the new one, never a part. `write_atomic` does it for bytes or text in hand.
* `discard_partials`: the command line's interrupt exit removes the temporary files still in progress.
"""
from __future__ import annotations

import glob
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Union

from .errors import XDynaError

PathLike = Union[str, os.PathLike]

_in_progress: set = set()  # temporary files being written by this process


class OutputPathError(XDynaError, ValueError):
    """An output path that must not or cannot be written; the message names it and why."""


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)  # hard links: same inode on the same device
    except OSError:
        return False  # one of them does not exist


def _existing_ancestor(path: Path) -> Path:
    p = path.absolute().parent
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output_path(out: PathLike, inputs: Iterable[Optional[PathLike]] = (),
                      suffixes: Sequence[str] = (".mp4",), option: str = "output") -> Path:
    """Raise OutputPathError unless `out` can take a new result; returns it as a Path.

    `inputs` are the job's input files (None entries are skipped); `option` names the path in
    messages (e.g. "--out")."""
    out = Path(out)
    for src in inputs:
        if src is not None and _same_file(out, Path(src)):
            raise OutputPathError(f"{option} {out} is the input {src}: writing it would overwrite (destroy) "
                                  f"the input; choose another file name")
    if out.is_dir():
        raise OutputPathError(f"{option} {out} is a folder; give a file name such as {out / ('result' + suffixes[0])}")
    if out.suffix.lower() not in suffixes:
        raise OutputPathError(f"{option} {out}: the file name must end in {' or '.join(suffixes)} "
                              f"(that is the format written), got {out.suffix or 'no extension'!r}")
    folder = _existing_ancestor(out)
    if not folder.is_dir():
        raise OutputPathError(f"{option} {out}: {folder} is not a folder")
    try:  # a real probe: permission bits do not tell (root, ACLs, read-only mounts)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".xdyna-write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputPathError(f"{option} {out}: cannot write into {folder} ({e.strerror or e})") from None
    return out


# H.264 at write_video's crf 18 shrinks natural video 50x and more; 10x bounds the result from above,
# plus room for the container and the driving clip's sound.
MP4_GENEROUS_RATIO = 10
MP4_OVERHEAD_BYTES = 8_000_000


def expected_mp4_bytes(frames: int, width: int, height: int) -> int:
    """A generous upper estimate of an mp4 of ``frames`` RGB frames of width x height."""
    return int(frames) * int(width) * int(height) * 3 // MP4_GENEROUS_RATIO + MP4_OVERHEAD_BYTES


def check_free_space(out: PathLike, needed: int, what: str, option: str = "output") -> None:
    """OutputPathError unless the folder ``out`` goes into has ``needed`` bytes free (``what``: how the
    estimate was made), so a full disk is found before the run, not after it."""
    import shutil

    folder = _existing_ancestor(Path(out))
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise OutputPathError(f"{option} {out}: {free / 1e6:.0f} MB free in {folder}, the result needs up to about "
                              f"{needed / 1e6:.0f} MB ({what}); free some space or write elsewhere")


def default_file_mode() -> int:
    """Permissions of a plain new file under the process umask (0o666 & ~umask)."""
    try:
        with open("/proc/self/status") as f:  # Linux: read without changing the umask
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def partial_path(target: PathLike) -> Path:
    """The hidden temporary name beside `target` this process writes to, registered for cleanup on
    interrupt. Leftovers of killed runs for the same target (their process gone) are removed."""
    target = Path(target)
    stem = f".{target.name}.partial-"
    pattern = re.compile(re.escape(stem) + r"(\d+)" + re.escape(target.suffix) + "$")
    if target.parent.is_dir():
        for old in target.parent.glob(glob.escape(stem) + "*"):
            m = pattern.match(old.name)
            if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
                try:
                    old.unlink()
                except OSError:
                    pass
    tmp = target.with_name(f"{stem}{os.getpid()}{target.suffix}")  # keeps the extension for format sniffers
    _in_progress.add(str(tmp))
    return tmp


def commit(tmp: PathLike, target: PathLike) -> None:
    """Flush the finished temporary file to disk, give it the umask's permissions and rename it to
    `target` (without the flush a power cut after the rename can leave an empty file)."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, default_file_mode())
    os.replace(tmp, target)
    _in_progress.discard(str(tmp))


def discard(tmp: PathLike) -> None:
    """Remove an unfinished temporary file (no error if it is already gone)."""
    _in_progress.discard(str(tmp))
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


def discard_partials() -> None:
    """Remove every temporary file still in progress (interrupt exit; must not raise)."""
    for tmp in list(_in_progress):
        try:
            os.unlink(tmp)
        except OSError:
            pass
    _in_progress.clear()


@contextmanager
def atomic_output(target: PathLike) -> Iterator[Path]:
    """`with atomic_output(path) as tmp: write(tmp)` — `path` appears only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(target)
    try:
        yield tmp
        commit(tmp, target)
    finally:
        if str(tmp) in _in_progress:  # not committed: an error or an interrupt in the block
            discard(tmp)


def write_atomic(target: PathLike, data: Union[bytes, str]) -> Path:
    """Write `data` (text as UTF-8) to `target` through :func:`atomic_output`; returns the target."""
    with atomic_output(target) as tmp:
        Path(tmp).write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(target)
