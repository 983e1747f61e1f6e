"""The resident directory: area registry, CSV validation (masked reasons, line numbers), targeting."""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from waterwatch.cli_residents import EXIT_ERROR, EXIT_OK, EXIT_REJECTED, residents_app, summary_line
from waterwatch.core.errors import ConfigError
from waterwatch.events import Area, Resident
from waterwatch.residents import (
    AreaRegistry,
    CheckedRow,
    CsvHeaderError,
    CsvRows,
    Household,
    ResidentDirectory,
    import_csv,
    load_areas,
    load_registry,
    normalize_email,
    normalize_phone,
)

REPO = Path(__file__).resolve().parents[2]
HEADER = "account,name,phone,email,language,districts,compounds,zones,sms_consent,email_consent"


@pytest.fixture(scope="module")
def registry() -> AreaRegistry:
    return load_registry(REPO / "config")


def rows(text: str | bytes, registry: AreaRegistry, header: str = HEADER) -> list[CheckedRow]:
    data = text if isinstance(text, bytes) else (header + "\n" + text).encode("utf-8")
    return list(CsvRows(io.BytesIO(data), registry))


def one(text: str, registry: AreaRegistry) -> CheckedRow:
    [row] = rows(text, registry)
    return row


def codes(row: CheckedRow) -> list[str]:
    return [p.code for p in row.problems]


# ------------------------------------------------------------------ area registry


def test_registry_knows_liaocheng_districts_compounds_and_zones(registry: AreaRegistry) -> None:
    assert {"dongchangfu", "chiping", "linqing", "gulou"} <= set(registry.districts)
    assert registry.districts["gulou"].within == "dongchangfu"
    assert registry.compounds["yinhe-garden"].district == "gulou"
    assert registry.compounds["yinhe-garden"].zone == "zone-3"
    assert "zone-7" in registry.zones


def test_registry_expands_a_compound_to_its_district_chain_and_zone(registry: AreaRegistry) -> None:
    d, c, z = registry.expand([], ["yinhe-garden"], [])
    assert (d, c, z) == (["gulou", "dongchangfu"], ["yinhe-garden"], ["zone-3"])
    d, _, _ = registry.expand(["liuyuan"], [], [])
    assert d == ["liuyuan", "dongchangfu"]


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        ("version: 2\n", 1, "version: must be 1"),
        ("version: 1\ndistricts:\n  a: {name: A, colour: red}\n", 3, "districts.a.colour: unknown field"),
        ("version: 1\ndistricts:\n  Bad_Code: {name: A}\n", 3, "codes are lower-case"),
        ("version: 1\ndistricts:\n  a: {name_en: A}\n", 3, "districts.a.name: is required"),
        ("version: 1\ndistricts:\n  a: {name: A}\ncompounds:\n  c: {name: C,\n      district: b}\n", 6,
         "compounds.c.district: unknown district 'b'"),
        ("version: 1\nzones:\n  z: {name: Z}\ncompounds:\n  c: {name: C, zone: y}\n", 5, "unknown zone 'y'"),
        ("version: 1\ndistricts:\n  a: {name: A, within: b}\n  b: {name: B, within: a}\n", 3, "a cycle"),
        ("version: 1\nstreets: {}\n", 2, "streets: unknown section"),
    ],
)  # fmt: skip
def test_registry_errors_name_the_file_and_line(tmp_path: Path, body: str, line: int, message: str) -> None:
    path = tmp_path / "areas.yaml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_areas(path)
    assert exc.value.path == path
    assert exc.value.line == line, str(exc.value)
    assert message in str(exc.value)
    assert str(exc.value).startswith(f"{path}:{line}: ")


def test_registry_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"areas\.yaml: cannot read"):
        load_registry(tmp_path)


