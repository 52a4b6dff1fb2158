"""docker-compose.yml, checked statically: the topology, what each service mounts, and that nothing it
names is missing. `docker compose config` also runs where the Compose plugin is installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from fedward.common.site_config import load_site_config
from tests.deploy.compose_file import exposed_ports, interpolate, mounts, normalised
from tests.deploy.conftest import REPO, SITES

CERTS_DIR = PurePosixPath("deploy/certs")  # the default of ${FEDWARD_CERTS}
DATA = "/var/lib/fedward/data"
STATE = "/var/lib/fedward/state"


def _services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def test_compose_has_the_coordinator_four_sites_monitoring_and_he(compose: dict[str, Any]) -> None:
    assert {"superlink", *SITES, "prometheus", "grafana", "he"} <= set(_services(compose))


def test_every_build_context_and_dockerfile_exists(compose: dict[str, Any]) -> None:
    built = set()
    for name, service in _services(compose).items():
        if "build" not in service:
            continue
        context = REPO / interpolate(service["build"]["context"])
        assert context.is_dir(), name
        dockerfile = context / interpolate(service["build"]["dockerfile"])
        assert dockerfile.is_file(), (name, dockerfile)
        built.add(dockerfile.relative_to(REPO).as_posix())
    assert built == {
        "deploy/Dockerfile.site",
        "deploy/Dockerfile.coordinator",
        "deploy/Dockerfile.he",
    }


def test_every_bind_mounted_repo_path_exists(compose: dict[str, Any], certs: Path) -> None:
    """Repository paths exist now; certificate paths are exactly files that make-certs.sh writes."""
    for name, service in _services(compose).items():
        for mount in mounts(service):
            if mount.kind != "bind":
                continue
            source = normalised(mount.source)
            assert not source.is_absolute(), (name, mount)
            if source.is_relative_to(CERTS_DIR):
                made = certs / source.relative_to(CERTS_DIR)
                assert made.is_file(), f"{name}: {mount.source} is not a file make-certs.sh writes"
            else:
                assert (REPO / source).exists(), (name, mount.source)


def test_certificate_mounts_fail_instead_of_creating_folders(compose: dict[str, Any]) -> None:
    """A missing key must stop `docker compose up`, not turn into an empty folder on the host."""
    for name, service in _services(compose).items():
        for entry in service.get("volumes", []):
            if isinstance(entry, dict) and entry["type"] == "bind":
                if normalised(interpolate(entry["source"])).is_relative_to(CERTS_DIR):
                    assert entry.get("bind", {}).get("create_host_path") is False, (name, entry)
                    assert entry.get("read_only") is True, (name, entry)
            else:
                source = entry.split(":")[0] if isinstance(entry, str) else ""
                assert "certs" not in source, f"{name}: {entry} should use the long syntax"


def test_every_named_volume_is_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in _services(compose).items():
        for mount in mounts(service):
            if mount.kind == "volume":
                assert mount.source in declared, (name, mount.source)


def test_each_site_has_its_own_data_and_state_volumes(compose: dict[str, Any]) -> None:
    seen: list[str] = []
    for site in SITES:
        by_target = {m.target: m for m in mounts(_services(compose)[site])}
        for target in (DATA, STATE):
            assert by_target[target].kind == "volume", (site, target)
            seen.append(by_target[target].source)
    assert len(set(seen)) == 2 * len(SITES), seen


def test_each_site_config_matches_its_service_and_mounts(compose: dict[str, Any]) -> None:
    """The mounted site config names the service's site, keeps its ledger on the state volume, reads
    its data from the data volume and its schema from a mounted file."""
    for site in SITES:
        service = _services(compose)[site]
        by_target = {m.target: m for m in mounts(service)}
        config_mount = by_target["/etc/fedward/site.toml"]
        assert config_mount.read_only
        config = load_site_config(REPO / normalised(config_mount.source))
        assert config.name == site
        assert config.state_dir == STATE
        assert PurePosixPath(config.data.path).parent == PurePosixPath(DATA)
        assert config.data.schema_file is not None
        schema = by_target[config.data.schema_file]
        assert schema.kind == "bind" and schema.read_only
        assert (REPO / normalised(schema.source)).is_file()


def test_a_site_mounts_only_its_own_private_key(compose: dict[str, Any]) -> None:
    for name, service in _services(compose).items():
        keys = [normalised(m.source) for m in mounts(service)]
        private = [k for k in keys if k.parent == CERTS_DIR / "keys" and k.suffix != ".pub"]
        if name in SITES:
            assert private == [CERTS_DIR / "keys" / name], name
        else:
            assert private == [], name
        assert CERTS_DIR / "ca.key" not in keys, f"{name} must not see the CA's private key"


def test_the_superlink_can_register_every_sites_public_key(compose: dict[str, Any]) -> None:
    targets = {m.target for m in mounts(_services(compose)["superlink"])}
    for site in SITES:
        assert f"/etc/fedward/node-keys/{site}.pub" in targets


def test_no_service_runs_privileged_or_gains_capabilities(compose: dict[str, Any]) -> None:
    for name, service in _services(compose).items():
        assert service.get("privileged", False) is False, name
        assert not service.get("cap_add"), name
        assert service.get("network_mode") != "host", name
        assert service.get("pid") != "host", name
        assert "no-new-privileges:true" in service.get("security_opt", []), name


def test_metrics_ports_are_not_published_to_the_host(compose: dict[str, Any]) -> None:
    for name, service in _services(compose).items():
        for port in service.get("ports", []):
            published = str(port).split(":")
            assert published[-1] not in {"9101", "9103", "9400"}, (name, port)
    for name in (
        "prometheus",
        "grafana",
    ):  # no login on Prometheus; Grafana's starts as admin/admin
        for port in _services(compose)[name]["ports"]:
            assert str(port).startswith("127.0.0.1:"), (name, port)


def test_the_control_plane_is_not_published_and_its_ca_stays_with_the_coordinator(
    compose: dict[str, Any],
) -> None:
    """Only the Fleet listener (8000) is published; the Control listener (loopback, 9093) is
    neither published nor exposed, and no site mounts the control-plane CA or its keys."""
    services = _services(compose)
    link = services["superlink"]
    assert [str(p) for p in link.get("ports", [])] == ["8000:8000"]
    assert 9093 not in exposed_ports(link)
    control_host = link.get("environment", {}).get("FEDWARD_CONTROL_HOST", "127.0.0.1")
    assert interpolate(str(control_host)) == "127.0.0.1"
    targets = {m.target for m in mounts(link)}
    assert {
        "/etc/fedward/certs/control-ca.pem",
        "/etc/fedward/certs/control.pem",
        "/etc/fedward/certs/control.key",
    } <= targets
    for name, service in services.items():
        if name == "superlink":
            continue
        for m in mounts(service):
            assert "control" not in PurePosixPath(m.source).name, (name, m.source)


def test_insecure_mode_is_off_unless_asked_for(compose: dict[str, Any]) -> None:
    for name in ("superlink", "he", *SITES):
        env = _services(compose)[name].get("environment", {})
        assert interpolate(str(env.get("FEDWARD_INSECURE", "0"))) == "0", name


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker binary on PATH")
def test_docker_compose_accepts_the_file() -> None:
    plugin = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, text=True, check=False, timeout=30
    )
    if plugin.returncode != 0:
        pytest.skip("docker is installed without the Compose plugin")
    done = subprocess.run(
        ["docker", "compose", "-f", str(REPO / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
