// facepipe web page: send a photo to /v1/identify, draw a box and a name on every face.
"use strict";

const $ = (id) => document.getElementById(id);
const fileInput = $("file");
const drop = $("drop");
const photo = $("photo");
const boxes = $("boxes");
let lastAnswer = null;
let objectUrl = null;

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

async function identify(file) {
  clearError();
  $("result").hidden = true;
  $("status").textContent = "Looking for faces…";
  const form = new FormData();
  form.append("image", file, file.name || "photo");
  const headers = {};
  const key = $("apikey").value.trim();
  if (key) headers["Authorization"] = "Bearer " + key;
  let response;
  try {
    response = await fetch("/v1/identify?top_k=3", { method: "POST", body: form, headers });
  } catch (e) {
    showError("Could not reach the service: " + e.message);
    return;
  }
  let body = null;
  try {
    body = await response.json();
  } catch (e) {
    body = null;
  }
  if (!response.ok) {
    const msg = body && body.error ? body.error.message : "HTTP " + response.status;
    if (response.status === 401 || response.status === 403) $("keybox").open = true;
    showError("The service could not use this file: " + msg);
    return;
  }
  lastAnswer = body;
  if (objectUrl) URL.revokeObjectURL(objectUrl);
  objectUrl = URL.createObjectURL(file);
  photo.onload = () => {
    $("result").hidden = false;
    draw();
  };
  photo.onerror = () => {
    // The browser cannot show every format the service reads (TIFF): list the faces anyway.
    $("result").hidden = false;
    draw();
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
  $("status").textContent = summary;
  $("deployment").textContent = `(deployment v${String(body.deployment).padStart(4, "0")})`;
}

function percent(x) {
  return x == null ? "" : Math.round(x * 100) + "%";
}

function draw() {
  if (!lastAnswer) return;
  boxes.replaceChildren();
  const list = $("faces");
  list.replaceChildren();
  // Boxes are in image pixels; scale them to the size the photo is displayed at.
  const sx = photo.clientWidth / lastAnswer.width || 1;
  const sy = photo.clientHeight / lastAnswer.height || 1;
  lastAnswer.faces.forEach((f, i) => {
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
    const li = document.createElement("li");
    const best = f.top && f.top.length ? f.top[0] : null;
    li.textContent = f.person
      ? `${name} — similarity ${percent(f.similarity)} (distance ${f.distance.toFixed(3)})`
      : `unknown` + (best ? ` — closest: ${best.person}, similarity ${percent(best.similarity)}` : "");
    list.appendChild(li);
  });
  separateLabels();
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
window.addEventListener("resize", draw);
