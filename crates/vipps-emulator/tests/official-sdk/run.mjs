// Drives the unmodified official SDK (@vippsmobilepay/sdk, pinned in package.json) against a running
// vipps-emulator: the ePayment flow, the Recurring API, the Checkout API and the Webhooks API, with the signed
// deliveries received and verified.
// Started by crates/vipps-emulator/tests/official_sdk.rs; can also be run by hand, two ways:
//
//   VIPPS_EMULATOR_URL=http://127.0.0.1:8080/ node run.mjs
//       The SDK has no base-URL option: with `useTestMode: true` it always calls https://apitest.vipps.no. With
//       VIPPS_EMULATOR_URL set, this script wraps `globalThis.fetch` so those requests go to the emulator.
//
//   NODE_EXTRA_CA_CERTS=/path/to/emulator-ca.pem node run.mjs
//       Without VIPPS_EMULATOR_URL nothing is wrapped: the SDK calls https://apitest.vipps.no itself, which must
//       reach the emulator's HTTPS listener (`vipps emulator --tls-listen 127.0.0.1:443` and a hosts entry), and
//       Node must trust the emulator's certificate authority. What the SDK sent and got is read back from the
//       emulator's request record.
//
// Nothing in the SDK is patched. Every step asserts its result. On failure it prints a clear message (with the
// HTTP exchanges so far) to stderr and exits 1; on success it prints one JSON summary line to stdout and exits 0.

import { createHmac, createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { Client } from "@vippsmobilepay/sdk";

const started = Date.now();
const SDK_ORIGIN = "https://apitest.vipps.no";

const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined || v === "") fail("setup", `environment variable ${name} is required`);
  return v;
};

/** Every HTTP exchange the SDK made, for the summary and for failure messages. */
const exchanges = [];
let currentStep = "setup";

function fail(step, message, extra) {
  const lines = [`official SDK test FAILED at step "${step}": ${message}`];
  if (extra !== undefined) lines.push(`  details: ${safeJson(extra)}`);
  if (exchanges.length > 0) {
    lines.push("  HTTP exchanges so far (newest last):");
    for (const x of exchanges.slice(-8)) {
      lines.push(`    [${x.step}] ${x.method} ${x.path} -> ${x.status} ${x.contentType ?? "(no content-type)"} ${x.body ?? ""}`);
    }
  }
  process.stderr.write(lines.join("\n") + "\n");
  process.stdout.write(JSON.stringify({ ok: false, step, error: message }) + "\n");
  process.exit(1);
}

function safeJson(v) {
  try {
    return JSON.stringify(v, (_k, x) => (x instanceof Error ? { name: x.name, message: x.message } : x));
  } catch {
    return String(v);
  }
}

const wrapped = (process.env.VIPPS_EMULATOR_URL ?? "") !== "";
const msn = env("VIPPS_MSN", "123456");
const clientId = env("VIPPS_CLIENT_ID", "demo-client-id");
const clientSecret = env("VIPPS_CLIENT_SECRET", "demo-client-secret");
const subscriptionKey = env("VIPPS_SUBSCRIPTION_KEY", "demo-subscription-key");
const timeoutMs = Number(process.env.VIPPS_SDK_TEST_TIMEOUT_MS ?? 60000);

setTimeout(() => fail(currentStep, `the whole run took longer than ${timeoutMs} ms`), timeoutMs).unref();
process.on("unhandledRejection", (e) => fail(currentStep, `unhandled rejection: ${e?.stack ?? e}`));
process.on("uncaughtException", (e) => fail(currentStep, `uncaught exception: ${e?.stack ?? e}`));

// --- Point the SDK at the emulator (only with VIPPS_EMULATOR_URL) -----------------------------------------
const realFetch = globalThis.fetch;
if (typeof realFetch !== "function") fail("setup", `this Node.js (${process.version}) has no global fetch; Node 18+ is required`);

