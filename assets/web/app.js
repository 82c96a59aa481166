// facepipe web page. Identify: send a photo to /v1/identify, draw a box and a name on every
// face, and enroll a face under a name. People: review the clustering result (/v1/review),
// name, merge, split and ignore groups.
"use strict";

const $ = (id) => document.getElementById(id);
const fileInput = $("file");
const drop = $("drop");
const photo = $("photo");
const boxes = $("boxes");
let lastAnswer = null;
let lastFile = null;
let objectUrl = null;

// ---------------------------------------------------------------- shared helpers

function version(n) {
  return "v" + String(n).padStart(4, "0");
}

function plural(n, one, many) {
  return `${n} ${n === 1 ? one : many || one + "s"}`;
}

function authHeaders() {
  const key = $("apikey").value.trim();
  return key ? { Authorization: "Bearer " + key } : {};
}

function showDeployment(n) {
  if (n != null) $("deployment").textContent = `(deployment ${version(n)})`;
}

// Calls the API and never throws: {ok, status, body, message, code}.
async function callApi(method, path, body) {
  const init = { method, headers: authHeaders() };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    return { ok: false, status: 0, body: null, code: "network", message: "Could not reach the service: " + e.message };
  }
  let parsed = null;
  try {
    parsed = await response.json();
  } catch (e) {
    parsed = null;
  }
  const error = parsed && parsed.error ? parsed.error : null;
  return {
    ok: response.ok,
    status: response.status,
    body: parsed,
    code: error ? error.code : null,
    message: error && error.message ? error.message : "HTTP " + response.status,
  };
}

function needsKey(status) {
  return status === 401 || status === 403;
}

function openKeybox() {
  $("keybox").open = true;
}

// ---------------------------------------------------------------- views

const tabs = [
  { tab: $("tab-identify"), view: $("view-identify"), hash: "#identify" },
  { tab: $("tab-people"), view: $("view-people"), hash: "#people" },
];

function showView(which, focus) {
  for (const t of tabs) {
    const on = t === which;
    t.tab.setAttribute("aria-selected", on ? "true" : "false");
    t.tab.tabIndex = on ? 0 : -1;
    t.view.hidden = !on;
  }
  if (focus) which.tab.focus();
  if (location.hash !== which.hash) history.replaceState(null, "", which.hash);
  if (which.view.id === "view-people") loadReview({ clear: true });
}

tabs.forEach((t, i) => {
  t.tab.addEventListener("click", () => showView(t, false));
  // Arrow keys move between tabs, as in any tab list.
  t.tab.addEventListener("keydown", (e) => {
    let next = null;
    if (e.key === "ArrowRight") next = tabs[(i + 1) % tabs.length];
    else if (e.key === "ArrowLeft") next = tabs[(i + tabs.length - 1) % tabs.length];
    else if (e.key === "Home") next = tabs[0];
    else if (e.key === "End") next = tabs[tabs.length - 1];
    if (next) {
      e.preventDefault();
      showView(next, true);
    }
  });
});

// A new key may unlock the review: fetch it again when the People view is open.
$("apikey").addEventListener("change", () => {
  if (!$("view-people").hidden) loadReview({ clear: true });
});

// ---------------------------------------------------------------- identify view

