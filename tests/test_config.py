"""Config errors name file, line and key; `monitor check` reports them all at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from monitor.cli import app
from monitor.config import load_site
from monitor.errors import ConfigError

PROGRAM = """\
program: O1001
features:
  hole1_dia:
    kind: size
    signal: probe.hole1_dia
    nominal: 10.0
    lower: 9.99
    upper: 10.01
"""
STRONG = "9f86d081884c7d659a2feaa0"  # a dashboard token good enough for a network bind


def site(tmp: Path, body: str, program: str | None = PROGRAM) -> Path:
    (tmp / "programs").mkdir(exist_ok=True)
    if program is not None:
        (tmp / "programs" / "o1001.yaml").write_text(program)
    path = tmp / "site.yaml"
    path.write_text(body)
    return path


GOOD = """\
site: cell-3
machines:
  - id: vmc-01
    source: {type: opcua, endpoint: "opc.tcp://127.0.0.1:4840"}
    signals:
      spindle.load: "nsu=urn:sim;s=Spindle.Load"
      probe.hole1_dia: {node: "nsu=urn:sim;s=Macro.R500"}
  - id: lathe-02
    source: {type: mtconnect, url: "http://127.0.0.1:5000", device: Mazak03}
    signals:
      spindle.load: {type: LOAD, component: C}
"""


def issues(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_site(path, env or {})
    return [str(i) for i in info.value.issues]


def test_good_site_loads_with_programs(tmp_path: Path) -> None:
    loaded = load_site(site(tmp_path, GOOD), {})
    assert loaded.machine_ids() == ["vmc-01", "lathe-02"]
    assert list(loaded.programs) == ["O1001"]
    assert loaded.store_path == tmp_path / "monitor.db"


def test_bad_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = site(tmp_path, "site: x\nmachines:\n  - id: [unclosed\n")
    (msg,) = issues(path)
    assert msg.startswith(f"{path}:") and "YAML syntax" in msg


def test_unknown_key_names_line_and_path(tmp_path: Path) -> None:
    path = site(tmp_path, GOOD.replace("    source: {type: mtconnect", "    sorce: 1\n    source: {type: mtconnect"))
    (msg,) = issues(path)
    assert msg == f"{path}:9 machines[1].sorce: unknown key; check the spelling against configs/README.md"


def test_wrong_type_names_line_key_and_value(tmp_path: Path) -> None:
    bad = PROGRAM.replace("lower: 9.99", "lower: low")
    path = site(tmp_path, GOOD, bad)
    (msg,) = issues(path)
    assert msg.startswith(f"{tmp_path / 'programs' / 'o1001.yaml'}:7 features.hole1_dia.lower:")
    assert "valid number" in msg and "'low'" in msg


def test_missing_env_var_is_named(tmp_path: Path) -> None:
    path = site(tmp_path, GOOD + "sinks:\n  influx: {url: 'http://127.0.0.1:8428', token: '${INFLUX_TOKEN}'}\n")
    (msg,) = issues(path)
    assert msg.startswith(f"{path}:13 sinks.influx.token: environment variable INFLUX_TOKEN is not set")
    assert load_site(path, {"INFLUX_TOKEN": "s3cret"}).config.sinks.influx.token.get_secret_value() == "s3cret"  # type: ignore[union-attr]


def test_missing_program_folder(tmp_path: Path) -> None:
    path = site(tmp_path, GOOD + "programs: nowhere/\n", program=None)
    (msg,) = issues(path)
    assert msg.startswith(f"{path}:12 programs: program folder") and "does not exist" in msg


def test_all_errors_of_all_files_together(tmp_path: Path) -> None:
    body = GOOD.replace('endpoint: "opc.tcp://127.0.0.1:4840"', "endpoint: 4840").replace(
        "spindle.load: {type", "spindel.load: {type"
    )
    path = site(tmp_path, body, PROGRAM.replace("nominal: 10.0", "nominal: 11.0"))
    found = issues(path)
    assert len(found) == 3
    assert any("machines[0].source.endpoint" in m for m in found)
    assert any("machines[1].signals.spindel.load" in m and "not a canonical signal" in m for m in found)
    assert any("o1001.yaml:3 features.hole1_dia" in m and "outside" in m for m in found)


def test_dashboard_off_loopback_needs_token(tmp_path: Path) -> None:
    (msg,) = issues(site(tmp_path, GOOD + "dashboard: {bind: 0.0.0.0}\n"))
    assert "without a token" in msg


def test_check_command_exit_codes(tmp_path: Path) -> None:
    runner = CliRunner()
    good = site(tmp_path, GOOD)
    result = runner.invoke(app, ["check", "-c", str(good)])
    assert result.exit_code == 0, result.output
    assert "vmc-01" in result.output and "O1001" in result.output
    result = runner.invoke(app, ["check", "-c", str(good), "--json"])
    assert '"site": "cell-3"' in result.output
    bad = site(tmp_path, GOOD.replace("site: cell-3", "site: cell-3\nextra: 1"))
    result = runner.invoke(app, ["check", "-c", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:2 extra: unknown key" in result.output


def test_example_configs_load() -> None:
    root = Path(__file__).resolve().parents[1] / "configs"
    loaded = load_site(root / "site.yaml", {"DASHBOARD_TOKEN": STRONG, "INFLUX_TOKEN": "t"})
    assert loaded.machine_ids()
    for example in sorted(root.glob("*.yaml")):
        env = {"DASHBOARD_TOKEN": STRONG, "INFLUX_TOKEN": "t", "MQTT_PASSWORD": "p", "WEBHOOK_SECRET": "s"}
        env |= {"MONITOR_TOKEN_ALICE": "alice-" + STRONG, "MONITOR_TOKEN_BOB": "bob-" + STRONG}
        loaded = load_site(example, env)
        for machine in loaded.machine_ids():
            assert loaded.machine_kind(machine) == "mill" and loaded.probe_tools(machine) == {"99"}


def test_every_config_key_is_documented() -> None:
    from monitor.configdoc import embed

    readme = Path(__file__).resolve().parents[1] / "configs" / "README.md"
    text = readme.read_text(encoding="utf-8")
    assert embed(text) == text, "configs/README.md is out of date: run `python -m monitor.configdoc --write`"


@pytest.mark.parametrize(
    ("token", "fragment"),
    [
        ("' '", "whitespace"),
        ("x", "too weak"),
        ("aaaaaaaaaaaaaaaaaaaaaaaa", "too weak"),
        ("'1212121212121212'", "too weak"),
        ("' 0f3a9c1d7e5b2a48'", "whitespace"),
    ],
)
def test_dashboard_token_off_loopback_needs_minimum_strength(tmp_path: Path, token: str, fragment: str) -> None:
    (msg,) = issues(site(tmp_path, GOOD + f"dashboard: {{bind: 0.0.0.0, token: {token}}}\n"))
    assert f"{tmp_path / 'site.yaml'}:12 dashboard" in msg and fragment in msg


def test_dashboard_strong_token_off_loopback_and_any_token_on_loopback_load(tmp_path: Path) -> None:
    strong = load_site(site(tmp_path, GOOD + "dashboard: {bind: 0.0.0.0, token: 9f86d081884c7d659a2feaa0}\n"), {})
    assert strong.config.dashboard.token == "9f86d081884c7d659a2feaa0"
    local = load_site(site(tmp_path, GOOD + "dashboard: {bind: 127.0.0.1, token: x}\n"), {})
    assert local.config.dashboard.token == "x"
