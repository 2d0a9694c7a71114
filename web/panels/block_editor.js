// The block-weight editor on LoKr Block Weights: a layout menu, a preset menu and one slider per
// block (transformers: BASE, then one section per block group with a slider for the whole group).
// Sliders and presets write `block_vector` (and switch `preset` to custom); the node's block_vector /
// preset / family / A / B widgets move the sliders; a run report's block_family / blocks (the
// model's family and block counts) become the family's layout.
import {
  SLIDER, editorLayouts, formatVector, isDitFamily, layoutIndex, parseBlockVector, presetsFor,
} from "../logic/block_vector.js";
import { DIT_PRESETS, countsOf, ditFamily, ditGroups, groupOf } from "../logic/dit_blocks.js";
import { formatNumber } from "../logic/format.js";
import { CUSTOM_PRESET, INPUTS, detectedLayout, parseFamily, reportFromMessage, vectorText } from "../logic/node_ui.js";
import { el } from "../common/dom.js";
import { chain } from "../common/hooks.js";
import { fetchPresets } from "../common/lokr_api.js";
import { findWidget, mountDOMWidget, resizeNode } from "../common/node_widget.js";

const stopPointer = (e) => e.stopPropagation();  // keep the canvas from dragging the node

/** A <select> titled `title` with `options` [[value, text]]. */
function select(title, options) {
  const sel = el("select");
  sel.title = title;
  for (const [value, text] of options) {
    const o = el("option", null, text);
    o.value = value;
    sel.appendChild(o);
  }
  sel.addEventListener("pointerdown", stopPointer);
  return sel;
}

/** Fill the layout menu `sel` with `layouts`, SD UNets and transformers in two option groups. */
function fillLayoutMenu(sel, layouts) {
  const groups = [["SD UNets", false], ["Transformers (DiT)", true]].map(([label, dit]) => {
    const g = el("optgroup");
    g.label = label;
    layouts.forEach((l, i) => {
      if (isDitFamily(l.family) !== dit) return;
      const o = el("option", null, l.label);
      o.value = String(i);
      g.appendChild(o);
    });
    return g;
  });
  sel.replaceChildren(...groups);
}

/** One slider row for block `id` shown as `label`: {row, input, val}; `onInput(number)` on each move. */
function sliderRow(id, onInput, label = id) {
  const row = el("div", "lokr-bw-row");
  const input = el("input");
  Object.assign(input, { type: "range", min: SLIDER.min, max: SLIDER.max, step: SLIDER.step });
  const val = el("span", "lokr-bw-val");
  input.addEventListener("input", () => {
    val.textContent = formatNumber(Number(input.value), 2);
    onInput(Number(input.value));
  });
  input.addEventListener("pointerdown", stopPointer);
  row.dataset.id = id;
  row.title = id;
  row.append(el("span", "lokr-bw-id", label), input, val);
  return { row, input, val };
}

/** The editor of one node; `state` = {layouts, layout, values, presets, inputs, groups, detected, writing}. */
class BlockEditor {
  constructor(app, node, textWidget) {
    Object.assign(this, { app, node, textWidget });
    this.presetWidget = findWidget(node, INPUTS.preset);
    this.familyWidget = findWidget(node, INPUTS.family);
    this.state = { layouts: editorLayouts(), layout: 0, values: [], presets: {}, inputs: [], groups: [],
      detected: null, writing: false };
    this.root = el("div", "lokr-bw");
    this.root.dataset.lokr = "block-editor";
    this.layoutSel = select("Vector layout (model family and its blocks)", []);
    fillLayoutMenu(this.layoutSel, this.state.layouts);
    this.presetSel = select("Block-weight presets (lokr_core)", []);
    const top = el("div", "lokr-bw-top");
    top.append(this.layoutSel, this.presetSel);
    this.grid = el("div", "lokr-bw-grid");
    this.err = el("div", "lokr-bw-err");
    this.root.append(top, this.grid, this.err);
    this.layoutSel.addEventListener("change", () => this.chooseLayout(Number(this.layoutSel.value)));
    this.presetSel.addEventListener("change", () => this.choosePreset(this.presetSel.value));
  }