function showError(message) {
  const el = $("error");
  el.textContent = message;
  el.hidden = false;
  $("status").textContent = "";
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

// `note` stays in front of the status while the photo is identified again (after an enroll).
async function identify(file, note) {
  const prefix = note ? note + " " : "";
  lastFile = file;
  clearError();
  $("result").hidden = true;
  // Clear the old boxes so nothing stale is read while the new answer is on its way.
  boxes.replaceChildren();
  $("faces").replaceChildren();
  $("status").textContent = prefix + "Looking for faces…";
  const form = new FormData();
  form.append("image", file, file.name || "photo");
  const r = await callApi("POST", "/v1/identify?top_k=3", form);
  if (file !== lastFile) return; // a newer photo was chosen meanwhile
  if (r.status === 0) {
    showError(r.message);
    return;
  }
  if (!r.ok || !r.body) {
    if (needsKey(r.status)) openKeybox();
    showError("The service could not use this file: " + r.message);
    return;
  }
  const body = r.body;
  lastAnswer = body;
  if (objectUrl) URL.revokeObjectURL(objectUrl);
  objectUrl = URL.createObjectURL(file);
  photo.onload = () => {
    $("result").hidden = false;
    draw();
    listFaces();
  };
  photo.onerror = () => {
    // The browser cannot show every format the service reads (TIFF): list the faces anyway.
    $("result").hidden = false;
    draw();
    listFaces();
  };
  photo.src = objectUrl;
  const n = body.faces.length;
  const known = body.faces.filter((f) => f.person).length;
  let summary =
    n === 0 ? "No face found in this photo." : `${n} face${n > 1 ? "s" : ""}, ${known} recognised.`;
  if (body.faces_truncated) {
    // The service identifies only the largest faces of a crowded photo.
    summary += ` The photo has ${body.faces_found} faces: only the ${n} largest were identified.`;
  }
  $("status").textContent = prefix + summary;
  showDeployment(body.deployment);
}

function percent(x) {
  return x == null ? "" : Math.round(x * 100) + "%";
}

// Boxes follow the displayed size of the photo, so they are redrawn on resize.
function draw() {
  if (!lastAnswer) return;
  boxes.replaceChildren();
  // Boxes are in image pixels; scale them to the size the photo is displayed at.
  const sx = photo.clientWidth / lastAnswer.width || 1;
  const sy = photo.clientHeight / lastAnswer.height || 1;
  lastAnswer.faces.forEach((f) => {
    const [x, y, w, h] = f.box;
    const name = f.person || "unknown";
    const box = document.createElement("div");
    box.className = "box" + (f.person ? "" : " unknown") + (y * sy < 24 ? " low" : "");
    box.style.left = x * sx + "px";
    box.style.top = y * sy + "px";
    box.style.width = w * sx + "px";
    box.style.height = h * sy + "px";
    box.dataset.person = name;
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = f.person ? `${name} ${percent(f.similarity)}` : "unknown";
    box.appendChild(label);
    boxes.appendChild(box);
  });
  separateLabels();
}

// The list is built once per answer, not on resize: a phone resizes the page when its
// keyboard opens, and rebuilding would wipe the name being typed.
function listFaces() {
  const list = $("faces");
  list.replaceChildren();
  lastAnswer.faces.forEach((f, i) => {
    const name = f.person || "unknown";
    const li = document.createElement("li");
    li.dataset.face = String(i);
    const best = f.top && f.top.length ? f.top[0] : null;
    const text = document.createElement("span");
    text.textContent = f.person
      ? `${name} — similarity ${percent(f.similarity)} (distance ${f.distance.toFixed(3)})`
      : `unknown` + (best ? ` — closest: ${best.person}, similarity ${percent(best.similarity)}` : "");
    li.appendChild(text);
    li.appendChild(enrollForm(f, i));
    list.appendChild(li);
  });
}

// A text field for a person's name (the service allows up to 200 characters).
function nameInput(className, label) {
  const input = document.createElement("input");
  input.type = "text";
  input.className = className;
  input.placeholder = "name";
  input.required = true;
  input.maxLength = 200;
  input.autocomplete = "off";
  input.setAttribute("aria-label", label);
  return input;
}

function enrollForm(face, i) {
  const form = document.createElement("form");
  form.className = "enroll-form";
  const input = nameInput("enroll-name", `Name to enroll face ${i + 1} under`);
  const button = document.createElement("button");
  button.type = "submit";
  button.className = "enroll";
  button.textContent = "Enroll";
  form.append(input, button);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    enroll(face, input.value.trim(), form);
  });
  return form;
}

