"""[cluster] (SPEC §10): its keys, the rules between them, --check-config and reload."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness import DaemonProcess, wait_for
from sessiond.config import load_config, reference, summary
from sessiond.core.settings import CLUSTER_KEYS, SECTIONS, ClusterSettings, Config
from sessiond.errors import ConfigError

ETCD = 'backend = "etcd"\nendpoints = ["http://10.0.0.1:2379"]\n'


def cluster_of(tmp_path: Path, table: str) -> ClusterSettings:
    path = tmp_path / "sessiond.toml"
    path.write_text("[cluster]\n" + table)
    return load_config(path, {}).cluster


def problems_of(tmp_path: Path, table: str) -> dict[str, str]:
    """key -> rule of every problem of a [cluster] table."""
    with pytest.raises(ConfigError) as caught:
        cluster_of(tmp_path, table)
    found = {p.key: p.rule for p in caught.value.problems}
    assert len(found) == len(caught.value.problems), "one problem per key"
    return found


def tls_files(tmp_path: Path) -> dict[str, Path]:
    files = {key: tmp_path / f"{key}.pem" for key in ("ca_file", "cert_file", "key_file")}
    for path in files.values():
        path.write_text("-----BEGIN CERTIFICATE-----\n")
    return files


# --- the table and its defaults -------------------------------------------------


def test_without_a_table_the_lock_is_local() -> None:
    cluster = load_config(None, {}).cluster
    assert cluster == Config().cluster == ClusterSettings()
    assert (cluster.backend, cluster.endpoints, cluster.name, cluster.host) == (
        "local", (), "default", "")  # fmt: skip
    assert cluster.lease_ttl == 10.0
    assert (cluster.ca_file, cluster.cert_file, cluster.key_file) == ("", "", "")
    assert cluster.addresses() == ()
    assert cluster.tls is False


def test_the_table_covers_the_dataclass_and_takes_its_defaults() -> None:
    assert SECTIONS["cluster"] is CLUSTER_KEYS
    assert list(CLUSTER_KEYS) == [f.name for f in dataclasses.fields(ClusterSettings)]
    for f in dataclasses.fields(ClusterSettings):
        assert CLUSTER_KEYS[f.name].default == f.default
        assert CLUSTER_KEYS[f.name].parse(f.default) == f.default, f.name
    assert CLUSTER_KEYS["lease_ttl"].duration
    assert [key for key, s in CLUSTER_KEYS.items() if s.duration] == ["lease_ttl"]


def test_the_reference_shows_the_spec_defaults() -> None:
    text = reference()
    table = text[text.index("[cluster]") :].split("\n\n")[0]
    defaults = [
        'backend = "local"',
        "endpoints = []",
        'name = "default"',
        'host = ""',
        'lease_ttl = "10s"',
        'ca_file = ""',
        'cert_file = ""',
        'key_file = ""',
    ]
    for line in defaults:
        assert f"\n{line}  # " in table


def test_a_full_etcd_table(tmp_path: Path) -> None:
    files = tls_files(tmp_path)
    cluster = cluster_of(
        tmp_path,
        f"""
