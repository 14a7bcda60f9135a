// ComfyUI-XDyna frontend extension.
//
// 1. Progress label: X-Dyna nodes report progress in units that mean different things (the sampler
//    counts one unit per context window per DDIM step, the preprocessors one per frame). The label
//    at the bottom of the node translates the websocket `progress` events into "step 3/25 ·
//    window 2/4 · 1.9 s/step · ETA 0:41" (or "frame 17/48"), and keeps the outcome ("done: 25 steps
//    in 1:02", "interrupted at step 7/25") until the next run.
// 2. Animated preview: when a node's UI output carries `xdyna_preview` (a sprite sheet of frames in
//    ComfyUI's temp folder), the frames play inside the node. All previews share one clock, so the
//    pose skeletons and the S-Face patches of the same frame are shown together; click a preview to
//    pause or resume every preview.
// 3. Warnings: a node's UI output `xdyna_warning` (lines; e.g. "a face ControlNet is loaded but no face
//    patches are given: running pose only") is shown in amber on the node until its next run.
// 4. Upload button for keypoint JSON on X-Dyna Load Pose Keypoints (inputs marked xdyna_json_upload):
//    the file goes to ComfyUI's input folder through the same /upload/image route the image upload uses.
// 5. Template cards: the template browser titles a pack's templates with their file names. The cards
//    of this pack are listed as a category of their own with the titles and one-sentence descriptions
//    of web/templates.json (written by tools/make_workflows.py); the files stay where they are.
// Works with the frontends of ComfyUI 0.3.64 (1.27) and 0.8.0 (1.35); uses only the legacy
// extension API (app.registerExtension, node prototype hooks, api events).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const EXT = "XDyna.ProgressAndPreview";
const PREVIEW_KEY = "xdyna_preview";
const WARNING_KEY = "xdyna_warning";
const LABEL_H = 20;
const WARNING_H = 18;
const PREVIEW_MIN_H = 120;
const X_DYNA_TYPES = new Set(["XDynaSampler", "XDynaPoseExtract", "XDynaPoseFromKeypoints", "XDynaPoseAlign",
  "XDynaExtractExpression", "XDynaReferenceEncode", "XDynaLoadDrivingVideo"]);

// ------------------------------------------------------------------------------------ helpers

