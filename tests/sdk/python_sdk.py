"""Commet's official Python SDK (commet-sdk), unmodified, against a Tally daemon: its httpx
client's base_url is pointed at TALLY_HTTP. Run by tests/it/sdks.rs."""

import os
import sys

sys.path.insert(0, os.environ["TALLY_PYTHON_SDK"])

from commet import Commet, CommetAPIError, CommetValidationError  # noqa: E402

commet = Commet(api_key=os.environ["TALLY_ADMIN_KEY"], retries=1, telemetry=False)
commet._http._client.base_url = os.environ["TALLY_HTTP"] + "/api/v1"


def at(answer, name):
    """A field of an answer: the SDK returns dataclasses, but union types (UsageCheck) come back
    as dicts, since it looks their discriminator up under its camelCase name after converting
    keys to snake_case."""
    return answer[name] if isinstance(answer, dict) else getattr(answer, name)


def customer_on(customer_id, plan):
    created = commet.customers.create(id=customer_id, email=f"{customer_id}@example.com")
    assert created.id == customer_id, created
    subscription = commet.subscriptions.create(customer_id=customer_id, plan_code=plan)
    assert subscription.id == f"sub_{customer_id}", subscription


def refused(call, kind):
    try:
        call()
    except kind as error:
        return error
    raise AssertionError("the request should have been refused")


# Balance: a denied check, a top-up in cents, a tracked event retried with its key.
customer_on("py-w", "wallet")
check = commet.usage.check(customer_id="py-w", feature_code="gpt-4", quantity=1)
assert at(check, "allowed") is False and at(check, "reason") == "insufficient_balance", check
commet.subscriptions.topup_balance("sub_py-w", amount=100)
check = commet.usage.check(customer_id="py-w", feature_code="gpt-4", quantity=2)
assert at(check, "allowed") is True and at(check, "estimated_amount") == 600, check
first = commet.usage.track(feature_code="gpt-4", customer_id="py-w", value=2, idempotency_key="py-1")
again = commet.usage.track(feature_code="gpt-4", customer_id="py-w", value=2, idempotency_key="py-1")
assert again.id == first.id, (first, again)
active = commet.subscriptions.get_active(customer_id="py-w")
assert active.balance.remaining == 10000 - 600, active.balance

# Credits: the plan's pack bought by id.
customer_on("py-i", "images")
packs = commet.credit_packs.list()
pack = next(p for p in packs.data if p.id == "pack_images")
commet.subscriptions.purchase_credits("sub_py-i", credit_pack_id=pack.id)
check = commet.usage.check(customer_id="py-i", feature_code="image-gen", quantity=3)
assert at(check, "estimated_credits") == 3 and at(check, "purchased_credits") == 500, check

# Metered, then a paged customer list, then the period closes by the test clock.
customer_on("py-p", "pro")
commet.usage.track(feature_code="tokens", customer_id="py-p", value=100500)
listed = commet.customers.list(limit=2)
assert len(listed.data) == 2 and listed.has_more, listed
rest = commet.customers.list(limit=2, cursor=listed.next_cursor)
assert [c.id for c in listed.data + rest.data] == ["py-i", "py-p", "py-w"], rest

error = refused(
    lambda: commet.usage.track(feature_code="gpt-4", customer_id="py-w", value=1.5),
    CommetValidationError,
)
assert "value" in error.validation_errors, error.validation_errors
error = refused(lambda: commet.customers.get("nobody"), CommetAPIError)
assert error.status_code == 404 and error.code == "customer_not_found", error

commet.test_clock.advance(advance_days=32)
invoices = commet.invoices.list(customer_id="py-p")
assert len(invoices.data) == 1 and invoices.data[0].total == 4900 + 100, invoices
print("python SDK: every call answered as the SDK expects")
