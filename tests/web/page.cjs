// Drives the facepipe web page in headless Chromium (playwright-core, no bundled browser):
// upload a group photo and read the names drawn on it, then upload a non-image and read
// the error shown. Prints one JSON line with what it saw; exits non-zero on failure.
//
//   node tests/web/page.cjs URL PHOTO SCREENSHOT_DIR
"use strict";
const fs = require("fs");
const os = require("os");
const path = require("path");

const cache = process.env.FACEPIPE_CACHE || path.join(os.homedir(), ".cache", "facepipe");
let playwright;
try {
  playwright = require(path.join(cache, "node", "node_modules", "playwright-core"));
} catch (e) {
  console.error("playwright-core is not installed: run scripts/setup.sh --browser");
  process.exit(2);
}
const chromium = process.env.CHROMIUM || "/usr/bin/chromium";
if (!fs.existsSync(chromium)) {
  console.error(`Chromium is not at ${chromium}: run scripts/setup.sh --browser or set CHROMIUM`);
  process.exit(2);
}

async function main() {
  const [url, photo, shots] = process.argv.slice(2);
  if (!url || !photo || !shots) throw new Error("usage: page.cjs URL PHOTO SCREENSHOT_DIR");
  fs.mkdirSync(shots, { recursive: true });
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "facepipe-chromium-"));
  const context = await playwright.chromium.launchPersistentContext(profile, {
    executablePath: chromium,
    headless: true,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
    viewport: { width: 1280, height: 900 },
  });
  const outside = [];
  try {
    const page = await context.newPage();
    // Every request must go to facepipe itself (no CDN, no fonts from elsewhere).
    page.on("request", (r) => {
      if (!r.url().startsWith(url) && !r.url().startsWith("blob:") && !r.url().startsWith("data:")) {
        outside.push(r.url());
      }
    });
    await page.goto(url);
    await page.setInputFiles("#file", photo);
    await page.waitForSelector("#boxes .box", { timeout: 180000 });
    await page.waitForFunction(() => document.querySelector("#photo").complete);
    const boxes = await page.$$eval("#boxes .box", (els) =>
      els.map((e) => {
        const r = e.getBoundingClientRect();
        return { person: e.dataset.person, label: e.textContent, width: r.width, height: r.height };
      })
    );
    const photoBox = await page.$eval("#photo", (e) => {
      const r = e.getBoundingClientRect();
      return { width: r.width, height: r.height };
    });
    await page.screenshot({ path: path.join(shots, "web-desktop.png"), fullPage: true });
    // A phone-sized viewport: the photo shrinks and the boxes follow it.
    await page.setViewportSize({ width: 390, height: 844 });
    await page.waitForTimeout(200);
    const phone = await page.$eval("#photo", (e) => e.getBoundingClientRect().width);
    const phoneBoxes = await page.$$eval("#boxes .box", (els) => els.map((e) => e.getBoundingClientRect().right));
    await page.screenshot({ path: path.join(shots, "web-phone.png"), fullPage: true });
    await page.setViewportSize({ width: 1280, height: 900 });

    await page.setInputFiles("#file", {
      name: "notes.txt",
      mimeType: "text/plain",
      buffer: Buffer.from("these are my notes, not a photo"),
    });
    await page.waitForSelector("#error:not([hidden])", { timeout: 60000 });
    const error = await page.$eval("#error", (e) => e.textContent);
    const resultHidden = await page.$eval("#result", (e) => e.hidden);
    await page.screenshot({ path: path.join(shots, "web-error.png"), fullPage: true });
    console.log(JSON.stringify({ boxes, photo: photoBox, phone, phoneBoxes, error, resultHidden, outside }));
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
