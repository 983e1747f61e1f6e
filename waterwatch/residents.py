"""The resident directory: import from CSV, the area registry, and targeting of outage notices.

Theory of operation
-------------------

Households (住户) live on the compacted topic ``waterwatch.residents``, one
:class:`~waterwatch.events.Resident` record per account (key = account, a
tombstone removes it).  Three pieces work on them:

* **The area registry** (``config/areas.yaml``, :func:`load_areas`): every area
  code a household or an outage may name, in three namespaces: districts
  (区/县, and sub-districts 街道 ``within`` a district), compounds (小区/社区,
  each in one district and, when known, one supply zone) and supply zones
  (供水分区).  Codes are lower-case; input is folded to lower case.
* **The import** (:func:`import_csv`, ``waterwatch residents import FILE``):
  streams a CSV file, validates every row, produces the good rows as
  ``Resident`` JSON keyed by account and reports each bad row as
  ``line N: reason`` with personal data masked.  A household named under a
  compound is also recorded under that compound's district (and the district
  it lies within) and zone, so an outage named by district or zone reaches it.
* **The directory** (:class:`ResidentDirectory`): what the notifier keeps in
  memory from the compacted topic.  ``resolve(area, channel)`` turns an
  outage's ``area`` (districts, compounds, zones and/or explicit accounts) into
  households, each once, sorted by account, leaving out those who opted out of
  the channel or have no address for it; ``after_account`` resumes a fan-out
  after the last account handled.

CSV format
----------

UTF-8, with or without a byte-order mark; the first non-blank row is the
header.  Column names are case-insensitive and may come in any order; only
``account``, one contact column and one area column are required::

    account        household account number (户号); required, unique in the file;
                   letters, digits and . _ : - (at most 64)
    name           optional, at most 100 characters
    phone          mainland mobile (13800138000, +86 138 0013 8000, 0086...),
                   or any E.164 number (+44...); stored as E.164 (+8613800138000)
    email          an e-mail address
    language       zh or en (also zh-CN, en-GB ...); empty = zh
    districts      area codes from areas.yaml, ";"-separated (full-width ； too)
    compounds      idem
    zones          idem
    sms_consent    yes/no/1/0/true/false (also 是/否); empty = yes
    email_consent  idem

A household needs an account, a phone or an e-mail, and at least one area code.
A row with more fields than the header is refused (an unquoted comma), fewer
fields are taken as empty.  Blank rows (also ``,,,,``) are skipped.

Every problem of a row is reported in one line; the first occurrence of an
account wins, a later one is refused naming both lines.  Reasons never contain
a name, and phone numbers and e-mail addresses only masked
(:mod:`waterwatch.masking`).  Account numbers are identifiers, shown as they are.
"""

from __future__ import annotations

import bisect
import contextlib
import csv
import dataclasses
import difflib
import re
import sys
import time
import unicodedata
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal, NamedTuple

from pydantic import ValidationError

from waterwatch.core.errors import ConfigError
from waterwatch.core.yamlconf import line_of, load_yaml
from waterwatch.events import Area, Resident, describe_validation_error
from waterwatch.masking import mask_email, mask_phone, mask_text
from waterwatch.publish import _Tally as Tally
from waterwatch.publish import read_lines
from waterwatch.topics import RESIDENTS, TopicSpec

__all__ = [
    "COLUMNS",
    "AreaInfo",
    "AreaRegistry",
    "CheckedRow",
    "CsvHeaderError",
    "CsvRows",
    "Household",
    "ImportSummary",
    "NotCompacted",
    "Problem",
    "ResidentDirectory",
    "RowValidator",
    "areas_path",
    "check_csv",
    "import_csv",
    "load_areas",
    "load_registry",
    "normalize_email",
    "normalize_phone",
]

AreaKind = Literal["district", "compound", "zone"]

_CODE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


# =================================================================== area registry


@dataclass(frozen=True, slots=True)
class AreaInfo:
    """One known area code."""

    kind: AreaKind
    code: str
    name: str
    name_en: str
    within: str | None = None  # districts: the district a sub-district lies in
    district: str | None = None  # compounds
    zone: str | None = None  # compounds


