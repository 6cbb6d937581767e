"""Sixty days of a CI host, one plan-and-apply a day, on a fake clock: what a daemon or a cron
job does. New images arrive daily, a hot set is used every day, a few are used once."""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from reclaim.accounting import Accounting
from reclaim.apply import apply_actions, measured_freed
from reclaim.model import Container, ContainerState, Event
from reclaim.policy.plan import plan
from reclaim.policy.rules import DAY, ImagePolicy, Policy
from reclaim.recorder import Recorder
from reclaim.runtimes.fake import FakeRuntime
from reclaim.state.journal import Journal
from reclaim.state.store import Store
from reclaim.state.usage import Ledger
from reclaim.units import Size

START = datetime(2026, 1, 1, tzinfo=UTC)
QUOTA = 40_000_000
MIN_AGE = 2 * DAY


def digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def test_sixty_days_under_a_quota(tmp_path: Path) -> None:
    rng = random.Random(60)
    fake = FakeRuntime()
    ledger = Ledger(Store(tmp_path / "docker-SIM.db"))
    recorder = Recorder(ledger)
    journal = Journal(ledger.store)
    policy = Policy(images=ImagePolicy(min_age=MIN_AGE, quota=Size(bytes=QUOTA)))
    hot = ["app:stable", "db:15"]
    bases = [(digest("base-a"), 3_000_000), (digest("base-b"), 2_500_000)]
    for tag, base in zip(hot, bases, strict=True):
        fake.add_image(digest(tag), tags=[tag], layers=[base, (digest(tag + "-own"), 1_000_000)])
    pinned = digest("db:15")
    fake.add_container(Container("f" * 64, "db", pinned, ContainerState.RUNNING, START))

    last_used: dict[str, datetime] = {}
    for day in range(60):
        now = START + timedelta(days=day, hours=3)
        # Two or three new builds arrive, sharing a base.
        for k in range(rng.randint(2, 3)):
            tag = f"build:{day}-{k}"
            fake.add_image(digest(tag), tags=[tag, f"build:sha-{day}{k}"],
                           layers=[rng.choice(bases), (digest(tag), rng.randint(1, 4) * 10**6)],
                           tagged_at=now)
        # Today's jobs: the hot images, and now and then an older build.
        used_today = [*hot]
        older = [i.id for i in fake.images.values() if i.id not in map(digest, hot)]
        if older and rng.random() < 0.5:
            used_today.append(rng.choice(older))
        events = []
        for ref in used_today:
            image_id = ref if ref.startswith("sha256:") else digest(ref)
            if image_id not in fake.images:
                continue
            when = now - timedelta(minutes=rng.randint(1, 120))
            cid = hashlib.sha256(f"{day}{ref}".encode()).hexdigest()
            events.append(Event(when, "container", "start", cid, image=image_id, name="job"))
            last_used[image_id] = max(last_used.get(image_id, when), when)
        recorder.catch_up(fake.inventory(), now)
        recorder.handle(sorted(events, key=lambda e: e.time), now)

        before = fake.inventory()
        made = plan(before, ledger.images(), policy, now)
        def clock(today: datetime = now) -> datetime:
            return today

        result = apply_actions(fake, made.actions, before, ledger.images(), journal,
                               now=clock, plan_created=now)
        after = fake.inventory()

        assert not result.failed and not result.skipped
        assert measured_freed(before, after) == made.predicted_bytes
        for action in result.deleted:
            # Nothing used within min_age goes; the in-use image never goes.
            assert action.id != pinned
            used = last_used.get(action.id)
            assert used is None or (now - used).total_seconds() >= MIN_AGE
        for tag in hot:
            assert digest(tag) in fake.images, f"day {day}: hot image {tag} deleted"
        store = Accounting(after).total_bytes()
        young = [i for i in after.images
                 if (now - ledger.images()[i.id].age_basis.when).total_seconds() < MIN_AGE]
        if store > QUOTA:
            # Over only when what is left is protected: in use, or younger than min_age.
            assert all(i.id == pinned or i in young or i.id in map(digest, hot)
                       for i in after.images), f"day {day}: over quota with eligible images"
            assert made.warnings

    assert len(journal.entries()) > 60  # it kept collecting, day after day
    ledger.store.close()
