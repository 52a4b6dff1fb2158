"""A dishonest site and rewritten ledgers, with real processes on loopback: one SuperLink with TLS and
SuperNode authentication, five SuperNodes each with its own node key (deploy/make-certs.sh,
registered with `flwr supernode register`, bound to a site name with `fedward coordinator sites
add`), and one `fedward run` on a fresh coordinator that remembers no ledger heads.

* The impostor's key is registered as "impostor", but its SuperNode runs a copy of cleveland's site
  config, so its replies claim to be cleveland. They are refused and named (registered impostor,
  claimed cleveland); the honest cleveland trains and is never taken for rolled back.
* hungary, switzerland and va-long-beach each hold a ledger with history, rewritten before the run
  in one of the three ways its hash chain cannot see (last row truncated, a middle row deleted and
  the rest re-chained, rows edited and re-chained). `fedward site verify` fails each, and each site
  refuses the run itself: the anchor at the site catches what only a coordinator that remembered
  the head used to.

The SuperLink serves every API on one loopback port here; the split of its listeners is
test_control_plane.py's concern.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from fedward.client.cli import register as register_site_commands
from fedward.client.ledger import Ledger
from fedward.common.datasets.bundled import write_site_files
from fedward.server.exit_codes import read_record
from fedward.server.run_cli import coordinator_app
from tests.conftest import append_releases
from tests.e2e.followed_run import SITES, logistic_run_toml, progress_events, start_fedward_run
from tests.e2e.processes import (
    BIN,
    FAST_SUPERNODE,
    ProcessGroup,
    free_port,
    start_superlink,
    tls_connection_home,
)
from tests.ledger_tampering import TAMPERINGS

# Part of the security suite (`pytest -m security`): real processes, an attacker's moves.
pytestmark = [pytest.mark.slow, pytest.mark.security]
REPO = Path(__file__).resolve().parents[2]
HONEST = SITES[0]  # cleveland: trains
IMPOSTOR = "impostor"  # its own key, cleveland's site config
TAMPERED = dict(zip(SITES[1:], sorted(TAMPERINGS), strict=True))
KEYS = (*SITES, IMPOSTOR)
RUN_TOML = logistic_run_toml(
    "identity-proof",
    1,
    """
[strategy]
min_sites = 1
round_timeout = 60
""",
)


def _seed_history(config: Path) -> Path:
    """Four releases in the site's ledger, written by the ledger itself (so anchored)."""
    state = config.parent / "state"
    append_releases(Ledger(state), 4, dataset="heart-disease", run_id="earlier-run")
    return state


def _cli(app: typer.Typer, *args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, [*map(str, args)])
    return result.exit_code, " ".join(result.output.split())


def _site_verify(config: Path) -> tuple[int, str]:
    app = typer.Typer()
    register_site_commands(app)
    return _cli(app, "site", "verify", "--site-config", config)


