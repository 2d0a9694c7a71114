// The summary panel on nodes with a `lokr_name` input: family, modules, layouts, scale, trigger
// words, warnings, a family-mismatch badge and the last run's report.
import { familyFromCheckpointName, familyView } from "../logic/family.js";
import { reportFromMessage } from "../logic/node_ui.js";
import { hasTriggerWords, reportRows, summaryRows, triggerWords, warningsOf } from "../logic/summary.js";
import { el } from "../common/dom.js";
import { upstreamCheckpoint, watchWhileInGraph } from "../common/graph.js";
import { chain } from "../common/hooks.js";
import { fetchInfo } from "../common/lokr_api.js";
import { findWidget, mountDOMWidget, resizeNode } from "../common/node_widget.js";
import { familyBadge, rowsTable, tagChips, warningBadge } from "../common/parts.js";

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

/** Fill `root` from the panel `state` ({file, summary, error, report, modelFamily}). */
function renderPanel(root, state) {
  root.replaceChildren();
  if (!state.file) { root.appendChild(noteLine("No LoKr file selected")); return; }
  if (state.error) { root.append(el("div", "lokr-head"), el("div", "lokr-err", state.error)); return; }
  if (!state.summary) { root.appendChild(noteLine("Reading " + state.file + " …")); return; }
  const s = state.summary;
  root.appendChild(headLine(s, familyView(s, state.report, state.modelFamily)));
  root.appendChild(rowsTable(summaryRows(s).filter((r) => r.label !== "Family")));
  const tags = tagChips(triggerWords(s), hasTriggerWords(s) ? "Trigger words" : "Top tags");
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
  const state = { file: null, summary: null, error: null, report: null, modelFamily: null, seq: 0 };
  mountDOMWidget(node, "lokr_panel", root);
  const show = () => { renderPanel(root, state); resizeNode(app, node); };

  async function refresh() {
    const name = fileWidget.value;
    if (name === state.file && (state.summary || state.error)) return;
    const seq = ++state.seq;
    Object.assign(state, { file: name || null, summary: null, error: null, report: null });
    show();
    if (!name) return;
    try {
      const body = await fetchInfo(api, name);
      if (seq !== state.seq) return;
      state.summary = body;
    } catch (e) {
      if (seq !== state.seq) return;
      state.error = String(e?.message ?? e);
    }
    show();
  }

  function checkModel() {
    const fam = familyFromCheckpointName(upstreamCheckpoint(app, node));
    if (fam !== state.modelFamily) { state.modelFamily = fam; if (state.summary) renderPanel(root, state); }
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
