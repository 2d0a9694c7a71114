// Small pieces of panel DOM shared by the panels: family badge, warning badges, tag chips, row tables.
import { summaryFamilyLabel, warningBadgeText } from "../logic/summary.js";
import { copyText, el } from "./dom.js";

/** The family badge: `label` text, or a summary's family label. */
export function familyBadge(label) {
  return el("span", "lokr-fam", typeof label === "string" ? label : summaryFamilyLabel(label));
}

/** An amber badge for warning `text` (cut to 40 characters; the whole text as its tooltip). */
export function warningBadge(text) {
  const b = el("span", "lokr-badge", warningBadgeText(text));
  b.title = text;
  return b;
}

/** Trigger words (or top tags) as a row of click-to-copy chips, with `label` in front; null for none. */
export function tagChips(words, label) {
  if (!words.length) return null;
  const tags = el("div", "lokr-tags");
  tags.title = "Click a word to copy it";
  if (label) tags.appendChild(el("span", "lokr-tags-label", label));
  for (const w of words) {
    const t = el("span", "lokr-tag", w);
    t.addEventListener("click", async (ev) => {
      ev.stopPropagation();
      if (await copyText(w)) {
        t.classList.add("lokr-copied");
        setTimeout(() => t.classList.remove("lokr-copied"), 700);
      }
    });
    tags.appendChild(t);
  }
  return tags;
}

/** A label / value table of `rows` [{label, text, warn}]; a warn row's value is amber. */
export function rowsTable(rows) {
  const table = el("table");
  for (const row of rows) {
    const tr = el("tr");
    tr.appendChild(el("td", "lokr-k", row.label));
    tr.appendChild(el("td", row.warn ? "lokr-warn" : null, row.text));
    table.appendChild(tr);
  }
  return table;
}