# ------------------------------------------------------------------ normalisation


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("13800138000", "+8613800138000"),
        ("+86 138 0013 8000", "+8613800138000"),
        ("+86-138-0013-8000", "+8613800138000"),
        ("8613800138000", "+8613800138000"),
        ("008613800138000", "+8613800138000"),
        ("１３８００１３８０００", "+8613800138000"),  # full-width digits from a spreadsheet
        ("+44 20 7946 0958", "+442079460958"),
        ("0044 20 7946 0958", "+442079460958"),
        ("12800138000", None),  # 12x is not a mobile prefix
        ("1380013800", None),  # 10 digits
        ("+86 635 8888888", None),  # a Liaocheng landline: no SMS
        ("0635-8888888", None),
        ("phone", None),
        ("+1", None),
    ],
)
def test_normalize_phone(raw: str, e164: str | None) -> None:
    assert normalize_phone(raw) == e164


@pytest.mark.parametrize(
    ("raw", "out"),
    [
        ("Zhang.San@Example.INVALID", "Zhang.San@example.invalid"),
        ("li+notice@mail.example.invalid", "li+notice@mail.example.invalid"),
        ("ｗｕ＠example.invalid", "wu@example.invalid"),
        ("no-at-sign.example.invalid", None),
        ("two@@example.invalid", None),
        ("dot.@example.invalid", None),
        ("space in@example.invalid", None),
        ("nodomain@localhost", None),
        ("a@-bad-.example", None),
    ],
)
def test_normalize_email(raw: str, out: str | None) -> None:
    assert normalize_email(raw) == out


# ------------------------------------------------------------------ row validation


def test_a_good_row_becomes_a_resident_with_e164_and_derived_areas(registry: AreaRegistry) -> None:
    row = one("1000001,张伟,138 0001 0001,Zhang.Wei@Example.invalid,,,Yinhe-Garden,,,no", registry)
    assert row.problems == () and row.line_no == 2
    assert row.resident == Resident(
        account="1000001", name="张伟", phone="+8613800010001", email="Zhang.Wei@example.invalid",
        language="zh", districts=["gulou", "dongchangfu"], compounds=["yinhe-garden"], zones=["zone-3"],
        consent={"sms": True, "email": False},
    )  # fmt: skip


def test_bad_phone_is_reported_masked(registry: AreaRegistry) -> None:
    row = one("1,张三,+86 139 1234 567,,,gulou,,,,", registry)
    assert codes(row) == ["bad_phone"]
    assert row.reason.startswith("phone +8613****4567: not a mainland mobile")
    assert "1391234567" not in row.reason.replace(" ", "")
    assert "张" not in row.reason


@pytest.mark.parametrize(("raw", "shown"), [("123", "***"), ("张三", "(no digits)"), ("１３９１２３４５", "****2345")])
def test_a_short_or_wordy_phone_is_never_echoed(registry: AreaRegistry, raw: str, shown: str) -> None:
    row = one(f"1,,{raw},,,gulou,,,,", registry)
    assert row.reason.startswith(f"phone {shown}: not a mainland mobile")


def test_bad_email_is_reported_masked(registry: AreaRegistry) -> None:
    row = one("1,,,zhang.san@@example.invalid,,gulou,,,,", registry)
    assert codes(row) == ["bad_email"]
    assert row.reason == "email z***@@example.invalid: not an e-mail address"
    assert "zhang" not in row.reason


def test_unknown_area_names_the_kind_and_suggests(registry: AreaRegistry) -> None:
    row = one("1,,13800138000,,,,yinhe-gardn;fenghuang-yuan,zone-99,,", registry)
    assert codes(row) == ["unknown_area", "unknown_area"]
    assert "unknown compound 'yinhe-gardn' (not in areas.yaml; did you mean yinhe-garden?)" in row.reason
    assert "unknown zone 'zone-99'" in row.reason


def test_a_phone_number_in_an_area_column_stays_masked(registry: AreaRegistry) -> None:
    row = one("1,,13800138000,,,,,13912345678,,", registry)
    assert codes(row) == ["unknown_area"]
    assert "13912345678" not in row.reason and "139****5678" in row.reason


