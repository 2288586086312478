"""The hot edge: msgspec structs that decode and validate an input in one compiled pass.

``schemas/*.json`` is the wire contract; these structs mirror the input schemas and are
never looser than them: every constraint of a field (type, length, pattern, enum,
required, nullable) is here, some a little stricter (a pattern ends at ``\\Z`` where the
schema's ``$`` would also allow a final newline; ``1.0`` is not the integer ``1``).
Whatever these structs refuse goes on to the JSON Schema validator, which decides and
words the dead letter — so the accepted set is exactly the schema's, and the fast path
costs about 2 µs per CDR instead of ~300 µs (``tests/test_wire.py`` checks the two agree
on generated and mutated documents). Unknown extra fields are ignored, as the schemas
allow them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
TenantId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._-]{1,64}\Z")]
Time = Annotated[str, msgspec.Meta(
    pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})\Z")]
Country = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}\Z")]
Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}\Z")]
Money = Annotated[str, msgspec.Meta(pattern=r"^(0|[1-9][0-9]{0,17})(\.[0-9]{1,4})?\Z")]
Dialled = Annotated[str, msgspec.Meta(pattern=r"^(\+[1-9][0-9]{1,14}|[0-9]{2,6})\Z")]
Capability = Annotated[str, msgspec.Meta(pattern=r"^[A-Z0-9_]{1,32}\Z")]
Duration = Annotated[int, msgspec.Meta(ge=0, le=604_800)]
CallType = Literal["user_out", "user_out_conf", "user_out_transfer", "user_out_forwarding",
                   "user_in", "conf_out", "conf_in", "ucap_out", "ucap_in"]
NumberType = Literal["geographic", "toll_free", "service"]


class _Envelope(msgspec.Struct, tag_field="type", frozen=True):
    schema_version: Literal[1]
    event_id: Id
    tenant_id: TenantId
    occurred_at: Time


class CdrIn(_Envelope, tag="cdr", frozen=True):
    usage_id: Id
    call_id: Id
    conference_id: Id | None
    user_id: Id | None
    user_location: Country
    call_type: CallType
    number_type: NumberType
    caller_number: Dialled
    destination_number: Dialled
    start_time: Time
    end_time: Time
    duration_seconds: Duration


class TenantUpsertedIn(_Envelope, tag="tenant_upserted", frozen=True):
    command_id: Id
    country: Country
    currency: Currency
    billing_model: Literal["prepaid_credits", "postpaid_overage"]
    low_balance_threshold: Money | None = None
    notify: dict[str, Any] | None = None
    """The tenant's contacts: any object (the notifier checks them, rating ignores them)."""


class LicensesAssignedIn(_Envelope, tag="licenses_assigned", frozen=True):
    command_id: Id
    user_id: Id
    usage_location: Country
    capabilities: Annotated[list[Capability], msgspec.Meta(max_length=32)]  # unique: checked by the edge


class UserRemovedIn(_Envelope, tag="user_removed", frozen=True):
    command_id: Id
    user_id: Id


class FundsAddedIn(_Envelope, tag="funds_added", frozen=True):
    command_id: Id
    amount: Money
    currency: Currency
    purchased_at: Time


class AutoRechargeConfiguredIn(_Envelope, tag="auto_recharge_configured", frozen=True):
    command_id: Id
    enabled: bool
    trigger_amount: Money
    recharge_amount: Money


class RechargeResultIn(_Envelope, tag="recharge_result", frozen=True):
    request_id: Id
    status: Literal["succeeded", "failed"]
    amount: Money
    currency: Currency
    reason: Annotated[str, msgspec.Meta(max_length=500)] | None
    processed_at: Time


class _Absent(_Envelope, tag="\x00absent", frozen=True):
    """Never on the wire: makes a one-type topic's decoder a tagged union, because
    msgspec lets a lone tagged struct decode without its ``type`` field."""


Command = TenantUpsertedIn | LicensesAssignedIn | UserRemovedIn | FundsAddedIn | AutoRechargeConfiguredIn
DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    "cdrs": msgspec.json.Decoder(CdrIn | _Absent),
    "account-commands": msgspec.json.Decoder(Command),
    "recharge-results": msgspec.json.Decoder(RechargeResultIn | _Absent),
}
"""One decoder per input topic (by logical name): only that topic's input types."""
