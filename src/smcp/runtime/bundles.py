"""Server bundles: deterministic packing and hostile-input-safe unpacking.

A bundle is a gzip-compressed tar of a server directory (the one holding smcp.toml).
Bundles arrive from tenants, so everything here treats the archive as hostile:

- `inspect` streams the archive through a decompressor that counts the bytes it
  actually produces (gzip trailers and tar headers can lie) and validates every
  member before anything touches the disk.
- `extract` repeats those checks, then extracts into a temporary sibling directory
  with tarfile's "data" filter as a second line of defence, and renames it into
  place only when everything succeeded.
- `pack` produces byte-identical output for identical trees, so a bundle's sha256
  is a stable identity for a revision.
"""

from __future__ import annotations

import copy
import gzip
import io
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from smcp.domain import InvalidBundle

__all__ = ["BundleInfo", "SKIP_NAMES", "SPEC_NAME", "extract", "inspect", "pack"]

SPEC_NAME = "smcp.toml"

# Build outputs, caches and VCS state: never part of what a revision runs, and often
# large or host-specific (a .venv holds absolute paths to the packer's interpreter).
SKIP_NAMES = frozenset({".git", "__pycache__", ".venv", "venv", "node_modules", ".smcp", ".DS_Store"})
_SKIP_SUFFIXES = (".pyc",)

_MAX_NAME_BYTES = 4096
_MAX_SPEC_BYTES = 1024 * 1024
# Same bound the kernel uses (MAXSYMLINKS) before giving up with ELOOP.
_MAX_SYMLINK_HOPS = 40
_SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX
_CHUNK = 64 * 1024
# The decompressed stream holds tar headers and block padding besides file data: allow
# a header plus worst-case padding per permitted entry, and the end-of-archive record.
_TAR_OVERHEAD_PER_ENTRY = 1024
_TAR_OVERHEAD_FIXED = 2 * tarfile.RECORDSIZE

_HAS_DATA_FILTER = hasattr(tarfile, "data_filter")  # Python >= 3.11.4


@dataclass
class BundleInfo:
    spec_text: bytes
    entries: int
    unpacked_bytes: int


# --------------------------------------------------------------------------- packing