async function enroll(face, name, form) {
  const file = lastFile;
  if (!file) return;
  if (!name) {
    showError("Type a name to enroll this face under.");
    return;
  }
  clearError();
  for (const el of form.elements) el.disabled = true;
  $("status").textContent = `Enrolling ${name}…`;
  const body = new FormData();
  body.append("image", file, file.name || "photo");
  // The box exactly as /v1/identify returned it: the server enrolls the face it matches.
  body.append("box", face.box.join(","));
  const r = await callApi("POST", `/v1/people/${encodeURIComponent(name)}/faces`, body);
  if (!r.ok || !r.body) {
    for (const el of form.elements) el.disabled = false;
    if (needsKey(r.status)) openKeybox();
    showError(`Could not enroll ${name}: ${r.message}`);
    return;
  }
  showDeployment(r.body.deployment);
  // Identify again so the box shows the new name; the note keeps the outcome visible.
  await identify(file, `Enrolled ${r.body.person || name} (deployment ${version(r.body.deployment)}).`);
}

function overlaps(a, b) {
  return a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
}

// Neighbouring faces (or a small screen) can make labels collide: move a label under its
// box when it would cover one already placed.
function separateLabels() {
  const placed = [];
  const labels = Array.from(boxes.querySelectorAll(".label")).sort(
    (a, b) => a.getBoundingClientRect().left - b.getBoundingClientRect().left
  );
  for (const label of labels) {
    let rect = label.getBoundingClientRect();
    if (placed.some((p) => overlaps(p, rect))) {
      label.parentElement.classList.toggle("low");
      rect = label.getBoundingClientRect();
    }
    placed.push(rect);
  }
}

fileInput.addEventListener("change", () => {
  if (fileInput.files && fileInput.files[0]) identify(fileInput.files[0]);
});
["dragenter", "dragover"].forEach((t) =>
  drop.addEventListener(t, (e) => {
    e.preventDefault();
    drop.classList.add("over");
  })
);
["dragleave", "drop"].forEach((t) =>
  drop.addEventListener(t, (e) => {
    e.preventDefault();
    drop.classList.remove("over");
  })
);
drop.addEventListener("drop", (e) => {
  const f = e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files[0];
  if (f) identify(f);
});
// The drop zone is focusable: Enter or Space opens the file chooser.
drop.addEventListener("keydown", (e) => {
  if (e.target === drop && (e.key === "Enter" || e.key === " ")) {
    e.preventDefault();
    fileInput.click();
  }
});
window.addEventListener("resize", draw);

// ---------------------------------------------------------------- face thumbnails

// The crops need the key header, so they are fetched and shown through blob URLs. The
// Blobs are kept across re-renders (a face id's crop does not change); the URLs of one
// render are revoked on the next.
const THUMBS_AT_ONCE = 6;
const thumbs = {
  source: "", // the review the cached crops belong to
  blobs: new Map(), // face id → Blob
  urls: [], // blob URLs made for the current render
  waiters: new Map(), // face id → [{img, fig, render}] while queued or in flight
  queue: [], // face ids to fetch, in page order
  running: 0,
  render: 0, // bumped on every render: older waiters are dropped
};

function newThumbRender(source) {
  if (source !== thumbs.source || thumbs.blobs.size > 5000) {
    thumbs.blobs.clear();
    thumbs.source = source;
  }
  thumbs.urls.forEach((u) => URL.revokeObjectURL(u));
  thumbs.urls = [];
  thumbs.render += 1;
}

function putThumb(img, fig, blob) {
  const url = URL.createObjectURL(blob);
  thumbs.urls.push(url);
  img.src = url;
}