@dataclass(frozen=True)
class AreaRegistry:
    """The known area codes (``config/areas.yaml``), by kind."""

    districts: Mapping[str, AreaInfo]
    compounds: Mapping[str, AreaInfo]
    zones: Mapping[str, AreaInfo]
    path: Path | None = None

    def of(self, kind: AreaKind) -> Mapping[str, AreaInfo]:
        return {"district": self.districts, "compound": self.compounds, "zone": self.zones}[kind]

    def known(self, kind: AreaKind, code: str) -> bool:
        return code in self.of(kind)

    def suggest(self, kind: AreaKind, code: str) -> str | None:
        """The closest known code of that kind, for a "did you mean" hint."""
        close = difflib.get_close_matches(code, list(self.of(kind)), n=1, cutoff=0.75)
        return close[0] if close else None

    def district_chain(self, code: str) -> list[str]:
        """The district and every district it lies within (a cycle is refused on load)."""
        out: list[str] = []
        cur: str | None = code
        while cur is not None and cur not in out:
            out.append(cur)
            info = self.districts.get(cur)
            cur = info.within if info is not None else None
        return out

    def expand(
        self, districts: Sequence[str], compounds: Sequence[str], zones: Sequence[str]
    ) -> tuple[list[str], list[str], list[str]]:
        """Add what the named codes imply: a compound's district (and parents) and zone."""
        d = list(dict.fromkeys(districts))
        z = list(dict.fromkeys(zones))
        for code in compounds:
            info = self.compounds.get(code)
            if info is None:
                continue
            if info.district is not None:
                d.extend(x for x in self.district_chain(info.district) if x not in d)
            if info.zone is not None and info.zone not in z:
                z.append(info.zone)
        for code in list(d):
            d.extend(x for x in self.district_chain(code) if x not in d)
        return d, list(dict.fromkeys(compounds)), z


_FIELDS: dict[AreaKind, set[str]] = {
    "district": {"name", "name_en", "within"},
    "compound": {"name", "name_en", "district", "zone"},
    "zone": {"name", "name_en"},
}
_SECTIONS: dict[str, AreaKind] = {"districts": "district", "compounds": "compound", "zones": "zone"}


def areas_path(config: Path | None = None) -> Path:
    """``areas.yaml`` of ``--config DIR``, else of ``$WATERWATCH_CONFIG``, else of ``config/``."""
    from waterwatch.core.config import config_dir

    return config_dir(config) / "areas.yaml"


def load_areas(path: Path) -> AreaRegistry:
    """Load and validate an area registry; a problem raises :class:`ConfigError` naming file and line."""
    tree = load_yaml(path)
    if not isinstance(tree, dict):
        raise ConfigError(path, 1, "must be a mapping with version, districts, compounds, zones")
    if tree.get("version") != 1:
        raise ConfigError(path, line_of(tree, "version"), "version: must be 1")
    for key in tree:
        if key != "version" and key not in _SECTIONS:
            raise ConfigError(path, line_of(tree, key), f"{key}: unknown section (districts, compounds, zones)")
    parsed: dict[AreaKind, dict[str, AreaInfo]] = {}
    for section, kind in _SECTIONS.items():
        raw = tree.get(section, {})
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(path, line_of(tree, section), f"{section}: must be a mapping of area codes")
        out: dict[str, AreaInfo] = {}
        for code, node in raw.items():
            where = f"{section}.{code}"
            line = line_of(raw, code)
            if not _CODE.match(code):
                raise ConfigError(path, line, f"{where}: codes are lower-case letters, digits and - (at most 64)")
            if not isinstance(node, dict):
                raise ConfigError(path, line, f"{where}: must be a mapping with at least a name")
            for key in node:
                if key not in _FIELDS[kind]:
                    allowed = ", ".join(sorted(_FIELDS[kind]))
                    raise ConfigError(path, line_of(node, key), f"{where}.{key}: unknown field ({allowed})")
            name = node.get("name")
            if not isinstance(name, str) or not name.strip():
                raise ConfigError(path, line_of(node, "name"), f"{where}.name: is required")
            name_en = node.get("name_en", code)
            refs = {k: node.get(k) for k in ("within", "district", "zone")}
            for k, v in refs.items():
                if v is not None and not isinstance(v, str):
                    raise ConfigError(path, line_of(node, k), f"{where}.{k}: must be an area code")
            out[code] = AreaInfo(kind, code, name.strip(), str(name_en), refs["within"], refs["district"], refs["zone"])
        parsed[kind] = out
    refs_to: tuple[tuple[str, AreaKind, str, AreaKind], ...] = (
        ("districts", "district", "within", "district"),
        ("compounds", "compound", "district", "district"),
        ("compounds", "compound", "zone", "zone"),
    )
    for section, kind, key, target in refs_to:
        for code, info in parsed[kind].items():
            ref = getattr(info, key)
            if ref is not None and ref not in parsed[target]:
                raise ConfigError(path, line_of(tree[section][code], key),
                                  f"{section}.{code}.{key}: unknown {target} {ref!r}")  # fmt: skip
    districts = parsed["district"]
    for code in districts:
        seen: list[str] = []
        cur: str | None = code
        while cur is not None:
            if cur in seen:
                raise ConfigError(path, line_of(tree.get("districts"), code),
                                  f"districts.{code}.within: a cycle ({' → '.join([*seen, cur])})")  # fmt: skip
            seen.append(cur)
            cur = districts[cur].within
    if not any(parsed.values()):
        raise ConfigError(path, 1, "no area codes: name at least one district, compound or zone")
    return AreaRegistry(districts, parsed["compound"], parsed["zone"], path)


