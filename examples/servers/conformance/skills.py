"""The `io.modelcontextprotocol/skills` extension (SEP-2640) for the conformance fixture.

Serves a small, fixed catalogue of Agent Skills. Every skill file is an ordinary
resource under `skill://<skill-name>/…` (read with `resources/read`); the extension
adds the catalogue methods on top:

* `skills/list` / `skills/get`: one entry per skill, carrying the SKILL.md URI, its
  frontmatter as JSON, and a complete `{uri, digest, size}` manifest of its files;
* `resources/directory/read` (advertised as `directoryRead: true`): the direct
  children of a skill directory, subdirectories typed `inode/directory`.

The catalogue is generated from Python data, so the frontmatter in the entry and the
YAML at the top of SKILL.md cannot drift apart.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from mcp.server.context import ServerRequestContext
from mcp.server.extension import Extension, MethodBinding, ResourceBinding
from mcp.server.mcpserver.resources import TextResource
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, PaginatedRequestParams, RequestParams

SKILLS = "io.modelcontextprotocol/skills"
SCHEME = "skill://"
DIRECTORY_MIME = "inode/directory"
# Catalogue results are cacheable like resources/list (SEP-2549 attributes).
CACHE = {"ttlMs": 300_000, "cacheScope": "public"}


@dataclass(frozen=True)
class SkillFile:
    uri: str
    text: str
    mime_type: str

    def manifest(self) -> dict[str, Any]:
        raw = self.text.encode()
        return {
            "uri": self.uri,
            "digest": "sha256:" + hashlib.sha256(raw).hexdigest(),
            "size": len(raw),
        }


@dataclass(frozen=True)
class Skill:
    name: str
    description: str
    body: str
    # Paths relative to the skill directory -> (mime type, text).
    extra_files: tuple[tuple[str, str, str], ...] = ()

    @property
    def directory(self) -> str:
        return f"{SCHEME}{self.name}"

    @property
    def uri(self) -> str:
        return f"{self.directory}/SKILL.md"

    @property
    def frontmatter(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description}

    def files(self) -> list[SkillFile]:
        # JSON strings are valid YAML double-quoted scalars: no hand-escaping.
        header = "".join(f"{k}: {json.dumps(v)}\n" for k, v in self.frontmatter.items())
        skill_md = SkillFile(self.uri, f"---\n{header}---\n\n{self.body}", "text/markdown")
        return [skill_md] + [
            SkillFile(f"{self.directory}/{path}", text, mime)
            for path, mime, text in self.extra_files
        ]

    def entry(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "frontmatter": self.frontmatter,
            "resources": [f.manifest() for f in self.files()],
        }


CATALOGUE: tuple[Skill, ...] = (
    Skill(
        name="code-review",
        description="Review a code change against the team checklist and summarise the findings.",
        body=(
            "# Code review\n\n"
            "1. Read the diff.\n"
            "2. Walk through `references/checklist.md`.\n"
            "3. Run `scripts/lint.sh` on the changed files.\n"
        ),
        extra_files=(
            (
                "references/checklist.md",
                "text/markdown",
                "# Checklist\n\n- Tests cover the change\n- Errors are handled\n",
            ),
            ("scripts/lint.sh", "text/x-shellscript", "#!/bin/sh\necho linting \"$@\"\n"),
        ),
    ),
    Skill(
        name="release-notes",
        description="Draft release notes from a list of merged changes.",
        body="# Release notes\n\nGroup the changes by area and write one line per change.\n",
    ),
)


class SkillUriParams(RequestParams):
    uri: str


class DirectoryReadParams(PaginatedRequestParams):
    uri: str


class SkillsExtension(Extension):
    """Contributes the catalogue's files as resources and serves the skills methods."""

    identifier = SKILLS

    def __init__(self, catalogue: tuple[Skill, ...] = CATALOGUE) -> None:
        self._skills = {skill.uri: skill for skill in catalogue}
        self._files = {f.uri: f for skill in catalogue for f in skill.files()}
        # Every directory (skill roots and their subdirectories) -> direct children.
        self._dirs: dict[str, set[str]] = {}
        for skill in catalogue:
            self._dirs.setdefault(skill.directory, set())
            for file in skill.files():
                child, parent = file.uri, file.uri.rpartition("/")[0]
                while True:
                    self._dirs.setdefault(parent, set()).add(child)
                    if parent == skill.directory:
                        break
                    child, parent = parent, parent.rpartition("/")[0]

    def settings(self) -> dict[str, Any]:
        return {"directoryRead": True}

    def resources(self) -> list[ResourceBinding]:
        bindings: list[ResourceBinding] = []
        for uri, file in self._files.items():
            skill = self._skills.get(uri)
            # SKILL.md is described by its own frontmatter; other files by their path.
            resource = TextResource(
                uri=uri,
                name=skill.name if skill else uri.removeprefix(SCHEME),
                description=skill.description if skill else None,
                mime_type=file.mime_type,
                text=file.text,
            )
            bindings.append(ResourceBinding(resource))
        return bindings

    def methods(self) -> list[MethodBinding]:
        return [
            MethodBinding("skills/list", PaginatedRequestParams, self._list),
            MethodBinding("skills/get", SkillUriParams, self._get),
            MethodBinding("resources/directory/read", DirectoryReadParams, self._read_directory),
        ]

    async def _list(
        self, ctx: ServerRequestContext[Any, Any], params: PaginatedRequestParams | None
    ) -> dict[str, Any]:
        # One page holds the whole (small) catalogue, so there is never a nextCursor.
        return {"skills": [skill.entry() for skill in self._skills.values()], **CACHE}

    async def _get(self, ctx: ServerRequestContext[Any, Any], params: SkillUriParams) -> dict[str, Any]:
        skill = self._skills.get(params.uri)
        if skill is None:
            raise MCPError(code=INVALID_PARAMS, message=f"Not a skill served here: {params.uri}")
        return {"skill": skill.entry(), **CACHE}

    async def _read_directory(
        self, ctx: ServerRequestContext[Any, Any], params: DirectoryReadParams
    ) -> dict[str, Any]:
        uri = params.uri.rstrip("/")
        children = self._dirs.get(uri)
        if children is None:
            raise MCPError(code=INVALID_PARAMS, message=f"Not a directory: {params.uri}")
        listing: list[dict[str, Any]] = []
        for child in sorted(children):
            name = child.rpartition("/")[2]
            if child in self._dirs:
                listing.append({"uri": child, "name": name, "mimeType": DIRECTORY_MIME})
            else:
                listing.append({"uri": child, "name": name, "mimeType": self._files[child].mime_type})
        return {"resources": listing}
