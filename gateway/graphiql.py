"""GraphiQL, served with its assets from the gateway itself rather than a public CDN.

Strawberry's GraphiQL page names each asset on unpkg with its Subresource Integrity hash.
`install` fetches those exact files once, with npm, from the packages they come from, checks
each against the page's own hash and keeps them under `gateway/static/graphiql/`; the page is
then served with local URLs, so a browser without internet still gets GraphiQL, and still
checks every file's hash.

    python -m gateway.graphiql        # fetch the assets (tests/run.sh does)
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from strawberry.http.ides import get_graphql_ide_html

CDN = "https://unpkg.com/"
PREFIX = "/graphql/assets/"
ASSETS = Path(__file__).parent / "static" / "graphiql"
_ASSET = re.compile(
    r'(?:src|href)="' + re.escape(CDN) + r'(?P<package>(?:@[^/"]+/)?[^/@"]+)@(?P<version>[^/"]+)/'
    r'(?P<path>[^"]+)"\s+integrity="(?P<integrity>sha(?:256|384|512)-[^"]+)"'
)


@dataclass(frozen=True, slots=True)
class Asset:
    """One file the page loads: its npm package, the path inside it, and its SRI hash."""

    package: str
    version: str
    path: str
    integrity: str

    @property
    def name(self) -> str:
        """Its path under the assets directory and the page's local URL."""
        return f"{self.package}@{self.version}/{self.path}"

    def matches(self, content: bytes) -> bool:
        """Whether the content has the page's integrity hash."""
        algorithm, _, expected = self.integrity.partition("-")
        digest = hashlib.new(algorithm, content).digest()
        return base64.b64encode(digest).decode() == expected


def page() -> str:
    """Strawberry's GraphiQL page, loading every asset from the gateway."""
    return get_graphql_ide_html(graphql_ide="graphiql").replace(CDN, PREFIX)


@functools.cache
def assets() -> dict[str, Asset]:
    """The assets Strawberry's page loads, by local name."""
    html = get_graphql_ide_html(graphql_ide="graphiql")
    found = [Asset(**match.groupdict()) for match in _ASSET.finditer(html)]
    return {asset.name: asset for asset in found}


def missing(directory: Path = ASSETS) -> list[str]:
    """The assets not installed yet."""
    return [name for name in assets() if not (directory / name).is_file()]


def install(directory: Path = ASSETS) -> None:
    """Fetch each package with `npm pack`, keep the files the page loads, check their hashes."""
    wanted = assets()
    packages = sorted({f"{a.package}@{a.version}" for a in wanted.values()})
    with tempfile.TemporaryDirectory() as scratch:
        # npm from the PATH, with package names taken from Strawberry's page
        packed = subprocess.run(  # noqa: S603
            ["npm", "pack", "--json", "--pack-destination", scratch, *packages],  # noqa: S607
            check=True,
            capture_output=True,
            text=True,
        )
        tarballs = {f"{p['name']}@{p['version']}": p["filename"] for p in json.loads(packed.stdout)}
        for asset in wanted.values():
            tarball = Path(scratch) / tarballs[f"{asset.package}@{asset.version}"]
            _keep(asset, tarball.read_bytes(), directory)


def _keep(asset: Asset, tarball: bytes, directory: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(tarball)) as archive:
        member = archive.extractfile(f"package/{asset.path}")
        if member is None:
            raise RuntimeError(f"{asset.name}: not in the package")
        content = member.read()
    if not asset.matches(content):
        raise RuntimeError(f"{asset.name}: does not match the page's integrity hash")
    target = directory / asset.name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)


def main() -> None:
    """Install the assets unless they are there already."""
    if not missing():
        print(f"GraphiQL assets present in {ASSETS}")
        return
    if shutil.which("npm") is None:
        raise SystemExit("npm is needed to fetch GraphiQL's assets (apt-get install npm)")
    install()
    print(f"GraphiQL assets installed in {ASSETS}")


if __name__ == "__main__":
    main()
