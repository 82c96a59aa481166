// Drives the review part of the facepipe web page in headless Chromium (playwright-core, no
// bundled browser): name a group, identify a photo, take a face out of a group, enroll a face
// of an uploaded photo, and check where a face is shown. Runs the steps the plan holds, in
// that order; prints one JSON line with what it saw; exits non-zero on failure.
//
//   node tests/web/review.cjs URL KEY PLAN_JSON_FILE SCREENSHOT_DIR
//
// The plan: {"name": {"group", "as"}, "identify": PHOTO, "remove": {"group", "face"},
//            "enroll": {"photo", "face": INDEX, "as"}, "check": {"group", "face"}}
"use strict";
const fs = require("fs");
const path = require("path");
const { launch, watchOutside } = require("./browser.cjs");

// A debug build on a busy 2-core machine: identify and name can take minutes.
const SLOW = 180000;
const LOAD = 120000;

// A CSS attribute selector for any string (keys and face ids come from the server).
function attr(name, value) {
  return `[${name}="${String(value).replace(/["\\]/g, "\\$&")}"]`;
}
const groupSel = (key) => `#groups section.group${attr("data-key", key)}`;
const faceSel = (key, face) => `${groupSel(key)} figure.face${attr("data-face", face)}`;

async function shot(page, dir, name) {
  // A very long review would make a huge full-page image: keep to the viewport then.
  const tall = await page.evaluate(() => document.documentElement.scrollHeight);
  await page.screenshot({ path: path.join(dir, name), fullPage: tall <= 12000 });
}

async function fillKey(page, key) {
  const closed = await page.$eval("#keybox", (d) => d.tagName === "DETAILS" && !d.open);
  if (closed) await page.click("#keybox > summary");
  await page.fill("#apikey", key);
}

// Open the People view and wait for its GET /v1/review to be shown; fails on an error or
// when the server holds no review.
async function openPeople(page) {
  await page.click("#tab-people");
  await page.waitForFunction(
    () => {
      const view = document.querySelector("#view-people");
      return !view.hidden && !view.hasAttribute("aria-busy");
    },
    null,
    { timeout: LOAD }
  );
  const state = await page.evaluate(() => ({
    error: document.querySelector("#review-error").hidden ? "" : document.querySelector("#review-error").textContent,
    empty: document.querySelector("#review-empty").hidden ? "" : document.querySelector("#review-empty").textContent,
  }));
  if (state.error) throw new Error("the People view shows an error: " + state.error);
  if (state.empty) throw new Error("the People view has no review: " + state.empty);
}

// Wait until no thumbnail is loading any more (not fatal: count what came).
async function settleThumbnails(page) {
  try {
    await page.waitForFunction(() => !document.querySelector("#groups figure.face.loading"), null, {
      timeout: LOAD,
    });
  } catch (e) {
    console.error("thumbnails still loading after", LOAD / 1000, "s");
  }
}

// Show every face of the group (or of all groups): click the "+N more" buttons.
async function expand(page, key) {
  const sel = key === undefined ? "#groups .more" : `${groupSel(key)} .more`;
  for (const more of await page.$$(sel)) await more.click();
}

// Wait for an action of the People view: `done(arg)`, run in the page, turns true, or
// #review-error shows, which fails the step. Polled from here: the page's CSP forbids eval,
// so the check cannot be assembled inside the page.
async function waitForAction(page, what, done, arg) {
  const deadline = Date.now() + SLOW;
  for (;;) {
    const error = await page.$eval("#review-error", (e) => (e.hidden ? "" : e.textContent));
    if (error) throw new Error(`${what} failed: ${error}`);
    if (await page.evaluate(done, arg)) return;
    if (Date.now() > deadline) throw new Error(`${what}: nothing happened in ${SLOW / 1000} s`);
    await page.waitForTimeout(250);
  }
}

// The section of a group, found by comparing keys (no selector escaping involved).
function sectionDone([key, name]) {
  for (const s of document.querySelectorAll("#groups section.group")) {
    if (s.dataset.key === key) return s.dataset.name === name && !s.hasAttribute("aria-busy");
  }
  return false;
}

function faceGone([key, face]) {
  const view = document.querySelector("#view-people");
  if (view.hasAttribute("aria-busy") || view.querySelector("section.group[aria-busy]")) return false;
  for (const s of document.querySelectorAll("#groups section.group")) {
    if (s.dataset.key === key) return ![...s.querySelectorAll("figure.face")].some((f) => f.dataset.face === face);
  }
  return true; // the whole group is gone
}

// Upload a photo in the Identify view and wait for its answer; returns the names on the boxes.
async function identify(page, photo) {
  await page.click("#tab-identify");
  await page.setInputFiles("#file", photo);
  await waitForIdentified(page, false);
  return boxes(page);
}

