"""The go/no-go decision as a table of cases, with frozen time. evaluate() is pure: each case is a
snapshot and a moment, and the answer must list every blocker."""

from datetime import UTC, datetime, time, timedelta

import pytest

from deployments.decision import DecisionInput, Gate, Rejection, RoleState, evaluate
from deployments.lib.windows import WeeklyWindow

# Friday 2026-11-20 17:30 UTC: inside "Fri 16:00 – Mon 08:00 UTC", outside "Sun 02:00–06:00".
FRIDAY_EVENING = datetime(2026, 11, 20, 17, 30, tzinfo=UTC)
TUESDAY_NOON = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SUNDAY_3AM = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)

FREEZE = WeeklyWindow(4, time(16, 0), 0, time(8, 0), "UTC", "Weekend freeze")
MAINTENANCE = WeeklyWindow(6, time(2, 0), 6, time(6, 0), "UTC", "Sunday window")

ALL_ROLES_SIGNED = (
    RoleState("Backend Engineer", 1, ("ana",)),
    RoleState("DevOps Engineer", 1, ("dev",)),
    RoleState("Security Review", 1, ("sec",)),
    RoleState("Technical Lead", 1, ("tl",)),
    RoleState("Code review", 2, ("ana", "bob")),
)


def base(**changes) -> DecisionInput:
    values = dict(
        environment="production",
        production=True,
        status="in_review",
        roles=ALL_ROLES_SIGNED,
        link="/p/shop/releases/1/",
    )
    values.update(changes)
    return DecisionInput(**values)


CASES = [
    # (id, snapshot, at, expected decision, expected reason codes in order)
    ("all clear", base(), TUESDAY_NOON, "go", []),
    (
        "unticked no-go gate",
        base(gates=(Gate("1", "Database backup verified", "no-go", "open"),)),
        TUESDAY_NOON,
        "no-go",
        ["gate_no_go"],
    ),
    (
        "ticked and n/a gates pass",
        base(gates=(Gate("1", "Backup", "no-go", "done"), Gate("2", "Old step", "no-go", "na"))),
        TUESDAY_NOON,
        "go",
        [],
    ),
    (
        "conditional accepted in production",
        base(
            gates=(
                Gate(
                    "3",
                    "Load test",
                    "conditional",
                    "open",
                    accepted_until=TUESDAY_NOON + timedelta(days=1),
                ),
            )
        ),
        TUESDAY_NOON,
        "go",
        [],
    ),
    (
        "conditional acceptance expired blocks again",
        base(
            gates=(
                Gate(
                    "3",
                    "Load test",
                    "conditional",
                    "open",
                    accepted_until=TUESDAY_NOON - timedelta(minutes=1),
                ),
            )
        ),
        TUESDAY_NOON,
        "no-go",
        ["gate_conditional"],
    ),
    (
        "conditional cannot be accepted outside production",
        base(
            production=False,
            environment="staging",
            gates=(
                Gate(
                    "3",
                    "Load test",
                    "conditional",
                    "open",
                    accepted_until=TUESDAY_NOON + timedelta(days=1),
                ),
            ),
        ),
        TUESDAY_NOON,
        "no-go",
        ["gate_conditional"],
    ),
    (
        "warning acknowledged passes",
        base(gates=(Gate("4", "Disk at 70%", "warning", "open", acknowledged=True),)),
        TUESDAY_NOON,
        "go",
        [],
    ),
    (
        "warning unacknowledged blocks",
        base(gates=(Gate("4", "Disk at 70%", "warning", "open"),)),
        TUESDAY_NOON,
        "no-go",
        ["gate_warning"],
    ),
    (
        "missing roles each listed with counts",
        base(roles=(RoleState("Security Review", 1, ()), RoleState("Code review", 2, ("ana",)))),
        TUESDAY_NOON,
        "no-go",
        ["signoff_missing", "signoff_missing"],
    ),
    (
        "a rejection blocks",
        base(rejections=(Rejection("Security Review", "sec", "CVE open"),)),
        TUESDAY_NOON,
        "no-go",
        ["signoff_rejected"],
    ),
    ("inside a freeze", base(freezes=(FREEZE,)), FRIDAY_EVENING, "no-go", ["freeze"]),
    ("outside the freeze", base(freezes=(FREEZE,)), TUESDAY_NOON, "go", []),
    (
        "outside maintenance windows",
        base(maintenance=(MAINTENANCE,)),
        TUESDAY_NOON,
        "no-go",
        ["maintenance_window"],
    ),
    ("inside a maintenance window", base(maintenance=(MAINTENANCE,)), SUNDAY_3AM, "go", []),
    (
        "notice not met",
        base(
            min_notice=timedelta(hours=24),
            planned_start=TUESDAY_NOON + timedelta(hours=2),
            approval_time=TUESDAY_NOON,
        ),
        TUESDAY_NOON,
        "no-go",
        ["notice"],
    ),
    (
        "notice met",
        base(
            min_notice=timedelta(hours=24),
            planned_start=TUESDAY_NOON + timedelta(hours=30),
            approval_time=TUESDAY_NOON,
        ),
        TUESDAY_NOON,
        "go",
        [],
    ),
    (
        "notice without planned start",
        base(min_notice=timedelta(hours=24)),
        TUESDAY_NOON,
        "no-go",
        ["notice"],
    ),
    (
        "previous environment not verified",
        base(previous=("staging", "deployed")),
        TUESDAY_NOON,
        "no-go",
        ["previous_environment"],
    ),
    (
        "previous environment verified",
        base(previous=("staging", "verified")),
        TUESDAY_NOON,
        "go",
        [],
    ),
    (
        "environment locked",
        base(lock=("database migration in progress", "dana", TUESDAY_NOON - timedelta(hours=1))),
        TUESDAY_NOON,
        "no-go",
        ["locked"],
    ),
    (
        "open P1 incident",
        base(incidents=(("INC-7", "P1", "Checkout down"),)),
        TUESDAY_NOON,
        "no-go",
        ["incident"],
    ),
    (
        "everything at once lists every blocker",
        base(
            gates=(
                Gate("1", "Backup", "no-go", "open"),
                Gate("2", "Perf", "conditional", "open"),
                Gate("3", "Disk", "warning", "open"),
            ),
            roles=(RoleState("Security Review", 1, ()),),
            rejections=(Rejection("Technical Lead", "tl", "not ready"),),
            freezes=(FREEZE,),
            min_notice=timedelta(hours=24),
            previous=("staging", "failed"),
            lock=("hold", "dana", FRIDAY_EVENING),
            incidents=(("INC-1", "P1", "Down"),),
        ),
        FRIDAY_EVENING,
        "no-go",
        [
            "gate_no_go",
            "gate_conditional",
            "gate_warning",
            "signoff_rejected",
            "signoff_missing",
            "freeze",
            "notice",
            "previous_environment",
            "locked",
            "incident",
        ],
    ),
]


