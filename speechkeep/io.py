"""Filesystem helpers: the cache directory, atomic writes (nothing half-written survives a crash) and
the output-directory guard every command goes through before it writes (:func:`output_dir`).

What the guard guarantees: a command never deletes or overwrites anything it did not create. It
refuses, before any slow work, an output path that is a file, cannot be written, is not empty and not
recognisably its own earlier output (a ``.speechkeep-<command>`` marker file, or the files that
command writes) unless ``--overwrite`` / ``overwrite=true`` is given, and, even with it, the current
directory or any of its parents, ``$HOME`` or its parents, a repository root, and an input of the
command or a parent of one. When the command fails, what this invocation created is removed unless
it holds resumable work (a training checkpoint, synthesized audio).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from speechkeep.errors import DataError, OutputError

CACHE_ENV = "SPEECHKEEP_CACHE"


def cache_dir(*parts: str) -> Path:
    """Root of speechkeep's cache: ``$SPEECHKEEP_CACHE``, else ``$XDG_CACHE_HOME/speechkeep``,
    else ``~/.cache/speechkeep``. Sub-directories are created on demand."""
    root = os.environ.get(CACHE_ENV)
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(xdg) / "speechkeep")
    path = Path(root).joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, own_names: Iterable[str] | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path`` atomically.

    Works for files and directories. On an exception the temporary is removed and ``path`` is untouched.
    Replacing an existing directory never deletes what the new content does not replace: entries of the
    old directory that are not in the new one are moved into it, except ``own_names`` (names the
    writer owns, e.g. a stale sub-directory of another format). The current directory, $HOME, a
    repository root and their parents are never replaced."""
    path = Path(path)
    if not path.name or path.name in (".", ".."):
        raise OutputError(f"refusing to replace {str(path)!r}: give a named file or directory")
    reason = protected_reason(path) if path.is_dir() else None
    if reason:  # fail before the work, not after it
        raise OutputError(f"refusing to replace the directory {path}: it is {reason}")
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_stale(path)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(path), dir=path.parent)) / path.name
    try:
        yield tmp
        fault_point("atomic.before_rename")
        if path.is_dir() and tmp.is_dir():
            reason = protected_reason(path)
            if reason:
                raise OutputError(f"refusing to replace the directory {path}: it is {reason}")
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            fault_point("atomic.between_renames")
            os.replace(tmp, path)
            own = set(own_names or ())
            try:
                for e in list(old.iterdir()):
                    if e.name not in own and not (path / e.name).exists() and not (path / e.name).is_symlink():
                        os.replace(e, path / e.name)
            except OSError as err:  # keep the old directory rather than lose anything in it
                raise OutputError(f"{path} was replaced, but moving the rest of its old content over failed "
                                  f"({err}); it is kept in {old}") from None
            _rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        _rmtree(tmp.parent)


# ---------------------------------------------------------------------------------------------
# Crash safety: temporary names that say which process wrote them, their clean-up after a kill, and
# the fault-injection hook the kill tests use.

FAULT_ENV = "SPEECHKEEP_FAULT"
"""``SITE:N`` (or ``SITE:N,SITE2:M``): the process SIGKILLs itself the N-th time it reaches the named
:func:`fault_point` (1-based). For tests of what a kill at that exact point leaves behind."""

_fault_hits: dict[str, int] = {}
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)(?:-.*)?$")


