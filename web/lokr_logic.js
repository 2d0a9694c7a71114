// Pure logic of the comfyui-lokr web extension: no DOM, no ComfyUI imports, so `node --test` can
// import it. Block-weight vectors follow lokr_core/block_weights.py (LOKR_SPEC section 7); the
// shared cases in tests/web/block_vectors.json are checked against both implementations.

/** Block IDs of each vector length, per model family (LDM numbering; BASE first). */
function range(prefix, from, to) {
  const out = [];
  for (let i = from; i <= to; i++) out.push(prefix + String(i).padStart(2, "0"));
  return out;
}

const SD_17 = ["BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "MID", ...range("OUT", 3, 11)];
const SD_26 = ["BASE", ...range("IN", 0, 11), "MID", ...range("OUT", 0, 11)];
const XL_12 = ["BASE", "IN04", "IN05", "IN07", "IN08", "MID", ...range("OUT", 0, 5)];
const XL_20 = ["BASE", ...range("IN", 0, 8), "MID", ...range("OUT", 0, 8)];

export const BLOCK_IDS = Object.freeze({
  sd1: Object.freeze({ 17: SD_17, 26: SD_26 }),
  sd2: Object.freeze({ 17: SD_17, 26: SD_26 }),
  sdxl: Object.freeze({ 12: XL_12, 20: XL_20 }),
});

export const FAMILY_LABELS = Object.freeze({ sd1: "SD 1.x", sd2: "SD 2.x", sdxl: "SDXL", "sd1/sd2": "SD 1.x/2.x" });

/** Human label of a family id ("sd1" -> "SD 1.x"); unknown / empty -> "unknown". */
export function familyLabel(family) {
  if (!family) return "unknown";
  return FAMILY_LABELS[family] ?? String(family);
}

/** Block IDs for `family` and vector `length`, or null when that pair is not a known layout. */
export function blockIds(family, length) {
  const table = BLOCK_IDS[family];
  return (table && table[length]) || null;
}

/** Families whose vector lengths include `length` ("sd1"/"sd2" share 17 and 26). */
export function familiesForLength(length) {
  return Object.keys(BLOCK_IDS).filter((f) => BLOCK_IDS[f][length]);
}

const NUMBER = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;
const PCT_ITEM = /^(default|base|in|mid|out)(\d+)?(?:-(\d+))?=(.+)$/;

function finiteNumber(text, what) {
  const t = String(text).trim();
  if (!NUMBER.test(t)) throw new Error(`block weight ${what} '${t}' is not a number, A, a, B, b, R or U`);
  const v = Number(t);
  if (!Number.isFinite(v)) throw new Error(`block weight ${what} '${t}' is not finite`);
  return v;
}

/**
 * Parse one token: a number, A / a (= A/2), B / b (= B/2), or R / U (random, drawn server-side
 * from the seed: returned as null). Throws Error naming the token otherwise.
 */
export function parseToken(token, { A = 4, B = 1 } = {}) {
  const t = String(token).trim();
  switch (t) {
    case "A": return Number(A);
    case "a": return Number(A) / 2;
    case "B": return Number(B);
    case "b": return Number(B) / 2;
    case "R": case "r": case "U": case "u": return null;
    default: return finiteNumber(t, "token");
  }
}

/**
 * Parse a `%` spec ("%default=1,base=0,in=0.5,out3-5=0,mid=0") into {block ID: value} over the
 * family's full layout (26 blocks for SD1/2, 20 for SDXL), as lokr_core.block_weights does.
 */
export function parsePercentSpec(text, family) {
  const ids = BLOCK_IDS[family]?.[family === "sdxl" ? 20 : 26];
  if (!ids) throw new Error(`a '%' block weight spec needs a model family (sd1, sd2 or sdxl), got '${family}'`);
  const items = String(text).trim().slice(1).split(",").map((x) => x.trim()).filter(Boolean);
  const parsed = items.map((item) => {
    const m = PCT_ITEM.exec(item.replace(/ /g, ""));
    if (!m) throw new Error(`block weight item '${item}' is not understood; expected default=V, base=V, in=V, mid=V, out=V, inN=V, outN=V or inN-M=V / outN-M=V`);
    return m.slice(1);
  });
  const dflt = parsed.find(([g]) => g === "default");
  const values = Object.fromEntries(ids.map((id) => [id, dflt ? finiteNumber(dflt[3], "default") : 1]));
  for (const [g, , , v] of parsed) if (g === "base") values.BASE = finiteNumber(v, "base");
  for (const [g, lo, hi, v] of parsed) {
    if (g === "default" || g === "base") continue;
    const name = `${g}${lo ?? ""}${hi ? "-" + hi : ""}`;
    const value = finiteNumber(v, name);
    if (g === "mid") {
      if (lo !== undefined) throw new Error(`block weight item '${name}': the middle block has no number; write mid=V`);
      values.MID = value;
      continue;
    }
    const head = g === "in" ? "IN" : "OUT";
    if (lo === undefined) {
      for (const id of ids) if (id.startsWith(head)) values[id] = value;
      continue;
    }
    for (let n = Number(lo); n <= Number(hi ?? lo); n++) {
      const id = head + String(n).padStart(2, "0");
      if (!(id in values)) throw new Error(`block weight item '${name}' names ${id}, which a ${familyLabel(family)} UNet does not have`);
      values[id] = value;
    }
  }
  return values;
}

/**
 * Parse a block-weight vector ("1,0,0.5,...", a preset name, "NAME:vector" or a `%` spec) for
 * `family` (sd1 | sd2 | sdxl, or null to infer it from the length). Returns {family, ids, tokens,
 * values, blocks}: values[i] is the number for ids[i] (null for R/U, drawn server-side from the
 * seed) and blocks maps ID -> value. Throws Error listing the expected IDs when the length fits no
 * layout. Agrees with lokr_core.block_weights.parse_block_weights on the blocks it lists
 * (tests/web/block_vectors.json).
 */
export function parseBlockVector(text, { family = null, A = 4, B = 1, presets = {} } = {}) {
  const has = (k) => Object.prototype.hasOwnProperty.call(presets, k);
  let source = String(text ?? "").trim();
  if (has(source)) source = String(presets[source]).trim();
  if (!source.startsWith("%") && source.includes(":")) {
    source = source.slice(source.indexOf(":") + 1).trim();
    if (has(source)) source = String(presets[source]).trim();
  }
  if (!source) throw new Error("block weight vector is empty");
  if (family && !BLOCK_IDS[family]) {
    throw new Error(`unknown model family '${family}'; expected one of ${Object.keys(BLOCK_IDS).join(", ")}`);
  }
  if (source.startsWith("%")) {
    const blocks = parsePercentSpec(source, family);
    const ids = Object.keys(blocks);
    return { family, ids, tokens: ids.map((id) => String(blocks[id])), values: ids.map((id) => blocks[id]), blocks };
  }
  const tokens = source.split(",").map((t) => t.trim());
  if (tokens.length && tokens[tokens.length - 1] === "") tokens.pop();
  const n = tokens.length;
  const families = family ? [family] : familiesForLength(n);
  const ids = families.length ? blockIds(families[0], n) : null;
  if (!ids) throw new Error(lengthMessage(n, family));
  const values = tokens.map((t) => parseToken(t, { A, B }));
  const blocks = {};
  ids.forEach((id, i) => { blocks[id] = values[i]; });
  return { family: families[0], ids, tokens, values, blocks };
}

/** The error text for a vector of `n` values that fits no layout (lists the expected IDs). */
export function lengthMessage(n, family = null) {
  const fams = family ? [family] : Object.keys(BLOCK_IDS).filter((f) => f !== "sd2");
  const parts = [];
  for (const f of fams) {
    const table = BLOCK_IDS[f] || {};
    for (const len of Object.keys(table)) {
      const label = !family && f === "sd1" ? "SD 1.x/2.x" : familyLabel(f);
      parts.push(`${len} for ${label} (${table[len].join(", ")})`);
    }
  }
  return `block weight vector has ${n} values; expected ${parts.join(" or ")}`;
}

/** Vector text from values (numbers with at most 4 decimals, trailing zeros dropped). */
export function formatVector(values) {
  return values.map((v) => (typeof v === "number" ? formatNumber(v, 4) : String(v))).join(",");
}

/**
 * Compact number text: integers as is, others with up to `digits` decimals, trailing zeros cut;
 * "inf" / Infinity -> "∞", "nan" -> "NaN", null / undefined -> "–".
 */
export function formatNumber(value, digits = 3) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "string") {
    const s = value.toLowerCase();
    if (s === "inf" || s === "+inf" || s === "infinity") return "∞";
    if (s === "-inf" || s === "-infinity") return "-∞";
    if (s === "nan") return "NaN";
    const num = Number(value);
    return Number.isFinite(num) ? formatNumber(num, digits) : value;
  }
  if (typeof value !== "number") return String(value);
  if (Number.isNaN(value)) return "NaN";
  if (!Number.isFinite(value)) return value > 0 ? "∞" : "-∞";
  if (Number.isInteger(value)) return String(value);
  if (Math.abs(value) >= 1e6 || Math.abs(value) < 1e-4) return value.toExponential(2);
  return String(Number(value.toFixed(digits)));
}

