// The block-weight editor on LoKr Block Weights: a layout menu, a preset menu and one slider per
// block. Sliders and presets write `block_vector` (and switch `preset` to custom); the node's
// block_vector / preset / family / A / B widgets move the sliders.
import {
  EDITOR_LAYOUTS, SLIDER, blockIds, formatVector, layoutIndex, layoutLabel, parseBlockVector, presetsFor,
} from "../logic/block_vector.js";
import { formatNumber } from "../logic/format.js";
import { CUSTOM_PRESET, INPUTS, parseFamily, vectorText } from "../logic/node_ui.js";
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

/** One slider row for block `id`: {row, input, val}; `onInput(number)` on each move. */
function sliderRow(id, onInput) {
  const row = el("div", "lokr-bw-row");
  const input = el("input");
  Object.assign(input, { type: "range", min: SLIDER.min, max: SLIDER.max, step: SLIDER.step });
  const val = el("span", "lokr-bw-val");
  input.addEventListener("input", () => {
    val.textContent = formatNumber(Number(input.value), 2);
    onInput(Number(input.value));
  });
  input.addEventListener("pointerdown", stopPointer);
  row.append(el("span", "lokr-bw-id", id), input, val);
  return { row, input, val };
}

/** The editor of one node; `state` = {layout, values, presets, inputs, writing}. */
class BlockEditor {
  constructor(app, node, textWidget) {
    Object.assign(this, { app, node, textWidget });
    this.presetWidget = findWidget(node, INPUTS.preset);
    this.familyWidget = findWidget(node, INPUTS.family);
    this.state = { layout: 0, values: [], presets: {}, inputs: [], writing: false };
    this.root = el("div", "lokr-bw");
    this.root.dataset.lokr = "block-editor";
    this.layoutSel = select("Vector layout (model family and number of values)",
      EDITOR_LAYOUTS.map((layout, i) => [String(i), layoutLabel(layout)]));
    this.presetSel = select("Block-weight presets (lokr_core)", []);
    const top = el("div", "lokr-bw-top");
    top.append(this.layoutSel, this.presetSel);
    this.grid = el("div", "lokr-bw-grid");
    this.err = el("div", "lokr-bw-err");
    this.root.append(top, this.grid, this.err);
    this.layoutSel.addEventListener("change", () => this.chooseLayout(Number(this.layoutSel.value)));
    this.presetSel.addEventListener("change", () => this.choosePreset(this.presetSel.value));
  }

  /** Value of the node's number widget `name`, or `dflt`. */
  number(name, dflt) {
    const v = Number(findWidget(this.node, name)?.value);
    return Number.isFinite(v) ? v : dflt;
  }

  /** The preset menu: the presets that fit the current layout. */
  fillPresets() {
    const [fam, n] = EDITOR_LAYOUTS[this.state.layout];
    this.presetSel.replaceChildren(el("option", null, "preset…"));
    this.presetSel.firstChild.value = "";
    for (const name of Object.keys(presetsFor(this.state.presets, fam, n))) {
      const o = el("option", null, name);
      o.value = name;
      this.presetSel.appendChild(o);
    }
  }

  /** One slider per block of the current layout: inputs and middle on the left, outputs on the right. */
  buildSliders() {
    const [fam, n] = EDITOR_LAYOUTS[this.state.layout];
    this.grid.replaceChildren();
    const rows = { left: 0, right: 0 };
    this.state.inputs = blockIds(fam, n).map((id, i) => {
      const slider = sliderRow(id, (v) => { this.state.values[i] = v; this.writeBack(); });
      const side = id.startsWith("OUT") ? "right" : "left";
      slider.row.style.gridColumn = side === "left" ? "1" : "2";
      slider.row.style.gridRow = String(++rows[side]);
      this.grid.appendChild(slider.row);
      return slider;
    });
  }

  /** Put `state.values` on the sliders; R / U tokens show as text on a disabled slider. */
  showValues() {
    this.state.inputs.forEach(({ input, val }, i) => {
      const v = this.state.values[i];
      input.disabled = typeof v !== "number";
      input.value = typeof v === "number" ? String(v) : "1";
      val.textContent = typeof v === "number" ? formatNumber(v, 2) : String(v ?? "");
    });
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

  /** Move the sliders to the node's preset or block_vector (switching layout when the length says so). */
  readText() {
    const text = vectorText(this.presetWidget?.value, this.textWidget.value);
    this.err.textContent = "";
    if (!text) return;
    const [fam0] = EDITOR_LAYOUTS[this.state.layout];
    try {
      const parsed = parseBlockVector(text, {
        family: parseFamily(this.familyWidget?.value, text, fam0),
        A: this.number(INPUTS.a, 4), B: this.number(INPUTS.b, 1), presets: this.state.presets,
      });
      const idx = layoutIndex(parsed.family ?? fam0, parsed.ids.length);
      if (idx >= 0 && idx !== this.state.layout) {
        this.state.layout = idx;
        this.layoutSel.value = String(idx);
        this.buildSliders(); this.fillPresets();
      }
      this.state.values = parsed.values.map((v, i) => (v === null ? parsed.tokens[i] : v));
      this.showValues();
    } catch (e) {
      this.err.textContent = String(e?.message ?? e);
    }
    resizeNode(this.app, this.node);
  }

  /** The layout menu: all ones in the new layout, written back. */
  chooseLayout(index) {
    this.state.layout = index;
    this.buildSliders(); this.fillPresets();
    this.state.values = Array.from({ length: EDITOR_LAYOUTS[index][1] }, () => 1);
    this.showValues(); this.writeBack(); resizeNode(this.app, this.node);
  }

  /** The preset menu: that preset's vector on the sliders and in block_vector. */
  choosePreset(name) {
    if (!name) return;
    this.textWidget.value = this.state.presets[name];
    this.readText(); this.writeBack();
    this.presetSel.value = "";
  }

  /** Follow the node's widgets (unless the editor itself is writing) and re-opened workflows. */
  follow() {
    const reread = () => { if (!this.state.writing) this.readText(); };
    const others = (this.node.widgets ?? []).filter((x) => x.name === INPUTS.a || x.name === INPUTS.b);
    for (const w of [this.textWidget, this.presetWidget, this.familyWidget, ...others]) if (w) chain(w, "callback", reread);
    chain(this.node, "onConfigure", () => setTimeout(() => this.readText(), 0));
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
  editor.buildSliders(); editor.fillPresets();
  editor.state.values = blockIds(...EDITOR_LAYOUTS[editor.state.layout]).map(() => 1);
  editor.showValues();
  setTimeout(() => { editor.readText(); resizeNode(app, node); }, 0);
  fetchPresets(api).then((presets) => {
    editor.state.presets = presets;
    editor.fillPresets();
    editor.readText();
  }).catch(() => { /* no presets: sliders still work */ });
  node.lokrEditor = { state: editor.state, element: editor.root, readText: () => editor.readText() };
}
