// What the page drivers share: headless Chromium through playwright-core (no bundled
// browser), started in a throwaway profile, and a watch that every request the page makes
// goes to facepipe itself.
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

// Headless Chromium in a new profile; `close()` ends it and removes the profile.
async function launch() {
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
  const close = async () => {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  };
  return { context, close };
}

// Record in `outside` every request of `page` that leaves `url` (no CDN, no fonts from
// elsewhere): the page must work offline.
function watchOutside(page, url, outside) {
  page.on("request", (r) => {
    if (!r.url().startsWith(url) && !r.url().startsWith("blob:") && !r.url().startsWith("data:")) {
      outside.push(r.url());
    }
  });
}

module.exports = { launch, watchOutside };
