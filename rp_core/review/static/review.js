// rp review: plain DOM code, no framework. Every change is sent at once and saved in the faces JSON.
"use strict";

const token = new URLSearchParams(location.search).get("token") || "";
const $ = (id) => document.getElementById(id);
let current = null; // the last /api/state answer
let polling = null;

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function picture(index, which, version) {
  return `/pictures/${index}/${which}?token=${encodeURIComponent(token)}&v=${version || 0}`;
}

async function api(path, options = {}) {
  const headers = { "X-RP-Token": token, ...(options.headers || {}) };
  const answer = await fetch(path, { ...options, headers });
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok) throw new Error(body.error || `${answer.status} ${answer.statusText}`);
  return body;
}

function say(text) { $("status").textContent = text; }

async function refresh() {
  current = await api("/api/state");
  return current;
}

// -- review ------------------------------------------------------------------------------------

function faceBox(image, k, face) {
  const [width, height] = image.size;
  const [x0, y0, x1, y1] = face.box;
  const box = el("button", {
    type: "button",
    className: `face ${face.keep ? "keep" : "change"}`,
    title: `face ${k + 1}: click to ${face.keep ? "anonymize" : "keep"} it`,
    dataset: { face: `${image.index}-${k}` },
  }, [el("span", { textContent: String(k + 1) })]);
  box.style.left = `${(100 * Math.max(x0, 0)) / width}%`;
  box.style.top = `${(100 * Math.max(y0, 0)) / height}%`;
  box.style.width = `${(100 * (Math.min(x1, width) - Math.max(x0, 0))) / width}%`;
  box.style.height = `${(100 * (Math.min(y1, height) - Math.max(y0, 0))) / height}%`;
  box.addEventListener("click", () => decide(image.index, k, { keep: !face.keep }));
  return box;
}

function faceRow(image, k, face) {
  const keep = el("input", { type: "checkbox", checked: face.keep, dataset: { keep: `${image.index}-${k}` } });
  keep.addEventListener("change", () => decide(image.index, k, { keep: keep.checked }));
  const prompt = el("input", {
    type: "text",
    value: face.prompt || "",
    placeholder: "prompt for the new face (optional)",
    maxLength: 500,
    dataset: { prompt: `${image.index}-${k}` },
  });
  prompt.addEventListener("change", () => decide(image.index, k, { prompt: prompt.value }));
  const children = [
    el("strong", { textContent: `${k + 1}` }),
    el("label", {}, [keep, " keep"]),
    prompt,
  ];
  if (current.keep_everywhere) {
    const everywhere = el("button", {
      type: "button",
      textContent: "keep everywhere",
      title: "keep this person in every photo (matched by identity)",
      dataset: { everywhere: `${image.index}-${k}` },
    });
    everywhere.addEventListener("click", () => keepEverywhere(image.index, k));
    children.push(everywhere);
  }
  return el("li", {}, children);
}

function photoCard(image) {
  const title = el("h2", { textContent: image.name });
  if (image.error) {
    return el("section", { className: "photo unreadable", dataset: { image: image.index } }, [
      title,
      el("p", { textContent: `Cannot read this file: ${image.error}` }),
      el("span", { className: "muted", textContent: "It is left out of the render and reported as failed." }),
    ]);
  }
  const img = el("img", { src: picture(image.index, "original"), alt: `${image.name} with its faces boxed` });
  const frame = el("div", { className: "frame" }, [img, ...image.faces.map((f, k) => faceBox(image, k, f))]);
  const count = image.faces.length;
  const kept = image.faces.filter((f) => f.keep).length;
  const summary = el("p", { className: "muted", textContent: `${count} face${count === 1 ? "" : "s"}, ${kept} kept` });
  const rows = el("ul", { className: "faces" }, image.faces.map((f, k) => faceRow(image, k, f)));
  return el("section", { className: "photo", dataset: { image: image.index } }, [title, frame, summary, rows]);
}

function drawReview() {
  $("review").replaceChildren(...current.images.map(photoCard));
}

