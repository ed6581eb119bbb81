"""The command line starts without loading what only running commands need (measured in
bench/store_queries.py: ``monitor --help`` CPU time); here the behaviour: what ``--help`` imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

HEAVY = (
    "numpy",
    "scipy",
    "asyncio",
    "asyncua",
    "aiohttp",
    "pydantic",
    "monitor.config",
    "monitor.pipeline",
    "monitor.engine",
    "monitor.daemon",
    "monitor.detect.trend",
    "numba",
    "monitor.detect.kernels",
    "monitor.model",
    "monitor.store",
    "rich.console",
    "rich.markdown",
    "rich.traceback",
)
"""Detection (numpy, scipy, numba), OPC UA, HTTP, asyncio, the daemon's machinery, the domain model and
the store: loaded by the commands that use them; rich's console, markdown and traceback machinery
(typer's rich help): the help is plain text."""

_PROBE = """
import contextlib, io, json, sys
from monitor.cli import app
with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
    app(sys.argv[1:], prog_name="monitor")
print(json.dumps({"help": out.getvalue(), "loaded": sorted(m for m in sys.modules)}))
"""


def _start(*args: str) -> dict[str, Any]:
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", _PROBE, *args], cwd=root, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_help_lists_every_command_without_loading_detection_protocols_or_the_daemon() -> None:
    result = _start("--help")
    loaded = set(result["loaded"])
    assert not [m for m in HEAVY if m in loaded], [m for m in HEAVY if m in loaded]
    for command in ("run", "demo", "parts", "analyze", "tune", "report", "status", "discover"):
        assert command in str(result["help"])


def test_a_commands_help_shows_its_options_defaults_and_docs_without_loading_them_either() -> None:
    result = _start("parts", "--help")
    loaded = set(result["loaded"])
    assert not [m for m in HEAVY if m in loaded], [m for m in HEAVY if m in loaded]
    text = " ".join(str(result["help"]).split())
    assert "List recorded parts, newest last" in text  # the docstring
    assert "--capability" in text and "--last <int> How many of the most recent parts. [default: 20]" in text
    assert "[env var: MONITOR_CONFIG; default: configs/site.yaml]" in text


def test_a_command_still_finds_what_it_loads_on_first_use() -> None:
    result = _start("tune", "--chart", "ewma", "--lambda", "0.2", "--arl0", "370", "--json")
    assert "scipy" in set(result["loaded"])
    assert json.loads(str(result["help"]).splitlines()[-1])["chart"] == "ewma"


def test_reading_the_configuration_and_the_store_does_not_load_detection() -> None:
    """What `monitor parts`, `alerts`, `status` and `check` start with: the site's configuration (its
    detection settings included), the store's queries and the capability's report data, without
    scipy and the detectors."""
    probe = "import json, sys, monitor.config, monitor.queries, monitor.report; print(json.dumps(sorted(sys.modules)))"
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=True)
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    assert "monitor.detect.config" in loaded
    assert not {"scipy", "monitor.detect.trend", "monitor.engine"} & loaded
    # nor the adapters' asyncio machinery (the site file names a replay source's settings only), nor
    # the report's HTML and CSV renderers (a capability needs the report's data only)
    assert not {"asyncio", "adapters.base", "adapters.replay", "monitor.report.page", "monitor.report.table"} & loaded


def test_a_command_runs_in_an_application_of_that_command_alone_with_the_same_help_and_errors() -> None:
    """`monitor parts ...` builds the options of `parts` only (typer builds every registered command's
    on each call); what a user sees is the same as from the whole application."""
    import typer.main
    from typer.testing import CliRunner

    from monitor.cli import app, app_for

    assert app_for(["--help"]) is app and app_for([]) is app and app_for(["prts"]) is app
    for args in (["parts", "--help"], ["import", "--help"], ["store", "copy", "--help"], ["parts", "--last", "x"]):
        one = app_for(args)
        assert one is not app
        assert list(typer.main.get_command(one).commands) == [args[0]]  # type: ignore[attr-defined]
        alone, whole = CliRunner().invoke(one, args), CliRunner().invoke(app, args)
        assert (alone.exit_code, alone.output) == (whole.exit_code, whole.output)
    assert "--capability" in CliRunner().invoke(app_for(["parts"]), ["parts", "--help"]).output
    version = app_for(["--version"])
    assert not typer.main.get_command(version).commands  # type: ignore[attr-defined]
    assert CliRunner().invoke(version, ["--version"]).output == CliRunner().invoke(app, ["--version"]).output


_ALONE = """
import contextlib, io, json, sys
from monitor.cli import app_for
args = sys.argv[1:]
with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
    app_for(args)(args, prog_name="monitor")
print(json.dumps({"out": out.getvalue(), "loaded": sorted(m for m in sys.modules if m.startswith("monitor.cli."))}))
"""


def test_a_command_loads_the_module_that_registers_it_alone() -> None:
    """`monitor parts ...` imports monitor.cli.core, not the thirteen other command modules; the
    name-to-module table agrees with what the modules register."""
    from monitor.cli import _MODULE_OF, _command_name, _group_name, app

    registered = {_command_name(c): c.callback.__module__ for c in app.registered_commands if c.callback}
    for group in app.registered_groups:
        assert group.typer_instance is not None
        modules = {c.callback.__module__ for c in group.typer_instance.registered_commands if c.callback}
        assert len(modules) == 1, modules
        registered[_group_name(group)] = modules.pop()
    assert registered == _MODULE_OF

    root = Path(__file__).resolve().parents[1]
    for args, alone in (
        (["parts", "--help"], {"monitor.cli.core"}),
        (["store", "copy", "--help"], {"monitor.cli.store"}),
        (["--version"], set()),
        (["--help"], set(_MODULE_OF.values())),
    ):
        done = subprocess.run([sys.executable, "-c", _ALONE, *args], cwd=root, capture_output=True, text=True, check=True)
        result = json.loads(done.stdout.splitlines()[-1])
        shared = {"monitor.cli.core"} if alone - {"monitor.cli.core"} else set()  # the options other modules import
        assert set(result["loaded"]) - shared == {"monitor.cli._app", *alone} - shared, args
        assert result["out"], args
