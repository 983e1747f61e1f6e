"""Message templates: every one renders for real alerts, the check catches what is broken, output is safe.

Real alerts come from ``waterwatch replay`` of ``examples/demo-events.jsonl`` plus a
few outage events that make the engine issue correction notices (moved and
cancelled outages), so every kind is rendered from an alert the engine produced.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment
from typer.testing import CliRunner

from notifiers.cli_templates import (
    VARIANTS,
    BudgetError,
    check_templates,
    load_budget,
    sample_event,
    templates_app,
)
from notifiers.sms import segments
from notifiers.templating import (
    CHANNELS,
    KINDS,
    LANGUAGES,
    REPO_TEMPLATES,
    MissingTemplate,
    Renderer,
    format_duration_for,
    format_local,
    is_html,
    kind_of,
    make_environment,
)
from waterwatch.cli import app as waterwatch_app
from waterwatch.core.config import load_config

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo-events.jsonl"
UNTIL = "2026-12-05T00:00:00+08:00"
runner = CliRunner()

ACCOUNT = "3700998877665"  # a resident's account number: must never reach any message
EXTRA_EVENTS = [
    {"id": "tpl-001", "type": "outage.planned", "time": "2026-11-27T08:30:00+08:00", "subject": "O-TPL-MOVED",
     "data": {"kind": "planned", "unit": "shuixing", "starts_at": "2026-12-02T09:00:00+08:00",
              "expected_end_at": "2026-12-02T17:00:00+08:00",
              "cause": "更换阀门，咨询施工员13912345678",
              "area": {"compounds": ["fenghuang-yuan"], "accounts": [ACCOUNT],
                       "description": "凤凰苑小区1-12号楼"}}},
    {"id": "tpl-002", "type": "outage.updated", "time": "2026-11-30T12:00:00+08:00", "subject": "O-TPL-MOVED",
     "data": {"starts_at": "2026-12-03T09:00:00+08:00", "expected_end_at": "2026-12-03T15:00:00+08:00",
              "reason": "施工队伍调整"}},
    {"id": "tpl-003", "type": "outage.planned", "time": "2026-11-27T08:40:00+08:00", "subject": "O-TPL-CANCELLED",
     "data": {"kind": "maintenance", "unit": "chengnan", "starts_at": "2026-12-02T10:00:00+08:00",
              "expected_end_at": "2026-12-02T12:00:00+08:00", "cause": "阀门检修",
              "area": {"zones": ["zone-9"], "accounts": [ACCOUNT]}}},
    {"id": "tpl-004", "type": "outage.cancelled", "time": "2026-11-30T15:00:00+08:00", "subject": "O-TPL-CANCELLED",
     "data": {"reason": "设备到货延迟"}},
]  # fmt: skip


@pytest.fixture(scope="module")
def config() -> Any:
    return load_config(None)


@pytest.fixture(scope="module")
def renderer(config: Any) -> Renderer:
    return Renderer(REPO_TEMPLATES, units=config.units, policy=config.policy)


@pytest.fixture(scope="module")
def real_alerts(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Every alert CloudEvent of ``waterwatch replay`` on the demo events plus the correction scenario."""
    events = tmp_path_factory.mktemp("events") / "events.jsonl"
    extra = [json.dumps({"specversion": "1.0", "source": "/test", **e}, ensure_ascii=False) for e in EXTRA_EVENTS]
    events.write_text(DEMO.read_text(encoding="utf-8").rstrip("\n") + "\n" + "\n".join(extra) + "\n", encoding="utf-8")
    result = runner.invoke(waterwatch_app, ["replay", str(events), "--until", UNTIL])
    assert result.exit_code == 0, result.output
    alerts = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert "0 rejected" in result.stderr
    return alerts


