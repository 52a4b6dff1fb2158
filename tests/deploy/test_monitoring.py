"""Prometheus and Grafana: every metrics port is scraped, and every metric the dashboard queries is one
the code defines, with labels it has. A renamed metric or label fails here, not on a blank panel."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.compose_file import exposed_ports, mounts, normalised
from tests.deploy.conftest import REPO

DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "fedward.json"
PROVISIONING = REPO / "deploy" / "grafana" / "provisioning"

Catalogue = dict[str, tuple[str, tuple[str, ...]]]  # metric name -> (type, label names)

# The coordinator's metrics (`fedward coordinator metrics`), as agreed with its author while it was
# being written. The last test checks them against its module when present.
COORDINATOR_METRICS: Catalogue = {
    "fedward_coordinator_rounds_completed": ("counter", ("run",)),
    "fedward_coordinator_current_round": ("gauge", ("run",)),
    "fedward_coordinator_round_duration_seconds": ("histogram", ("run",)),
    "fedward_coordinator_sites": ("gauge", ("run", "status")),
    "fedward_coordinator_site_epsilon": ("gauge", ("run", "site")),
    "fedward_coordinator_tune_auroc": ("gauge", ("run",)),
    "fedward_coordinator_audit_auc": ("gauge", ("run", "model", "attack")),
    "fedward_coordinator_runs": ("gauge", ("state",)),
}
# Labels Prometheus adds to every series it scrapes.
SCRAPE_LABELS = {"job", "instance"}
PROMETHEUS_SERIES: Catalogue = {"up": ("gauge", ())}


def _module(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def site_metrics() -> Catalogue:
    """``METRIC_PREFIX`` + every key of ``_GAUGES`` in client/site_metrics.py, read from the source."""
    prefix = gauges = None
    for node in _module(REPO / "client" / "site_metrics.py").body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        value = getattr(node, "value", None)
        if isinstance(target, ast.Name) and value is not None:
            if target.id == "METRIC_PREFIX":
                prefix = ast.literal_eval(value)
            elif target.id == "_GAUGES":
                gauges = ast.literal_eval(value)
    assert prefix and gauges, "client/site_metrics.py: METRIC_PREFIX or _GAUGES not found"
    return {prefix + key: ("gauge", tuple(labels)) for key, (_doc, labels) in gauges.items()}


def he_metrics() -> Catalogue:
    """Every Counter, Gauge and Histogram that server/he_service.py constructs, read from the source."""
    kinds = {"Counter": "counter", "Gauge": "gauge", "Histogram": "histogram"}
    found = {}
    for node in ast.walk(_module(REPO / "server" / "he_service.py")):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in kinds:
            name = ast.literal_eval(node.args[0])
            labels: tuple[str, ...] = ()
            if len(node.args) > 2:
                labels = tuple(ast.literal_eval(node.args[2]))
            for kw in node.keywords:
                if kw.arg == "labelnames":
                    labels = tuple(ast.literal_eval(kw.value))
            found[name] = (kinds[node.func.id], labels)  # type: ignore[attr-defined]
    assert found, "server/he_service.py: no metrics found"
    return found


def families() -> Catalogue:
    return {**site_metrics(), **he_metrics(), **COORDINATOR_METRICS}


def series_names() -> Catalogue:
    """The names Prometheus stores: a counter's ``_total``, a histogram's ``_bucket/_sum/_count``."""
    out: Catalogue = dict(PROMETHEUS_SERIES)
    for name, (kind, labels) in families().items():
        if kind == "counter":
            out[name.removesuffix("_total") + "_total"] = (kind, labels)
        elif kind == "histogram":
            out[name + "_bucket"] = (kind, (*labels, "le"))
            out[name + "_sum"] = out[name + "_count"] = (kind, labels)
        else:
            out[name] = (kind, labels)
    return out


# ---- reading PromQL --------------------------------------------------------------------------

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
_KEYWORDS |= {"and", "or", "unless", "inf", "nan"}


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names it matches on) of every series selector in a PromQL expression."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\[[^\]]*\]", "", text)  # range durations, [$__rate_interval]
    out = []
    for match in re.finditer(r"([A-Za-z_:][\w:]*)\s*(\{[^}]*\})?", text):
        name, matchers = match[1], match[2] or ""
        before = text[: match.start()].rstrip()
        after = text[match.end() :].lstrip()
        if not matchers and re.match(r"\(|(by|without)\b", after):  # a function, an aggregation
            continue
        if name in _KEYWORDS or re.search(
            r"\b(by|without|on|ignoring|group_\w+)\s*\([^)]*$", before
        ):
            continue  # a keyword, or a label inside by (...)
        labels = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers))
        out.append((name, labels))
    return out


def grouping_labels(expr: str) -> set[str]:
    return {
        label.strip()
        for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr)
        for label in group.split(",")
        if label.strip()
    }


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def panel_exprs(board: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    for var in board["templating"]["list"]:
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        inner = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
        assert inner, f"variable {var['name']}: {query}"
        out.append((f"variable {var['name']}", f"{inner[1]}{{{inner[2]}=~'.*'}}"))
    return out


# ---- the tests -------------------------------------------------------------------------------


def test_selector_reader_finds_metrics_and_labels() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le, method) "
        '(rate(fedward_he_request_seconds_bucket{method!="x"}[$__rate_interval]))) / up'
    )
    assert selectors(expr) == [("fedward_he_request_seconds_bucket", {"method"}), ("up", set())]


def test_prometheus_scrapes_every_metrics_port_the_compose_file_exposes(
    compose: dict[str, Any],
) -> None:
    config = yaml.safe_load((REPO / "deploy" / "prometheus.yml").read_text(encoding="utf-8"))
    scraped = {
        target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    exposed = {
        f"{name}:{port}"
        for name, service in compose["services"].items()
        for port in exposed_ports(service)
    }
    assert exposed == scraped
    mounted = {m.target: m for m in mounts(compose["services"]["prometheus"])}
    assert normalised(mounted["/etc/prometheus/prometheus.yml"].source).as_posix() == (
        "deploy/prometheus.yml"
    )


def test_grafana_provisions_the_datasource_the_dashboard_uses(compose: dict[str, Any]) -> None:
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090" and "prometheus" in compose["services"]
    uids = {
        json.dumps(p["datasource"], sort_keys=True)
        for p in dashboard()["panels"]
        if "datasource" in p
    }
    assert uids == {json.dumps({"type": "prometheus", "uid": source["uid"]}, sort_keys=True)}


def test_grafana_loads_the_dashboard_from_where_compose_mounts_it(compose: dict[str, Any]) -> None:
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "fedward.yml").read_text())
    (provider,) = providers["providers"]
    by_target = {m.target: m for m in mounts(compose["services"]["grafana"])}
    mount = by_target[provider["options"]["path"]]
    assert (REPO / normalised(mount.source) / DASHBOARD.name).is_file()
    assert by_target["/etc/grafana/provisioning"].source.endswith("deploy/grafana/provisioning")


def test_dashboard_panels_have_unique_ids_and_fit_the_grid() -> None:
    panels = dashboard()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for p in panels:
        grid = p["gridPos"]
        assert grid["x"] + grid["w"] <= 24, p["title"]


def test_every_metric_the_dashboard_queries_is_defined_with_those_labels() -> None:
    known = series_names()
    for title, expr in panel_exprs(dashboard()):
        found = selectors(expr)
        assert found, f"{title}: no metric in {expr}"
        for name, labels in found:
            assert name in known, f"panel '{title}': {name} is not a metric fedward defines"
            allowed = set(known[name][1]) | SCRAPE_LABELS
            assert labels <= allowed, f"panel '{title}': {name} has no label {labels - allowed}"
        for name, _ in found:
            allowed = set(known[name][1]) | SCRAPE_LABELS
            assert grouping_labels(expr) <= allowed, f"panel '{title}': {expr}"


@pytest.mark.parametrize(
    ("source", "reader"),
    [("site", site_metrics), ("he", he_metrics), ("coordinator", lambda: COORDINATOR_METRICS)],
)
def test_the_dashboard_shows_every_metric(source: str, reader: Any) -> None:
    used = {name for _, expr in panel_exprs(dashboard()) for name, _ in selectors(expr)}
    for name, (kind, _) in reader().items():
        stored = {
            "counter": [name.removesuffix("_total") + "_total"],
            "histogram": [name + "_bucket", name + "_sum", name + "_count"],
        }.get(kind, [name])
        assert used & set(stored), f"no panel shows {source} metric {name}"


def test_dashboard_has_the_panels_people_look_for() -> None:
    titles = " | ".join(p["title"].lower() for p in dashboard()["panels"])
    for words in (
        "rounds completed",
        "current round",
        "round duration",
        "sites by status",
        "ε per site",
        "lifetime ε",
        "auc",
        "tpr at 1% fpr",
        "lower bound",
        "latency",
        "requests",
        "errors",
    ):
        assert words in titles, words


def test_the_agreed_coordinator_names_are_what_its_metrics_module_serves(tmp_path: Path) -> None:
    """Once `fedward coordinator metrics` is in the tree, the list above must agree with it."""
    module = pytest.importorskip("fedward.server.coordinator_metrics")
    served = {
        family.name: (family.type, tuple(getattr(family, "_labelnames", ())))
        for family in module.metrics_registry(tmp_path / "runs").collect()
    }
    for name, (kind, labels) in COORDINATOR_METRICS.items():
        assert name in served, f"fedward coordinator metrics serves no {name}"
        assert served[name][0] == kind, name
        assert set(labels) <= set(served[name][1]), name