def test_duplicate_account_names_both_lines_and_the_first_wins(registry: AreaRegistry) -> None:
    out = rows("A1,,13800138000,,,gulou,,,,\n\nA2,,13800138001,,,gulou,,,,\nA1,,13800138002,,,gulou,,,,", registry)
    assert [r.line_no for r in out] == [2, 4, 5]
    first, _, dup = out
    assert first.resident is not None and first.resident.account == "A1"
    assert codes(dup) == ["duplicate_account"]
    assert dup.reason == "account A1: duplicate of line 2"


@pytest.mark.parametrize(
    ("row", "code", "text"),
    [
        (",张三,13800138000,,,gulou,,,,", "missing_account", "account: is required"),
        ("has space,,13800138000,,,gulou,,,,", "bad_account", "account: at most 64"),
        ("1,张三,,,,gulou,,,,", "no_contact", "no phone and no email"),
        ("1,,13800138000,,fr,gulou,,,,", "unknown_language", "language 'fr': must be zh or en"),
        ("1,,13800138000,,,gulou,,,maybe,", "bad_consent", "sms_consent 'maybe': must be yes, no"),
        ("1,,13800138000,,,,,,,", "no_area", "no district, compound or zone"),
        ("1,,13800138000,,,Gu Lou,,,,", "bad_area", "district 'gu lou': codes are letters"),
        ("1," + "名" * 101 + ",13800138000,,,gulou,,,,", "bad_name", "name: longer than 100 characters"),
        ("1,Zhang,San,13800138000,,,gulou,,,,", "bad_row", "has 11 fields, the header has 10"),
    ],
)
def test_each_bad_input_is_one_masked_reason(registry: AreaRegistry, row: str, code: str, text: str) -> None:
    checked = one(row, registry)
    assert checked.resident is None
    assert codes(checked) == [code]
    assert text in checked.reason
    assert "张三" not in checked.reason and "名名" not in checked.reason
    assert "13800138000" not in checked.reason


def test_all_problems_of_a_row_are_reported_together(registry: AreaRegistry) -> None:
    row = one("1,,12345,bad,xx,nowhere,,,maybe,", registry)
    assert codes(row) == ["bad_phone", "bad_email", "unknown_language", "unknown_area", "bad_consent"]
    assert row.reason.count(";") == 4


def test_language_and_consent_values(registry: AreaRegistry) -> None:
    out = rows(
        "1,,13800138000,,EN,gulou,,,No,TRUE\n2,,13800138001,,zh-CN,gulou,,,0,1\n3,,13800138002,,,gulou,,,否,是",
        registry,
    )
    got = [(r.resident.language, r.resident.consent) for r in out if r.resident]
    assert got == [
        ("en", {"sms": False, "email": True}),
        ("zh", {"sms": False, "email": True}),
        ("zh", {"sms": False, "email": True}),
    ]


def test_bom_crlf_header_case_order_and_blank_rows(registry: AreaRegistry) -> None:
    data = "\ufeffZones,Phone,ACCOUNT\r\n\r\n,,\r\nzone-3,13800138000,1\r\n  \r\nzone-7,13800138001,2\r\n".encode()
    out = rows(data, registry)
    assert [(r.line_no, r.resident.account if r.resident else None) for r in out] == [(4, "1"), (6, "2")]
    assert out[0].resident is not None and out[0].resident.zones == ["zone-3"]


def test_fewer_fields_are_empty_and_a_quoted_value_may_span_lines(registry: AreaRegistry) -> None:
    out = rows('1,"Zhang\nSan",13800138000,,,gulou\n2,,13800138001,,,gulou,,,,\n3,,x,,,gulou,,,,', registry)
    assert [r.line_no for r in out] == [2, 4, 5]
    assert out[0].resident is not None and out[0].resident.name == "Zhang San"
    assert codes(out[2]) == ["bad_phone"]


