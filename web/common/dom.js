// Plain DOM helpers: make an element, add the pack's stylesheet once, copy text to the clipboard.

/** A new `tag` element with class `cls` (when given) and text `text` (when given). */
export function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

/** Add `<link rel=stylesheet href=href id=id>` to the page head, unless an element `id` is there. */
export function addStylesheet(href, id) {
  if (document.getElementById(id)) return;
  const link = el("link");
  link.id = id;
  link.rel = "stylesheet";
  link.href = href;
  document.head.appendChild(link);
}

/** Copy `text` to the clipboard (the Clipboard API, else a hidden textarea); whether it worked. */
export async function copyText(text) {
  try {
    if (navigator.clipboard?.writeText) { await navigator.clipboard.writeText(text); return true; }
  } catch (_) { /* fall back below */ }
  try {
    const ta = el("textarea");
    ta.value = text;
    document.body.appendChild(ta);
    ta.select();
    const ok = document.execCommand("copy");
    ta.remove();
    return ok;
  } catch (_) { return false; }
}
