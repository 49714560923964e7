// The pet store in a real browser (headless Chromium driven by playwright-core),
// against a running nimbus that serves the app (tests/e2e/webapp.rs starts it
// on both backends, seeds the catalogue and a product with one item left).
// Two users in two browser contexts: one signs up, searches, buys and sees the
// order; the other, a guest, sees the stock change live; both then buy the last
// item at once (one success, one clear refusal), and the guest creates an
// account and keeps its order. Fails on any console error of either page.
// Env: NIMBUS_URL, ARTIFACTS (a folder for screenshots), LAST_ITEM (a product id with stock 1).
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

import { chromium } from "playwright-core";

const url = process.env.NIMBUS_URL;
const artifacts = process.env.ARTIFACTS ?? "test-artifacts";
const lastItem = process.env.LAST_ITEM;
assert.ok(url && lastItem, "NIMBUS_URL and LAST_ITEM must be set (tests/e2e/webapp.rs sets them)");
mkdirSync(artifacts, { recursive: true });

const TIMEOUT = 15_000;
const consoleErrors = [];
/** The refusal the losing buyer gets is a 412 from /fn/purchase, which Chromium reports on the console; that one is expected. */
let expectedRefusals = 0;

async function openPage(browser, name) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on("console", (message) => {
    if (message.type() !== "error") return;
    const refused = message.text().includes("status of 412") && message.location().url.endsWith("/fn/purchase");
    if (refused && expectedRefusals > 0) expectedRefusals--;
    else consoleErrors.push(`${name}: ${message.text()} (${message.location().url})`);
  });
  page.on("pageerror", (error) => consoleErrors.push(`${name}: uncaught ${error.message}`));
  pages.push([name, page]);
  await page.goto(url);
  await page.getByTestId("product-catnip-mouse").waitFor();
  return page;
}

const text = (page, id) => page.getByTestId(id).innerText();
const shot = (page, name) => page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true });

/** Waits until `read()` returns a value `accept` takes; returns it. */
async function until(what, read, accept) {
  const deadline = Date.now() + TIMEOUT;
  let last;
  while (Date.now() < deadline) {
    last = await read();
    if (accept(last)) return last;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what}: still ${JSON.stringify(last)}`);
}

const pages = [];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu"],
});
try {
  // Shopper A signs up.
  const a = await openPage(browser, "A");
  await shot(a, "01-signed-out");
  const email = `shopper-${Date.now().toString(36)}@example.com`;
  await a.getByLabel("Email").fill(email);
  await a.getByLabel("Password").fill("correct horse battery");
  await a.getByTestId("sign-up").click();
  await until("A is signed in", () => text(a, "who-name"), (t) => t === email);
  assert.equal(await a.getByTestId("auth").isHidden(), true, "the sign-in card goes away");

  // Search goes through the `search` function.
  await a.getByTestId("search").fill("bed");
  await until("search narrows the list", () => a.locator('[data-testid^="product-"]').count(), (n) => n === 1);
  assert.match(await text(a, "search-status"), /1 found/);
  await a.getByTestId("product-dog-bed").waitFor();
  await shot(a, "02-search");

  // Shopper B continues as a guest and watches the dog bed's stock.
  const b = await openPage(browser, "B");
  await b.getByTestId("guest").click();
  await until("B is a guest", () => text(b, "who-name"), (t) => t === "Guest");
  const before = await text(b, "stock-dog-bed");

  // A buys it; A's order shows up, and B's page shows the new stock without a reload.
  await a.getByTestId("buy-dog-bed").click();
  await a.getByTestId("toast-success").first().waitFor();
  await until("A's order is listed", () => a.getByTestId("order").allInnerTexts(), (t) => t.length === 1 && t[0].includes("Dog bed"));
  const after = await until("B sees the stock change live", () => text(b, "stock-dog-bed"), (t) => t !== before);
  assert.equal(Number.parseInt(after.match(/\d+/)?.[0] ?? "NaN", 10), Number.parseInt(before.match(/\d+/)[0], 10) - 1, `${before} → ${after}`);
  await shot(a, "03-ordered");
  await shot(b, "04-stock-changed-live");

  // Both buy the last item at once: one order, one clear refusal.
  await a.getByTestId("search").fill("");
  await a.getByTestId(`product-${lastItem}`).waitFor();
  // Both purchase requests are held until both were made, then reach the server together.
  const held = [];
  const together = (route) => {
    held.push(route);
    if (held.length === 2) for (const r of held) void r.continue();
  };
  await a.route("**/fn/purchase", together);
  await b.route("**/fn/purchase", together);
  expectedRefusals = 1;
  await Promise.all([a.getByTestId(`buy-${lastItem}`).click(), b.getByTestId(`buy-${lastItem}`).click()]);
  const outcome = async (page) => {
    const toasts = await until("a toast about the hammock", () => text(page, "toasts"), (t) => /hammock/i.test(t));
    return /bought: last-chance hammock/i.test(toasts) ? "bought" : `refused: ${toasts}`;
  };
  const outcomes = await Promise.all([outcome(a), outcome(b)]);
  assert.deepEqual(outcomes.filter((o) => o === "bought").length, 1, `one buyer wins: ${outcomes}`);
  assert.match(outcomes.find((o) => o !== "bought"), /sold out/i, "the other is told plainly");
  await until("both pages show it sold out", async () => [await text(a, `stock-${lastItem}`), await text(b, `stock-${lastItem}`)], (t) => t.every((s) => s === "Sold out"));
  await shot(a, "05-race-a");
  await shot(b, "06-race-b");

  // The guest creates an account in place and keeps its orders.
  const guestOrders = await b.getByTestId("order").count();
  await b.getByTestId("upgrade").click();
  const guestEmail = `guest-${Date.now().toString(36)}@example.com`;
  await b.getByLabel("Email").fill(guestEmail);
  await b.getByLabel("Password").fill("correct horse battery");
  await b.getByTestId("sign-up").click();
  await until("B has an account", () => text(b, "who-name"), (t) => t === guestEmail);
  assert.equal(await b.getByTestId("order").count(), guestOrders, "the guest's orders stay");

  // Signing out hides the orders.
  await a.getByTestId("sign-out").click();
  await a.getByTestId("auth").waitFor();
  assert.equal(await a.getByTestId("orders-section").isHidden(), true);
  await shot(b, "07-upgraded");

  assert.equal(expectedRefusals, 0, "the refused purchase was seen");
  assert.deepEqual(consoleErrors, [], "no console errors");
  console.log(`browser test passed; screenshots in ${artifacts}`);
} catch (error) {
  for (const [name, page] of pages) {
    await shot(page, `failed-${name}`).catch(() => undefined);
    console.log(`page ${name} toasts: ${await page.getByTestId("toasts").innerText().catch(() => "?")}`);
  }
  console.log(`console errors: ${JSON.stringify(consoleErrors)}`);
  throw error;
} finally {
  await browser.close();
}
