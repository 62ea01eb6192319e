// Demo page: pick a photo (or a sample) and compare, side by side at one display size, the original, the
// student's edit (POST /transform) and the legacy projection's (a job: POST /legacy/jobs, polled for steps
// done and time left, cancellable with DELETE). Each result shows its time; the speedup appears once both
// are there. Models that expect FFHQ-aligned faces: the detected faces (X-Face-Boxes) are drawn on the
// original, and the size defaults to "original" (the whole photo, the edited faces pasted back).
"use strict";

const $ = (id) => document.getElementById(id);
const DEMO_STEPS = 100; // the demo's default legacy budget; "reference" sets the service's own default
let photo = null; // the Blob being edited
let models = [];
let legacyInfo = { steps: 1000, max_steps: 1000 };
let studentMs = null; // round trip of the last student result shown
let legacyMs = null; // projection job time of the last legacy result shown
let legacyJob = null; // the running job's id
let pollTimer = null;
let studentSeq = 0; // the latest /transform request: older answers (a slider moved on) are dropped
let strengthTimer = null;
const STRENGTH_DEBOUNCE_MS = 250;

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function parseServerTiming(header) {
  // "decode;dur=1.2, queue;dur=0.3" -> [["decode", 1.2], ["queue", 0.3]]
  return (header || "").split(",").map((part) => {
    const [name, ...params] = part.trim().split(";");
    const dur = params.map((p) => p.trim()).find((p) => p.startsWith("dur="));
    return [name, dur ? parseFloat(dur.slice(4)) : NaN];
  }).filter(([name]) => name);
}

function showTimings(rows) {
  const body = $("timings").querySelector("tbody");
  body.replaceChildren(...rows.map(([name, ms]) => {
    const tr = document.createElement("tr");
    const cells = [name, Number.isFinite(ms) ? ms.toFixed(1) : "-"].map((text) => {
      const td = document.createElement("td");
      td.textContent = text;
      return td;
    });
    tr.append(...cells);
    return tr;
  }));
}

function formatMs(ms) {
  return ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${ms.toFixed(0)} ms`;
}

function currentModel() {
  return models.find((m) => m.name === $("model").value);
}

function updateButtons() {
  const model = currentModel();
  const busy = legacyJob !== null;
  $("transform").disabled = !photo || !model;
  $("legacy").disabled = $("both").disabled = !photo || !model || !model.legacy || busy;
}

function parseBoxes(header) {
  // "179,83,267,171;446,65,550,170" -> [[179, 83, 267, 171], [446, 65, 550, 170]]
  return (header || "").split(";").filter((b) => b).map((b) => b.split(",").map(Number));
}

let faceBoxes = [];

function drawBoxes() {
  // face boxes are in the upload's upright pixels; the frame shows the upload upright, fitted (object-fit: contain)
  const img = $("original");
  const w = img.naturalWidth, h = img.naturalHeight;
  const scale = w ? Math.min(img.clientWidth / w, img.clientHeight / h) : 0;
  const dx = (img.clientWidth - w * scale) / 2, dy = (img.clientHeight - h * scale) / 2;
  $("boxes").replaceChildren(...faceBoxes.map(([left, top, right, bottom]) => {
    const box = document.createElement("div");
    box.className = "face-box";
    Object.assign(box.style, {
      left: `${dx + left * scale}px`, top: `${dy + top * scale}px`,
      width: `${(right - left) * scale}px`, height: `${(bottom - top) * scale}px`,
    });
    return box;
  }));
  $("original-caption").textContent = faceBoxes.length
    ? `Original: ${faceBoxes.length} face${faceBoxes.length > 1 ? "s" : ""} detected and edited` : "Original";
}

function showSpeedup() {
  // the student's caption says how much faster it was than the legacy result beside it
  const student = $("student-caption"), legacy = $("legacy-caption");
  const speed = studentMs && legacyMs ? ` · ${(legacyMs / studentMs).toFixed(0)}x faster than legacy` : "";
  if (student.dataset.base) student.textContent = student.dataset.base + speed;
  if (legacy.dataset.base) legacy.textContent = legacy.dataset.base + (speed ? ` · ${(legacyMs / studentMs).toFixed(0)}x slower than the student` : "");
}

function clearStudent() {
  $("student").removeAttribute("src");
  $("student-caption").textContent = "Student";
  delete $("student-caption").dataset.base;
  studentMs = null;
  showDomain(null);
  showTimings([]);
  showSpeedup();
}

function clearLegacy() {
  $("legacy-result").removeAttribute("src");
  $("legacy-caption").textContent = "Legacy (projection)";
  delete $("legacy-caption").dataset.base;
  legacyMs = null;
  showSpeedup();
}

function showModelOptions() {
  const model = currentModel();
  const faces = Boolean(model && model.alignment === "ffhq");
  $("align").disabled = $("faces").disabled = !faces;
  if (faces) $("size").value = "original";
  const note = $("domain-note");
  note.textContent = model && model.description ? `About this model: ${model.description}` : "";
  if (model && model.domain) note.textContent += ` Trained on inputs with ${model.domain}: every upload is checked against it.`;
  note.hidden = !note.textContent;
  showStrength(model);
  showEdits(model);
}

function showDomain(verdict) {
  // X-Distill-Domain: a notice when the framed upload lies outside the model's training domain
  const notice = $("domain-verdict");
  const outside = verdict && verdict.startsWith("outside");
  notice.textContent = outside
    ? `Outside this model's training domain (${verdict.slice("outside; ".length)}): the edit may be unreliable.`
    : "";
  notice.hidden = !outside;
}