async function waitForIdentified(page, enrolled) {
  const handle = await page.waitForFunction(
    (enrolledToo) => {
      const error = document.querySelector("#error");
      if (!error.hidden) return { error: error.textContent };
      const status = document.querySelector("#status").textContent;
      if (enrolledToo && !status.includes("Enrolled")) return false;
      const result = document.querySelector("#result");
      return !result.hidden && !status.includes("Looking for faces") && document.querySelector("#photo").complete
        ? { ok: true }
        : false;
    },
    enrolled,
    { timeout: SLOW, polling: 250 }
  );
  const result = await handle.jsonValue();
  if (result.error) throw new Error("the Identify view shows an error: " + result.error);
}

function boxes(page) {
  return page.$$eval("#boxes .box", (els) => els.map((e) => e.dataset.person));
}

async function main() {
  const [url, key, planFile, shots] = process.argv.slice(2);
  if (!url || key === undefined || !planFile || !shots) {
    throw new Error("usage: review.cjs URL KEY PLAN_JSON_FILE SCREENSHOT_DIR");
  }
  const plan = JSON.parse(fs.readFileSync(planFile, "utf8"));
  fs.mkdirSync(shots, { recursive: true });
  const { context, close } = await launch();
  const outside = [];
  const seen = { groups_seen: null, thumbnails_loaded: null };
  try {
    const page = await context.newPage();
    watchOutside(page, url, outside);
    page.on("console", (m) => {
      if (m.type() === "error") console.error("page console error:", m.text());
    });
    page.on("pageerror", (e) => console.error("page error:", e.message));
    await page.goto(url);
    await fillKey(page, key);

    // The first People view: how many groups, how many thumbnails arrived.
    let firstLook = false;
    async function people() {
      await openPeople(page);
      if (firstLook) return;
      firstLook = true;
      await settleThumbnails(page);
      seen.groups_seen = await page.$$eval("#groups section.group", (els) => els.length);
      seen.thumbnails_loaded = await page.$$eval(
        "#groups figure.face img",
        (imgs) => imgs.filter((i) => i.complete && i.naturalWidth > 0).length
      );
      await shot(page, shots, "people.png");
      await page.setViewportSize({ width: 390, height: 844 });
      await page.waitForTimeout(200);
      await shot(page, shots, "people-phone.png");
      await page.setViewportSize({ width: 1280, height: 900 });
    }

    if (plan.name) {
      const { group, as } = plan.name;
      await people();
      await page.fill(`${groupSel(group)} .group-name`, as);
      await page.click(`${groupSel(group)} .name`);
      await waitForAction(page, "naming the group", sectionDone, [group, as]);
      const heading = await page.$eval(`${groupSel(group)} h3`, (h) => h.textContent);
      const status = await page.$eval("#review-status", (e) => e.textContent);
      seen.named = { group, name: await page.$eval(groupSel(group), (s) => s.dataset.name), heading, status };
      await shot(page, shots, "people-named.png");
    }

    if (plan.identify) {
      seen.identified = await identify(page, plan.identify);
      await shot(page, shots, "identify-named.png");
    }

    if (plan.remove) {
      const { group, face } = plan.remove;
      await people();
      if (!(await page.$(faceSel(group, face)))) await expand(page, group);
      if (!(await page.$(faceSel(group, face)))) {
        throw new Error(`face ${face} is not shown in group ${group}`);
      }
      await page.click(`${faceSel(group, face)} .remove`);
      await waitForAction(page, "taking the face out", faceGone, [group, String(face)]);
      // The group keeps its faces expanded across the re-render, so absence means gone.
      const gone = !(await page.$(faceSel(group, face)));
      const status = await page.$eval("#review-status", (e) => e.textContent);
      seen.removed = { group, face, gone, status };
      await shot(page, shots, "people-removed.png");
    }

    if (plan.enroll) {
      const { photo, face, as } = plan.enroll;
      await identify(page, photo);
      const li = `#faces li${attr("data-face", face)}`;
      if (!(await page.$(li))) throw new Error(`the photo has no face ${face} in #faces`);
      await page.fill(`${li} .enroll-name`, as);
      await page.click(`${li} .enroll`);
      await waitForIdentified(page, true);
      const status = await page.$eval("#status", (e) => e.textContent);
      seen.enrolled = { status, boxes: await boxes(page) };
      await shot(page, shots, "identify-enrolled.png");
    }

    if (plan.check) {
      const { group, face } = plan.check;
      // A fresh page: what the server holds now, not what this page remembers.
      await page.goto(url);
      await fillKey(page, key);
      await people();
      await expand(page);
      seen.check = await page.evaluate(
        ([k, f]) => {
          let groupOfFace = null;
          let shown = false;
          for (const s of document.querySelectorAll("#groups section.group")) {
            const has = [...s.querySelectorAll("figure.face")].some((x) => x.dataset.face === f);
            if (has && groupOfFace === null) groupOfFace = s.dataset.key;
            if (has && s.dataset.key === k) shown = true;
          }
          return { group: k, face: f, shown_in_group: shown, group_of_face: groupOfFace };
        },
        [group, String(face)]
      );
      await shot(page, shots, "people-check.png");
    }

    seen.outside = outside;
    console.log(JSON.stringify(seen));
  } finally {
    await close();
  }
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
