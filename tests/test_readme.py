"""The README's shell examples, read from the README itself and run against a started demo,
so they cannot drift from what the gateway does. The install commands (the two commands,
the Tryton estate's) are what the test run and tests/test_demo.py already do."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.test_demo import free_port, read_banner, wait_until_up

INSTALLS = ("pip install", "tests/run.sh")
REPO = Path(__file__).resolve().parents[1]


def shell_examples(readme: str) -> list[str]:
    """Every ```sh block of the README but the install commands."""
    blocks = re.findall(r"^```sh\n(.*?)^```", readme, re.MULTILINE | re.DOTALL)
    return [block for block in blocks if not any(step in block for step in INSTALLS)]


@dataclass(frozen=True)
class Demo:
    """A demo started as the README says, in a directory of its own."""

    folder: Path
    port: int


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    folder = tmp_path_factory.mktemp("readme")
    (folder / ".venv").symlink_to(REPO / ".venv")
    port = free_port()
    command = [".venv/bin/gatehouse", "demo", "--port", str(port)]
    with subprocess.Popen(
        command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        try:
            read_banner(process)
            wait_until_up(f"http://127.0.0.1:{port}")
            yield Demo(folder, port)
        finally:
            process.terminate()
            process.wait(timeout=30)


def test_readme_has_the_examples_this_test_runs(repo_root: Path) -> None:
    examples = shell_examples((repo_root / "README.md").read_text(encoding="utf-8"))
    assert len(examples) >= 4
    assert any("curl" in example for example in examples)


@pytest.mark.parametrize(
    "example",
    shell_examples((REPO / "README.md").read_text(encoding="utf-8")),
    ids=lambda example: example.splitlines()[0][:40],
)
def test_readme_shell_example_runs(demo: Demo, example: str) -> None:
    script = "set -euo pipefail\n. .gatehouse-demo/keys.env\n" + example.replace(
        "localhost:8000", f"localhost:{demo.port}"
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")}
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=demo.folder,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{example}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    if "curl" in example:
        answer = json.loads(done.stdout)  # every curl example answers JSON
        if "/graphql" in example:
            assert "errors" not in answer, answer
            assert answer["data"], answer
