// Block-weight vectors: block IDs per layout, the parser, the vector text and the editor's layouts.
// The rules (layouts, tokens, `%` specs, presets) are in docs/block-weights.md; the parser gives the
// same block values as lokr_core.keymap.block_weights.parse_block_weights on the shared cases in
// tests/web/block_vectors.json, which both test suites check. SD UNets here; transformer (DiT)
// layouts and vectors in ./dit_blocks.js.
import { DIT_BLOCKS, DIT_PRESETS, ditFamily, ditGroups, ditLayout, parseDitVector } from "./dit_blocks.js";
import { familyLabel } from "./family.js";
import { formatNumber } from "./format.js";

function range(prefix, from, to) {
  const out = [];
  for (let i = from; i <= to; i++) out.push(prefix + String(i).padStart(2, "0"));
  return out;
}

const SD_17 = Object.freeze(["BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "MID", ...range("OUT", 3, 11)]);
const SD_26 = Object.freeze(["BASE", ...range("IN", 0, 11), "MID", ...range("OUT", 0, 11)]);
const XL_12 = Object.freeze(["BASE", "IN04", "IN05", "IN07", "IN08", "MID", ...range("OUT", 0, 5)]);
const XL_20 = Object.freeze(["BASE", ...range("IN", 0, 8), "MID", ...range("OUT", 0, 8)]);

/** Block IDs of each vector length, per model family (LDM numbering; BASE first). */
export const BLOCK_IDS = Object.freeze({
  sd1: Object.freeze({ 17: SD_17, 26: SD_26 }),
  sd2: Object.freeze({ 17: SD_17, 26: SD_26 }),
  sdxl: Object.freeze({ 12: XL_12, 20: XL_20 }),
});

/** Slider range of the block-weight editor. */
export const SLIDER = Object.freeze({ min: -1, max: 2, step: 0.05 });

const SD_LAYOUTS = Object.freeze([["sd1", 17], ["sd1", 26], ["sdxl", 12], ["sdxl", 20]]);

/** The groups of a DiT layout as menu text ("double 19, single 38"). */
function groupText(ids) {
  return ditGroups(ids).slice(1).map((g) => `${g} ${ids.filter((id) => id.split(" ")[0] === g).length}`).join(", ");
}

/**
 * The editor's layouts [{family, ids, label}]: SD 1.x/2.x 17 and 26 values, SDXL 12 and 20, then every
 * transformer family's full layout (BASE and each block), with `detected` = {family, blocks} (the
 * model's family and block counts from a run report) replacing its family's default counts.
 */
export function editorLayouts(detected = null) {
  const out = SD_LAYOUTS.map(([family, n]) => ({ family, ids: BLOCK_IDS[family][n],
    label: `${family === "sd1" ? "SD 1.x/2.x" : familyLabel(family)} · ${n} values` }));
  const seen = ditFamily(detected?.family);
  for (const family of Object.keys(DIT_BLOCKS)) {
    const ids = ditLayout(family, family === seen ? detected.blocks : null);
    out.push({ family, ids, label: `${familyLabel(family)} · ${groupText(ids)}` });
  }
  return out;
}

/** Index in `layouts` of `family` ("sd2" counts as "sd1"; "flux/chroma" as "flux") with `length` values, or -1. */
export function layoutIndex(layouts, family, length) {
  const fam = family === "sd2" || family === "sd1/sd2" ? "sd1" : (ditFamily(family) ?? family);
  return layouts.findIndex((l) => l.family === fam && l.ids.length === length);
}

/** True for a transformer (DiT) family id or verdict. */
export function isDitFamily(family) {
  return ditFamily(family) !== null;
}

/** Block IDs for `family` and vector `length`, or null when that pair is not a known layout. */
export function blockIds(family, length) {
  const table = BLOCK_IDS[family];
  return (table && table[length]) || null;
}

/** Families whose vector lengths include `length`: SD ("sd1"/"sd2" share 17 and 26), then the
 *  transformer families whose default full layout has that many values (Flux.1 58, ...). */
export function familiesForLength(length) {
  const sd = Object.keys(BLOCK_IDS).filter((f) => BLOCK_IDS[f][length]);
  return [...sd, ...Object.keys(DIT_BLOCKS).filter((f) => ditLayout(f).length === length)];
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
 * family's full layout (26 blocks for SD1/2, 20 for SDXL), as lokr_core.keymap.block_weights does.
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

/** Number of values in a vector text (a trailing comma adds none). */
function valueCount(source) {
  const tokens = source.split(",");
  if (tokens.length && tokens[tokens.length - 1].trim() === "") tokens.pop();
  return tokens.length;
}

/** Whether preset `name` is a transformer preset (lokr_core's DIT_PRESETS). */
function isDitPreset(name) {
  return Object.prototype.hasOwnProperty.call(DIT_PRESETS, name);
}

/**
 * Parse a block-weight vector ("1,0,0.5,...", a preset name, "NAME:vector" or a `%` spec) for
 * `family` (sd1 | sd2 | sdxl | a transformer family such as flux, sd3, wan; or null to infer it from
 * the length, else `fallback`). `blocks`: the model's transformer block counts ({double: 19, ...}).
 * Returns {family, ids, tokens, values, blocks}: values[i] is the number for ids[i] (null for R/U,
 * drawn server-side from the seed) and blocks maps ID -> value. A transformer vector always covers
 * every block (one value per group is spread). Throws Error listing the expected IDs when the length
 * fits no layout, or when a preset is for the other kind of model.
 */
export function parseBlockVector(text, { family = null, A = 4, B = 1, presets = {}, blocks = null, fallback = null } = {}) {
  const table = { ...DIT_PRESETS, ...presets };
  const has = (k) => Object.prototype.hasOwnProperty.call(table, k);
  let source = String(text ?? "").trim();
  let preset = has(source) ? source : null;
  if (preset) source = String(table[source]).trim();
  if (!source.startsWith("%") && source.includes(":")) {
    source = source.slice(source.indexOf(":") + 1).trim();
    if (has(source)) { preset = source; source = String(table[source]).trim(); }
  }
  if (!source) throw new Error("block weight vector is empty");
  if (family && !BLOCK_IDS[family] && !isDitFamily(family) && family !== "sd1/sd2") {
    throw new Error(`unknown model family '${family}'; expected one of ${[...Object.keys(BLOCK_IDS), ...Object.keys(DIT_BLOCKS)].join(", ")}`);
  }
  if (family === "sd1/sd2") family = "sd1";
  let fam = family;
  if (!fam) {
    fam = source.startsWith("%") ? fallback
      : (familiesForLength(valueCount(source))[0] ?? (isDitFamily(fallback) ? fallback : null));
  }
  if (preset && fam && isDitPreset(preset) !== isDitFamily(fam)) {
    throw new Error(isDitFamily(fam)
      ? `preset '${preset}' is for SD UNets; for ${familyLabel(fam)} use a DiT preset (${Object.keys(DIT_PRESETS).join(", ")}) or a vector`
      : `preset '${preset}' is for transformer (DiT) models; for ${familyLabel(fam)} use an SD preset or a vector`);
  }
  if (isDitFamily(fam)) {
    const parsed = parseDitVector(source, fam, (t) => parseToken(t, { A, B }), blocks);
    return { family: ditFamily(fam), ...parsed };
  }
  if (source.startsWith("%")) {
    const vals = parsePercentSpec(source, fam);
    const ids = Object.keys(vals);
    return { family: fam, ids, tokens: ids.map((id) => String(vals[id])), values: ids.map((id) => vals[id]), blocks: vals };
  }
  const tokens = source.split(",").map((t) => t.trim());
  if (tokens.length && tokens[tokens.length - 1] === "") tokens.pop();
  const n = tokens.length;
  const ids = fam ? blockIds(fam, n) : null;
  if (!ids) throw new Error(lengthMessage(n, family));
  const values = tokens.map((t) => parseToken(t, { A, B }));
  const byId = {};
  ids.forEach((id, i) => { byId[id] = values[i]; });
  return { family: fam, ids, tokens, values, blocks: byId };
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
  const dit = family ? "" : `; a transformer takes BASE then every block (${ditLayout("flux").length} for ${familyLabel("flux")}) or one value per group once its family is chosen`;
  return `block weight vector has ${n} values; expected ${parts.join(" or ")}${dit}`;
}

/** Vector text from values (numbers with at most 4 decimals, trailing zeros dropped). */
export function formatVector(values) {
  return values.map((v) => (typeof v === "number" ? formatNumber(v, 4) : String(v))).join(",");
}

/**
 * Presets that fit a layout from a {name: vector} table: SD presets of `length` values for an SD
 * family; for a transformer family the DiT presets (lokr_core's and the table's) that parse over its
 * layout with the model's `blocks` counts.
 */
export function presetsFor(presets, family, length, blocks = null) {
  const out = {};
  if (isDitFamily(family)) {
    for (const [name, vec] of Object.entries({ ...DIT_PRESETS, ...(presets || {}) })) {
      if (!isDitPreset(name) && !String(vec).startsWith("%")) continue;
      try { parseDitVector(String(vec), family, (t) => parseToken(t), blocks); out[name] = String(vec); } catch (_) { /* does not fit */ }
    }
    return out;
  }
  for (const [name, vec] of Object.entries(presets || {})) {
    if (isDitPreset(name)) continue;
    const n = String(vec).split(",").length;
    if (n !== length) continue;
    if (family && !blockIds(family, n)) continue;
    out[name] = String(vec);
  }
  return out;
}