def fault_point(site: str) -> None:
    """Kill this process with SIGKILL here if ``$SPEECHKEEP_FAULT`` asks for it (see :data:`FAULT_ENV`)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    for part in spec.split(","):
        name, _, n = part.strip().rpartition(":")
        if name == site:
            _fault_hits[site] = _fault_hits.get(site, 0) + 1
            if n.isdigit() and _fault_hits[site] == int(n):
                os.kill(os.getpid(), signal.SIGKILL)


def temp_prefix(path: str | os.PathLike) -> str:
    """The prefix of a temporary file or directory written next to ``path`` by this process
    (``.<name>.tmp-<pid>-``): a later run recognises and removes it once that process is gone."""
    return f".{Path(path).name}.tmp-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def recover_stale(path: str | os.PathLike) -> None:
    """Undo what a process killed while writing ``path`` atomically left next to it.

    Temporaries of a dead process (``.<name>.tmp-<pid>-*``) are removed. A directory that a killed
    process had moved aside to replace (``.<name>.old-<pid>``) is put back if ``path`` is missing (the
    kill fell between the two renames), or its entries the new directory lacks are moved into it (the
    kill fell while they were being moved), so nothing of the previous content is lost."""
    path = Path(path)
    try:
        entries = [e for e in os.listdir(path.parent) if e.startswith(f".{path.name}.")]
    except OSError:
        return
    for e in entries:
        m = _TEMP_RE.match(e)
        if not m or m["name"] != path.name or _pid_alive(int(m["pid"])):
            continue
        stale = path.parent / e
        if m["kind"] == "tmp":
            _rmtree(stale) if stale.is_dir() and not stale.is_symlink() else stale.unlink(missing_ok=True)
            continue
        if not path.exists() and not path.is_symlink():
            os.replace(stale, path)
            continue
        if path.is_dir() and stale.is_dir():
            for sub in list(stale.iterdir()):
                if not (path / sub.name).exists() and not (path / sub.name).is_symlink():
                    os.replace(sub, path / sub.name)
        _rmtree(stale)


def sweep_stale(root: str | os.PathLike) -> int:
    """:func:`recover_stale` for every temporary left by a dead process anywhere under ``root``;
    returns how many were found. Called when a command opens its output directory."""
    root = Path(root)
    found = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for e in list(dirnames) + filenames:
            m = _TEMP_RE.match(e)
            if m and not _pid_alive(int(m["pid"])):
                found += 1
                recover_stale(Path(dirpath) / m["name"])
                if e in dirnames:
                    dirnames.remove(e)
    return found


def append_lines(path: str | os.PathLike, lines: list[str]) -> None:
    """Append whole lines to ``path`` in one write, flushed to disk (fsync).

    A kill can tear at most the last line; :func:`read_appended` drops a torn tail."""
    data = "".join(line.rstrip("\n") + "\n" for line in lines).encode("utf-8")
    with open(path, "ab") as f:
        if os.environ.get(FAULT_ENV) and "append.mid_line" in os.environ[FAULT_ENV]:
            half = max(1, len(data) // 2)
            f.write(data[:half])
            f.flush()
            os.fsync(f.fileno())
            fault_point("append.mid_line")
            f.write(data[half:])
        else:
            f.write(data)
        f.flush()
        os.fsync(f.fileno())


def read_appended(path: str | os.PathLike) -> list[dict]:
    """The JSON records of a file written by :func:`append_lines`. A torn last line (a kill mid-write)
    is cut off the file, so the next append starts on a fresh line; a malformed line elsewhere is a
    DataError naming the file and line."""
    p = Path(path)
    if not p.is_file():
        return []
    data = p.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):  # a torn tail
        with open(p, "r+b") as f:
            f.truncate(end)
    out = []
    for n, raw in enumerate(data[:end].decode("utf-8", errors="replace").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except ValueError as e:
            raise DataError(f"{p}:{n}: malformed line ({e}); delete the file to start that part over") from None
        if not isinstance(rec, dict):
            raise DataError(f"{p}:{n}: not a JSON object; delete the file to start that part over")
        out.append(rec)
    return out


def tensor_fingerprint(tensors) -> str:
    """A hash of the bytes, shapes and dtypes of tensors (e.g. a model's weights)."""
    import torch

    h = hashlib.blake2b(digest_size=20)
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)}{t.dtype}".encode())
        h.update((t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().data)
    return h.hexdigest()


def _rmtree(p: Path) -> None:
    import shutil

    shutil.rmtree(p, ignore_errors=True)


def read_text_bytes(path: str | os.PathLike, what: str = "") -> bytes:
    """The bytes of a text file without a leading UTF-8 byte-order mark (DataError naming it if unreadable)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {what + ' ' if what else ''}{path}: {e.strerror or e}") from None
    return data[3:] if data.startswith(b"\xef\xbb\xbf") else data


def read_json_object(path: str | os.PathLike, what: str) -> dict:
    """A JSON file holding an object (DataError naming the file if it is unreadable or not an object)."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: not a readable {what} ({e})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: not a {what} (expected a JSON object)")
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically (indent 2, keys in insertion order). NaN and infinity are refused (they
    are not JSON): callers report non-finite numbers as null with a note."""
    text = json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_jsonl(path: str | os.PathLike, rows: list[dict]) -> None:
    """Write JSON lines atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def file_fingerprint(path: str | os.PathLike) -> str:
    """Cheap identity of a large file: size + mtime + sha256 of its first and last MiB."""
    p = Path(path)
    st = p.stat()
    h = hashlib.sha256(f"{st.st_size}".encode())
    with open(p, "rb") as f:
        h.update(f.read(1 << 20))
        if st.st_size > (1 << 20):
            f.seek(-(1 << 20), os.SEEK_END)
            h.update(f.read())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Output directories

MARKER_PREFIX = ".speechkeep-"

MIN_FREE_ENV = "SPEECHKEEP_MIN_FREE_MB"
"""The free space (MiB) an output directory's file system must have before a command starts
(default 64): less is a "file system is full" error before any work."""


