// Text of a /lokr/info summary (lokr_core.ops.report.summarize) and of a run report (ui.lokr_report):
// panel rows, the stack panel's one-line form, trigger words, warnings.
import { familyLabel } from "./family.js";
import { formatCount, formatCounts, formatNumber, formatTally } from "./format.js";

function pick(obj, ...keys) {
  for (const k of keys) {
    if (obj && obj[k] !== undefined && obj[k] !== null) return obj[k];
  }
  return undefined;
}

function count(value) {
  if (typeof value === "number") return value;
  if (Array.isArray(value)) return value.length;
  if (value && typeof value === "object") return Object.keys(value).length;
  return undefined;
}

function formatAlgo(args) {
  if (!args) return undefined;
  let obj = args;
  if (typeof args === "string") {
    try { obj = JSON.parse(args); } catch { return args; }
  }
  if (!obj || typeof obj !== "object") return String(args);
  return Object.entries(obj).map(([k, v]) => `${k}=${v}`).join(" ");
}

/** The family id of a summary ("sd1", "sdxl", ...; undefined when it names none). */
export function summaryFamily(summary) {
  return pick(summary, "family", "model_family");
}

/** The family label of a summary: the server's `family_label`, else the label of its family id. */
export function summaryFamilyLabel(summary) {
  return pick(summary, "family_label") ?? familyLabel(summaryFamily(summary));
}

/**
 * Trigger words from a summary: `metadata.trigger_words` (or `trigger_words`), else the most
 * frequent training tags (`metadata.top_tags` [[tag, count]] or a raw `tag_frequency`).
 */
export function triggerWords(summary, limit = 12) {
  if (!summary) return [];
  const given = summary.metadata?.trigger_words ?? summary.trigger_words;
  if (Array.isArray(given) && given.length) return given.slice(0, limit).map(String);
  const top = summary.metadata?.top_tags ?? summary.top_tags;
  if (Array.isArray(top) && top.length) return top.slice(0, limit).map((t) => String(Array.isArray(t) ? t[0] : t));
  const freq = summary.tag_frequency ?? summary.metadata?.tag_frequency;
  if (freq && typeof freq === "object") {
    const totals = {};
    for (const v of Object.values(freq)) {
      if (v && typeof v === "object") for (const [tag, c] of Object.entries(v)) totals[tag] = (totals[tag] ?? 0) + Number(c);
    }
    return Object.entries(totals).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).slice(0, limit).map(([t]) => t);
  }
  return [];
}

/** True when the file names its trigger words (not just training tags): the tag list's label. */
export function hasTriggerWords(summary) {
  const given = summary?.metadata?.trigger_words ?? summary?.trigger_words;
  return Array.isArray(given) && given.length > 0;
}

/** Scale per module as text ("0.5 ×128, 1 ×12", or one value), "" when the summary has none. */
export function scaleText(summary) {
  let scale = formatTally(pick(summary, "scale_values"), (k) => formatNumber(k));
  const scales = pick(summary, "scales");
  if (!scale && scales !== undefined && typeof scales !== "object") scale = formatNumber(scales);
  return scale;
}

/**
 * Panel rows [{label, text}] from a /lokr/info summary: family, modules per block, layouts, ranks,
 * scale rule and scales, base model, algorithm arguments, DoRA and non-LoKr modules. Missing
 * fields are skipped.
 */
export function summaryRows(summary) {
  if (!summary || typeof summary !== "object") return [];
  const rows = [];
  const add = (label, text) => { if (text !== undefined && text !== null && text !== "") rows.push({ label, text: String(text) }); };
  const training = summary.metadata?.training ?? {};
  add("Family", summaryFamilyLabel(summary));
  const n = pick(summary, "module_count") ?? count(summary.modules);
  const blocks = pick(summary, "blocks", "modules_per_block");
  const params = pick(summary, "params");
  if (n !== undefined) {
    add("Modules", `${n}${blocks ? ` (${formatCounts(blocks, false)})` : ""}${params ? `, ${formatCount(params)} params` : ""}`);
  }
  add("Layouts", formatCounts(pick(summary, "layouts")));
  const ranks = pick(summary, "ranks");
  add("Rank", Array.isArray(ranks) ? ranks.map((r) => formatNumber(r)).join(", ") : formatTally(ranks));
  const rule = pick(summary, "scale_rule");
  add("Scale", [scaleText(summary), rule !== undefined ? `(rule: ${rule})` : ""].filter(Boolean).join(" "));
  const dim = training.ss_network_dim, alpha = training.ss_network_alpha;
  if (dim !== undefined || alpha !== undefined) add("Trained", `dim ${dim ?? "?"}, alpha ${alpha ?? "?"}`);
  add("Base model", pick(summary, "base_model") ?? pick(training, "ss_sd_model_name", "modelspec.architecture", "ss_base_model_version"));
  add("Algorithm", formatAlgo(pick(training, "ss_network_args")) ?? pick(training, "ss_network_module"));
  const dora = pick(summary, "dora");
  if (dora) add("DoRA", `${dora} modules`);
  const other = pick(summary, "other_modules");
  if (other && typeof other === "object" && Object.keys(other).length) add("Not LoKr", formatCounts(other));
  return rows;
}

