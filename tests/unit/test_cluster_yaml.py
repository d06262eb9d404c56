"""cluster.yaml: valid for Ray's cluster launcher, and set up the way hubsync needs.

Validated with Ray's own code, offline. `ray up` (ray.autoscaler._private.commands) loads the
YAML, then `_bootstrap_config` runs `prepare_config` (merges the provider's defaults.yaml and the
setup command lists), asks the AWS provider to fill in instance resources (an EC2 API call, left
out here), and then `validate_config` (ray-schema.json plus cross-field checks). These tests run
`validate_config` on the file as written and on what `prepare_config` makes of it. No Ray is
started and no socket is opened.
"""

from __future__ import annotations

import copy
import re
import socket
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from packaging.specifiers import SpecifierSet
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = ROOT / "cluster.yaml"
SECRETS = ("HUBSYNC_REDIS_URL", "HUBSYNC_SECRET_KEY")
ENV_FILE = "~/hubsync.env"


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("test_cluster_yaml must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def load() -> dict[str, Any]:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def prepared() -> dict[str, Any]:
    return prepare_config(load())


def start_line(commands: list[str]) -> str:
    """The one command that runs `ray start` (each list entry runs in its own shell)."""
    lines = [c for c in commands if "ray start" in c]
    assert len(lines) == 1, commands
    return lines[0]


def worker_types(config: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v for k, v in config["available_node_types"].items() if k != config["head_node_type"]
    }


# Ray's validation -------------------------------------------------------------------------------


def test_the_file_as_written_passes_rays_validation() -> None:
    config = load()
    assert config["provider"]["type"] == "aws"
    validate_config(config)


def test_what_ray_up_validates_passes() -> None:
    validate_config(prepared())


@pytest.mark.parametrize(
    ("break_it", "error"),
    [
        (lambda c: c.update(worker_nodes_typo={}), jsonschema.ValidationError),
        (
            lambda c: c["available_node_types"]["hubsync.worker"].pop("resources"),
            jsonschema.ValidationError,
        ),
        (
            lambda c: c["available_node_types"]["hubsync.worker"].update(min_workers="2"),
            jsonschema.ValidationError,
        ),
        (lambda c: c.update(head_node_type="nope"), ValueError),
        (lambda c: c.update(max_workers=1), ValueError),  # below the sum of min_workers
    ],
)
def test_rays_validation_catches_mistakes(break_it: Any, error: type[Exception]) -> None:
    config = copy.deepcopy(load())
    break_it(config)
    with pytest.raises(error):
        validate_config(config)


# What hubsync needs -------------------------------------------------------------------------------


def test_a_head_and_a_pool_of_workers() -> None:
    config = load()
    assert config["head_node_type"] in config["available_node_types"]
    workers = worker_types(config)
    assert workers, "no worker node type: Routers, ActivationActors and RateGovernors need workers"
    for name, node in workers.items():
        assert 1 <= node["min_workers"] <= node["max_workers"] <= config["max_workers"], name
        assert node["node_config"]["InstanceType"], name


def test_every_node_installs_hubsync_from_the_working_tree() -> None:
    config = prepared()
    assert config["file_mounts"]["~/hubsync"] == "."
    # prepare_config appends setup_commands to both lists; a node type may override its own.
    lists = {"head": config["head_setup_commands"], "worker": config["worker_setup_commands"]}
    for name, node in config["available_node_types"].items():
        if "worker_setup_commands" in node:
            lists[name] = node["worker_setup_commands"]
    for name, commands in lists.items():
        joined = "\n".join(commands)
        assert re.search(r"pip install (-q )?-e ~/hubsync\b", joined), (
            f"{name}: hubsync is not installed"
        )
        # Ray must be the same version on every node and on the machine running `ray up`.
        assert f'"ray[default]=={ray.__version__}"' in joined, (
            f"{name}: Ray is not pinned to {ray.__version__}"
        )


@pytest.mark.parametrize("key", ["head_start_ray_commands", "worker_start_ray_commands"])
def test_secrets_reach_the_environment_of_ray_on_every_node(key: str) -> None:
    line = start_line(load()[key])
    sourced = line.index(f"set -a && . {ENV_FILE} && set +a")
    for name in SECRETS:
        checked = line.index(f'"${{{name}:?')  # `ray up` stops with a message if it is missing
        assert sourced < checked < line.index("ray start"), name


def test_the_env_file_comes_from_outside_the_repository() -> None:
    config = load()
    for remote in (ENV_FILE, "~/.ray/auth_token"):
        local = Path(config["file_mounts"][remote]).expanduser()
        assert local.is_absolute(), f"{remote} is copied from a path relative to the working tree"
        assert not local.resolve().is_relative_to(ROOT), f"{remote} would come from the repository"
    assert any(
        re.search(rf"chmod 600 .*{re.escape(ENV_FILE)}", c) for c in config["setup_commands"]
    )


def test_no_secret_literal_is_committed() -> None:
    text = CLUSTER_YAML.read_text()  # comments included: examples must be placeholders too
    for name, value in re.findall(r"\b(HUBSYNC_REDIS_URL|HUBSYNC_SECRET_KEY)\s*=\s*(\S+)", text):
        assert value.startswith(("<", "$", '"$')) or re.search(r"<[^>]+>", value), f"{name}={value}"
    for password in re.findall(r"rediss?://[^\s@/]*:([^\s@/]+)@", text):
        assert re.fullmatch(r"<[^>]+>", password), "a Redis password is written into cluster.yaml"
    assert not re.search(r"\bexport\s+(HUBSYNC_REDIS_URL|HUBSYNC_SECRET_KEY)=", text)
    assert not re.search(r"[A-Za-z0-9_-]{43}=", text), "looks like a Fernet key"
    assert not re.search(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", text), "looks like an AWS access key"
    assert not re.search(r"\bpat-[a-z0-9]+-[0-9a-f]{8}-", text), (
        "looks like a HubSpot private-app token"
    )


def test_the_dashboard_listens_on_loopback_and_is_reached_by_port_forwarding() -> None:
    config = load()
    head = start_line(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert "0.0.0.0" not in " ".join(config[key])
    rules = config["provider"].get("security_group", {}).get("IpPermissions", [])
    assert not [r for r in rules if r.get("FromPort", 0) <= 8265 <= r.get("ToPort", -1)]
    assert "ray dashboard cluster.yaml" in CLUSTER_YAML.read_text()


def test_ray_gcs_port_auth_and_partitions_agree_across_nodes() -> None:
    config = load()
    head = start_line(config["head_start_ray_commands"])
    worker = start_line(config["worker_start_ray_commands"])
    port = re.search(r"--port=(\d+)", head)
    assert port and f"--address=$RAY_HEAD_IP:{port.group(1)}" in worker
    assert config["file_mounts"]["~/.ray/auth_token"]
    partitions = set()
    for line in (head, worker):
        assert "RAY_AUTH_MODE=token" in line
        found = re.search(r"\bHUBSYNC_PARTITIONS=(\d+)\b", line)
        assert found and int(found.group(1)) >= 1
        partitions.add(found.group(1))
    assert len(partitions) == 1, "head and workers must agree on HUBSYNC_PARTITIONS"


def test_one_supported_ray_range_agrees_with_the_pin_and_pyproject() -> None:
    from packaging.requirements import Requirement
    from packaging.version import Version

    from hubsync.service import RAY_VERSIONS

    pins = set(re.findall(r'"ray\[default\]==([0-9.]+)"', CLUSTER_YAML.read_text()))
    assert pins, "cluster.yaml does not pin Ray"
    for pin in pins:
        assert Version(pin) in SpecifierSet(RAY_VERSIONS), f"cluster.yaml pins {pin}"
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    [ray_line] = [Requirement(d) for d in dependencies if Requirement(d).name == "ray"]
    assert ray_line.specifier == SpecifierSet(RAY_VERSIONS), "pyproject.toml's ray line"
    assert ray.__version__ in ray_line.specifier, "the installed Ray"
