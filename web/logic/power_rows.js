// LoKr Power Loader's rows: the JSON text of its `rows` widget (the one value the node saves and
// the API sends), the edits the rows editor makes, and the per-row status of a run. Pure: every
// edit returns a new list, never changes the one it was given. Schema: docs/web.md, Power Loader.
import { familyLabel, familyMismatch } from "./family.js";

/** Keys of a row object, in the order the JSON text is written; the node refuses any other key. */
export const ROW_KEYS = Object.freeze(["on", "file", "strength_model", "strength_clip", "linked", "blocks"]);

/** Key of the Power Loader's status in its UI output (`{"ui": {"lokr_power": [{...}]}}`). */
export const POWER_KEY = "lokr_power";

/** A new row for `file` (strength 1, clip linked, no block preset). */
export function newRow(file = "") {
  return { on: true, file: String(file ?? ""), strength_model: 1, strength_clip: 1, linked: true, blocks: "" };
}

const finite = (v, fallback) => (typeof v === "number" && Number.isFinite(v) ? v : fallback);

/** A row object with every key of ROW_KEYS, from what a parsed JSON row holds (defaults as the node's:
 *  on = true, strength_clip = strength_model, linked = true, blocks = ""). Other keys are dropped. */
export function normalizeRow(raw) {
  const r = raw && typeof raw === "object" ? raw : {};
  const model = finite(r.strength_model, 1);
  return {
    on: r.on === undefined ? true : r.on !== false,
    file: typeof r.file === "string" ? r.file : "",
    strength_model: model,
    strength_clip: finite(r.strength_clip, model),
    linked: r.linked === undefined ? true : r.linked !== false,
    blocks: typeof r.blocks === "string" ? r.blocks : "",
  };
}

/**
 * The rows of the widget text `text`: {rows, error}. Empty text is no rows; one row object is a
 * one-row list (as the node reads it); text that is not a JSON list of objects gives rows [] and an
 * error naming what is wrong (the editor shows it and leaves the text alone until the user changes
 * the rows). An already decoded list is read the same way.
 */
export function parseRows(text) {
  let value = text;
  if (typeof text !== "object" || text === null) {  // a list (an API prompt written by hand) is taken as it is
    const s = String(text ?? "").trim();
    if (!s) return { rows: [], error: null };
    try { value = JSON.parse(s); } catch (e) { return { rows: [], error: `rows: not JSON (${e.message})` }; }
  }
  if (value && typeof value === "object" && !Array.isArray(value)) value = [value];  // one row object, as the node reads it
  if (!Array.isArray(value)) return { rows: [], error: "rows: expected a JSON list of row objects" };
  const bad = value.findIndex((r) => !r || typeof r !== "object" || Array.isArray(r));
  if (bad >= 0) return { rows: [], error: `rows: row ${bad + 1} is not an object` };
  return { rows: value.map(normalizeRow), error: null };
}

/** The widget text of `rows`: a JSON list of row objects, keys in ROW_KEYS order. */
export function serializeRows(rows) {
  return JSON.stringify(rows.map((r) => Object.fromEntries(ROW_KEYS.map((k) => [k, normalizeRow(r)[k]]))));
}

const inRange = (rows, i) => Number.isInteger(i) && i >= 0 && i < rows.length;

/** `rows` with a new row for `file` at the end. */
export function addRow(rows, file = "") {
  return [...rows, newRow(file)];
}

/** `rows` without row `i`. */
export function removeRow(rows, i) {
  return rows.filter((_, k) => k !== i);
}

/** `rows` with row `i` moved by `delta` places (-1 up, +1 down), clamped to the list; same order when it cannot move. */
export function moveRow(rows, i, delta) {
  if (!inRange(rows, i)) return [...rows];
  const j = Math.max(0, Math.min(rows.length - 1, i + delta));
  const out = [...rows];
  const [row] = out.splice(i, 1);
  out.splice(j, 0, row);
  return out;
}