const wrapper = async (input, init) => {
  const base = new URL(process.env.VIPPS_EMULATOR_URL);
  const req = new Request(input, init);
  const url = new URL(req.url);
  if (url.origin !== SDK_ORIGIN) {
    fail(currentStep, `the SDK called ${url.origin}, expected only ${SDK_ORIGIN} (useTestMode: true)`);
  }
  const target = new URL(url.pathname.replace(/^\//, "") + url.search, base);
  const body = req.method === "GET" || req.method === "HEAD" ? undefined : await req.arrayBuffer();
  const x = {
    step: currentStep,
    method: req.method,
    path: url.pathname,
    idempotencyKey: req.headers.get("idempotency-key"),
    status: 0,
  };
  exchanges.push(x);
  let res;
  try {
    res = await realFetch(target, {
      method: req.method,
      headers: req.headers,
      body: body && body.byteLength > 0 ? body : undefined,
      redirect: "manual",
      signal: AbortSignal.timeout(15000),
    });
  } catch (e) {
    x.status = "network error";
    throw new Error(`could not reach the emulator at ${target}: ${e?.cause?.message ?? e?.cause?.code ?? e?.message ?? e}`);
  }
  x.status = res.status;
  x.contentType = res.headers.get("content-type");
  // Keep a short copy of the body for failure messages; the SDK reads the original response.
  x.body = (await res.clone().text()).slice(0, 400);
  return res;
};
if (wrapped) globalThis.fetch = wrapper;

/** The emulator's own controls, on the same origin the SDK uses (or the wrapped URL). */
function controlUrl(path) {
  return wrapped ? new URL(path.replace(/^\//, ""), new URL(process.env.VIPPS_EMULATOR_URL)) : new URL(path, SDK_ORIGIN);
}

const seenTraces = new Set();
/**
 * Unwrapped, the exchanges come from the emulator's request record (newest first there): every request it
 * answered since the last look is appended, attributed to the current step.
 */
async function syncExchanges() {
  if (wrapped) return;
  let res;
  try {
    res = await realFetch(controlUrl("/_emulator/requests?limit=100"), { signal: AbortSignal.timeout(15000) });
  } catch (e) {
    throw new Error(`could not read the emulator's request record: ${e?.cause?.message ?? e?.message ?? e}`);
  }
  check(res.ok, `the request record answered ${res.status}`);
  const records = await res.json();
  for (const r of records.reverse()) {
    if (seenTraces.has(r.trace_id)) continue;
    seenTraces.add(r.trace_id);
    exchanges.push({ step: currentStep, method: r.method, path: r.path, idempotencyKey: r.idempotency_key, status: r.status });
  }
}

/** The last exchange (after reading the request record when nothing is wrapped). */
async function lastExchange() {
  await syncExchanges();
  return exchanges.at(-1);
}

// --- Helpers ---------------------------------------------------------------------------------------------
async function step(name, fn) {
  currentStep = name;
  const t0 = Date.now();
  try {
    const out = await fn();
    steps.push({ step: name, ms: Date.now() - t0 });
    return out;
  } catch (e) {
    fail(name, e?.message ?? String(e), e?.details);
  }
}

class AssertionFailure extends Error {
  constructor(message, details) {
    super(message);
    this.details = details;
  }
}

function check(cond, message, details) {
  if (!cond) throw new AssertionFailure(message, details);
}

function eq(actual, expected, what) {
  const a = JSON.stringify(actual);
  const b = JSON.stringify(expected);
  check(a === b, `${what}: expected ${b}, got ${a}`);
}

/** Unwraps an SDK `ClientResponse`: fails the step with the SDK's error when `ok` is false. */
function okData(res, what) {
  check(res && typeof res === "object", `${what}: the SDK returned ${safeJson(res)} instead of a ClientResponse`);
  check(res.ok === true, `${what}: the SDK reported ok=false: ${safeJson(res.error)}`, res);
  return res.data;
}

function nok(value) {
  return { currency: "NOK", value };
}

const steps = [];
const sdkPackage = JSON.parse(readFileSync(new URL("./node_modules/@vippsmobilepay/sdk/package.json", import.meta.url), "utf8"));
const pinned = JSON.parse(readFileSync(new URL("./package.json", import.meta.url), "utf8")).dependencies["@vippsmobilepay/sdk"];
if (sdkPackage.version !== pinned) {
  fail("setup", `installed @vippsmobilepay/sdk is ${sdkPackage.version}, package.json pins ${pinned}; run npm ci`);
}

const client = Client({
  merchantSerialNumber: msn,
  subscriptionKey,
  useTestMode: true,
  // Fail fast and visibly: a 5xx is a test failure, not something to retry for 4 seconds.
  retryRequests: false,
  systemName: "vipps-emulator-sdk-test",
  systemVersion: "1.0.0",
  // pluginName and pluginVersion are left unset: the SDK then sends them as empty headers.
});

const run = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
const ref1 = `sdk-${run}-main`;
const ref2 = `sdk-${run}-cancel`;
const AMOUNT = 10000; // 100.00 NOK (not one of the emulator's magic test amounts)
const CAPTURE = 6000;
const REFUND = 2500;

// --- The flow --------------------------------------------------------------------------------------------
const token = await step("auth.getToken", async () => {
  const data = okData(await client.auth.getToken(clientId, clientSecret), "getToken");
  check(typeof data.access_token === "string" && data.access_token.length > 20, "access_token must be a non-empty string", data);
  eq(data.token_type, "Bearer", "token_type");
  check(Number(data.expires_in) > 0, `expires_in must be positive, got ${safeJson(data.expires_in)}`);
  return data.access_token;
});

// --- Webhooks: a local receiver, registered through the SDK before the payments exist -------------------
const deliveries = [];
const receiver = createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    deliveries.push({ path: req.url, headers: req.headers, body: Buffer.concat(chunks) });
    res.writeHead(200).end();
  });
});
await new Promise((resolve) => receiver.listen(0, "127.0.0.1", resolve));
receiver.unref();
const hookUrl = `http://127.0.0.1:${receiver.address().port}/vipps/webhooks?shop=sdk-test`;
const HOOK_EVENTS = [
  "epayments.payment.created.v1",
  "epayments.payment.authorized.v1",
  "epayments.payment.captured.v1",
  "epayments.payment.refunded.v1",
  "epayments.payment.terminated.v1",
];