def min_free_bytes() -> int:
    try:
        mb = float(os.environ.get(MIN_FREE_ENV, "64"))
    except ValueError:
        raise OutputError(f"${MIN_FREE_ENV}={os.environ[MIN_FREE_ENV]!r} is not a number of MiB") from None
    return int(max(0.0, mb) * 2**20)

# Files by which an output written before markers existed (or by an interrupted run of an older
# version) is recognised as the command's own.
KNOWN_OUTPUTS: dict[str, tuple[str, ...]] = {
    "build": ("speechkeep.json",),
    "train": ("train_config.json",),
    "eval": ("metrics.json", "predictions.jsonl"),
    "data-build": ("manifest.jsonl", "build_info.json", "audio/index.json", "teacher_cache.jsonl"),
    "importance": ("importance.safetensors",),
    "deactivate": ("deactivation.json",),
    "importance-compare": ("shift.json",),
    "heatmap": ("heatmaps.json",),
    "restore": ("restore.json", "curve.json"),
    "align": ("report.json", "corpus/manifest.jsonl", "corpus/audio", "ctc/metrics.csv", "eval/manifest.jsonl"),
    "align-export": ("CARD.md",),
    "data-text": ("info.json", "train.jsonl", "heldout.jsonl", "vocabulary.json"),
    "measure": ("measure.json", "clean/manifest.jsonl"),
    "reproduce": ("times.json", "cells.json", "results.json", "data/eval/manifest.jsonl"),
    "demo": ("report.md", "demo_summary.json", "data/train/audio", "data/train/manifest.jsonl"),
}


def marker_name(command: str) -> str:
    return MARKER_PREFIX + command.replace(" ", "-")


def _is_relative_to(a: Path, b: Path) -> bool:
    try:
        a.relative_to(b)
        return True
    except ValueError:
        return False


def protected_reason(path: str | os.PathLike, inputs: Iterable[str | os.PathLike] = ()) -> str | None:
    """Why ``path`` must never be an output directory (None if it may be): the current directory or a
    parent of it, $HOME or a parent of it, a repository root, an input or a parent of an input."""
    p = Path(os.path.abspath(os.path.expanduser(str(path))))
    try:
        p = p.resolve()
    except OSError:
        pass
    cwd = Path.cwd().resolve()
    home = Path.home().resolve()
    if p == cwd:
        return "the current directory"
    if _is_relative_to(cwd, p):
        return "a parent of the current directory"
    if p == home:
        return "your home directory"
    if _is_relative_to(home, p):
        return "a parent of your home directory"
    if (p / ".git").exists():
        return "a repository root"
    for inp in inputs:
        if inp is None or str(inp) == "" or not Path(os.path.expanduser(str(inp))).exists():
            continue  # a model spec such as bundled:NAME or org/name, not a path
        q = Path(os.path.abspath(os.path.expanduser(str(inp))))
        try:
            q = q.resolve()
        except OSError:
            pass
        if q == p:
            return f"an input of this command ({inp})"
        if _is_relative_to(q, p):
            return f"a parent of an input of this command ({inp})"
    return None


