// The sidecar block of a panel: preview image, title and source link (logic/sidecar.js sidecarView).
import { hasSidecarBlock } from "../logic/sidecar.js";
import { el } from "./dom.js";

/**
 * A `.lokr-side` element for sidecar `view`, or null when it has nothing to show. `src(route)` turns
 * the preview route into the address to load; `onLoad()` runs once the image is laid out (to fit
 * the node). An image that fails to load is removed. The link opens in a new tab, without opener.
 */
export function sidecarBlock(view, src, onLoad) {
  if (!hasSidecarBlock(view)) return null;
  const box = el("div", "lokr-side");
  box.dataset.lokr = "sidecar";
  if (view.preview) {
    const img = el("img", "lokr-preview");
    img.dataset.lokr = "preview";
    img.alt = view.title ?? "preview";
    img.decoding = "async";
    img.addEventListener("load", () => onLoad?.());
    img.addEventListener("error", () => { img.remove(); onLoad?.(); });
    img.src = src(view.preview);
    box.appendChild(img);
  }
  const meta = el("div", "lokr-side-meta");
  if (view.title) meta.appendChild(el("div", "lokr-title", view.title));
  if (view.sourceUrl) {
    const a = el("a", "lokr-link", "Source ↗");
    a.dataset.lokr = "source";
    a.href = view.sourceUrl;
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    a.title = view.sourceUrl;
    a.addEventListener("click", (ev) => ev.stopPropagation());
    meta.appendChild(a);
  }
  box.appendChild(meta);
  return box;
}
