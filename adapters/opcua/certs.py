"""Application certificates for OPC UA security: create a pair, read its URI, decide trust.

OPC UA (Part 6 §6.2.2) wants the ApplicationUri of a client or server in the certificate's
SubjectAltName as a URI, and a server refuses a session whose ApplicationUri differs. So a pair
is made for one application URI, and the adapter takes its ApplicationUri from the certificate.

Trust is a folder of certificates (DER or PEM): a server certificate is trusted when it is in the
folder or is signed by a certificate in the folder. An unknown one is written to a ``rejected``
folder so an operator can review it and move it into the trust folder.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CertificateInfo",
    "application_uri_of",
    "generate_certificate",
    "is_trusted",
    "load_certificate",
    "save_rejected",
    "thumbprint",
]


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """What ``monitor opcua-cert`` made: where the files are and what the certificate says."""

    certificate: Path
    private_key: Path
    application_uri: str
    thumbprint: str
    not_after: dt.datetime


def generate_certificate(
    cert_path: Path,
    key_path: Path,
    application_uri: str,
    *,
    common_name: str = "cnc-monitor",
    hostnames: tuple[str, ...] | None = None,
    days: int = 365 * 2,
    key_size: int = 2048,
) -> CertificateInfo:
    """Write a self-signed application certificate (DER) and its RSA key (PEM, unencrypted).

    The SubjectAltName carries ``application_uri`` and the host names (default: this host and localhost), as OPC UA requires; key
    usages cover both client and server use so the same pair works for the simulator.
    """
    if hostnames is None:
        hostnames = tuple(dict.fromkeys((socket.gethostname(), "localhost")))
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    san: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri)]
    san.extend(x509.DNSName(h) for h in hostnames)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return CertificateInfo(cert_path, key_path, application_uri, thumbprint(cert), cert.not_valid_after_utc)


def load_certificate(path: Path) -> x509.Certificate:
    """Read a DER or PEM certificate file."""
    data = path.read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def thumbprint(cert: x509.Certificate) -> str:
    """SHA-1 of the DER encoding, the thumbprint OPC UA tools display."""
    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def application_uri_of(cert: x509.Certificate) -> str | None:
    """The first URI in the SubjectAltName, which OPC UA uses as the ApplicationUri."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    pub = issuer.public_key()
    if not isinstance(pub, rsa.RSAPublicKey) or cert.signature_hash_algorithm is None:
        return False
    try:
        pub.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm)
    except InvalidSignature:
        return False
    return True


def is_trusted(cert: x509.Certificate, trust_dir: Path) -> bool:
    """True when ``cert`` is in ``trust_dir`` or signed by a certificate there, and within its validity."""
    now = dt.datetime.now(dt.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        return False
    der = cert.public_bytes(serialization.Encoding.DER)
    if not trust_dir.is_dir():
        return False
    for path in sorted(trust_dir.iterdir()):
        if not path.is_file():
            continue
        try:
            anchor = load_certificate(path)
        except ValueError:
            continue
        if anchor.public_bytes(serialization.Encoding.DER) == der or _signed_by(cert, anchor):
            return True
    return False


def save_rejected(cert: x509.Certificate, rejected_dir: Path) -> Path:
    """Write a refused certificate as ``<thumbprint>.der`` for review; returns its path."""
    rejected_dir.mkdir(parents=True, exist_ok=True)
    path = rejected_dir / f"{thumbprint(cert)}.der"
    path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    return path