def test_a_line_that_is_not_utf8_is_rejected_and_the_rest_goes_on(registry: AreaRegistry) -> None:
    data = (HEADER + "\n1,").encode() + "张三".encode("gbk") + b",13800138000,,,gulou,,,,\n2,,13800138001,,,gulou,,,,\n"
    out = rows(data, registry)
    assert [(r.line_no, codes(r)) for r in out] == [(2, ["not_utf8"]), (3, [])]
    assert "save the file as CSV UTF-8" in out[0].reason


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the file is empty"),
        (b"\n\n", "the file is empty"),
        (b"account,phone,emial,zones\n", "unknown column(s) 'emial'"),
        (b"name,phone,zones\n", "missing column account"),
        (b"account,name,zones\n", "missing column phone or email"),
        (b"account,phone\n", "missing column districts, compounds or zones"),
        (b"account,phone,phone,zones\n", "column phone appears twice"),
        ("户号,手机\n".encode("gbk"), "header: not UTF-8"),
    ],
)
def test_an_unusable_header_refuses_the_file(registry: AreaRegistry, data: bytes, message: str) -> None:
    with pytest.raises(CsvHeaderError, match=message.replace("(", r"\(").replace(")", r"\)")):
        CsvRows(io.BytesIO(data), registry)


def test_dry_run_import_summary_counts_by_reason(tmp_path: Path, registry: AreaRegistry) -> None:
    path = tmp_path / "r.csv"
    path.write_text(
        HEADER + "\n1,,13800138000,,,gulou,,,,\n1,,13800138000,,,gulou,,,,\n"
        "2,,bad,,,nowhere,,,,\n3,,,x@example.invalid,,,,zone-1,,\n",
        encoding="utf-8",
    )
    s = import_csv(path, registry, dry_run=True)
    assert (s.read, s.valid, s.rejected, s.produced) == (4, 2, 2, 0)
    assert dict(s.reasons) == {"duplicate_account": 1, "bad_phone": 1, "unknown_area": 1}
    assert [n for n, _ in s.rejects] == [3, 4]
    assert summary_line(s).startswith(
        "read 4, valid 2, rejected 2 (bad phone 1, duplicate account 1, unknown area 1), produced 0 (dry run), elapsed "
    )


# ------------------------------------------------------------------ the command (dry run: no broker)


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(residents_app, name="residents")
    return app


def test_command_dry_run_reports_lines_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + "\n1,张三,13800138000,,,gulou,,,,\n2,李四,139123,li.si@example.invalid,,gulou,,,,\n"
                    "1,王五,13800138001,,,gulou,,,,\n", encoding="utf-8")  # fmt: skip
    result = CliRunner().invoke(_cli(), ["residents", "import", str(path), "--dry-run"])
    assert result.exit_code == EXIT_REJECTED, result.output
    assert result.stderr.splitlines() == [
        "line 3: phone ****23: not a mainland mobile (11 digits, 13-19...) or an E.164 number (+country code)",
        "line 4: account 1: duplicate of line 2",
    ]
    assert result.stdout.startswith("read 3, valid 1, rejected 2 (bad phone 1, duplicate account 1), produced 0 (dry")
    for secret in ("张三", "李四", "王五", "139123", "li.si"):
        assert secret not in result.output


def test_command_dry_run_of_the_example_file_is_clean() -> None:
    result = CliRunner().invoke(_cli(), ["residents", "import", str(REPO / "examples" / "residents.csv"), "--dry-run"])
    assert result.exit_code == EXIT_OK, result.output
    assert result.stdout.startswith("read 20, valid 20, rejected 0, produced 0 (dry run)")


def test_command_refuses_a_bad_header_or_registry(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("account,telephone,zones\n1,13800138000,zone-1\n", encoding="utf-8")
    result = CliRunner().invoke(_cli(), ["residents", "import", str(path), "--dry-run"])
    assert result.exit_code == EXIT_ERROR
    assert "line 1: header: unknown column(s) 'telephone'" in result.stderr
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "areas.yaml").write_text("version: 1\ndistricts:\n  a: {}\n", encoding="utf-8")
    result = CliRunner().invoke(_cli(), ["residents", "import", str(path), "--dry-run", "--config", str(cfg)])
    assert result.exit_code == EXIT_ERROR
    assert f"{cfg / 'areas.yaml'}:3: districts.a.name: is required" in result.stderr


