"""Stable codes of the event contract.

Other systems (the 12345 hotline gateway, the OA system, field apps) send these
codes; they are listed in ``RULES.md`` ("Stable codes used in events") and must
never be renamed.  Which rule a code falls under is policy data
(``config/policy.yaml``), not code: these enums only fix the vocabulary.
"""

from __future__ import annotations

from enum import StrEnum


class Channel(StrEnum):
    """How a ticket (工单) reached the utility."""

    HOTLINE_12345 = "hotline_12345"
    PHONE = "phone"
    VISIT = "visit"
    LETTER = "letter"
    MEDIA = "media"
    GOVERNMENT = "government"
    WECHAT = "wechat"
    APP = "app"
    OTHER = "other"


class HotlineTier(StrEnum):
    """Feedback tier of a 12345 order (Article 14 (1)-(4))."""

    LIFE_SAFETY = "life_safety"  # R14.1, 2 h
    BASIC_LIVING = "basic_living"  # R14.2, 24 h
    GENERAL = "general"  # R14.3, 3-5 days
    COMPLEX = "complex"  # R14.4, 15 days


class Urgency(StrEnum):
    """Return (回退) window of a 12345 order (Article 14 (5))."""

    EXTRA_URGENT = "extra_urgent"  # 特急 10 min
    URGENT = "urgent"  # 紧急 10 min
    CONSULTATION = "consultation"  # 咨询 1 h
    GENERAL = "general"  # 一般 2 h of working time


class Category(StrEnum):
    """Nature of a ticket (Article 15); the policy maps each to a rule."""

    # R15.1 - respond within 2 h
    EMERGENCY = "emergency"
    MAJOR_EVENT = "major_event"
    COMPLAINT = "complaint"
    # R15.2 - 12 h
    IMPORTANT_PARTY_URGENT = "important_party_urgent"
    INJURY_OR_PROPERTY_RISK = "injury_or_property_risk"
    MANHOLE_COVER = "manhole_cover"
    PIPE_LOCATING = "pipe_locating"
    HYDRANT_FAULT = "hydrant_fault"
    COMPOUND_NO_WATER = "compound_no_water"
    # R15.3 - 24 h
    ILLEGAL_USE_OR_DAMAGE = "illegal_use_or_damage"
    WARRANTY_REPAIR = "warranty_repair"
    WATER_QUALITY = "water_quality"
    METER_LOCATION_CHECK = "meter_location_check"
    SUPPLY_RESTORATION = "supply_restoration"
    METER_READING_RECHECK = "meter_reading_recheck"
    PIPE_DAMAGE = "pipe_damage"
    # R15.4 - 36 h
    METER_WELL_REPAIR = "meter_well_repair"
    METER_CALIBRATION = "meter_calibration"
    RETROFIT_REPAIR = "retrofit_repair"
    # R15.5 - 48 h
    CONSTRUCTION_REPORT = "construction_report"
    VALVE_WELL_COLLAPSE = "valve_well_collapse"
    ABNORMAL_USAGE_LOW_PRESSURE = "abnormal_usage_low_pressure"
    GENERAL_INQUIRY = "general_inquiry"
    METER_WELL_MULTI_DEPT_REPAIR = "meter_well_multi_dept_repair"
    # R15.6 - 72 h
    CONSTRUCTION_QUALITY = "construction_quality"
    METER_IDLE_RUNNING = "meter_idle_running"
    COMPENSATION = "compensation"
    LONG_COORDINATION = "long_coordination"
    # R15.7 - set by ops
    REPUTATION_OR_UNFORESEEN = "reputation_or_unforeseen"


class OutageKind(StrEnum):
    """Kind of a planned outage (停水), Article 19."""

    PLANNED = "planned"  # 19(1), 20
    MAINTENANCE = "maintenance"  # 19(3)
    USER_CAUSED = "user_caused"  # 19(4)
    EXTERNAL = "external"  # 20: applied for by an outside unit


class AlertLevel(StrEnum):
    """Level of an alert on ``waterwatch.alerts``."""

    WARNING = "warning"
    OVERDUE = "overdue"
    ESCALATION = "escalation"
    REMINDER = "reminder"
    VIOLATION = "violation"
    NOTICE = "notice"


class NoticeKind(StrEnum):
    """Resident notice (停水通知) kinds carried by ``notice.due``."""

    PRE_OUTAGE = "pre_outage"
    DELAY_UPDATE = "delay_update"
    RESTORATION = "restoration"
    CORRECTION = "correction"
    EMERGENCY_OUTAGE = "emergency_outage"  # an addition: R19.2 notices of unforeseen outages


class PublicChannel(StrEnum):
    """External channels whose outage notices need the Group Office's approval (R19.2)."""

    MEDIA = "media"
    WECHAT_ACCOUNT = "wechat_account"
