// Number and tally text for the panels.

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
