// Transformer (DiT) block layouts and their vectors: BASE, then `double N` / `single N` (Flux,
// Flux.2, Chroma, HunyuanVideo, HiDream, AuraFlow), `joint N` (SD3) or `layers N` (the others),
// counted from 0. The tables are lokr_core.keymap.family_signatures.DEFAULT_BLOCKS and
// lokr_core.keymap.block_weights.DIT_PRESETS (tests/test_web_js.py checks they are equal); the
// parser gives lokr_core's parse_block_weights values on tests/web/block_vectors.json.

/** Block groups in vector order. */
export const DIT_KINDS = Object.freeze(["double", "single", "joint", "layers"]);

/** family -> {group: block count} of the family's best-known model (Flux.1-dev 19 / 38, ...), in
 *  lokr_core's family order (the node's `family` menu). */
export const DIT_BLOCKS = Object.freeze(Object.fromEntries(Object.entries({
  flux: { double: 19, single: 38 }, flux2: { double: 8, single: 48 }, chroma: { double: 19, single: 38 },
  hunyuan_video: { double: 20, single: 40 }, sd3: { joint: 24 }, auraflow: { double: 4, single: 32 },
  pixart: { layers: 28 }, hunyuan_dit: { layers: 40 }, hidream: { double: 16, single: 32 },
  lumina2: { layers: 26 }, zimage: { layers: 30 }, omnigen2: { layers: 32 }, qwen_image: { layers: 60 },
  wan: { layers: 40 }, ltxv: { layers: 28 }, mochi: { layers: 48 }, cosmos: { layers: 28 },
  kandinsky5: { layers: 32 }, krea2: { layers: 28 }, ernie: { layers: 36 }, ace: { layers: 24 },
}).map(([k, v]) => [k, Object.freeze(v)])));

/** DiT presets, as `%` specs (they fit every depth; FLUX-DBL-* need Flux.1's 19 double blocks). */
export const DIT_PRESETS = Object.freeze({
  "DIT-ALL": "%default=1", "DIT-NONE": "%default=0", "DIT-BASE-ONLY": "%default=0,base=1",
  "DIT-BLOCKS-ONLY": "%default=1,base=0", "DIT-HALF": "%default=0.5",
  "FLUX-DOUBLE-ONLY": "%default=0,base=1,double=1", "FLUX-SINGLE-ONLY": "%default=0,base=1,single=1",
  "FLUX-DBL-FRONT": "%default=0,base=1,double0-5=1", "FLUX-DBL-MID": "%default=0,base=1,double6-12=1",
  "FLUX-DBL-TAIL": "%default=0,base=1,double13-18=1",
});

/** The DiT family id of `family` (a `/`-joined verdict uses its first: "flux/chroma" -> "flux"), or null. */
export function ditFamily(family) {
  const first = String(family ?? "").split("/")[0].toLowerCase();
  return Object.prototype.hasOwnProperty.call(DIT_BLOCKS, first) ? first : null;
}

/** Block IDs of a DiT family in vector order ("BASE", "double 0", ...); `blocks` = the model's counts. */
export function ditLayout(family, blocks = null) {
  const fam = ditFamily(family);
  const counts = blocks && Object.keys(blocks).length ? blocks : DIT_BLOCKS[fam];
  if (!counts) throw new Error(`'${family}' is not a transformer family with block weights`);
  const ids = ["BASE"];
  for (const kind of DIT_KINDS) for (let i = 0; i < Number(counts[kind] ?? 0); i++) ids.push(`${kind} ${i}`);
  return ids;
}

/** The group of a block ID ("double 3" -> "double", "BASE" -> "BASE"). */
export function groupOf(id) {
  return String(id).split(" ")[0];
}

/** Groups of a layout in vector order: ["BASE", "double", "single"]. */
export function ditGroups(ids) {
  return [...new Set(ids.map(groupOf))];
}

const NUMBER = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;
const DIT_ITEM = /^(default|base|double|single|joint|layers)(\d+)?(?:-(\d+))?=(.+)$/;

function num(text, what) {
  const t = String(text).trim();
  const v = Number(t);
  if (!NUMBER.test(t)) throw new Error(`block weight ${what} '${t}' is not a number, A, a, B, b, R or U`);
  if (!Number.isFinite(v)) throw new Error(`block weight ${what} '${t}' is not finite`);
  return v;
}

