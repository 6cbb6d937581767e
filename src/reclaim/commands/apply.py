"""`apply`: a plan (a file, or the policy given now) carried out under the host's lock,
every object re-checked, every deletion journalled, what was freed measured."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime

from reclaim.apply import (
    ApplyResult,
    Outcome,
    apply_actions,
    free_bytes,
    measured_freed,
    settle_interrupted,
)
from reclaim.commands.plan import make_plan, measure_containers
from reclaim.commands.session import Session, utc_now
from reclaim.errors import UsageError
from reclaim.lock import apply_lock
from reclaim.model import Inventory
from reclaim.planfile import PlanFile
from reclaim.policy.plan import Action
from reclaim.policy.rules import Policy
from reclaim.recorder import Recorder
from reclaim.runtimes.base import BuildCachePruning, Runtime, UseWatch, UseWatching
from reclaim.state.journal import Journal
from reclaim.state.usage import Ledger

# Asked before anything is deleted, with the actions; False stops the apply.
Confirm = Callable[[tuple[Action, ...]], bool]
# Shows deletions as they go: given the actions, a context whose callback takes each outcome.
ApplyProgress = Callable[[tuple[Action, ...]],
                         AbstractContextManager[Callable[[Action, Outcome], None]]]


def _no_progress(actions: tuple[Action, ...]
                 ) -> AbstractContextManager[Callable[[Action, Outcome], None]]:
    return nullcontext(lambda action, outcome: None)


def apply_command(session: Session, *, plan_file: PlanFile | None = None,
                  policy: Policy | None = None, confirm: Confirm | None = None,
                  wait: bool = True, progress: ApplyProgress = _no_progress,
                  now: Callable[[], datetime] = utc_now) -> ApplyResult:
    """Either `plan_file` (re-validated against the engine as it is now) or `policy` (planned
    here and now). `confirm` None: no question asked."""
    if (plan_file is None) == (policy is None):
        raise UsageError("give either a plan file or a policy")
    runtime = session.open_runtime()
    try:
        engine = runtime.info()
        if plan_file is not None and (plan_file.engine_id, plan_file.data_root) != \
                (engine.engine_id, engine.data_root):
            raise UsageError(f"plan file {plan_file.path} was made for another engine "
                             f"({plan_file.endpoint}, id {plan_file.engine_id}, data root "
                             f"{plan_file.data_root}); this one is id {engine.engine_id}, "
                             f"data root {engine.data_root}; not applied here")
        with apply_lock(session.state_directory, wait=wait, on_wait=session.notify):
            # Watching the engine from before the inventory the actions are checked against:
            # whatever happens after that inventory, the watch sees. From now exactly, no
            # slack: the engine is on this host's clock, its times are in nanoseconds, and
            # anything earlier is in the inventory already (a name given a second ago would
            # only make apply skip an image for nothing).
            watch = runtime.watch_uses(now()) if isinstance(runtime, UseWatching) else None
            try:
                if plan_file is not None:
                    actions, created = plan_file.actions, plan_file.created_at
                    ledger = session.open_ledger(engine)
                    # A plan made earlier is re-validated against the engine as it is now.
                    before = measure_containers(session, runtime, runtime.inventory(), [
                        a.id for a in actions if a.kind == "container"])
                    Recorder(ledger).catch_up(before, now())
                else:
                    assert policy is not None
                    # Planned a moment ago from this very inventory: it is the "before".
                    made, before, ledger = make_plan(session, runtime, policy, now=now)
                    actions, created = made.actions, made.created_at
                try:
                    return _carry_out(session, runtime, ledger, before, actions, created,
                                      confirm=confirm, progress=progress, watch=watch, now=now)
                finally:
                    ledger.store.close()
            finally:
                if watch is not None:
                    watch.close()
    finally:
        runtime.close()


def _carry_out(session: Session, runtime: Runtime, ledger: Ledger, before: Inventory,
               actions: tuple[Action, ...], created: datetime, *, confirm: Confirm | None,
               progress: ApplyProgress, watch: UseWatch | None,
               now: Callable[[], datetime]) -> ApplyResult:
    journal = Journal(ledger.store)
    # Under the lock, before anything new: what an apply killed mid-way left unsettled.
    found = settle_interrupted(journal, before)
    if found:
        session.notify(f"{found} deletion(s) of an interrupted apply were confirmed and added "
                       "to the journal")
    if not actions:
        return ApplyResult()
    if confirm is not None and not confirm(actions):
        raise UsageError("not confirmed; nothing was deleted")
    cache_freed = 0

    def prune_cache(keep_storage: int | None, older_than: float | None) -> int:
        nonlocal cache_freed
        if not isinstance(runtime, BuildCachePruning):
            raise UsageError("this engine's adapter cannot prune a build cache")
        cache_freed = runtime.prune_build_cache(keep_storage, older_than)
        return cache_freed

    usage = ledger.images()
    # The filesystem's own count, beside the model's: read just before the first deletion
    # and once the after-inventory is taken.
    free_before = free_bytes(before.engine)
    with progress(actions) as shown:
        result = apply_actions(runtime, actions, before, usage, journal, now=now,
                               plan_created=created, build_cache=prune_cache, progress=shown,
                               watch=watch)
    after = runtime.inventory()
    free_after = free_bytes(after.engine)
    Recorder(ledger).catch_up(after, now())
    result.freed_bytes = measured_freed(before, after, cache_freed)
    if free_before is not None and free_after is not None:
        result.measured_freed_bytes = free_after - free_before
    if any(a.kind == "build-cache" for a in result.deleted):
        result.build_cache_freed_bytes = cache_freed
    return result
