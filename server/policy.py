"""The operator's policy (`vsteer serve --policy FILE`, YAML), reloaded on change.

    tenants:
      acme:
        keys: ["sk-acme-1"]              # API keys of this tenant
        artifacts: ["joyful", "refusal*"] # names it may use and list (glob; default "*")
        max_abs_scale: 4.0               # bound on every steering / force scale
        allow_ablate: false              # refusal `ablate` (operator-only by default)
        default_control:                 # merged under each request's `control`
          refusal: {mode: guard, direction: refusal}
        locked: [refusal]                # default_control parts a request cannot change
        rate_limit: {rps: 2, burst: 10}  # per key of this tenant (default: --rate-limit)

The file is re-read when its mtime or size changes (checked at most once per
RELOAD_CHECK_S); a file that fails to parse is logged and the previous policy stays.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vsteer.server.rate_limit import RateLimit

log = logging.getLogger("vsteer.policy")
RELOAD_CHECK_S = 1.0


def lockable() -> list[str]:
    """Every control's key (plugins/api.py): a tenant's default of any may be locked."""
    from vsteer.plugins.control_registry import installed_controls

    return sorted(installed_controls())


class TenantPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    keys: list[str] = Field(min_length=1)
    artifacts: list[str] = Field(default_factory=lambda: ["*"])
    max_abs_scale: float | None = Field(default=None, gt=0)
    allow_ablate: bool = False
    default_control: dict[str, Any] = Field(default_factory=dict)
    locked: list[str] = Field(default_factory=list)
    rate_limit: RateLimit | None = None

    def may_use(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pat) for pat in self.artifacts)


class PolicyDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenants: dict[str, TenantPolicy] = Field(default_factory=dict)


@dataclass(frozen=True)
class Tenant:
    name: str
    policy: TenantPolicy


@dataclass
class Policy:
    doc: PolicyDoc
    keys: list[tuple[bytes, str]] = field(default_factory=list)  # (key, tenant)

    @classmethod
    def parse(cls, text: str) -> Policy:
        raw = yaml.safe_load(text) or {}
        doc = PolicyDoc.model_validate(raw)
        for name, t in doc.tenants.items():
            bad = [p for p in t.locked if p not in lockable()]
            if bad:
                raise ValueError(f"tenant {name!r}: cannot lock {bad}; lockable: {lockable()}")
            missing = [p for p in t.locked if p not in t.default_control]
            if missing:
                raise ValueError(f"tenant {name!r}: locked {missing} has no default_control")
        keys = [(k.encode(), name) for name, t in doc.tenants.items() for k in t.keys]
        seen: set[bytes] = set()
        for k, name in keys:
            if k in seen:
                raise ValueError(f"tenant {name!r}: a key is listed twice")
            seen.add(k)
        return cls(doc, keys)

    def tenant_for(self, token: str) -> Tenant | None:
        """Constant time in the token: every key is compared, no early exit."""
        import hmac

        found: str | None = None
        t = token.encode()
        for key, name in self.keys:
            if hmac.compare_digest(t, key):
                found = name
        return Tenant(found, self.doc.tenants[found]) if found is not None else None


class PolicyFile:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self.reload_errors = 0
        self._policy = self._load()  # a bad file at start is fatal

    def _load(self) -> Policy:
        st = self.path.stat()
        policy = Policy.parse(self.path.read_text())
        self._stamp = (st.st_mtime_ns, st.st_size)
        return policy

    def current(self) -> Policy:
        now = time.monotonic()
        if now - self._checked < RELOAD_CHECK_S:
            return self._policy
        with self._lock:
            self._checked = now
            try:
                st = self.path.stat()
            except OSError as e:
                log.error("policy %s unreadable, keeping the previous one: %s", self.path, e)
                return self._policy
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                self._stamp = stamp  # a bad version is reported once, not every second
                try:
                    self._policy = Policy.parse(self.path.read_text())
                    log.info("policy reloaded from %s", self.path)
                except (OSError, ValueError, ValidationError, yaml.YAMLError) as e:
                    self.reload_errors += 1
                    log.error("policy %s not reloaded, keeping the previous one: %s",
                              self.path, e)
            return self._policy
