// Which of the pack's nodes get which panel, the input names and values the panels read (all from
// the INPUT_TYPES in nodes/*.py), and the run report in a node's `executed` message.
import { BLOCK_IDS } from "./block_vector.js";
import { ditFamily } from "./dit_blocks.js";
import { stackSlotNames } from "./stack.js";

/** Input names of the pack's nodes that the panels read (LoKr loaders, Block Weights, Info). */
export const INPUTS = Object.freeze({
  file: "lokr_name",        // every loader, LoKr Block Weights, LoKr Info
  vector: "block_vector",   // LoKr Block Weights
  preset: "preset",
  family: "family",
  a: "A",
  b: "B",
  rows: "rows",             // LoKr Power Loader: the rows as JSON text (logic/power_rows.js)
});

/** The `preset` value that makes LoKr Block Weights read `block_vector`. */
export const CUSTOM_PRESET = "custom";

/** The `family` value that reads the layout from the connected model. */
export const AUTO_FAMILY = "auto";

/** Key of the run report in the node's UI output (`{"ui": {"lokr_report": [report]}}`). */
export const REPORT_KEY = "lokr_report";

/** Widgets of ComfyUI's own loaders that name the checkpoint (CheckpointLoaderSimple, UNETLoader). */
export const CHECKPOINT_WIDGETS = Object.freeze(["ckpt_name", "unet_name"]);

/** All input names of a node definition from /object_info (required, then optional). */
export function inputNames(nodeData) {
  const inputs = nodeData?.input ?? {};
  return [...Object.keys(inputs.required ?? {}), ...Object.keys(inputs.optional ?? {})];
}

/**
 * The panels a node definition gets: {file, vector, slots, power} (the file input name or null, the
 * vector input name or null, the stack's slot names, the Power Loader's rows input name or null), or
 * null for other packs' nodes and for nodes of this pack without any of those inputs.
 */
export function panelsFor(nodeData) {
  const isOurs = /lokr/i.test(nodeData?.name ?? "") || /lokr/i.test(nodeData?.python_module ?? "");
  if (!isOurs) return null;
  const names = inputNames(nodeData);
  const file = names.includes(INPUTS.file) ? INPUTS.file : null;
  const vector = names.includes(INPUTS.vector) ? INPUTS.vector : null;
  const slots = file ? [] : stackSlotNames(names);
  const power = names.includes(INPUTS.rows) ? INPUTS.rows : null;
  return file || vector || slots.length || power ? { file, vector, slots, power } : null;
}

/** The run report of an `executed` message (`{lokr_report: [report]}`), or null. */
export function reportFromMessage(message) {
  const rep = message?.[REPORT_KEY];
  const r = Array.isArray(rep) ? rep[0] : rep;
  return r && typeof r === "object" ? r : null;
}

/** The vector the editor shows: the node's preset when one is chosen, else its block_vector text. */
export function vectorText(preset, text) {
  return String(preset && preset !== CUSTOM_PRESET ? preset : (text ?? "")).trim();
}

/**
 * Family to parse the editor's text with: the node's `family` value when it names one (SD or a
 * transformer family), else the family the last run read from the model (`detected`, the report's
 * block_family), else null (inferred from the vector's length, then the editor's layout).
 */
export function parseFamily(familyValue, detected = null) {
  if (familyValue && familyValue !== AUTO_FAMILY && (BLOCK_IDS[familyValue] || ditFamily(familyValue))) return familyValue;
  return detected || null;
}

/** {family, blocks} the model had in a run report of LoKr Block Weights (block_family, blocks), or null. */
export function detectedLayout(report) {
  const family = report?.block_family ?? null;
  if (!family) return null;
  const blocks = report.blocks && typeof report.blocks === "object" ? report.blocks : null;
  return { family, blocks };
}
