"""Bundle packing is deterministic; unpacking refuses every hostile archive and leaves nothing behind."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import struct
import tarfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from smcp.domain import InvalidBundle
from smcp.runtime.bundles import BundleInfo, extract, inspect, pack

LIMITS = {"max_unpacked_bytes": 1024 * 1024, "max_entries": 100}
SPEC = b'name = "t"\nruntime = "python"\nentrypoint = "server.py"\n'


def _member(name: str, *, data: bytes = b"", type: bytes = tarfile.REGTYPE, mode: int = 0o644, **attrs: object):
    info = tarfile.TarInfo(name)
    info.type = type
    info.mode = mode
    info.size = len(data) if type in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, (io.BytesIO(data) if info.size else None)


def _targz(*members: tuple[tarfile.TarInfo, io.BytesIO | None], spec: bool = True, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        if spec:
            tar.addfile(*_member("smcp.toml", data=SPEC))
        for info, fileobj in members:
            tar.addfile(info, fileobj)
    return gzip.compress(buf.getvalue(), mtime=0)


def _write_tree(root: Path) -> None:
    (root / "pkg").mkdir(parents=True)
    (root / "smcp.toml").write_bytes(SPEC)
    (root / "server.py").write_text("print('hi')\n")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o775)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "mod.py").write_text("X = 1\n")
    (root / "empty").mkdir()
    (root / "alias.py").symlink_to("pkg/mod.py")
    (root / "pkgdir").symlink_to("pkg")


def _names(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: m for m in tar.getmembers()}


# ------------------------------------------------------------------------- pack


def test_pack_is_deterministic_across_mtime_and_permission_noise(tmp_path: Path) -> None:
    _write_tree(tmp_path / "a")
    first = hashlib.sha256(pack(tmp_path / "a")).hexdigest()
    time.sleep(0.01)
    for path in (tmp_path / "a").rglob("*"):
        os.utime(path, (time.time() + 1000, time.time() + 1000), follow_symlinks=False)
    (tmp_path / "a" / "server.py").chmod(0o600)  # non-executable stays 0644 whatever the rest
    assert hashlib.sha256(pack(tmp_path / "a")).hexdigest() == first

    # The same content built in another place (different inode order, owner, times) matches too.
    _write_tree(tmp_path / "b")
    assert hashlib.sha256(pack(tmp_path / "b")).hexdigest() == first


def test_pack_normalises_metadata_and_keeps_in_tree_symlinks(tmp_path: Path) -> None:
    _write_tree(tmp_path)
    data = pack(tmp_path)
    assert data[4:8] == b"\0\0\0\0"  # gzip header mtime
    members = _names(data)
    assert list(members) == sorted(members)
    for m in members.values():
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
    assert members["server.py"].mode == 0o644
    assert members["run.sh"].mode == 0o755
    assert members["pkg"].isdir() and members["pkg"].mode == 0o755
    assert members["empty"].isdir()
    assert members["alias.py"].issym() and members["alias.py"].linkname == "pkg/mod.py"
    assert members["pkgdir"].issym() and members["pkgdir"].linkname == "pkg"
    # Packed output passes our own validation.
    info = inspect(data, **LIMITS)
    assert info.spec_text == SPEC
    assert info.entries == len(members)


def test_pack_skips_caches_vcs_and_environments(tmp_path: Path) -> None:
    _write_tree(tmp_path)
    for junk in (".git", "__pycache__", ".venv", "venv", "node_modules", ".smcp", "pkg/__pycache__"):
        (tmp_path / junk).mkdir(exist_ok=True)
        (tmp_path / junk / "x").write_text("junk")
    (tmp_path / ".DS_Store").write_text("junk")
    (tmp_path / "pkg" / "mod.cpython-311.pyc").write_bytes(b"junk")
    (tmp_path / "pkg" / "node_modules").mkdir()  # skipped at any depth
    names = set(_names(pack(tmp_path)))
    assert names == {"smcp.toml", "server.py", "run.sh", "pkg", "pkg/__init__.py", "pkg/mod.py", "empty", "alias.py", "pkgdir"}


def test_pack_refuses_symlinks_leaving_the_directory(tmp_path: Path) -> None:
    _write_tree(tmp_path / "srv")
    (tmp_path / "secret").write_text("s")
    (tmp_path / "srv" / "out").symlink_to("../secret")
    with pytest.raises(InvalidBundle, match="'out'.*outside"):
        pack(tmp_path / "srv")
    (tmp_path / "srv" / "out").unlink()
    (tmp_path / "srv" / "abs").symlink_to("/etc/passwd")
    with pytest.raises(InvalidBundle, match="'abs'.*absolute"):
        pack(tmp_path / "srv")


def test_pack_requires_spec_at_root(tmp_path: Path) -> None:
    (tmp_path / "server.py").write_text("")
    with pytest.raises(InvalidBundle, match="smcp.toml"):
        pack(tmp_path)


# ------------------------------------------------------------- round trip / good


def test_good_bundle_round_trips(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _write_tree(src)
    data = pack(src)
    dest = tmp_path / "out"
    extract(data, dest, **LIMITS)
    assert (dest / "smcp.toml").read_bytes() == SPEC
    assert (dest / "pkg" / "mod.py").read_text() == "X = 1\n"
    assert (dest / "alias.py").is_symlink() and (dest / "alias.py").read_text() == "X = 1\n"
    assert os.readlink(dest / "pkgdir") == "pkg"
    assert stat.S_IMODE((dest / "run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "server.py").stat().st_mode) == 0o644
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "empty").stat().st_mode) == 0o755
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir left
    # Re-packing the extracted tree gives the identical bundle.
    assert pack(dest) == data


def test_extract_normalises_modes_and_makes_implicit_dirs_0755(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        data = _targz(_member("deep/er/tool", data=b"#!", mode=0o700), _member("f", data=b"x", mode=0o600))
        extract(data, tmp_path / "out", **LIMITS)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out" / "deep" / "er").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "out" / "deep" / "er" / "tool").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "out" / "f").stat().st_mode) == 0o644


def test_inspect_accepts_dot_slash_names_and_in_tree_links(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, f in (
            _member("./", type=tarfile.DIRTYPE, mode=0o755),
            _member("./smcp.toml", data=SPEC),
            _member("./lib", type=tarfile.DIRTYPE, mode=0o755),
            _member("./lib/a.js", data=b"a"),
            _member("./lib/b.js", type=tarfile.LNKTYPE, linkname="lib/a.js"),
            _member("./lib/up", type=tarfile.SYMTYPE, linkname="../smcp.toml"),
        ):
            tar.addfile(info, f)
    data = gzip.compress(buf.getvalue())
    info = inspect(data, **LIMITS)
    assert info == BundleInfo(spec_text=SPEC, entries=6, unpacked_bytes=len(SPEC) + 1)
    extract(data, tmp_path / "out", **LIMITS)
    assert (tmp_path / "out" / "lib" / "b.js").read_text() == "a"
    assert (tmp_path / "out" / "lib" / "up").read_bytes() == SPEC


def test_extract_into_existing_empty_dir(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    extract(_targz(), tmp_path / "out", **LIMITS)
    assert (tmp_path / "out" / "smcp.toml").read_bytes() == SPEC


def test_extract_refuses_non_empty_destination(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_text("mine")
    with pytest.raises(InvalidBundle, match="not an empty directory"):
        extract(_targz(), tmp_path / "out", **LIMITS)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep"]


# ---------------------------------------------------------------------- hostile


def _gzip_bomb() -> bytes:
    """A valid small tar followed by 64 MiB of zeros, with the gzip trailer claiming 2 KiB."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.addfile(*_member("smcp.toml", data=SPEC))
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)  # raw deflate: we write the gzip framing
    body = comp.compress(buf.getvalue())
    zeros = bytes(1024 * 1024)
    for _ in range(64):
        body += comp.compress(zeros)
    body += comp.flush()
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    return header + body + struct.pack("<II", 0, 2048)


