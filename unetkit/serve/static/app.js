// The unetkit page: upload an image to /predict, show the mask over it, the object count,
// and a download link for the mask; for a restoration model, upload it to /restore and show the
// restored image with a download link. Plain JS, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
let task = "segmentation";  // from /model

function setStatus(text, state) {
  $("status").textContent = text;
  $("status").dataset.state = state;
}

function errorText(body, response) {
  const detail = body && body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
  return `${response.status} ${response.statusText}`;
}

async function loadModel() {
  try {
    const info = await (await fetch("/model")).json();
    task = info.task || "segmentation";
    if (task === "restoration") {
      const sr = info.scale > 1 ? ` (x${info.scale} super-resolution)` : "";
      $("model-info").textContent =
        `${info.model.architecture}, ${info.in_channels} input channel(s), task: restoration${sr}`;
      $("download").textContent = "Download restored image";
      return;
    }
    const names = info.classes.names.join(", ");
    $("model-info").textContent =
      `${info.model.architecture}, ${info.in_channels} input channel(s), classes: ${names}`;
  } catch (err) {
    $("model-info").textContent = `Cannot read the model: ${err}`;
  }
}

async function predict(file) {
  setStatus(`Segmenting ${file.name}…`, "busy");
  $("download").hidden = true;
  const form = new FormData();
  form.append("file", file, file.name);
  const params = new URLSearchParams({
    instances: "true",
    include_masks: "true",
    threshold: $("threshold").value,
    tta: $("tta").checked ? "true" : "false",
  });
  let response, body;
  try {
    response = await fetch(`/predict?${params}`, { method: "POST", body: form });
    body = await response.json();
  } catch (err) {
    setStatus(`The server did not answer: ${err}`, "error");
    return;
  }
  if (!response.ok) {
    const wait = response.headers.get("Retry-After");
    setStatus(errorText(body, response) + (wait ? ` (retry in ${wait} s)` : ""), "error");
    return;
  }
  const image = $("image");
  const overlay = $("overlay");
  image.onerror = () => {
    // e.g. a TIFF, which browsers do not display: show the mask on its own.
    overlay.style.position = "static";
    image.hidden = true;
  };
  image.hidden = false;
  overlay.style.position = "";
  image.src = URL.createObjectURL(file);
  // Small images are shown at least 480 px wide (pixels kept sharp); large ones fit the page.
  image.width = Math.max(body.width, 480);
  overlay.onload = () => setStatus(`Done: ${body.count} object(s) in ${file.name}.`, "done");
  overlay.src = `data:image/png;base64,${body.overlay_png}`;
  $("count").textContent = String(body.count);
  const download = $("download");
  download.href = `data:${body.mask.media_type};base64,${body.mask.base64}`;
  download.download = body.mask.media_type === "image/png" ? "mask.png" : "mask.tif";
  download.hidden = false;
}

async function restore(file) {
  setStatus(`Restoring ${file.name}…`, "busy");
  $("download").hidden = true;
  const form = new FormData();
  form.append("file", file, file.name);
  const params = new URLSearchParams({ tta: $("tta").checked ? "true" : "false" });
  let response, blob;
  try {
    response = await fetch(`/restore?${params}`, { method: "POST", body: form });
    if (!response.ok) {
      const body = await response.json().catch(() => null);
      const wait = response.headers.get("Retry-After");
      setStatus(errorText(body, response) + (wait ? ` (retry in ${wait} s)` : ""), "error");
      return;
    }
    blob = await response.blob();
  } catch (err) {
    setStatus(`The server did not answer: ${err}`, "error");
    return;
  }
  const url = URL.createObjectURL(blob);
  const png = blob.type === "image/png";
  const note = response.headers.get("X-Unetkit-Note");
  const image = $("image");
  $("overlay").removeAttribute("src");
  image.hidden = !png;  // browsers do not display TIFF
  image.onerror = null;
  image.onload = () => {
    image.width = Math.max(image.naturalWidth, 480);
    setStatus(`Done: restored ${file.name}` + (note ? ` (${note}).` : "."), "done");
  };
  if (png) image.src = url;
  else setStatus(`Done: restored ${file.name} (a TIFF: download it).`, "done");
  $("count").textContent = "–";
  const download = $("download");
  download.href = url;
  download.download = png ? "restored.png" : "restored.tif";
  download.hidden = false;
}

function pick(files) {
  if (files && files.length) (task === "restoration" ? restore : predict)(files[0]);
}

$("file").addEventListener("change", (event) => pick(event.target.files));
$("opacity").addEventListener("input", (event) => {
  $("overlay").style.opacity = String(event.target.value / 100);
});
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  pick(event.dataTransfer.files);
});
loadModel();
