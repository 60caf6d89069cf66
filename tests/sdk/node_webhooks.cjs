// The webhooks a Tally daemon delivered, checked with @commet/node's own webhooks.verify and
// verifyAndParse (the raw body, the X-Commet-Signature header, the endpoint's secret); a body
// changed by one byte must fail. Run by tests/it/sdks.rs.
"use strict";
const assert = require("node:assert/strict");
const fs = require("node:fs");
const { Commet } = require(process.env.TALLY_NODE_SDK);

const origin = process.env.TALLY_HTTP;
const realFetch = globalThis.fetch;
globalThis.fetch = (url, init) => realFetch(String(url).replace("https://commet.co", origin), init);
const commet = new Commet({ apiKey: process.env.TALLY_ADMIN_KEY, retries: 1, telemetry: false });
const secret = process.env.TALLY_WEBHOOK_SECRET;
const deliveries = JSON.parse(fs.readFileSync(process.env.TALLY_WEBHOOKS, "utf8"));
assert.ok(deliveries.length > 0);
for (const { body, signature, event } of deliveries) {
  assert.equal(commet.webhooks.verify({ payload: body, signature, secret }), true, body);
  const parsed = commet.webhooks.verifyAndParse({ rawBody: body, signature, secret });
  assert.equal(parsed.event, event);
  assert.ok(["live", "sandbox"].includes(parsed.mode));
  assert.match(parsed.apiVersion, /^\d{4}-\d{2}-\d{2}$/);
  assert.ok(parsed.data.customerId || parsed.data.id, body);
  const tampered = body.replace(/}$/, " }");
  assert.equal(commet.webhooks.verify({ payload: tampered, signature, secret }), false);
  assert.equal(commet.webhooks.verify({ payload: body, signature, secret: secret + "x" }), false);
}

// Endpoints through the SDK: create (with its own secret), list, test, turn off, delete.
async function endpoints() {
  const created = await commet.webhooks.create({
    url: process.env.TALLY_RECEIVER_URL, events: ["balance.low"], description: "from node" });
  assert.equal(created.success, true);
  assert.match(created.data.secretKey, /^whsec_/);
  const id = created.data.id;
  const listed = await commet.webhooks.list();
  assert.ok(listed.data.some((endpoint) => endpoint.id === id), JSON.stringify(listed));
  const tested = await commet.webhooks.test({ id });
  assert.equal(tested.data.success, true, JSON.stringify(tested));
  const updated = await commet.webhooks.update({ id, isActive: false });
  assert.equal(updated.data.isActive, false);
  const deleted = await commet.webhooks.delete({ id });
  assert.equal(deleted.data.deleted, true);
}

endpoints().then(
  () => console.log(`SDK: ${deliveries.length} webhooks verified`),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
