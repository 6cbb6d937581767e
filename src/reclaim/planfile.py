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
                **({"instance": a.instance} if a.kind == "volume" else {}),
                **({"keep_storage": a.prune[0], "older_than": a.prune[1]}
                   if a.prune is not None else {}),
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

    path: Path
    engine_id: str
    endpoint: str
    data_root: str | None
    created_at: datetime
    actions: tuple[Action, ...]
    predicted_bytes: int


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
    # Which engine the plan was made on: its id and its data root (see EngineInfo.identity).
    # A plan that does not say is refused, never taken to fit whatever engine answers now.
    engine_id = engine.get("id")
    if not isinstance(engine_id, str) or not engine_id:
        raise UsageError(f"{where}: engine.id is missing; a plan must name the engine it was "
                         "made on (make a new one with reclaim plan -o)")
    if "data_root" not in engine or not isinstance(engine["data_root"], str | None):
        raise UsageError(f"{where}: engine.data_root is missing; a plan must name the engine it "
                         "was made on (make a new one with reclaim plan -o)")
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
        instance = raw.get("instance", "")
        if not isinstance(instance, str):
            raise UsageError(f"{at}.instance: expected a string")
        if kind == "volume" and not instance:
            raise UsageError(f"{at}: a volume action must say which volume of that name it "
                             "means (instance); make a new plan with reclaim plan -o")
        prune = _prune_bounds(raw, at) if kind == "build-cache" else None
        actions.append(Action(
            kind=kind,
            id=_field(raw, "id", str, at),
            refs=tuple(refs),
            bytes=size,
            reason=Reason(str(reason.get("rule", "")), str(reason.get("detail", ""))),
            basis=parse_time(basis) if isinstance(basis, str) else None,
            instance=instance,
            prune=prune,
        ))
    seen: set[tuple[str, str]] = set()
    for n, action in enumerate(actions):
        if (action.kind, action.id) in seen:
            raise UsageError(f"{where}: actions[{n}] repeats {action.kind} {action.id}; a plan "
                             "lists each object once")
        seen.add((action.kind, action.id))
    predicted = _field(doc, "predicted_bytes", int, where)
    if predicted != sum(a.bytes for a in actions):
        raise UsageError(f"{where}: predicted_bytes does not equal the sum of the actions' bytes "
                         "(edited by hand?)")
    policy = _field(doc, "policy", dict, where)
    for n, action in enumerate(actions):
        why = _not_from_policy(action, policy)
        if why is not None:
            raise UsageError(f"{where}: actions[{n}] ({action.kind} {action.id}) is not what "
                             f"the plan's own policy makes: {why}")
    return PlanFile(
        path=path,
        engine_id=engine_id,
        endpoint=str(engine.get("endpoint") or ""),
        data_root=engine["data_root"],
        created_at=created,
        actions=tuple(actions),
        predicted_bytes=predicted,
    )


def _prune_bounds(raw: dict[str, Any], at: str) -> tuple[int | None, float | None]:
    keep, older = raw.get("keep_storage"), raw.get("older_than")
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 0):
        raise UsageError(f"{at}.keep_storage: expected a byte count or null")
    if older is not None and (isinstance(older, bool) or not isinstance(older, int | float)
                              or older < 0):
        raise UsageError(f"{at}.older_than: expected seconds or null")
    if keep is None and older is None:
        raise UsageError(f"{at}: a build-cache action needs keep_storage or older_than; an "
                         "unbounded prune is never sent")
    return keep, None if older is None else float(older)


def _not_from_policy(action: Action, policy: dict[str, Any]) -> str | None:
    """Why the plan's own policy (as the file records it) would not make this action."""
    def section(name: str) -> dict[str, Any]:
        value = policy.get(name)
        return value if isinstance(value, dict) else {}

    if action.kind == "image":
        images = section("images")
        if not any(images.get(k) is not None for k in ("max_age", "quota", "high",
                                                        "high_inodes")) \
                and images.get("dangling") != "after-min-age":
            return "it sets no images.max_age, quota, watermark or dangling rule"
    elif action.kind == "container":
        containers = section("containers")
        if containers.get("exited_after") is None and containers.get("created_after") is None:
            return "it sets no containers.exited_after or created_after"
    elif action.kind == "volume":
        volumes = section("volumes")
        if action.reason.rule == "with-container":
            if volumes.get("with_containers") is not True:
                return "it does not set volumes.with_containers"
        elif volumes.get("dangling_after") is None:
            return "it sets no volumes.dangling_after"
    elif action.kind == "build-cache":
        cache = section("build_cache")
        assert action.prune is not None
        keep, older = action.prune
        if cache.get("older_than") != older:
            return (f"older_than {older} is not the policy's build_cache.older_than "
                    f"{cache.get('older_than')}")
        want = cache.get("keep_storage")
        # A percentage is resolved against the filesystem when the plan is made: any byte
        # count may be its value; a byte count must be the very one.
        if (want is None) != (keep is None) or \
                (isinstance(want, int) and not isinstance(want, bool) and want != keep):
            return (f"keep_storage {keep} is not the policy's build_cache.keep_storage "
                    f"{want}")
    return None


def _field(doc: dict[str, Any], name: str, kind: type, where: str) -> Any:
    if name not in doc:
        raise UsageError(f"{where}: missing {name!r}")
    value = doc[name]
    if not isinstance(value, kind):
        raise UsageError(f"{where}: {name!r} should be {kind.__name__}, not "
                         f"{type(value).__name__}")
    return value
