"""Errors a person reads: each names the file, field, site or column at fault."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

from fedward.common.site_messages import SiteMessage


class FedwardError(Exception):
    """Base class for every error fedward raises on purpose.

    Its text is for the person at the machine that raised it. What a site may send about it is a
    templated message (``fedward.common.site_messages``): ``publicly`` picks the template, and
    ``public_message`` falls back to one per class that names no data.
    """

    code: str | None = None
    slots: dict[str, Any]

    def publicly(self, code: str, **slots: Any) -> Self:
        """Set the template a site sends for this error (its slots checked again at egress)."""
        self.code = code
        self.slots = slots
        return self

    def public_message(self, site: str) -> SiteMessage:
        if self.code is not None:
            return SiteMessage(self.code, {"site": site, **getattr(self, "slots", {})})
        return self._default_message(site)

    def _default_message(self, site: str) -> SiteMessage:
        return SiteMessage("refused", {"site": site, "error": type(self).__name__})


class ConfigError(FedwardError):
    """A configuration file (run or site) is missing, unreadable or invalid."""

    def __init__(self, path: str | Path | None, field: str | None, reason: str) -> None:
        self.path = str(path) if path is not None else None
        self.field = field
        self.reason = reason
        where = self.path or "<config>"
        if field:
            where += f": field '{field}'"
        super().__init__(f"{where}: {reason}")

    def _default_message(self, site: str) -> SiteMessage:
        if self.path is not None and self.path.startswith("<"):
            # "<run config from coordinator>": the coordinator's own config, not the site's.
            what = next((w for w in ("run config", "data schema") if w in self.path), None)
            return SiteMessage(
                "coordinator-config-invalid", {"site": site, "what": what or "configuration"}
            )
        return SiteMessage("site-config-invalid", {"site": site})


class PolicyError(FedwardError):
    """A site's own policy refuses what the coordinator asked for."""

    def __init__(self, site: str, reason: str, *, file: str | Path | None = None) -> None:
        self.site = site
        self.file = str(file) if file is not None else None
        self.reason = reason
        where = f"site '{site}'" + (f", policy in '{self.file}'" if self.file else "")
        super().__init__(f"{where}: {reason}")

    def _default_message(self, site: str) -> SiteMessage:
        return SiteMessage("policy-refused", {"site": site, "policy": "request not allowed"})


class SiteDataError(FedwardError):
    """A site's data does not satisfy the declared schema; names site, file and column."""

    def __init__(
        self,
        site: str,
        reason: str,
        *,
        file: str | Path | None = None,
        column: str | None = None,
        detail: str | None = None,
    ) -> None:
        self.site = site
        self.file = str(file) if file is not None else None
        self.column = column
        self.reason = reason
        # Example cell values and row numbers: shown to the site's operator, never sent away.
        self.detail = detail
        parts = [f"site '{site}'"]
        if self.file:
            parts.append(f"file '{self.file}'")
        if column:
            parts.append(f"column '{column}'")
        self._public = ", ".join(parts) + f": {reason}"
        super().__init__(self._public + (f" ({detail})" if detail else ""))

    def public(self) -> str:
        """The message without per-row details, for the site's own console."""
        return self._public

    def _default_message(self, site: str) -> SiteMessage:
        if self.column:
            return SiteMessage("column-invalid", {"site": site, "column": self.column})
        return SiteMessage("data-invalid", {"site": site})


class MessageError(FedwardError):
    """A Flower message lacks a record or key, or one holds the wrong type; names record and key.

    Raised at a site for what the coordinator sent, so the site answers with a structured refusal
    instead of an unexplained ``KeyError``.
    """

    def __init__(self, record: str, key: str | None, reason: str) -> None:
        self.record = record
        self.key = key
        self.reason = reason
        self.field = f"{record}['{key}']" if key else record
        super().__init__(
            f"message record '{record}'" + (f", key '{key}'" if key else "") + f": {reason}"
        )

    def _default_message(self, site: str) -> SiteMessage:
        if self.key:
            return SiteMessage(
                "message-invalid", {"site": site, "record": self.record, "key": self.key}
            )
        return SiteMessage("message-record-invalid", {"site": site, "record": self.record})
