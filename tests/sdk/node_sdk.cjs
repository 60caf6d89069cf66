// Commet's official Node SDK (@commet/node), unmodified, against a Tally daemon. Its base URL is
// fixed, so fetch is wrapped to send its requests to TALLY_HTTP instead. Run by tests/it/sdks.rs.
"use strict";
const assert = require("node:assert/strict");
const { Commet, CommetAPIError, CommetValidationError } = require(process.env.TALLY_NODE_SDK);

const origin = process.env.TALLY_HTTP;
const realFetch = globalThis.fetch;
globalThis.fetch = (url, init) => realFetch(String(url).replace("https://commet.co", origin), init);

const commet = new Commet({ apiKey: process.env.TALLY_ADMIN_KEY, retries: 1, telemetry: false });

async function rejects(promise, check) {
  try {
    await promise;
  } catch (error) {
    check(error);
    return;
  }
  assert.fail("the request should have been refused");
}

async function customerOn(id, plan) {
  const created = await commet.customers.create({ id, email: `${id}@example.com`, fullName: id });
  assert.equal(created.success, true);
  assert.equal(created.data.id, id);
  const subscription = await commet.subscriptions.create({ customerId: id, planCode: plan });
  assert.equal(subscription.data.id, `sub_${id}`);
  assert.equal(subscription.data.status, "active");
}

async function main() {
  // Balance: a denied check, a top-up in cents, a tracked event retried with its key.
  await customerOn("node-w", "wallet");
  let check = await commet.usage.check({ customerId: "node-w", featureCode: "gpt-4", quantity: 1 });
  assert.equal(check.data.allowed, false);
  assert.equal(check.data.consumptionModel, "balance");
  assert.equal(check.data.reason, "insufficient_balance");
  await commet.subscriptions.topupBalance({ id: "sub_node-w", amount: 100 });
  check = await commet.usage.check({ customerId: "node-w", featureCode: "gpt-4", quantity: 2 });
  assert.equal(check.data.allowed, true);
  assert.equal(check.data.estimatedAmount, 600);
  const first = await commet.usage.track({
    feature: "gpt-4", customerId: "node-w", value: 2, idempotencyKey: "node-event-1",
  });
  const retried = await commet.usage.track({
    feature: "gpt-4", customerId: "node-w", value: 2, idempotencyKey: "node-event-1",
  });
  assert.equal(retried.data.id, first.data.id);
  assert.equal(retried.data.duplicate, true);
  const active = await commet.subscriptions.getActive({ customerId: "node-w" });
  assert.equal(active.data.balance.remaining, 10000 - 600);

  // Credits: the plan's pack bought by id, spent one credit per image.
  await customerOn("node-i", "images");
  const packs = await commet.creditPacks.list();
  const pack = packs.data.find((p) => p.id === "pack_images");
  await commet.subscriptions.purchaseCredits({ id: "sub_node-i", creditPackId: pack.id });
  check = await commet.usage.check({ customerId: "node-i", featureCode: "image-gen", quantity: 3 });
  assert.equal(check.data.consumptionModel, "credits");
  assert.equal(check.data.estimatedCredits, 3);
  assert.equal(check.data.purchasedCredits, 500);

  // Metered: usage past what is included, feature access, then the period closes.
  await customerOn("node-p", "pro");
  await commet.usage.track({ feature: "tokens", customerId: "node-p", value: 100500 });
  const access = await commet.featureAccess.canUse({ code: "tokens", customerId: "node-p" });
  assert.equal(access.data.allowed, true);
  assert.equal(access.data.overageQuantity, 500);

  // Errors the SDK types: a validation error with its field, a missing customer.
  await rejects(commet.usage.track({ feature: "gpt-4", customerId: "node-w", value: -1 }), (e) => {
    assert.ok(e instanceof CommetValidationError, String(e));
    assert.ok(e.validationErrors.value, JSON.stringify(e.validationErrors));
  });
  await rejects(commet.customers.get({ id: "nobody" }), (e) => {
    assert.ok(e instanceof CommetAPIError, String(e));
    assert.equal(e.statusCode, 404);
    assert.equal(e.code, "customer_not_found");
  });

  // The sandbox's test clock closes the period; the invoice is in cents.
  await commet.testClock.advance({ advanceDays: 32 });
  const invoices = await commet.invoices.list({ customerId: "node-p" });
  assert.equal(invoices.data.length, 1);
  assert.equal(invoices.data[0].total, 4900 + 100);
  const invoice = await commet.invoices.get({ id: invoices.data[0].id });
  assert.equal(invoice.data.lineItems[0].lineType, "plan_base");
  console.log("node SDK: every call answered as the SDK expects");
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
