"""`fedward site check`: everything a site can verify before its first run, without training.

A site learns about most problems only when the first message of a run arrives: a typo in the
config, a column the schema names but the file lacks, a state folder the SuperNode's user cannot
write, a firewall between it and the SuperLink. ``check`` runs the same loaders the ClientApp runs
(``load_site_config``, the schema, ``load_table``, the ledger's hash chain, the withdrawals file) and,
if asked, opens a TCP connection and a TLS handshake to the SuperLink, verified against the CA the
SuperNode will use. It reads and writes nothing but a probe file in the state folder, and sends no
data anywhere: the handshake carries no application bytes.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fedward.client.ledger import LEDGER_FILE, Ledger
from fedward.client.site_init import REVIEW_NOTE
from fedward.client.withdrawal import read_withdrawals, withdrawals_path
from fedward.common.datasource import LoadedTable, load_table
from fedward.common.errors import FedwardError
from fedward.common.learning_config import SplitConfig
from fedward.common.schema import DataSchema
from fedward.common.site_config import SiteConfig, load_site_config

Status = Literal["ok", "warning", "FAILED", "skipped"]
DEFAULT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class CheckResult:
    """One row of the report: what was checked, how it went, and the detail an operator acts on."""

    name: str
    status: Status
    detail: str

    @property
    def failed(self) -> bool:
        return self.status == "FAILED"


class CheckError(FedwardError):
    """A check's input is unusable (e.g. a malformed --superlink); the message names the flag."""


def parse_superlink(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 as ``[ADDR]:PORT``), as flower-supernode takes it; errors name the flag."""
    text = address.strip()
    match = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\[\]\s/]+):(\d+)", text)
    if match is None:
        raise CheckError(
            f"--superlink '{address}': give HOST:PORT (e.g. coordinator.example.org:8000, or "
            "[::1]:8000 for IPv6), without a URL prefix"
        )
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 1 <= port <= 65535:
        raise CheckError(f"--superlink '{address}': port {port} is not between 1 and 65535")
    return host, port


# ---- the site's own files ----------------------------------------------------------------------


def _config(path: Path) -> tuple[CheckResult, SiteConfig | None]:
    try:
        site = load_site_config(path)
    except FedwardError as exc:
        return CheckResult("site config", "FAILED", str(exc)), None
    return CheckResult("site config", "ok", f"{path}: site '{site.name}'"), site


def _schema(site: SiteConfig) -> tuple[CheckResult, DataSchema | None]:
    where = site.data.schema_file or "the inline [data.schema]"
    try:
        schema = site.load_schema()
    except FedwardError as exc:
        return CheckResult("schema", "FAILED", str(exc)), None
    used = schema.used_features
    detail = f"{where}: label '{schema.label.column}', {len(used)} features" + (
        f", patient id '{schema.patient_id}'" if schema.patient_id else ""
    )
    review = [f.name for f in schema.features if (f.note or "").startswith(REVIEW_NOTE)]
    if review:
        listed = ", ".join(review[:8]) + (", …" if len(review) > 8 else "")
        warning = CheckResult(
            "schema",
            "warning",
            f"{detail}; {len(review)} features still carry the skeleton's review note "
            f"({listed}): declare their ranges and categories from domain knowledge, agree the "
            "schema with the coordinator, then remove the notes",
        )
        return warning, schema
    return CheckResult("schema", "ok", detail), schema


def _data(site: SiteConfig, schema: DataSchema) -> tuple[list[CheckResult], LoadedTable | None]:
    """The table as the ClientApp loads it; errors name the file and column (details stay local)."""
    try:
        table = load_table(site.data_path, schema, site=site.name, fmt=site.data.format)
    except FedwardError as exc:
        return [CheckResult("data file", "FAILED", str(exc))], None
    n_pos = int(table.labels.sum())
    detail = (
        f"{site.data_path}: {table.n_rows} rows ({n_pos} positive, {table.n_rows - n_pos} negative)"
    )
    rows = [
        CheckResult(
            "data file",
            "warning" if table.warnings else "ok",
            detail + "".join(f"; warning: {w}" for w in table.warnings),
        )
    ]
    from fedward.client.splits import split_for_run

    splits = SplitConfig()
    try:
        split_for_run(
            table.labels,
            groups=table.groups,
            config=splits,
            seed=0,
            site=site.name,
            file=str(site.data_path),
        )
        rows.append(
            CheckResult(
                "splits",
                "ok",
                f"enough rows for the default splits (tune {splits.tune:g}, test {splits.test:g}, "
                f"audit {splits.audit:g}); a run config may ask for others",
            )
        )
    except FedwardError as exc:
        rows.append(CheckResult("splits", "FAILED", f"with the default split fractions: {exc}"))
    return rows, table


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _state_folder(site: SiteConfig) -> CheckResult:
    """Writable by this user, which should be the SuperNode's; a probe file is made and removed."""
    state = site.state_path
    if state.exists() and not state.is_dir():
        return CheckResult("state folder", "FAILED", f"{state}: exists but is not a folder")
    if not state.exists():
        parent = _nearest_existing(state.parent)
        if parent.is_dir() and os.access(parent, os.W_OK | os.X_OK):
            return CheckResult(
                "state folder",
                "ok",
                f"{state}: does not exist yet; the ClientApp creates it on the first message "
                f"({parent} is writable)",
            )
        return CheckResult(
            "state folder",
            "FAILED",
            f"{state}: does not exist and {parent} is not writable by this user; create it and "
            "give the SuperNode's user write access",
        )
    try:
        with tempfile.NamedTemporaryFile(dir=state, prefix=".fedward-check-"):
            pass
    except OSError as exc:
        return CheckResult(
            "state folder",
            "FAILED",
            f"{state}: not writable by this user ({exc.strerror or exc}); the SuperNode's user "
            "needs read and write access",
        )
    ledger = state / LEDGER_FILE
    if ledger.exists() and not os.access(ledger, os.R_OK | os.W_OK):
        return CheckResult(
            "state folder",
            "FAILED",
            f"{ledger}: not readable and writable by this user; the SuperNode's user needs both",
        )
    return CheckResult("state folder", "ok", f"{state}: writable")