def test_the_replay_covers_every_kind(real_alerts: list[dict[str, Any]]) -> None:
    kinds = {kind_of(a) for a in real_alerts}
    assert kinds == set(KINDS), f"kinds without a real alert: {set(KINDS) - kinds}"
    corrections = [a for a in real_alerts if kind_of(a) == "notice.correction"]
    assert {bool(a["data"]["context"].get("cancelled")) for a in corrections} == {True, False}


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("channel", CHANNELS)
def test_every_template_renders_for_every_real_alert(
    renderer: Renderer, real_alerts: list[dict[str, Any]], language: str, channel: str
) -> None:
    for alert in real_alerts:
        out = renderer.render(alert, channel, language)
        assert out.kind == kind_of(alert) and out.language == language
        body = out.body
        assert body.strip(), alert["id"]
        assert "None" not in body and "Undefined" not in body, (alert["id"], body)
        if out.kind.startswith("alert.") or channel != "sms":  # a resident SMS has no room for the reference
            assert alert["data"]["matter_id"] in body, (alert["id"], body)
        if channel == "sms":
            assert out.text is not None and "\n" not in out.text
            budget = 3 if out.kind.startswith("notice.") else 2
            assert segments(out.text).segments <= budget, (alert["id"], out.text)
        elif channel == "wecom":
            assert out.markdown is not None and len(out.markdown.encode("utf-8")) <= 4096
            assert out.subject is None and out.html is None
        else:
            assert out.subject and "\n" not in out.subject
            assert out.html is not None and out.html.lstrip().startswith("<!DOCTYPE html>")
            assert out.text is not None and alert["data"]["matter_id"] in out.text


def test_times_are_local_and_for_people_and_durations_readable(renderer: Renderer) -> None:
    from zoneinfo import ZoneInfo

    sh = ZoneInfo("Asia/Shanghai")
    assert format_local("2026-11-29T01:00:00Z", "zh", sh) == "11月29日 09:00"
    assert format_local("2026-11-29T09:00:00+08:00", "en", sh) == "29 Nov 09:00"
    assert format_local("2027-01-02T09:00:00+08:00", "zh", sh, ref_year=2026) == "2027年1月2日 09:00"
    assert format_duration_for(43200, "zh") == "12小时"
    assert format_duration_for("6h 50m", "zh") == "6小时50分钟"
    assert format_duration_for(45 * 60, "en") == "45 minutes"
    assert format_duration_for(5 * 86400 + 3 * 3600, "en") == "5 days 3 hours"
    assert format_duration_for(94 * 3600 + 59 * 60, "zh") == "95小时"  # rounded to the hour from 10 h on
    assert format_duration_for(96 * 3600, "zh") == "4天"  # hours up to 4 days, as the measures count


def test_the_pre_outage_notice_reads_as_a_notice_to_residents(
    renderer: Renderer, real_alerts: list[dict[str, Any]]
) -> None:
    pre = next(a for a in real_alerts if a["id"] == "O-2026-1201-01/R19.1/pre_notice/v1/pre_notice")
    sms = renderer.render(pre, "sms").text
    assert sms == (
        "【聊城水务集团】停水通知：因更换 DN300 阀门 valve replacement，银河花园将于12月1日 09:00至16:00停水，"
        "请提前做好储水准备。咨询电话：12345"
    )
    assert renderer.render(pre, "sms", "en").text == (
        "Liaocheng Water Group: No water supply in 银河花园 from 1 Dec 09:00 to 16:00 "
        "(更换 DN300 阀门 valve replacement). Store water. Hotline 12345"
    )


def test_a_unit_alert_names_matter_rule_article_deadline_lateness_and_recipients(
    renderer: Renderer, real_alerts: list[dict[str, Any]]
) -> None:
    esc = next(a for a in real_alerts if a["id"] == "T-2026-0930-001/R15.2/resolve/v1/escalate_2")
    text = renderer.render(esc, "email").text or ""
    for expected in ("T-2026-0930-001", "R15.2（第15条第2项）", "办结时限：10月1日 04:40", "已超时：12小时",
                     "运营管理部、集团领导", "上报依据：R35(3)", "润达水业有限公司"):  # fmt: skip
        assert expected in text, (expected, text)
    md = renderer.render(esc, "wecom", "en").markdown or ""
    assert "R15.2 (Art. 15(2))" in md and "Overdue by: 12 hours" in md and "Group leadership" in md


def test_resident_notices_never_carry_other_residents_data_and_phones_are_masked(
    renderer: Renderer, real_alerts: list[dict[str, Any]]
) -> None:
    notices = [a for a in real_alerts if a["subject"].startswith("O-TPL-")]
    assert notices
    for alert in notices:
        for language in LANGUAGES:
            for channel in CHANNELS:
                out = renderer.render(alert, channel, language)
                for part in (out.text, out.html, out.markdown, out.subject):
                    if part:
                        assert ACCOUNT not in part
                        assert "13912345678" not in part
    moved = next(a for a in notices if a["type"] == "notice.due" and a["data"]["notice"] == "pre_outage")
    assert "139****5678" in (renderer.render(moved, "email").text or "")


