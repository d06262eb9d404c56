"""Stopping, failing and deleting cleanly: the pure parts (no Ray, no Redis)."""

from __future__ import annotations

import pytest

from actors.supervisor import _Folded
from events.activations import Activations
from events.model import ActivationCreated, ActivationDeleted, AudienceAdded
from events.redis_backend import _glob_escape
from hubsync.config import redacted
from hubsync.service import IncompatibleRay, check_ray_version


def created(activation_id: str) -> ActivationCreated:
    return ActivationCreated(
        activation_id=activation_id,
        name=activation_id,
        token_sealed="sealed",
        token_fingerprint="fp",
        base_url="http://127.0.0.1:1",
        api_version="2026-03",
        plan="starter",
        mode="upsert",
        audiences=("a1",),
        attributes=(),
    )


def test_a_compacted_stream_folds_from_the_start_to_no_activation() -> None:
    """After compaction only the deletion is left: a fold from the start ignores it."""
    state = Activations()
    state.evolve(ActivationDeleted(activation_id="gone"), 5)
    state.evolve(AudienceAdded(activation_id="gone", audience_id="a2"), 6)
    assert state.by_id == {}


def test_a_fold_that_saw_the_creation_still_sees_the_deletion() -> None:
    state = Activations()
    state.evolve(created("act1"), 1)
    state.evolve(created("act2"), 2)
    state.evolve(ActivationDeleted(activation_id="act1"), 3)  # read after compaction: still there
    assert set(state.by_id) == {"act2"}


def test_the_supervisor_remembers_every_deletion_it_folds() -> None:
    state = _Folded()
    state.evolve(created("act1"), 1)
    state.evolve(ActivationDeleted(activation_id="act1"), 2)
    state.evolve(ActivationDeleted(activation_id="never-seen"), 3)
    assert state.deleted == {"act1", "never-seen"}
    assert state.by_id == {}
    assert _Folded().deleted == set(), "a fresh fold shares no set with an older one"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("rediss://:hunter2@cache.internal:6379/0", "rediss://***@cache.internal:6379/0"),
        ("redis://app:p%40ss@10.0.0.1:6380", "redis://***@10.0.0.1:6380"),
        ("redis+cluster://:pw@node:7000/0", "redis+cluster://***@node:7000/0"),
    ],
)
def test_a_redis_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert redacted(url) == shown


def test_a_key_pattern_matches_only_itself() -> None:
    assert _glob_escape("ns:act:{a*b?[c]}:") == "ns:act:{a\\*b\\?\\[c\\]}:"


@pytest.mark.parametrize("version", ["2.60.0", "2.60.1"])
def test_supported_ray_versions_pass(version: str) -> None:
    check_ray_version(version)


@pytest.mark.parametrize("version", ["2.40.0", "2.59.9", "2.61.0", "3.0.0"])
def test_other_ray_versions_are_refused_saying_what_to_install(version: str) -> None:
    with pytest.raises(
        IncompatibleRay, match=rf"Ray {version} on the cluster .*ray\[default\]>=2.60,<2.61"
    ):
        check_ray_version(version, "the cluster")
