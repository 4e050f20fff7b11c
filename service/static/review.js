// Review page: send one listing photo to /v1/checks and draw the evidence it returns.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
// Both photos are drawn at this height in SVG units; the SVG then scales to the screen.
const ROW_HEIGHT = 400;
const GAP = 24;
// Beyond a few hundred lines the picture turns into a blur and the phone slows down.
const MAX_LINES = 300;

const input = document.getElementById("listing");
const drop = document.getElementById("drop");
const statusLine = document.getElementById("status");
const section = document.getElementById("result");
const verdict = document.getElementById("verdict");
const timing = document.getElementById("timing");
const svg = document.getElementById("evidence");
const list = document.getElementById("matches");
const showLines = document.getElementById("show-lines");
const keyInput = document.getElementById("check-key");
const layout = section.querySelector(".evidence-layout");

// What a reviewer is told when the service could not use the photo, by its error_type.
const UNUSABLE = {
  "empty file": "the file is empty.",
  "file too large": "the file is larger than this service accepts.",
  "unsupported format": "this file type is not one the service reads (JPEG, PNG, WebP, GIF, BMP or TIFF).",
  "corrupt image": "the file is damaged and cannot be read as a photo.",
  "truncated image": "the file is incomplete (cut off during download or upload).",
  "too many pixels": "the photo has more pixels than this service accepts.",
  "image too small": "the photo is too small to compare.",
  "blank image": "the photo is blank or a single colour: there is nothing to compare.",
};

function say(text, isError = false) {
  statusLine.textContent = text;
  statusLine.classList.toggle("error", isError);
}

function el(name, attrs = {}, text = null) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

async function check(file) {
  if (!file) return;
  say(`Checking ${file.name}…`);
  section.hidden = true;
  const body = new FormData();
  body.append("image", file, file.name);
  const headers = keyInput.value ? { "X-API-Key": keyInput.value } : {};
  let response;
  try {
    // The preview is the photo as the service decoded it: the browser may not read its format.
    response = await fetch("/v1/checks?correspondences=true&preview=true",
                           { method: "POST", body, headers });
  } catch (error) {
    say(`The service did not answer: ${error}`, true);
    return;
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    say(`Not checked (${response.status}): ${data.detail || response.statusText}`, true);
    return;
  }
  say("");
  await render(data.results[0]);
}

async function render(result) {
  section.hidden = false;
  verdict.className = "verdict";
  list.replaceChildren();
  svg.replaceChildren();
  const total = Object.values(result.timing_ms).reduce((a, b) => a + b, 0);
  timing.textContent = `Took ${total.toFixed(0)} ms (` +
    Object.entries(result.timing_ms).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(", ") + ")";
  if (result.status !== "ok") {
    // No photo to show: a short reason instead of an empty frame, the service's words below.
    layout.hidden = true;
    verdict.classList.add("error");
    verdict.textContent = `Could not check ${result.path}: ` +
      (UNUSABLE[result.error_type] || "the file cannot be read as a photo.");
    timing.textContent = `Details: ${result.error}`;
    verdict.focus();
    return;
  }
  layout.hidden = false;
  const top = result.matches[0];
  if (result.flagged) {
    verdict.classList.add("flagged");
    verdict.textContent = `Flagged: copies ${top.design}` +
      (top.brand ? ` (${top.brand})` : "") + ` — score ${top.score.toFixed(2)}`;
  } else if (top) {
    verdict.textContent = `Not flagged: weak resemblance to ${top.design} (score ${top.score.toFixed(2)})`;
  } else {
    verdict.textContent = "Not flagged: no protected design found";
  }
  result.matches.forEach((match, index) => list.append(matchItem(result, match, index)));
  await draw(result, 0);
  verdict.focus();
}

function matchItem(result, match, index) {
  const item = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.setAttribute("aria-pressed", String(index === 0));
  const title = document.createElement("strong");
  title.textContent = `${match.design}${match.brand ? " · " + match.brand : ""}`;
  const facts = document.createElement("dl");
  const rows = [
    ["score", match.score.toFixed(3)],
    ["inliers", match.inliers],
    ["hash distance", match.hash_distance ?? "—"],
    ["transform", match.transform],
    ["reference", `#${match.reference_id}`],
    ["evidence", match.evidence],
  ];
  for (const [key, value] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = key;
    const dd = document.createElement("dd");
    dd.textContent = value;
    facts.append(dt, dd);
  }
  button.append(title, facts);
  button.addEventListener("click", async () => {
    for (const other of list.querySelectorAll("button")) other.setAttribute("aria-pressed", "false");
    button.setAttribute("aria-pressed", "true");
    await draw(result, index);
  });
  item.append(button);
  return item;
}

async function referenceSize(match) {
  const response = await fetch(`/v1/references/${match.reference_id}`);
  if (!response.ok) return null;
  return response.json();
}

async function draw(result, selected) {
  const scale = ROW_HEIGHT / result.height;
  const listingWidth = result.width * scale;
  const match = result.matches[selected];
  const reference = match ? await referenceSize(match) : null;
  const refScale = reference ? ROW_HEIGHT / reference.height : 0;
  const refWidth = reference ? reference.width * refScale : 0;
  const width = listingWidth + (reference ? GAP + refWidth : 0);
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${width} ${ROW_HEIGHT}`);
  svg.append(el("image", { href: result.preview, x: 0, y: 0, width: listingWidth,
                           height: ROW_HEIGHT, preserveAspectRatio: "none" }));
  result.matches.forEach((m, index) => {
    const [x0, y0, x1, y1] = m.box || [0, 0, result.width, result.height];
    const box = el("rect", { class: "box" + (index === selected ? " selected" : ""),
                             x: x0 * scale, y: y0 * scale, width: (x1 - x0) * scale,
                             height: (y1 - y0) * scale, "data-design": m.design });
    if (!m.box) box.setAttribute("stroke-dasharray", "8 6");
    svg.append(box, el("text", { class: "box-label", x: x0 * scale + 4,
                                 y: Math.max(y0 * scale - 4, 14) }, m.design));
  });
  if (!reference) return;
  const left = listingWidth + GAP;
  svg.append(el("image", { href: reference.image_url, x: left, y: 0, width: refWidth,
                           height: ROW_HEIGHT, preserveAspectRatio: "none" }));
  const lines = el("g", { class: "pairs" });
  for (const [rx, ry, lx, ly] of (match.correspondences || []).slice(0, MAX_LINES)) {
    lines.append(el("line", { class: "pair", x1: lx * scale, y1: ly * scale,
                              x2: left + rx * refScale, y2: ry * refScale }));
  }
  svg.append(lines);
}

showLines.addEventListener("change", () => {
  svg.parentElement.classList.toggle("hide-lines", !showLines.checked);
});
input.addEventListener("change", () => check(input.files[0]));
for (const name of ["dragenter", "dragover"]) {
  drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("over"); });
}
for (const name of ["dragleave", "drop"]) {
  drop.addEventListener(name, () => drop.classList.remove("over"));
}
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  check(event.dataTransfer.files[0]);
});