function fmtTime(seconds) {
  if (!isFinite(seconds) || seconds < 0) return "?";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${r}` : `${m}:${r}`;
}

// "1 frame", "48 frames".
function plural(n, unit) {
  return `${n} ${unit}${n === 1 ? "" : "s"}`;
}

function graphNode(id) {
  if (id === null || id === undefined) return null;
  const key = String(id).split(":").pop(); // nodes inside subgraphs report "outer:inner"
  // app.rootGraph logs an error when read before the graph exists (frontend 1.4x): ask isGraphReady first
  const graphs = [app.graph];
  if (app.isGraphReady === undefined || app.isGraphReady) graphs.push(app.rootGraph);
  for (const g of graphs) {
    const n = g && g.getNodeById ? g.getNodeById(Number(key)) ?? g.getNodeById(key) : null;
    if (n) return n;
  }
  return null;
}

function widgetValue(node, name) {
  const w = (node.widgets || []).find((x) => x.name === name);
  return w ? w.value : undefined;
}

function redraw() {
  app.graph?.setDirtyCanvas?.(true, false);
}

// Height the node's slots and widgets need (litegraph's own minimum).
function contentHeight(node) {
  try {
    return node.computeSize()[1];
  } catch (e) {
    return node.size[1];
  }
}

function ensureHeight(node, extra) {
  const want = contentHeight(node) + extra;
  if (node.size[1] < want) node.setSize([node.size[0], want]);
}

// ------------------------------------------------------------------------------------ progress

/** Turns progress events into a label; one tracker per node while it runs. */
class Tracker {
  constructor(node) {
    this.node = node;
    this.tStart = performance.now(); // the node started (loading included)
    this.t0 = null; // first progress event: the rate is measured from here
    this.v0 = 0;
    this.value = 0;
    this.max = 0;
  }

  update(value, max) {
    const now = performance.now();
    if (this.t0 === null) {
      this.t0 = now;
      this.v0 = value;
    }
    this.value = value;
    this.max = max;
    this.t = now;
  }

  // Seconds per progress unit, once two events are apart.
  rate() {
    return this.value > this.v0 ? (this.t - this.t0) / 1000 / (this.value - this.v0) : NaN;
  }

  // For the sampler: steps from its widget, windows = max / steps (one unit per window per step).
  layout() {
    const steps = Number(widgetValue(this.node, "steps"));
    if (this.node.type === "XDynaSampler" && steps > 0 && this.max % steps === 0 && this.value > 0) {
      const windows = this.max / steps;
      return { steps, windows, step: Math.ceil(this.value / windows), window: ((this.value - 1) % windows) + 1 };
    }
    return null;
  }

  text() {
    if (!this.max) return "running";
    const rate = this.rate();
    const eta = rate * (this.max - this.value);
    const l = this.layout();
    const parts = l ? [`step ${l.step}/${l.steps}`] : [`${this.node.type === "XDynaSampler" ? "" : "frame "}${this.value}/${this.max}`];
    if (l && l.windows > 1) parts.push(`window ${l.window}/${l.windows}`);
    if (isFinite(rate)) {
      parts.push(l ? `${(rate * l.windows).toFixed(1)} s/step` : `${rate.toFixed(2)} s/frame`);
      if (this.value < this.max) parts.push(`ETA ${fmtTime(eta)}`);
    }
    return parts.join(" · ");
  }

  finished(kind) {
    const elapsed = (performance.now() - this.tStart) / 1000;
    const l = this.layout();
    if (kind === "done") {
      if (!this.max) return `done in ${fmtTime(elapsed)}`;
      return `done: ${l ? plural(l.steps, "step") : plural(this.max, "frame")} in ${fmtTime(elapsed)}`;
    }
    // before the first progress event the node was still loading models or reading its inputs
    if (!this.max || !this.value) {
      return `${kind} before the first ${this.node.type === "XDynaSampler" ? "step" : "frame"} (after ${fmtTime(elapsed)})`;
    }
    const where = l ? `step ${l.step}/${l.steps}` : `frame ${this.value}/${this.max}`;
    return `${kind} at ${where}`;
  }
}

const trackers = new Map(); // node id -> Tracker

function setLabel(node, text, frac) {
  const first = !node.xdynaProgress;
  node.xdynaProgress = { text, frac };
  if (first) ensureHeight(node, LABEL_H + (node.xdynaPreview ? PREVIEW_MIN_H : 0));
  redraw();
}

// The running node ended: "done", "interrupted" or "failed" (only one X-Dyna node runs at a time).
function finish(kind) {
  for (const [key, tr] of [...trackers]) {
    setLabel(tr.node, tr.finished(kind), kind === "done" ? 1 : tr.value / (tr.max || 1));
    trackers.delete(key);
  }
}

function onProgress({ detail }) {
  if (!detail) return;
  const node = graphNode(detail.node);
  if (!node || !X_DYNA_TYPES.has(node.type)) return;
  const key = String(node.id);
  let tr = trackers.get(key);
  if (!tr || tr.node !== node || detail.value < tr.value) {
    tr = new Tracker(node); // no executing event seen (e.g. the page was opened mid-run)
    trackers.set(key, tr);
  }
  tr.update(detail.value, detail.max);
  setLabel(node, tr.text(), detail.max ? detail.value / detail.max : 0);
}

function onExecuting({ detail }) {
  const id = detail !== null && typeof detail === "object" ? detail.node : detail;
  if (id === null || id === undefined) return; // end of prompt: execution_success / _interrupted say how
  // Another node started, so the tracked one finished.
  for (const [key, tr] of [...trackers]) {
    if (String(key) !== String(id)) {
      setLabel(tr.node, tr.finished("done"), 1);
      trackers.delete(key);
    }
  }
  const node = graphNode(id);
  if (node && X_DYNA_TYPES.has(node.type) && !trackers.has(String(node.id))) {
    trackers.set(String(node.id), new Tracker(node));
  }
}

function onStart() {
  trackers.clear();
  for (const n of app.graph?._nodes || app.graph?.nodes || []) {
    if (n.xdynaProgress) {
      n.xdynaProgress = null;
    }
  }
  redraw();
}

// ------------------------------------------------------------------------------------ previews

const clock = { t0: performance.now(), paused: false, pausedAt: 0, timer: null };

function playhead() {
  return ((clock.paused ? clock.pausedAt : performance.now()) - clock.t0) / 1000;
}

function anyPreview() {
  return (app.graph?._nodes || app.graph?.nodes || []).some((n) => n.xdynaPreview && n.xdynaPreview.loaded);
}

// One timer for every preview: repaint only when some frame index changes.
function startTicker() {
  if (clock.timer) return;
  let last = -1;
  clock.timer = setInterval(() => {
    if (!anyPreview()) {
      clearInterval(clock.timer);
      clock.timer = null;
      return;
    }
    const tick = Math.floor(playhead() * 24);
    if (!clock.paused && tick !== last && !document.hidden) {
      last = tick;
      redraw();
    }
  }, 1000 / 24);
}

function setPreview(node, info) {
  const frames = Number(info.frames) || 1;
  const preview = { frames, columns: Number(info.columns) || frames, w: Number(info.width), h: Number(info.height),
                    fps: Number(info.fps) || 8, loaded: false, img: new Image() };
  const q = new URLSearchParams({ filename: info.filename, subfolder: info.subfolder || "", type: info.type || "temp" });
  preview.img.onload = () => {
    preview.loaded = true;
    ensureHeight(node, (node.xdynaProgress ? LABEL_H : 0) + PREVIEW_MIN_H);
    clock.t0 = performance.now(); // a new result restarts every preview at frame 1, in step
    startTicker();
    redraw();
  };
  preview.img.onerror = () => { node.xdynaPreview = null; };
  preview.img.src = api.apiURL(`/view?${q.toString()}`);
  node.xdynaPreview = preview;
}

// The preview box: below the widgets, above the label.
function previewRect(node) {
  const top = contentHeight(node) + 2;
  const bottom = node.size[1] - (node.xdynaProgress ? LABEL_H : 0) - WARNING_H * (node.xdynaWarning || []).length - 4;
  return [6, top, node.size[0] - 12, bottom - top];
}

function drawPreview(node, ctx) {
  const p = node.xdynaPreview;
  if (!p || !p.loaded) return;
  const [x, y, w, h] = previewRect(node);
  if (w < 20 || h < 20) return;
  const i = Math.floor(playhead() * p.fps) % p.frames;
  const sx = (i % p.columns) * p.w;
  const sy = Math.floor(i / p.columns) * p.h;
  const scale = Math.min(w / p.w, (h - 14) / p.h);
  const dw = p.w * scale;
  const dh = p.h * scale;
  const dx = x + (w - dw) / 2;
  ctx.drawImage(p.img, sx, sy, p.w, p.h, dx, y, dw, dh);
  ctx.fillStyle = "#aaa";
  ctx.font = "11px sans-serif";
  ctx.textAlign = "center";
  ctx.fillText(`frame ${i + 1}/${p.frames}${clock.paused ? " (paused)" : ""}`, x + w / 2, y + dh + 11);
}

// The warning lines: amber, at the top of the node's body (over the widgets' title row is avoided).
function drawWarning(node, ctx) {
  const lines = node.xdynaWarning;
  if (!lines || !lines.length) return;
  const w = node.size[0];
  const y = node.size[1] - (node.xdynaProgress ? LABEL_H : 0) - WARNING_H * lines.length;
  ctx.font = "11px sans-serif";
  ctx.textAlign = "left";
  lines.forEach((line, i) => {
    ctx.fillStyle = "rgba(120,80,0,0.85)";
    ctx.fillRect(4, y + i * WARNING_H + 1, w - 8, WARNING_H - 2);
    ctx.fillStyle = "#ffd27a";
    ctx.fillText(`⚠ ${line}`, 10, y + i * WARNING_H + WARNING_H / 2 + 4, w - 20);
  });
}

function setWarning(node, lines) {
  const had = (node.xdynaWarning || []).length;
  node.xdynaWarning = lines;
  if (lines.length > had) ensureHeight(node, (node.xdynaProgress ? LABEL_H : 0) + WARNING_H * lines.length);
  redraw();
}

function drawLabel(node, ctx) {
  const s = node.xdynaProgress;
  if (!s) return;
  const y = node.size[1] - LABEL_H;
  const w = node.size[0];
  ctx.fillStyle = "rgba(0,0,0,0.35)";
  ctx.fillRect(4, y + 2, w - 8, LABEL_H - 4);
  if (s.frac > 0) {
    ctx.fillStyle = "rgba(80,160,80,0.45)";
    ctx.fillRect(4, y + 2, (w - 8) * Math.min(1, s.frac), LABEL_H - 4);
  }
  ctx.fillStyle = "#ddd";
  ctx.font = "12px sans-serif";
  ctx.textAlign = "left";
  ctx.fillText(s.text, 10, y + LABEL_H / 2 + 4, w - 20);
}

// ------------------------------------------------------------------------------------ JSON upload

function addJsonUpload(node, inputName) {
  const combo = (node.widgets || []).find((w) => w.name === inputName);
  if (!combo || (node.widgets || []).some((w) => w.name === "upload keypoints JSON")) return;
  const picker = document.createElement("input");
  Object.assign(picker, { type: "file", accept: ".json,application/json" });
  picker.style.display = "none";
  picker.onchange = async () => {
    const file = picker.files?.[0];
    if (!file) return;
    const body = new FormData();
    body.append("image", file);
    body.append("type", "input");
    body.append("overwrite", "true");
    const resp = await api.fetchApi("/upload/image", { method: "POST", body });
    if (resp.status !== 200) {
      alert(`X-Dyna: upload of ${file.name} failed (${resp.status} ${resp.statusText})`);
      return;
    }
    const saved = await resp.json();
    const name = saved.subfolder ? `${saved.subfolder}/${saved.name}` : saved.name;
    const values = combo.options?.values;
    if (Array.isArray(values) && !values.includes(name)) values.push(name);
    combo.value = name;
    combo.callback?.(name);
    redraw();
  };
  document.body.append(picker);
  const button = node.addWidget("button", "upload keypoints JSON", null, () => picker.click(), { serialize: false });
  button.serialize = false; // not a value of the workflow
  const onRemoved = node.onRemoved;
  node.onRemoved = function () {
    picker.remove();
    return onRemoved?.apply(this, arguments);
  };
}

// ------------------------------------------------------------------------------------ template cards

const CARDS_URL = new URL("./templates.json", import.meta.url).href;

function patchTemplateBrowser() {
  if (!api.getWorkflowTemplates || !api.getCoreWorkflowTemplates || api.__xdynaCards) return;
  api.__xdynaCards = true;
  let cards = null;
  let pack = null; // the folder name ComfyUI serves our templates under
  const customTemplates = api.getWorkflowTemplates.bind(api);
  const coreTemplates = api.getCoreWorkflowTemplates.bind(api);
  api.getWorkflowTemplates = async function () {
    const byPack = await customTemplates();
    try {
      cards = cards || (await (await fetch(CARDS_URL)).json());
      const names = new Set(cards.map((c) => c.name));
      for (const [mod, list] of Object.entries(byPack || {})) {
        if (list.length && list.every((n) => names.has(n))) {
          pack = mod;
          delete byPack[mod]; // listed below, with titles, instead of by file name
        }
      }
    } catch (e) {
      console.warn("X-Dyna: template titles not loaded", e);
    }
    return byPack;
  };
  api.getCoreWorkflowTemplates = async function (locale) {
    const core = await coreTemplates(locale);
    if (!pack || !cards || !Array.isArray(core)) return core;
    return [...core, { moduleName: pack, title: "X-Dyna", type: "video",
      templates: cards.map((c) => ({ name: c.name, title: c.title, description: c.description,
                                     mediaType: "image", mediaSubtype: "jpg" })) }];
  };
}

patchTemplateBrowser();

// ------------------------------------------------------------------------------------ registration

const extension = {
  name: EXT,

  async setup() {
    api.addEventListener("progress", onProgress);
    api.addEventListener("executing", onExecuting);
    api.addEventListener("execution_start", onStart);
    api.addEventListener("execution_success", () => finish("done"));
    api.addEventListener("execution_interrupted", () => finish("interrupted"));
    api.addEventListener("execution_error", () => finish("failed"));
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    const required = nodeData.input?.required || {};
    const jsonInputs = Object.keys(required).filter((k) => required[k]?.[1]?.xdyna_json_upload);
    if (jsonInputs.length) {
      const onNodeCreated = nodeType.prototype.onNodeCreated;
      nodeType.prototype.onNodeCreated = function () {
        const r = onNodeCreated?.apply(this, arguments);
        for (const name of jsonInputs) addJsonUpload(this, name);
        return r;
      };
    }
    if (!X_DYNA_TYPES.has(nodeData.name)) return;

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      const r = onExecuted?.apply(this, arguments);
      const info = output?.[PREVIEW_KEY]?.[0];
      if (info && info.filename) setPreview(this, info);
      if (output && WARNING_KEY in output) setWarning(this, (output[WARNING_KEY] || []).map(String));
      return r;
    };

    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      const r = onDrawForeground?.apply(this, arguments);
      if (!this.flags?.collapsed) {
        ctx.save();
        try {
          drawPreview(this, ctx);
          drawWarning(this, ctx);
          drawLabel(this, ctx);
        } finally {
          ctx.restore();
        }
      }
      return r;
    };

    const onMouseDown = nodeType.prototype.onMouseDown;
    nodeType.prototype.onMouseDown = function (e, pos) {
      if (this.xdynaPreview?.loaded && pos) {
        const [x, y, w, h] = previewRect(this);
        if (pos[0] >= x && pos[0] <= x + w && pos[1] >= y && pos[1] <= y + h) {
          if (clock.paused) clock.t0 += performance.now() - clock.pausedAt;
          else clock.pausedAt = performance.now();
          clock.paused = !clock.paused;
          redraw();
          return true;
        }
      }
      return onMouseDown?.apply(this, arguments);
    };
  },
};

// Registered once even if this file is served twice (WEB_DIRECTORY plus a pyproject [tool.comfy] web
// entry make ComfyUI serve the folder under two names).
if (!window.__xdynaExtension) {
  window.__xdynaExtension = true;
  app.registerExtension(extension);
}