  /** The current layout {family, ids, label}. */
  current() {
    return this.state.layouts[this.state.layout];
  }

  /** Value of the node's number widget `name`, or `dflt`. */
  number(name, dflt) {
    const v = Number(findWidget(this.node, name)?.value);
    return Number.isFinite(v) ? v : dflt;
  }

  /** The model's block counts for transformer `family` when the last run read that family, else null. */
  blocksFor(family) {
    const d = this.state.detected;
    return d && ditFamily(family) && ditFamily(family) === ditFamily(d.family) ? d.blocks : null;
  }

  /** The preset menu: the presets that fit the current layout. */
  fillPresets() {
    const { family, ids } = this.current();
    this.presetSel.replaceChildren(el("option", null, "preset…"));
    this.presetSel.firstChild.value = "";
    for (const name of Object.keys(presetsFor(this.state.presets, family, ids.length, countsOf(ids)))) {
      const o = el("option", null, name);
      o.value = name;
      this.presetSel.appendChild(o);
    }
  }

  /** One slider per block of the current layout: SD inputs and middle on the left, outputs on the right;
   *  transformers: BASE, then a section per group (a slider for the whole group, then its blocks). */
  buildSliders() {
    const { family, ids } = this.current();
    this.grid.replaceChildren();
    this.state.groups = [];
    const row = (id, i, label) => sliderRow(id, (v) => { this.state.values[i] = v; this.writeBack(); }, label);
    if (!isDitFamily(family)) {
      const rows = { left: 0, right: 0 };
      this.state.inputs = ids.map((id, i) => {
        const slider = row(id, i);
        const side = id.startsWith("OUT") ? "right" : "left";
        slider.row.style.gridColumn = side === "left" ? "1" : "2";
        slider.row.style.gridRow = String(++rows[side]);
        this.grid.appendChild(slider.row);
        return slider;
      });
      return;
    }
    this.state.inputs = ids.map((id, i) => row(id, i, id === "BASE" ? id : id.split(" ")[1]));
    this.state.inputs[0].row.classList.add("lokr-bw-wide");
    this.grid.appendChild(this.state.inputs[0].row);
    for (const group of ditGroups(ids).slice(1)) {
      const members = ids.map((id, i) => [id, i]).filter(([id]) => groupOf(id) === group).map(([, i]) => i);
      const section = el("div", "lokr-bw-sec");
      section.dataset.group = group;
      const head = sliderRow(group, (v) => {
        for (const i of members) this.state.values[i] = v;
        this.showValues(); this.writeBack();
      }, `${group} 0–${members.length - 1}`);
      head.row.classList.add("lokr-bw-ghead");
      head.row.title = `every ${group} block`;
      const sub = el("div", "lokr-bw-sub");
      for (const i of members) sub.appendChild(this.state.inputs[i].row);
      section.append(head.row, sub);
      this.grid.appendChild(section);
      this.state.groups.push({ group, members, ...head });
    }
  }

  /** Put `state.values` on the sliders; R / U tokens show as text on a disabled slider. A group slider
   *  shows its blocks' common value (blank when they differ). */
  showValues() {
    this.state.inputs.forEach(({ input, val }, i) => {
      const v = this.state.values[i];
      input.disabled = typeof v !== "number";
      input.value = typeof v === "number" ? String(v) : "1";
      val.textContent = typeof v === "number" ? formatNumber(v, 2) : String(v ?? "");
    });
    for (const { members, input, val } of this.state.groups) {
      const vals = new Set(members.map((i) => this.state.values[i]));
      const [v] = vals;
      const same = vals.size === 1 && typeof v === "number";
      input.value = same ? String(v) : "1";
      val.textContent = same ? formatNumber(v, 2) : "…";
    }
  }

  /** Write the sliders' vector to `block_vector` and switch `preset` to custom. */
  writeBack() {
    const text = formatVector(this.state.values);
    const preset = this.presetWidget;
    this.state.writing = true;
    try {
      this.textWidget.value = text;
      this.textWidget.callback?.(text);
      if (preset && preset.value !== CUSTOM_PRESET && (preset.options?.values ?? []).includes?.(CUSTOM_PRESET)) {
        preset.value = CUSTOM_PRESET;
        preset.callback?.(CUSTOM_PRESET);
      }
    } finally { this.state.writing = false; }
    this.app?.graph?.setDirtyCanvas?.(true, true);
  }