def pack(directory: Path) -> bytes:
    """Pack a server directory into a deterministic .tar.gz; raises InvalidBundle."""
    root = Path(directory)
    if not root.is_dir():
        raise InvalidBundle(f"{root} is not a directory")
    spec = root / SPEC_NAME
    if not spec.is_file() or spec.is_symlink():
        raise InvalidBundle(f"{root} has no {SPEC_NAME} (a regular file) at its root")
    real_root = os.path.realpath(root)

    buf = io.BytesIO()
    # filename="" and mtime=0 keep the gzip header free of anything host- or time-specific.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for rel, path in _walk(root):
                info = _pack_member(rel, path, real_root)
                if info.isreg():
                    with path.open("rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return buf.getvalue()


def _walk(root: Path, rel: str = "") -> list[tuple[str, Path]]:
    """Every kept path under root, depth-first in byte order of names (locale-independent)."""
    found: list[tuple[str, Path]] = []
    with os.scandir(root / rel if rel else root) as it:
        entries = sorted(it, key=lambda e: os.fsencode(e.name))
    for entry in entries:
        if entry.name in SKIP_NAMES or entry.name.endswith(_SKIP_SUFFIXES):
            continue
        child = f"{rel}/{entry.name}" if rel else entry.name
        found.append((child, Path(entry.path)))
        if entry.is_dir(follow_symlinks=False):
            found.extend(_walk(root, child))
    return found


def _pack_member(rel: str, path: Path, real_root: str) -> tarfile.TarInfo:
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidBundle(f"{_show(rel)}: file name is not valid UTF-8") from None
    if len(rel.encode("utf-8")) > _MAX_NAME_BYTES:
        raise InvalidBundle(f"{_show(rel)}: path is longer than {_MAX_NAME_BYTES} bytes")

    st = path.lstat()
    info = tarfile.TarInfo(rel)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(path)
        if os.path.isabs(target):
            raise InvalidBundle(f"{_show(rel)}: symlink has an absolute target {target!r}; make it relative")
        resolved = os.path.realpath(path)
        if os.path.commonpath([resolved, real_root]) != real_root:
            raise InvalidBundle(f"{_show(rel)}: symlink points outside the server directory ({target!r})")
        info.type = tarfile.SYMTYPE
        info.linkname = target
        info.mode = 0o777
        return info
    if stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        return info
    if stat.S_ISREG(st.st_mode):
        # Hard links on disk are packed as independent copies: simpler, and the
        # output then does not depend on inode numbers.
        info.type = tarfile.REGTYPE
        info.mode = 0o755 if st.st_mode & 0o111 else 0o644
        info.size = st.st_size
        return info
    raise InvalidBundle(f"{_show(rel)}: not a regular file, directory or symlink")


# ------------------------------------------------------------------------ unpacking


def inspect(data: bytes, *, max_unpacked_bytes: int, max_entries: int) -> BundleInfo:
    """Validate a bundle entirely in memory; returns smcp.toml's bytes and sizes.

    Raises InvalidBundle naming the offending member for anything unsafe.
    """
    return _Validator(max_unpacked_bytes=max_unpacked_bytes, max_entries=max_entries).run(data)


def extract(data: bytes, dest: Path, *, max_unpacked_bytes: int, max_entries: int) -> None:
    """Validate, then unpack into `dest` (absent or empty); all or nothing.

    Files end up 0644 (0755 if executable), directories 0755, owned by the caller.
    """
    inspect(data, max_unpacked_bytes=max_unpacked_bytes, max_entries=max_entries)
    dest = Path(dest)
    if dest.is_symlink() or (dest.exists() and (not dest.is_dir() or any(dest.iterdir()))):
        raise InvalidBundle(f"extraction target {dest} exists and is not an empty directory")
    dest.parent.mkdir(parents=True, exist_ok=True)

    # A sibling, so the final rename stays on one filesystem and is atomic.
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        stream = _BoundedGunzip(data, _stream_budget(max_unpacked_bytes, max_entries))
        try:
            with tarfile.open(fileobj=stream, mode="r|", errorlevel=2) as tar:
                if _HAS_DATA_FILTER:
                    tar.extractall(tmp, filter=_extract_filter)
                else:  # Python < 3.11.4 (Debian 12's 3.11.2): our own checks above already ran
                    for member in tar:
                        tar.extract(_normalised_member(member), tmp)
        except InvalidBundle:
            raise
        except (tarfile.TarError, OSError, EOFError, zlib.error, ValueError, UnicodeError) as exc:
            raise InvalidBundle(f"bundle could not be extracted: {exc}") from exc
        _fix_dir_modes(tmp)
        # rename(2) atomically replaces an empty directory, so a pre-created empty
        # dest is fine and no reader ever sees a half-extracted tree at dest.
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _extract_filter(member: tarfile.TarInfo, dest_path: str) -> tarfile.TarInfo:
    return _normalised_member(tarfile.data_filter(member, dest_path))


def _normalised_member(member: tarfile.TarInfo) -> tarfile.TarInfo:
    # uid/gid None stops tarfile from chown-ing when the host process runs as root.
    if member.issym():
        mode = None
    elif member.isdir() or member.mode & 0o111:
        mode = 0o755
    else:
        mode = 0o644
    if hasattr(member, "replace"):
        return member.replace(mode=mode, uid=None, gid=None, uname=None, gname=None, deep=False)
    # Before 3.11.4 TarInfo has no replace() and tarfile cannot skip chown: a copy owned
    # by this process makes a root host chown each file to itself, never to the
    # archive's ids (empty names stop the lookup by name).
    copied = copy.copy(member)
    if mode is not None:
        copied.mode = mode
    copied.uid, copied.gid, copied.uname, copied.gname = os.getuid(), os.getgid(), "", ""
    return copied


def _fix_dir_modes(root: Path) -> None:
    # mkdtemp creates 0700, and parents implied by a member path (no directory entry
    # of their own) are created under the process umask: make every directory 0755.
    os.chmod(root, 0o755)
    for current, dirs, _files in os.walk(root):
        for name in dirs:
            path = os.path.join(current, name)
            if not os.path.islink(path):
                os.chmod(path, 0o755)


def _stream_budget(max_unpacked_bytes: int, max_entries: int) -> int:
    return max_unpacked_bytes + _TAR_OVERHEAD_PER_ENTRY * max_entries + _TAR_OVERHEAD_FIXED


class _BoundedGunzip:
    """A gunzip reader that fails once it has produced more than `limit` bytes.

    This is what defeats decompression bombs: it counts bytes actually produced, so
    a lying gzip ISIZE or tar size field cannot hide them, and reading stops at the
    limit instead of inflating the whole stream first.
    """

    def __init__(self, data: bytes, limit: int) -> None:
        if data[:2] != b"\x1f\x8b":
            raise InvalidBundle("bundle is not gzip-compressed (expected a .tar.gz)")
        self._gz = gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb")
        self._limit = limit
        self.produced = 0

    def read(self, size: int | None = -1) -> bytes:
        # Never ask for more than one byte past the limit: that is enough to detect
        # the overrun and keeps memory bounded even for read(-1).
        want = self._limit - self.produced + 1
        if size is not None and size >= 0:
            want = min(want, size)
        chunk = self._gz.read(want)
        self.produced += len(chunk)
        if self.produced > self._limit:
            raise InvalidBundle(
                f"bundle decompresses to more than {self._limit} bytes (limit on unpacked size; "
                "possible decompression bomb)"
            )
        return chunk

    def drain(self) -> None:
        """Read to the end of the gzip stream so bytes after the tar's end count too."""
        while self.read(_CHUNK):
            pass


class _Validator:
    def __init__(self, *, max_unpacked_bytes: int, max_entries: int) -> None:
        self.max_unpacked_bytes = max_unpacked_bytes
        self.max_entries = max_entries
        self.kinds: dict[str, str] = {}  # normalised name -> "file" | "dir" | "symlink" | "hardlink"
        self.symlinks: dict[str, str] = {}
        self.entries = 0
        self.unpacked = 0
        self.spec: bytes | None = None

    def run(self, data: bytes) -> BundleInfo:
        stream = _BoundedGunzip(data, _stream_budget(self.max_unpacked_bytes, self.max_entries))
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    self._member(tar, member)
            stream.drain()
        except InvalidBundle:
            raise
        except (tarfile.TarError, OSError, EOFError, zlib.error, ValueError, UnicodeError) as exc:
            raise InvalidBundle(f"bundle is not a valid .tar.gz archive: {exc}") from exc
        self._whole_archive()
        if self.spec is None:
            raise InvalidBundle(f"bundle has no {SPEC_NAME} at its root")
        return BundleInfo(spec_text=self.spec, entries=self.entries, unpacked_bytes=self.unpacked)

    def _member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        self.entries += 1
        if self.entries > self.max_entries:
            raise InvalidBundle(f"bundle has more than {self.max_entries} entries")
        raw = member.name
        name = _normalise(raw)
        if member.isdir():
            kind = "dir"
        elif member.issym():
            kind = "symlink"
        elif member.islnk():
            kind = "hardlink"
        elif member.type in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE) and not member.issparse():
            kind = "file"
        elif member.ischr() or member.isblk() or member.isfifo():
            raise InvalidBundle(f"{_show(raw)}: device and fifo members are not allowed")
        else:
            raise InvalidBundle(f"{_show(raw)}: unsupported member type {member.type!r}")
        if member.mode & _SPECIAL_BITS:
            raise InvalidBundle(f"{_show(raw)}: setuid, setgid and sticky bits are not allowed")
        if name == "" and kind != "dir":
            raise InvalidBundle(f"{_show(raw)}: the archive root must be a directory")
        if name in self.kinds:
            raise InvalidBundle(f"{_show(raw)}: duplicate member name")
        if name == SPEC_NAME and kind != "file":
            raise InvalidBundle(f"{SPEC_NAME} must be a regular file, not a {kind}")
        self.kinds[name] = kind

        if kind == "file":
            self.unpacked += member.size
            if self.unpacked > self.max_unpacked_bytes:
                raise InvalidBundle(
                    f"{_show(raw)}: bundle unpacks to more than {self.max_unpacked_bytes} bytes"
                )
            if name == SPEC_NAME:
                if member.size > _MAX_SPEC_BYTES:
                    raise InvalidBundle(f"{SPEC_NAME} is larger than {_MAX_SPEC_BYTES} bytes")
                fileobj = tar.extractfile(member)
                assert fileobj is not None  # a regular file always has a data stream
                self.spec = fileobj.read()
        elif kind == "symlink":
            target = member.linkname
            _check_link_target(raw, target)
            self.symlinks[name] = target
        elif kind == "hardlink":
            target = member.linkname
            _check_link_target(raw, target)
            # Hard link targets name a member (relative to the archive root), which must
            # be an earlier regular file: anything else is either outside the bundle or
            # cannot be extracted in order.
            if self.kinds.get(_normalise(target, what="hard link target", member=raw)) != "file":
                raise InvalidBundle(f"{_show(raw)}: hard link target {target!r} is not an earlier file in the bundle")

    def _whole_archive(self) -> None:
        # A member below a file or symlink would be written through it on extraction
        # (the classic "symlink, then a file under it" escape): refuse the layout.
        for name in self.kinds:
            parts = name.split("/")
            for i in range(1, len(parts)):
                parent = "/".join(parts[:i])
                kind = self.kinds.get(parent)
                if kind is not None and kind != "dir":
                    raise InvalidBundle(f"{_show(name)}: lies below {_show(parent)}, which is a {kind}")
        # Each symlink target is resolved the way the kernel would, through the other
        # symlinks in the bundle: "a -> b/.." is only harmless if b is not a link.
        for name, target in self.symlinks.items():
            parent = name.split("/")[:-1]
            if not _resolves_inside(parent, target, self.symlinks):
                raise InvalidBundle(
                    f"{_show(name)}: symlink target {target!r} resolves outside the bundle (or loops)"
                )