def test_command_uses_the_registry_of_config_dir(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "areas.yaml").write_text("version: 1\nzones:\n  west: {name: 西区}\n", encoding="utf-8")
    path = tmp_path / "r.csv"
    path.write_text("account,phone,zones\n1,13800138000,west\n2,13800138001,zone-1\n", encoding="utf-8")
    result = CliRunner().invoke(_cli(), ["residents", "import", str(path), "--dry-run", "--config", str(cfg)])
    assert result.exit_code == EXIT_REJECTED
    assert result.stderr.strip() == "line 3: unknown zone 'zone-1' (not in areas.yaml)"


# ------------------------------------------------------------------ the directory


def resident(account: str, *, d: str = "", c: str = "", z: str = "", phone: str | None = "+8613800000000",
             email: str | None = "x@example.invalid", sms: bool = True, mail: bool = True,
             lang: Literal["zh", "en"] = "zh") -> Resident:  # fmt: skip
    return Resident(
        account=account, name=f"n{account}", phone=phone, email=email, language=lang,
        districts=[x for x in d.split(";") if x], compounds=[x for x in c.split(";") if x],
        zones=[x for x in z.split(";") if x], consent={"sms": sms, "email": mail},
    )  # fmt: skip


@pytest.fixture
def directory() -> ResidentDirectory:
    d = ResidentDirectory()
    for r in [
        resident("A05", d="gulou;dongchangfu", c="yinhe-garden", z="zone-3"),
        resident("A01", d="gulou;dongchangfu", c="fenghuang-yuan", z="zone-3"),
        resident("A03", d="liuyuan;dongchangfu", c="yuxin-street-1", z="zone-4", sms=False),
        resident("A02", d="chiping", z="zone-8", phone=None),
        resident("A04", d="gulou;dongchangfu", c="yinhe-garden", z="zone-3", email=None, lang="en"),
        resident("A06", z="zone-3", sms=False, mail=False),
    ]:
        d.upsert(r)
    return d


def accounts(it: Iterable[Household]) -> list[str]:
    return [h.account for h in it]


def test_resolve_dedupes_overlapping_districts_compounds_and_zones(directory: ResidentDirectory) -> None:
    area = {"districts": ["gulou"], "compounds": ["yinhe-garden", "fenghuang-yuan"], "zones": ["zone-3"]}
    assert accounts(directory.resolve(area, "email")) == ["A01", "A05"]  # A04 has no e-mail, A06 opted out
    assert accounts(directory.resolve(area, "sms")) == ["A01", "A04", "A05"]
    assert directory.count(area, "sms") == 3


def test_resolve_excludes_opted_out_and_unreachable_households(directory: ResidentDirectory) -> None:
    area = {"districts": ["dongchangfu", "chiping"]}
    assert accounts(directory.resolve(area, "sms")) == ["A01", "A04", "A05"]  # A03 said no, A02 has no phone
    assert accounts(directory.resolve(area, "email")) == ["A01", "A02", "A03", "A05"]


def test_resolve_gives_address_language_and_name(directory: ResidentDirectory) -> None:
    [h] = directory.resolve({"accounts": ["A04"]}, "sms")
    assert h == ("A04", "sms", "+8613800000000", "en", "nA04")


def test_explicit_accounts_join_the_area_and_unknown_ones_are_listed(directory: ResidentDirectory) -> None:
    area = Area(zones=["zone-8"], accounts=["A03", "A01", "A01", "Z99"])
    assert accounts(directory.resolve(area, "email")) == ["A01", "A02", "A03"]
    assert directory.unknown_accounts(area) == ["Z99"]


def test_area_codes_match_in_any_case(directory: ResidentDirectory) -> None:
    assert accounts(directory.resolve({"districts": [" GuLou "]}, "sms")) == ["A01", "A04", "A05"]


def test_cursor_resume_continues_after_the_last_account(directory: ResidentDirectory) -> None:
    area = {"zones": ["zone-3", "zone-4", "zone-8"]}
    full = accounts(directory.resolve(area, "email"))
    assert full == ["A01", "A02", "A03", "A05"]
    assert accounts(directory.resolve(area, "email", after_account="A02")) == ["A03", "A05"]
    assert accounts(directory.resolve(area, "email", after_account="A025")) == ["A03", "A05"]  # not itself a target
    assert accounts(directory.resolve(area, "email", after_account="A05")) == []