def _pax_bomb() -> bytes:
    """Headers declare a 1-byte file, but a pax record inflates to 8 MiB before it."""
    info, f = _member("x", data=b"x")
    info.pax_headers = {"comment": "A" * (8 * 1024 * 1024)}
    return _targz((info, f))


HOSTILE: dict[str, tuple[Callable[[], bytes], str]] = {
    "traversal": (lambda: _targz(_member("../x", data=b"x")), r"'\.\./x'.*'\.\.'"),
    "nested traversal": (lambda: _targz(_member("a/../../x", data=b"x")), r"'a/\.\./\.\./x'"),
    "absolute": (lambda: _targz(_member("/etc/x", data=b"x")), r"'/etc/x'.*absolute"),
    "symlink to /etc/shadow": (
        lambda: _targz(_member("shadow", type=tarfile.SYMTYPE, linkname="/etc/shadow")),
        r"'shadow'.*absolute",
    ),
    "symlink up and out": (
        lambda: _targz(_member("a/up", type=tarfile.SYMTYPE, linkname="../../etc")),
        r"'a/up'.*outside",
    ),
    "symlink chain escape": (
        # Each target looks inside on its own; "b/.." only escapes because b is itself a link to "..".
        lambda: _targz(
            _member("d", type=tarfile.DIRTYPE, mode=0o755),
            _member("d/b", type=tarfile.SYMTYPE, linkname=".."),
            _member("esc", type=tarfile.SYMTYPE, linkname="d/b/.."),
        ),
        r"'esc'.*outside",
    ),
    "symlink loop": (
        lambda: _targz(
            _member("l1", type=tarfile.SYMTYPE, linkname="l2"),
            _member("l2", type=tarfile.SYMTYPE, linkname="l1"),
        ),
        r"loops",
    ),
    "file under a symlink": (
        lambda: _targz(
            _member("lib", type=tarfile.SYMTYPE, linkname="."),
            _member("lib/x", data=b"x"),
        ),
        r"'lib/x'.*below 'lib'",
    ),
    "hardlink outside": (
        lambda: _targz(_member("h", type=tarfile.LNKTYPE, linkname="../../etc/passwd")),
        r"'h'.*'\.\.'",
    ),
    "hardlink absolute": (
        lambda: _targz(_member("h", type=tarfile.LNKTYPE, linkname="/etc/passwd")),
        r"'h'.*absolute",
    ),
    "hardlink to unknown member": (
        lambda: _targz(_member("h", type=tarfile.LNKTYPE, linkname="nope")),
        r"'h'.*not an earlier file",
    ),
    "char device": (
        lambda: _targz(_member("null", type=tarfile.CHRTYPE, devmajor=1, devminor=3)),
        r"'null'.*device",
    ),
    "block device": (lambda: _targz(_member("sda", type=tarfile.BLKTYPE, devmajor=8)), r"'sda'.*device"),
    "fifo": (lambda: _targz(_member("pipe", type=tarfile.FIFOTYPE)), r"'pipe'.*fifo"),
    "setuid": (lambda: _targz(_member("su", data=b"x", mode=0o4755)), r"'su'.*setuid"),
    "setgid dir": (lambda: _targz(_member("d", type=tarfile.DIRTYPE, mode=0o2755)), r"'d'.*setgid"),
    "sticky": (lambda: _targz(_member("t", data=b"x", mode=0o1644)), r"'t'.*sticky"),
    "NUL in name": (lambda: _targz(_pax_named("a\0b")), r"NUL"),
    "name too long": (lambda: _targz(_member("a" * 4097, data=b"x")), r"longer than 4096"),
    "too many entries": (
        lambda: _targz(*[_member(f"f{i}", data=b"x") for i in range(LIMITS["max_entries"])]),
        r"more than 100 entries",
    ),
    "oversize declared": (
        lambda: _targz(_member("big", data=bytes(LIMITS["max_unpacked_bytes"]))),
        r"'big'.*unpacks to more than",
    ),
    "gzip bomb of zeros": (_gzip_bomb, r"decompresses to more than"),
    "pax header bomb": (_pax_bomb, r"decompresses to more than"),
    "duplicate names": (
        lambda: _targz(_member("a", data=b"1"), _member("./a", data=b"2")),
        r"'\./a'.*duplicate",
    ),
    "duplicate spec": (lambda: _targz(_member("smcp.toml", data=b"name = 'evil'")), r"duplicate"),
    "missing smcp.toml": (lambda: _targz(_member("server.py", data=b"x"), spec=False), r"no smcp.toml"),
    "smcp.toml not at root": (lambda: _targz(_member("sub/smcp.toml", data=SPEC), spec=False), r"no smcp.toml"),
    "smcp.toml is a symlink": (
        lambda: _targz(
            _member("real.toml", data=SPEC), _member("smcp.toml", type=tarfile.SYMTYPE, linkname="real.toml"), spec=False
        ),
        r"smcp.toml must be a regular file",
    ),
    "not a tarball": (lambda: b"definitely not an archive", r"not gzip"),
    "gzip but not tar": (lambda: gzip.compress(b"hello world" * 100), r"not a valid"),
    "truncated gzip": (lambda: _targz(_member("a", data=os.urandom(5000)))[:-100], r"not a valid"),
    "empty": (lambda: b"", r"not gzip"),
}


