"""Lifecycle of the real local Kafka broker managed by waterwatch.kafka_local.

These tests never touch the shared broker on the default port: every test
runs with its own ``WATERWATCH_HOME`` (tmp_path) and its own free port pair
(19192 and up). The jar cache (``$WATERWATCH_CACHE`` or ~/.cache/waterwatch)
is shared, so only the very first run downloads anything.

Real broker starts cost seconds on a small machine, so the whole
up/status/down/restart/fresh sequence is one test with three starts; the
failure cases stop before any broker is launched.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic

from waterwatch import kafka_local
from waterwatch.kafka_local import KafkaLocalError

pytestmark = pytest.mark.integration

FIRST_TEST_PORT = 19192


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port_pair() -> int:
    """First even port from 19192 where it and port + 1 are free."""
    for port in range(FIRST_TEST_PORT, FIRST_TEST_PORT + 400, 2):
        if _bindable(port) and _bindable(port + 1):
            return port
    raise RuntimeError("no free port pair from 19192 on")


@pytest.fixture
def own_broker_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """Private WATERWATCH_HOME and port for one test; stops whatever it started."""
    monkeypatch.delenv("WATERWATCH_KAFKA", raising=False)
    monkeypatch.setenv("WATERWATCH_HOME", str(tmp_path / "home"))
    port = _free_port_pair()
    monkeypatch.setenv("WATERWATCH_KAFKA_PORT", str(port))
    try:
        yield port
    finally:
        kafka_local.down(timeout=20)


def _admin(bootstrap: str) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=20_000)


def _topics(bootstrap: str) -> set[str]:
    admin = _admin(bootstrap)
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def _roundtrip(bootstrap: str, topic: str) -> None:
    """Create a topic explicitly, produce three records, read them back in a group."""
    admin = _admin(bootstrap)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        admin.close()

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        sent = [producer.send(topic, key=b"k", value=f"v{i}".encode()) for i in range(3)]
        producer.flush(timeout=30)
        for future in sent:
            future.get(timeout=30)
    finally:
        producer.close(timeout=10)

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"ww-kafka-local-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        consumer_timeout_ms=20_000,
    )
    try:
        values = [record.value for _, record in zip(range(3), consumer, strict=False)]
    finally:
        consumer.close()
    assert values == [b"v0", b"v1", b"v2"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lifecycle_up_status_down_restart_fresh(own_broker_env: int) -> None:
    port = own_broker_env
    bootstrap = f"127.0.0.1:{port}"
    paths = kafka_local.kafka_paths()

    started = time.monotonic()
    first = kafka_local.up(timeout=120)
    print(f"\nfirst up (format + start): {time.monotonic() - started:.1f}s")
    assert first.running and first.reachable and not first.external
    assert first.bootstrap == bootstrap == kafka_local.bootstrap_servers()
    assert first.pid is not None and paths.pid_file.read_text().strip() == str(first.pid)
    assert first.rss_bytes is not None and first.rss_bytes > 0
    print(f"broker RSS after start: {first.rss_bytes / 2**20:.0f} MiB")
    assert (paths.data_dir / "meta.properties").is_file()

    now = kafka_local.status()
    assert now.running and now.reachable and now.pid == first.pid
    assert now.rss_bytes is not None and now.rss_bytes > 0

    topic = f"wwtest.kafka-local-{uuid.uuid4().hex[:8]}"
    _roundtrip(bootstrap, topic)

    # up again is harmless: same process, nothing restarted
    again = kafka_local.up()
    assert again.running and again.pid == first.pid

    # a lost pid file is recovered from the process holding our port
    paths.pid_file.unlink()
    assert kafka_local.status().pid == first.pid
    assert paths.pid_file.read_text().strip() == str(first.pid)

    assert kafka_local.down() is True
    gone = kafka_local.status()
    assert not gone.running and not gone.reachable and gone.pid is None
    assert not paths.pid_file.exists()
    assert kafka_local.down() is False

    # a stale pid file (dead process) does not block the restart
    paths.pid_file.write_text(f"{_dead_pid()}\n")
    started = time.monotonic()
    second = kafka_local.up(timeout=120)
    print(f"restart with existing data: {time.monotonic() - started:.1f}s")
    assert second.running and second.pid not in (None, first.pid)
    assert topic in _topics(bootstrap), "data did not survive down/up"

    third = kafka_local.up(fresh=True, timeout=120)
    assert third.running and third.pid not in (None, second.pid)
    assert topic not in _topics(bootstrap), "--fresh kept the old data"

    assert kafka_local.down() is True


def test_stale_pid_files_are_removed_and_foreign_process_untouched(own_broker_env: int) -> None:
    paths = kafka_local.kafka_paths()
    paths.root.mkdir(parents=True)

    paths.pid_file.write_text(f"{_dead_pid()}\n")
    assert kafka_local.status().running is False
    assert not paths.pid_file.exists()

    # a live process that is not our broker (pid reused): forget it, never kill it
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        paths.pid_file.write_text(f"{sleeper.pid}\n")
        assert kafka_local.down() is False
        assert not paths.pid_file.exists()
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize("offset", [0, 1], ids=["broker-port", "controller-port"])
def test_port_taken_by_other_process(own_broker_env: int, offset: int) -> None:
    taken = own_broker_env + offset
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        with pytest.raises(KafkaLocalError) as info:
            kafka_local.up(timeout=30)
    message = str(info.value)
    assert str(taken) in message and "WATERWATCH_KAFKA_PORT" in message
    assert "\n" not in message
    assert not kafka_local.kafka_paths().pid_file.exists()


def _fake_java(folder: Path, version_line: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    java = folder / "java"
    java.write_text(f"#!/bin/sh\necho '{version_line}' >&2\n")
    java.chmod(java.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return java


def test_java_missing(own_broker_env: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-java-home"
    empty.mkdir()
    monkeypatch.setenv("JAVA_HOME", str(empty))
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    with pytest.raises(KafkaLocalError) as info:
        kafka_local.up()
    message = str(info.value)
    assert "Java 17 or newer is needed" in message and "JAVA_HOME" in message
    assert "\n" not in message

    monkeypatch.delenv("JAVA_HOME")
    with pytest.raises(KafkaLocalError, match="no java was found on PATH"):
        kafka_local.up()


def test_java_too_old(own_broker_env: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    java = _fake_java(tmp_path / "oldjava", 'openjdk version "11.0.2" 2019-01-15')
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", f"{java.parent}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(KafkaLocalError) as info:
        kafka_local.up()
    message = str(info.value)
    assert f"found Java 11 at {java}" in message
    assert "Java 17 or newer is needed to run Kafka 4.1.1" in message
    assert "install openjdk-17-jre-headless or set JAVA_HOME" in message


def test_registry_unreachable_with_real_maven(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real mvn, empty local repo, mirror pointing at a closed loopback port."""
    if not shutil.which("mvn"):
        pytest.skip("mvn not installed")
    user_home = tmp_path / "mvn-user"
    (user_home / ".m2").mkdir(parents=True)
    (user_home / ".m2" / "settings.xml").write_text(
        "<settings><mirrors><mirror><id>nowhere</id><mirrorOf>*</mirrorOf>"
        "<url>http://127.0.0.1:9/maven2</url></mirror></mirrors></settings>"
    )
    monkeypatch.setenv("MAVEN_OPTS", f"-Duser.home={user_home}")
    monkeypatch.setenv("WATERWATCH_CACHE", str(tmp_path / "cache"))
    with pytest.raises(KafkaLocalError) as info:
        kafka_local.ensure_jars()
    assert "registry is unreachable" in str(info.value)
    assert not (kafka_local.cache_dir() / "lib.complete").exists()
