// The summary panel on nodes with a `lokr_name` input: preview, title and source link (sidecar files),
// family, modules, layouts, scale, trigger words, warnings, a family-mismatch badge and the last run's report.
import { familyFromCheckpointName, familyView } from "../logic/family.js";
import { reportFromMessage } from "../logic/node_ui.js";
import { panelTags, sidecarView, withSidecarRows } from "../logic/sidecar.js";
import { reportRows, summaryRows, warningsOf } from "../logic/summary.js";
import { el } from "../common/dom.js";
import { upstreamCheckpoint, watchWhileInGraph } from "../common/graph.js";
import { chain } from "../common/hooks.js";
import { fetchInfo, fetchSidecar, routeUrl } from "../common/lokr_api.js";
import { findWidget, mountDOMWidget, resizeNode } from "../common/node_widget.js";
import { familyBadge, rowsTable, tagChips, warningBadge } from "../common/parts.js";
import { sidecarBlock } from "../common/sidecar_block.js";

/** The head line: family badge, mismatch badge (when the model's family differs), first two warnings.
 *  `view`: logic/family.js familyView (file and model families, labels, mismatch text). */
function headLine(summary, view) {
  const head = el("div", "lokr-head");
  head.appendChild(familyBadge(view.fileLabel));
  const mismatch = view.mismatch;
  if (mismatch) {
    const badge = el("span", "lokr-badge lokr-bad", `⚠ family mismatch: model is ${view.modelLabel}`);
    badge.title = mismatch;
    badge.dataset.lokr = "mismatch";
    head.appendChild(badge);
  }
  for (const w of warningsOf(summary).slice(0, 2)) head.appendChild(warningBadge(w));
  return head;
}

/** The "Last run" block of a run report. */
function runBlock(report) {
  const run = el("div", "lokr-run");
  run.dataset.lokr = "report";
  run.appendChild(el("div", "lokr-muted", "Last run"));
  run.appendChild(rowsTable(reportRows(report)));
  return run;
}

/** A head line holding only the muted `text` (no file, or the file still being read). */
function noteLine(text) {
  const head = el("div", "lokr-head");
  head.appendChild(el("span", "lokr-muted", text));
  return head;
}

/** Fill `root` from the panel `state` ({file, summary, sidecar, error, report, modelFamily}); `src` and
 *  `fit`: the sidecar block's preview address and after-load callbacks. */
function renderPanel(root, state, src, fit) {
  root.replaceChildren();
  if (!state.file) { root.appendChild(noteLine("No LoKr file selected")); return; }
  if (state.error) { root.append(el("div", "lokr-head"), el("div", "lokr-err", state.error)); return; }
  if (!state.summary) { root.appendChild(noteLine("Reading " + state.file + " …")); return; }
  const s = state.summary;
  const side = sidecarView(state.sidecar);
  root.appendChild(headLine(s, familyView(s, state.report, state.modelFamily)));
  const block = sidecarBlock(side, src, fit);
  if (block) root.appendChild(block);
  root.appendChild(rowsTable(withSidecarRows(summaryRows(s).filter((r) => r.label !== "Family"), side)));
  const { words, label } = panelTags(s, side);
  const tags = tagChips(words, label);
  if (tags) root.appendChild(tags);
  if (state.report) root.appendChild(runBlock(state.report));
}

/**
 * Add the summary panel to `node` under its widgets; it reads the file named by the `fileInput`
 * widget and follows that widget, the node's links and its run reports. Nothing when the node has
 * no such widget or the frontend no addDOMWidget. Sets `node.lokrPanel = {refresh, state, element}`.
 */
export function setupPanel(app, api, node, fileInput) {
  const fileWidget = findWidget(node, fileInput);
  if (!fileWidget || typeof node.addDOMWidget !== "function") return;
  const root = el("div", "lokr-panel");
  root.dataset.lokr = "panel";
  const state = { file: null, summary: null, sidecar: null, error: null, report: null, modelFamily: null, seq: 0 };
  mountDOMWidget(node, "lokr_panel", root);
  const src = (route) => routeUrl(api, route);
  const fit = () => resizeNode(app, node);
  const show = () => { renderPanel(root, state, src, fit); fit(); };

  async function refresh() {
    const name = fileWidget.value;
    if (name === state.file && (state.summary || state.error)) return;
    const seq = ++state.seq;
    Object.assign(state, { file: name || null, summary: null, sidecar: null, error: null, report: null });
    show();
    if (!name) return;
    try {
      const [body, sidecar] = await Promise.all([fetchInfo(api, name), fetchSidecar(api, name).catch(() => null)]);
      if (seq !== state.seq) return;
      Object.assign(state, { summary: body, sidecar });
    } catch (e) {
      if (seq !== state.seq) return;
      state.error = String(e?.message ?? e);
    }
    show();
  }

  function checkModel() {
    const fam = familyFromCheckpointName(upstreamCheckpoint(app, node));
    if (fam !== state.modelFamily) { state.modelFamily = fam; if (state.summary) renderPanel(root, state, src, fit); }
  }

  chain(fileWidget, "callback", () => refresh());
  chain(node, "onConfigure", () => setTimeout(refresh, 0));
  chain(node, "onConnectionsChange", checkModel);
  watchWhileInGraph(node, checkModel, 1000);
  chain(node, "onExecuted", (message) => {
    const report = reportFromMessage(message);
    if (report) { state.report = report; show(); }
  });
  node.lokrPanel = { refresh, state, element: root };
  setTimeout(refresh, 0);
}