# =================================================================== CSV validation

COLUMNS: tuple[str, ...] = (
    "account", "name", "phone", "email", "language",
    "districts", "compounds", "zones", "sms_consent", "email_consent",
)  # fmt: skip
_LIST_COLUMNS: dict[str, AreaKind] = {"districts": "district", "compounds": "compound", "zones": "zone"}

MAX_LINE_BYTES = 64 * 1024
"""A physical line longer than this is refused (a resident row is a few hundred bytes)."""
MAX_KEPT = 10_000
"""At most this many rejects (and delivery failures) are kept with their reasons; all are counted."""
MAX_ACCOUNT = 64
MAX_NAME = 100
MAX_EMAIL = 254

_ACCOUNT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]*$")
_PHONE_JUNK = re.compile(r"[\s\-().]")
_CN_MOBILE = re.compile(r"^(?:\+86|0086|86)?(1[3-9][0-9]{9})$")
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_EMAIL_RE = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
)
_TRUE = {"yes", "y", "1", "true", "是"}
_FALSE = {"no", "n", "0", "false", "否"}
_BOM = b"\xef\xbb\xbf"

REASONS: dict[str, str] = {
    "missing_account": "missing account",
    "bad_account": "bad account",
    "duplicate_account": "duplicate account",
    "bad_name": "bad name",
    "bad_phone": "bad phone",
    "bad_email": "bad email",
    "no_contact": "no contact",
    "bad_area": "bad area code",
    "unknown_area": "unknown area",
    "no_area": "no area",
    "unknown_language": "unknown language",
    "bad_consent": "bad consent",
    "bad_row": "malformed row",
    "not_utf8": "not UTF-8",
}
"""Reason codes of :class:`Problem` and their labels in the summary."""


class Problem(NamedTuple):
    """One problem of a row: a reason code (see :data:`REASONS`) and a masked, readable text."""

    code: str
    text: str


class CheckedRow(NamedTuple):
    """One non-blank row of the CSV, validated: a resident, or the problems that refuse it."""

    line_no: int
    resident: Resident | None
    problems: tuple[Problem, ...] = ()

    @property
    def reason(self) -> str:
        return "; ".join(p.text for p in self.problems)


class CsvHeaderError(ValueError):
    """The file cannot be read as a residents CSV at all (header, encoding). ``str()`` is one line."""


def _fold(text: str) -> str:
    """Full-width digits, letters and punctuation (１３８, ＠, ；) to their ASCII forms; trimmed."""
    return text.strip() if text.isascii() else unicodedata.normalize("NFKC", text).strip()


def normalize_phone(raw: str) -> str | None:
    """E.164 form of a mainland mobile or an international number, or None if it is neither.

    ``138 0013 8000``, ``+86-138-0013-8000``, ``8613800138000`` and
    ``008613800138000`` all give ``+8613800138000``; ``+44 20 7946 0958`` is
    kept as ``+442079460958``.  A +86 number that is not a mobile (a
    landline) is refused: resident notices go by SMS.
    """
    s = _PHONE_JUNK.sub("", _fold(raw))
    m = _CN_MOBILE.match(s)
    if m:
        return "+86" + m.group(1)
    if s.startswith("00"):
        s = "+" + s[2:]
    if _E164.match(s) and not s.startswith("+86"):
        return s
    return None


def normalize_email(raw: str) -> str | None:
    """The address with its domain in lower case, or None if it is not an e-mail address."""
    s = _fold(raw)
    if len(s) > MAX_EMAIL or not _EMAIL_RE.match(s):
        return None
    local, _, domain = s.rpartition("@")
    if len(local) > 64:
        return None
    return f"{local}@{domain.lower()}"


def _masked_phone(raw: str) -> str:
    folded = _fold(raw)
    return mask_phone(folded) if any("0" <= c <= "9" for c in folded) else "(no digits)"


def _consent(column: str, raw: str, problems: list[Problem]) -> bool:
    value = _fold(raw).lower()
    if not value or value in _TRUE:
        return True
    if value in _FALSE:
        return False
    shown = value if len(value) <= 12 and "@" not in value and not any(c.isdigit() for c in value) else "(value)"
    problems.append(Problem("bad_consent", f"{column} {shown!r}: must be yes, no, 1, 0, true or false"))
    return True


def _language(raw: str, problems: list[Problem]) -> Literal["zh", "en"]:
    value = _fold(raw).lower().replace("_", "-")
    if not value:
        return "zh"
    base = value.split("-", 1)[0]
    if base == "zh":
        return "zh"
    if base == "en":
        return "en"
    shown = value if len(value) <= 12 and "@" not in value and not any(c.isdigit() for c in value) else "(value)"
    problems.append(Problem("unknown_language", f"language {shown!r}: must be zh or en"))
    return "zh"


