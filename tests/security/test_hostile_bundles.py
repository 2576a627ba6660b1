"""Hostile bundles are refused at the API before anything is extracted or built."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest

from tests.harness import Node

SPEC = b'name = "evil"\nruntime = "command"\ncommand = ["python3", "x.py"]\n'


def _bundle(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        spec = tarfile.TarInfo("smcp.toml")
        spec.size = len(SPEC)
        tar.addfile(spec, io.BytesIO(SPEC))
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return gzip.compress(raw.getvalue())


def _file(name: str, data: bytes = b"x", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _device(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    return info, None


HOSTILE = {
    "traversal": _bundle(_file("../../etc/cron.d/evil")),
    "absolute": _bundle(_file("/etc/evil")),
    "symlink-out": _bundle(_link("shadow", "/etc/shadow")),
    "symlink-up": _bundle(_link("up", "../../..")),
    "hardlink-out": _bundle(_link("h", "/etc/passwd", tarfile.LNKTYPE)),
    "device": _bundle(_device("null")),
    "setuid": _bundle(_file("x.py", b"print()", 0o4755)),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_bundle_is_refused_and_nothing_is_kept(node: Node, name: str) -> None:
    node.create_tenant("bundles")
    before = set((node.data_dir / "apps").iterdir()) if (node.data_dir / "apps").exists() else set()
    with node.api() as api:
        r = api.post("/tenants/bundles/deployments", content=HOSTILE[name], headers={"content-type": "application/gzip"})
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "invalid_bundle"
        assert api.get("/tenants/bundles/servers/evil").status_code == 404
    after = set((node.data_dir / "apps").iterdir()) if (node.data_dir / "apps").exists() else set()
    assert after == before


def test_decompression_bomb_is_refused_without_inflating_it(node: Node) -> None:
    # 600 MiB of zeros compresses to well under 1 MiB: under the upload cap, over the unpacked cap.
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9) as gz:
        with tarfile.open(fileobj=gz, mode="w|") as tar:
            spec = tarfile.TarInfo("smcp.toml")
            spec.size = len(SPEC)
            tar.addfile(spec, io.BytesIO(SPEC))
            info = tarfile.TarInfo("zeros")
            info.size = 600 * 1024 * 1024

            class Zeros(io.RawIOBase):
                left = info.size

                def readinto(self, b):  # type: ignore[no-untyped-def]
                    n = min(len(b), self.left)
                    b[:n] = bytes(n)
                    self.left -= n
                    return n

            tar.addfile(info, Zeros())
    node.create_tenant("bundles")
    with node.api() as api:
        r = api.post("/tenants/bundles/deployments", content=raw.getvalue(), headers={"content-type": "application/gzip"})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_bundle"
