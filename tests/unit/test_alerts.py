"""The alerting rules, the Prometheus config and the Grafana dashboard under deploy/.

promtool checks the rules and the config and runs the rules' unit tests
(deploy/prometheus/alerts.test.yml); every alert must fire in one of those tests and stay quiet
in another. promtool is required, never skipped: without it these tests fail and say how to
install it (Debian's `prometheus` package ships it; `make test` installs it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = "deploy/prometheus/alerts.yml"
RULE_TESTS = "deploy/prometheus/alerts.test.yml"
CONFIG = "deploy/prometheus/prometheus.yml"
DASHBOARD = "deploy/grafana/dashboards/jobs-read-model.json"
# The scrape jobs, named after the compose services; TargetDown names them.
SCRAPE_JOBS = {"projector", "api"}
DATASOURCE_VARIABLE = "datasource"
DATASOURCE_UIDS = {"${datasource}", "$datasource"}
READ_ROUTE_MATCHER = 'route="/v1/jobs/{id}"'
SEVERITIES = {"warning", "critical"}
PROMTOOL_TIMEOUT_SECONDS = 120


def promtool(*args: str) -> str:
    """Run promtool from the repository root; fail with its output unless it exits 0."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not on PATH, so the alerting rules cannot be checked: install it "
            "(Debian/Ubuntu: apt-get install prometheus; macOS: brew install prometheus), "
            "or run `make test`, which installs it",
            pytrace=False,
        )
    done = subprocess.run(
        [path, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=PROMTOOL_TIMEOUT_SECONDS,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(args)} exited {done.returncode}:\n{output}"
    return output


def load_yaml(relative: str) -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / relative).read_text(encoding="utf-8"))
    assert isinstance(loaded, dict), f"{relative}: not a YAML mapping"
    return loaded


def alert_rules() -> dict[str, dict[str, Any]]:
    rules: dict[str, dict[str, Any]] = {}
    for group in load_yaml(RULES)["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                assert rule["alert"] not in rules, f"alert {rule['alert']} defined twice"
                rules[rule["alert"]] = rule
    return rules


def rule_test_cases() -> Iterator[dict[str, Any]]:
    for test in load_yaml(RULE_TESTS)["tests"]:
        yield from test.get("alert_rule_test") or []


def panels(container: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, the ones inside (collapsed) rows included."""
    for panel in container.get("panels") or []:
        yield panel
        yield from panels(panel)


def datasource_references(node: Any, where: str) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield f"{where}.datasource", value
            else:
                yield from datasource_references(value, f"{where}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from datasource_references(item, f"{where}[{index}]")


def dashboard() -> dict[str, Any]:
    loaded = json.loads((ROOT / DASHBOARD).read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def test_rules_are_valid() -> None:
    output = promtool("check", "rules", RULES)
    assert f"SUCCESS: {len(alert_rules())} rules found" in output, output


def test_config_is_valid_and_loads_the_rules() -> None:
    # The config names no compose-internal file paths (targets are host:port, which promtool
    # does not resolve), so it checks as it is, the rule file it loads included.
    output = promtool("check", "config", CONFIG)
    assert "SUCCESS: 1 rule files found" in output, output
    config = load_yaml(CONFIG)
    # Relative to the config file: /etc/prometheus/alerts.yml in the compose service.
    assert config["rule_files"] == ["alerts.yml"]
    assert {job["job_name"] for job in config["scrape_configs"]} == SCRAPE_JOBS


def test_rule_unit_tests_pass() -> None:
    assert load_yaml(RULE_TESTS)["rule_files"] == ["alerts.yml"]
    output = promtool("test", "rules", RULE_TESTS)
    assert "SUCCESS" in output, output


def test_every_alert_fires_in_a_test_and_stays_quiet_in_another() -> None:
    alerts = set(alert_rules())
    cases = list(rule_test_cases())
    tested = {case["alertname"] for case in cases}
    fired = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    # An unknown name would pass `exp_alerts: []` without testing anything.
    assert tested <= alerts, f"tests of alerts that do not exist: {sorted(tested - alerts)}"
    assert alerts <= fired, f"alerts no test sees firing: {sorted(alerts - fired)}"
    assert alerts <= quiet, f"alerts no test sees quiet: {sorted(alerts - quiet)}"
    for case in cases:
        for expected in case.get("exp_alerts") or []:
            assert expected.get("exp_labels", {}).get("severity") in SEVERITIES, case


def test_every_alert_says_how_long_how_bad_and_what_to_check() -> None:
    for name, rule in alert_rules().items():
        assert "for" in rule, f"{name}: no `for:`"
        assert rule.get("labels", {}).get("severity") in SEVERITIES, f"{name}: severity"
        annotations = rule.get("annotations", {})
        for key in ("summary", "description"):
            assert str(annotations.get(key, "")).strip(), f"{name}: no {key} annotation"
    freshness = alert_rules()["FreshnessP99OverObjective"]
    assert "100 ms" in freshness["annotations"]["objective"]


def test_dashboard_reads_through_the_datasource_variable() -> None:
    board = dashboard()
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert DATASOURCE_VARIABLE in variables, "no datasource template variable"
    variable = variables[DATASOURCE_VARIABLE]
    assert variable["type"] == "datasource"
    assert variable["query"] == "prometheus"

    every = list(panels(board))
    assert every, "no panels"
    for panel in every:
        if panel.get("type") == "row":
            continue
        assert panel.get("datasource"), f"panel {panel.get('title')!r}: no datasource"
        for target in panel.get("targets") or []:
            assert target.get("datasource"), f"panel {panel.get('title')!r}: target without one"
    references = list(datasource_references(board["panels"], "panels"))
    references += datasource_references(board.get("annotations", {}), "annotations")
    hard_coded = [
        (where, reference)
        for where, reference in references
        if not isinstance(reference, dict) or reference.get("uid") not in DATASOURCE_UIDS
    ]
    assert not hard_coded, f"datasources not taken from ${{datasource}}: {hard_coded}"


def test_read_latency_panel_leaves_out_long_polls() -> None:
    latency_exprs = [
        target["expr"]
        for panel in panels(dashboard())
        for target in panel.get("targets") or []
        if "api_request_seconds_bucket" in target.get("expr", "")
    ]
    assert latency_exprs, "no read latency panel"
    for expr in latency_exprs:
        # An exact match: the long-poll route ("/v1/jobs/{id}?wait") has a label of its own.
        assert READ_ROUTE_MATCHER in expr, expr