def test_a_hotline_in_the_alert_context_wins_over_the_configured_one(renderer: Renderer) -> None:
    variant = next(v for v in VARIANTS if v.kind == "notice.restoration")
    event = sample_event(variant, unit="runda")
    assert "0635-12345678" in (renderer.render(event, "sms").text or "")
    del event["data"]["context"]["hotline"]
    assert (renderer.render(event, "sms").text or "").endswith("咨询电话：12345")


# ------------------------------------------------------------------ safety


def _with_summary(alert: dict[str, Any], summary: str) -> dict[str, Any]:
    alert = json.loads(json.dumps(alert))
    alert["data"]["context"]["summary"] = summary
    return alert


def test_html_is_autoescaped_also_inside_shared_macros_and_sms_is_not(
    renderer: Renderer, real_alerts: list[dict[str, Any]]
) -> None:
    alert = _with_summary(real_alerts[0], "<script>alert('x')</script> & co")
    html = renderer.render(alert, "email").html or ""
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; co" in html
    assert "<script>alert('x')</script> & co" in (renderer.render(alert, "email").text or "")
    # SMS is plain text: a cause with markup reaches the resident as written, unescaped
    notice = json.loads(json.dumps(next(a for a in real_alerts if kind_of(a) == "notice.pre_outage")))
    notice["data"]["context"]["cause"] = "<b>管道</b> & 阀门"
    sms = renderer.render(notice, "sms").text or ""
    assert "<b>管道</b> & 阀门" in sms and "&lt;" not in sms and "&amp;" not in sms
    notice_html = renderer.render(notice, "email").html or ""
    assert "&lt;b&gt;管道&lt;/b&gt; &amp; 阀门" in notice_html and "<b>管道</b>" not in notice_html


def test_wecom_markdown_in_values_is_neutralised(renderer: Renderer, real_alerts: list[dict[str, Any]]) -> None:
    alert = _with_summary(real_alerts[0], "[点我](http://evil.example) <@all> **急**\n### 标题")
    md = renderer.render(alert, "wecom").markdown or ""
    assert "[点我](" not in md and "<@all>" not in md and "**急**" not in md and "\n### 标题" not in md


def _copy_templates(tmp_path: Path) -> Path:
    target = tmp_path / "templates"
    shutil.copytree(REPO_TEMPLATES, target)
    return target


def test_templates_run_in_a_sandbox_that_blocks_attribute_access(
    tmp_path: Path, config: Any, real_alerts: list[dict[str, Any]]
) -> None:
    tdir = _copy_templates(tmp_path)
    (tdir / "zh" / "sms" / "alert.overdue.txt.j2").write_text("{{ ''.__class__.__mro__ }}", encoding="utf-8")
    r = Renderer(tdir, units=config.units, policy=config.policy)
    assert isinstance(r.env, SandboxedEnvironment)
    overdue = next(a for a in real_alerts if a["type"] == "alert.overdue")
    with pytest.raises(SecurityError):
        r.render(overdue, "sms")
    result = check_templates(tdir, units=config.units, policy=config.policy)
    assert not result.ok
    assert any("alert.overdue.txt.j2" in p.template and "sandbox" in p.reason for p in result.problems)


def test_templates_cannot_change_the_alert(tmp_path: Path, real_alerts: list[dict[str, Any]]) -> None:
    tdir = _copy_templates(tmp_path)
    (tdir / "zh" / "sms" / "alert.overdue.txt.j2").write_text("{{ notify.append('x') }}", encoding="utf-8")
    overdue = next(a for a in real_alerts if a["type"] == "alert.overdue")
    with pytest.raises(SecurityError):
        Renderer(tdir).render(overdue, "sms")


