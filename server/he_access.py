"""Who may ask the encrypted-inference service, how often, and how much: clients, rate, budget, log.

Model stealing is the risk a query budget answers (Tramèr et al. 2016, "Stealing Machine Learning
Models via Prediction APIs"): exact logits of a d-feature linear model reveal its weights after
d+1 independent queries, and an MLP's after more. Homomorphic encryption hides the patients from
the server, not the model from the clinic. So every client has a lifetime budget of predictions,
counted in the patients it declares (the server zeroes every other slot, see ``he_model``) and
kept in SQLite so a restart forgets nothing; a per-minute request limit; and an append-only log of
every request that records who, when, how many and how it ended, never a ciphertext.

Tokens are stored as SHA-256 hashes: the clients file can be read by an operator without handing
out the secrets, and a token is shown once, when it is made.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import threading
import time
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedward.common.errors import ConfigError, FedwardError

USAGE_DB = "he_usage.sqlite"
REQUEST_LOG = "he_requests.jsonl"


class AccessDenied(FedwardError):
    """Unknown or missing token."""


class LimitReached(FedwardError):
    """The client's rate limit or lifetime budget says no; the message says which and how much."""


class HEClient(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    query_budget: Annotated[int, Field(ge=0)] | Literal["unlimited"] = Field(
        default=100_000,
        description="Predictions (patients) this client may ask for over its lifetime, or "
        '"unlimited".',
    )
    requests_per_minute: int = Field(default=120, ge=1, le=1_000_000)

    @property
    def budget(self) -> int | None:
        """The lifetime budget; None when unlimited."""
        return None if self.query_budget == "unlimited" else int(self.query_budget)


class HEClientsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    client: list[HEClient] = Field(default_factory=list)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def load_clients(path: str | Path) -> dict[str, HEClient]:
    """Clients by token hash; a bad file is refused naming the field."""
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(file, None, "clients file not found") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(file, None, f"not readable TOML ({exc})") from None
    try:
        parsed = HEClientsFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ConfigError(file, field, first["msg"]) from None
    names = [c.name for c in parsed.client]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(file, "client.name", f"duplicate client name(s): {', '.join(dupes)}")
    return {c.token_sha256: c for c in parsed.client}


def add_client(
    path: str | Path, name: str, *, query_budget: int | None, requests_per_minute: int
) -> str:
    """Append a client with a fresh token to the clients file; returns the token (shown once)."""
    file = Path(path)
    existing = load_clients(file) if file.exists() else {}
    if any(c.name == name for c in existing.values()):
        raise ConfigError(file, "client.name", f"a client named '{name}' already exists")
    token = secrets.token_urlsafe(32)
    entry = HEClient(
        name=name,
        token_sha256=hash_token(token),
        query_budget="unlimited" if query_budget is None else query_budget,
        requests_per_minute=requests_per_minute,
    )
    budget = '"unlimited"' if entry.budget is None else str(entry.budget)
    lines = ["", "[[client]]", f'name = "{entry.name}"', f'token_sha256 = "{entry.token_sha256}"']
    lines.append(f"query_budget = {budget}")
    lines.append(f"requests_per_minute = {entry.requests_per_minute}")
    file.parent.mkdir(parents=True, exist_ok=True)
    with file.open("a", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    os.chmod(file, 0o600)
    return token


def authenticate(clients: dict[str, HEClient], token: str | None) -> HEClient:
    if not token:
        raise AccessDenied("no API token: send 'authorization: Bearer TOKEN'")
    digest = hash_token(token)
    for known, client in clients.items():
        if hmac.compare_digest(known, digest):
            return client
    raise AccessDenied("unknown API token")


class RateLimiter:
    """A token bucket per client: a minute's allowance as burst, refilled continuously."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, client: HEClient, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        capacity = float(client.requests_per_minute)
        with self._lock:
            level, last = self._buckets.get(client.name, (capacity, now))
            level = min(capacity, level + (now - last) * capacity / 60.0)
            if level < 1.0:
                wait = (1.0 - level) * 60.0 / capacity
                self._buckets[client.name] = (level, now)
                raise LimitReached(
                    f"client '{client.name}': rate limit of {client.requests_per_minute} requests "
                    f"per minute reached; retry in {wait:.1f} s"
                )
            self._buckets[client.name] = (level - 1.0, now)


class UsageLedger:
    """Predictions charged per client, append-only in SQLite; check-and-charge is one transaction."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._connect() as db:
            db.executescript(
                """
                CREATE TABLE IF NOT EXISTS usage (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    at TEXT NOT NULL,
                    client TEXT NOT NULL,
                    request_id TEXT NOT NULL,
                    n_patients INTEGER NOT NULL CHECK (n_patients >= 0)
                );
                CREATE INDEX IF NOT EXISTS usage_client ON usage (client);
                CREATE TRIGGER IF NOT EXISTS usage_no_update BEFORE UPDATE ON usage
                BEGIN SELECT RAISE(ABORT, 'the usage ledger is append-only'); END;
                CREATE TRIGGER IF NOT EXISTS usage_no_delete BEFORE DELETE ON usage
                BEGIN SELECT RAISE(ABORT, 'the usage ledger is append-only'); END;
                """
            )

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        return db

    def spent(self, client: str) -> int:
        with self._connect() as db:
            row = db.execute(
                "SELECT COALESCE(SUM(n_patients), 0) FROM usage WHERE client = ?", (client,)
            ).fetchone()
        return int(row[0])

    def remaining(self, client: HEClient) -> int | None:
        if client.budget is None:
            return None
        return max(client.budget - self.spent(client.name), 0)

    def charge(self, client: HEClient, n_patients: int, request_id: str) -> int | None:
        """Record ``n_patients`` predictions or refuse; returns what is left (None: no limit)."""
        with self._lock:
            db = self._connect()
            try:
                db.execute("BEGIN IMMEDIATE")
                (spent,) = db.execute(
                    "SELECT COALESCE(SUM(n_patients), 0) FROM usage WHERE client = ?",
                    (client.name,),
                ).fetchone()
                budget = client.budget
                if budget is not None and spent + n_patients > budget:
                    db.execute("ROLLBACK")
                    raise LimitReached(
                        f"client '{client.name}': query budget exhausted ({spent} of {budget} "
                        f"predictions used, {n_patients} asked)"
                    )
                db.execute(
                    "INSERT INTO usage (at, client, request_id, n_patients) VALUES (?, ?, ?, ?)",
                    (datetime.now(UTC).isoformat(), client.name, request_id, n_patients),
                )
                db.execute("COMMIT")
            finally:
                db.close()
        return None if budget is None else budget - spent - n_patients


class RequestLog:
    """One JSON line per request, fsynced: who, what method, how many, how it ended; no content."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        line = (json.dumps({"at": datetime.now(UTC).isoformat(), **record}) + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)


@dataclass(frozen=True)
class Access:
    """Everything the service consults before it evaluates anything."""

    clients: dict[str, HEClient]
    usage: UsageLedger
    log: RequestLog
    limiter: RateLimiter

    @classmethod
    def open(cls, clients: dict[str, HEClient], state_dir: str | Path) -> Access:
        state = Path(state_dir)
        return cls(
            clients, UsageLedger(state / USAGE_DB), RequestLog(state / REQUEST_LOG), RateLimiter()
        )
