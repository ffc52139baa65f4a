"""Hosts for the MTA-STS tests (no tests here): a CA, an HTTPS policy host.

- :func:`issue` writes a CA certificate (``ca.pem``) once per directory and
  a certificate + key for the names given (``NAME.pem`` / ``NAME.key``, NAME
  the first),
  signed by that CA (or, with ``self_signed``, by nobody).
- :class:`PolicySite` is a twisted.web site answering
  ``/.well-known/mta-sts.txt`` per Host header from a dict
  ``{host: [status, content_type, body]}`` (``"hang"`` as status: never
  answers); :func:`serve` listens with TLS (SNI picks nothing: one
  certificate per listener).
- ``python -m tests.mtasts_hosts CONFIG.json`` serves the policies of a
  JSON config ``{"address": ..., "port": ..., "cert": ..., "key": ...,
  "policies": {...}}`` and prints ``ready`` (for the end-to-end tests).
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.internet import ssl
from twisted.web import resource, server

Policies = dict[str, list[Any]]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = directory / "ca.pem", directory / "ca.key"
    if cert_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cert, key
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("pymta MTA-STS test CA"))
        .issuer_name(_name("pymta MTA-STS test CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key


def issue(directory: Path, name: str, *more: str, self_signed: bool = False) -> tuple[Path, Path]:
    """(certificate, key) paths for ``name`` (and ``more`` names); the CA is
    ``directory/ca.pem``."""
    ca_cert, ca_key = _ca(directory)
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = _name(name) if self_signed else ca_cert.subject
    signer = key if self_signed else ca_key
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in (name, *more)]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(signer, hashes.SHA256())
    )
    tag = "-self" if self_signed else ""
    cert_path, key_path = directory / f"{name}{tag}.pem", directory / f"{name}{tag}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class PolicyResource(resource.Resource):
    isLeaf = True

    def __init__(self, policies: Policies) -> None:
        super().__init__()
        self.policies = policies
        self.requests: list[tuple[str, str]] = []

    def render_GET(self, request: Any) -> Any:
        host = (request.getHeader("host") or "").split(":")[0].lower()
        path = request.path.decode()
        self.requests.append((host, path))
        entry = self.policies.get(host)
        if entry is None or path != "/.well-known/mta-sts.txt":
            request.setResponseCode(404)
            return b"not found"
        status, content_type, body = entry
        if status == "hang":
            return server.NOT_DONE_YET
        request.setResponseCode(int(status))
        if int(status) in (301, 302):
            request.setHeader("location", "https://elsewhere.test/.well-known/mta-sts.txt")
        request.setHeader("content-type", content_type)
        return body.encode() if isinstance(body, str) else body


def serve(
    reactor: Any, policies: Policies, cert: Path, key: Path, address: str, port: int
) -> tuple[Any, PolicyResource]:
    """Listen with TLS on (address, port); returns the port and the resource."""
    root = PolicyResource(policies)
    certificate = ssl.PrivateCertificate.loadPEM(cert.read_text() + key.read_text())
    listening = reactor.listenSSL(port, server.Site(root), certificate.options(), interface=address)
    return listening, root


def main(argv: list[str]) -> None:
    from twisted.internet import reactor

    config = json.loads(Path(argv[1]).read_text())
    serve(
        reactor,
        config["policies"],
        Path(config["cert"]),
        Path(config["key"]),
        config["address"],
        int(config["port"]),
    )
    print("ready", flush=True)
    reactor.run()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main(sys.argv)