/**
 * One compact line of a summary for the stack panel: {family (label), text ("40 modules · split: 36,
 * full: 4 · scale 1"), words (first `maxWords` trigger words or top tags), explicit (trigger words
 * named by the file)}.
 */
export function compactSummary(summary, maxWords = 3) {
  if (!summary || typeof summary !== "object") return { family: familyLabel(null), text: "", words: [], explicit: false };
  const parts = [];
  const n = pick(summary, "module_count") ?? count(summary.modules);
  if (n !== undefined) parts.push(`${n} module${n === 1 ? "" : "s"}`);
  const layouts = formatCounts(pick(summary, "layouts"));
  if (layouts) parts.push(layouts);
  const scale = scaleText(summary);
  if (scale) parts.push(`scale ${scale}`);
  return {
    family: summaryFamilyLabel(summary),
    text: parts.join(" · "),
    words: triggerWords(summary, maxWords),
    explicit: hasTriggerWords(summary),
  };
}

/** Warnings of a summary or report as a list of strings (`warnings` list or string). */
export function warningsOf(summary) {
  const w = summary?.warnings;
  if (!w) return [];
  return (Array.isArray(w) ? w : [w]).map(String);
}

/** A badge text: "⚠ " and `text`, cut to 40 characters. */
export function warningBadgeText(text) {
  return "⚠ " + (text.length > 40 ? text.slice(0, 38) + "…" : text);
}

/**
 * Rows for the run report the node returned (onExecuted): matched / unmatched / shape mismatches /
 * skipped, the first few unmatched names (with their nearest weight when the report has `nearest`)
 * and skipped modules with their reasons. Accepts counts or mappings.
 */
export function reportRows(report, maxNames = 5) {
  if (!report || typeof report !== "object") return [];
  const rows = [];
  const matched = count(report.matched);
  const unmatched = count(report.unmatched);
  const mismatch = count(report.shape_mismatch ?? report.shape_mismatches);
  const total = count(report.total ?? report.modules);
  if (matched !== undefined) rows.push({ label: "Matched", text: total ? `${matched} / ${total}` : String(matched) });
  if (unmatched !== undefined) rows.push({ label: "Unmatched", text: String(unmatched), warn: unmatched > 0 });
  if (mismatch !== undefined) rows.push({ label: "Shape mismatch", text: String(mismatch), warn: mismatch > 0 });
  const names = Array.isArray(report.unmatched) ? report.unmatched
    : (report.unmatched && typeof report.unmatched === "object" ? Object.keys(report.unmatched) : []);
  const more = (list) => (list.length > maxNames ? ` … +${list.length - maxNames}` : "");
  if (names.length) {
    const near = report.nearest && typeof report.nearest === "object" ? report.nearest : {};
    const shown = names.slice(0, maxNames).map((n) => (near[n]?.length ? `${n} (nearest: ${near[n][0]})` : n));
    rows.push({ label: "Not applied", text: shown.join(", ") + more(names), warn: true });
  }
  const skipped = report.skipped && typeof report.skipped === "object" && !Array.isArray(report.skipped)
    ? Object.entries(report.skipped) : [];
  if (skipped.length) {
    rows.push({ label: "Skipped", text: skipped.slice(0, maxNames).map(([n, why]) => `${n}: ${why}`).join("; ")
      + more(skipped), warn: true });
  }
  return rows;
}