function loadThumb(img, fig, face) {
  const id = String(face);
  fig.classList.add("loading");
  img.addEventListener("load", () => fig.classList.remove("loading"), { once: true });
  img.addEventListener(
    "error",
    () => {
      fig.classList.remove("loading");
      fig.classList.add("failed");
    },
    { once: true }
  );
  const cached = thumbs.blobs.get(id);
  if (cached) {
    putThumb(img, fig, cached);
    return;
  }
  const waiting = thumbs.waiters.get(id);
  const waiter = { img, fig, render: thumbs.render };
  if (waiting) {
    waiting.push(waiter); // already queued or in flight
    return;
  }
  thumbs.waiters.set(id, [waiter]);
  thumbs.queue.push(id);
  pumpThumbs();
}

function pumpThumbs() {
  while (thumbs.running < THUMBS_AT_ONCE && thumbs.queue.length) {
    const id = thumbs.queue.shift();
    const current = (thumbs.waiters.get(id) || []).filter((w) => w.render === thumbs.render);
    if (!current.length) {
      thumbs.waiters.delete(id); // nobody shows this face any more
      continue;
    }
    thumbs.running += 1;
    fetchThumb(id).finally(() => {
      thumbs.running -= 1;
      pumpThumbs();
    });
  }
}

async function fetchThumb(id) {
  let blob = null;
  let why = "";
  try {
    const response = await fetch(`/v1/review/faces/${encodeURIComponent(id)}`, { headers: authHeaders() });
    if (response.ok) blob = await response.blob();
    else why = "HTTP " + response.status;
  } catch (e) {
    why = e.message;
  }
  const waiting = (thumbs.waiters.get(id) || []).filter((w) => w.render === thumbs.render);
  thumbs.waiters.delete(id);
  if (blob) thumbs.blobs.set(id, blob);
  for (const w of waiting) {
    if (blob) {
      putThumb(w.img, w.fig, blob);
    } else {
      w.fig.classList.remove("loading");
      w.fig.classList.add("failed");
      w.img.title = `Could not load this face (${why}).`;
    }
  }
}

// ---------------------------------------------------------------- people view

const FIRST_THUMBS = 24;
const REASONS = {
  low_score: "low detection score",
  too_small: "too small",
  blurred: "blurred",
  ignored: "ignored (not a face)",
  small_group: "alone (a group of one)",
  removed: "taken out of a group (not this person)",
};
const review = {
  data: null,
  loads: 0, // only the newest load renders
  selected: new Set(), // group keys picked for merging
  expanded: new Set(), // group keys showing all their faces
  busy: new Set(), // group keys with an action running
  focus: null, // what to focus again after the next render
};

function reviewError(message) {
  const el = $("review-error");
  el.textContent = message;
  el.hidden = !message;
}

function sectionOf(key) {
  for (const s of $("groups").querySelectorAll("section.group")) if (s.dataset.key === key) return s;
  return null;
}

async function loadReview(opts) {
  const options = opts || {};
  const load = ++review.loads;
  const view = $("view-people");
  view.setAttribute("aria-busy", "true");
  if (options.clear) reviewError("");
  if (!review.data) $("review-status").textContent = "Loading the review…";
  const r = await callApi("GET", "/v1/review");
  if (load !== review.loads) return;
  view.removeAttribute("aria-busy");
  if ($("review-status").textContent === "Loading the review…") $("review-status").textContent = "";
  const empty = $("review-empty");
  if (r.ok && r.body) {
    empty.hidden = true;
    if (options.clear) reviewError("");
    review.data = r.body;
    renderReview();
    return;
  }
  // Nothing to show: clear the old groups rather than leave stale ones clickable.
  review.data = null;
  renderReview();
  if (r.status === 404 && r.code === "no_review") {
    empty.textContent = r.message;
    empty.hidden = false;
    reviewError("");
    return;
  }
  empty.hidden = true;
  if (needsKey(r.status)) openKeybox();
  reviewError(r.status === 0 ? r.message : "Could not load the review: " + r.message);
}