backend = "etcd"
endpoints = ["https://10.0.0.1:2379", "https://etcd-2.lan:2379", "[::1]:2379"]
name = "lab.2"
host = "worker-7.example.com"
lease_ttl = "1m30s"
ca_file = "{files["ca_file"]}"
cert_file = "{files["cert_file"]}"
key_file = "{files["key_file"]}"
""",
    )
    assert cluster == ClusterSettings(
        backend="etcd",
        endpoints=("https://10.0.0.1:2379", "https://etcd-2.lan:2379", "[::1]:2379"),
        name="lab.2", host="worker-7.example.com", lease_ttl=90.0,
        ca_file=str(files["ca_file"]), cert_file=str(files["cert_file"]),
        key_file=str(files["key_file"]),
    )  # fmt: skip
    assert cluster.addresses() == ("10.0.0.1:2379", "etcd-2.lan:2379", "[::1]:2379")
    assert cluster.tls is True


@pytest.mark.parametrize(
    ("table", "addresses", "tls"),
    [
        ('endpoints = ["http://a:2379", "b:2380"]', ("a:2379", "b:2380"), False),
        ('endpoints = ["https://a:2379"]', ("a:2379",), True),
        ('endpoints = ["a:2379"]\nca_file = "CA"', ("a:2379",), True),
        (
            'endpoints = ["http://127.0.0.1:1", "127.0.0.1:65535"]',
            ("127.0.0.1:1", "127.0.0.1:65535"),
            False,
        ),
    ],
)
def test_addresses_drop_the_scheme_and_tls_follows_https_or_a_ca(
    tmp_path: Path, table: str, addresses: tuple[str, ...], tls: bool
) -> None:
    table = table.replace('"CA"', f'"{tls_files(tmp_path)["ca_file"]}"')
    cluster = cluster_of(tmp_path, 'backend = "etcd"\n' + table)
    assert cluster.addresses() == addresses
    assert cluster.tls is tls


def test_lease_ttl_takes_plain_seconds_and_exactly_3s(tmp_path: Path) -> None:
    assert cluster_of(tmp_path, "lease_ttl = 3").lease_ttl == 3.0
    assert cluster_of(tmp_path, 'lease_ttl = "3s"').lease_ttl == 3.0
    assert cluster_of(tmp_path, 'lease_ttl = "4.5"').lease_ttl == 4.5


def test_a_local_backend_needs_no_endpoints_and_may_keep_them(tmp_path: Path) -> None:
    cluster = cluster_of(tmp_path, 'backend = "local"\nendpoints = ["a:1"]')
    assert cluster.backend == "local"
    assert cluster.endpoints == ("a:1",)


# --- one key at a time ------------------------------------------------------------

ENDPOINTS_RULE = ('must be a list of etcd endpoints, each "http://HOST:PORT", "https://HOST:PORT"'
                  ' or "HOST:PORT", PORT 1 to 65535')  # fmt: skip


@pytest.mark.parametrize(
    ("line", "key", "rule"),
    [
        ('backend = "zookeeper"', "cluster.backend", 'must be "local" or "etcd"'),
        ('backend = "ETCD"', "cluster.backend", 'must be "local" or "etcd"'),
        ("backend = 1", "cluster.backend", 'must be "local" or "etcd"'),
        ('endpoints = "http://a:2379"', "cluster.endpoints", ENDPOINTS_RULE),
        ('endpoints = ["http://a:2379", "a"]', "cluster.endpoints", ENDPOINTS_RULE + "; not 'a'"),
        ('endpoints = ["ftp://a:21"]', "cluster.endpoints", ENDPOINTS_RULE + "; not 'ftp://a:21'"),
        ('endpoints = ["http://a"]', "cluster.endpoints", "; not 'http://a'"),
        ('endpoints = ["a:0"]', "cluster.endpoints", "; not 'a:0'"),
        ('endpoints = ["a:65536"]', "cluster.endpoints", "; not 'a:65536'"),
        ('endpoints = ["http://a:2379/"]', "cluster.endpoints", "; not 'http://a:2379/'"),
        ('endpoints = ["http://a:2379/v3"]', "cluster.endpoints", "; not 'http://a:2379/v3'"),
        ('endpoints = [" a:1"]', "cluster.endpoints", "; not ' a:1'"),
        ("endpoints = [2379]", "cluster.endpoints", "; not 2379"),
        ('name = ""', "cluster.name", "must be 1 to 64 letters, digits"),
        ('name = "a/b"', "cluster.name", "/sessiond/NAME/"),
        ('name = "-x"', "cluster.name", "starting with a letter or digit"),
        ("name = 5", "cluster.name", "must be 1 to 64 letters"),
        ('host = "a b"', "cluster.host", 'must be a host name: 1 to 253 letters, digits, '),
        ('host = "' + "h" * 254 + '"', "cluster.host", "must be a host name"),
        ('host = ".lan"', "cluster.host", 'or "" for the machine\'s'),
        ('lease_ttl = "2s"', "cluster.lease_ttl", "at least 3s"),
        ("lease_ttl = 2.999", "cluster.lease_ttl", "at least 3s"),
        ('lease_ttl = "0"', "cluster.lease_ttl", "at least 3s"),
        ('lease_ttl = "ten seconds"', "cluster.lease_ttl", "must be a duration like 90s"),
        ("lease_ttl = true", "cluster.lease_ttl", "must be a duration like 90s"),
        ('ca_file = "ca.pem"', "cluster.ca_file", 'must be an absolute path, or "" for none'),
        ("cert_file = 1", "cluster.cert_file", "must be an absolute path"),
        ('key_file = "~/key.pem"', "cluster.key_file", "must be an absolute path"),
        ("ttl = 10", "cluster.ttl", "unknown key; known keys: backend, endpoints, name, host, "
                                    "lease_ttl, ca_file, cert_file, key_file"),
    ],
)  # fmt: skip
def test_one_bad_key_is_one_problem_with_its_rule(
    tmp_path: Path, line: str, key: str, rule: str
) -> None:
    problems = problems_of(tmp_path, line)
    assert list(problems) == [key]
    assert rule in problems[key]


def test_a_cluster_that_is_not_a_table(tmp_path: Path) -> None:
    path = tmp_path / "sessiond.toml"
    path.write_text('cluster = "etcd"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert [(p.key, p.value, p.rule) for p in caught.value.problems] == [
        ("cluster", "etcd", "must be a table")
    ]


# --- the rules between keys -------------------------------------------------------


@pytest.mark.parametrize("table", ['backend = "etcd"', 'backend = "etcd"\nendpoints = []'])
def test_etcd_needs_endpoints(tmp_path: Path, table: str) -> None:
    problems = problems_of(tmp_path, table)
    assert problems == {
        "cluster.endpoints": 'must list at least one etcd member when backend = "etcd", '
                             'e.g. ["http://10.0.0.1:2379"]'
    }  # fmt: skip


def test_bad_endpoints_are_reported_once_not_also_as_missing(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, 'backend = "etcd"\nendpoints = ["nowhere"]')
    assert list(problems) == ["cluster.endpoints"]
    assert "not 'nowhere'" in problems["cluster.endpoints"]


def test_http_and_https_are_not_mixed(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, 'backend = "etcd"\n'
                                     'endpoints = ["http://a:2379", "https://b:2379"]')  # fmt: skip
    assert problems == {"cluster.endpoints": "must be all http:// or all https://: "
                                             "TLS is one choice for the whole cluster"}  # fmt: skip


@pytest.mark.parametrize(("given", "missing"), [("cert_file", "key_file"),
                                                ("key_file", "cert_file")])  # fmt: skip
def test_a_certificate_goes_with_its_key(tmp_path: Path, given: str, missing: str) -> None:
    path = tls_files(tmp_path)[given]
    problems = problems_of(tmp_path, ETCD + f'{given} = "{path}"')
    assert problems == {
        f"cluster.{missing}": f"must be set with {given}: a client certificate goes with its "
                              "private key"
    }  # fmt: skip


def test_a_bad_key_file_is_not_also_missing(tmp_path: Path) -> None:
    cert = tls_files(tmp_path)["cert_file"]
    problems = problems_of(tmp_path, ETCD + f'cert_file = "{cert}"\nkey_file = "key.pem"')
    assert list(problems) == ["cluster.key_file"]
    assert "absolute path" in problems["cluster.key_file"]


@pytest.mark.parametrize("key", ["ca_file", "cert_file", "key_file"])
def test_tls_files_must_exist(tmp_path: Path, key: str) -> None:
    files = {k: str(p) for k, p in tls_files(tmp_path).items()}
    files[key] = str(tmp_path / "missing.pem")
    table = ETCD + "".join(f'{k} = "{p}"\n' for k, p in files.items())
    problems = problems_of(tmp_path, table)
    assert problems == {f"cluster.{key}": "must be a readable file: no such file"}


def test_a_directory_or_a_fifo_is_no_tls_file(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    problems = problems_of(tmp_path, ETCD + f'ca_file = "{tmp_path}"\n')
    assert problems == {"cluster.ca_file": "must be a readable file: not a regular file"}
    problems = problems_of(tmp_path, ETCD + f'ca_file = "{fifo}"\n')  # and nothing hangs
    assert problems == {"cluster.ca_file": "must be a readable file: not a regular file"}


def test_an_unreadable_tls_file(tmp_path: Path) -> None:
    key = tls_files(tmp_path)["key_file"]
    key.chmod(0)
    if os.access(key, os.R_OK):
        pytest.skip("root reads a file of mode 0000")
    cert = tls_files(tmp_path)["cert_file"]
    problems = problems_of(tmp_path, ETCD + f'cert_file = "{cert}"\nkey_file = "{key}"\n')
    assert problems == {"cluster.key_file": "must be a readable file: Permission denied"}


def test_every_problem_of_the_table_at_once(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        """
backend = "etcd"
name = "no/slash"
lease_ttl = "1s"
cert_file = "/nonexistent/cert.pem"
colour = "blue"
""",
    )
    assert set(problems) == {"cluster.endpoints", "cluster.name", "cluster.lease_ttl",
                             "cluster.key_file", "cluster.cert_file", "cluster.colour"}  # fmt: skip


# --- sessiond --check-config --------------------------------------------------------


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sessiond", "--check-config", "--config",
                           str(path)], capture_output=True, text=True, timeout=60)  # fmt: skip


def test_check_config_lists_the_cluster_problems(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[cluster]\nbackend = "etcd"\nlease_ttl = "1s"\nca_file = "/nonexistent.pem"\n')
    done = check_config(bad)
    assert done.returncode == 1
    assert "3 problems" in done.stderr
    assert (f'{bad}: cluster.endpoints: must list at least one etcd member when backend = "etcd"'
            in done.stderr)  # fmt: skip
    assert f"{bad}: cluster.lease_ttl = '1s': must be a duration" in done.stderr
    assert f"{bad}: cluster.ca_file = '/nonexistent.pem': must be a readable file" in done.stderr
    assert "hint: " in done.stderr
    assert done.stdout == ""


def test_check_config_names_the_backend(tmp_path: Path) -> None:
    local = tmp_path / "local.toml"
    local.write_text("")
    done = check_config(local)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{local}: configuration is valid; cluster backend: local\n"
    etcd = tmp_path / "etcd.toml"
    etcd.write_text('[cluster]\nbackend = "etcd"\nname = "lab"\n'
                    'endpoints = ["https://a:2379", "https://b:2379"]\n')  # fmt: skip
    done = check_config(etcd)
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout == f"{etcd}: configuration is valid; cluster backend: etcd (name lab, "
        "2 endpoints, TLS)\n"
    )


def test_summary_of_one_plain_endpoint() -> None:
    config = Config(cluster=ClusterSettings(backend="etcd", endpoints=("a:1",)))
    assert summary(config) == (
        "embedded defaults: configuration is valid; cluster backend: etcd (name default, "
        "1 endpoint)"
    )


# --- reload ------------------------------------------------------------------------


def test_a_reload_keeps_the_cluster_and_says_so(
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    daemon = make_daemon('[session]\ntimeout = "30m"\n[cluster]\nname = "one"\n')
    daemon.config_path.write_text('[session]\ntimeout = "45m"\n[cluster]\nname = "two"\n')
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in daemon.log(), what="the reload")
    assert "[cluster] changed: it applies at the next start" in daemon.log()
    started: dict[str, Any] = daemon.call("session.start", name="s")
    assert started["settings"]["timeout"] == 2700.0  # the rest of the file did apply