function showStrength(model) {
  // the strength dial: only for strength-conditioned models (their /models entry has a strength range)
  const spec = model && model.strength;
  $("strength-control").hidden = !spec;
  if (!spec) return;
  const slider = $("strength");
  [slider.min, slider.max] = spec.range;
  slider.value = spec.default;
  const attribute = model.edit && model.edit.attribute;
  const [low, high] = attribute === "age" ? ["younger", "older"]
    : attribute ? [`less ${attribute}`, `more ${attribute}`] : ["opposite", "stronger"];
  $("strength-low").textContent = low;
  $("strength-high").textContent = high;
  $("strength-value").textContent = Number(slider.value).toFixed(2);
}

function showEdits(model) {
  // a student of several edits: one slider per edit of its /models edits (range, default); one edit keeps the dial
  const edits = model && model.edits && model.edits.length > 1 ? model.edits : [];
  const box = $("edit-sliders");
  box.hidden = edits.length === 0;
  box.replaceChildren(...edits.map((edit) => {
    const label = document.createElement("label");
    const slider = document.createElement("input");
    const value = document.createElement("output");
    Object.assign(slider, { type: "range", step: "0.05", min: edit.range[0], max: edit.range[1] });
    slider.value = edit.default;
    slider.dataset.edit = edit.attribute;
    value.textContent = Number(slider.value).toFixed(2);
    slider.addEventListener("input", () => {
      value.textContent = Number(slider.value).toFixed(2);
      strengthMoved();
    });
    label.append(`${edit.attribute} `, slider, value);
    return label;
  }));
}

function editsField() {
  // the sliders as /transform's edits field: {"age": 1, "smile": -0.5}
  const edits = {};
  for (const slider of $("edit-sliders").querySelectorAll("input[data-edit]")) {
    edits[slider.dataset.edit] = Number(slider.value);
  }
  return JSON.stringify(edits);
}

function strengthMoved() {
  // show the value at once; re-run the student once the slider rests (debounced)
  $("strength-value").textContent = Number($("strength").value).toFixed(2);
  clearTimeout(strengthTimer);
  strengthTimer = setTimeout(() => { if (photo && currentModel()) runStudent(true); }, STRENGTH_DEBOUNCE_MS);
}

function usePhoto(blob) {
  photo = blob;
  faceBoxes = [];
  drawBoxes();
  $("original").src = URL.createObjectURL(blob);
  clearStudent();
  clearLegacy();
  updateButtons();
  setStatus("Ready: press Transform, Legacy transform or Both.");
}

