// LoKr Power Loader's rows editor: one line per row (on / off, preview, file, move, remove), one with
// the strengths (clip linked to model by default) and the block preset, then the trigger words and
// the last run's status. The node's `rows` STRING widget holds the rows as JSON and stays the one
// source of truth (saved with the workflow, sent in the API prompt); its textarea is hidden and every
// edit here writes it. Row logic: logic/power_rows.js.
import {
  addRow, baseName, dropIndex, fileFlag, filesByName, filterFiles, folderOf, groupFiles, modelFamilyOf, moveRow,
  moveRowTo, parseRows, powerFromMessage, presetChoices, removeRow, rowStatus, serializeRows, setBlocks, setFile,
  setLinked, setStrength, statusText, toggleRow,
} from "../logic/power_rows.js";
import { sidecarView } from "../logic/sidecar.js";
import { el } from "../common/dom.js";
import { chain } from "../common/hooks.js";
import { fetchFiles, fetchPresets, fetchSidecar, routeUrl } from "../common/lokr_api.js";
import { findWidget, mountDOMWidget, resizeNode } from "../common/node_widget.js";
import { tagChips } from "../common/parts.js";

const MAX_WORDS = 4;  // trigger words shown per row
const NEW_ROW = -1;   // picker index of "+ Add LoKr"

/** A small button with `text`, tooltip `title` and a `data-lokr` tag, calling `fn` on click. */
function button(text, title, tag, fn, cls = "lokr-pw-btn") {
  const b = el("button", cls, text);
  b.type = "button";
  b.title = title;
  b.dataset.lokr = tag;
  b.addEventListener("click", (ev) => { ev.stopPropagation(); ev.preventDefault(); fn(); });
  return b;
}

/** A number input for a strength (step 0.05), calling `fn(value)` when it changes. */
function strengthInput(value, title, tag, fn) {
  const input = el("input", "lokr-pw-num");
  Object.assign(input, { type: "number", step: "0.05", value: String(value), title });
  input.dataset.lokr = tag;
  input.addEventListener("change", () => fn(input.value));
  input.addEventListener("keydown", (ev) => ev.stopPropagation());  // no canvas shortcuts while typing
  return input;
}

/**
 * Add the rows editor to `node` for its `rowsInput` STRING widget (hidden from then on). Nothing
 * when the node has no such widget or the frontend no addDOMWidget. Sets `node.lokrPowerPanel =
 * {refresh, state, element}`.
 */
