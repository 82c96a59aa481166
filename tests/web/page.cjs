// Drives the facepipe web page in headless Chromium (playwright-core, no bundled browser):
// upload a group photo and read the names drawn on it, then upload a non-image and read
// the error shown. Prints one JSON line with what it saw; exits non-zero on failure.
//
//   node tests/web/page.cjs URL PHOTO SCREENSHOT_DIR
"use strict";
const fs = require("fs");
const path = require("path");
const { launch, watchOutside } = require("./browser.cjs");

async function main() {
  const [url, photo, shots] = process.argv.slice(2);
  if (!url || !photo || !shots) throw new Error("usage: page.cjs URL PHOTO SCREENSHOT_DIR");
  fs.mkdirSync(shots, { recursive: true });
  const { context, close } = await launch();
  const outside = [];
  try {
    const page = await context.newPage();
    watchOutside(page, url, outside);
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
    await close();
  }
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
