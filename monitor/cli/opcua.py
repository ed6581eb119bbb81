"""OPC UA commands: ``monitor opcua-cert`` creates the client certificate a secure server asks for."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from monitor.cli._app import app, console, emit_json, err_console

__all__ = ["opcua_cert"]


def _default_uri() -> str:
    import socket

    return f"urn:{socket.gethostname()}:cnc-monitor"


@app.command("opcua-cert")
def opcua_cert(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for cert.der and key.pem.")] = Path("pki/own"),
    application_uri: Annotated[
        str | None,
        typer.Option("--uri", help="ApplicationUri put into the SubjectAltName (default urn:<host>:cnc-monitor)."),
    ] = None,
    hostname: Annotated[
        list[str] | None, typer.Option("--hostname", help="DNS name for the SubjectAltName (repeatable).")
    ] = None,
    days: Annotated[int, typer.Option(min=1, help="Validity in days.")] = 730,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing pair.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")] = False,
) -> None:
    """Create an OPC UA application certificate and key whose SubjectAltName URI is the ApplicationUri.

    Point the source's ``certificate``/``private_key`` at the files, and put cert.der into the
    server's trusted-client list (every server has its own way: UaExpert, Sinumerik, ...)."""
    from adapters.opcua.certs import generate_certificate

    cert, key = out / "cert.der", out / "key.pem"
    if not force and (cert.exists() or key.exists()):
        err_console.print(f"[bold red]error:[/] {cert} or {key} exists; use --force to replace the pair")
        raise typer.Exit(1)
    info = generate_certificate(
        cert, key, application_uri or _default_uri(), hostnames=tuple(hostname) if hostname else None, days=days
    )
    row = {
        "certificate": str(info.certificate),
        "private_key": str(info.private_key),
        "application_uri": info.application_uri,
        "thumbprint": info.thumbprint,
        "not_after": info.not_after.isoformat(),
    }
    if as_json:
        emit_json(row)
        return
    for k, v in row.items():
        console.print(f"{k:16} {v}", highlight=False)
