// LoKr Stack slots: which inputs are file slots and which files are chosen.

/** Value of a stack slot that leaves it empty. */
export const NO_FILE = "None";

/** The file-slot input names of a stack node (lokr_1, lokr_2, ..., lokr_10), in slot order. */
export function stackSlotNames(names) {
  return (Array.isArray(names) ? names : []).map(String).filter((n) => /^lokr_\d+$/.test(n))
    .sort((a, b) => Number(a.slice(5)) - Number(b.slice(5)));
}

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
