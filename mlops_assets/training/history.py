"""The audit trail of a registered model's ``production`` alias: which version served when,
what moved it, and on which evidence. MLflow keeps only an alias's present; this keeps its past.

The trail lives in the versioned store, in its own repository (``<dataset repository>-audit``,
so an entry never looks like new training data or new predictions to a sensor). Each move is
one JSON object under ``history/<registered model>/`` added by one commit: a commit is
immutable and names its parent, so the trail is append-only by construction, and
``append_only_problems`` says if anything ever changed or removed an entry. In production the
repository is a lakeFS repository; embedded, the local store on disk. Either way it outlives
every process (Dagster, the inference server, MLflow).

Plain library code: no Dagster, no MLflow.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from mlops_assets.store import NotFound, NothingToCommit, VersionedStore

PREFIX = "history/"
# What moved the alias.
FIRST_MODEL = "first_model"  # the gate passed the first version: it became production
PROMOTE = "promote"  # a canary or blue-green rollout promoted the candidate
ROLLBACK = "rollback"  # a rollout was rolled back: production kept serving, the candidate left
MANUAL = "manual"  # a person moved the alias (`mlops history NAME --set-production V`)
ACTIONS = (FIRST_MODEL, PROMOTE, ROLLBACK, MANUAL)


def audit_repository(dataset_repository: str) -> str:
    """The audit trail lives beside the data, in a repository of its own."""
    return f"{dataset_repository}-audit"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Entry:
    """One move of an alias. ``from_version``/``to_version`` are what served before and after
    (for a rollback: the candidate that was withdrawn, and the production that stayed)."""

    model: str
    action: str
    from_version: str | None
    to_version: str | None
    trigger: str  # new_data, drift, performance, freshness, a manual launch, cli
    reason: str
    run_id: str | None = None  # the Dagster run, if one did it
    actor: str = ""  # who: the Dagster run's launcher, or the person at the CLI
    alias: str = "production"
    evidence: dict = field(default_factory=dict)  # gate and canary figures, drift share
    at: str = ""  # ISO 8601, UTC; set by ``AuditTrail.append`` if empty

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"audit entry action {self.action!r}: use one of {ACTIONS}")

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, default=str).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Entry:
        return cls(**json.loads(data))

    def line(self) -> str:
        """One line a person reads: when, what, from -> to, who, why."""
        frm = f"v{self.from_version}" if self.from_version else "none"
        to = f"v{self.to_version}" if self.to_version else "none"
        run = f"run {self.run_id[:8]}" if self.run_id else "no run"
        who = f" by {self.actor}" if self.actor else ""
        return (
            f"{self.at}  {self.action:<11} {self.alias} {frm} -> {to}  "
            f"[{self.trigger}; {run}{who}]  {self.reason}"
        )

    def evidence_line(self) -> str:
        parts = []
        for k, v in sorted(self.evidence.items()):
            if isinstance(v, float):
                v = f"{v:.4g}"
            elif isinstance(v, dict):
                v = ", ".join(
                    f"{a}={b:.4g}" if isinstance(b, float) else f"{a}={b}"
                    for a, b in sorted(v.items())
                )
                v = "{" + v + "}"
            parts.append(f"{k}={v}")
        return "; ".join(parts)


@dataclass
class AuditTrail:
    """The trail of one registered model in ``store`` (its audit repository)."""

    store: VersionedStore
    model: str
    now: Callable[[], dt.datetime] = _now
    branch: str = "main"

    @property
    def prefix(self) -> str:
        return f"{PREFIX}{self.model}/"

    def location(self) -> str:
        return f"{self.store.describe()}:{self.branch}/{self.prefix}"

    def append(self, entry: Entry) -> tuple[Entry, str]:
        """Add ``entry`` (stamped with the time if it has none) in a commit of its own; the
        entry as stored and the commit that holds it. Never touches an existing entry."""
        when = self.now()
        if not entry.at:
            entry = Entry(**{**asdict(entry), "at": when.isoformat(timespec="microseconds")})
        stamp = when.strftime("%Y%m%dT%H%M%S%fZ")
        path = f"{self.prefix}{stamp}-{uuid.uuid4().hex[:8]}-{entry.action}.json"
        data = entry.to_json()
        self.store.ensure_repository()
        self.store.put(self.branch, path, data)
        frm, to = entry.from_version or "none", entry.to_version or "none"
        try:
            commit = self.store.commit(
                self.branch,
                f"{entry.action} {self.model}: {entry.alias} {frm} -> {to}",
                {"action": entry.action, "model": self.model, "path": path},
            ).id
        except NothingToCommit:
            # Staged objects of a branch are shared (lakeFS semantics): a concurrent append
            # committed ours with its own. It is in the history all the same.
            commit = self.store.head(self.branch)
            if self.store.get(commit, path) != data:
                raise
        return entry, commit

    def entries(self, ref: str | None = None) -> list[Entry]:
        """Every entry, oldest first (empty if nothing was ever recorded)."""
        ref = ref or self.branch
        try:
            paths = self.store.list(ref, self.prefix)
        except NotFound:
            return []
        found = [(p, Entry.from_json(self.store.get(ref, p))) for p in paths]
        return [e for _, e in sorted(found, key=lambda pe: (pe[1].at, pe[0]))]

    def append_only_problems(self, limit: int = 10_000) -> list[str]:
        """Commits that changed or removed an entry instead of adding one (empty: the trail
        was only ever appended to)."""
        try:
            commits = self.store.log(self.branch, limit=limit)
        except NotFound:
            return []
        problems = []
        for c in commits:
            for parent in c.parents[:1]:
                for change in self.store.diff(parent, c.id):
                    if change.path.startswith(self.prefix) and change.type != "added":
                        problems.append(
                            f"commit {c.id[:12]} ({c.message!r}) {change.type} {change.path}"
                        )
        return problems


def production_drift(entries: list[Entry], production: str | None) -> str | None:
    """If the alias is not where the last recorded move left it, say so: it was moved outside
    the platform (the MLflow UI, the API), so that move has no entry."""
    last = entries[-1].to_version if entries else None  # a rollback's: what kept serving
    if last == production:
        return None
    return (
        f"production is {('v' + production) if production else 'unset'}, but the last recorded "
        f"move left it at {('v' + last) if last else 'nothing'}: it was moved outside the "
        "platform (MLflow UI or API) and that move has no entry here"
    )