/** `%` spec over a DiT layout: default, base, group=V, groupN=V, groupN-M=V (block IDs from 0). */
function percent(text, family, ids) {
  const items = String(text).trim().slice(1).split(",").map((x) => x.trim().replace(/ /g, "")).filter(Boolean);
  const parsed = items.map((item) => {
    const m = DIT_ITEM.exec(item);
    if (!m) throw new Error(`block weight item '${item}' is not understood for ${family}; expected default=V, base=V, double=V, single=V, joint=V, layers=V or doubleN=V / singleN-M=V`);
    return m.slice(1);
  });
  const dflt = parsed.find(([g]) => g === "default");
  const values = Object.fromEntries(ids.map((id) => [id, dflt ? num(dflt[3], "default") : 1]));
  for (const [g, , , v] of parsed) if (g === "base") values.BASE = num(v, "base");
  for (const [g, lo, hi, v] of parsed) {
    if (g === "default" || g === "base") continue;
    const value = num(v, `${g}${lo ?? ""}`);
    let targets = ids.filter((id) => groupOf(id) === g);
    if (!targets.length) {
      throw new Error(`block weights: ${family} has no ${g} blocks; its groups are ${ditGroups(ids).slice(1).sort().join(", ")}`);
    }
    if (lo !== undefined) {
      const wanted = [];
      for (let n = Number(lo); n <= Number(hi ?? lo); n++) wanted.push(`${g} ${n}`);
      const missing = wanted.find((w) => !(w in values));
      if (missing) {
        throw new Error(`block weights: ${g}${lo}${hi ? "-" + hi : ""} names ${missing}, which this ${family} model does not have; ${g} blocks are ${targets[0]}..${targets.at(-1)}`);
      }
      targets = wanted;
    }
    for (const id of targets) values[id] = value;
  }
  return values;
}

/**
 * Parse a DiT vector (every block, BASE first; or one value per group; or a `%` spec) for `family`
 * with the model's `blocks` counts (default: the family's). `token(text, i)` parses one value (A, B,
 * R, U ...). Returns {ids, tokens, values, blocks} over the full layout (a per-group vector is
 * spread over its group's blocks). Throws Error naming the expected lengths and groups.
 */
export function parseDitVector(source, family, token, blocks = null) {
  const fam = ditFamily(family);
  const ids = ditLayout(fam, blocks);
  const groups = ditGroups(ids);
  if (source.startsWith("%")) {
    const vals = percent(source, fam, ids);
    return { ids, tokens: ids.map((id) => String(vals[id])), values: ids.map((id) => vals[id]), blocks: vals };
  }
  const tokens = source.split(",").map((t) => t.trim());
  if (tokens.length && tokens[tokens.length - 1] === "") tokens.pop();
  let full;
  if (tokens.length === ids.length) full = tokens;
  else if (tokens.length === groups.length) full = ids.map((id) => tokens[groups.indexOf(groupOf(id))]);
  else {
    const counts = groups.slice(1).map((g) => `${g} 0..${ids.filter((id) => groupOf(id) === g).length - 1}`).join(", ");
    throw new Error(`block weights for ${fam}: ${tokens.length} values given; expected ${ids.length} values (BASE, ${counts}) or ${groups.length} values (${groups.join(", ")}), a % spec (%default=1,base=1,${groups[1]}=0.5) or a preset`);
  }
  const parsed = tokens.map((t, i) => token(t, i));
  const values = ids.map((id, i) => (full === tokens ? parsed[i] : parsed[groups.indexOf(groupOf(id))]));
  const byId = {};
  ids.forEach((id, i) => { byId[id] = values[i]; });
  return { ids, tokens: full, values, blocks: byId };
}

/** {group: count} of a DiT layout's IDs ({double: 19, single: 38}); null for an SD layout. */
export function countsOf(ids) {
  const out = {};
  for (const id of ids) {
    const [g, i] = String(id).split(" ");
    if (i !== undefined && DIT_KINDS.includes(g)) out[g] = Math.max(out[g] ?? 0, Number(i) + 1);
  }
  return Object.keys(out).length ? out : null;
}
