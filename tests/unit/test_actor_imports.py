"""What an actor process loads (issue 15, section 5): each activation costs two Ray worker
processes, and every module they import is paid for in each of them. A worker loads
``actors.shells`` (where the actor classes live) and what it imports; none of that may pull in the
CLI, the web framework, the console, the emulator or terminal rendering, nor cryptography's OpenSSL
bindings before a token is actually sealed or opened.

Checked in a fresh interpreter (the test process has imported everything already); nothing starts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Top-level distributions no actor needs (starlette is absent here, but note that Ray's worker
# imports it by itself when it is installed, to register a serializer: not ours to cut).
FORBIDDEN_TOP = {"click", "rich", "pygments", "starlette", "uvicorn", "hubsync", "bench"}
FORBIDDEN_MODULES = {"crm.emulator", "hubsync.api", "hubsync.console", "cryptography.hazmat"}

_PROBE = """
import json, sys
before = set(sys.modules)
{imports}
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def loaded_by(*statements: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(imports="\n".join(statements))],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=True,
    )
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def forbidden(modules: set[str]) -> list[str]:
    return sorted(
        m
        for m in modules
        if m.split(".")[0] in FORBIDDEN_TOP
        or any(m == f or m.startswith(f + ".") for f in FORBIDDEN_MODULES)
    )


def test_an_actor_process_loads_no_cli_web_console_emulator_or_openssl() -> None:
    loaded = loaded_by("import actors.shells")
    assert "actors.shells" in loaded and "httpx" in loaded  # the probe did import them
    assert forbidden(loaded) == []


def test_opening_a_token_loads_the_openssl_bindings_only_then() -> None:
    loaded = loaded_by(
        "import actors.shells",
        "from events.secrets import Sealer, load_or_create_key",
        "import tempfile, pathlib",
        "Sealer(load_or_create_key(pathlib.Path(tempfile.mkdtemp())))",
    )
    assert "cryptography.hazmat.primitives.ciphers.aead" in loaded
    # and nothing else forbidden: only cryptography's bindings came with the Sealer
    assert {m.split(".")[0] for m in forbidden(loaded)} == {"cryptography"}


def test_httpx_in_an_actor_process_still_works_without_its_cli() -> None:
    loaded = loaded_by(
        "import actors",
        "import httpx",
        "assert httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(204)))"
        ".get('http://x/').status_code == 204",
    )
    assert not {"click", "rich", "pygments"} & loaded