/** "a: 3, b: 1" from a {key: count} mapping, largest count first (ties by key) unless `sort` is false. */
export function formatCounts(counts, sort = true) {
  if (!counts || typeof counts !== "object") return "";
  const entries = Object.entries(counts);
  if (!sort) return entries.map(([k, v]) => `${k}: ${v}`).join(", ");
  return entries
    .sort((x, y) => (Number(y[1]) - Number(x[1])) || String(x[0]).localeCompare(String(y[0])))
    .map(([k, v]) => `${k}: ${v}`)
    .join(", ");
}

/**
 * Guess the model family from a checkpoint file name; null when the name says nothing clear.
 * Used only for the mismatch badge before the first run (the run's report wins afterwards).
 */
export function familyFromCheckpointName(name) {
  const s = String(name ?? "").toLowerCase();
  if (!s) return null;
  if (/(sd_?xl|[^a-z]xl[^a-z]|xl$|^xl|pony|illustrious|noobai|animagine|juggernautxl|playground)/.test(s)) return "sdxl";
  if (/(v2-|sd2|sd_2|2\.0|2\.1|768-v|v2_1|v2\.1)/.test(s)) return "sd2";
  if (/(v1-5|v1\.5|sd15|sd_1|sd1|1\.5|v1-4|realisticvision|dreamshaper_8|deliberate)/.test(s)) return "sd1";
  return null;
}

