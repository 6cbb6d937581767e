"""Plans as JSON (`reclaim.plan/v1`): written by `plan -o`, read back by `apply PLAN.json`.

Reading validates every field: a plan file is input, and bad input is a clear one-line error
before anything is deleted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from reclaim.errors import UsageError
from reclaim.policy.plan import Action, Plan, Reason
from reclaim.timeutil import format_time, parse_time

PLAN_SCHEMA = "reclaim.plan/v1"
KINDS = ("container", "image", "volume", "build-cache")


def plan_to_json(p: Plan) -> dict[str, Any]:
    engine = p.engine
    return {
        "schema": PLAN_SCHEMA,
        "created_at": format_time(p.created_at),
        "engine": {**engine.to_json(), "id": engine.engine_id},
        "policy": p.policy.describe(),
        "actions": [
            {
                "kind": a.kind,
                "id": a.id,
                "refs": list(a.refs),
                "bytes": a.bytes,
                "reason": {"rule": a.reason.rule, "detail": a.reason.detail},
                "basis": format_time(a.basis),
            }
            for a in p.actions
        ],
        "kept": [
            {"kind": k.kind, "id": k.id, "reason": {"rule": k.reason.rule,
                                                   "detail": k.reason.detail}}
            for k in p.kept
        ],
        "predicted_bytes": p.predicted_bytes,
        "warnings": list(p.warnings),
    }


@dataclass(frozen=True)
class PlanFile:
    """What apply needs of a plan file: for which engine, when, and the actions in order."""

    engine_id: str
    endpoint: str
    created_at: datetime
    actions: tuple[Action, ...]
    predicted_bytes: int
    # The build-cache prune's settings (keep-storage bytes, older-than seconds).
    build_cache: tuple[int | None, float | None] = (None, None)


def read_plan(path: Path) -> PlanFile:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise UsageError(f"plan file {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read plan file {path}: {exc}") from exc
    except ValueError as exc:
        raise UsageError(f"plan file {path} is not JSON: {exc}") from exc
    where = f"plan file {path}"
    if not isinstance(doc, dict) or doc.get("schema") != PLAN_SCHEMA:
        got = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise UsageError(f"{where}: not a {PLAN_SCHEMA} document (schema {got!r})")
    engine = _field(doc, "engine", dict, where)
    created = parse_time(_field(doc, "created_at", str, where))
    if created is None:
        raise UsageError(f"{where}: created_at is not an RFC 3339 time")
    actions = []
    for n, raw in enumerate(_field(doc, "actions", list, where)):
        at = f"{where}: actions[{n}]"
        if not isinstance(raw, dict):
            raise UsageError(f"{at} is not an object")
        kind = _field(raw, "kind", str, at)
        if kind not in KINDS:
            raise UsageError(f"{at}.kind: {kind!r} is not one of {', '.join(KINDS)}")
        refs = _field(raw, "refs", list, at)
        if not all(isinstance(r, str) for r in refs):
            raise UsageError(f"{at}.refs: expected strings")
        size = _field(raw, "bytes", int, at)
        if isinstance(size, bool) or size < 0:
            raise UsageError(f"{at}.bytes: expected a byte count")
        reason = _field(raw, "reason", dict, at)
        basis = raw.get("basis")
        actions.append(Action(
            kind=kind,
            id=_field(raw, "id", str, at),
            refs=tuple(refs),
            bytes=size,
            reason=Reason(str(reason.get("rule", "")), str(reason.get("detail", ""))),
            basis=parse_time(basis) if isinstance(basis, str) else None,
        ))
    predicted = _field(doc, "predicted_bytes", int, where)
    if predicted != sum(a.bytes for a in actions):
        raise UsageError(f"{where}: predicted_bytes does not equal the sum of the actions' bytes "
                         "(edited by hand?)")
    cache = (doc.get("policy") or {}).get("build_cache") or {}
    keep, older = cache.get("keep_storage"), cache.get("older_than")
    if (keep is not None and not isinstance(keep, int)) or \
            (older is not None and not isinstance(older, int | float)):
        raise UsageError(f"{where}: policy.build_cache settings are not numbers")
    return PlanFile(
        build_cache=(keep, older),
        engine_id=str(engine.get("id") or ""),
        endpoint=str(engine.get("endpoint") or ""),
        created_at=created,
        actions=tuple(actions),
        predicted_bytes=predicted,
    )


def _field(doc: dict[str, Any], name: str, kind: type, where: str) -> Any:
    if name not in doc:
        raise UsageError(f"{where}: missing {name!r}")
    value = doc[name]
    if not isinstance(value, kind):
        raise UsageError(f"{where}: {name!r} should be {kind.__name__}, not "
                         f"{type(value).__name__}")
    return value
