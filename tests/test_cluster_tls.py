"""The cluster lock over TLS: a real etcd that asks for client certificates (SPEC §10).

A throwaway CA signs the member's certificate (for localhost and 127.0.0.1)
and a client's; the daemon dials https://localhost:PORT with ca_file,
cert_file and key_file, and one without a client certificate is refused.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from etcdcluster import clean_environment, free_port

from harness import DaemonProcess, wait_for
from sessiond.cli.client import RemoteError

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not (shutil.which("etcd") and shutil.which("openssl")),
                       reason="needs etcd and openssl (./dev test installs etcd as root)"),
]  # fmt: skip
CLUSTER_UNAVAILABLE = -32012


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(where: Path) -> None:
    """ca.pem signs server.pem (localhost, 127.0.0.1) and client.pem."""
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=sessiond-test-ca",
        cwd=where,
    )
    (where / "san").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name, extra in (("server", ["-extfile", "san"]), ("client", [])):
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
            cwd=where,
        )
        openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "1",
            *extra,
            cwd=where,
        )
    for key in where.glob("*.key"):
        key.chmod(0o600)


@pytest.fixture
def tls_etcd(short_tmp: Path) -> Iterator[tuple[str, Path]]:
    """One etcd member that serves https and asks every client for a certificate."""
    certs = short_tmp / "certs"
    certs.mkdir()
    make_certificates(certs)
    client, peer = free_port(), free_port()
    endpoint = f"https://127.0.0.1:{client}"
    command = [
        "etcd", "--name", "tls", "--data-dir", str(short_tmp / "etcd"),
        "--listen-client-urls", endpoint, "--advertise-client-urls", endpoint,
        "--listen-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-cluster", f"tls=http://127.0.0.1:{peer}",
        "--cert-file", str(certs / "server.pem"), "--key-file", str(certs / "server.key"),
        "--trusted-ca-file", str(certs / "ca.pem"), "--client-cert-auth",
    ]  # fmt: skip
    with (short_tmp / "etcd.log").open("wb") as log:
        member = subprocess.Popen(command, stdout=log, stderr=log, env=clean_environment(),
                                  start_new_session=True)  # fmt: skip
    try:
        health = ["etcdctl", "--endpoints", endpoint, "--cacert", str(certs / "ca.pem"),
                  "--cert", str(certs / "client.pem"), "--key", str(certs / "client.key"),
                  "endpoint", "health"]  # fmt: skip
        env = {**clean_environment(), "ETCDCTL_API": "3"}
        wait_for(lambda: subprocess.run(health, env=env, capture_output=True).returncode == 0,
                 timeout=20, what="etcd over TLS healthy")  # fmt: skip
        yield f"https://localhost:{client}", certs
    finally:
        member.send_signal(signal.SIGKILL)
        member.wait()


def cluster_config(endpoint: str, certs: Path, with_client_cert: bool) -> str:
    lines = ["[cluster]", 'backend = "etcd"', f'endpoints = ["{endpoint}"]', 'name = "tls"',
             'lease_ttl = "3s"', f'ca_file = "{certs / "ca.pem"}"']  # fmt: skip
    if with_client_cert:
        lines += [f'cert_file = "{certs / "client.pem"}"', f'key_file = "{certs / "client.key"}"']
    return "\n".join(lines) + "\n"


def test_a_daemon_with_a_client_certificate_takes_the_lock_over_tls(
    make_daemon: Callable[..., DaemonProcess], tls_etcd: tuple[str, Path]
) -> None:
    endpoint, certs = tls_etcd
    daemon = make_daemon(cluster_config(endpoint, certs, with_client_cert=True))
    wait_for(lambda: daemon.call("session.status")["daemon"]["cluster"]["reachable"],
             timeout=5, what="etcd reachable over TLS")  # fmt: skip
    session = daemon.call("session.start", name="secure")
    assert session["fence"] > 0 and session["state"] == "active"
    daemon.call("session.stop")


def test_a_daemon_without_a_client_certificate_is_refused(
    make_daemon: Callable[..., DaemonProcess], tls_etcd: tuple[str, Path]
) -> None:
    endpoint, certs = tls_etcd
    daemon = make_daemon(cluster_config(endpoint, certs, with_client_cert=False))
    with pytest.raises(RemoteError) as refused:
        daemon.call("session.start", name="plain")
    assert refused.value.code == CLUSTER_UNAVAILABLE
    assert endpoint in refused.value.message
    assert not daemon.call("session.status")["daemon"]["cluster"]["reachable"]
    assert os.path.exists(daemon.socket)  # it serves all the same
