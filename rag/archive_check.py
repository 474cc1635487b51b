"""Check a zip-based document (.docx) before anything inflates it.

A .docx is a zip archive. Its central directory (at the end of the file, read without
decompressing anything) declares each member's uncompressed size; a 1 MB file can
declare 1 GiB of XML, and parsing that would take the rag worker (the only process
that can open the memory) and possibly the machine down. The declared sizes are a
safe bound: Python's zipfile never returns more bytes for a member than its declared
size, so a file that under-declares cannot inflate past the total checked here.

Limits (why these numbers): real .docx files hold tens to a few hundred members and a
few MB of XML plus their embedded media, which are stored, not inflated, so their
uncompressed size is close to the upload itself (at most 8 MiB, max_request_bytes).
1,000 members and 64 MiB leave a wide margin for genuine documents and stop bombs.
"""

from __future__ import annotations

import io
import zipfile

MAX_MEMBERS = 1000
MAX_UNCOMPRESSED_BYTES = 64 * 1024 * 1024


class ArchiveRefused(ValueError):
    """The archive is not safe to open; the message says why and what to do."""

    def __init__(self, message: str, too_large: bool) -> None:
        super().__init__(message)
        self.too_large = too_large  # True: HTTP 413 (too much content); False: 400 (not a zip)


def check_zip(data: bytes, name: str, max_members: int = MAX_MEMBERS,
              max_uncompressed: int = MAX_UNCOMPRESSED_BYTES) -> None:
    """Raise ArchiveRefused if the zip is unreadable, has too many members or would
    inflate to more than `max_uncompressed` bytes. Reads only the central directory."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as exc:
        raise ArchiveRefused(f"{name}: not a readable .docx (zip: {exc}); re-save it from the editor",
                             too_large=False) from None
    if len(members) > max_members:
        raise ArchiveRefused(f"{name}: the archive has {len(members)} members, more than {max_members}; "
                             f"a real .docx has far fewer (a zip bomb?). Re-save it from the editor or "
                             f"convert it to PDF/Markdown.", too_large=True)
    total = sum(m.file_size for m in members)
    if total > max_uncompressed:
        raise ArchiveRefused(f"{name}: the archive would unpack to {total / 2**20:.0f} MiB, more than "
                             f"{max_uncompressed / 2**20:.0f} MiB ({len(data) / 2**20:.1f} MiB packed; a zip "
                             f"bomb?). Nothing was unpacked. Split the document or convert it to "
                             f"PDF/Markdown.", too_large=True)