function showSamples() {
  const model = currentModel();
  const list = $("sample-list");
  list.replaceChildren();
  $("samples").hidden = !model || model.samples.length === 0;
  for (const url of model ? model.samples : []) {
    const img = document.createElement("img");
    img.src = url;
    img.alt = img.title = url.split("/").pop();
    img.addEventListener("click", async () => usePhoto(await (await fetch(url)).blob()));
    list.appendChild(img);
  }
}

async function loadModels() {
  const response = await fetch("/models");
  const info = await response.json();
  models = info.models;
  $("model").replaceChildren(...models.map((m) => {
    const option = document.createElement("option");
    option.value = m.name;
    const faces = m.alignment === "ffhq" ? ", FFHQ faces" : "";
    option.textContent = `${m.name} (${m.input_size.join("x")}, ${m.provider}/${m.variant}${faces})`;
    option.selected = m.name === info.default;
    return option;
  }));
  legacyInfo = info.legacy;
  $("steps").max = legacyInfo.max_steps;
  $("steps").value = Math.min(DEMO_STEPS, legacyInfo.steps);
  $("steps-reference").textContent = `reference (${legacyInfo.steps})`;
  $("steps-reference").title = `the service's default: ${legacyInfo.steps} steps (the benchmarks' setting)`;
  showSamples();
  showModelOptions();
  updateButtons();
  setStatus(info.ready ? "Choose a photo or a sample." : "Models are still loading…");
  if (!info.ready) setTimeout(loadModels, 1000);
}

function form(withSteps) {
  const data = new FormData();
  data.append("image", photo, "upload");
  data.append("model", $("model").value);
  data.append("format", $("format").value);
  data.append("size", $("size").value);
  if (!$("align").disabled) {
    data.append("align", $("align").value);
    data.append("faces", $("faces").value);
  }
  if (withSteps) data.append("steps", $("steps").value);
  if (!$("strength-control").hidden) data.append("strength", $("strength").value); // the legacy path too
  if (!$("edit-sliders").hidden) data.append("edits", editsField());
  return data;
}

async function errorText(response) {
  const error = await response.json().catch(() => ({ detail: response.statusText }));
  return `${response.status} ${error.error || ""}: ${error.detail}`;
}

async function runStudent(keepShown = false) {
  if (!keepShown) clearStudent(); // the slider keeps the last picture until the new one arrives
  const seq = ++studentSeq;
  setStatus("Running /transform…");
  const started = performance.now();
  try {
    const response = await fetch("/transform", { method: "POST", body: form(false) });
    const roundTrip = performance.now() - started;
    if (seq !== studentSeq) return false; // a newer request (the slider moved) supersedes this answer
    showDomain(response.headers.get("X-Distill-Domain"));
    if (!response.ok) {
      setStatus(`Error (student): ${await errorText(response)}`, true);
      return false;
    }
    $("student").src = URL.createObjectURL(await response.blob());
    faceBoxes = parseBoxes(response.headers.get("X-Face-Boxes"));
    drawBoxes();
    studentMs = roundTrip;
    const caption = $("student-caption");
    const strength = response.headers.get("X-Strength");
    const edits = response.headers.get("X-Edits");
    const dial = strength !== null ? `, strength ${strength}` : edits !== null ? `, ${edits}` : "";
    caption.dataset.base = `Student (${response.headers.get("X-Model")}, ${response.headers.get("X-Provider")}${dial}): ${formatMs(roundTrip)}`;
    showSpeedup();
    showTimings([...parseServerTiming(response.headers.get("Server-Timing")), ["round trip (browser)", roundTrip]]);
    setStatus(`Done: student in ${formatMs(roundTrip)}.`);
    return true;
  } catch (err) {
    setStatus(`Error (student): request failed: ${err}`, true);
    return false;
  } finally {
    updateButtons();
  }
}