class RowValidator:
    """Validates rows one by one; remembers the accounts seen so a duplicate names the first line.

    Holds one small entry per account (for 100,000 rows about 10 MB), nothing else.
    """

    def __init__(self, registry: AreaRegistry, columns: Sequence[str]) -> None:
        self.registry = registry
        self.columns = tuple(columns)
        self.first_line: dict[str, int] = {}
        self._expanded: dict[tuple[str, ...], tuple[list[str], list[str], list[str]]] = {}

    def _expand(self, d: list[str], c: list[str], z: list[str]) -> tuple[list[str], list[str], list[str]]:
        """``registry.expand``, remembered per combination (a city has a few thousand)."""
        key = (*d, "|", *c, "|", *z)
        hit = self._expanded.get(key)
        if hit is None:
            hit = self.registry.expand(d, c, z)
            if len(self._expanded) < 100_000:
                self._expanded[key] = hit
        return list(hit[0]), list(hit[1]), list(hit[2])

    def check(self, line_no: int, values: Sequence[str]) -> CheckedRow:
        problems: list[Problem] = []
        if len(values) > len(self.columns):
            problems.append(Problem("bad_row", f"has {len(values)} fields, the header has {len(self.columns)} "
                                               "(a value with a comma needs double quotes)"))  # fmt: skip
            return CheckedRow(line_no, None, tuple(problems))
        row = dict(zip(self.columns, values, strict=False))
        get = row.get

        account = _fold(get("account") or "")
        if not account:
            problems.append(Problem("missing_account", "account: is required"))
        elif len(account) > MAX_ACCOUNT or not _ACCOUNT.match(account):
            problems.append(Problem("bad_account", f"account: at most {MAX_ACCOUNT} letters, digits and . _ : -"))
        else:
            first = self.first_line.get(account)
            if first is not None:
                problems.append(Problem("duplicate_account", f"account {account}: duplicate of line {first}"))
            else:
                self.first_line[account] = line_no

        name = " ".join((get("name") or "").split()) or None  # one line, single spaces
        if name is not None and len(name) > MAX_NAME:
            problems.append(Problem("bad_name", f"name: longer than {MAX_NAME} characters"))

        raw_phone = (get("phone") or "").strip()
        phone = None
        if raw_phone:
            phone = normalize_phone(raw_phone)
            if phone is None:
                problems.append(Problem("bad_phone", f"phone {_masked_phone(raw_phone)}: not a mainland "
                                        "mobile (11 digits, 13-19...) or an E.164 number (+country code)"))  # fmt: skip
        raw_email = (get("email") or "").strip()
        email = None
        if raw_email:
            email = normalize_email(raw_email)
            if email is None:
                problems.append(Problem("bad_email", f"email {mask_email(_fold(raw_email))}: not an e-mail address"))
        if not raw_phone and not raw_email:
            problems.append(Problem("no_contact", "no phone and no email: a household needs at least one"))

        language = _language(get("language") or "", problems)
        lists: dict[AreaKind, list[str]] = {}
        for column, kind in _LIST_COLUMNS.items():
            codes: list[str] = []
            for item in _fold(get(column) or "").split(";"):
                code = item.strip().lower()
                if not code or code in codes:
                    continue
                if not _CODE.match(code):
                    shown = mask_text(code[:30])  # a phone number in the wrong column stays masked
                    problems.append(Problem("bad_area", f"{kind} {shown!r}: codes are letters, digits and -"))
                elif not self.registry.known(kind, code):
                    shown = mask_text(code[:30])
                    hint = self.registry.suggest(kind, code)
                    where = self.registry.path.name if self.registry.path else "the area registry"
                    more = f"; did you mean {hint}?" if hint else ""
                    problems.append(Problem("unknown_area", f"unknown {kind} {shown!r} (not in {where}{more})"))
                codes.append(code)
            lists[kind] = codes
        if not any(lists.values()):
            problems.append(Problem("no_area", "no district, compound or zone: the household would get no notice"))
        sms = _consent("sms_consent", get("sms_consent") or "", problems)
        mail = _consent("email_consent", get("email_consent") or "", problems)

        if problems:
            return CheckedRow(line_no, None, tuple(problems))
        districts, compounds, zones = self._expand(lists["district"], lists["compound"], lists["zone"])
        resident = Resident(
            account=account, name=name, phone=phone, email=email, language=language,
            districts=districts, compounds=compounds, zones=zones, consent={"sms": sms, "email": mail},
        )  # fmt: skip
        return CheckedRow(line_no, resident, ())