def _normalise(raw: str, *, what: str = "member name", member: str | None = None) -> str:
    """Archive-relative path with '.' and empty components dropped; rejects escapes."""
    label = _show(member if member is not None else raw)
    if "\0" in raw:
        raise InvalidBundle(f"{label}: {what} contains a NUL byte")
    encoded = raw.encode("utf-8", "surrogateescape")
    if len(encoded) > _MAX_NAME_BYTES:
        raise InvalidBundle(f"{label}: {what} is longer than {_MAX_NAME_BYTES} bytes")
    if raw.startswith("/"):
        raise InvalidBundle(f"{label}: {what} is an absolute path")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidBundle(f"{label}: {what} contains a '..' component")
    return "/".join(parts)


def _check_link_target(raw: str, target: str) -> None:
    if not target:
        raise InvalidBundle(f"{_show(raw)}: link has an empty target")
    if "\0" in target:
        raise InvalidBundle(f"{_show(raw)}: link target contains a NUL byte")
    if len(target.encode("utf-8", "surrogateescape")) > _MAX_NAME_BYTES:
        raise InvalidBundle(f"{_show(raw)}: link target is longer than {_MAX_NAME_BYTES} bytes")
    if target.startswith("/"):
        raise InvalidBundle(f"{_show(raw)}: link target {target!r} is absolute")


def _resolves_inside(start: list[str], target: str, symlinks: dict[str, str]) -> bool:
    stack = list(start)
    pending = deque(target.split("/"))
    hops = 0
    while pending:
        part = pending.popleft()
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                return False
            stack.pop()
            continue
        stack.append(part)
        link = symlinks.get("/".join(stack))
        if link is not None:
            hops += 1
            if hops > _MAX_SYMLINK_HOPS or link.startswith("/"):
                return False
            stack.pop()
            pending.extendleft(reversed(link.split("/")))
    return True


def _show(name: str) -> str:
    # Hostile names can be 4 KiB or hold control characters: keep messages readable.
    text = repr(name)
    return text if len(text) <= 160 else text[:150] + "…'"