export function setupPowerPanel(app, api, node, rowsInput) {
  const rowsWidget = findWidget(node, rowsInput);
  if (!rowsWidget || typeof node.addDOMWidget !== "function") return;
  rowsWidget.hidden = true;  // the textarea: drawn by neither renderer, still saved and sent
  if (rowsWidget.options) rowsWidget.options.hidden = true;
  const root = el("div", "lokr-panel lokr-power");
  root.dataset.lokr = "power-panel";
  const state = {
    rows: [], error: null, files: null, filesError: null, presets: {}, power: null,
    sidecars: new Map(),  // file -> {view} (logic/sidecar.js sidecarView) | {error} | {pending}
    picker: null, query: "",  // row index the file picker is open for (NEW_ROW: a new row), its filter text
  };
  mountDOMWidget(node, "lokr_power_rows", root);

  const byName = () => filesByName(state.files ?? []);

  /** Write `rows` to the widget (the saved value) and show them. */
  function write(rows) {
    state.rows = rows;
    state.error = null;
    const text = serializeRows(rows);
    if (rowsWidget.value !== text) {
      rowsWidget.value = text;
      app?.graph?.setDirtyCanvas?.(true, true);
      node.graph?.change?.();
    }
    show();
  }

  function loadFiles() {
    fetchFiles(api).then((b) => { state.files = b.files; state.filesError = null; },
      (e) => { state.filesError = String(e?.message ?? e); }).finally(show);
  }

  function readSidecars() {
    for (const r of state.rows) {
      if (!r.file || state.sidecars.has(r.file)) continue;
      const entry = { pending: true };
      state.sidecars.set(r.file, entry);
      fetchSidecar(api, r.file).then((b) => { entry.view = sidecarView(b); }, (e) => { entry.error = String(e?.message ?? e); })
        .finally(() => { entry.pending = false; if (state.sidecars.get(r.file) === entry) show(); });
    }
  }

  function openPicker(index) {
    state.picker = state.picker === index ? null : index;
    state.query = "";
    if (state.picker !== null && !state.files) loadFiles();
    show();
    root.querySelector("[data-lokr=power-filter]")?.focus();
  }

  function pick(file) {
    const index = state.picker;
    state.picker = null;
    write(index === NEW_ROW ? addRow(state.rows, file) : setFile(state.rows, index, file));
    readSidecars();
  }

  /** The picker's file list for the current filter: group headings and files (other families flagged). */
  function fileList(model) {
    const list = el("div", "lokr-pw-list");
    list.dataset.lokr = "power-files";
    if (state.filesError) { list.appendChild(el("div", "lokr-err", state.filesError)); return list; }
    if (!state.files) { list.appendChild(el("div", "lokr-muted", "reading the file list …")); return list; }
    const groups = groupFiles(filterFiles(state.files, state.query));
    if (!groups.length) list.appendChild(el("div", "lokr-muted", "no file matches"));
    for (const g of groups) {
      if (g.folder) list.appendChild(el("div", "lokr-pw-folder", g.folder + "/"));
      for (const f of g.files) {
        const item = el("div", "lokr-pw-item", baseName(f.name));
        item.dataset.lokr = "power-file";
        item.dataset.file = f.name;
        const flag = fileFlag(f, model);
        item.title = flag ? `${f.name}: ${flag}` : `${f.name} (${f.family_label || f.family || "family unknown"}, ${f.kind ?? "?"})`;
        if (flag) { item.classList.add("lokr-pw-other"); item.dataset.flag = "family"; }
        item.addEventListener("click", (ev) => { ev.stopPropagation(); pick(f.name); });
        list.appendChild(item);
      }
    }
    return list;
  }

  /** The file picker: a filter box over the grouped list; Enter picks the first match, Escape closes. */
  function picker(model) {
    const box = el("div", "lokr-pw-picker");
    box.dataset.lokr = "power-picker";
    const filter = el("input", "lokr-pw-filter");
    Object.assign(filter, { type: "search", placeholder: "filter files …", value: state.query });
    filter.dataset.lokr = "power-filter";
    let list = fileList(model);
    filter.addEventListener("input", () => {
      state.query = filter.value;
      const next = fileList(model);
      list.replaceWith(next);
      list = next;
      resizeNode(app, node);
    });
    filter.addEventListener("keydown", (ev) => {
      ev.stopPropagation();
      if (ev.key === "Escape") { state.picker = null; show(); }
      if (ev.key === "Enter") { const first = filterFiles(state.files ?? [], state.query)[0]; if (first) pick(first.name); }
    });
    box.append(filter, list);
    return box;
  }

  /** A handle that drags row `i` up or down (pointer events, so neither renderer drags the node). */
  function dragHandle(i) {
    const handle = el("span", "lokr-pw-drag", "⠿");
    handle.title = "Drag to move this row";
    handle.dataset.lokr = "power-drag";
    handle.addEventListener("pointerdown", (ev) => {
      ev.stopPropagation();
      ev.preventDefault();
      const rows = [...root.querySelectorAll("[data-lokr=power-row]")];
      const mids = rows.map((r) => { const b = r.getBoundingClientRect(); return b.top + b.height / 2; });
      rows[i]?.classList.add("lokr-pw-dragging");
      const end = (up) => {
        handle.removeEventListener("pointerup", end);
        handle.removeEventListener("pointercancel", end);
        try { handle.releasePointerCapture(ev.pointerId); } catch (_) { /* already released */ }
        rows[i]?.classList.remove("lokr-pw-dragging");
        if (up.type === "pointerup") write(moveRowTo(state.rows, i, dropIndex(mids, i, up.clientY)));
      };
      try { handle.setPointerCapture(ev.pointerId); } catch (_) { /* synthetic events */ }
      handle.addEventListener("pointerup", end);
      handle.addEventListener("pointercancel", end);
    });
    return handle;
  }

  /** The element of row `i`. */
  function rowElement(r, i, model) {
    const row = el("div", "lokr-pw-row" + (r.on ? "" : " lokr-pw-offrow"));
    row.dataset.lokr = "power-row";
    row.dataset.index = String(i);
    const head = el("div", "lokr-pw-head");
    head.appendChild(dragHandle(i));
    const on = el("input", "lokr-pw-on");
    Object.assign(on, { type: "checkbox", checked: r.on, title: r.on ? "On: click to skip this row" : "Off: click to apply this row" });
    on.dataset.lokr = "power-on";
    on.addEventListener("change", () => write(toggleRow(state.rows, i, on.checked)));
    head.appendChild(on);
    const view = state.sidecars.get(r.file)?.view;
    if (view?.preview) {
      const img = el("img", "lokr-pw-thumb");
      img.src = routeUrl(api, view.preview);
      img.alt = "";
      img.title = [view.title, view.baseModel].filter(Boolean).join(" · ");
      img.dataset.lokr = "power-preview";
      head.appendChild(img);
    }
    const name = button(r.file ? baseName(r.file) : "choose a file …", r.file || "Choose a file", "power-file-button",
      () => openPicker(i), "lokr-pw-name");
    const folder = folderOf(r.file);
    if (folder) name.prepend(el("span", "lokr-muted", folder + "/"));
    head.appendChild(name);
    const entry = byName().get(r.file);
    const flag = fileFlag(entry, model);
    if (flag) {
      const badge = el("span", "lokr-badge lokr-bad", "⚠");
      badge.title = flag;
      badge.dataset.lokr = "power-flag";
      head.appendChild(badge);
    }
    if (r.file && state.files && !entry) {
      const badge = el("span", "lokr-badge lokr-bad", "missing");
      badge.title = `${r.file} is not in the loras folders`;
      head.appendChild(badge);
    }
    head.append(
      button("▲", "Move up", "power-up", () => write(moveRow(state.rows, i, -1))),
      button("▼", "Move down", "power-down", () => write(moveRow(state.rows, i, 1))),
      button("✕", "Remove this row", "power-remove", () => write(removeRow(state.rows, i))),
    );
    row.appendChild(head);

    const line = el("div", "lokr-pw-line");
    line.appendChild(el("span", "lokr-muted", "model"));
    line.appendChild(strengthInput(r.strength_model, "Model strength", "power-model",
      (v) => write(setStrength(state.rows, i, "model", v))));
    const link = button(r.linked ? "=" : "≠", r.linked ? "Clip strength follows model strength: click to set it apart"
      : "Clip strength set apart: click to link it to model strength", "power-link",
    () => write(setLinked(state.rows, i, !r.linked)), "lokr-pw-btn lokr-pw-link" + (r.linked ? " lokr-pw-linked" : ""));
    line.appendChild(link);
    line.appendChild(el("span", "lokr-muted", "clip"));
    const clip = strengthInput(r.strength_clip, "Clip strength (editing it unlinks the row)", "power-clip",
      (v) => write(setStrength(state.rows, i, "clip", v)));
    if (r.linked) clip.classList.add("lokr-pw-follow");
    line.appendChild(clip);
    const blocks = el("select", "lokr-pw-blocks");
    blocks.title = "Block-weight preset for this row";
    blocks.dataset.lokr = "power-blocks";
    for (const c of presetChoices(state.presets, r.blocks)) {
      const o = el("option", null, c.label);
      o.value = c.value;
      blocks.appendChild(o);
    }
    blocks.value = r.blocks;
    blocks.addEventListener("change", () => write(setBlocks(state.rows, i, blocks.value)));
    line.appendChild(blocks);
    row.appendChild(line);

    const words = (view?.words ?? []).slice(0, MAX_WORDS);
    const chips = tagChips(words, null);
    if (chips) { chips.dataset.lokr = "power-words"; row.appendChild(chips); }
    const status = statusText(rowStatus(state.power, i, r), flag);
    if (status) {
      const s = el("div", "lokr-pw-status" + (status.bad ? " lokr-warn" : ""), "last run: " + status.text);
      s.dataset.lokr = "power-status";
      row.appendChild(s);
    }
    if (state.picker === i) row.appendChild(picker(model));
    return row;
  }

  function show() {
    const model = modelFamilyOf(state.power, state.rows, byName());
    const parts = [];
    if (state.error) parts.push(el("div", "lokr-err", state.error));
    state.rows.forEach((r, i) => parts.push(rowElement(r, i, model)));
    if (!state.rows.length && !state.error) parts.push(el("div", "lokr-muted", "No rows: add a LoKr or LoRA file"));
    const foot = el("div", "lokr-pw-foot");
    foot.appendChild(button("+ Add LoKr", "Add a row (pick its file)", "power-add", () => openPicker(NEW_ROW), "lokr-pw-add"));
    if (model.family) {
      const fam = el("span", "lokr-muted", `model: ${model.label}${model.source === "rows" ? " (most rows)" : " (last run)"}`);
      fam.dataset.lokr = "power-model-family";
      foot.appendChild(fam);
    }
    parts.push(foot);
    if (state.picker === NEW_ROW) parts.push(picker(model));
    root.replaceChildren(...parts);
    resizeNode(app, node);
  }

  /** Read the widget text again (after a workflow load or an outside edit) and show it. */
  function refresh() {
    const { rows, error } = parseRows(rowsWidget.value);
    state.rows = rows;
    state.error = error;
    readSidecars();
    show();
  }

  chain(rowsWidget, "callback", () => refresh());
  chain(node, "onConfigure", () => setTimeout(refresh, 0));
  chain(node, "onExecuted", (message) => {
    const power = powerFromMessage(message);
    if (power) { state.power = power; show(); }
  });
  fetchPresets(api).then((p) => { state.presets = p; show(); }, () => {});
  loadFiles();
  node.lokrPowerPanel = { refresh, state, element: root };
  setTimeout(refresh, 0);
}
