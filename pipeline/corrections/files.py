"""Read-only access to an annotation tool's export: a folder, a zip file or one JSON file.

Member names come from the tool's export (or from whoever edited it) and are untrusted: they
are only ever compared with each other and read *inside* the folder or zip (a zip is read in
memory, never extracted); a name with ``..``, an absolute path or a backslash is never opened.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import PurePosixPath

from pipeline import storage


def _plain(name: str) -> bool:
    """A relative POSIX name without ``.``/``..`` parts or backslashes."""
    parts = PurePosixPath(name).parts
    return (
        bool(parts)
        and not name.startswith("/")
        and "\\" not in name
        and not any(p in (".", "..") for p in parts)
    )


class ExportFiles:
    """Files of one export, by relative POSIX name.

    Args:
        uri: folder, ``.zip`` file or single file (local or object store).
    """

    def __init__(self, uri: str) -> None:
        self.uri = storage.make_uri(*storage.split_uri(uri)).rstrip("/")
        self._zip: zipfile.ZipFile | None = None
        if storage.exists(self.uri) and self.uri.lower().endswith(".zip"):
            self._zip = zipfile.ZipFile(io.BytesIO(storage.read_bytes(self.uri)))
            names = [i.filename for i in self._zip.infolist() if not i.is_dir()]
        elif storage.exists(self.uri):  # one file: the export is that file
            self.uri, names = self.uri.rsplit("/", 1)[0], [self.uri.rsplit("/", 1)[1]]
        else:
            prefix = self.uri + "/"
            names = [u[len(prefix) :] for u in storage.list_files(self.uri) if u.startswith(prefix)]
        self.names = sorted(n for n in names if _plain(n))
        self.rejected = sorted(set(names) - set(self.names))

    def read(self, name: str) -> bytes:
        """Bytes of one listed member.

        Raises:
            KeyError: ``name`` is not a listed (plain) member.
        """
        if name not in self.names:
            raise KeyError(name)
        if self._zip is not None:
            return self._zip.read(name)
        return storage.read_bytes(storage.join(self.uri, *name.split("/")))

    def find(self, suffix: str) -> list[str]:
        """Listed names whose last parts equal ``suffix`` (``"labelmap.txt"``), or end with it
        when it starts with ``.`` (``".json"``)."""
        if suffix.startswith("."):
            return [n for n in self.names if n.lower().endswith(suffix)]
        return [n for n in self.names if n == suffix or n.endswith("/" + suffix)]
