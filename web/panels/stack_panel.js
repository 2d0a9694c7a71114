// The LoKr Stack panel: one compact row per chosen slot (family, modules, layouts, scale, first
// trigger words); a file chosen in several slots is read once.
import { stackSelection } from "../logic/stack.js";
import { compactSummary } from "../logic/summary.js";
import { el } from "../common/dom.js";
import { chain } from "../common/hooks.js";
import { fetchInfo } from "../common/lokr_api.js";
import { findWidget, mountDOMWidget, resizeNode } from "../common/node_widget.js";
import { familyBadge, tagChips } from "../common/parts.js";

/** The row of slot `slot` holding `file`, from its read state `info` ({summary} | {error} | {pending}). */
function stackRow(slot, file, info) {
  const row = el("div", "lokr-stack-row");
  row.dataset.lokr = "stack-row";
  row.dataset.slot = String(slot);
  const head = el("div", "lokr-head");
  const name = el("span", "lokr-stack-file", `${slot}. ${file}`);
  name.title = file;
  head.appendChild(name);
  row.appendChild(head);
  if (info?.error) row.appendChild(el("div", "lokr-err", info.error));
  else if (!info?.summary) head.appendChild(el("span", "lokr-muted", "reading …"));
  else {
    const line = compactSummary(info.summary);
    head.appendChild(familyBadge(info.summary));
    if (line.text) head.appendChild(el("span", "lokr-stack-line", line.text));
    const tags = tagChips(line.words, null);
    if (tags) { tags.title = `${line.explicit ? "Trigger words" : "Top tags"}: click one to copy it`; row.appendChild(tags); }
  }
  return row;
}

/**
 * Add the stack panel to `node` for its file slots `slotNames` (lokr_1, lokr_2, ...); it updates
 * when any slot changes. Nothing without slot widgets or addDOMWidget. Sets
 * `node.lokrStackPanel = {refresh, state, element}`.
 */
export function setupStackPanel(app, api, node, slotNames) {
  const slotWidgets = slotNames.map((n) => findWidget(node, n)).filter(Boolean);
  if (!slotWidgets.length || typeof node.addDOMWidget !== "function") return;
  const root = el("div", "lokr-panel lokr-stack");
  root.dataset.lokr = "stack-panel";
  const state = { infos: new Map(), selection: [] };  // file -> {summary, error} | {pending}
  mountDOMWidget(node, "lokr_stack_panel", root);

  function show() {
    if (!state.selection.length) root.replaceChildren(el("span", "lokr-muted", "No LoKr files selected"));
    else root.replaceChildren(...state.selection.map(({ slot, file }) => stackRow(slot, file, state.infos.get(file))));
    resizeNode(app, node);
  }

  function read(file) {
    const info = { pending: true };
    state.infos.set(file, info);
    fetchInfo(api, file).then((body) => { info.summary = body; }, (e) => { info.error = String(e?.message ?? e); })
      .finally(() => {
        info.pending = false;
        if (state.infos.get(file) === info) show();
      });
  }

  function refresh() {
    state.selection = stackSelection(node.widgets ?? []);
    const chosen = new Set(state.selection.map((e) => e.file));
    for (const file of [...state.infos.keys()]) {  // forget unselected files (and errors: retried next time)
      if (!chosen.has(file)) state.infos.delete(file);
    }
    for (const file of chosen) if (!state.infos.has(file)) read(file);
    show();
  }

  for (const w of slotWidgets) chain(w, "callback", () => refresh());
  chain(node, "onConfigure", () => setTimeout(refresh, 0));
  node.lokrStackPanel = { refresh, state, element: root };
  setTimeout(refresh, 0);
}
