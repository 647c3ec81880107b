"""The write-behind journal on disk: what a process could not store before it exited.

A write-behind queue keeps, in memory, every write it has not seen stored (the journal
of :mod:`cachekit.write.stream_queue`, or the pending writes of the memory queue). When the
process exits (or ``close()`` gives up after ``exit_timeout``) with writes still there,
Redis unreachable or ``store_many`` failing, they are written to a file, and the next
process that starts a worker for the same queue takes the file and queues them again.

Files: ``{dir}/{digest}.{pid}-{random}.journal``, where ``digest`` names the queue (the
Redis server, the stream key; for memory the namespace and queue name). Taking one is an
atomic rename to ``...journal.taken-{pid}-{incarnation}``, so two starting processes never
both replay it; the taken file is deleted once its writes are queued again (Redis) or
stored (memory), and a taken file whose process died is taken again (one that died with
the pid this process has now included: the incarnation tells them apart). Directory ``0700``, files
``0600``; files not owned by this user, or writable by others, are refused: the content
is a pickle (memory values are arbitrary objects), to be read only by the user who wrote it.

Delivery stays at least once, and a replayed write may land after a newer write of the
same id that another process stored meanwhile: ``store_many`` should be an idempotent
upsert (and compare versions if order matters).
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import stat
import uuid
from pathlib import Path
from typing import Any

__all__ = ["JournalFiles", "default_journal_dir"]

logger = logging.getLogger(__name__)

FORMAT = 1
_SUFFIX = ".journal"
_TAKEN = ".taken-"
# This process among those that had its pid: a taken file is named ``taken-{pid}-{this}``.
# A pid is reused, by the next start of the same program in a container (pid 1 every
# time) above all: a file taken under our pid by an earlier process that died is not ours.
_INCARNATION = uuid.uuid4().hex[:12]


def default_journal_dir() -> Path:
    """``$CACHEKIT_JOURNAL_DIR``, else ``$XDG_STATE_HOME/cachekit/write-behind`` (state
    that must survive a restart), else ``~/.local/state/cachekit/write-behind``."""
    explicit = os.environ.get("CACHEKIT_JOURNAL_DIR")
    if explicit:
        return Path(explicit)
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(state) / "cachekit" / "write-behind"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class JournalFiles:
    """The journal files of one queue (``identity`` names it) in ``directory``."""

    def __init__(self, directory: str | os.PathLike[str], identity: str) -> None:
        self.directory = Path(directory)
        self.digest = hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()[:32]

    def write(self, records: list[Any]) -> Path:
        """Write ``records`` to a new file, atomically; its path (OSError if it cannot)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        name = f"{self.digest}.{os.getpid()}-{uuid.uuid4().hex[:8]}{_SUFFIX}"
        final = self.directory / name
        partial = self.directory / (name + ".partial")
        payload = pickle.dumps({"format": FORMAT, "records": records})
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(payload)
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, final)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return final

    def take(self) -> list[tuple[Path, dict[str, Any]]]:
        """Take every file of this queue (and any a dead process had taken): ``(path,
        content)``; ``forget(path)`` once its writes are safe again."""
        taken: list[tuple[Path, dict[str, Any]]] = []
        try:
            names = sorted(self.directory.glob(self.digest + ".*"))
        except OSError:
            return taken
        for path in names:
            name = path.name
            if _TAKEN in name:
                base, _, taker = name.rpartition(_TAKEN)
                pid, _, incarnation = taker.partition("-")  # no "-": an older cachekit's
                try:
                    holder = int(pid)
                except ValueError:
                    continue
                if holder == os.getpid():
                    if incarnation == _INCARNATION:
                        continue  # this process holds it
                elif _alive(holder):
                    continue
            elif name.endswith(_SUFFIX):
                base = name
            else:
                continue
            mine = self.directory / f"{base}{_TAKEN}{os.getpid()}-{_INCARNATION}"
            try:
                os.rename(path, mine)  # atomic: one process gets it
            except OSError:
                continue
            content = self._read(mine)
            if content is not None:
                taken.append((mine, content))
        return taken

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            info = path.stat()
            if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                logger.error("refusing write-behind journal %s: not private to this user", path)
                return None
            content = pickle.loads(path.read_bytes())
        except Exception as exc:
            logger.error("cannot read write-behind journal %s (left in place): %r", path, exc)
            return None
        if not isinstance(content, dict) or content.get("format") != FORMAT:
            logger.error("write-behind journal %s has an unknown format (left in place)", path)
            return None
        return content

    @staticmethod
    def forget(path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:  # pragma: no cover - a read-only directory
            logger.warning("cannot delete replayed write-behind journal %s: %r", path, exc)
