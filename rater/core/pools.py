"""Pools of included minutes: their sizes, the report of them, and drawing from them.

A pool is keyed by (capability, location, scope, month); its size is the minutes per
licence of the catalog's allotment times the licences held (SPEC §1.2). A call's draws
are planned here — seconds from the pools that may pay it, in the catalog's order,
before credits pay the rest — and committed with the rest of its rating
(:mod:`rater.core.rating`).
"""

from __future__ import annotations

from typing import Any

from rater.core.context import RatingContext
from rater.core.destinations import Destination
from rater.core.inputs import USER_OUT, Cdr
from rater.core.plans import ANY_LOCATION
from rater.core.state import PoolKey, TenantState, User
from rater.core.steps import Work


def pool_size_s(state: TenantState, ctx: RatingContext, key: PoolKey) -> int:
    """A pool's size in seconds: minutes per licence × licences (current ones for the
    open month, the counts at its end for a closed month)."""
    size = state.sizes.get(key)
    if size is None:
        size = state.sizes[key] = _pool_size_s(state, ctx, key)
    return size


def _pool_size_s(state: TenantState, ctx: RatingContext, key: PoolKey) -> int:
    cap_id, location, scope, month = key
    allotment = ctx.catalog.allotments.get((cap_id, scope))
    if allotment is None:
        return 0
    counts = _counts(state, month)
    if location == ANY_LOCATION:
        minutes = sum(n * allotment.minutes_for(loc) for (c, loc), n in counts.items() if c == cap_id)
    else:
        held = counts.get((cap_id, location), 0)
        minutes = held * allotment.minutes_for(location) if held else 0
    return minutes * 60


def _counts(state: TenantState, month: str) -> dict[tuple[str, str], int]:
    """The licence counts that size ``month``'s pools. Counts have not changed since the
    tenant's open month began, so they size every month from it on (even before time
    reaches it); a closed month uses the counts frozen at its end."""
    return state.licences if month >= state.open_month else state.frozen.get(month, {})


def pool_report(state: TenantState, ctx: RatingContext) -> list[dict[str, Any]]:
    """Every pool of the open month that has a size, and every pool drawn from."""
    return _report(state, ctx, set(state.pools), state.licences, state.open_month)


def month_pools(state: TenantState, ctx: RatingContext, month: str) -> list[dict[str, Any]]:
    """Every pool of ``month`` (open, closed or to come) that has a size or was drawn from."""
    return _report(state, ctx, {key for key in state.pools if key[3] == month}, _counts(state, month), month)


def _report(state: TenantState, ctx: RatingContext, keys: set[PoolKey], counts: dict[tuple[str, str], int],
            month: str) -> list[dict[str, Any]]:
    """The pools ``keys`` and those the licence ``counts`` give ``month``, with a size or a draw."""
    for (cap_id, location), n in counts.items():
        cap = ctx.catalog.by_id.get(cap_id)
        if cap is None or n == 0:
            continue
        for allotment in cap.pools:
            loc = ANY_LOCATION if allotment.scope == "zone_a" else location
            keys.add((cap_id, loc, allotment.scope, month))
    report = []
    for key in sorted(keys):
        size = pool_size_s(state, ctx, key)
        use = state.pools.get(key)
        used = use.used_s if use else 0
        if size == 0 and used == 0:
            continue
        report.append({
            "capability": key[0], "location": key[1], "scope": key[2], "month": key[3],
            "size_seconds": size, "used_seconds": used, "available_seconds": max(0, size - used),
        })
    return report


_ANY = (ANY_LOCATION,)


def draw_pools(work: Work, cdr: Cdr, user: User | None, dest: Destination, month: str, *,
               draws: list[tuple[PoolKey, int, int]]) -> int:
    """Plan the pool draws (per exact second) of a call to ``dest`` billed in ``month``:
    (pool, seconds drawn, pool size) are appended to ``draws`` in drawing order. Returns
    the seconds no pool covers."""
    left = cdr.duration_s
    if not left:
        return 0
    state, ctx = work.tenant, work.ctx
    # The pools that may pay this call, in the order they are drawn (SPEC §1.2, §1.6).
    country = dest.country
    if country is None or dest.premium:
        return left
    if cdr.call_type in USER_OUT and user is not None:
        location = cdr.user_location
        scope = "domestic" if country == location else "international"
        capabilities = ctx.catalog.pool_order(user.capabilities, scope)
    elif cdr.call_type == "conf_out" and country in ctx.catalog.zone_a:
        location, scope = ANY_LOCATION, "zone_a"
        capabilities = ctx.catalog.pool_order(_ANY, "zone_a")
    else:
        return left
    sizes = state.sizes
    for cap_id in capabilities:
        key = (cap_id, location, scope, month)
        size = sizes.get(key)  # pool_size_s, its cache hit inlined
        if size is None:
            size = pool_size_s(state, ctx, key)
        use = state.pools.get(key)
        take = min(left, size - (use.used_s if use else 0))
        if take > 0:
            draws.append((key, take, size))
            left -= take
            if not left:
                break
    return left
