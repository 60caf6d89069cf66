"""The webhooks a Tally daemon delivered, checked with commet-sdk's own webhooks.verify and
verify_and_parse (the raw body, the X-Commet-Signature header, the endpoint's secret); a body
changed by one byte must fail. Run by tests/it/sdks.rs."""

import json
import os
import sys

sys.path.insert(0, os.environ["TALLY_PYTHON_SDK"])

from commet import Commet  # noqa: E402

commet = Commet(api_key=os.environ["TALLY_ADMIN_KEY"], retries=1, telemetry=False)
commet._http._client.base_url = os.environ["TALLY_HTTP"] + "/api/v1"
secret = os.environ["TALLY_WEBHOOK_SECRET"]
with open(os.environ["TALLY_WEBHOOKS"], encoding="utf-8") as file:
    deliveries = json.load(file)
assert deliveries
for delivery in deliveries:
    body, signature = delivery["body"], delivery["signature"]
    assert commet.webhooks.verify(payload=body, signature=signature, secret=secret), body
    parsed = commet.webhooks.verify_and_parse(raw_body=body, signature=signature, secret=secret)
    assert parsed["event"] == delivery["event"], parsed
    assert parsed["mode"] in ("live", "sandbox")
    data = parsed["data"]
    assert data.get("customerId") or data.get("id"), body
    assert not commet.webhooks.verify(payload=body + " ", signature=signature, secret=secret)
    assert not commet.webhooks.verify(payload=body, signature=signature, secret=secret + "x")

# Endpoints through the SDK: create (with its own secret), list, test, turn off, delete.
created = commet.webhooks.create(url=os.environ["TALLY_RECEIVER_URL"], events=["balance.low"])
assert created.secret_key.startswith("whsec_"), created
listed = commet.webhooks.list()
assert any(endpoint.id == created.id for endpoint in listed.data), listed
tested = commet.webhooks.test(created.id)
assert tested.success, tested
updated = commet.webhooks.update(created.id, is_active=False)
assert updated.is_active is False, updated
deleted = commet.webhooks.delete(created.id)
assert deleted.deleted, deleted
print(f"SDK: {len(deliveries)} webhooks verified")
