"""Configuration: one typed object; every bad value stops synthesis with one clear line."""

import copy
import json
import os
import subprocess
import sys

import pytest

from stacks.config import ConfigError, load_config
from tests.infra.synth import ROOT, cdk_context


def context_with(stage="dev", **stage_overrides):
    context = copy.deepcopy(cdk_context())
    context["stage"] = stage
    if stage in context["fleetwarden"]["stages"]:
        context["fleetwarden"]["stages"][stage].update(stage_overrides)
    return context


def test_defaults_from_cdk_json():
    config = load_config(context_with())
    stage = config.stage
    assert (stage.name, stage.prefix, stage.stack_prefix) == ("dev", "fleetwarden-dev", "Fleetwarden-dev")
    assert stage.iot_log_level == "ERROR"
    assert stage.tls_security_policy == "IoTSecurityPolicy_TLS13_1_3_2022_10"
    assert stage.owns_account_singletons is False
    assert load_config(context_with("prod")).stage.owns_account_singletons is True
    assert config.stage_names == ("dev", "prod")


def test_missing_stage_defaults_to_dev():
    context = context_with()
    del context["stage"]
    assert load_config(context).stage.name == "dev"


def test_only_stage_owns_singletons_when_no_prod():
    context = {"stage": "lab", "fleetwarden": {"stages": {"lab": {}}}}
    assert load_config(context).stage.owns_account_singletons is True


def test_stage_in_its_own_account_can_own_singletons():
    assert load_config(context_with(owns_account_singletons=True)).stage.owns_account_singletons is True
    assert load_config(context_with("prod", owns_account_singletons=False)).stage.owns_account_singletons is False


def test_values_are_normalised_and_limits_grouped():
    stage = load_config(context_with(iot_log_level="info", max_messages_per_window=7,
                                     max_established_tcp_connections=0)).stage
    assert stage.iot_log_level == "INFO"
    assert (stage.limits.messages, stage.limits.established_tcp_connections) == (7, 0)
    assert stage.limits.disconnects == 10  # the default
    assert stage.ca_certificate_pem is None and stage.declared_devices == ()


@pytest.mark.parametrize("detect,window", [("builtin", 60), ("defender", 1800), ("defender", 3600),
                                           ("both", 900)])
def test_detection_window_each_source_takes(detect, window):
    stage = load_config(context_with(detect=detect, detection_window_seconds=window)).stage
    assert (stage.detect, stage.detection_window_seconds) == (detect, window)


def test_alerts_have_their_own_size_limit_defaulting_to_what_the_alert_path_takes():
    """The alert processor reads objects up to MAX_ALERT_BYTES (256 KiB); IoT Core refuses a
    PUBLISH payload over 128 KB ("AWS IoT Core endpoints and quotas"), so that is the default."""
    stage = load_config(context_with()).stage
    assert (stage.max_alert_bytes, stage.max_telemetry_bytes) == (131_072, 8192)
    assert load_config(context_with(max_alert_bytes=65_536)).stage.max_alert_bytes == 65_536


BAD_VALUES = [
    # (stage, overrides, words the one-line message must contain)
    ("staging", {}, ["stage = 'staging'", "dev, prod"]),
    ("dev", {"log_retention_days": -5}, ["stages.dev.log_retention_days = -5", "positive"]),
    ("dev", {"log_retention_days": 45}, ["stages.dev.log_retention_days = 45", "30, 60"]),
    ("dev", {"trail_retention_days": 0}, ["stages.dev.trail_retention_days = 0", "positive"]),
    ("dev", {"ops_email": "ops-at-example"}, ["stages.dev.ops_email = 'ops-at-example'", "email"]),
    ("dev", {"iot_log_level": "LOUD"}, ["stages.dev.iot_log_level = 'LOUD'", "DEBUG, INFO, WARN, ERROR"]),
    ("dev", {"tls_security_policy": "TLS10"}, ["tls_security_policy", "IoTSecurityPolicy_TLS13_1_3_2022_10"]),
    ("dev", {"account": "12345"}, ["stages.dev.account", "12-digit"]),
    ("dev", {"log_retention": 30}, ["stages.dev.log_retention is not a known setting"]),
    ("dev", {"termination_protection": "yes"}, ["termination_protection", "true or false"]),
    ("dev", {"owns_account_singletons": 1}, ["owns_account_singletons", "true or false"]),
    ("dev", {"serial_pattern": "[a-z]+"}, ["serial_pattern", "anchored"]),
    ("dev", {"serial_pattern": "^([a-z]+$"}, ["serial_pattern", "not a valid regular expression"]),
    # A serial is a thing name, topic level and S3 key segment: only A-Z a-z 0-9 _ - may be matchable.
    ("dev", {"serial_pattern": "^SN:[0-9]{4}$"}, [r"stages.dev.serial_pattern = '^SN:[0-9]{4}$' can match "
                                                  "':' (U+003A)", "only A-Z, a-z, 0-9, '_' and '-'"]),
    ("dev", {"serial_pattern": r"^SN\.[0-9]{4}$"}, ["serial_pattern", "can match '.' (U+002E)"]),
    ("dev", {"serial_pattern": "^SN [0-9]{4}$"}, ["serial_pattern", "can match ' ' (U+0020)"]),
    ("dev", {"serial_pattern": "^[a-z]+/[0-9]+$"}, ["serial_pattern", "can match '/' (U+002F)"]),
    ("dev", {"provisioning_token_ttl_minutes": 0}, ["provisioning_token_ttl_minutes = 0", "1 to 1440"]),
    ("dev", {"ca_certificate_file": "nope.pem"}, ["ca_certificate_file = 'nope.pem'", "no such file"]),
    ("dev", {"declared_devices": {"a": 1}}, ["declared_devices must be a list"]),
    ("dev", {"detect": "x"}, ["stages.dev.detect = 'x' is not allowed; use one of: defender, builtin, both"]),
    ("dev", {"detection_window_seconds": 30}, ["detection_window_seconds = 30", "60, 300, 600, 900"]),
    # Device Defender takes 300, 600, 900, 1800 or 3600 s; Lambda tumbling windows stop at 900 s.
    ("dev", {"detection_window_seconds": 60}, [
        "stages.dev.detection_window_seconds = 60 is not allowed with detect = 'both'",
        "use one of: 300, 600, 900"]),
    ("dev", {"detect": "defender", "detection_window_seconds": 60}, [
        "detection_window_seconds = 60", "detect = 'defender'", "300, 600, 900, 1800, 3600"]),
    ("dev", {"detect": "builtin", "detection_window_seconds": 1800}, [
        "detection_window_seconds = 1800", "detect = 'builtin'", "60, 300, 600, 900"]),
    ("dev", {"max_alert_bytes": 262_144}, ["stages.dev.max_alert_bytes = 262144", "256 to 131072"]),
    ("dev", {"max_alert_bytes": "big"}, ["max_alert_bytes = 'big'", "whole number"]),
    ("dev", {"max_disconnects_per_window": True}, ["max_disconnects_per_window = True", "1 to 1000000"]),
    ("dev", {"declared_devices_cap": 1001}, ["declared_devices_cap = 1001", "0 to 1000"]),
    ("dev", {"classifier_url": "http://x"}, ["classifier_url = 'http://x'", "https:// URL"]),
    ("dev", {"exempt_group": "lab benches"}, ["exempt_group = 'lab benches'", "thing group name"]),
    ("dev", {"iot_log_level": "loud"}, ["iot_log_level = 'LOUD'", "DISABLED"]),
]