def test_tombstone_and_move_update_the_index(directory: ResidentDirectory) -> None:
    directory.apply(b"A05", None)
    assert "A05" not in directory
    assert directory.members("compound", "yinhe-garden") == {"A04"}
    directory.apply(b"A01", resident("A01", d="chiping", z="zone-8").model_dump_json().encode())
    assert directory.members("zone", "zone-3") == {"A04", "A06"}
    assert accounts(directory.resolve({"districts": ["chiping"]}, "email")) == ["A01", "A02"]
    assert directory.remove("A01") and not directory.remove("A01")
    assert directory.members("district", "chiping") == {"A02"}
    assert len(directory) == 4


def test_a_household_removed_during_a_fan_out_is_skipped(directory: ResidentDirectory) -> None:
    it = directory.resolve({"zones": ["zone-3"]}, "sms")
    assert next(it).account == "A01"
    directory.remove("A04")
    assert accounts(it) == ["A05"]


def test_get_round_trips_and_apply_checks_the_key(directory: ResidentDirectory) -> None:
    got = directory.get("A03")
    assert got is not None and got.consent == {"sms": False, "email": True}
    assert sorted(got.districts) == ["dongchangfu", "liuyuan"]
    with pytest.raises(ValueError, match="key 'B1' is not the record's account 'A03'"):
        directory.apply(b"B1", got.model_dump_json().encode())
    with pytest.raises(ValueError, match="not a resident record"):
        directory.apply(b"A03", b'{"account": "A03", "language": "fr"}')


def test_unknown_channel_is_refused_at_once(directory: ResidentDirectory) -> None:
    with pytest.raises(ValueError, match="sms or email"):
        directory.resolve({"zones": ["zone-3"]}, "wecom")


_codes = st.sampled_from(["a", "b", "c", "d"])


@settings(max_examples=150, deadline=None)
@given(
    people=st.lists(
        st.tuples(st.integers(0, 30), st.lists(_codes, max_size=2), st.lists(_codes, max_size=2),
                  st.lists(_codes, max_size=2), st.booleans(), st.booleans(), st.booleans()),
        max_size=25,
    ),
    area=st.tuples(st.lists(_codes, max_size=2), st.lists(_codes, max_size=2), st.lists(_codes, max_size=2),
                   st.lists(st.integers(0, 35).map(lambda i: f"H{i:02d}"), max_size=3)),
    channel=st.sampled_from(["sms", "email"]),
    cursor=st.one_of(st.none(), st.integers(0, 31).map(lambda i: f"H{i:02d}")),
)  # fmt: skip
def test_resolve_equals_a_brute_force_filter(
    people: list[tuple[int, list[str], list[str], list[str], bool, bool, bool]],
    area: tuple[list[str], list[str], list[str], list[str]],
    channel: Literal["sms", "email"],
    cursor: str | None,
) -> None:
    d = ResidentDirectory()
    latest: dict[str, Resident] = {}
    for n, ds, cs, zs, sms, mail, has_phone in people:
        r = resident(f"H{n:02d}", d=";".join(ds), c=";".join(cs), z=";".join(zs), sms=sms, mail=mail,
                     phone="+8613800000000" if has_phone else None)  # fmt: skip
        d.upsert(r)  # later records replace earlier ones, like the compacted topic
        latest[r.account] = r
    ad, ac, az, acc = area
    want = sorted(
        r.account
        for r in latest.values()
        if (set(r.districts) & set(ad) or set(r.compounds) & set(ac) or set(r.zones) & set(az) or r.account in acc)
        and r.consent[channel]
        and (r.phone if channel == "sms" else r.email)
        and (cursor is None or r.account > cursor)
    )
    spec = {"districts": ad, "compounds": ac, "zones": az, "accounts": acc}
    assert accounts(d.resolve(spec, channel, after_account=cursor)) == want
    if cursor is None:
        assert d.count(spec, channel) == len(want)