const hook = await step("webhook.register", async () => {
  const data = okData(await client.webhook.register(token, { url: hookUrl, events: HOOK_EVENTS }), "register");
  check(typeof data.id === "string" && data.id !== "", "register: id", data);
  check(typeof data.secret === "string" && data.secret.length >= 20, "register: a secret", data);
  return data;
});

await step("webhook.list", async () => {
  const data = okData(await client.webhook.list(token), "list");
  const mine = data.webhooks?.find((w) => w.id === hook.id);
  check(mine !== undefined, "list: the registration is listed", data);
  eq(mine.url, hookUrl, "list: url");
  eq([...mine.events].sort(), [...HOOK_EVENTS].sort(), "list: events");
  check(mine.secret === undefined, "list: no secret", mine);
});

const created = await step("payment.create (WEB_REDIRECT)", async () => {
  const returnUrl = `https://example.com/shop/return?reference=${ref1}`;
  const data = okData(
    await client.payment.create(token, {
      amount: nok(AMOUNT),
      paymentMethod: { type: "WALLET" },
      reference: ref1,
      returnUrl,
      userFlow: "WEB_REDIRECT",
      paymentDescription: "Official SDK against the emulator",
    }),
    "create",
  );
  eq(data.reference, ref1, "create: reference (the caller's)");
  check(typeof data.redirectUrl === "string", "create: a WEB_REDIRECT payment must return redirectUrl", data);
  check(/^https?:\/\//.test(data.redirectUrl), `create: redirectUrl must be an absolute URL, got ${data.redirectUrl}`);
  await syncExchanges();
  const createX = exchanges.findLast((x) => x.path === "/epayment/v1/payments");
  eq(createX.status, 201, "create: HTTP status");
  return data;
});

await step("payment.info (CREATED)", async () => {
  const data = okData(await client.payment.info(token, ref1), "info");
  eq(data.reference, ref1, "info: reference");
  eq(data.state, "CREATED", "info: state before approval");
  eq(data.amount, nok(AMOUNT), "info: amount");
  eq(data.redirectUrl, created.redirectUrl, "info: redirectUrl matches create");
});

await step("payment.forceApprove", async () => {
  const res = await client.payment.forceApprove(token, ref1, { customer: { phoneNumber: "4791234567" } });
  okData(res, "forceApprove");
});

await step("payment.info (AUTHORIZED)", async () => {
  const data = okData(await client.payment.info(token, ref1), "info");
  eq(data.state, "AUTHORIZED", "info: state after forceApprove");
  eq(data.aggregate.authorizedAmount, nok(AMOUNT), "info: aggregate.authorizedAmount");
});

const captureKey = await step("payment.capture (partial)", async () => {
  const data = okData(await client.payment.capture(token, ref1, { modificationAmount: nok(CAPTURE) }), "capture");
  eq(data.reference, ref1, "capture: reference");
  eq(data.state, "AUTHORIZED", "capture: state");
  eq(data.amount, nok(AMOUNT), "capture: amount");
  eq(data.aggregate.capturedAmount, nok(CAPTURE), "capture: aggregate.capturedAmount");
  eq(data.aggregate.refundedAmount, nok(0), "capture: aggregate.refundedAmount");
  check(typeof data.pspReference === "string" && data.pspReference !== "", "capture: pspReference", data);
  return (await lastExchange()).idempotencyKey;
});

const refundKey = await step("payment.refund (partial)", async () => {
  const data = okData(await client.payment.refund(token, ref1, { modificationAmount: nok(REFUND) }), "refund");
  eq(data.reference, ref1, "refund: reference");
  eq(data.state, "AUTHORIZED", "refund: state");
  eq(data.aggregate.capturedAmount, nok(CAPTURE), "refund: aggregate.capturedAmount");
  eq(data.aggregate.refundedAmount, nok(REFUND), "refund: aggregate.refundedAmount");
  return (await lastExchange()).idempotencyKey;
});

await step("error path: over-refund is refused with a problem body", async () => {
  const res = await client.payment.refund(token, ref1, { modificationAmount: nok(AMOUNT) });
  check(res.ok === false, "refunding more than was captured must fail", res);
  const x = await lastExchange();
  check(x.status >= 400 && x.status < 500, `over-refund: expected a 4xx status, got ${x.status}`);
  // For a 4xx (other than 403) the SDK hands back the parsed JSON body as `error`.
  check(res.error && typeof res.error === "object" && !(res.error instanceof Error), "over-refund: the SDK must surface the parsed problem body", res);
  check(typeof (res.error.title ?? res.error.detail) === "string", "over-refund: the problem body needs a title or detail", res.error);
});

await step("second payment: create", async () => {
  const data = okData(
    await client.payment.create(token, {
      amount: nok(4900),
      paymentMethod: { type: "WALLET" },
      reference: ref2,
      returnUrl: `https://example.com/shop/return?reference=${ref2}`,
      userFlow: "WEB_REDIRECT",
    }),
    "create #2",
  );
  eq(data.reference, ref2, "create #2: reference");
});

await step("second payment: cancel before approval", async () => {
  const data = okData(await client.payment.cancel(token, ref2), "cancel");
  eq(data.reference, ref2, "cancel: reference");
  eq(data.state, "TERMINATED", "cancel: state");
  eq(data.aggregate.authorizedAmount, nok(0), "cancel: aggregate.authorizedAmount");
});

await step("second payment: info and history", async () => {
  const info = okData(await client.payment.info(token, ref2), "info #2");
  eq(info.state, "TERMINATED", "info #2: state");
  const events = okData(await client.payment.history(token, ref2), "history #2");
  check(Array.isArray(events), "history #2 must be an array", events);
  eq(events.map((e) => e.name), ["CREATED", "TERMINATED"], "history #2: event names");
});

const final = await step("payment.info (aggregate)", async () => {
  const data = okData(await client.payment.info(token, ref1), "info");
  eq(data.reference, ref1, "info: reference");
  eq(data.state, "AUTHORIZED", "info: state");
  eq(data.amount, nok(AMOUNT), "info: amount");
  eq(data.aggregate, {
    authorizedAmount: nok(AMOUNT),
    cancelledAmount: nok(0),
    capturedAmount: nok(CAPTURE),
    refundedAmount: nok(REFUND),
  }, "info: aggregate");
  eq(data.paymentMethod?.type, "WALLET", "info: paymentMethod.type");
  check(typeof data.pspReference === "string" && data.pspReference !== "", "info: pspReference", data);
  return data;
});

const eventNames = await step("payment.history (event log)", async () => {
  const events = okData(await client.payment.history(token, ref1), "history");
  check(Array.isArray(events), "history must be an array", events);
  eq(events.map((e) => e.name), ["CREATED", "AUTHORIZED", "CAPTURED", "REFUNDED"], "history: event names in order");
  eq(events.map((e) => e.amount), [nok(AMOUNT), nok(AMOUNT), nok(CAPTURE), nok(REFUND)], "history: event amounts");
  for (const e of events) {
    eq(e.reference, ref1, `history: ${e.name}.reference`);
    eq(e.success, true, `history: ${e.name}.success`);
    check(!Number.isNaN(Date.parse(e.timestamp)), `history: ${e.name}.timestamp must be a date, got ${e.timestamp}`);
    check(typeof e.pspReference === "string" && e.pspReference !== "", `history: ${e.name}.pspReference`, e);
  }
  const ts = events.map((e) => Date.parse(e.timestamp));
  check(ts.every((t, i) => i === 0 || t >= ts[i - 1]), "history: timestamps must not go backwards", events);
  eq(events[2].idempotencyKey, captureKey, "history: CAPTURED.idempotencyKey is the SDK's Idempotency-Key");
  eq(events[3].idempotencyKey, refundKey, "history: REFUNDED.idempotencyKey is the SDK's Idempotency-Key");
  return events.map((e) => e.name);
});

/** Checks a delivery's HMAC signature as the vendor documents it, with the secret from the registration. */
function verifySignature(d) {
  const contentHash = createHash("sha256").update(d.body).digest("base64");
  eq(d.headers["x-ms-content-sha256"], contentHash, "webhook: x-ms-content-sha256");
  const signed = `POST\n${d.path}\n${d.headers["x-ms-date"]};${d.headers.host};${contentHash}`;
  const signature = createHmac("sha256", hook.secret).update(signed).digest("base64");
  eq(
    d.headers.authorization,
    `HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature=${signature}`,
    "webhook: Authorization",
  );
}

const webhookEvents = await step("webhooks: signed deliveries of every event", async () => {
  const want = { [ref1]: ["CREATED", "AUTHORIZED", "CAPTURED", "REFUNDED"], [ref2]: ["CREATED", "TERMINATED"] };
  const total = Object.values(want).flat().length;
  const until = Date.now() + 20000;
  while (deliveries.length < total && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  check(deliveries.length >= total, `expected ${total} deliveries, got ${deliveries.length}`, deliveries.map((d) => d.body.toString()));
  const got = {};
  for (const d of deliveries) {
    verifySignature(d);
    const event = JSON.parse(d.body.toString());
    eq(event.msn, msn, "webhook: msn");
    (got[event.reference] ??= []).push(event.name);
  }
  // Events of one payment arrive in order.
  eq(got, want, "webhook: events per payment");
  return got;
});

// --- Recurring: the SDK's 13 Recurring methods ---------------------------------------------------------------
const isoDate = (days) => new Date(Date.now() + days * 86400000).toISOString().slice(0, 10);
const recurringCalls = [];
const recurring = async (name, fn) => {
  const out = await step(`recurring.${name}`, fn);
  recurringCalls.push(name);
  return out;
};

const agreement = await recurring("agreement.create", async () => {
  const data = okData(
    await client.recurring.agreement.create(token, {
      pricing: { type: "LEGACY", amount: 5000, currency: "NOK" },
      interval: { unit: "MONTH", count: 1 },
      merchantRedirectUrl: "https://example.com/redirect",
      merchantAgreementUrl: "https://example.com/agreement",
      phoneNumber: "4791234567",
      productName: "SDK subscription",
      initialCharge: { amount: 5000, description: "First month", transactionType: "RESERVE_CAPTURE" },
    }),
    "agreement.create",
  );
  check(typeof data.agreementId === "string" && data.agreementId !== "", "agreement.create: agreementId", data);
  check(typeof data.vippsConfirmationUrl === "string", "agreement.create: vippsConfirmationUrl", data);
  check(typeof data.chargeId === "string", "agreement.create: the initial chargeId", data);
  return data;
});
const agr = agreement.agreementId;

await recurring("agreement.info (PENDING)", async () => {
  const data = okData(await client.recurring.agreement.info(token, agr), "agreement.info");
  eq(data.id, agr, "agreement.info: id");
  eq(data.status, "PENDING", "agreement.info: status");
  eq(data.pricing, { type: "LEGACY", currency: "NOK", amount: 5000 }, "agreement.info: pricing");
});

await recurring("agreement.forceAccept", async () => {
  okData(await client.recurring.agreement.forceAccept(token, agr, { phoneNumber: "4791234567" }), "forceAccept");
});

await recurring("agreement.list", async () => {
  const data = okData(await client.recurring.agreement.list(token, "ACTIVE", undefined, 1, 100), "agreement.list");
  check(Array.isArray(data) && data.some((a) => a.id === agr), "agreement.list: the accepted agreement is listed", data);
});

await recurring("agreement.update", async () => {
  okData(await client.recurring.agreement.update(token, agr, { productName: "SDK subscription, renamed" }), "update");
  const data = okData(await client.recurring.agreement.info(token, agr), "agreement.info");
  eq(data.productName, "SDK subscription, renamed", "agreement.update: productName");
  eq(data.status, "ACTIVE", "agreement.update: status");
});

await recurring("charge.info (initial, RESERVED)", async () => {
  const data = okData(await client.recurring.charge.info(token, agr, agreement.chargeId), "charge.info");
  eq(data.status, "RESERVED", "charge.info: the initial charge is reserved on acceptance");
  eq(data.type, "INITIAL", "charge.info: type");
});

await recurring("charge.capture", async () => {
  okData(await client.recurring.charge.capture(token, agr, agreement.chargeId, { amount: 5000, description: "full" }), "capture");
});

await recurring("charge.refund", async () => {
  okData(await client.recurring.charge.refund(token, agr, agreement.chargeId, { amount: 1000, description: "goodwill" }), "refund");
  const data = okData(await client.recurring.charge.infoById(token, agreement.chargeId), "charge.infoById");
  eq(data.status, "PARTIALLY_REFUNDED", "charge.infoById: status");
  eq(data.summary, { captured: 5000, refunded: 1000, cancelled: 0 }, "charge.infoById: summary");
});

const chargeId = await recurring("charge.create", async () => {
  const data = okData(
    await client.recurring.charge.create(token, agr, {
      amount: 4000,
      transactionType: "DIRECT_CAPTURE",
      description: "Next month",
      due: isoDate(2),
      retryDays: 3,
    }),
    "charge.create",
  );
  check(typeof data.chargeId === "string", "charge.create: chargeId", data);
  return data.chargeId;
});

await recurring("charge.createMultiple", async () => {
  const run2 = run.replace(/[^a-zA-Z0-9-]/g, "");
  const data = okData(
    await client.recurring.charge.createMultiple(token, [1, 2].map((i) => ({
      agreementId: agr,
      amount: 1000 + i,
      transactionType: "DIRECT_CAPTURE",
      description: `Bulk ${i}`,
      due: isoDate(40),
      retryDays: 0,
      orderId: `sdk-${run2}-${i}`,
    }))),
    "charge.createMultiple",
  );
  eq(data.validCharges, [`sdk-${run2}-1`, `sdk-${run2}-2`], "createMultiple: validCharges");
  eq(data.invalidCharges, [], "createMultiple: invalidCharges");
});

await recurring("charge.cancel", async () => {
  okData(await client.recurring.charge.cancel(token, agr, chargeId), "charge.cancel");
});

await recurring("charge.list", async () => {
  const all = okData(await client.recurring.charge.list(token, agr), "charge.list");
  eq(all.length, 4, "charge.list: initial, one, and two from the bulk request");
  const cancelled = okData(await client.recurring.charge.list(token, agr, "CANCELLED"), "charge.list CANCELLED");
  eq(cancelled.map((c) => c.id), [chargeId], "charge.list: status filter");
});

await recurring("error path: a charge on an unknown agreement", async () => {
  const res = await client.recurring.charge.create(token, "agr_unknown", {
    amount: 1000, transactionType: "DIRECT_CAPTURE", description: "x", due: isoDate(2), retryDays: 0,
  });
  check(res.ok === false, "a charge on an unknown agreement must fail", res);
  check(res.error && typeof res.error === "object" && typeof res.error.detail === "string", "the Recurring problem body", res.error);
});

// --- Checkout: the SDK's 2 Checkout methods (API keys in headers, no access token) ------------------------------
const checkoutCalls = [];
const checkout = async (name, fn) => {
  const out = await step(`checkout.${name}`, fn);
  checkoutCalls.push(name);
  return out;
};
const ref3 = `sdk-${run}-checkout`.replace(/[^a-zA-Z0-9-]/g, "");
const session = await checkout("create", async () => {
  const data = okData(
    await client.checkout.create(clientId, clientSecret, {
      merchantInfo: {
        callbackUrl: "https://example.com/checkout/callback",
        returnUrl: "https://example.com/checkout/return",
        callbackAuthorizationToken: "sdk-callback-token",
      },
      transaction: { amount: { value: 3000, currency: "NOK" }, reference: ref3, paymentDescription: "SDK checkout" },
    }),
    "checkout.create",
  );
  check(typeof data.token === "string" && data.token !== "", "checkout.create: token", data);
  check(typeof data.checkoutFrontendUrl === "string", "checkout.create: checkoutFrontendUrl", data);
  check(typeof data.pollingUrl === "string" && data.pollingUrl.endsWith(`/checkout/v3/session/${ref3}`), "checkout.create: pollingUrl", data);
  return data;
});

await checkout("info (SessionCreated)", async () => {
  const data = okData(await client.checkout.info(clientId, clientSecret, ref3), "checkout.info");
  eq(data.reference, ref3, "checkout.info: reference");
  eq(data.sessionState, "SessionCreated", "checkout.info: sessionState");
});

await step("checkout: the user approves (ePayment's user control)", async () => {
  const res = await realFetch(controlUrl(`/_emulator/payments/${ref3}/approve`), {
    method: "POST",
    signal: AbortSignal.timeout(15000),
  });
  check(res.ok, `the approve control answered ${res.status}`, await res.text());
});

const checkoutFinal = await checkout("info (PaymentSuccessful)", async () => {
  const data = okData(await client.checkout.info(clientId, clientSecret, ref3), "checkout.info");
  eq(data.sessionState, "PaymentSuccessful", "checkout.info: sessionState");
  eq(data.paymentDetails?.state, "AUTHORIZED", "checkout.info: paymentDetails.state");
  eq(data.paymentDetails?.amount, { value: 3000, currency: "NOK" }, "checkout.info: paymentDetails.amount");
  const payment = okData(await client.payment.info(token, ref3), "payment.info of the session's payment");
  eq(payment.state, "AUTHORIZED", "the session's payment is an ePayment payment");
  return data.sessionState;
});

await checkout("error path: an unknown session", async () => {
  const res = await client.checkout.info(clientId, clientSecret, `sdk-${run}-none`.replace(/[^a-zA-Z0-9-]/g, ""));
  check(res.ok === false, "an unknown session must fail", res);
  check(res.error && typeof res.error === "object" && res.error.errorCode === "NotFound", "the Checkout problem body", res.error);
});
void session;

await step("webhook.delete", async () => {
  const res = await client.webhook.delete(token, hook.id);
  check(res.ok === true, `delete: the SDK reported ok=false: ${safeJson(res.error)}`, res);
  const data = okData(await client.webhook.list(token), "list after delete");
  check(!data.webhooks?.some((w) => w.id === hook.id), "list after delete: gone", data);
});

currentStep = "summary";
await syncExchanges();
const requests = exchanges.map((x) => `${x.method} ${x.path.replace(ref1, "{ref}").replace(ref2, "{ref2}")} ${x.status}`);
process.stdout.write(
  JSON.stringify({
    ok: true,
    sdk: sdkPackage.name,
    sdkVersion: sdkPackage.version,
    node: process.version,
    reference: ref1,
    cancelledReference: ref2,
    finalState: final.state,
    aggregate: final.aggregate,
    events: eventNames,
    webhookEvents,
    recurring: recurringCalls,
    checkout: checkoutCalls,
    checkoutState: checkoutFinal,
    unwrapped: !wrapped,
    steps: steps.map((s) => s.step),
    requests,
    elapsedMs: Date.now() - started,
  }) + "\n",
);
process.exit(0);