def _register(env: dict[str, str], pubs: dict[str, Path], state: Path) -> None:
    """What the operator does once per site: the key at the SuperLink (`flwr`, all at once to
    spare the CLI's start-up) and its name in the coordinator's register."""
    calls = [
        subprocess.Popen(
            [str(BIN / "flwr"), "supernode", "register", str(pubs[name]), "fedward-test"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name in KEYS
    ]
    for call in calls:
        out, _ = call.communicate(timeout=120)
        assert call.returncode == 0, out
    root = typer.Typer()
    root.add_typer(coordinator_app, name="coordinator")
    for name in KEYS:
        code, said = _cli(
            root, "coordinator", "sites", "add", name, pubs[name], "--state-dir", state
        )
        assert code == 0, said


def _supernode(
    group: ProcessGroup,
    env: dict[str, str],
    port: int,
    certs: Path,
    key: str,
    config: Path,
    log: Path,
) -> None:
    group.start(
        [
            *FAST_SUPERNODE,
            "--root-certificates",
            str(certs / "ca.pem"),
            "--superlink",
            f"127.0.0.1:{port}",
            "--host",
            "127.0.0.1",
            "--port",
            str(free_port()),
            "--auth-supernode-private-key",
            str(certs / "keys" / key),
            "--node-config",
            f"site-config='{config}'",
        ],
        env=env,
        log=log,
    )


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("identity")
    port = free_port()
    certs = tmp / "certs"
    subprocess.run(
        ["bash", str(REPO / "deploy" / "make-certs.sh"), str(certs), "--sites", ",".join(KEYS)],
        check=True,
        capture_output=True,
    )
    env = tls_connection_home(
        tmp / "flwr_home", "fedward-test", f"127.0.0.1:{port}", certs / "ca.pem"
    )
    (tmp / "run.toml").write_text(RUN_TOML)
    configs = dict(
        zip(SITES, write_site_files("heart-disease", tmp / "sites", seed=3), strict=True)
    )
    # The impostor: cleveland's site config and data, its own key and state folder.
    shutil.copytree(configs[HONEST].parent, tmp / "sites" / IMPOSTOR)
    configs[IMPOSTOR] = tmp / "sites" / IMPOSTOR / configs[HONEST].name
    verified = {}
    for name, tampering in TAMPERED.items():
        state = _seed_history(configs[name])
        TAMPERINGS[tampering](state)
        verified[name] = _site_verify(configs[name])
    out = tmp / "runs"
    group = ProcessGroup()
    try:
        start_superlink(group, env, port, tmp, certs=certs)
        _register(env, {n: certs / "keys" / f"{n}.pub" for n in KEYS}, out / "coordinator-state")
        for name in KEYS:
            _supernode(group, env, port, certs, name, configs[name], tmp / f"supernode-{name}.log")
        # A fresh coordinator: the register of keys, no remembered ledger heads.
        assert not (out / "coordinator-state" / "ledger_heads.json").exists()
        runner = start_fedward_run(group, env, tmp / "run.toml", out, tmp / "run.log")
        runner.wait(timeout=300)
        runs = [p for p in out.iterdir() if p.name != "coordinator-state"]
        assert len(runs) == 1, (tmp / "run.log").read_text()[-4000:]
        yield {
            "run_dir": runs[0],
            "returncode": runner.returncode,
            "verified": verified,
        }
    finally:
        group.stop()


def _by_name(run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    record = read_record(run_dir)
    assert record is not None, f"no run record in {run_dir}"
    out: dict[str, list[dict[str, Any]]] = {}
    for site in record["sites"]:
        out.setdefault(site["site"], []).append(site)
    return out


def test_a_site_claiming_another_sites_name_is_refused_and_named(
    federation: dict[str, Any],
) -> None:
    run_dir = federation["run_dir"]
    sites = _by_name(run_dir)
    (impostor,) = sites[IMPOSTOR]
    assert impostor["status"] == "refused"
    assert f"registered as site '{IMPOSTOR}'" in impostor["reason"]
    assert f"claims to be site '{HONEST}'" in impostor["reason"]
    assert impostor["details"]["claimed_site"] == HONEST
    (honest,) = sites[HONEST]
    assert honest["status"] == "ok" and honest["rounds_ok"] == 1  # never taken for rolled back
    events = progress_events(run_dir)
    named = [e for e in events if e["event"] == "site-refused" and e.get("identity")]
    assert [(e["site"], e["claimed_site"]) for e in named] == [(IMPOSTOR, HONEST)]
    assert any(e["event"] == "site-identities" and e["bound"] for e in events)
    assert federation["returncode"] == 4  # a model, with sites left out


@pytest.mark.parametrize("name", sorted(TAMPERED))
def test_each_rewritten_ledger_fails_site_verify(federation: dict[str, Any], name: str) -> None:
    code, said = federation["verified"][name]
    assert code == 1 and "BROKEN" in said, said
    expected = "chain recomputed" if TAMPERED[name] == "edit-and-rechain" else "deleted"
    assert expected in said, said


@pytest.mark.parametrize("name", sorted(TAMPERED))
def test_each_rewritten_ledger_is_refused_with_a_fresh_coordinator(
    federation: dict[str, Any], name: str
) -> None:
    (site,) = _by_name(federation["run_dir"])[name]
    assert site["status"] == "refused", site
    assert "ledger" in (site["reason"] or ""), site
