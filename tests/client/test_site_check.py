"""`fedward site check`: the config, schema, data, state folder, ledger and withdrawals checked the way
the ClientApp meets them, and the SuperLink's TCP port and TLS certificate, on loopback only."""

from __future__ import annotations

import socket
import sqlite3
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from fedward.client.cli import register
from fedward.client.ledger import LEDGER_FILE, Ledger
from fedward.client.site_check import CheckResult, check_superlink, run_checks
from fedward.client.withdrawal import WITHDRAWALS_FILE
from fedward.common.datasets.bundled import write_site_files
from fedward.common.site_config import load_site_config
from tests.tls import make_tls


def fedward_site(*args: str | Path) -> Result:
    app = typer.Typer()
    register(app)
    return CliRunner().invoke(app, ["site", *map(str, args)])


@pytest.fixture
def site_toml(tmp_path: Path) -> Path:
    return write_site_files("heart-disease", tmp_path, seed=0)[0]


def by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.name: r for r in results}


# ---- the site's own files ----------------------------------------------------------------------


def test_a_sound_site_passes_every_check_and_the_command_exits_0(site_toml: Path) -> None:
    results = by_name(run_checks(site_toml))

    assert [n for n, r in results.items() if r.failed] == []
    assert results["data file"].status == "ok" and "304 rows" in results["data file"].detail
    assert results["state folder"].status == "ok" and results["privacy ledger"].status == "ok"
    done = fedward_site("check", "--site-config", site_toml)
    assert done.exit_code == 0, done.output
    assert "all checks passed" in done.output


def test_a_bad_config_field_fails_naming_file_and_field_and_skips_the_rest(
    site_toml: Path,
) -> None:
    site_toml.write_text(site_toml.read_text().replace("[policy]", "[policy]\nmin_cel_size = 5"))

    results = by_name(run_checks(site_toml))

    config = results["site config"]
    assert config.failed and str(site_toml) in config.detail
    assert "policy.min_cel_size" in config.detail
    assert {results[n].status for n in ("schema", "data file", "state folder")} == {"skipped"}
    done = fedward_site("check", "--site-config", site_toml)
    assert done.exit_code == 1 and "FAILED" in done.output


def test_a_column_missing_from_the_data_fails_naming_the_file_and_column(site_toml: Path) -> None:
    data = site_toml.parent / "data.csv"
    lines = data.read_text().splitlines()
    lines[0] = lines[0].replace("chol", "cholesterol")
    data.write_text("\n".join(lines) + "\n")

    result = by_name(run_checks(site_toml))["data file"]

    assert result.failed
    assert "column 'chol'" in result.detail and str(data) in result.detail
    assert "cholesterol" in result.detail  # the file's own columns are listed


def test_a_state_folder_that_is_a_file_fails(site_toml: Path) -> None:
    (site_toml.parent / "state").write_text("not a folder")

    result = by_name(run_checks(site_toml))["state folder"]

    assert result.failed and "is not a folder" in result.detail


def test_a_new_state_folder_is_reported_and_not_created(site_toml: Path) -> None:
    result = by_name(run_checks(site_toml))["state folder"]

    assert result.status == "ok" and "does not exist yet" in result.detail
    assert not (site_toml.parent / "state").exists()


def test_a_broken_ledger_chain_fails_naming_the_entry(site_toml: Path) -> None:
    site = load_site_config(site_toml)
    ledger = Ledger(site.state_path)
    for seq in (1, 2):
        ledger.append(
            dataset="cleveland",
            run_id="run-1",
            round=seq,
            attempt=f"a{seq}",
            kind="dp-sgd",
            noise_multiplier=1.0,
            sample_rate=0.1,
            steps=5,
            delta=1e-4,
        )
    assert by_name(run_checks(site_toml))["privacy ledger"].status == "ok"
    with sqlite3.connect(site.state_path / LEDGER_FILE) as con:
        con.execute("DROP TRIGGER entries_no_update")
        con.execute("UPDATE entries SET noise_multiplier = 3.0 WHERE seq = 2")

    result = by_name(run_checks(site_toml))["privacy ledger"]

    assert result.failed and "entry 2 was edited" in result.detail


def test_a_damaged_withdrawals_file_fails(site_toml: Path) -> None:
    state = load_site_config(site_toml).state_path
    state.mkdir()
    (state / WITHDRAWALS_FILE).write_text("not json\n")

    result = by_name(run_checks(site_toml))["withdrawals"]

    assert result.failed and "line 1" in result.detail