@pytest.mark.parametrize("stage,overrides,words", BAD_VALUES)
def test_bad_value_raises_one_line_naming_key_and_allowed(stage, overrides, words):
    with pytest.raises(ConfigError) as caught:
        load_config(context_with(stage, **overrides))
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message


@pytest.mark.parametrize("pattern,unsafe", [
    (r"^SN-\d{4}$", "'٠' (U+0660)"),  # \d is any Unicode decimal digit
    (r"^[\w-]{4,64}$", "'ª' (U+00AA)"),  # \w: Unicode letters
    (r"^(?i:sn)-[0-9]{4}$", "'ſ' (U+017F)"),  # IGNORECASE: 's' also matches LATIN SMALL LETTER LONG S
    (r"^[^:]{4,64}$", "'\\x00' (U+0000)"),  # a negated class
    (r"^SN-.{4}$", "'\\x00' (U+0000)"),
    (r"^(?:SN|X:)-[0-9]+$", "':' (U+003A)"),  # in one alternative only
    (r"^(a)(?i:\1)[0-9:]?$", "':' (U+003A)"),  # in an optional tail
])
def test_serial_pattern_is_refused_for_any_matchable_character_outside_the_alphabet(pattern, unsafe):
    with pytest.raises(ConfigError) as caught:
        load_config(context_with(serial_pattern=pattern))
    message = str(caught.value)
    assert message.startswith(f"stages.dev.serial_pattern = {pattern!r} can match {unsafe}")
    assert "\n" not in message


@pytest.mark.parametrize("pattern", [
    r"^[A-Za-z0-9][A-Za-z0-9_-]{3,63}$", r"^SN-[0-9]{4,12}$", r"^(?a:SN-\d{4})$", r"^(?a:[\w-]{4,64})$",
    r"^(?:SN|GW)_[0-9A-F]{8}$", r"^(?i:[a-f0-9]){8}$", r"^(?=SN)[A-Z0-9-]{4,20}(?<!-)$",
])
def test_serial_patterns_within_the_alphabet_are_accepted(pattern):
    assert load_config(context_with(serial_pattern=pattern)).stage.serial_pattern == pattern


def run_app(context):
    """Run app.py the way the CDK CLI does: context arrives in CDK_CONTEXT_JSON."""
    env = {**os.environ, "CDK_CONTEXT_JSON": json.dumps(context), "CDK_OUTDIR": "/nonexistent"}
    return subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("stage,overrides,words", [
    BAD_VALUES[0],  # unknown stage
    BAD_VALUES[1],  # negative retention
    BAD_VALUES[4],  # malformed email
    BAD_VALUES[5],  # unknown log level
])
def test_app_exits_nonzero_with_one_clear_line_and_no_traceback(stage, overrides, words):
    result = run_app(context_with(stage, **overrides))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("fleetwarden:")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fleetwarden: configuration error: ")
    for word in words:
        assert word in lines[0]


def test_fleet_indexing_is_on_in_the_owning_stage_only():
    assert load_config(context_with("prod")).stage.fleet_indexing is True
    assert load_config(context_with("dev")).stage.fleet_indexing is False
    assert load_config(context_with("prod", fleet_indexing=False)).stage.fleet_indexing is False
    # A stage in an account of its own owns the singletons, fleet indexing included.
    assert load_config(context_with("dev", owns_account_singletons=True)).stage.fleet_indexing is True


def test_fleet_indexing_outside_the_owning_stage_is_refused():
    with pytest.raises(ConfigError, match="stages.dev.fleet_indexing = true: fleet indexing is account-wide"):
        load_config(context_with("dev", fleet_indexing=True))
    with pytest.raises(ConfigError, match="fleet_indexing"):
        load_config(context_with("prod", fleet_indexing="yes"))