def _pax_named(name: str) -> tuple[tarfile.TarInfo, io.BytesIO | None]:
    # A ustar name cannot hold NUL; a pax "path" record can, which is how one would smuggle it.
    info, f = _member("placeholder", data=b"x")
    info.pax_headers = {"path": name}
    return info, f


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_archive_is_refused_and_leaves_nothing(case: str, tmp_path: Path) -> None:
    build, message = HOSTILE[case]
    data = build()
    with pytest.raises(InvalidBundle, match=message):
        inspect(data, **LIMITS)
    dest = tmp_path / "unpacked"
    with pytest.raises(InvalidBundle, match=message):
        extract(data, dest, **LIMITS)
    assert list(tmp_path.iterdir()) == []


def test_gzip_bomb_stops_early(monkeypatch: pytest.MonkeyPatch) -> None:
    # Reading stops just past the limit instead of inflating all 64 MiB first.
    data = _gzip_bomb()
    assert len(data) < 256 * 1024
    inflated = 0
    real_read = gzip.GzipFile.read

    def counting_read(self: gzip.GzipFile, size: int = -1) -> bytes:
        nonlocal inflated
        chunk = real_read(self, size)
        inflated += len(chunk)
        return chunk

    monkeypatch.setattr(gzip.GzipFile, "read", counting_read)
    with pytest.raises(InvalidBundle, match="decompresses to more than"):
        inspect(data, max_unpacked_bytes=64 * 1024, max_entries=4)
    assert 64 * 1024 < inflated < 256 * 1024