@pytest.mark.parametrize(
    "source",
    [
        "{{ notify.append('x') }}",  # a mutating method of a list
        "{{ names.update({}) }}",  # … of a dict, asked twice: the remembered answer is still no
        "{{ names.update({}) }}",
        "{{ m.matter.__globals__ }}",  # a macro's internals
        "{{ m.matter._func.__code__ }}",
        "{{ '{0.__class__}'.format(kind) }}",  # str.format reaching an internal attribute
        "{{ names.no_such_unit }}",  # a dict key that is not there: undefined, as before
        "{{ kind.no_such_attribute }}",  # a str has no items either
        "{{ names.pop('runda') }}",  # a mutating dict method found on the class
        "{{ context._raw }}",  # the unmasked context behind the lazily masked one
    ],
)
def test_the_fast_paths_of_the_sandbox_refuse_what_it_refuses(
    tmp_path: Path, real_alerts: list[dict[str, Any]], source: str
) -> None:
    """Macros and built-in methods are called without the per-call checks, and attribute safety
    is remembered per type: what a template may reach must not change."""
    tdir = _copy_templates(tmp_path)
    (tdir / "zh" / "sms" / "alert.overdue.txt.j2").write_text(source, encoding="utf-8")
    overdue = next(a for a in real_alerts if a["type"] == "alert.overdue")
    r = Renderer(tdir)
    for _ in range(2):
        with pytest.raises((SecurityError, UndefinedError)):
            r.render(overdue, "sms")


MACRO_CALLS = """\
{%- macro plain(a, b=2, c="c") -%}[{{ a }}|{{ b }}|{{ c }}]{%- endmacro -%}
{%- macro html_bits(v) -%}<b>{{ v }}</b>{%- endmacro -%}
{%- macro framed() -%}({{ caller() }}){%- endmacro -%}
{%- macro many() -%}{{ varargs|join(",") }};{{ kwargs|dictsort|join(",") }}{%- endmacro -%}
{{ plain(1) }}{{ plain(1, 3) }}{{ plain(1, c="x") }}{{ plain(a=4, b=5) }}{{ plain(1, 2, "z") }}
{{ html_bits("<i>") }}{% call framed() %}inner{% endcall %}{{ many(1, 2, k=3) }}
"""


@pytest.mark.parametrize("html", [False, True])
def test_macro_calls_on_the_fast_path_give_what_jinja_gives(tmp_path: Path, html: bool) -> None:
    """Defaults, keywords, ``caller``, ``varargs``/``kwargs`` and escaping as ``Macro.__call__`` does them."""
    name = "t.html.j2" if html else "t.txt.j2"

    def both(source: str) -> tuple[Any, Any]:
        (tmp_path / name).write_text(source, encoding="utf-8")
        results = []
        reference = SandboxedEnvironment(loader=FileSystemLoader(str(tmp_path)), undefined=StrictUndefined,
                                         autoescape=is_html, trim_blocks=True, lstrip_blocks=True)  # fmt: skip
        for env in (make_environment(tmp_path), reference):
            try:
                results.append(env.get_template(name).render())
            except Exception as exc:
                results.append((type(exc), str(exc)))
        return results[0], results[1]

    ours, reference = both(MACRO_CALLS)
    assert ours == reference
    assert isinstance(ours, str) and ("&lt;i&gt;" in ours) is html
    first = MACRO_CALLS.split("\n")[0]
    for bad in ("{{ plain() }}", "{{ plain(1, 2, 3, 4) }}", "{{ plain(1, d=4) }}", "{{ plain(1, 2, b=3) }}"):
        ours, reference = both(first + bad)
        assert ours == reference, bad


