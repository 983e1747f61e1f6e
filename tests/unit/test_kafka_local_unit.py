"""Fast tests of waterwatch.kafka_local helpers: no Java, Maven or broker needed."""

from __future__ import annotations

import base64
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from waterwatch import kafka_local
from waterwatch.cli_kafka import kafka_app
from waterwatch.kafka_local import KafkaLocalError


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own home and cache and no external cluster."""
    monkeypatch.delenv("WATERWATCH_KAFKA", raising=False)
    # never the default port: a shared broker may be running there
    monkeypatch.setenv("WATERWATCH_KAFKA_PORT", str(_unused_port()))
    monkeypatch.setenv("WATERWATCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WATERWATCH_CACHE", str(tmp_path / "cache"))


def _unused_port() -> int:
    """A port nothing listens on right now (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return min(port, 65534)


def _script(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


# --- java version parsing ---------------------------------------------------


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15\nOpenJDK Runtime Environment', 17),
        ('openjdk version "11.0.2" 2019-01-15', 11),
        ('java version "1.8.0_292"\nJava(TM) SE Runtime Environment', 8),
        ('openjdk version "21" 2023-09-19', 21),
        ('openjdk version "22-ea" 2024-03-19', 22),
        ('Picked up JAVA_TOOL_OPTIONS: -Xss2m\nopenjdk version "25.0.1" 2025-10-21', 25),
        ('java version "9"', 9),
        ("bash: java: command not found", None),
        ("", None),
    ],
)
def test_parse_java_major(output: str, major: int | None) -> None:
    assert kafka_local.parse_java_major(output) == major


def test_check_java_accepts_new_java_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    java = _script(bin_dir, "java", "echo 'openjdk version \"21.0.4\" 2024-07-16' >&2")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert kafka_local.check_java() == (java, 21)


def test_java_home_wins_over_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    java_home = tmp_path / "jdk"
    _script(java_home / "bin", "java", "echo 'openjdk version \"17.0.1\"' >&2")
    _script(tmp_path / "other", "java", "echo 'openjdk version \"11.0.1\"' >&2")
    monkeypatch.setenv("JAVA_HOME", str(java_home))
    monkeypatch.setenv("PATH", str(tmp_path / "other"))
    assert kafka_local.check_java() == (java_home / "bin" / "java", 17)


def test_unreadable_java_version_is_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _script(tmp_path / "bin", "java", "echo 'something odd'\necho 'more' >&2")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(KafkaLocalError) as info:
        kafka_local.check_java()
    assert "could not tell the Java version" in str(info.value)
    assert "\n" not in str(info.value)


# --- server.properties ----------------------------------------------------


