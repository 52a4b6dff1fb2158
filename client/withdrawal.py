"""A site's withdrawals from runs: an append-only record in its state folder, honoured on every message.

A site that has approved a run may stop taking part in it (a complaint, a data problem, a change of
mind by its privacy officer). ``fedward site withdraw`` appends one JSON line to
``<state_dir>/withdrawals.jsonl`` — the run, who withdrew it, when and why — and fsyncs it, so the
decision survives a crash. Flower starts a fresh ClientApp per message, so the ClientApp reads the
file on every message and answers a withdrawn run with the same ``PolicyError`` refusal as an
unapproved one: the coordinator records the site as refused and goes on with the others.

A withdrawal names a run by fedward's run id (``fedward.run-id`` of the message; it also covers the
run's companion federations, ``<run id>-<name>``) or by a run config's full hash (it also covers the
federations derived from that config). Nothing in the privacy ledger changes: what was spent stays
spent. The file is never rewritten; an unreadable file refuses every run (fail closed), because
the site can no longer tell which runs it left.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from fedward.common.errors import FedwardError, PolicyError
from fedward.common.protocol import KEY_PARENT_RUN
from fedward.common.run_config import RunConfig
from fedward.common.site_messages import SiteMessage

WITHDRAWALS_FILE = "withdrawals.jsonl"
MAX_RUN_LENGTH = 256
MAX_REASON_LENGTH = 2000

Match = Literal["run-id", "config-hash"]
_FULL_HASH = re.compile(r"^[0-9a-f]{64}$")


class WithdrawalsError(FedwardError):
    """The withdrawals file cannot be read or written; names the file and the line at fault."""

    def __init__(self, path: str | Path, reason: str, *, site: str | None = None) -> None:
        self.path = str(path)
        self.reason = reason
        self.site = site
        super().__init__(f"withdrawals file '{self.path}': {reason}")

    def _default_message(self, site: str) -> SiteMessage:
        return SiteMessage("withdrawals-unreadable", {"site": site})


@dataclass(frozen=True)
class Withdrawal:
    """One withdrawal as recorded: the run, how it is matched, who withdrew it, when and why."""

    run: str
    match: Match
    site: str
    withdrawn_at: str
    withdrawn_by: str
    reason: str

    def covers(self, run_id: str, config_hashes: Iterable[str]) -> bool:
        """Whether a message of run ``run_id`` asking with these config hashes is withdrawn."""
        if self.match == "config-hash":
            return self.run in set(config_hashes)
        return run_id == self.run or run_id.startswith(self.run + "-")

    def describe(self) -> str:
        what = "run config" if self.match == "config-hash" else "run"
        return f"{what} {self.run}"


def withdrawals_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / WITHDRAWALS_FILE


def match_of(run: str) -> Match:
    """A full 64-hex-digit value is a run config hash; anything else is a fedward run id."""
    return "config-hash" if _FULL_HASH.match(run) else "run-id"


def read_withdrawals(state_dir: str | Path) -> list[Withdrawal]:
    """Every recorded withdrawal, oldest first; no file means none."""
    path = withdrawals_path(state_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise WithdrawalsError(
            path,
            f"cannot read it ({exc}); the site refuses every run until it can, because it "
            "cannot tell which runs it withdrew from",
        ) from exc
    out: list[Withdrawal] = []
    names = {f.name for f in fields(Withdrawal)}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if not isinstance(data, dict) or set(data) != names:
                raise ValueError(f"expected the keys {', '.join(sorted(names))}")
            if data["match"] not in ("run-id", "config-hash"):
                raise ValueError(f"unknown match '{data['match']}'")
            out.append(Withdrawal(**{k: str(v) for k, v in data.items()}))  # type: ignore[arg-type]
        except ValueError as exc:
            raise WithdrawalsError(
                path,
                f"line {number} is not a withdrawal record ({exc}); the file was damaged or "
                "edited. Repair it by hand, keeping every complete record: until then the site "
                "refuses every run",
            ) from exc
    return out


def find_withdrawal(
    state_dir: str | Path, run_id: str, config_hashes: Iterable[str]
) -> Withdrawal | None:
    hashes = list(config_hashes)
    for w in read_withdrawals(state_dir):
        if w.covers(run_id, hashes):
            return w
    return None


def _check_run(run: str) -> str:
    text = run.strip()
    if not text:
        raise FedwardError("RUN is empty: give a fedward run id or a run config's full hash")
    if len(text) > MAX_RUN_LENGTH or any(ch.isspace() or not ch.isprintable() for ch in text):
        raise FedwardError(
            f"RUN '{text[:40]}': a run id or config hash has no spaces or control characters "
            f"and at most {MAX_RUN_LENGTH} characters"
        )
    return text


def record_withdrawal(
    state_dir: str | Path, *, run: str, site: str, by: str, reason: str = ""
) -> Withdrawal:
    """Append one withdrawal and fsync it (and the folder, when the file is new)."""
    run = _check_run(run)
    if len(reason) > MAX_REASON_LENGTH:
        raise FedwardError(
            f"--reason is {len(reason)} characters long; at most {MAX_REASON_LENGTH}"
        )
    path = withdrawals_path(state_dir)
    read_withdrawals(state_dir)  # refuse to append to a damaged file: repair it first
    withdrawal = Withdrawal(
        run=run,
        match=match_of(run),
        site=site,
        withdrawn_at=datetime.now(UTC).isoformat(),
        withdrawn_by=by,
        reason=reason,
    )
    line = json.dumps(asdict(withdrawal), ensure_ascii=False, sort_keys=True) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists()
        if not new and path.stat().st_size and not path.read_bytes().endswith(b"\n"):
            raise WithdrawalsError(
                path, "its last line is incomplete (a crash while writing?); repair it by hand"
            )
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            data = line.encode("utf-8")
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:
            folder = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
    except OSError as exc:
        raise WithdrawalsError(path, f"cannot write it ({exc.strerror or exc})") from exc
    return withdrawal


def message_config_hashes(run: RunConfig, cfg: Mapping[str, Any]) -> list[str]:
    """The run config hashes a message answers to: its own, and its parent's for a companion."""
    hashes = [run.config_hash()]
    parent_text = str(cfg.get(KEY_PARENT_RUN, "") or "")
    if parent_text:
        hashes.append(RunConfig.from_json(parent_text).config_hash())
    return hashes


def refuse_if_withdrawn(
    state_dir: str | Path,
    *,
    site: str,
    run_id: str,
    run: RunConfig,
    cfg: Mapping[str, Any],
    config_file: str | None = None,
) -> None:
    """Raise the policy refusal for a run the site withdrew from; the ClientApp calls it per message.

    Who withdrew and why stay at the site (they are a person's name and free text); the reply names
    the withdrawal and its time.
    """
    try:
        found = find_withdrawal(state_dir, run_id, message_config_hashes(run, cfg))
    except WithdrawalsError as exc:
        exc.site = site
        raise
    if found is not None:
        raise PolicyError(
            site,
            f"this site withdrew from {found.describe()} at {found.withdrawn_at}; it takes no "
            f"further part in run {run_id} (`fedward site withdrawals` lists the withdrawals)",
            file=config_file,
        ).publicly("withdrawn")
