"""Certificates for TLS tests, made with the `openssl` command line as Docker's own guide to
protecting the daemon socket makes them: a CA, a server certificate for 127.0.0.1 signed by it,
and a client certificate signed by it, laid out as the docker client expects them in
DOCKER_CERT_PATH (ca.pem, cert.pem, key.pem)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class Certs:
    ca: Path  # the authority's certificate
    server_cert: Path
    server_key: Path
    client_dir: Path  # ca.pem, cert.pem and key.pem, as DOCKER_CERT_PATH holds them


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", *_KEY, "-keyout", f"{name}-key.pem", "-out", f"{name}.pem",
             "-days", "2", "-subj", f"/CN={name}", cwd=directory)
    return directory / f"{name}.pem", directory / f"{name}-key.pem"


def _signed(directory: Path, name: str, ca: tuple[Path, Path], extensions: str) -> None:
    (directory / f"{name}.ext").write_text(extensions)
    _openssl("req", "-new", *_KEY, "-keyout", f"{name}-key.pem", "-out", f"{name}.csr",
             "-subj", f"/CN={name}", cwd=directory)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", str(ca[0]), "-CAkey", str(ca[1]),
             "-CAcreateserial", "-out", f"{name}-cert.pem", "-days", "2",
             "-extfile", f"{name}.ext", cwd=directory)


def make_certs(directory: Path) -> Certs:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command line")
    ca = make_ca(directory, "ca")
    _signed(directory, "server", ca, "subjectAltName = IP:127.0.0.1, DNS:localhost\n"
                                     "extendedKeyUsage = serverAuth\n")
    _signed(directory, "client", ca, "extendedKeyUsage = clientAuth\n")
    client = directory / "client"
    client.mkdir()
    shutil.copy(ca[0], client / "ca.pem")
    shutil.copy(directory / "client-cert.pem", client / "cert.pem")
    shutil.copy(directory / "client-key.pem", client / "key.pem")
    return Certs(ca[0], directory / "server-cert.pem", directory / "server-key.pem", client)