def _props(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            assert key not in out, f"duplicate key {key}"
            out[key] = value
    return out


def test_render_server_properties_single_node_kraft(tmp_path: Path) -> None:
    data = tmp_path / "data"
    props = _props(kafka_local.render_server_properties(19192, 19193, data))
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19193"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19192,CONTROLLER://127.0.0.1:19193"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19192"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["listener.security.protocol.map"] == "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
    assert props["log.dirs"] == str(data)
    assert props["auto.create.topics.enable"] == "false"
    assert props["log.cleaner.enable"] == "true"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    for key in (
        "num.partitions",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
        "share.coordinator.state.topic.min.isr",
    ):
        assert props[key] == "1", key
    # nothing may listen beyond loopback
    assert "0.0.0.0" not in "".join(props.values())


def test_render_server_properties_escapes_backslashes_and_rejects_commas(tmp_path: Path) -> None:
    text = kafka_local.render_server_properties(9092, 9093, Path("/tmp/a\\b"))
    assert "log.dirs=/tmp/a\\\\b" in text
    with pytest.raises(KafkaLocalError, match="comma"):
        kafka_local.render_server_properties(9092, 9093, tmp_path / "a,b")


def test_new_cluster_id_is_kafka_uuid_format() -> None:
    ids = {kafka_local.new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cid in ids:
        assert len(cid) == 22
        assert not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


# --- environment ----------------------------------------------------------


def test_ports_and_bootstrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATERWATCH_KAFKA_PORT")
    assert kafka_local.broker_port() == 9092
    assert kafka_local.controller_port() == 9093
    assert kafka_local.bootstrap_servers() == "127.0.0.1:9092"
    monkeypatch.setenv("WATERWATCH_KAFKA_PORT", "19200")
    assert kafka_local.controller_port() == 19201
    assert kafka_local.bootstrap_servers() == "127.0.0.1:19200"
    monkeypatch.setenv("WATERWATCH_KAFKA", "kafka-a:9092,kafka-b:9092")
    assert kafka_local.bootstrap_servers() == "kafka-a:9092,kafka-b:9092"


@pytest.mark.parametrize("raw", ["abc", "0", "65535", "-5"])
def test_bad_port_is_one_line_error(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATERWATCH_KAFKA_PORT", raw)
    with pytest.raises(KafkaLocalError, match="WATERWATCH_KAFKA_PORT"):
        kafka_local.broker_port()


def test_paths_follow_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = kafka_local.kafka_paths()
    assert paths.root == tmp_path / "home" / "kafka"
    assert paths.data_dir == paths.root / "data"
    assert paths.config_file.name == "server.properties"
    assert paths.log_file.name == "kafka.log"
    assert paths.pid_file.name == "kafka.pid"
    assert (
        kafka_local.lib_dir() == tmp_path / "cache" / f"kafka-{kafka_local.KAFKA_VERSION}" / "lib"
    )

    monkeypatch.delenv("WATERWATCH_HOME")
    monkeypatch.delenv("WATERWATCH_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.chdir(tmp_path)
    assert kafka_local.kafka_paths().root == tmp_path / ".waterwatch" / "kafka"
    assert kafka_local.lib_dir() == (
        tmp_path / "user" / ".cache" / "waterwatch" / f"kafka-{kafka_local.KAFKA_VERSION}" / "lib"
    )


def test_error_message_is_one_line() -> None:
    error = KafkaLocalError("first part\n  second part", log_tail="a\nb")
    assert str(error) == "first part second part"
    assert error.log_tail == "a\nb"


# --- jar cache --------------------------------------------------------------

_FAKE_MVN_OK = """
for arg in "$@"; do
  case "$arg" in -DoutputDirectory=*) out="${arg#-DoutputDirectory=}";; esac
done
echo run >> "$(dirname "$0")/calls"
mkdir -p "$out"
for j in kafka_2.13-4.1.1 kafka-clients-4.1.1 log4j-slf4j-impl-2.24.3; do : > "$out/$j.jar"; done
"""


def test_jars_fetched_once_and_half_download_redone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    _script(bin_dir, "mvn", _FAKE_MVN_OK)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    lib = kafka_local.ensure_jars()
    assert (lib / "kafka_2.13-4.1.1.jar").is_file()
    assert (lib.parent / "lib.complete").is_file()
    assert kafka_local.ensure_jars() == lib  # cached: no second Maven run
    assert (bin_dir / "calls").read_text().count("run") == 1

    # a copy without the marker (interrupted earlier) is redone
    (lib.parent / "lib.complete").unlink()
    (lib / "kafka-clients-4.1.1.jar").unlink()
    kafka_local.ensure_jars()
    assert (lib / "kafka-clients-4.1.1.jar").is_file()
    assert (bin_dir / "calls").read_text().count("run") == 2
    assert not list(lib.parent.glob("lib.partial-*"))


def test_maven_missing_is_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(KafkaLocalError, match=r"Maven \(mvn\) is needed") as info:
        kafka_local.ensure_jars()
    assert "install Maven" in str(info.value)


def test_registry_unreachable_is_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _script(
        tmp_path / "bin",
        "mvn",
        "echo '[ERROR] Failed to execute goal on project x: Could not transfer artifact "
        "org.apache.kafka:kafka_2.13:pom:4.1.1 from/to central: Unknown host repo.maven.apache.org'"
        "\nexit 1",
    )
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(KafkaLocalError) as info:
        kafka_local.ensure_jars()
    message = str(info.value)
    assert "registry is unreachable" in message and "\n" not in message
    assert not (kafka_local.cache_dir() / "lib.complete").exists()
    assert not kafka_local.lib_dir().exists()


# --- status / down without a broker ------------------------------------------


def test_status_and_down_with_nothing_running() -> None:
    state = kafka_local.status()
    assert not state.running and not state.reachable and state.pid is None
    port = kafka_local.broker_port()
    assert json.loads(json.dumps(state.as_dict()))["bootstrap"] == f"127.0.0.1:{port}"
    assert kafka_local.down() is False


def test_dead_pid_file_is_removed() -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    paths = kafka_local.kafka_paths()
    paths.root.mkdir(parents=True)
    paths.pid_file.write_text(f"{dead.pid}\n")
    assert kafka_local.status().running is False
    assert not paths.pid_file.exists()


def test_external_cluster_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATERWATCH_KAFKA", "127.0.0.1:1")
    state = kafka_local.up()
    assert state.external and not state.reachable and state.pid is None
    assert kafka_local.down() is False
    assert not kafka_local.kafka_paths().root.exists()


# --- CLI ----------------------------------------------------------------------


def test_cli_status_json() -> None:
    result = CliRunner().invoke(kafka_app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["running"] is False


def test_cli_error_is_one_red_line_without_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATERWATCH_KAFKA_PORT", "nope")
    result = CliRunner().invoke(kafka_app, ["up"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "WATERWATCH_KAFKA_PORT" in lines[0]