def _decoded_lines(stream: BinaryIO, bad: dict[int, Problem]) -> Iterator[str]:
    """Text lines for the csv module; a line that is not UTF-8 or too long is marked in ``bad``."""
    for line_no, raw in enumerate(read_lines(stream, MAX_LINE_BYTES), start=1):
        if line_no == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        if len(raw) > MAX_LINE_BYTES:
            bad[line_no] = Problem("bad_row", f"line is longer than {MAX_LINE_BYTES} bytes")
            raw = b""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad[line_no] = Problem("not_utf8", f"not UTF-8 text (byte {exc.start + 1}): save the file as CSV UTF-8")
            text = raw.decode("utf-8", errors="replace")
        yield text + "\n"


class CsvRows:
    """The data rows of a residents CSV (binary stream), validated one by one in bounded memory.

    The header is read and checked when this is made: a missing or unusable
    header raises :class:`CsvHeaderError` before any row is read (so the
    import refuses a wrong file before it touches Kafka).  Iterating yields a
    :class:`CheckedRow` per non-blank row; line numbers are physical lines of
    the file, counted from 1 (a quoted value may span lines: the row's first).
    """

    def __init__(self, stream: BinaryIO, registry: AreaRegistry) -> None:
        self._bad: dict[int, Problem] = {}
        self._reader = csv.reader(_decoded_lines(stream, self._bad), strict=False)
        self._last_end = 0
        header = self._next()
        if header is None:
            raise CsvHeaderError("the file is empty: it needs a header row (" + ",".join(COLUMNS) + ")")
        line_no, values, problem = header
        if problem is not None:
            raise CsvHeaderError(f"line {line_no}: header: {problem.text}")
        self.header_line = line_no
        self.columns = _header(values, line_no)
        self.validator = RowValidator(registry, self.columns)

    def _next(self) -> tuple[int, list[str], Problem | None] | None:
        """The next non-blank row: (first line, values, a line problem or None)."""
        while True:
            start = self._last_end + 1
            try:
                values = next(self._reader)
            except StopIteration:
                return None
            except csv.Error as exc:
                self._last_end = max(self._reader.line_num, start)
                bad = self._line_problem(start) or Problem("bad_row", f"not a CSV row: {exc}")
                return start, [], bad
            self._last_end = self._reader.line_num
            problem = self._line_problem(start)
            if problem is None and not any(v.strip() for v in values):
                continue  # a blank row (also ",,,,")
            return start, values, problem

    def _line_problem(self, start: int) -> Problem | None:
        found: Problem | None = None
        for n in range(start, self._last_end + 1):
            problem = self._bad.pop(n, None)
            if found is None:
                found = problem
        return found

    def __iter__(self) -> Iterator[CheckedRow]:
        while (item := self._next()) is not None:
            line_no, values, problem = item
            if problem is not None:
                yield CheckedRow(line_no, None, (problem,))
            else:
                yield self.validator.check(line_no, values)


def _header(values: Sequence[str], line_no: int) -> list[str]:
    names = [_fold(v).lower() for v in values]
    while names and not names[-1]:
        names.pop()  # trailing empty columns (spreadsheets add them)
    unknown = [n for n in names if n not in COLUMNS]
    if unknown:
        shown = ", ".join(repr(mask_text(n[:30])) for n in unknown[:3])
        raise CsvHeaderError(f"line {line_no}: header: unknown column(s) {shown}; the columns are {', '.join(COLUMNS)}")
    dup = [n for n, c in Counter(names).items() if c > 1]
    if dup:
        raise CsvHeaderError(f"line {line_no}: header: column {dup[0]} appears twice")
    missing = []
    if "account" not in names:
        missing.append("account")
    if "phone" not in names and "email" not in names:
        missing.append("phone or email")
    if not any(c in names for c in _LIST_COLUMNS):
        missing.append("districts, compounds or zones")
    if missing:
        raise CsvHeaderError(f"line {line_no}: header: missing column {'; '.join(missing)}")
    return names


def check_csv(path: Path, registry: AreaRegistry) -> Iterator[CheckedRow]:
    """Validate a residents CSV file without Kafka: every data row, valid or not (header checked first)."""
    with Path(path).open("rb") as stream:
        yield from CsvRows(stream, registry)


# =================================================================== import to Kafka


@dataclass
class ImportSummary:
    """What :func:`import_csv` did.

    ``read``: non-blank data rows; ``valid``: rows that passed validation;
    ``rejected``/``reasons``/``rejects``: refused rows, per reason code (a row
    with several problems counts under each) and the first ``MAX_KEPT`` lines.
    ``produced``: records the broker acknowledged; ``failed``/``failures``:
    valid rows it did not; ``stopped_at``: the line where the broker went away.
    """

    read: int = 0
    valid: int = 0
    rejected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    rejects: list[tuple[int, str]] = field(default_factory=list)
    produced: int = 0
    failed: int = 0
    failures: list[tuple[int, str]] = field(default_factory=list)
    stopped_at: int | None = None
    elapsed: float = 0.0
    dry_run: bool = False
    topic: str = RESIDENTS.name

    @property
    def ok(self) -> bool:
        return self.rejected == 0 and self.failed == 0 and self.stopped_at is None


