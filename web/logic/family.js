// Model families: labels, a guess from a checkpoint file name, and the file-vs-model mismatch text.

/** Display label of each family id the server reports (lokr_core.keymap.family). */
export const FAMILY_LABELS = Object.freeze({ sd1: "SD 1.x", sd2: "SD 2.x", sdxl: "SDXL", "sd1/sd2": "SD 1.x/2.x" });

/** Human label of a family id ("sd1" -> "SD 1.x"); unknown / empty -> "unknown". */
export function familyLabel(family) {
  if (!family) return "unknown";
  return FAMILY_LABELS[family] ?? String(family);
}

/**
 * Guess the model family from a checkpoint file name; null when the name says nothing clear.
 * Used only for the mismatch badge before the first run.
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
