"""The files a resolver looks at, under a movable root.

libkmod stat()s every dependency path it reads from modules.dep and makes relative paths
absolute against the current directory (`$PWD` when it names the same directory, as
get_current_dir_name() does). `FileView` answers those two questions for the resolver.
"""

from __future__ import annotations

import errno
import os

from kmodd.system.root import Root


class FileView:
    """stat() and the current directory; paths map under `root` when `files_under_root`.

    Module files are looked up under the root like everything else, unless the tool was
    pointed at a directory of the host (`modprobe -d DIR`).
    """

    def __init__(self, root: Root, *, files_under_root: bool = True) -> None:
        self.root = root
        self._under_root = files_under_root and not root.is_host

    def stat_errno(self, path: str) -> int:
        if self._under_root and path.startswith("/"):
            path = self.root.path(path)
        try:
            os.stat(path)
        except OSError as e:
            return e.errno or errno.EIO
        return 0

    def cwd(self) -> str:
        pwd = os.environ.get("PWD")
        real = os.getcwd()
        if pwd and os.path.isabs(pwd):
            try:
                if os.path.samefile(pwd, real):
                    return pwd
            except OSError:
                pass
        return real