def _ledger(site: SiteConfig) -> CheckResult:
    path = site.state_path / LEDGER_FILE
    if not path.is_file():
        return CheckResult(
            "privacy ledger",
            "ok",
            f"{path}: no ledger yet (0 entries); if this site has trained before, it was moved "
            "or deleted: restore it",
        )
    try:
        result = Ledger(site.state_path).verify()
    except FedwardError as exc:
        return CheckResult("privacy ledger", "FAILED", str(exc))
    if not result.ok:
        return CheckResult(
            "privacy ledger",
            "FAILED",
            f"{path}: hash chain BROKEN: {result.problem} (entry {result.bad_seq} of "
            f"{result.entries}); the site will not train until an auditor has looked at it"
            if result.bad_seq is not None
            else f"{path}: anchor check FAILED: {result.problem}; the site will not train until "
            "an auditor has looked at it",
        )
    return CheckResult(
        "privacy ledger",
        "ok",
        f"{path}: hash chain intact, {result.entries} entries, head {result.head[:16]}…",
    )


def _approvals(site: SiteConfig) -> CheckResult:
    if site.policy.auto_approve:
        return CheckResult(
            "approvals",
            "warning",
            "policy.auto_approve = true: any run config and code is accepted; for simulation "
            "and demonstrations only",
        )
    path = site.state_path / LEDGER_FILE
    if not path.is_file():
        return CheckResult(
            "approvals",
            "warning",
            "nothing approved yet: every run is refused until `fedward site approve RUN.toml`",
        )
    from fedward.common.code_identity import code_hash

    try:
        approvals = Ledger(site.state_path).approvals()
    except FedwardError as exc:
        return CheckResult("approvals", "FAILED", str(exc))
    code = code_hash()
    runs = sum(1 for a in approvals if a["kind"] == "run-config")
    if not any(a["kind"] == "code" and a["value"] == code for a in approvals):
        return CheckResult(
            "approvals",
            "warning",
            f"{runs} run configs approved, but not this installation's fedward code "
            f"({code[:12]}…): runs are refused until `fedward site approve RUN.toml` records it",
        )
    return CheckResult("approvals", "ok", f"{runs} run configs and this fedward code approved")


def _withdrawals(site: SiteConfig) -> CheckResult | None:
    path = withdrawals_path(site.state_path)
    if not path.exists():
        return None
    try:
        found = read_withdrawals(site.state_path)
    except FedwardError as exc:
        return CheckResult("withdrawals", "FAILED", str(exc))
    runs = ", ".join(w.run[:16] for w in found[:5]) + (", …" if len(found) > 5 else "")
    return CheckResult(
        "withdrawals", "ok", f"{path}: {len(found)} withdrawals" + (f" ({runs})" if runs else "")
    )