function renderReview() {
  const data = review.data;
  const groupsEl = $("groups");
  const groups = data ? data.groups.slice().sort((a, b) => b.size - a.size) : [];
  const keys = new Set(groups.map((g) => g.key));
  // Keep what the user had typed, picked or expanded in groups that are still there.
  const drafts = new Map();
  for (const input of groupsEl.querySelectorAll(".group-name")) {
    const s = input.closest("section.group");
    if (input.value !== (s.dataset.name || "")) drafts.set(s.dataset.key, input.value);
  }
  for (const k of [...review.selected]) if (!keys.has(k)) review.selected.delete(k);
  for (const k of [...review.expanded]) if (!keys.has(k)) review.expanded.delete(k);

  newThumbRender(data ? `${data.photos}|${data.model}` : "");
  const sections = groups.map((g, i) => groupSection(g, i + 1, drafts.get(g.key)));
  groupsEl.replaceChildren(...sections);
  $("merge").hidden = !data;

  if (!data) {
    $("review-summary").textContent = "";
    $("review-source").textContent = "";
    $("unclustered").hidden = true;
    updateMerge();
    return;
  }
  $("review-summary").textContent =
    `${plural(data.photo_count, "photo")}, ${plural(data.face_count, "face")} → ` +
    `${plural(groups.length, "group")}; ${(data.unclustered || []).length} unclustered; ` +
    `deployment ${version(data.deployment)}`;
  const d = data.decisions || {};
  const threshold = typeof data.threshold === "number" ? data.threshold.toFixed(3) : data.threshold;
  $("review-source").textContent =
    `Photos ${data.photos} · model ${data.model} · threshold ${threshold} (cosine distance) · ` +
    `decisions: ${d.named || 0} named, ${d.merged || 0} merged, ${d.removed || 0} removed, ` +
    `${d.ignored || 0} ignored, ${d.cannot_link || 0} kept apart`;
  showDeployment(data.deployment);
  renderUnclustered(data.unclustered || []);
  updateMerge();
  restoreFocus();
}

function renderUnclustered(faces) {
  const box = $("unclustered");
  box.hidden = faces.length === 0;
  box.querySelector("summary").textContent = `Unclustered (${plural(faces.length, "face")})`;
  const counts = new Map();
  for (const f of faces) counts.set(f.reason || "unknown", (counts.get(f.reason || "unknown") || 0) + 1);
  const list = $("unclustered-reasons");
  list.replaceChildren(
    ...[...counts.entries()]
      .sort((a, b) => b[1] - a[1])
      .map(([reason, n]) => {
        const li = document.createElement("li");
        li.dataset.reason = reason;
        li.textContent = `${n} ${REASONS[reason] || reason.replace(/_/g, " ")}`;
        return li;
      })
  );
}

function groupHeading(g, number) {
  let text = `Group ${number} · ${plural(g.size, "face")} · ${g.name || "unnamed"}`;
  if (g.enrolled > 0) text += ` (${g.enrolled} enrolled)`;
  return text;
}

