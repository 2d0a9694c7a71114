// Model families: labels, a guess from a checkpoint file name, and the file-vs-model mismatch text.

/** Display label of each family id the server reports: lokr_core.keymap.family FAMILY_LABELS (the SD
 *  ones and lokr_core.keymap.family_signatures.LABELS), so a label the server sends and one made here
 *  read the same. */
export const FAMILY_LABELS = Object.freeze({
  sd1: "SD1.x", sd2: "SD2.x", sdxl: "SDXL", "sd1/sd2": "SD1.x or SD2.x",
  flux: "Flux.1", flux2: "Flux.2", chroma: "Chroma", hunyuan_video: "HunyuanVideo", sd3: "SD3 / SD3.5",
  auraflow: "AuraFlow", pixart: "PixArt", hunyuan_dit: "HunyuanDiT", hidream: "HiDream", lumina2: "Lumina 2",
  zimage: "Z-Image", omnigen2: "OmniGen2", qwen_image: "Qwen-Image", wan: "Wan 2.1 / 2.2", ltxv: "LTX-Video",
  mochi: "Mochi", cosmos: "Cosmos", kandinsky5: "Kandinsky 5", krea2: "Krea 2", ernie: "ERNIE-Image",
  ace: "ACE-Step",
});

const own = (k) => Object.prototype.hasOwnProperty.call(FAMILY_LABELS, k);

/** Human label of a family id ("sd1" -> "SD1.x"; "flux/chroma" -> "Flux.1 or Chroma"); unknown / empty
 *  -> "unknown"; an id this table lacks is shown as it is. */
export function familyLabel(family) {
  if (!family) return "unknown";
  const f = String(family);
  if (own(f)) return FAMILY_LABELS[f];
  const parts = f.split("/");
  if (parts.length > 1 && parts.every(own)) return parts.map((p) => FAMILY_LABELS[p]).join(" or ");
  return f;
}

// checkpoint / diffusion-model file names -> family, transformers first ("wan2.1" is no SD 2.1)
const NAME_RULES = [
  [/flux[._-]?2|flux2/, "flux2"], [/krea[._-]?2/, "krea2"], [/chroma/, "chroma"], [/flux/, "flux"],
  [/hunyuan[._-]?video|hunyuanvideo/, "hunyuan_video"], [/hunyuan[._-]?dit|hunyuandit/, "hunyuan_dit"],
  [/(^|[^a-z])sd[._-]?3|stable[._-]?diffusion[._-]?3/, "sd3"], [/aura[._-]?flow/, "auraflow"], [/pixart/, "pixart"],
  [/hidream/, "hidream"], [/z[._-]?image/, "zimage"], [/lumina/, "lumina2"], [/omnigen/, "omnigen2"],
  [/qwen[._-]?image/, "qwen_image"], [/(^|[^a-z])wan[._-]?2|(^|[^a-z])wan[._-]/, "wan"], [/ltx/, "ltxv"],
  [/mochi/, "mochi"], [/cosmos/, "cosmos"], [/kandinsky[._-]?5/, "kandinsky5"], [/ace[._-]?step/, "ace"],
  [/(sd_?xl|[^a-z]xl[^a-z]|xl$|^xl|pony|illustrious|noobai|animagine|juggernautxl|playground)/, "sdxl"],
  [/(v2-|sd2|sd_2|2\.0|2\.1|768-v|v2_1|v2\.1)/, "sd2"],
  [/(v1-5|v1\.5|sd15|sd_1|sd1|1\.5|v1-4|realisticvision|dreamshaper_8|deliberate)/, "sd1"],
];

/**
 * Guess the model family from a checkpoint / diffusion-model file name; null when the name says
 * nothing clear. Used only for the mismatch badge before the first run (a run report names the
 * model's family from its weights).
 */
export function familyFromCheckpointName(name) {
  const s = String(name ?? "").toLowerCase();
  if (!s) return null;
  for (const [re, fam] of NAME_RULES) if (re.test(s)) return fam;
  return null;
}

/**
 * Warning text when the file's family and the model's family differ, else null. Each may be a
 * `/`-joined set ("sd1/sd2", "flux/chroma"): they differ when they share no family. sd1 and sd2 share
 * the UNet layout but not the text encoder, so they are still reported. `labels` = {file, model}:
 * the server's labels (family_label / model_family_label) when it sent them.
 */
export function familyMismatch(fileFamily, modelFamily, labels = {}) {
  if (!fileFamily || !modelFamily || fileFamily === modelFamily) return null;
  const a = String(fileFamily).split("/"), b = new Set(String(modelFamily).split("/"));
  if (a.some((f) => b.has(f))) return null;
  return `This LoKr looks like ${labels.file || familyLabel(fileFamily)}, the model like ${labels.model || familyLabel(modelFamily)}`;
}

/**
 * What the loader panel shows about families: the file's (the run report's `family`, else the
 * /lokr/info summary's) and the model's (the run report's `model_family`, read from its weights,
 * else `guessed` from the checkpoint name), each with the server's label when it sent one
 * (family_label / model_family_label), and the mismatch text or null.
 */
export function familyView(summary, report, guessed = null) {
  const fromReport = report?.family != null;
  const file = fromReport ? report.family : (summary?.family ?? summary?.model_family ?? null);
  const fileLabel = (fromReport ? report.family_label : summary?.family_label) || familyLabel(file);
  const model = report?.model_family ?? guessed ?? null;
  const modelLabel = (report?.model_family != null && report.model_family_label) || familyLabel(model);
  return { file, fileLabel, model, modelLabel, mismatch: familyMismatch(file, model, { file: fileLabel, model: modelLabel }) };
}