function showProgress(job) {
  $("legacy-progress").max = job.steps_total;
  $("legacy-progress").value = job.steps_done;
  const eta = job.eta_s === null ? "estimating time left…" : `about ${job.eta_s.toFixed(job.eta_s < 10 ? 1 : 0)} s left`;
  $("legacy-progress-text").textContent = job.status === "queued"
    ? "queued behind other projections…" : `step ${job.steps_done} of ${job.steps_total}, ${eta}`;
}

function endLegacy() {
  clearTimeout(pollTimer);
  pollTimer = null;
  legacyJob = null;
  $("legacy-running").hidden = true;
  updateButtons();
}

async function runLegacy() {
  clearLegacy();
  setStatus("Starting the legacy projection…");
  let response;
  try {
    response = await fetch("/legacy/jobs", { method: "POST", body: form(true) });
  } catch (err) {
    setStatus(`Error (legacy): request failed: ${err}`, true);
    return;
  }
  if (response.status !== 202) {
    setStatus(`Error (legacy): ${await errorText(response)}`, true);
    return;
  }
  const job = await response.json();
  legacyJob = job.id;
  $("legacy-running").hidden = false;
  $("legacy-running").dataset.job = job.id;
  showProgress(job);
  updateButtons();
  setStatus(`Legacy projection running (${job.steps_total} steps)…`);
  await poll(job.id);
}

async function poll(id) {
  if (legacyJob !== id) return;
  let job;
  try {
    const response = await fetch(`/legacy/jobs/${id}`);
    if (!response.ok) throw new Error(await errorText(response));
    job = await response.json();
  } catch (err) {
    endLegacy();
    setStatus(`Error (legacy): job lost: ${err.message || err}`, true);
    return;
  }
  if (legacyJob !== id) return;
  showProgress(job);
  if (job.status === "queued" || job.status === "running") {
    pollTimer = setTimeout(() => poll(id), 250);
    return;
  }
  endLegacy();
  if (job.status === "cancelled") {
    setStatus(`Legacy projection cancelled after ${job.steps_done} of ${job.steps_total} steps.`);
    return;
  }
  if (job.status === "failed") {
    setStatus(`Error (legacy): ${job.error.status} ${job.error.error}: ${job.error.detail}`, true);
    return;
  }
  const result = await fetch(job.result);
  if (!result.ok) {
    setStatus(`Error (legacy): ${await errorText(result)}`, true);
    return;
  }
  $("legacy-result").src = URL.createObjectURL(await result.blob());
  legacyMs = job.projection_s * 1000;
  $("legacy-caption").dataset.base = `Legacy (${job.model}, ${job.steps} steps): ${formatMs(legacyMs)}`;
  showSpeedup();
  showTimings(parseServerTiming(result.headers.get("Server-Timing")));
  setStatus(`Done: legacy in ${formatMs(legacyMs)} (${job.steps_total} steps).`);
}

async function cancelLegacy() {
  const id = legacyJob;
  if (!id) return;
  endLegacy();
  const response = await fetch(`/legacy/jobs/${id}`, { method: "DELETE" });
  const job = response.ok ? await response.json() : null;
  setStatus(job ? `Legacy projection cancelled after ${job.steps_done} of ${job.steps_total} steps.`
    : `Error (cancel): ${await errorText(response)}`, !job);
}

$("file").addEventListener("change", (event) => {
  if (event.target.files.length) usePhoto(event.target.files[0]);
});
$("model").addEventListener("change", () => { showSamples(); showModelOptions(); updateButtons(); });
$("faces").addEventListener("change", () => { if ($("faces").value === "all") $("size").value = "original"; });
$("original").addEventListener("load", drawBoxes);
window.addEventListener("resize", drawBoxes);
$("strength").addEventListener("input", strengthMoved);
$("steps-reference").addEventListener("click", () => { $("steps").value = legacyInfo.steps; });
$("transform").addEventListener("click", runStudent);
$("legacy").addEventListener("click", runLegacy);
$("both").addEventListener("click", async () => { if (await runStudent()) await runLegacy(); });
$("cancel").addEventListener("click", cancelLegacy);
loadModels().catch((err) => setStatus(`Cannot list models: ${err}`, true));
