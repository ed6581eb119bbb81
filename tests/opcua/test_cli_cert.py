"""`monitor opcua-cert` writes a usable pair whose SubjectAltName URI is the ApplicationUri."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from typer.testing import CliRunner

from adapters.opcua.certs import application_uri_of, load_certificate
from monitor.cli import app


def test_opcua_cert_creates_matching_pair(tmp_path: Path) -> None:
    out = tmp_path / "own"
    args = ["opcua-cert", "--out", str(out), "--uri", "urn:shop:cell3:monitor", "--hostname", "mon01", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    row = json.loads(result.output)
    assert row["application_uri"] == "urn:shop:cell3:monitor"
    cert = load_certificate(out / "cert.der")
    assert application_uri_of(cert) == "urn:shop:cell3:monitor"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mon01"]
    key = load_pem_private_key((out / "key.pem").read_bytes(), password=None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]
    assert (out / "key.pem").stat().st_mode & 0o077 == 0

    again = CliRunner().invoke(app, ["opcua-cert", "--out", str(out)])
    assert again.exit_code == 1 and "--force" in again.output
