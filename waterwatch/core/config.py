"""Load the whole configuration directory (policy, units, calendar) and build the engine."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from waterwatch.core.calendar import BusinessCalendar, load_calendar
from waterwatch.core.engine import Engine
from waterwatch.core.policy import Policy, load_policy
from waterwatch.core.units import UnitsDirectory, load_units

log = logging.getLogger("waterwatch.config")

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config"


def config_dir(explicit: Path | None = None) -> Path:
    """``--config DIR``, else ``$WATERWATCH_CONFIG``, else the project's ``config/``."""
    if explicit is not None:
        return explicit
    env = os.environ.get("WATERWATCH_CONFIG")
    return Path(env) if env else REPO_CONFIG


@dataclass(frozen=True)
class Config:
    directory: Path
    policy: Policy
    units: UnitsDirectory
    calendar: BusinessCalendar

    def engine(self) -> Engine:
        return Engine(self.policy, self.units, self.calendar)


def load_config(
    directory: Path | None = None,
    *,
    time_scale: float = 1.0,
    on_missing_holidays: Callable[[date], None] | None = None,
) -> Config:
    """Load ``policy.yaml``, ``units.yaml`` and ``calendar.yaml`` from one directory."""
    d = config_dir(directory)
    policy = load_policy(d / "policy.yaml")
    if time_scale != 1:
        policy = policy.scaled(time_scale)
    units = load_units(d / "units.yaml")
    cal_path = d / "calendar.yaml"
    calendar = (
        load_calendar(cal_path, on_missing=on_missing_holidays)
        if cal_path.exists()
        else BusinessCalendar(on_missing=on_missing_holidays)
    )
    return Config(d, policy, units, calendar)
