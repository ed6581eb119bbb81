"""Open one OPC UA session the way a source asks: security, trust check, credentials, errors.

Every failure leaves as :class:`~monitor.errors.ConnectError`. Those a retry can cure (server
down, network, timeouts) are :class:`TransientConnectError`; the others (unknown server
certificate, wrong password, missing certificate file or environment variable, a policy the
server does not offer) need a person, so the adapter stops and says what to do.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from asyncua import Client, ua
from asyncua.crypto import security_policies, uacrypto
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from adapters.opcua.certs import application_uri_of, is_trusted, load_certificate, save_rejected
from adapters.opcua.config import OpcUaSource
from monitor.errors import ConnectError

__all__ = ["TransientConnectError", "close_quietly", "open_client", "security_file_problems"]

log = logging.getLogger(__name__)

_POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}
_MODES = {"Sign": ua.MessageSecurityMode.Sign, "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt}

_CREDENTIAL_CODES = {"BadUserAccessDenied", "BadIdentityTokenInvalid", "BadIdentityTokenRejected"}
_CERT_CODES = {
    "BadSecurityChecksFailed",
    "BadCertificateInvalid",
    "BadCertificateUntrusted",
    "BadCertificateUriInvalid",
    "BadCertificateUseNotAllowed",
    "BadCertificateTimeInvalid",
}
_SECURITY_CODES = {"BadSecurityModeRejected", "BadSecurityPolicyRejected"}


class TransientConnectError(ConnectError):
    """Raised when a connect attempt failed for a reason that may pass (server down, timeout)."""


def _status_name(exc: ua.UaStatusCodeError) -> str:
    return str(ua.StatusCode(exc.code).name)


async def close_quietly(client: Client, wait_s: float = 2.0) -> None:
    """Disconnect, tolerating a dead peer; a close must never hang the adapter or raise."""
    try:
        await asyncio.wait_for(client.disconnect(), wait_s)
    except (OSError, TimeoutError, ConnectionError, ua.UaError):
        log.debug("disconnect of %s failed; dropping the socket", client.server_url.geturl(), exc_info=True)
        client.disconnect_socket()


async def _server_certificate(source: OpcUaSource, mode: ua.MessageSecurityMode, policy_uri: str) -> bytes:
    probe = Client(source.endpoint, timeout=source.request_timeout_s)
    try:
        endpoints = await probe.connect_and_get_server_endpoints()
    except (OSError, TimeoutError, ConnectionError) as exc:
        raise TransientConnectError(f"{source.endpoint}: cannot list endpoints: {exc!r}") from exc
    except ua.UaError as exc:
        raise TransientConnectError(f"{source.endpoint}: cannot list endpoints: {exc}") from exc
    for ep in endpoints:
        if ep.SecurityPolicyUri == policy_uri and ep.SecurityMode == mode:
            data: bytes = ep.ServerCertificate
            return data
    offered = sorted({f"{ep.SecurityPolicyUri.rsplit('#', 1)[-1]}/{ep.SecurityMode.name}" for ep in endpoints})
    raise ConnectError(
        f"{source.endpoint} does not offer {source.security_policy}/{source.security_mode}; it offers: "
        f"{', '.join(offered)}. Change security_policy/security_mode in the site file."
    )


def _check_trust(source: OpcUaSource, der: bytes) -> None:
    assert source.trust_dir is not None
    cert: x509.Certificate = uacrypto.x509_from_der(der)
    if is_trusted(cert, source.trust_dir):
        return
    rejected_dir = source.rejected_dir or source.trust_dir.parent / "rejected"
    path = save_rejected(cert, rejected_dir)
    raise ConnectError(
        f"{source.endpoint}: server certificate is not trusted (subject {cert.subject.rfc4514_string()}); "
        f"it was saved to {path}; if this is the right server, move that file into {source.trust_dir}"
    )


def security_file_problems(source: OpcUaSource) -> list[str]:
    """What is missing of the files a secure source needs, each with what to do about it."""
    out = []
    for name, path in (("certificate", source.certificate), ("private_key", source.private_key)):
        if path is not None and not Path(path).is_file():
            out.append(
                f"{name} {path} does not exist; create the client certificate and key with "
                f"`monitor opcua-cert --out {Path(path).parent}` (cert.der, key.pem) and point certificate "
                "and private_key at them (relative paths are taken from the site file's folder)"
            )
    if source.trust_dir is not None and not Path(source.trust_dir).is_dir():
        rejected = source.rejected_dir or Path(source.trust_dir).parent / "rejected"
        out.append(
            f"trust_dir {source.trust_dir} does not exist; create the folder and copy the server's certificate "
            f"into it (an unknown server certificate is saved to {rejected} on the first connection, for review)"
        )
    return out


def _env(name: str, what: str) -> str:
    value = os.environ.get(name)
    if value is None:
        raise ConnectError(f"environment variable {name} (the OPC UA {what}) is not set")
    return value


async def _configure_security(client: Client, source: OpcUaSource) -> None:
    assert source.certificate is not None and source.private_key is not None
    for problem in await asyncio.to_thread(security_file_problems, source):
        raise ConnectError(problem)
    own = load_certificate(source.certificate)
    client.application_uri = source.application_uri or application_uri_of(own) or client.application_uri
    policy = _POLICIES[source.security_policy]
    mode = _MODES[source.security_mode]
    der = await _server_certificate(source, mode, policy.URI)
    _check_trust(source, der)
    first = uacrypto.x509_from_der(der).public_bytes(serialization.Encoding.DER)
    await client.set_security(
        policy,
        certificate=str(source.certificate),
        private_key=str(source.private_key),
        server_certificate=uacrypto.CertProperties(first, extension="der"),
        mode=mode,
    )


async def open_client(source: OpcUaSource) -> Client:
    """A fresh, connected client for ``source``; the caller closes it with :func:`close_quietly`."""
    # asyncua probes the server every watchdog interval and gives up on a probe after as long:
    # tie it to the request timeout so a busy host is not mistaken for a dead server
    client = Client(source.endpoint, timeout=source.request_timeout_s, watchdog_intervall=source.request_timeout_s)
    client.name = client.description = "cnc-monitor"
    if source.security_policy != "None":
        await _configure_security(client, source)
    if source.username_env is not None and source.password_env is not None:
        user = _env(source.username_env, "user name")
        client.set_user(user)
        client.set_password(_env(source.password_env, "password"))
    try:
        await client.connect(auto_reconnect=False)
    except ua.UaStatusCodeError as exc:
        client.disconnect_socket()
        name = _status_name(exc)
        if name in _CREDENTIAL_CODES:
            who = f"user from ${source.username_env}" if source.username_env else "anonymous access"
            raise ConnectError(f"{source.endpoint} refused the {who}: {name}; check the user name and password") from exc
        if name in _SECURITY_CODES:
            raise ConnectError(_security_refused(source, name)) from exc
        if name in _CERT_CODES:
            raise ConnectError(
                f"{source.endpoint} refused our client certificate {source.certificate}: {name}; "
                "add it to the server's trusted certificates"
            ) from exc
        raise TransientConnectError(f"{source.endpoint}: {name}") from exc
    except (OSError, TimeoutError, ConnectionError) as exc:
        client.disconnect_socket()
        raise TransientConnectError(f"{source.endpoint}: {exc!r}") from exc
    except ua.UaError as exc:
        client.disconnect_socket()
        if "No matching endpoints" in str(exc):  # asyncua: the server offers no endpoint with our policy/mode
            raise ConnectError(_security_refused(source, "no endpoint with this security")) from exc
        raise TransientConnectError(f"{source.endpoint}: {exc}") from exc
    return client


def _security_refused(source: OpcUaSource, name: str) -> str:
    if source.security_policy == "None":
        return (
            f"{source.endpoint} refuses connections without security ({name}); set security_policy "
            "(e.g. Basic256Sha256) and security_mode (Sign or SignAndEncrypt) with certificate, private_key "
            "and trust_dir in the machine's source (`monitor opcua-cert` creates the pair; docs/opcua.md, Security)"
        )
    return (
        f"{source.endpoint} refuses security_policy {source.security_policy} with security_mode "
        f"{source.security_mode} ({name}); choose a policy and mode the server offers (docs/opcua.md, Security)"
    )