/**
 * Where a row dragged to page height `y` lands: the count of other rows whose middle (`mids`, the
 * page y of each row's middle, in order) lies above `y`, for the row at `from`.
 */
export function dropIndex(mids, from, y) {
  return mids.filter((m, k) => k !== from && m < y).length;
}

/** `rows` with row `from` moved to place `to` (its index after the move). */
export function moveRowTo(rows, from, to) {
  return inRange(rows, from) ? moveRow(rows, from, to - from) : [...rows];
}

/** `rows` with row `i` changed by `patch` (an object of row keys). */
function patchRow(rows, i, patch) {
  return rows.map((r, k) => (k === i ? { ...r, ...patch } : r));
}

/** `rows` with row `i` switched on / off (`on` given: set to it, else flipped). */
export function toggleRow(rows, i, on) {
  if (!inRange(rows, i)) return [...rows];
  return patchRow(rows, i, { on: on === undefined ? !rows[i].on : !!on });
}

/** `rows` with row `i`'s file set to `file`. */
export function setFile(rows, i, file) {
  return inRange(rows, i) ? patchRow(rows, i, { file: String(file ?? "") }) : [...rows];
}

/** `rows` with row `i`'s block-weight preset / vector set to `blocks` ("" = none). */
export function setBlocks(rows, i, blocks) {
  return inRange(rows, i) ? patchRow(rows, i, { blocks: String(blocks ?? "") }) : [...rows];
}

/**
 * `rows` with row `i`'s strength `which` ("model" | "clip") set to `value`. A linked row's clip
 * strength follows its model strength; editing the clip strength of a linked row unlinks it. A
 * value that is not a finite number changes nothing.
 */
export function setStrength(rows, i, which, value) {
  const v = Number(value);
  if (!inRange(rows, i) || !Number.isFinite(v)) return [...rows];
  if (which === "model") return patchRow(rows, i, rows[i].linked ? { strength_model: v, strength_clip: v } : { strength_model: v });
  if (which === "clip") return patchRow(rows, i, { strength_clip: v, linked: false });
  return [...rows];
}

/** `rows` with row `i` linked (its clip strength set to its model strength) or unlinked. */
export function setLinked(rows, i, linked) {
  if (!inRange(rows, i)) return [...rows];
  return patchRow(rows, i, linked ? { linked: true, strength_clip: rows[i].strength_model } : { linked: false });
}

// ------------------------------------------------------------------------------------ files

/** Sub folder of a file name ("a/b/x.safetensors" -> "a/b", "x.safetensors" -> ""); `\` counts as `/`. */
export function folderOf(name) {
  const s = String(name ?? "").replace(/\\/g, "/");
  const cut = s.lastIndexOf("/");
  return cut < 0 ? "" : s.slice(0, cut);
}

/** Base name of a file name, without its folder. */
export function baseName(name) {
  const s = String(name ?? "").replace(/\\/g, "/");
  return s.slice(s.lastIndexOf("/") + 1);
}

/** The entries of `files` ([{name, ...}]) whose name holds every word of `query` (any case, any order). */
export function filterFiles(files, query) {
  const words = String(query ?? "").toLowerCase().split(/\s+/).filter(Boolean);
  if (!words.length) return [...files];
  return files.filter((f) => { const n = String(f.name).toLowerCase(); return words.every((w) => n.includes(w)); });
}

/** `files` grouped by sub folder: [{folder, files}], the root ("") first, then folders by name;
 *  files by name inside each. */
export function groupFiles(files) {
  const groups = new Map();
  for (const f of files) {
    const folder = folderOf(f.name);
    if (!groups.has(folder)) groups.set(folder, []);
    groups.get(folder).push(f);
  }
  const byName = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
  return [...groups.keys()].sort(byName).map((folder) => ({
    folder, files: groups.get(folder).sort((a, b) => byName(String(a.name), String(b.name))),
  }));
}

/** Map name -> entry of a /lokr/files answer's `files` list. */
export function filesByName(files) {
  return new Map((files ?? []).map((f) => [f.name, f]));
}

