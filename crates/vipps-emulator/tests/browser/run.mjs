// Drives Debian's Chromium (headless, through playwright-core; no browser download) through the emulator's payer
// pages and dashboard. Run by crates/vipps-emulator/tests/browser.rs, which starts the emulator and a shop (webhook
// receiver and return page), creates the payments and passes them in BROWSER_TEST (JSON). Screenshots of every
// page go to BROWSER_TEST.out. Prints one JSON line (the summary) last; any failed check exits non-zero.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const cfg = JSON.parse(process.env.BROWSER_TEST);
const out = cfg.out;
const summary = { screenshots: [], checks: 0 };

function check(cond, what, extra) {
  summary.checks += 1;
  if (!cond) {
    throw new Error(`check failed: ${what}${extra === undefined ? "" : ` (${JSON.stringify(extra)})`}`);
  }
}

async function shot(page, name) {
  const path = join(out, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  summary.screenshots.push(path);
}

const profile = mkdtempSync(join(tmpdir(), "vipps-chromium-"));
// A fresh profile directory (Playwright passes it as --user-data-dir).
const context = await chromium.launchPersistentContext(profile, {
  executablePath: cfg.chromium,
  headless: true,
  viewport: { width: 1280, height: 900 },
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(15000);
  const base = cfg.base;

  // 0. Checkout (first: later steps move the emulator's clock past the session's lifetime): the hosted page, the details not prefilled typed in, a shipping option chosen, pay, back at the shop.
  await page.goto(cfg.checkout.page);
  check((await page.textContent(".amount")).includes("149.00"), "checkout shows the amount");
  check((await page.textContent("main")).includes("A <i>scarf</i>"), "checkout description shown as text");
  check((await page.textContent("[data-testid=state]")) === "PaymentInitiated", "opening the checkout initiates it");
  check((await page.inputValue("#firstName")) === "Kari", "first name prefilled");
  check((await page.textContent("main")).includes("Pick up in store"), "fixed shipping options shown");
  await page.fill("#lastName", "Nordmann");
  await page.fill("#email", "kari@example.com");
  await page.fill("#phoneNumber", "4791112222");
  await page.fill("#streetAddress", "Storgata 1");
  await page.fill("#postalCode", "0155");
  await page.fill("#city", "Oslo");
  await page.fill("#country", "NO");
  await page.check("input[name=shipping][value=store]");
  await shot(page, "checkout");
  await page.click("button[value=approve]");
  await page.waitForURL(/\/return\?order=browser-checkout-01/);
  check((await page.textContent("h1")) === "Back at the shop", "back at the shop after checkout");
  summary.checkout = true;


  // 1. The landing page, a changed phone number, the app screen with the profile data, approve, back to the shop.
  await page.goto(cfg.pay.landing);
  check((await page.textContent(".amount")).includes("249.00"), "landing shows the amount");
  check((await page.textContent("main")).includes("Two tickets <b>not bold</b>"), "description shown as text");
  check((await page.inputValue("#phone")) === "4791234567", "phone prefilled from customer.phoneNumber");
  check((await page.textContent("#countdown")).includes(":"), "countdown shown");
  await shot(page, "landing");
  await page.fill("#phone", "4799990000");
  await page.click("text=Next");
  await page.waitForURL(/\/_emulator\/app\?/);
  check((await page.textContent(".appbar")).includes("4799990000"), "the app is the changed phone's");
  const prof = await page.textContent("[data-testid=profile]");
  check(prof.includes("Name") && prof.includes("Email") && prof.includes("4799990000"), "profile data asked for", prof);
  await shot(page, "app");
  await page.click("button[value=approve]");
  await page.waitForURL((u) => u.toString().startsWith(cfg.pay.returnUrl));
  check((await page.textContent("body")).includes("Back at the shop"), "returned to the shop");
  summary.paid = true;

  // 2. Reject.
  await page.goto(cfg.reject.landing);
  await page.fill("#phone", "4712345678");
  await page.click("text=Next");
  await page.click("button[value=reject]");
  await page.waitForURL((u) => u.toString().startsWith(cfg.reject.returnUrl));
  await page.goto(cfg.reject.landing);
  check((await page.textContent("main")).includes("You rejected this payment"), "rejected payment says so");

  // 3. A magic amount: the app shows the failure.
  await page.goto(cfg.magic.landing);
  await page.fill("#phone", "4712345678");
  await page.click("text=Next");
  await page.click("button[value=approve]");
  await page.waitForSelector("[role=alert]");
  check((await page.textContent("[role=alert]")).includes("Insufficient funds"), "magic 151 shows insufficient funds");
  await shot(page, "app-insufficient-funds");

  // 4. The push inbox of a phone number.
  await page.goto(`${base}/_emulator/inbox`);
  await page.fill("#phone", cfg.push.phone);
  await page.click("text=Open inbox");
  await page.waitForSelector(`text=${cfg.push.reference}`);
  await shot(page, "inbox");
  await page.click(`text=Open payment ${cfg.push.reference}`);
  await page.click("button[value=approve]");
  await page.waitForSelector("text=Payment approved");
  await page.goto(`${base}/_emulator/inbox/${cfg.push.phone}`);
  check((await page.textContent("main")).includes("No payment requests"), "the inbox is empty after approval");

  // 5. The QR image (SVG), rendered by the browser, for the test to decode.
  await page.goto(cfg.qr.redirectUrl);
  await page.screenshot({ path: join(out, "qr.png") });
  summary.screenshots.push(join(out, "qr.png"));

  // 6. The dashboard: overview, then expiry on emulator time with "+1 day".
  await page.goto(`${base}/_emulator/`);
  check((await page.textContent("h1")) === "Overview", "the overview");
  await page.goto(cfg.expire.landing);
  check(await page.isVisible("#countdown"), "a countdown before expiry");
  await page.goto(`${base}/_emulator/ui`);
  const clockBefore = await page.textContent("[data-testid=clock-now]");
  await page.click("button:text-is('+1 day')");
  await page.waitForURL(`${base}/_emulator/ui`);
  check((await page.textContent("[data-testid=clock-now]")) !== clockBefore, "the clock moved");
  await page.goto(cfg.expire.landing);
  check((await page.textContent("main")).includes("This payment has expired"), "expired on emulator time");
  await shot(page, "landing-expired");

  // Rotate the test request server: the active server and its DNS answer change.
  await page.goto(`${base}/_emulator/ui`);
  const activeBefore = await page.textContent("[data-testid=active-test]");
  const dnsBefore = await page.textContent("[data-testid=dns]");
  await page.click("button:text-is('Rotate test')");
  await page.waitForURL(`${base}/_emulator/ui`);
  const activeAfter = await page.textContent("[data-testid=active-test]");
  check((await page.textContent("[data-testid=dns]")) !== dnsBefore, "the DNS answers changed with the rotation");
  check(activeAfter !== activeBefore, "rotation changed the active test server", [activeBefore, activeAfter]);
  summary.rotated = { before: activeBefore, after: activeAfter };

  // Fault rules: add, listed, clear.
  await page.fill("#f-path", "/epayment/v1/payments/**");
  await page.fill("#f-status", "503");
  await page.click("text=Add rule");
  await page.waitForSelector("[data-testid=faults]");
  check((await page.textContent("[data-testid=faults]")).includes("/epayment/v1/payments/**"), "fault listed");
  await page.click("text=Clear all fault rules");
  await page.waitForSelector("[data-testid=no-faults]");
  await page.goto(`${base}/_emulator/ui`);
  await shot(page, "dashboard");

  // Payments: filter by state and reference, page forward.
  await page.goto(`${base}/_emulator/ui/aggregates/epayment.payment`);
  await page.selectOption("#state", "AUTHORIZED");
  await page.click("button:text-is('Filter')");
  await page.waitForURL(/state=AUTHORIZED/);
  const authorized = await page.textContent("[data-testid=list]");
  check(authorized.includes(cfg.pay.reference) && !authorized.includes(cfg.reject.reference), "state filter");
  await page.goto(`${base}/_emulator/ui/aggregates/epayment.payment`);
  await page.fill("#reference", "bulk-");
  await page.click("button:text-is('Filter')");
  await page.waitForURL(/reference=bulk-/);
  const firstRows = await page.locator("[data-testid=list] tbody tr").count();
  check(firstRows === 50, "a full first page", firstRows);
  await page.click("a[rel=next]");
  await page.waitForURL(/after_ms=/);
  const secondRows = await page.locator("[data-testid=list] tbody tr").count();
  check(secondRows === cfg.bulk - 50, "the rest on the second page", secondRows);
  await shot(page, "payments");

  // The detail page of the paid payment: fields, timeline, requests with keys, deliveries; resend one.
  await page.goto(`${base}/_emulator/ui/aggregates/epayment.payment?reference=browser-pay`);
  await page.click(`a:text-is('${cfg.pay.reference}')`);
  await page.waitForSelector("[data-testid=timeline]");
  const timeline = await page.textContent("[data-testid=timeline]");
  check(timeline.includes("CREATED") && timeline.includes("AUTHORIZED") && timeline.includes(cfg.pay.key), "timeline", timeline);
  check((await page.textContent("[data-testid=fields]")).includes("4799990000"), "the phone the payer paid with");
  check((await page.textContent("[data-testid=state]")) === "AUTHORIZED", "the detail page shows the state");
  check((await page.textContent("[data-testid=requests]")).includes("replay"), "the replayed create is marked");
  await page.waitForFunction(() => document.querySelectorAll("[data-testid=attempts] button").length >= 2);
  const before = await page.locator("[data-testid=attempts] button").count();
  await shot(page, "payment-detail");
  await page.locator("[data-testid=attempts] button").first().click();
  // The new attempt appears without a reload (server-sent events replace the page's content).
  await page.waitForFunction(
    (n) => document.querySelectorAll("[data-testid=attempts] button").length > n,
    before,
  );
  summary.resent = true;

  // Deliveries and requests pages.
  await page.goto(`${base}/_emulator/ui/deliveries?reference=${cfg.pay.reference}`);
  check((await page.textContent("[data-testid=attempts]")).includes("authorization"), "signed headers shown");
  await shot(page, "deliveries");
  await page.goto(`${base}/_emulator/ui/requests`);
  await page.fill("#system_name", "browser-shop");
  await page.click("button:text-is('Filter')");
  await page.waitForURL(/system_name=browser-shop/);
  check((await page.textContent("[data-testid=requests]")).includes("browser-shop"), "request record filter");
  await shot(page, "requests");
  await page.goto(`${base}/_emulator/ui/webhooks`);
  await shot(page, "webhooks");

  // Keyboard use: the first link of the navigation is reachable with Tab.
  await page.goto(`${base}/_emulator/ui`);
  await page.keyboard.press("Tab");
  check(await page.evaluate(() => document.activeElement && document.activeElement.tagName === "A"), "keyboard focus");

} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(summary));
