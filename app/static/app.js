// Demo page: pick a photo (or a sample), send it to /transform or /legacy/transform, show both
// pictures side by side with the server's stage timings (Server-Timing header) and the round trip.
// Models that expect FFHQ-aligned faces: the detected faces (X-Face-Boxes) are drawn on the original,
// and the size defaults to "original" (the whole photo, the edited faces pasted back).
"use strict";

const $ = (id) => document.getElementById(id);
let photo = null; // the Blob being edited
let models = [];

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
    tr.innerHTML = `<td>${name}</td><td>${Number.isFinite(ms) ? ms.toFixed(1) : "-"}</td>`;
    return tr;
  }));
}

function currentModel() {
  return models.find((m) => m.name === $("model").value);
}

function updateButtons() {
  const model = currentModel();
  $("transform").disabled = !photo || !model;
  $("legacy").disabled = !photo || !model || !model.legacy;
}

function parseBoxes(header) {
  // "179,83,267,171;446,65,550,170" -> [[179, 83, 267, 171], [446, 65, 550, 170]]
  return (header || "").split(";").filter((b) => b).map((b) => b.split(",").map(Number));
}

let faceBoxes = [];

function drawBoxes() {
  // face boxes are in the upload's upright pixels; the browser shows the upload upright and scaled
  const img = $("original");
  const scale = img.naturalWidth ? img.clientWidth / img.naturalWidth : 0;
  $("boxes").replaceChildren(...faceBoxes.map(([left, top, right, bottom]) => {
    const box = document.createElement("div");
    box.className = "face-box";
    Object.assign(box.style, {
      left: `${left * scale}px`, top: `${top * scale}px`,
      width: `${(right - left) * scale}px`, height: `${(bottom - top) * scale}px`,
    });
    return box;
  }));
  $("original-caption").textContent = faceBoxes.length
    ? `Original: ${faceBoxes.length} face${faceBoxes.length > 1 ? "s" : ""} detected and edited` : "Original";
}

function showModelOptions() {
  const model = currentModel();
  const faces = Boolean(model && model.alignment === "ffhq");
  $("align").disabled = $("faces").disabled = !faces;
  if (faces) $("size").value = "original";
}

function usePhoto(blob) {
  photo = blob;
  faceBoxes = [];
  drawBoxes();
  $("original").src = URL.createObjectURL(blob);
  $("edited").removeAttribute("src");
  updateButtons();
  setStatus("Ready: press Transform.");
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
  $("steps").value = info.legacy.steps;
  $("steps").max = info.legacy.max_steps;
  showSamples();
  showModelOptions();
  updateButtons();
  setStatus(info.ready ? "Choose a photo or a sample." : "Models are still loading…");
  if (!info.ready) setTimeout(loadModels, 1000);
}

async function send(endpoint) {
  const form = new FormData();
  form.append("image", photo, "upload");
  form.append("model", $("model").value);
  form.append("format", $("format").value);
  form.append("size", $("size").value);
  if (!$("align").disabled) {
    form.append("align", $("align").value);
    form.append("faces", $("faces").value);
  }
  if (endpoint === "/legacy/transform") form.append("steps", $("steps").value);
  setStatus(`Running ${endpoint}…`);
  $("transform").disabled = $("legacy").disabled = true;
  const started = performance.now();
  try {
    const response = await fetch(endpoint, { method: "POST", body: form });
    const roundTrip = performance.now() - started;
    if (!response.ok) {
      const error = await response.json().catch(() => ({ detail: response.statusText }));
      setStatus(`${response.status} ${error.error || ""}: ${error.detail}`, true);
      return;
    }
    $("edited").src = URL.createObjectURL(await response.blob());
    faceBoxes = parseBoxes(response.headers.get("X-Face-Boxes"));
    drawBoxes();
    const provider = response.headers.get("X-Provider");
    $("edited-caption").textContent = `Edited by ${response.headers.get("X-Model")} (${endpoint}, ${provider})`;
    showTimings([...parseServerTiming(response.headers.get("Server-Timing")), ["round trip (browser)", roundTrip]]);
    setStatus(`Done in ${roundTrip.toFixed(0)} ms.`);
  } catch (err) {
    setStatus(`Request failed: ${err}`, true);
  } finally {
    updateButtons();
  }
}

$("file").addEventListener("change", (event) => {
  if (event.target.files.length) usePhoto(event.target.files[0]);
});
$("model").addEventListener("change", () => { showSamples(); showModelOptions(); updateButtons(); });
$("faces").addEventListener("change", () => { if ($("faces").value === "all") $("size").value = "original"; });
$("original").addEventListener("load", drawBoxes);
window.addEventListener("resize", drawBoxes);
$("transform").addEventListener("click", () => send("/transform"));
$("legacy").addEventListener("click", () => send("/legacy/transform"));
loadModels().catch((err) => setStatus(`Cannot list models: ${err}`, true));