/**
 * The family most `on` rows' files have (from `byName`, a filesByName map), or null: no on row with a
 * known family, or a tie. Each on row counts once.
 */
export function majorityFamily(rows, byName) {
  const count = new Map();
  for (const r of rows) {
    const fam = r.on ? byName.get(r.file)?.family : null;
    if (fam) count.set(fam, (count.get(fam) ?? 0) + 1);
  }
  const ranked = [...count.entries()].sort((a, b) => b[1] - a[1]);
  if (!ranked.length || (ranked.length > 1 && ranked[0][1] === ranked[1][1])) return null;
  return ranked[0][0];
}

/**
 * The model family the rows are checked against: {family, label, source}: the last run's
 * `model_family` (read from the model's weights, source "run"), else the majority family of the on
 * rows (source "rows"), else {family: null}.
 */
export function modelFamilyOf(power, rows, byName) {
  if (power?.model_family) {
    return { family: power.model_family, label: power.model_family_label || familyLabel(power.model_family), source: "run" };
  }
  const fam = majorityFamily(rows, byName);
  return fam ? { family: fam, label: familyLabel(fam), source: "rows" } : { family: null, label: null, source: null };
}

/**
 * Text saying why `file` (a /lokr/files entry) does not fit the model family `model`
 * ({family, label, source} of modelFamilyOf), or null when it fits or either family is unknown.
 */
export function fileFlag(file, model) {
  if (!file?.family || !model?.family) return null;
  const text = familyMismatch(file.family, model.family, { file: file.family_label, model: model.label });
  if (!text) return null;
  return model.source === "run" ? `${text} (the model of the last run)` : `${text} (most of the rows that are on)`;
}

/**
 * Choices of a row's block-preset menu: [{value, label}]: none (""), then the preset names of
 * `presets` ({name: vector}, /lokr/presets), and the row's own value when it is none of them (a
 * vector text typed elsewhere), so choosing never loses it.
 */
export function presetChoices(presets, current = "") {
  const names = Object.keys(presets ?? {});
  const out = [{ value: "", label: "blocks: all" }, ...names.map((n) => ({ value: n, label: n }))];
  if (current && !names.includes(current)) out.push({ value: current, label: `custom: ${current}` });
  return out;
}

// ------------------------------------------------------------------------------------ run status

/** The Power Loader status of an `executed` message (`{lokr_power: [status]}`), or null. */
export function powerFromMessage(message) {
  const p = message?.[POWER_KEY];
  const s = Array.isArray(p) ? p[0] : p;
  return s && typeof s === "object" && Array.isArray(s.rows) ? s : null;
}

/**
 * The run status of row `i` (holding `row`) in `power` (powerFromMessage): the status row with the
 * same index and file, else the first one with the same file (rows moved since the run), else null.
 */
export function rowStatus(power, i, row) {
  const list = power?.rows ?? [];
  return list.find((s) => s.index === i && s.file === row.file) ?? list.find((s) => s.file === row.file) ?? null;
}

/**
 * One-line text of a row's run status `s` ({kind, matched, total, family_label, ...}) and whether it
 * is a problem: {text, bad}. `flag`: the row's family-mismatch text or null.
 */
export function statusText(s, flag = null) {
  if (!s) return null;
  if (s.kind === "off" || s.on === false) return { text: "off in the last run", bad: false };
  const parts = [s.kind === "lora" ? "LoRA (ComfyUI)" : s.kind === "lokr" ? "LoKr" : String(s.kind ?? "")];
  if (Number.isFinite(s.matched) && Number.isFinite(s.total)) parts.push(`${s.matched} / ${s.total} matched`);
  const partial = Number.isFinite(s.matched) && Number.isFinite(s.total) && s.matched < s.total;
  if (flag) parts.push("family mismatch");
  return { text: parts.filter(Boolean).join(" · "), bad: !!flag || partial || s.matched === 0 };
}