/**
 * Warning text when the file's family and the model's family differ, else null. sd1 and sd2 share
 * the UNet layout but not the text encoder, so they are still reported; "sd1/sd2" (undecided)
 * conflicts only with sdxl.
 */
export function familyMismatch(fileFamily, modelFamily) {
  if (!fileFamily || !modelFamily || fileFamily === modelFamily) return null;
  const both = "sd1/sd2";
  if ((fileFamily === both && modelFamily !== "sdxl") || (modelFamily === both && fileFamily !== "sdxl")) return null;
  return `This LoKr looks like ${familyLabel(fileFamily)}, the model like ${familyLabel(modelFamily)}`;
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

/** "4 ×120, full ×12" from a {key: count} mapping, most frequent first (ties: numeric keys ascending). */
export function formatTally(counts, key = (k) => k) {
  if (!counts || typeof counts !== "object") return "";
  const entries = Object.entries(counts).sort((x, y) => (Number(y[1]) - Number(x[1]))
    || ((Number(x[0]) - Number(y[0])) || String(x[0]).localeCompare(String(y[0]))));
  if (entries.length === 1) return String(key(entries[0][0]));
  return entries.map(([k, v]) => `${key(k)} ×${v}`).join(", ");
}

/** Parameter count as text: 1234 -> "1.2k", 2500000 -> "2.5M". */
export function formatCount(n) {
  const v = Number(n);
  if (!Number.isFinite(v)) return String(n);
  if (Math.abs(v) >= 1e6) return `${Number((v / 1e6).toFixed(1))}M`;
  if (Math.abs(v) >= 1e3) return `${Number((v / 1e3).toFixed(1))}k`;
  return String(v);
}

/**
 * Panel rows [{label, text}] from a /lokr/info summary (lokr_core.report.summarize): family,
 * modules per block, layouts, ranks, scale rule and scales, base model, algorithm arguments,
 * DoRA and non-LoKr modules. Missing fields are skipped.
 */
export function summaryRows(summary) {
  if (!summary || typeof summary !== "object") return [];
  const rows = [];
  const add = (label, text) => { if (text !== undefined && text !== null && text !== "") rows.push({ label, text: String(text) }); };
  const training = summary.metadata?.training ?? {};
  add("Family", familyLabel(pick(summary, "family", "model_family")));
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

/** Scale per module as text ("0.5 ×128, 1 ×12", or one value), "" when the summary has none. */
export function scaleText(summary) {
  let scale = formatTally(pick(summary, "scale_values"), (k) => formatNumber(k));
  const scales = pick(summary, "scales");
  if (!scale && scales !== undefined && typeof scales !== "object") scale = formatNumber(scales);
  return scale;
}

/** True when the file names its trigger words (not just training tags): the tag list's label. */
export function hasTriggerWords(summary) {
  const given = summary?.metadata?.trigger_words ?? summary?.trigger_words;
  return Array.isArray(given) && given.length > 0;
}

/** The file-slot input names of a stack node (lokr_1, lokr_2, ..., lokr_10), in slot order. */
export function stackSlotNames(names) {
  return (Array.isArray(names) ? names : []).map(String).filter((n) => /^lokr_\d+$/.test(n))
    .sort((a, b) => Number(a.slice(5)) - Number(b.slice(5)));
}

/** Value of a stack slot that leaves it empty. */
export const NO_FILE = "None";

/**
 * Files chosen on a stack node: [{slot, name, file}] in slot order from its widgets ({name, value}),
 * empty and "None" slots skipped; a file chosen in two slots is listed twice.
 */
export function stackSelection(widgets) {
  const byName = new Map();
  for (const w of Array.isArray(widgets) ? widgets : []) if (w && typeof w.name === "string") byName.set(w.name, w.value);
  return stackSlotNames([...byName.keys()])
    .map((name) => ({ slot: Number(name.slice(5)), name, file: byName.get(name) }))
    .filter((e) => typeof e.file === "string" && e.file !== "" && e.file !== NO_FILE);
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
    family: familyLabel(pick(summary, "family", "model_family")),
    text: parts.join(" · "),
    words: triggerWords(summary, maxWords),
    explicit: hasTriggerWords(summary),
  };
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

/** Warnings of a summary or report as a list of strings (`warnings` list or string). */
export function warningsOf(summary) {
  const w = summary?.warnings;
  if (!w) return [];
  return (Array.isArray(w) ? w : [w]).map(String);
}

/**
 * Rows for the run report the node returned (onExecuted): matched / unmatched / shape mismatches,
 * plus the first few unmatched names. Accepts counts or mappings.
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
  if (names.length) {
    const more = names.length > maxNames ? ` … +${names.length - maxNames}` : "";
    rows.push({ label: "Not applied", text: names.slice(0, maxNames).join(", ") + more, warn: true });
  }
  return rows;
}

/** Slider range of the block-weight editor: [min, max, step]. */
export const SLIDER = Object.freeze({ min: -1, max: 2, step: 0.05 });

/** Presets that fit `family` and `length` from a {name: vector} table (by parsed length). */
export function presetsFor(presets, family, length) {
  const out = {};
  for (const [name, vec] of Object.entries(presets || {})) {
    const n = String(vec).split(",").length;
    if (n !== length) continue;
    if (family && !blockIds(family, n)) continue;
    out[name] = String(vec);
  }
  return out;
}
