"""The units directory (``config/units.yaml``): responsible units, contacts, escalation chains.

Contacts are personal data: the directory never logs them; ``mask`` them in
any message.  WeCom robots are referenced by the name of the environment
variable that holds the webhook key (secrets only from the environment).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from waterwatch.core.errors import ConfigError
from waterwatch.core.yamlconf import line_of, load_yaml

STABLE_UNITS = (
    "runda", "shuixing", "boyang_design", "boyang_supply", "quality_lab", "chengnan",
    "ops", "office", "discipline", "safety", "inspection",
)  # fmt: skip
ESCALATION_ROLES = ("unit_head", "ops", "leaders", "warning_group")
_PHONE = re.compile(r"^\+?[0-9]{6,15}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_ENV = re.compile(r"^[A-Z][A-Z0-9_]*$")
_ID = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class Contact:
    name: str | None = None
    phone: str | None = None
    email: str | None = None
    wecom_robot_env: str | None = None


@dataclass(frozen=True, slots=True)
class Unit:
    id: str
    name: str
    name_en: str
    duty: Contact
    head: Contact
    escalation: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UnitsDirectory(Mapping[str, Unit]):
    units: Mapping[str, Unit]
    roles: Mapping[str, Contact]

    def __getitem__(self, key: str) -> Unit:
        return self.units[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.units)

    def __len__(self) -> int:
        return len(self.units)

    def __contains__(self, key: object) -> bool:
        return key in self.units


def _contact(path: Path, node: Any, where: str, name_default: str | None = None) -> Contact:
    if not isinstance(node, dict):
        raise ConfigError(path, line_of(node), f"{where}: must be a mapping")
    allowed = {"name", "phone", "email", "wecom_robot_env", "duty_phone", "name_en", "head", "escalation"}
    for key in node:
        if key not in allowed:
            raise ConfigError(path, line_of(node, key), f"{where}.{key}: unknown field")
    phone = node.get("phone", node.get("duty_phone"))
    if phone is not None and not _PHONE.match(str(phone)):
        key = "phone" if "phone" in node else "duty_phone"
        raise ConfigError(path, line_of(node, key), f"{where}.{key}: not a phone number (+8613800000000)")
    email = node.get("email")
    if email is not None and not _EMAIL.match(str(email)):
        raise ConfigError(path, line_of(node, "email"), f"{where}.email: not an e-mail address")
    env = node.get("wecom_robot_env")
    if env is not None and not _ENV.match(str(env)):
        raise ConfigError(path, line_of(node, "wecom_robot_env"),
                          f"{where}.wecom_robot_env: the NAME of an environment variable, like "
                          "WATERWATCH_WECOM_RUNDA_KEY (never the key itself)")  # fmt: skip
    return Contact(
        name=str(node.get("name")) if node.get("name") is not None else name_default,
        phone=str(phone) if phone is not None else None,
        email=str(email) if email is not None else None,
        wecom_robot_env=str(env) if env is not None else None,
    )


def load_units(path: Path) -> UnitsDirectory:
    """Load and validate ``units.yaml``; errors name the file and line."""
    tree = load_yaml(path)
    if not isinstance(tree, dict) or tree.get("version") != 1:
        raise ConfigError(path, line_of(tree, "version") if isinstance(tree, dict) else 1,
                          "version: must be 1")  # fmt: skip
    raw = tree.get("units")
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(path, line_of(tree, "units"), "units: must be a mapping of unit ids")
    units: dict[str, Unit] = {}
    for uid, node in raw.items():
        where = f"units.{uid}"
        if not _ID.match(uid):
            raise ConfigError(path, line_of(raw, uid), f"{where}: ids are lower_case_with_underscores")
        duty = _contact(path, node, where)
        head = _contact(path, node.get("head", {}), f"{where}.head")
        esc = node.get("escalation", ["unit_head", "ops", "leaders"])
        if not isinstance(esc, list):
            raise ConfigError(path, line_of(node, "escalation"), f"{where}.escalation: must be a list")
        for i, step in enumerate(esc):
            if step not in ESCALATION_ROLES and step not in raw:
                raise ConfigError(path, line_of(esc, i),
                                  f"{where}.escalation[{i}]: unknown role or unit {step!r}")  # fmt: skip
        if not node.get("name"):
            raise ConfigError(path, line_of(node), f"{where}: needs a name")
        units[uid] = Unit(uid, str(node["name"]), str(node.get("name_en", uid)), duty, head, tuple(esc))
    missing = [u for u in STABLE_UNITS if u not in units]
    if missing:
        raise ConfigError(path, line_of(tree, "units"), f"units: missing stable unit(s) {', '.join(missing)}")
    roles_raw = tree.get("roles", {})
    roles = {k: _contact(path, v, f"roles.{k}") for k, v in roles_raw.items()}
    return UnitsDirectory(units, roles)
