"""Generate ``schemas/``: one JSON Schema per event type and the AsyncAPI 3.0 document.

The committed files are generated from the models; ``tests/unit/test_schemas.py``
fails when they differ.  Regenerate with ``waterwatch schemas --write``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from waterwatch import events
from waterwatch.topics import ALL_TOPICS

SCHEMA_BASE = "https://waterwatch.example/schemas/"

RECORD_MODELS: dict[str, type[Any]] = {
    "ClockCheck": events.ClockCheck,
    "DeadLetter": events.DeadLetter,
    "DeliveryRecord": events.DeliveryRecord,
    "Resident": events.Resident,
}


def _schema(model: type[Any], name: str) -> dict[str, Any]:
    schema: dict[str, Any] = model.model_json_schema(mode="validation")
    out: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{SCHEMA_BASE}{name}.json",
    }
    out.update(schema)
    return out


def generate() -> dict[str, str]:
    """File name (relative to ``schemas/``) → file text."""
    files: dict[str, str] = {}
    for type_name, model in events.ALL_MODELS.items():
        files[f"{type_name}.json"] = _dump_json(_schema(model, type_name))
    for name, model in RECORD_MODELS.items():
        files[f"{name}.json"] = _dump_json(_schema(model, name))
    files["asyncapi.yaml"] = yaml.safe_dump(asyncapi(), sort_keys=False, allow_unicode=True, width=100)
    return files


def _dump_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def asyncapi() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the topics, their keys and message types."""
    messages: dict[str, Any] = {}
    for type_name, model in events.ALL_MODELS.items():
        messages[_msg_name(type_name)] = {
            "name": type_name,
            "title": type_name,
            "summary": (model.__doc__ or "").strip().splitlines()[0],
            "contentType": "application/cloudevents+json",
            "payload": {"$ref": f"./{type_name}.json"},
        }
    for name in RECORD_MODELS:
        messages[name] = {
            "name": name,
            "title": name,
            "summary": (RECORD_MODELS[name].__doc__ or "").strip().splitlines()[0],
            "contentType": "application/json",
            "payload": {"$ref": f"./{name}.json"},
        }
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for spec in ALL_TOPICS:
        cid = spec.name.replace(".", "_")
        names: list[str] = []
        for group in spec.messages:
            if group == "input":
                names += [_msg_name(t) for t in events.INPUT_MODELS]
            elif group == "output":
                names += [_msg_name(t) for t in events.OUTPUT_MODELS]
            else:
                names.append(group)
        channels[cid] = {
            "address": spec.name,
            "description": spec.description,
            "messages": {n: {"$ref": f"#/components/messages/{n}"} for n in names},
            "bindings": {
                "kafka": {
                    "topic": spec.name,
                    "partitions": spec.partitions if spec.partitions is not None else 8,
                    "replicas": 1,
                    "topicConfiguration": _topic_config(spec.configs),
                    "bindingVersion": "0.5.0",
                }
            },
            "x-key": spec.key,
        }
        action = "receive" if spec.name in ("waterwatch.events", "waterwatch.residents") else "send"
        operations[f"{action}_{cid}"] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{cid}"},
            "summary": f"waterwatch {'consumes' if action == 'receive' else 'produces'} {spec.name}",
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "waterwatch",
            "version": "0.1.0",
            "description": (
                "Topics of the water-service SLA alerting service. Events are CloudEvents 1.0 "
                "in JSON structured mode; the Kafka key of matter topics is the matter id."
            ),
        },
        "defaultContentType": "application/cloudevents+json",
        "servers": {
            "local": {
                "host": "127.0.0.1:9092",
                "protocol": "kafka",
                "description": "The local broker of `waterwatch kafka up`.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def _topic_config(configs: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "cleanup.policy" in configs:
        out["cleanup.policy"] = [configs["cleanup.policy"]]
    if "retention.ms" in configs:
        out["retention.ms"] = int(configs["retention.ms"])
    return out


def _msg_name(type_name: str) -> str:
    return type_name.replace(".", "_")


def write(directory: Path) -> list[Path]:
    """Write the generated files; remove stale generated ones. Return what changed."""
    directory.mkdir(parents=True, exist_ok=True)
    changed: list[Path] = []
    files = generate()
    for name, text in files.items():
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    for path in directory.glob("*.json"):
        if path.name not in files:
            path.unlink()
            changed.append(path)
    return changed


def diff(directory: Path) -> list[str]:
    """Names of files in ``directory`` that differ from what the models generate."""
    files = generate()
    bad = [
        n
        for n, t in files.items()
        if not (directory / n).exists() or (directory / n).read_text(encoding="utf-8") != t
    ]
    bad += [p.name for p in directory.glob("*.json") if p.name not in files]
    return sorted(bad)