# ---- the SuperLink -----------------------------------------------------------------------------


def check_superlink(
    address: str, root_certificates: Path | None = None, *, timeout: float = DEFAULT_TIMEOUT_S
) -> CheckResult:
    """A TCP connect and a TLS handshake verified for HOST; no application data is sent.

    Without ``root_certificates`` the system's trusted CAs verify the certificate, as Flower does.
    """
    name = "superlink"
    try:
        host, port = parse_superlink(address)
    except CheckError as exc:
        return CheckResult(name, "FAILED", str(exc))
    where = f"{host}:{port}"
    if root_certificates is not None:
        ca = f"CA {root_certificates}"
        if not root_certificates.is_file():
            return CheckResult(
                name, "FAILED", f"--root-certificates {root_certificates}: not found"
            )
        try:
            context = ssl.create_default_context(cafile=str(root_certificates))
        except (ssl.SSLError, OSError, ValueError) as exc:
            return CheckResult(
                name,
                "FAILED",
                f"--root-certificates {root_certificates}: not a PEM CA certificate ({exc})",
            )
    else:
        ca = "the system's trusted CAs"
        context = ssl.create_default_context()
    context.set_alpn_protocols(["h2"])  # as gRPC offers it
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror as exc:
        return CheckResult(name, "FAILED", f"{where}: cannot resolve '{host}' ({exc.strerror})")
    except ConnectionRefusedError:
        return CheckResult(
            name,
            "FAILED",
            f"{where}: connection refused (no SuperLink listens there, or a firewall rejects it)",
        )
    except TimeoutError:
        return CheckResult(
            name,
            "FAILED",
            f"{where}: no answer within {timeout:g} s (a firewall may drop the traffic)",
        )
    except OSError as exc:
        return CheckResult(name, "FAILED", f"{where}: cannot connect ({exc.strerror or exc})")
    with sock:
        try:
            with context.wrap_socket(sock, server_hostname=host) as tls:
                version = tls.version()
        except ssl.SSLCertVerificationError as exc:
            return CheckResult(
                name,
                "FAILED",
                f"{where}: reachable, but its TLS certificate is NOT verified for {host} by {ca}: "
                f"{exc.verify_message}",
            )
        except ssl.SSLError as exc:
            return CheckResult(
                name,
                "FAILED",
                f"{where}: reachable, but the TLS handshake failed ({exc.reason or exc}); is the "
                "SuperLink started with TLS (not --insecure)?",
            )
        except TimeoutError:
            return CheckResult(
                name,
                "FAILED",
                f"{where}: reachable, but no TLS handshake within {timeout:g} s; is the SuperLink "
                "started with TLS?",
            )
        except OSError as exc:
            return CheckResult(
                name,
                "FAILED",
                f"{where}: reachable, but the connection closed during the TLS handshake "
                f"({exc.strerror or exc}); is it a SuperLink with TLS?",
            )
    return CheckResult(
        name, "ok", f"{where}: reachable, TLS certificate verified for {host} ({ca}, {version})"
    )


# ---- all of it ---------------------------------------------------------------------------------


def run_checks(
    site_config: Path,
    *,
    superlink: str | None = None,
    root_certificates: Path | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> list[CheckResult]:
    """Every check, in the order the ClientApp meets them; a failed input skips what needs it."""
    results: list[CheckResult] = []
    config, site = _config(site_config)
    results.append(config)
    if site is None:
        results += [
            CheckResult(n, "skipped", "needs a valid site config")
            for n in ("schema", "data file", "state folder", "privacy ledger")
        ]
    else:
        schema_result, schema = _schema(site)
        results.append(schema_result)
        if schema is None:
            results.append(CheckResult("data file", "skipped", "needs a valid schema"))
        else:
            results += _data(site, schema)[0]
        later: list[Callable[[SiteConfig], CheckResult | None]] = [
            _state_folder,
            _ledger,
            _approvals,
            _withdrawals,
        ]
        for check in later:
            row = check(site)
            if row is not None:
                results.append(row)
    if superlink is not None:
        results.append(check_superlink(superlink, root_certificates, timeout=timeout))
    elif root_certificates is not None:
        results.append(
            CheckResult("superlink", "skipped", "--root-certificates needs --superlink HOST:PORT")
        )
    return results