function groupSection(g, number, draft) {
  const s = document.createElement("section");
  s.className = "group" + (g.name ? " named" : "");
  s.dataset.key = g.key;
  s.dataset.name = g.name || "";
  s.dataset.number = String(number);
  const headingId = `group-${number}-heading`;
  s.setAttribute("aria-labelledby", headingId);

  const head = document.createElement("div");
  head.className = "group-head";
  const h = document.createElement("h3");
  h.id = headingId;
  h.tabIndex = -1; // focus lands here when the button last used is gone
  h.textContent = groupHeading(g, number);
  const pick = document.createElement("label");
  pick.className = "pick";
  const box = document.createElement("input");
  box.type = "checkbox";
  box.className = "select";
  box.checked = review.selected.has(g.key);
  box.setAttribute("aria-label", `Select group ${number} for merging`);
  box.addEventListener("change", () => {
    if (box.checked) review.selected.add(g.key);
    else review.selected.delete(g.key);
    updateMerge();
  });
  pick.append(box, document.createTextNode(" merge"));
  head.append(h, pick);

  const form = document.createElement("form");
  form.className = "group-actions";
  const input = nameInput("group-name", `Name of group ${number}`);
  input.value = draft !== undefined ? draft : g.name || "";
  const name = document.createElement("button");
  name.type = "submit";
  name.className = "name";
  name.textContent = "Name";
  const ignore = document.createElement("button");
  ignore.type = "button";
  ignore.className = "ignore secondary";
  ignore.textContent = "Not a face";
  ignore.setAttribute("aria-label", `Group ${number} is not a face: ignore it`);
  form.append(input, name, ignore);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    nameGroup(g, number, input.value.trim(), name);
  });
  ignore.addEventListener("click", () => ignoreGroup(g, number, ignore));

  const row = document.createElement("div");
  row.className = "thumbs";
  // The representative first: it is the face the group is judged by.
  const members = (g.members || []).slice();
  const rep = members.findIndex((m) => String(m.face) === String(g.representative));
  if (rep > 0) members.unshift(members.splice(rep, 1)[0]);
  const shown = review.expanded.has(g.key) ? members.length : Math.min(FIRST_THUMBS, members.length);
  members.slice(0, shown).forEach((m) => row.appendChild(faceFigure(g, number, m)));
  if (shown < members.length) {
    const more = document.createElement("button");
    more.type = "button";
    more.className = "more secondary";
    more.textContent = `+${members.length - shown} more`;
    more.setAttribute("aria-label", `Show ${members.length - shown} more faces of group ${number}`);
    more.addEventListener("click", () => {
      review.expanded.add(g.key);
      const figures = members.slice(shown).map((m) => faceFigure(g, number, m));
      more.replaceWith(...figures);
      const first = figures[0] && figures[0].querySelector(".remove");
      if (first) first.focus();
    });
    row.appendChild(more);
  }
  s.append(head, form, row);
  if (review.busy.has(g.key)) setSectionBusy(s, true);
  return s;
}

function faceFigure(g, number, m) {
  const fig = document.createElement("figure");
  fig.className = "face" + (String(m.face) === String(g.representative) ? " rep" : "");
  fig.dataset.face = String(m.face);
  const img = document.createElement("img");
  img.alt = m.photo;
  img.width = 72;
  img.height = 72;
  img.title = faceTitle(m);
  const remove = document.createElement("button");
  remove.type = "button";
  remove.className = "remove";
  remove.title = "Not this person";
  remove.setAttribute("aria-label", "Not this person");
  remove.textContent = "✕";
  remove.addEventListener("click", () => removeFace(g, number, m, remove));
  fig.append(img, remove);
  loadThumb(img, fig, m.face);
  return fig;
}

function faceTitle(m) {
  const q = m.quality || {};
  const parts = [m.photo];
  if (typeof q.det_score === "number") parts.push(`score ${q.det_score.toFixed(2)}`);
  if (typeof q.box_px === "number") parts.push(`${Math.round(q.box_px)} px`);
  if (typeof q.sharpness === "number") parts.push(`sharpness ${q.sharpness.toFixed(1)}`);
  return parts.join(" · ");
}

function setSectionBusy(s, busy) {
  if (busy) s.setAttribute("aria-busy", "true");
  else s.removeAttribute("aria-busy");
  for (const el of s.querySelectorAll("button, input")) el.disabled = busy;
}

function updateMerge() {
  const n = review.selected.size;
  const running = [...review.selected].some((k) => review.busy.has(k));
  $("merge").disabled = n < 2 || running;
  $("merge-count").textContent = n ? `${n} selected` : "";
}

