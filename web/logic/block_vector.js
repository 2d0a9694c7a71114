// Block-weight vectors: block IDs per layout, the parser, the vector text and the editor's layouts.
// The rules (layouts, tokens, `%` specs, presets) are in docs/block-weights.md; the parser gives the
// same block values as lokr_core.keymap.block_weights.parse_block_weights on the shared cases in
// tests/web/block_vectors.json, which both test suites check.
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

/** The editor's layouts, [family, length] (SD 1.x and 2.x share theirs). */
export const EDITOR_LAYOUTS = Object.freeze([["sd1", 17], ["sd1", 26], ["sdxl", 12], ["sdxl", 20]].map(Object.freeze));

/** Menu text of an editor layout ("SD 1.x/2.x · 17 values"). */
export function layoutLabel([family, length]) {
  return `${family === "sd1" ? "SD 1.x/2.x" : familyLabel(family)} · ${length} values`;
}

/** Index in EDITOR_LAYOUTS of `family` ("sd2" counts as "sd1") with `length` values, or -1. */
export function layoutIndex(family, length) {
  const fam = family === "sd2" ? "sd1" : family;
  return EDITOR_LAYOUTS.findIndex(([f, n]) => f === fam && n === length);
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

/**
 * Parse a block-weight vector ("1,0,0.5,...", a preset name, "NAME:vector" or a `%` spec) for
 * `family` (sd1 | sd2 | sdxl, or null to infer it from the length). Returns {family, ids, tokens,
 * values, blocks}: values[i] is the number for ids[i] (null for R/U, drawn server-side from the
 * seed) and blocks maps ID -> value. Throws Error listing the expected IDs when the length fits no
 * layout.
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
