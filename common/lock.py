"""One process per results folder: an advisory lock (``flock``) on ``FOLDER/.lock``.

The kernel drops the lock when its holder exits, however it exits (Ctrl-C, ``kill -9``, a crash), so a crashed
process never leaves the folder locked; the file itself stays behind, harmless, naming the last holder.
"""
from __future__ import annotations

import fcntl
import os
import socket
import sys
import time
from pathlib import Path

from common.errors import UserError

LOCK_NAME = ".lock"


class FolderLock:
    """``with FolderLock(folder, 'study.py'):`` holds ``folder`` for this process, or raises a one-line
    :class:`UserError` naming the process that holds it."""

    def __init__(self, folder: str | Path, what: str):
        self.path, self.what, self.fd = Path(folder) / LOCK_NAME, what, None

    def __enter__(self) -> FolderLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise UserError(f"{self.path.parent}: in use by {holder}; wait for it to end, or stop it") from None
        except OSError as e:  # a file system without flock (some NFS or Lustre mounts): go on, unguarded, and say so
            os.close(fd)
            print(f"note: {self.path}: cannot lock ({e.strerror}); nothing stops a second process on this folder",
                  file=sys.stderr)
            return self
        os.ftruncate(fd, 0)
        os.write(fd, f"{self.what} (pid {os.getpid()} on {socket.gethostname()}, since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')})\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock
            self.fd = None
