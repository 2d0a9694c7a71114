// The pack's DOM widgets on a node: find a widget, mount a panel, fit the node to its content.
import { el } from "./dom.js";

/** The widget named `name` on `node`, or undefined. */
export function findWidget(node, name) {
  return node.widgets?.find((w) => w.name === name);
}

/** Height in px a DOM widget needs for `card` (its natural height, unconstrained by the host) plus margins. */
export function contentHeight(card, widget) {
  const margin = Number(widget?.margin ?? 10);
  return Math.max(30, Math.ceil(card.offsetHeight || 0) + 2 * margin + 2);
}

/**
 * A DOM widget named `name` on `node` holding `root` (in a .lokr-host), sized to its content and
 * never serialized; null when the frontend has no node.addDOMWidget.
 */
export function mountDOMWidget(node, name, root) {
  if (typeof node.addDOMWidget !== "function") return null;
  const host = el("div", "lokr-host");
  host.appendChild(root);
  let widget = null;
  widget = node.addDOMWidget(name, name, host, {
    serialize: false,
    hideOnZoom: false,
    getMinHeight: () => contentHeight(root, widget),
    getMaxHeight: () => contentHeight(root, widget),
  });
  if (widget) widget.serialize = false;
  return widget;
}

/** Grow `node` to its computed size now and again once the browser laid the new content out. */
export function resizeNode(app, node) {
  const fit = () => {
    try {
      if (typeof node.computeSize === "function" && typeof node.setSize === "function") {
        const [w, h] = node.computeSize();
        node.setSize([Math.max(node.size?.[0] ?? w, w), h]);
      }
      app?.graph?.setDirtyCanvas?.(true, true);
    } catch (_) { /* size is cosmetic */ }
  };
  fit();
  // text wraps change the height: fit once more after layout
  if (typeof requestAnimationFrame === "function") requestAnimationFrame(() => requestAnimationFrame(fit));
  setTimeout(fit, 80);
}
