// comfyui-lokr web extension: a summary panel on LoKr loader nodes (family, modules, layouts,
// scale, trigger words with click-to-copy, a family-mismatch badge, the last run's match report)
// and a block-weight editor (presets + per-block sliders) on the block-weights node.
// Every frontend API is feature-detected; when one is missing the extension does nothing.
import * as L from "./lokr_logic.js";

const EXT_NAME = "comfyui-lokr.panel";
const FILE_INPUTS = ["lokr_name", "lora_name"];
const VECTOR_INPUTS = ["block_vector", "vector", "block_weights", "lbw"];
const REPORT_KEY = "lokr_report";

async function comfyHandles() {
  try {
    const [{ app }, { api }] = await Promise.all([import("../../scripts/app.js"), import("../../scripts/api.js")]);
    if (app) return { app, api };
  } catch (_) { /* older or newer frontends: fall through */ }
  const g = globalThis.comfyAPI;
  return { app: g?.app?.app ?? null, api: g?.api?.api ?? null };
}

function inputNames(nodeData) {
  const inputs = nodeData?.input ?? {};
  return [...Object.keys(inputs.required ?? {}), ...Object.keys(inputs.optional ?? {})];
}

function chain(obj, key, fn) {
  const prev = obj[key];
  obj[key] = function (...args) {
    const r = prev?.apply(this, args);
    try { fn.apply(this, args); } catch (e) { console.warn("[comfyui-lokr]", e); }
    return r;
  };
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

const CSS = `
.lokr-host{width:100%;height:100%;overflow:hidden;box-sizing:border-box}
.lokr-panel{font:11px/1.35 system-ui,sans-serif;color:var(--input-text,#ddd);background:var(--comfy-input-bg,#222);
  border-radius:6px;padding:6px 8px;box-sizing:border-box;overflow:hidden;width:100%;}
.lokr-panel .lokr-head{display:flex;gap:6px;align-items:center;margin-bottom:3px;flex-wrap:wrap}
.lokr-panel .lokr-fam{font-weight:600;padding:1px 6px;border-radius:9px;background:#2d4f7c;color:#fff}
.lokr-panel .lokr-badge{padding:1px 6px;border-radius:9px;background:#8a5a00;color:#fff}
.lokr-panel .lokr-badge.lokr-bad{background:#9b2c2c}
.lokr-panel table{border-collapse:collapse;width:100%}
.lokr-panel td{padding:0 4px 0 0;vertical-align:top;overflow-wrap:anywhere}
.lokr-panel td.lokr-k{opacity:.65;white-space:nowrap;width:1%}
.lokr-panel td.lokr-warn{color:#f6ad55}
.lokr-panel .lokr-tags{display:flex;flex-wrap:wrap;gap:3px;margin-top:3px;align-items:center}
.lokr-panel .lokr-tags-label{opacity:.65;margin-right:2px}
.lokr-panel .lokr-tag{cursor:pointer;padding:0 5px;border-radius:4px;background:#3a3a3a;border:1px solid #555}
.lokr-panel .lokr-tag:hover{background:#4a5a6a}
.lokr-panel .lokr-tag.lokr-copied{background:#2f6b3a}
.lokr-panel .lokr-run{margin-top:4px;border-top:1px solid #444;padding-top:3px}
.lokr-panel .lokr-err{color:#fc8181}
.lokr-panel .lokr-muted{opacity:.6}
.lokr-stack .lokr-stack-row+.lokr-stack-row{margin-top:4px;border-top:1px solid #444;padding-top:3px}
.lokr-stack .lokr-stack-file{font-weight:600;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;max-width:100%}
.lokr-stack .lokr-stack-line{opacity:.85;overflow-wrap:anywhere}
.lokr-stack .lokr-tags{margin-top:1px}
.lokr-bw{font:11px/1.3 system-ui,sans-serif;color:var(--input-text,#ddd);background:var(--comfy-input-bg,#222);
  border-radius:6px;padding:6px 8px;box-sizing:border-box;width:100%;overflow:hidden}
.lokr-bw .lokr-bw-top{display:flex;gap:6px;margin-bottom:4px}
.lokr-bw select{flex:1;min-width:0;font-size:11px;background:#333;color:inherit;border:1px solid #555;border-radius:4px}
.lokr-bw .lokr-bw-grid{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));column-gap:10px;row-gap:1px}
.lokr-bw .lokr-bw-row{display:grid;grid-template-columns:40px 1fr 34px;align-items:center;gap:4px}
.lokr-bw .lokr-bw-row input{width:100%;margin:0;height:12px;accent-color:#5b8fd6}
.lokr-bw .lokr-bw-id{opacity:.75;font-family:ui-monospace,monospace;font-size:10px}
.lokr-bw .lokr-bw-val{text-align:right;font-family:ui-monospace,monospace;font-size:10px}
.lokr-bw .lokr-bw-err{color:#fc8181;margin-top:3px}
`;

function injectStyle() {
  if (document.getElementById("lokr-style")) return;
  const s = el("style");
  s.id = "lokr-style";
  s.textContent = CSS;
  document.head.appendChild(s);
}

async function copyText(text) {
  try {
    if (navigator.clipboard?.writeText) { await navigator.clipboard.writeText(text); return true; }
  } catch (_) { /* fall back below */ }
  try {
    const ta = el("textarea");
    ta.value = text;
    document.body.appendChild(ta);
    ta.select();
    const ok = document.execCommand("copy");
    ta.remove();
    return ok;
  } catch (_) { return false; }
}

async function getJSON(api, path) {
  const resp = api?.fetchApi ? await api.fetchApi(path) : await fetch(path);
  let body = null;
  try { body = await resp.json(); } catch (_) { body = null; }
  if (!resp.ok) throw new Error(body?.error ?? `HTTP ${resp.status}`);
  return body;
}

function resizeNode(app, node) {
  const fit = () => {
    try {
      if (typeof node.computeSize === "function" && typeof node.setSize === "function") {
        const [w, h] = node.computeSize();
        node.setSize([Math.max(node.size?.[0] ?? w, w), h]);
      }
      app?.graph?.setDirtyCanvas?.(true, true);
    } catch (_) { /* size is cosmetic */ }
  };
  fit();
  // once more after the browser laid the new content out (text wraps change the height)
  if (typeof requestAnimationFrame === "function") requestAnimationFrame(() => requestAnimationFrame(fit));
  setTimeout(fit, 80);
}

/** Height a DOM widget needs for `card` (its natural height, unconstrained by the host) plus margins. */
function contentHeight(card, widget) {
  const margin = Number(widget?.margin ?? 10);
  return Math.max(30, Math.ceil(card.offsetHeight || 0) + 2 * margin + 2);
}

/**
 * A DOM widget named `name` on `node` holding `root` (in a .lokr-host), sized to its content and
 * never serialized; null when the frontend has no node.addDOMWidget.
 */
function mountDOMWidget(node, name, root) {
  if (typeof node.addDOMWidget !== "function") return null;
  const host = el("div", "lokr-host");
  host.appendChild(root);
  let widget = null;
  widget = node.addDOMWidget(name, name, host, {
    serialize: false,
    hideOnZoom: false,
    getMinHeight: () => contentHeight(root, widget),
    getMaxHeight: () => contentHeight(root, widget),
  });
  if (widget) widget.serialize = false;
  return widget;
}

/** The /lokr/info summary of a file in the loras folders (throws Error with the server's message). */
function fetchInfo(api, file) {
  return getJSON(api, "/lokr/info?file=" + encodeURIComponent(file));
}

/** The family badge of a summary. */
function familyBadge(summary) {
  return el("span", "lokr-fam", L.familyLabel(summary?.family ?? summary?.model_family));
}

/** Trigger words (or top tags) as a row of click-to-copy chips, with `label` in front; null for none. */
function tagChips(words, label) {
  if (!words.length) return null;
  const tags = el("div", "lokr-tags");
  tags.title = "Click a word to copy it";
  if (label) tags.appendChild(el("span", "lokr-tags-label", label));
  for (const w of words) {
    const t = el("span", "lokr-tag", w);
    t.addEventListener("click", async (ev) => {
      ev.stopPropagation();
      if (await copyText(w)) {
        t.classList.add("lokr-copied");
        setTimeout(() => t.classList.remove("lokr-copied"), 700);
      }
    });
    tags.appendChild(t);
  }
  return tags;
}

/** Checkpoint name upstream of the node's "model" input (follows MODEL links, at most 12 hops). */
function upstreamCheckpoint(app, node) {
  const graph = node.graph ?? app?.graph;
  let cur = node;
  for (let hop = 0; hop < 12 && cur; hop++) {
    const ckpt = cur.widgets?.find((w) => w.name === "ckpt_name" || w.name === "unet_name");
    if (ckpt && cur !== node) return String(ckpt.value ?? "");
    const input = cur.inputs?.find((i) => i.name === "model" || i.type === "MODEL");
    if (!input || input.link == null) return null;
    const link = graph?.links?.get ? graph.links.get(input.link) : graph?.links?.[input.link];
    if (!link) return null;
    cur = graph.getNodeById?.(link.origin_id);
  }
  return null;
}

/**
 * Call `fn` every `ms` while `node` is in a graph (from onAdded to onRemoved, or until the graph no
 * longer holds it). The model family upstream can change on another node, and the Vue node mode never
 * calls onDrawForeground, so a light poll is the one trigger that works in every renderer.
 */
function watchWhileInGraph(node, fn, ms) {
  let timer = null;
  const stop = () => { if (timer !== null) { clearInterval(timer); timer = null; } };
  const tick = () => {
    if (node.graph?.getNodeById?.(node.id) !== node) { stop(); return; }
    try { fn(); } catch (e) { console.warn("[comfyui-lokr]", e); stop(); }
  };
  const start = () => { if (timer === null) timer = setInterval(tick, ms); };
  chain(node, "onAdded", start);
  chain(node, "onRemoved", stop);
  if (node.graph) start();
}

// ---------------------------------------------------------------------------------------- panel
function setupPanel(app, api, node, fileInput) {
  const fileWidget = node.widgets?.find((w) => w.name === fileInput);
  if (!fileWidget || typeof node.addDOMWidget !== "function") return;
  const root = el("div", "lokr-panel");
  root.dataset.lokr = "panel";
  const state = { file: null, summary: null, error: null, report: null, modelFamily: null, seq: 0 };
  mountDOMWidget(node, "lokr_panel", root);

  function render() {
    root.replaceChildren();
    const head = el("div", "lokr-head");
    root.appendChild(head);
    if (!state.file) { head.appendChild(el("span", "lokr-muted", "No LoKr file selected")); return; }
    if (state.error) { root.appendChild(el("div", "lokr-err", state.error)); return; }
    if (!state.summary) { head.appendChild(el("span", "lokr-muted", "Reading " + state.file + " …")); return; }
    const s = state.summary;
    const fam = s.family ?? s.model_family;
    head.appendChild(familyBadge(s));
    const mismatch = L.familyMismatch(fam, state.report?.model_family ?? state.modelFamily);
    if (mismatch) {
      const modelFam = state.report?.model_family ?? state.modelFamily;
      const badge = el("span", "lokr-badge lokr-bad", `⚠ family mismatch: model is ${L.familyLabel(modelFam)}`);
      badge.title = mismatch;
      badge.dataset.lokr = "mismatch";
      head.appendChild(badge);
    }
    for (const w of L.warningsOf(s).slice(0, 2)) {
      const b = el("span", "lokr-badge", "⚠ " + (w.length > 40 ? w.slice(0, 38) + "…" : w));
      b.title = w;
      head.appendChild(b);
    }
    const table = el("table");
    for (const row of L.summaryRows(s).filter((r) => r.label !== "Family")) {
      const tr = el("tr");
      tr.appendChild(el("td", "lokr-k", row.label));
      tr.appendChild(el("td", null, row.text));
      table.appendChild(tr);
    }
    root.appendChild(table);
    const tags = tagChips(L.triggerWords(s), L.hasTriggerWords(s) ? "Trigger words" : "Top tags");
    if (tags) root.appendChild(tags);
    if (state.report) {
      const run = el("div", "lokr-run");
      run.dataset.lokr = "report";
      run.appendChild(el("div", "lokr-muted", "Last run"));
      const rt = el("table");
      for (const row of L.reportRows(state.report)) {
        const tr = el("tr");
        tr.appendChild(el("td", "lokr-k", row.label));
        tr.appendChild(el("td", row.warn ? "lokr-warn" : null, row.text));
        rt.appendChild(tr);
      }
      run.appendChild(rt);
      root.appendChild(run);
    }
  }

  async function refresh() {
    const name = fileWidget.value;
    if (name === state.file && (state.summary || state.error)) return;
    const seq = ++state.seq;
    Object.assign(state, { file: name || null, summary: null, error: null, report: null });
    render(); resizeNode(app, node);
    if (!name) return;
    try {
      const body = await fetchInfo(api, name);
      if (seq !== state.seq) return;
      state.summary = body;
    } catch (e) {
      if (seq !== state.seq) return;
      state.error = String(e?.message ?? e);
    }
    render(); resizeNode(app, node);
  }

  function checkModel() {
    const fam = L.familyFromCheckpointName(upstreamCheckpoint(app, node));
    if (fam !== state.modelFamily) { state.modelFamily = fam; if (state.summary) render(); }
  }

  chain(fileWidget, "callback", () => refresh());
  chain(node, "onConfigure", () => setTimeout(refresh, 0));
  chain(node, "onConnectionsChange", checkModel);
  watchWhileInGraph(node, checkModel, 1000);
  chain(node, "onExecuted", (message) => {
    const rep = message?.[REPORT_KEY];
    const r = Array.isArray(rep) ? rep[0] : rep;
    if (r && typeof r === "object") { state.report = r; render(); resizeNode(app, node); }
  });
  node.lokrPanel = { refresh, state, element: root };
  setTimeout(refresh, 0);
}

// ---------------------------------------------------------------------------------- stack panel
/** One compact row per chosen file on a stack node (lokr_1, lokr_2, ...): family, modules, layouts,
 *  scale and the first trigger words; updates when any slot changes. */
function setupStackPanel(app, api, node, slotNames) {
  const slotWidgets = slotNames.map((n) => node.widgets?.find((w) => w.name === n)).filter(Boolean);
  if (!slotWidgets.length || typeof node.addDOMWidget !== "function") return;
  const root = el("div", "lokr-panel lokr-stack");
  root.dataset.lokr = "stack-panel";
  const state = { infos: new Map(), selection: [] };  // file -> {summary, error} | {pending}
  mountDOMWidget(node, "lokr_stack_panel", root);

  function render() {
    root.replaceChildren();
    if (!state.selection.length) { root.appendChild(el("span", "lokr-muted", "No LoKr files selected")); return; }
    for (const { slot, file } of state.selection) {
      const row = el("div", "lokr-stack-row");
      row.dataset.lokr = "stack-row";
      row.dataset.slot = String(slot);
      const head = el("div", "lokr-head");
      const name = el("span", "lokr-stack-file", `${slot}. ${file}`);
      name.title = file;
      head.appendChild(name);
      row.appendChild(head);
      const info = state.infos.get(file);
      if (info?.error) row.appendChild(el("div", "lokr-err", info.error));
      else if (!info?.summary) head.appendChild(el("span", "lokr-muted", "reading …"));
      else {
        const line = L.compactSummary(info.summary);
        head.appendChild(familyBadge(info.summary));
        if (line.text) head.appendChild(el("span", "lokr-stack-line", line.text));
        const tags = tagChips(line.words, null);
        if (tags) { tags.title = `${line.explicit ? "Trigger words" : "Top tags"}: click one to copy it`; row.appendChild(tags); }
      }
      root.appendChild(row);
    }
  }

  function refresh() {
    state.selection = L.stackSelection(node.widgets ?? []);
    const chosen = new Set(state.selection.map((e) => e.file));
    for (const file of [...state.infos.keys()]) {  // forget unselected files (and errors: retried next time)
      if (!chosen.has(file)) state.infos.delete(file);
    }
    for (const file of chosen) {
      if (state.infos.has(file)) continue;
      const info = { pending: true };
      state.infos.set(file, info);
      fetchInfo(api, file).then((body) => { info.summary = body; }, (e) => { info.error = String(e?.message ?? e); })
        .finally(() => {
          info.pending = false;
          if (state.infos.get(file) === info) { render(); resizeNode(app, node); }
        });
    }
    render(); resizeNode(app, node);
  }

  for (const w of slotWidgets) chain(w, "callback", () => refresh());
  chain(node, "onConfigure", () => setTimeout(refresh, 0));
  node.lokrStackPanel = { refresh, state, element: root };
  setTimeout(refresh, 0);
}

// ---------------------------------------------------------------------------- block-weight editor
const LAYOUTS = [["sd1", 17], ["sd1", 26], ["sdxl", 12], ["sdxl", 20]];

function setupEditor(app, api, node, vectorInput) {
  const textWidget = node.widgets?.find((w) => w.name === vectorInput);
  if (!textWidget || typeof node.addDOMWidget !== "function") return;
  const root = el("div", "lokr-bw");
  root.dataset.lokr = "block-editor";
  const top = el("div", "lokr-bw-top");
  const layoutSel = el("select");
  layoutSel.title = "Vector layout (model family and number of values)";
  LAYOUTS.forEach(([f, n], i) => {
    const o = el("option", null, `${f === "sd1" ? "SD 1.x/2.x" : L.familyLabel(f)} · ${n} values`);
    o.value = String(i);
    layoutSel.appendChild(o);
  });
  const presetSel = el("select");
  presetSel.title = "Block-weight presets (lokr_core)";
  top.append(layoutSel, presetSel);
  const grid = el("div", "lokr-bw-grid");
  const err = el("div", "lokr-bw-err");
  root.append(top, grid, err);
  const state = { layout: 0, values: [], presets: {}, inputs: [], writing: false };
  mountDOMWidget(node, "lokr_block_editor", root);

  function num(name, dflt) {
    const w = node.widgets?.find((x) => x.name === name);
    const v = Number(w?.value);
    return Number.isFinite(v) ? v : dflt;
  }

  function fillPresets() {
    const [fam, n] = LAYOUTS[state.layout];
    presetSel.replaceChildren(el("option", null, "preset…"));
    presetSel.firstChild.value = "";
    for (const name of Object.keys(L.presetsFor(state.presets, fam, n))) {
      const o = el("option", null, name);
      o.value = name;
      presetSel.appendChild(o);
    }
  }

  function buildSliders() {
    const [fam, n] = LAYOUTS[state.layout];
    const ids = L.blockIds(fam, n);
    grid.replaceChildren();
    const rowIn = { left: 0, right: 0 };
    state.inputs = ids.map((id, i) => {
      const row = el("div", "lokr-bw-row");
      const side = id.startsWith("OUT") ? "right" : "left";  // inputs + middle left, outputs right
      row.style.gridColumn = side === "left" ? "1" : "2";
      row.style.gridRow = String(++rowIn[side]);
      const label = el("span", "lokr-bw-id", id);
      const input = el("input");
      Object.assign(input, { type: "range", min: L.SLIDER.min, max: L.SLIDER.max, step: L.SLIDER.step });
      const val = el("span", "lokr-bw-val");
      input.addEventListener("input", () => {
        state.values[i] = Number(input.value);
        val.textContent = L.formatNumber(state.values[i], 2);
        writeBack();
      });
      input.addEventListener("pointerdown", (e) => e.stopPropagation());
      row.append(label, input, val);
      grid.appendChild(row);
      return { input, val };
    });
  }

  function showValues() {
    state.inputs.forEach(({ input, val }, i) => {
      const v = state.values[i];
      input.disabled = typeof v !== "number";
      input.value = typeof v === "number" ? String(v) : "1";
      val.textContent = typeof v === "number" ? L.formatNumber(v, 2) : String(v ?? "");
    });
  }

  const presetWidget = node.widgets?.find((w) => w.name === "preset");
  const familyWidget = node.widgets?.find((w) => w.name === "family");

  function writeBack() {
    const text = L.formatVector(state.values);
    state.writing = true;
    try {
      textWidget.value = text;
      textWidget.callback?.(text);
      // the sliders now hold a custom vector: make the node use the text, not a named preset
      if (presetWidget && presetWidget.value !== "custom" && (presetWidget.options?.values ?? []).includes?.("custom")) {
        presetWidget.value = "custom";
        presetWidget.callback?.("custom");
      }
    } finally { state.writing = false; }
    app?.graph?.setDirtyCanvas?.(true, true);
  }

  function readText() {
    const preset = presetWidget?.value;
    const text = String(preset && preset !== "custom" ? preset : (textWidget.value ?? "")).trim();
    err.textContent = "";
    if (!text) return;
    const [fam0] = LAYOUTS[state.layout];
    const famW = familyWidget?.value;
    const family = famW && famW !== "auto" && L.BLOCK_IDS[famW] ? famW : (text.startsWith("%") ? fam0 : null);
    try {
      const parsed = L.parseBlockVector(text, { family, A: num("A", 4), B: num("B", 1), presets: state.presets });
      const fam = parsed.family === "sd2" ? "sd1" : parsed.family;
      const idx = LAYOUTS.findIndex(([f, n]) => f === (fam ?? fam0) && n === parsed.ids.length);
      if (idx >= 0 && idx !== state.layout) { state.layout = idx; layoutSel.value = String(idx); buildSliders(); fillPresets(); }
      state.values = parsed.values.map((v, i) => (v === null ? parsed.tokens[i] : v));
      showValues();
    } catch (e) {
      err.textContent = String(e?.message ?? e);
    }
    resizeNode(app, node);
  }

  layoutSel.addEventListener("change", () => {
    state.layout = Number(layoutSel.value);
    const [, n] = LAYOUTS[state.layout];
    buildSliders(); fillPresets();
    state.values = Array.from({ length: n }, () => 1);
    showValues(); writeBack(); resizeNode(app, node);
  });
  presetSel.addEventListener("change", () => {
    const name = presetSel.value;
    if (!name) return;
    textWidget.value = state.presets[name];
    readText(); writeBack();
    presetSel.value = "";
  });
  for (const sel of [layoutSel, presetSel]) sel.addEventListener("pointerdown", (e) => e.stopPropagation());

  chain(textWidget, "callback", () => { if (!state.writing) readText(); });
  for (const w of [presetWidget, familyWidget, ...(node.widgets ?? []).filter((x) => x.name === "A" || x.name === "B")]) {
    if (w) chain(w, "callback", () => { if (!state.writing) readText(); });
  }
  chain(node, "onConfigure", () => setTimeout(readText, 0));

  buildSliders(); fillPresets();
  state.values = L.blockIds(...LAYOUTS[state.layout]).map(() => 1);
  showValues();
  setTimeout(() => { readText(); resizeNode(app, node); }, 0);
  getJSON(api, "/lokr/presets").then((body) => {
    state.presets = body?.presets ?? {};
    fillPresets();
    readText();
  }).catch(() => { /* no presets: sliders still work */ });
  node.lokrEditor = { state, element: root, readText };
}

// ------------------------------------------------------------------------------------- register
async function main() {
  if (typeof document === "undefined") return;
  const { app, api } = await comfyHandles();
  if (!app || typeof app.registerExtension !== "function") return;
  app.registerExtension({
    name: EXT_NAME,
    async beforeRegisterNodeDef(nodeType, nodeData) {
      try {
        const names = inputNames(nodeData);
        const fileInput = FILE_INPUTS.find((n) => names.includes(n));
        const vectorInput = VECTOR_INPUTS.find((n) => names.includes(n));
        const slotInputs = fileInput ? [] : L.stackSlotNames(names);
        const isOurs = /lokr/i.test(nodeData?.name ?? "") || /lokr/i.test(nodeData?.python_module ?? "");
        if (!isOurs || (!fileInput && !vectorInput && !slotInputs.length)) return;
        injectStyle();
        chain(nodeType.prototype, "onNodeCreated", function () {
          if (fileInput) setupPanel(app, api, this, fileInput);
          if (slotInputs.length) setupStackPanel(app, api, this, slotInputs);
          if (vectorInput) setupEditor(app, api, this, vectorInput);
        });
      } catch (e) {
        console.warn("[comfyui-lokr] extension disabled for", nodeData?.name, e);
      }
    },
  });
}

try {
  await main();
} catch (e) {
  console.warn("[comfyui-lokr] web extension not loaded:", e);
}