class OutputDir:
    """One command's output directory: checked before any work, created, marked, cleaned on failure.

    Use :func:`output_dir` (a context manager) rather than this class directly."""

    def __init__(self, path: str | os.PathLike, command: str, *, overwrite: bool = False,
                 inputs: Iterable[str | os.PathLike] = (), key: str = "--out",
                 keep: Callable[[Path], bool] | None = None, marker: bool = True):
        if path is None or str(path).strip() == "":
            raise OutputError(f"{key}: no output directory given")
        self.path = Path(os.path.expanduser(str(path)))
        self.command, self.overwrite, self.key, self.keep = command, overwrite, key, keep
        self.inputs = [i for i in inputs if i]
        self.marker = self.path / marker_name(command)
        self.write_marker = marker
        self.created_root: Path | None = None  # the topmost directory this invocation created
        self.was_empty = False
        self.marker_created = False

    # ------------------------------------------------------------------ checks
    def _hint(self) -> str:
        opt = "--overwrite" if self.key.startswith("--") else "overwrite=true"
        return f"choose a new directory, or pass {opt} to write into it anyway"

    def is_own(self) -> bool:
        """Whether the existing directory is recognisably this command's earlier output."""
        if self.marker.is_file():
            return True
        return any((self.path / name).exists() for name in KNOWN_OUTPUTS.get(self.command, ()))

    def check(self) -> None:
        """Raise :class:`OutputError` if the directory must not be used; writes nothing."""
        p, key = self.path, self.key
        reason = protected_reason(p, self.inputs)
        if reason:
            raise OutputError(f"{key} {p}: refusing to write into {reason}; choose a new directory")
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                raise OutputError(f"{key} {p}: exists and is not a directory")
            if not os.access(p, os.W_OK | os.X_OK):
                raise OutputError(f"{key} {p}: the directory is not writable")
            try:
                entries = [e for e in p.iterdir() if not e.name.startswith(MARKER_PREFIX) or e.name == self.marker.name]
            except OSError as e:
                raise OutputError(f"{key} {p}: cannot list the directory: {e.strerror or e}") from None
            self.was_empty = not entries
            if entries and not self.overwrite and not self.is_own():
                raise OutputError(f"{key} {p}: the directory is not empty and was not written by "
                                  f"`speechkeep {self.command.replace('-', ' ')}`; {self._hint()}")
            self._check_space(p)
            return
        parent = p.parent
        while not parent.exists():
            if parent.is_symlink():
                raise OutputError(f"{key} {p}: {parent} is a broken symbolic link")
            parent = parent.parent
        if not parent.is_dir():
            raise OutputError(f"{key} {p}: {parent} exists and is not a directory")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise OutputError(f"{key} {p}: cannot create it, {parent} is not writable")
        self._check_space(parent)

    def _check_space(self, where: Path) -> None:
        """A full file system is an error before any work (see :data:`MIN_FREE_ENV`)."""
        import shutil

        need = min_free_bytes()
        try:
            st = os.statvfs(where)
            free = shutil.disk_usage(where).free
        except OSError:
            return
        if st.f_flag & os.ST_RDONLY:
            raise OutputError(f"{self.key} {self.path}: not writable: {where} is on a read-only file system")
        if st.f_blocks == 0:  # a pseudo file system (sysfs, procfs): no size to speak of
            return
        if free < need:
            raise OutputError(f"{self.key} {self.path}: the file system is full: {free / 2**20:.1f} MiB free, at least "
                              f"{need / 2**20:.0f} MiB needed (free some space, or set ${MIN_FREE_ENV})")

    # ------------------------------------------------------------------ create / clean up
    def create(self) -> Path:
        """Check, then create the directory (and its missing parents) and write the marker file."""
        self.check()
        p = self.path
        missing = []
        q = p
        while not q.exists():
            missing.append(q)
            q = q.parent
        try:
            p.mkdir(parents=True, exist_ok=True)
            sweep_stale(p)  # what a killed earlier run left half-written
            if missing:
                self.created_root = missing[-1]
                self.was_empty = True
            if self.write_marker and not self.marker.exists():
                self.marker.write_text(f"written by `speechkeep {self.command.replace('-', ' ')}`; "
                                       "lets the command write here again\n")
                self.marker_created = True
        except OSError as e:
            self._remove_created()
            raise OutputError(f"{self.key} {p}: cannot write there: {e.strerror or e}") from None
        return p

    def _remove_created(self) -> None:
        if self.created_root is not None:
            _rmtree(self.created_root)
        elif self.marker_created:
            self.marker.unlink(missing_ok=True)

    def __enter__(self) -> Path:
        return self.create()

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            self.cleanup_after_failure()
        return False

    def cleanup_after_failure(self) -> None:
        """Remove what this invocation created, unless it is worth keeping (resumable work)."""
        if not self.path.is_dir():
            return
        if self.keep is not None:
            try:
                if self.keep(self.path):
                    return
            except OSError:
                return
        if self.created_root is not None:
            _rmtree(self.created_root)
        elif self.was_empty:  # an existing empty directory: everything in it is this invocation's
            for e in list(self.path.iterdir()):
                if e.is_dir() and not e.is_symlink():
                    _rmtree(e)
                else:
                    e.unlink(missing_ok=True)
        elif self.marker_created:
            self.marker.unlink(missing_ok=True)


@contextlib.contextmanager
def output_dir(path: str | os.PathLike, command: str, *, overwrite: bool = False,
               inputs: Iterable[str | os.PathLike] = (), key: str = "--out",
               keep: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Check ``path`` as ``command``'s output directory, create it, and yield it.

    On an exception (or Ctrl-C) inside the block, what this invocation created is removed unless
    ``keep(path)`` says it holds useful (resumable) work; an existing directory's earlier content is
    never touched. ``inputs``: the command's input paths (the output may not be one, or a parent of
    one). ``key``: the option or config key named in errors."""
    with OutputDir(path, command, overwrite=overwrite, inputs=inputs, key=key, keep=keep) as p:
        yield p


def has_files(path: Path, pattern: str = "*") -> bool:
    """Whether ``path`` holds a regular file matching ``pattern`` (recursively), markers excluded."""
    return any(f.is_file() and not f.name.startswith(MARKER_PREFIX) for f in path.rglob(pattern))