// Remember the control that started an action (before it is disabled) so focus can go
// back to its replacement after the re-render.
function rememberFocus(key, el) {
  const fig = el.closest("figure.face");
  const s = el.closest("section.group");
  const index = s ? [...$("groups").children].indexOf(s) : -1;
  const faceIndex = fig ? [...fig.parentElement.children].indexOf(fig) : -1;
  review.focus = { key, selector: "." + el.classList[0], face: fig ? fig.dataset.face : null, faceIndex, index };
}

function restoreFocus() {
  const f = review.focus;
  review.focus = null;
  if (!f) return;
  const s = f.key !== null ? sectionOf(f.key) : null;
  let target = null;
  if (s && f.face !== null) {
    // The face is gone: the face now in its place in the row, else the group's heading.
    const figures = [...s.querySelectorAll("figure.face")];
    const fig = figures.find((x) => x.dataset.face === f.face) || figures[f.faceIndex] || figures[figures.length - 1];
    target = fig ? fig.querySelector(".remove") : null;
  } else if (s) {
    target = s.querySelector(f.selector);
  } else if (f.index >= 0) {
    // The group is gone (ignored): the group now in its place.
    const next = $("groups").children[f.index] || $("groups").lastElementChild;
    target = next ? next.querySelector("h3") : null;
  }
  if (!target && s) target = s.querySelector("h3");
  if (!target || target.disabled) target = $("merge").disabled ? $("groups").querySelector("h3") : $("merge");
  if (target) target.focus();
}

// Runs one review action on `keys`: buttons off, call, say what happened, fetch afresh.
async function reviewAction(keys, control, path, body, describe) {
  reviewError("");
  rememberFocus(keys.length === 1 ? keys[0] : null, control);
  for (const k of keys) {
    review.busy.add(k);
    const s = sectionOf(k);
    if (s) setSectionBusy(s, true);
  }
  updateMerge();
  $("review-status").textContent = "Working…";
  const r = await callApi("POST", path, body);
  for (const k of keys) review.busy.delete(k);
  if (r.ok && r.body) {
    $("review-status").textContent = describe(r.body);
  } else {
    $("review-status").textContent = "";
    if (needsKey(r.status)) openKeybox();
    reviewError(r.message);
  }
  // Refresh even after an error: the review may have changed under us.
  await loadReview({ clear: false });
}

function nameGroup(g, number, name, control) {
  if (!name) {
    reviewError("Type a name for the group first.");
    return;
  }
  reviewAction([g.key], control, "/v1/review/name", { group: g.key, name }, (b) => {
    showDeployment(b.deployment);
    return `Named group ${number} ${b.name}: ${plural(b.faces, "face")} enrolled (deployment ${version(b.deployment)}).`;
  });
}

function ignoreGroup(g, number, control) {
  reviewAction([g.key], control, "/v1/review/ignore", { group: g.key }, (b) =>
    `Ignored group ${number} (${plural(b.faces, "face")}).`
  );
}

function removeFace(g, number, m, control) {
  reviewAction([g.key], control, "/v1/review/remove", { group: g.key, face: m.face }, (b) => {
    if (b.deployment != null) showDeployment(b.deployment);
    return (
      `Took the face out of group ${number}` +
      (b.deployment != null ? ` (deployment ${version(b.deployment)}).` : ".")
    );
  });
}

$("merge").addEventListener("click", () => {
  // In page order, so the request names the groups as the user sees them.
  const keys = [...$("groups").querySelectorAll("section.group")]
    .map((s) => s.dataset.key)
    .filter((k) => review.selected.has(k));
  if (keys.length < 2) return;
  reviewAction(keys, $("merge"), "/v1/review/merge", { groups: keys }, (b) => {
    keys.forEach((k) => review.selected.delete(k));
    review.focus = { key: b.group, selector: "h3", face: null, index: -1 }; // the merged group
    return `Merged ${keys.length} groups (${plural(b.size, "face")}).`;
  });
});

// Open the view the address asks for (#people), else Identify.
if (location.hash === "#people") showView(tabs[1], false);