class NotCompacted(Exception):
    """The target topic exists but is not compacted: the directory would lose households."""

    def __init__(self, topic: str, policy: str) -> None:
        self.topic = topic
        self.policy = policy
        super().__init__(
            f"topic {topic} has cleanup.policy={policy}; the resident directory needs cleanup.policy=compact "
            f"(delete would drop households after the retention time): alter or recreate the topic"
        )


def topic_spec(topic: str) -> TopicSpec:
    """The residents spec (compacted, keyed by account) under ``topic``'s name."""
    return RESIDENTS if topic == RESIDENTS.name else dataclasses.replace(RESIDENTS, name=topic)


def cleanup_policy(bootstrap: str, topic: str) -> str | None:
    """The topic's ``cleanup.policy`` as the broker reports it (None if it cannot tell)."""
    from kafka.admin import ConfigResource, ConfigResourceType

    from waterwatch.admin import admin_client

    resource = ConfigResource(ConfigResourceType.TOPIC, topic, {"cleanup.policy": None})
    with admin_client(bootstrap) as client:
        try:
            result = client.describe_configs([resource], config_filter="all")
        except TypeError:  # kafka-python 2.x: no config_filter
            result = client.describe_configs([resource])
    if isinstance(result, dict):
        entry = result.get("topic", {}).get(topic, {}).get("cleanup.policy")
        if isinstance(entry, dict) and isinstance(entry.get("value"), str):
            return str(entry["value"])
        return "delete" if isinstance(result.get("topic", {}).get(topic), dict) else None
    return None


PROGRESS_MIN_BYTES = 512 * 1024
"""Files at least this large (about 5,000 households) get a progress bar on a terminal."""


class _Bar:
    """A transient progress bar on stderr, advanced by bytes read."""

    def __init__(self, label: str, size: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn(label, markup=False), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
            console=Console(stderr=True), transient=True,
        )  # fmt: skip
        self.task = self.progress.add_task("import", total=size)

    @classmethod
    def maybe(cls, path: Path, label: str, enabled: bool) -> _Bar | None:
        from rich.console import Console

        size = path.stat().st_size if enabled else 0
        if size < PROGRESS_MIN_BYTES or not Console(stderr=True).is_terminal:
            return None
        return cls(label, size)

    def update(self, done: int) -> None:
        self.progress.update(self.task, completed=done)

    def __enter__(self) -> _Bar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()


FLUSH_TIMEOUT_S = 120.0


def import_csv(
    path: Path,
    registry: AreaRegistry,
    *,
    bootstrap: str | None = None,
    topic: str = RESIDENTS.name,
    dry_run: bool = False,
    progress: bool = True,
) -> ImportSummary:
    """Validate every row of a residents CSV and produce the good ones (see the module doc).

    ``dry_run`` validates only and never contacts Kafka.  Otherwise the topic
    is created if missing (compacted, keyed by account) and each valid row is
    produced as ``Resident`` JSON keyed by account; only acknowledged records
    count as produced.  Raises :class:`CsvHeaderError` (before touching Kafka),
    ``OSError``, :class:`~waterwatch.admin.BrokerUnavailable`,
    :class:`~waterwatch.admin.TopicMismatch` and :class:`NotCompacted`.
    """
    import kafka.errors as kerrors

    path = Path(path)
    t0 = time.monotonic()
    summary = ImportSummary(dry_run=dry_run, topic=topic)
    with path.open("rb") as stream:
        rows = CsvRows(stream, registry)  # a bad header fails here, before Kafka
        producer: Any = None
        tally = Tally()  # the acknowledgement tally of `waterwatch publish`
        if not dry_run:
            from waterwatch.admin import ensure_topics
            from waterwatch.publish import default_bootstrap, make_producer  # kafka clients: only when producing

            bootstrap = bootstrap or default_bootstrap()
            ensure_topics(bootstrap, [topic_spec(topic)], check_existing=topic == RESIDENTS.name)
            policy = cleanup_policy(bootstrap, topic)
            if policy is not None and "compact" not in policy.split(","):
                raise NotCompacted(topic, policy)
            producer = make_producer(bootstrap, client_id="waterwatch-residents")
        bar = _Bar.maybe(path, f"{'checking' if dry_run else 'importing'} {path.name}", progress)
        try:
            with bar or contextlib.nullcontext():
                for n, item in enumerate(rows):
                    if bar is not None and n % 2048 == 0:
                        bar.update(stream.tell())
                    summary.read += 1
                    if item.resident is None:
                        summary.rejected += 1
                        summary.reasons.update(p.code for p in item.problems)
                        if len(summary.rejects) < MAX_KEPT:
                            summary.rejects.append((item.line_no, item.reason))
                        continue
                    summary.valid += 1
                    if producer is None:
                        continue
                    resident = item.resident
                    tally.sending(item.line_no)
                    try:
                        future = producer.send(
                            topic,
                            key=resident.account.encode("utf-8"),
                            value=resident.model_dump_json(exclude_none=True).encode("utf-8"),
                        )
                    except kerrors.KafkaTimeoutError as exc:  # no metadata / the buffer stays full
                        tally.error(item.line_no, exc)
                        summary.stopped_at = item.line_no
                        break
                    except kerrors.KafkaError as exc:
                        tally.error(item.line_no, exc)
                        continue
                    future.add_callback(tally.ok, item.line_no)
                    future.add_errback(tally.error, item.line_no)
            if producer is not None:
                with contextlib.suppress(kerrors.KafkaTimeoutError):
                    producer.flush(timeout=FLUSH_TIMEOUT_S)
        finally:
            if producer is not None:
                producer.close(timeout=10)
    if producer is not None:
        tally.unacknowledged()
        with tally.lock:
            summary.produced = tally.produced
            summary.failed = tally.failed
            summary.failures = sorted(tally.failures)
    summary.elapsed = time.monotonic() - t0
    return summary


