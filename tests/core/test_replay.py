"""Replay determinism (SPEC §1.5): the same input sequence gives byte-identical events and
state — also when the state is saved and reloaded between inputs, as the shell does."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from rater.core.engine import apply, balance_event, on_time
from rater.core.inputs import (
    AutoRechargeConfigured,
    Cdr,
    FundsAdded,
    Input,
    LicensesAssigned,
    RechargeResult,
    TenantUpserted,
    UserRemoved,
)
from rater.core.money import format_decimal
from rater.core.steps import Step

from .kit import CTX, GB, IN, US, US_PREMIUM, US_TOLL_FREE, IdStore, t

START = t("2026-10-28T00:00:00Z")
MINUTE = 60_000_000
Tick = int
"""A time step in the sequence: minutes to advance, then ``on_time``."""


def _inputs() -> st.SearchStrategy[list[Input | Tick]]:
    ids = st.integers(1, 30).map(lambda n: f"id{n}")  # small id space: repeats and conflicts happen
    users = st.sampled_from(("u1", "u2", "u3"))
    money = st.integers(0, 5000).map(lambda c: format_decimal(c, 2))
    when = st.integers(-400 * 24 * 60, 0).map(lambda m: START + m * MINUTE)
    cdr = st.builds(
        lambda uid, user, call_type, dest, back, secs: Cdr(
            "t1", uid, "c", None, user, "US", call_type, "geographic", "+14155550100", dest,
            START + back * MINUTE, START + back * MINUTE + secs * 1_000_000, secs),
        ids, users, st.sampled_from(("user_out", "conf_out", "ucap_out", "user_in")),
        st.sampled_from((US, GB, IN, US_PREMIUM, US_TOLL_FREE, "911", "+33123456789")),
        st.integers(0, 90 * 24 * 60), st.integers(0, 9000))
    commands = st.one_of(
        st.builds(lambda i, u, caps: LicensesAssigned("t1", i, u, "US", tuple(caps)), ids, users,
                  st.lists(st.sampled_from([c.id for c in CTX.catalog.capabilities]), max_size=3, unique=True)),
        st.builds(lambda i, u: UserRemoved("t1", i, u), ids, users),
        st.builds(lambda i, a, w: FundsAdded("t1", i, a, "USD", w), ids, money, when),
        st.builds(lambda i, e, a, b: AutoRechargeConfigured("t1", i, e, a, b), ids, st.booleans(), money, money),
        st.builds(lambda n, ok, a: RechargeResult("t1", f"t1/recharge/{n}", "succeeded" if ok else "failed", a,
                                                 "USD", None, START), st.integers(1, 3), st.booleans(), money),
    )
    ticks = st.integers(1, 60 * 24 * 40)
    return st.lists(st.one_of(cdr, commands, ticks), max_size=40)


def _run(sequence: list[Input | Tick], *, reload: bool) -> bytes:
    step = apply(None, TenantUpserted("t1", "create", "US", "USD", "prepaid_credits", "1.00"), CTX, START, "p/0/0")
    state = step.state
    assert state is not None
    now = START
    store = IdStore()
    log = [out.payload for out in step.outputs]
    for n, item in enumerate(sequence, start=1):
        if reload:
            state = store.save_and_load(state)
        if isinstance(item, int):
            now += item * MINUTE
            result: Step = on_time(state, CTX, now)
        else:
            result = apply(state, item, CTX, now, f"p/0/{n}")
            if isinstance(item, Cdr) and result.rejection is None:
                now = max(now, item.end_us)
        log.extend(out.payload for out in result.outputs)
        if result.balance_cause is not None:
            log.append(balance_event(state, CTX, result.now_us, result.balance_cause).payload)
        log.append({"rejection": None if result.rejection is None else result.rejection.reason})
    return orjson.dumps({"events": log, "state": state.to_dict(), "ids": store.everything(state)},
                        option=orjson.OPT_SORT_KEYS)


@settings(max_examples=150, deadline=None)
@given(_inputs())
def test_1_5_the_same_input_sequence_gives_byte_identical_events_and_state(sequence: list[Input | Tick]) -> None:
    assert _run(sequence, reload=False) == _run(sequence, reload=False)


@settings(max_examples=150, deadline=None)
@given(_inputs())
def test_1_5_saving_and_reloading_the_state_between_inputs_changes_nothing(sequence: list[Input | Tick]) -> None:
    assert _run(sequence, reload=True) == _run(sequence, reload=False)
