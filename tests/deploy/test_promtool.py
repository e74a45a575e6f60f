"""The Prometheus files checked by Prometheus' own tool: syntax, the rules' unit tests, the config.

`promtool test rules` runs deploy/prometheus/rules.test.yml, where every alerting rule has cases that
must fire (labels and rendered annotations compared exactly) and look-alike cases that must not.
"""

from __future__ import annotations

import subprocess

from tests.deploy.conftest import KUBERNETES_DIR, PROMETHEUS_DIR, load_yaml


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=PROMETHEUS_DIR)


def test_rules_pass_promtool_check(promtool: str) -> None:
    result = run(promtool, "check", "rules", str(PROMETHEUS_DIR / "rules.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    # Nothing promtool warns about (it prints warnings but still exits 0 for some).
    assert "WARNING" not in (result.stdout + result.stderr).upper()


def test_rules_unit_tests_pass(promtool: str) -> None:
    result = run(promtool, "test", "rules", str(PROMETHEUS_DIR / "rules.test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alerting_rule_has_unit_tests_that_expect_it_to_fire_and_not_to_fire() -> None:
    rules = [r["alert"] for g in load_yaml(PROMETHEUS_DIR / "rules.yml")["groups"] for r in g["rules"]]
    tests = load_yaml(PROMETHEUS_DIR / "rules.test.yml")["tests"]
    cases = [case for t in tests for case in t.get("alert_rule_test", [])]
    fires = {c["alertname"] for c in cases if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    assert len(rules) == len(set(rules)) == 7
    assert set(rules) - fires == set(), "rules without a test in which they fire"
    assert set(rules) - quiet == set(), "rules without a test in which they stay quiet"
    assert (fires | quiet) - set(rules) == set(), "tests of rules that do not exist"


def test_config_passes_promtool_check_with_its_rule_files(promtool: str) -> None:
    # Run from another directory: the config names rules.yml relative to itself, not to the caller.
    result = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS_DIR / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout and "7 rules found" in result.stdout


def test_the_operator_rule_carries_exactly_the_tested_rules() -> None:
    """deploy/kubernetes/prometheusrule.yaml is generated from rules.yml; an edit to one alone fails."""
    resource = load_yaml(KUBERNETES_DIR / "prometheusrule.yaml")
    assert resource["kind"] == "PrometheusRule"
    assert resource["spec"]["groups"] == load_yaml(PROMETHEUS_DIR / "rules.yml")["groups"]
