"""The webhooks a Tally daemon delivered, checked with commet-sdk's own webhooks.verify and
verify_and_parse (the raw body, the X-Commet-Signature header, the endpoint's secret); a body
changed by one byte must fail. Run by tests/it/sdks.rs."""

import json
import os
import sys

sys.path.insert(0, os.environ["TALLY_PYTHON_SDK"])

from commet import Commet  # noqa: E402

commet = Commet(api_key=os.environ["TALLY_ADMIN_KEY"], telemetry=False)
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
print(f"SDK: {len(deliveries)} webhooks verified")