async function decide(index, k, change) {
  try {
    const face = await api(`/api/images/${index}/faces/${k}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(change),
    });
    const image = current.images[index];
    image.faces[k] = { ...image.faces[k], keep: face.keep, prompt: face.prompt };
    const focused = document.activeElement && document.activeElement.dataset.prompt;
    drawReview();
    if (focused) { const next = document.querySelector(`[data-prompt="${focused}"]`); if (next) next.focus(); }
    $("saved").textContent = `saved in ${current.faces_json}`;
  } catch (error) { say(`Not saved: ${error.message}`); }
}

async function keepEverywhere(index, k) {
  say("Looking for this person in every photo…");
  try {
    const answer = await api(`/api/images/${index}/faces/${k}/everywhere`, { method: "POST" });
    await refresh();
    drawReview();
    say(`Kept ${answer.kept.length} face(s) of this person.`);
  } catch (error) { say(`Could not match this person: ${error.message}`); }
}

async function upload(file) {
  if (file.size > current.max_upload) { say(`That photo is larger than ${current.max_upload} bytes.`); return; }
  say("Looking for the person of the reference photo…");
  try {
    const answer = await api("/api/reference", { method: "POST", body: file, headers: { "Content-Type": "application/octet-stream" } });
    await refresh();
    drawReview();
    say(`Kept ${answer.kept.length} face(s) of the person in ${file.name}.`);
  } catch (error) { say(`Reference photo refused: ${error.message}`); }
}

// -- rendering ---------------------------------------------------------------------------------

function showProgress(render) {
  document.body.dataset.render = render.state;
  const bar = $("progress");
  bar.hidden = render.state !== "running";
  bar.max = Math.max(render.total, 1);
  bar.value = render.finished;
  $("render").disabled = render.state === "running";
  if (render.state === "running") {
    say(render.total ? `Rendering: ${render.finished} of ${render.total} photos, ${render.faces} faces, ${render.seconds} s`
      : `Loading the models… ${render.seconds} s`);
  } else if (render.state === "done" || render.state === "failed") {
    say(render.summary + (render.state === "done" ? ` (${render.seconds} s)` : ""));
  } else {
    say(`${current.images.length} photo(s). Decide, then render.`);
  }
  $("messages").replaceChildren(...render.messages.map((m) => el("li", { textContent: m })));
}

async function poll() {
  const state = await refresh();
  showProgress(state.render);
  if (state.render.state === "running") return;
  clearInterval(polling);
  polling = null;
  if (state.render.state === "done") { drawResults(); showTab("results"); }
}

async function render() {
  try {
    const started = await api("/api/render", { method: "POST" });
    showProgress(started);
    if (!polling) polling = setInterval(() => poll().catch((e) => say(e.message)), 500);
  } catch (error) { say(`Render not started: ${error.message}`); }
}

function drawResults() {
  const render = current.render;
  const originals = $("show-originals").checked;
  const cards = current.images.map((image) => {
    const result = render.results[image.name] || {};
    const caption = result.status ? `${result.status}${result.error ? `: ${result.error}` : ""}` : "not rendered";
    const figures = [];
    if (result.status === "anonymized" || result.status === "no_face") {
      figures.push(el("figure", {}, [
        el("img", { src: picture(image.index, "result", render.renders), alt: `${image.name}, anonymized`, dataset: { result: image.index } }),
        el("figcaption", { textContent: `anonymized (${(result.actions || []).join(", ") || "no face"})` }),
      ]));
    }
    if (originals && !image.error) {
      figures.push(el("figure", {}, [
        el("img", { src: picture(image.index, "original"), alt: `${image.name}, original` }),
        el("figcaption", { textContent: "original" }),
      ]));
    }
    return el("section", { className: "photo", dataset: { image: image.index } }, [
      el("h2", { textContent: `${image.name}: ${caption}` }),
      el("div", { className: "pair" }, figures),
    ]);
  });
  const manifest = render.manifest ? [el("p", { className: "muted", textContent: `manifest: ${render.manifest}` })] : [];
  $("results").replaceChildren(...manifest, ...cards);
}

function showTab(name) {
  $("review").hidden = name !== "review";
  $("results").hidden = name !== "results";
  $("originals-label").hidden = name !== "results";
  $("tab-review").classList.toggle("active", name === "review");
  $("tab-results").classList.toggle("active", name === "results");
  $("tab-results").disabled = current.render.state !== "done";
}

async function start() {
  await refresh();
  drawReview();
  showProgress(current.render);
  $("upload-label").hidden = !current.allow_upload;
  $("render").addEventListener("click", render);
  $("upload").addEventListener("change", (event) => { if (event.target.files[0]) upload(event.target.files[0]); });
  $("tab-review").addEventListener("click", () => showTab("review"));
  $("tab-results").addEventListener("click", () => showTab("results"));
  $("show-originals").addEventListener("change", drawResults);
  if (current.render.state === "running") polling = setInterval(() => poll().catch((e) => say(e.message)), 500);
  if (current.render.state === "done") { drawResults(); showTab("review"); }
}

start().catch((error) => say(`Cannot load the review: ${error.message}`));