  /** Switch to layout `index` (sliders and presets rebuilt when it changes). */
  setLayout(index) {
    if (index === this.state.layout && this.state.inputs.length) return;
    this.state.layout = index;
    this.layoutSel.value = String(index);
    this.buildSliders(); this.fillPresets();
  }

  /** Move the sliders to the node's preset or block_vector (switching layout when the vector says so). */
  readText() {
    const text = vectorText(this.presetWidget?.value, this.textWidget.value);
    this.err.textContent = "";
    if (!text) return;
    const fallback = this.current().family;
    try {
      const family = parseFamily(this.familyWidget?.value, this.state.detected?.family);
      const parsed = parseBlockVector(text, {
        family, fallback, A: this.number(INPUTS.a, 4), B: this.number(INPUTS.b, 1), presets: this.state.presets,
        blocks: this.blocksFor(family ?? fallback),
      });
      const idx = layoutIndex(this.state.layouts, parsed.family ?? fallback, parsed.ids.length);
      if (idx >= 0) this.setLayout(idx);
      this.state.values = parsed.values.map((v, i) => (v === null ? parsed.tokens[i] : v));
      this.showValues();
    } catch (e) {
      this.err.textContent = String(e?.message ?? e);
    }
    resizeNode(this.app, this.node);
  }

  /** A run report: the model's family and block counts become that family's layout. */
  detect(report) {
    const found = detectedLayout(report);
    if (!found || JSON.stringify(found) === JSON.stringify(this.state.detected)) return;
    const { family } = this.current();
    this.state.detected = found;
    this.state.layouts = editorLayouts(found);
    fillLayoutMenu(this.layoutSel, this.state.layouts);
    this.state.inputs = [];
    this.setLayout(Math.max(0, this.state.layouts.findIndex((l) => l.family === family)));
    this.readText();
  }

  /** The layout menu: all ones in the new layout, written back. */
  chooseLayout(index) {
    this.setLayout(index);
    this.state.values = this.current().ids.map(() => 1);
    this.showValues(); this.writeBack(); resizeNode(this.app, this.node);
  }

  /** The preset menu: that preset's vector on the sliders and in block_vector. */
  choosePreset(name) {
    if (!name) return;
    this.textWidget.value = { ...DIT_PRESETS, ...this.state.presets }[name] ?? name;
    this.readText(); this.writeBack();
    this.presetSel.value = "";
  }

  /** Follow the node's widgets (unless the editor itself is writing), run reports and re-opened workflows. */
  follow() {
    const reread = () => { if (!this.state.writing) this.readText(); };
    const others = (this.node.widgets ?? []).filter((x) => x.name === INPUTS.a || x.name === INPUTS.b);
    for (const w of [this.textWidget, this.presetWidget, this.familyWidget, ...others]) if (w) chain(w, "callback", reread);
    chain(this.node, "onConfigure", () => setTimeout(() => this.readText(), 0));
    chain(this.node, "onExecuted", (message) => this.detect(reportFromMessage(message)));
  }
}

/**
 * Add the block-weight editor to `node`, editing its `vectorInput` widget. Nothing when the node has
 * no such widget or the frontend no addDOMWidget. Sets `node.lokrEditor = {state, element, readText}`.
 */
export function setupEditor(app, api, node, vectorInput) {
  const textWidget = findWidget(node, vectorInput);
  if (!textWidget || typeof node.addDOMWidget !== "function") return;
  const editor = new BlockEditor(app, node, textWidget);
  mountDOMWidget(node, "lokr_block_editor", editor.root);
  editor.follow();
  editor.setLayout(0);
  editor.state.values = editor.current().ids.map(() => 1);
  editor.showValues();
  setTimeout(() => { editor.readText(); resizeNode(app, node); }, 0);
  fetchPresets(api).then((presets) => {
    editor.state.presets = presets;
    editor.fillPresets();
    editor.readText();
  }).catch(() => { /* no presets: sliders still work */ });
  node.lokrEditor = { state: editor.state, element: editor.root, readText: () => editor.readText() };
}