def test_the_kept_macros_see_each_message_s_own_variables(config: Any, real_alerts: list[dict[str, Any]]) -> None:
    """The shared modules are built once and kept: no value of one message may reach the next.

    The same messages rendered in opposite orders by two renderers, and each
    language's first ones by a renderer that renders nothing else, must be the same.
    """
    jobs = [(a, ch, lang) for lang in LANGUAGES for a in real_alerts[:60] for ch in CHANNELS]
    forward = Renderer(REPO_TEMPLATES, units=config.units, policy=config.policy)
    backward = Renderer(REPO_TEMPLATES, units=config.units, policy=config.policy)
    ahead = [forward.render(*job) for job in jobs]
    behind = [backward.render(*job) for job in reversed(jobs)][::-1]
    assert ahead == behind
    for i in (0, 1, len(jobs) // 2, len(jobs) // 2 + 1):
        alone = Renderer(REPO_TEMPLATES, units=config.units, policy=config.policy)
        assert alone.render(*jobs[i]) == ahead[i]


def test_an_e_mail_s_html_part_reuses_only_plain_text_rows(
    tmp_path: Path, config: Any, real_alerts: list[dict[str, Any]]
) -> None:
    """``memo`` keeps rows computed in text mode (plain text, escaped by the HTML part when printed)
    and never rows computed in HTML mode; an HTML part that finds nothing kept computes its own."""
    from markupsafe import Markup

    from notifiers.templating import _Memo

    memo = _Memo()
    assert memo.keep("a", [("x", "<b>"), None]) == [("x", "<b>"), None] and memo.get("a") == [("x", "<b>"), None]
    assert memo.keep("b", [("x", Markup("&lt;b&gt;"))]) and memo.get("b") is None
    tdir = _copy_templates(tmp_path)
    for path in (tdir / "zh" / "email").glob("alert.*.txt.j2"):  # text parts without the rows
        path.write_text("{{ m.gist() }}\n", encoding="utf-8")
    alone = Renderer(tdir, units=config.units, policy=config.policy)
    shared = Renderer(REPO_TEMPLATES, units=config.units, policy=config.policy)
    alerts = [a for a in real_alerts if a["type"].startswith("alert.")]
    hostile = dict(alerts[0], data={**alerts[0]["data"], "context": {**alerts[0]["data"].get("context", {}),
                                                                     "summary": "<script>&amp;\"'"}})  # fmt: skip
    for alert in [*alerts, hostile]:
        assert alone.render(alert, "email").html == shared.render(alert, "email").html
    assert "&lt;script&gt;&amp;amp;" in shared.render(hostile, "email").html


def test_renders_in_several_threads_do_not_mix(config: Any, real_alerts: list[dict[str, Any]]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    r = Renderer(REPO_TEMPLATES, units=config.units, policy=config.policy)
    jobs = [(a, ch) for a in real_alerts[:60] for ch in CHANNELS]
    expected = [r.render(a, ch) for a, ch in jobs]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            assert list(pool.map(lambda job: r.render(*job), jobs)) == expected


def test_a_template_that_imports_the_shared_macros_itself_renders_the_same(
    tmp_path: Path, config: Any, real_alerts: list[dict[str, Any]]
) -> None:
    tdir = _copy_templates(tmp_path)
    for path in (tdir / "zh" / "email").glob("alert.*.j2"):
        path.write_text('{% import "zh/_common.j2" as m with context %}\n' + path.read_text(encoding="utf-8"),
                        encoding="utf-8")  # fmt: skip
    own = Renderer(tdir, units=config.units, policy=config.policy)
    shared = Renderer(REPO_TEMPLATES, units=config.units, policy=config.policy)
    alerts = [a for a in real_alerts if a["type"].startswith("alert.")]
    assert alerts
    for alert in alerts:
        a, b = own.render(alert, "email"), shared.render(alert, "email")
        assert (a.subject, a.text, a.html) == (b.subject, b.text, b.html)


# ------------------------------------------------------------------ the check


def test_check_passes_on_the_project_templates(config: Any) -> None:
    result = check_templates(REPO_TEMPLATES, units=config.units, policy=config.policy)
    assert result.ok, "\n".join(map(str, result.problems))
    assert len(result.rows) == len(LANGUAGES) * len(CHANNELS) * len(KINDS)
    assert all(r.ok and r.samples >= 2 for r in result.rows)
    assert not result.warnings


def test_a_template_with_a_missing_variable_fails_the_check(tmp_path: Path, config: Any) -> None:
    tdir = _copy_templates(tmp_path)
    broken = tdir / "en" / "sms" / "alert.overdue.txt.j2"
    source = broken.read_text(encoding="utf-8")
    broken.write_text(source + "{{ matter_idd }}\n", encoding="utf-8")
    line = len(source.splitlines()) + 1
    result = check_templates(tdir, units=config.units, policy=config.policy)
    assert not result.ok
    problem = next(p for p in result.problems if "matter_idd" in p.reason)
    assert problem.template == f"{broken}:{line}"
    assert problem.reason.startswith("undefined variable")
    bad_rows = [r for r in result.rows if not r.ok]
    assert [(r.language, r.channel, r.kind) for r in bad_rows] == [("en", "sms", "alert.overdue")]


def test_a_missing_variable_in_a_shared_macro_is_reported_in_the_macro_file(tmp_path: Path) -> None:
    tdir = _copy_templates(tmp_path)
    common = tdir / "zh" / "_common.j2"
    common.write_text(
        common.read_text(encoding="utf-8").replace("{% macro late_note(short=false) %}",
                                                   "{% macro late_note(short=false) %}{{ oops }}"),
        encoding="utf-8",
    )  # fmt: skip
    result = check_templates(tdir)
    assert any(p.template.startswith(str(common)) and "oops" in p.reason for p in result.problems)


def test_syntax_errors_and_missing_templates_fail_the_check(tmp_path: Path) -> None:
    tdir = _copy_templates(tmp_path)
    (tdir / "zh" / "email" / "alert.warning.subject.txt.j2").write_text("{% if %}\n", encoding="utf-8")
    (tdir / "en" / "wecom" / "notice.restoration.md.j2").unlink()
    result = check_templates(tdir)
    reasons = [str(p) for p in result.problems]
    assert any("zh/email/alert.warning.subject.txt.j2:1" in r and "syntax error" in r for r in reasons), reasons
    assert any("en/wecom/notice.restoration.md.j2" in r and "missing template" in r for r in reasons), reasons


def test_there_is_no_fallback_to_the_other_language(tmp_path: Path, real_alerts: list[dict[str, Any]]) -> None:
    tdir = _copy_templates(tmp_path)
    (tdir / "en" / "sms" / "notice.restoration.txt.j2").unlink()
    restoration = next(a for a in real_alerts if kind_of(a) == "notice.restoration")
    r = Renderer(tdir)
    assert r.render(restoration, "sms", "zh").text
    with pytest.raises(MissingTemplate, match=r"en/sms/notice\.restoration\.txt\.j2"):
        r.render(restoration, "sms", "en")


def test_sms_and_wecom_budgets_are_enforced(tmp_path: Path, config: Any) -> None:
    result = check_templates(REPO_TEMPLATES, sms_budget=1, units=config.units, policy=config.policy)
    assert any("SMS over budget" in p.reason for p in result.problems)
    tdir = _copy_templates(tmp_path)
    (tdir / "budget.yaml").write_text(
        "version: 1\nsms_segments: {resident_notice: 3, unit_alert: 2, alert.escalation: 1}\n"
        "wecom_markdown_bytes: 600\n",
        encoding="utf-8",
    )
    result = check_templates(tdir, units=config.units, policy=config.policy)
    reasons = [str(p) for p in result.problems]
    assert any("alert.escalation.txt.j2" in r and "SMS over budget" in r for r in reasons)
    assert not any("alert.overdue.txt.j2" in r and "SMS over budget" in r for r in reasons)
    assert any(".md.j2" in r and "WeCom markdown over budget" in r for r in reasons)


def test_budget_file_is_validated(tmp_path: Path) -> None:
    assert load_budget(REPO_TEMPLATES).sms_segments("notice.pre_outage") == 3
    assert load_budget(REPO_TEMPLATES).sms_segments("alert.overdue") == 2
    assert load_budget(REPO_TEMPLATES, 5).sms_segments("alert.overdue") == 5
    (tmp_path / "budget.yaml").write_text("sms_segments: {unit_alerts: 2}\n", encoding="utf-8")
    with pytest.raises(BudgetError, match="unit_alerts"):
        load_budget(tmp_path)
    (tmp_path / "budget.yaml").write_text("wecom_markdown_bytes: 5000\n", encoding="utf-8")
    with pytest.raises(BudgetError, match="4096"):
        load_budget(tmp_path)


def test_check_command_prints_a_table_and_exits_1_with_file_and_reason(tmp_path: Path) -> None:
    ok = runner.invoke(templates_app, ["check"], terminal_width=220)
    assert ok.exit_code == 0, ok.output
    assert "zh/sms/alert.overdue.txt.j2" in ok.stdout and "UCS-2" in ok.stdout and "OK 60 messages" in ok.stdout
    tdir = _copy_templates(tmp_path)
    broken = tdir / "zh" / "wecom" / "alert.reminder.md.j2"
    broken.write_text("{{ nope }}", encoding="utf-8")
    bad = runner.invoke(templates_app, ["check", "--dir", str(tdir)], terminal_width=220)
    assert bad.exit_code == 1
    assert str(broken) in bad.stderr and "undefined variable" in bad.stderr and "FAILED" in bad.stderr
