// What the panel shows of a file's sidecar metadata (the /lokr/sidecar answer, nodes/file_routes.py):
// title, base model, source link (http / https only), preview address, trigger words; and how they
// join the /lokr/info summary's rows and tags. Pure: no DOM, no network.
import { hasTriggerWords, triggerWords } from "./summary.js";

const PREVIEW_ROUTE = "/lokr/preview?file=";

/** `text` when it is a non-empty string (trimmed), else null. */
function textOrNull(text) {
  return typeof text === "string" && text.trim() ? text.trim() : null;
}

/** The address when it is an absolute http: or https: URL (as the browser normalises it), else null:
 *  a `javascript:` / `data:` / relative link is never shown. */
export function safeHttpUrl(url) {
  if (typeof url !== "string") return null;
  try {
    const u = new URL(url);
    return u.protocol === "http:" || u.protocol === "https:" ? u.href : null;
  } catch (_) {
    return null;
  }
}

/** The preview route address the server sent (`/lokr/preview?file=...`), else null. */
export function previewRoute(preview) {
  return typeof preview === "string" && preview.startsWith(PREVIEW_ROUTE) ? preview : null;
}

/**
 * The panel's view of a /lokr/sidecar answer: {title, baseModel, sourceUrl, preview (route address),
 * words (trigger words, all sources)}; null for no answer. Values of the wrong type are dropped.
 */
export function sidecarView(body) {
  if (!body || typeof body !== "object") return null;
  const words = Array.isArray(body.trigger_words)
    ? body.trigger_words.filter((w) => typeof w === "string" && w.trim()).map((w) => w.trim()) : [];
  return Object.freeze({
    title: textOrNull(body.title),
    baseModel: textOrNull(body.base_model),
    sourceUrl: safeHttpUrl(body.source_url),
    preview: previewRoute(body.preview),
    words: Object.freeze(words),
  });
}

/** Whether the view has anything for the sidecar block (preview, title or source link). */
export function hasSidecarBlock(view) {
  return !!(view && (view.preview || view.title || view.sourceUrl));
}

/**
 * The chips under the panel: the sidecar's trigger words (every source, docs/sidecar.md) when it has
 * any, else the summary's trigger words or top tags. {words (at most `limit`), label}.
 */
export function panelTags(summary, view, limit = 12) {
  if (view?.words?.length) return { words: view.words.slice(0, limit), label: "Trigger words" };
  return { words: triggerWords(summary, limit), label: hasTriggerWords(summary) ? "Trigger words" : "Top tags" };
}

/** The summary's panel `rows` with the sidecar's base model in place of the header's (when it names one). */
export function withSidecarRows(rows, view) {
  if (!view?.baseModel) return rows;
  const out = rows.filter((r) => r.label !== "Base model");
  out.push({ label: "Base model", text: view.baseModel });
  return out;
}