def test_limits_are_inclusive_of_exact_size() -> None:
    body = bytes(1000)
    data = _targz(_member("f", data=body))
    info = inspect(data, max_unpacked_bytes=len(SPEC) + 1000, max_entries=2)
    assert info.unpacked_bytes == len(SPEC) + 1000 and info.entries == 2
    with pytest.raises(InvalidBundle):
        inspect(data, max_unpacked_bytes=len(SPEC) + 999, max_entries=2)
    with pytest.raises(InvalidBundle):
        inspect(data, max_unpacked_bytes=len(SPEC) + 1000, max_entries=1)


def test_extract_failure_midway_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Even when validation passes and extraction itself fails, no partial tree survives.
    import smcp.runtime.bundles as bundles

    normalised = bundles._normalised_member

    def boom(member: tarfile.TarInfo) -> tarfile.TarInfo:
        if member.name == "pkg/mod.py":
            raise tarfile.ExtractError("simulated")
        return normalised(member)

    # Both extraction paths (with and without tarfile's data filter) go through it.
    monkeypatch.setattr(bundles, "_normalised_member", boom)
    _write_tree(tmp_path / "src")
    data = pack(tmp_path / "src")
    with pytest.raises(InvalidBundle, match="could not be extracted"):
        extract(data, tmp_path / "dest" / "out", **LIMITS)
    assert list((tmp_path / "dest").iterdir()) == []


@pytest.mark.parametrize("server", ["demo", "probe"])
def test_example_servers_pack_into_valid_bundles(server: str, tmp_path: Path) -> None:
    from smcp.domain import parse_spec

    directory = Path(__file__).resolve().parents[2] / "examples" / "servers" / server
    data = pack(directory)
    info = inspect(data, **LIMITS)
    assert parse_spec(info.spec_text).name == server
    extract(data, tmp_path / "out", **LIMITS)
    assert (tmp_path / "out" / "smcp.toml").read_bytes() == (directory / "smcp.toml").read_bytes()