@pytest.mark.parametrize(
    ("snapshot", "at", "expected", "codes"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_decision_table(snapshot, at, expected, codes):
    decision = evaluate(snapshot, at)
    assert decision.decision == expected
    assert [r.code for r in decision.reasons] == codes


def test_reasons_say_what_and_how_much():
    decision = evaluate(
        base(
            gates=(Gate("1", "Database backup verified", "no-go", "open"),),
            roles=(RoleState("Code review", 2, ("ana",)),),
            freezes=(FREEZE,),
        ),
        FRIDAY_EVENING,
    )
    messages = [r.message for r in decision.reasons]
    assert "NO-GO gate not ticked: Database backup verified" in messages
    assert "Sign-off missing: Code review needs 1 more (1 of 2)" in messages
    assert "Weekend freeze in force until Mon 2026-11-23 08:00 UTC" in messages
    assert all(r.link.startswith("/p/shop/releases/1/") for r in decision.reasons)


def test_freeze_window_follows_its_time_zone_across_daylight_saving():
    berlin = WeeklyWindow(4, time(16, 0), 0, time(8, 0), "Europe/Berlin")
    # 2026-03-27 is a Friday in CET (UTC+1); 15:30 UTC is 16:30 in Berlin: frozen.
    assert berlin.contains(datetime(2026, 3, 27, 15, 30, tzinfo=UTC))
    assert not berlin.contains(datetime(2026, 3, 27, 14, 30, tzinfo=UTC))
    # Clocks go forward on Sunday 29 March; Monday 08:00 CEST is 06:00 UTC.
    assert berlin.contains(datetime(2026, 3, 30, 5, 59, tzinfo=UTC))
    assert not berlin.contains(datetime(2026, 3, 30, 6, 0, tzinfo=UTC))
    assert berlin.next_end(datetime(2026, 3, 28, 12, 0, tzinfo=UTC)) == datetime(
        2026, 3, 30, 6, 0, tzinfo=UTC
    )


def test_window_within_one_day():
    assert MAINTENANCE.contains(SUNDAY_3AM)
    assert not MAINTENANCE.contains(SUNDAY_3AM + timedelta(hours=3))
    assert MAINTENANCE.next_start(TUESDAY_NOON) == datetime(2026, 11, 29, 2, 0, tzinfo=UTC)
