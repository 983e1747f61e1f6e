"""Shared fixtures: the real Kafka broker for ``@pytest.mark.integration`` tests.

``kafka_bootstrap`` (session): ``$WATERWATCH_KAFKA`` when set (nothing is
started or stopped); otherwise the local broker of ``waterwatch.kafka_local``,
started if it is not running and stopped at the end only if this fixture
started it.  The broker is only touched when an integration test asks for it,
so unit tests never need Java or Kafka.

``unique_topic_prefix`` (function): a fresh topic-name prefix per test; the
test's topics and consumer groups are deleted afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from kafka_helpers import delete_with_prefix, unique_name

BROKER_READY_TIMEOUT_S = float(os.environ.get("WATERWATCH_TEST_BROKER_TIMEOUT", "120"))


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap address of a running broker for the whole test session."""
    from waterwatch import kafka_local

    external = os.environ.get("WATERWATCH_KAFKA", "").strip()
    if external:
        found = kafka_local.status()
        if not found.reachable:
            pytest.fail(
                f"WATERWATCH_KAFKA={external} does not answer: start that cluster or unset "
                "WATERWATCH_KAFKA to use the local broker",
                pytrace=False,
            )
        yield external
        return

    before = kafka_local.status()
    started_here = False
    if not (before.running and before.reachable):
        if before.reachable and not before.running:
            # something else serves the port (not our broker): use it, never stop it
            yield before.bootstrap
            return
        try:
            now = kafka_local.up(timeout=BROKER_READY_TIMEOUT_S)
        except kafka_local.KafkaLocalError as exc:
            tail = f"\n{exc.log_tail}" if exc.log_tail else ""
            pytest.fail(f"cannot start the local Kafka broker: {exc}{tail}", pytrace=False)
        started_here = not before.running
        bootstrap = now.bootstrap
    else:
        bootstrap = before.bootstrap
    try:
        yield bootstrap
    finally:
        if started_here:
            kafka_local.down()


@pytest.fixture
def unique_topic_prefix(request: pytest.FixtureRequest, kafka_bootstrap: str) -> Iterator[str]:
    """A unique prefix for this test's topic names, e.g. ``wwtest.test-x-1a2b3c4d5e``.

    Every topic and consumer group whose name starts with it is deleted after
    the test (so a Faust app whose id starts with it leaves nothing behind).
    """
    prefix = unique_name(request.node.name)
    yield prefix
    delete_with_prefix(kafka_bootstrap, prefix)