def test_unapproved_code_is_a_warning_not_a_failure(site_toml: Path) -> None:
    site_toml.write_text(
        site_toml.read_text().replace("auto_approve = true", "auto_approve = false")
    )

    results = by_name(run_checks(site_toml))

    assert results["approvals"].status == "warning"
    assert "fedward site approve" in results["approvals"].detail
    assert not any(r.failed for r in results.values())


# ---- the SuperLink: a tiny TLS server on loopback ----------------------------------------------


@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path
    key: Path
    other_ca: Path


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A throwaway CA, a SuperLink certificate for 127.0.0.1 and localhost, and an unrelated CA."""
    tls = make_tls(tmp_path_factory.mktemp("tls"))
    other = make_tls(tmp_path_factory.mktemp("other-tls"))
    return Certs(tls.ca, tls.cert, tls.key, other.ca)


@contextmanager
def listening(context: ssl.SSLContext | None) -> Iterator[int]:
    """A loopback server on a free port: TLS with ``context``, else plain TCP that says nothing."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(2)
            try:
                if context is None:
                    conn.recv(1024)  # a listener that is not TLS: read, answer nothing, close
                else:
                    with context.wrap_socket(conn, server_side=True):
                        pass
            except OSError:  # the client rejected the certificate, or hung up
                pass
            finally:
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


@pytest.fixture
def tls_port(certs: Certs) -> Iterator[int]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.cert, certs.key)
    with listening(context) as port:
        yield port


def test_a_superlink_with_a_certificate_from_the_ca_is_reachable_and_verified(
    certs: Certs, tls_port: int
) -> None:
    result = check_superlink(f"127.0.0.1:{tls_port}", certs.ca, timeout=2)

    assert result.status == "ok", result.detail
    assert "reachable, TLS certificate verified for 127.0.0.1" in result.detail


def test_a_hostname_the_certificate_names_is_verified_too(certs: Certs, tls_port: int) -> None:
    result = check_superlink(f"localhost:{tls_port}", certs.ca, timeout=2)

    assert result.status == "ok", result.detail
    assert "TLS certificate verified for localhost" in result.detail


def test_a_certificate_from_another_ca_is_reported_as_not_verified(
    certs: Certs, tls_port: int
) -> None:
    result = check_superlink(f"127.0.0.1:{tls_port}", certs.other_ca, timeout=2)

    assert result.failed
    assert "reachable, but its TLS certificate is NOT verified for 127.0.0.1" in result.detail


def test_a_closed_port_is_a_clear_failure() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # free now, closed once the block ends

    result = check_superlink(f"127.0.0.1:{port}", None, timeout=2)

    assert result.failed
    assert f"127.0.0.1:{port}: connection refused" in result.detail


def test_a_listener_that_does_not_speak_tls_is_reported(certs: Certs) -> None:
    with listening(None) as port:
        result = check_superlink(f"127.0.0.1:{port}", certs.ca, timeout=1)

    assert result.failed and "reachable, but" in result.detail and "TLS" in result.detail


def test_a_missing_ca_file_and_a_malformed_address_name_the_flag(
    certs: Certs, tmp_path: Path
) -> None:
    missing = check_superlink("127.0.0.1:8000", tmp_path / "nope.pem")
    malformed = check_superlink("https://coordinator:8000", certs.ca)

    assert missing.failed and "--root-certificates" in missing.detail
    assert malformed.failed and "--superlink 'https://coordinator:8000'" in malformed.detail


def test_check_with_superlink_prints_the_table_and_exits_by_the_connection(
    site_toml: Path, certs: Certs, tls_port: int
) -> None:
    ok = fedward_site(
        "check", "--site-config", site_toml, "--superlink", f"127.0.0.1:{tls_port}",
        "--root-certificates", certs.ca,
    )  # fmt: skip
    bad = fedward_site(
        "check", "--site-config", site_toml, "--superlink", f"127.0.0.1:{tls_port}",
        "--root-certificates", certs.other_ca,
    )  # fmt: skip

    assert ok.exit_code == 0, ok.output
    assert "superlink" in ok.output and "reachable" in ok.output
    assert bad.exit_code == 1 and "FAILED: superlink" in bad.output