# =================================================================== the directory

_EN = 1
_SMS = 2
_EMAIL = 4
_PREFIX: dict[str, str] = {"district": "d:", "compound": "c:", "zone": "z:"}


class Household(NamedTuple):
    """One recipient of a notice: the household, the channel and its address there."""

    account: str
    channel: str
    address: str
    language: str
    name: str | None


class _Entry(NamedTuple):
    """A resident as the directory stores it: a plain tuple (no per-record dict)."""

    name: str | None
    phone: str | None
    email: str | None
    flags: int  # _EN | _SMS | _EMAIL
    areas: tuple[str, ...]  # index keys such as "d:gulou", shared between households


class ResidentDirectory:
    """The households the notifier knows, kept from the compacted ``waterwatch.residents`` topic.

    Each household is a small tuple (name, phone, email, flags, area keys);
    the index maps an area key (``d:`` district, ``c:`` compound, ``z:`` zone +
    code) to the set of accounts in it, and identical area combinations share
    one tuple.  About 0.5 KB per household: see ``bench/synth_residents.py``.

    Consent: a record without a consent entry for a channel counts as
    consenting (the import always writes both, default yes); ``False`` means
    the household opted out of that channel and ``resolve`` leaves it out.
    """

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._index: dict[str, set[str]] = {}
        self._area_tuples: dict[tuple[str, ...], tuple[str, ...]] = {}

    # ----------------------------------------------------------- updates

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, account: object) -> bool:
        return account in self._entries

    def upsert(self, resident: Resident) -> None:
        """Add a household, or replace it (its old area memberships are dropped)."""
        account = resident.account
        keys: list[str] = []
        for kind, codes in (("district", resident.districts), ("compound", resident.compounds),
                            ("zone", resident.zones)):  # fmt: skip
            for code in codes:
                key = _PREFIX[kind] + _norm(code)
                if key not in keys:
                    keys.append(key)
        key_tuple = tuple(sys.intern(k) for k in sorted(keys))
        areas = self._area_tuples.setdefault(key_tuple, key_tuple)
        flags = _EN if resident.language == "en" else 0
        flags |= _SMS if resident.consent.get("sms", True) else 0
        flags |= _EMAIL if resident.consent.get("email", True) else 0
        old = self._entries.get(account)
        if old is not None:
            self._unindex(account, old.areas, keep=areas)
        self._entries[account] = _Entry(resident.name, resident.phone, resident.email, flags, areas)
        for key in areas:
            self._index.setdefault(key, set()).add(account)

    def remove(self, account: str) -> bool:
        """Forget a household (a tombstone on the topic); True if it was known."""
        old = self._entries.pop(account, None)
        if old is None:
            return False
        self._unindex(account, old.areas)
        return True

    def _unindex(self, account: str, areas: tuple[str, ...], keep: tuple[str, ...] = ()) -> None:
        for key in areas:
            if key in keep:
                continue
            members = self._index.get(key)
            if members is not None:
                members.discard(account)
                if not members:
                    del self._index[key]

    def apply(self, key: bytes | str | None, value: bytes | str | None) -> None:
        """Apply one record of the compacted topic: a ``Resident`` JSON value, or a tombstone (None).

        Raises ``ValueError`` (masked, one line) for a value that is not a
        resident or whose account differs from the key.
        """
        k = key.decode("utf-8") if isinstance(key, bytes) else key
        if value is None:
            if k is None:
                raise ValueError("a tombstone without a key")
            self.remove(k)
            return
        try:
            resident = Resident.model_validate_json(value)
        except ValidationError as exc:
            raise ValueError(f"not a resident record: {describe_validation_error(exc)}") from None
        if k is not None and k != resident.account:
            raise ValueError(f"key {k!r} is not the record's account {resident.account!r}")
        self.upsert(resident)

    # ----------------------------------------------------------- reading

    def get(self, account: str) -> Resident | None:
        """The household as a ``Resident`` (area codes as stored, sorted), or None."""
        e = self._entries.get(account)
        if e is None:
            return None
        by: dict[str, list[str]] = {"d": [], "c": [], "z": []}
        for key in e.areas:
            by[key[0]].append(key[2:])
        return Resident(
            account=account, name=e.name, phone=e.phone, email=e.email,
            language="en" if e.flags & _EN else "zh", districts=by["d"], compounds=by["c"], zones=by["z"],
            consent={"sms": bool(e.flags & _SMS), "email": bool(e.flags & _EMAIL)},
        )  # fmt: skip

    def members(self, kind: AreaKind, code: str) -> AbstractSet[str]:
        """The accounts indexed under one area code (a read-only view; empty if none)."""
        return self._index.get(_PREFIX[kind] + _norm(code), set())

    def resolve(
        self, area: Area | Mapping[str, Any], channel: str, *, after_account: str | None = None
    ) -> Iterator[Household]:
        """The households an outage area reaches on ``channel``, each once, sorted by account.

        ``area`` has ``districts``, ``compounds``, ``zones`` (codes, any case)
        and/or ``accounts`` (explicit households; unknown ones are skipped,
        see :meth:`unknown_accounts`).  Left out: households that opted out of
        the channel or have no address for it.  ``after_account`` resumes
        after that account (exclusive), so a restarted fan-out continues
        where it stopped.  The targets are fixed when ``resolve`` is called
        (only the sorted account list is held, about 8 bytes per household);
        a household removed meanwhile is skipped, a changed one is given its
        current address.  An unknown channel raises ``ValueError`` at once.
        """
        flag = _channel(channel)
        accounts = sorted(self._targets(area))
        start = 0 if after_account is None else bisect.bisect_right(accounts, after_account)
        return self._walk(accounts, start, channel, flag)

    def _walk(self, accounts: list[str], start: int, channel: str, flag: int) -> Iterator[Household]:
        entries = self._entries
        for i in range(start, len(accounts)):
            account = accounts[i]
            e = entries.get(account)
            if e is None or not e.flags & flag:
                continue
            address = e.phone if flag == _SMS else e.email
            if address:
                yield Household(account, channel, address, "en" if e.flags & _EN else "zh", e.name)

    def count(self, area: Area | Mapping[str, Any], channel: str) -> int:
        """How many households :meth:`resolve` yields (without sorting)."""
        flag = _channel(channel)
        entries = self._entries
        n = 0
        for account in self._targets(area):
            e = entries[account]
            if e.flags & flag and (e.phone if flag == _SMS else e.email):
                n += 1
        return n

    def unknown_accounts(self, area: Area | Mapping[str, Any]) -> list[str]:
        """Explicit accounts of ``area`` that are not in the directory (sorted): ops should know."""
        _, accounts = _area_parts(area)
        return sorted({a for a in accounts if a not in self._entries})

    def _targets(self, area: Area | Mapping[str, Any]) -> set[str]:
        keys, accounts = _area_parts(area)
        sets = [self._index[k] for k in keys if k in self._index]
        sets.sort(key=len, reverse=True)
        out: set[str] = set(sets[0]) if sets else set()
        for s in sets[1:]:
            out |= s
        out.update(a for a in accounts if a in self._entries)
        return out


def _norm(code: str) -> str:
    return code.strip().lower()


def _channel(channel: str) -> int:
    if channel == "sms":
        return _SMS
    if channel == "email":
        return _EMAIL
    raise ValueError(f"channel {channel!r}: residents are reached by sms or email")


def _area_parts(area: Area | Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """Index keys and explicit accounts of an outage area (an ``Area`` or its dict)."""
    get: Any = area.get if isinstance(area, Mapping) else (lambda name, default=None: getattr(area, name, default))
    keys: list[str] = []
    for kind, name in (("district", "districts"), ("compound", "compounds"), ("zone", "zones")):
        for code in get(name) or ():
            keys.append(_PREFIX[kind] + _norm(str(code)))
    accounts = [str(a).strip() for a in (get("accounts") or ())]
    return list(dict.fromkeys(keys)), accounts


def load_registry(config: Path | None = None) -> AreaRegistry:
    """The area registry of a configuration directory (``--config DIR``)."""
    return load_areas(areas_path(config))
