// What lies upstream of a node, and a poll that lives as long as the node is in a graph.
import { CHECKPOINT_WIDGETS } from "../logic/node_ui.js";
import { chain } from "./hooks.js";

/** Checkpoint name upstream of the node's "model" input (follows MODEL links, at most 12 hops). */
export function upstreamCheckpoint(app, node) {
  const graph = node.graph ?? app?.graph;
  let cur = node;
  for (let hop = 0; hop < 12 && cur; hop++) {
    const ckpt = cur.widgets?.find((w) => CHECKPOINT_WIDGETS.includes(w.name));
    if (ckpt && cur !== node) return String(ckpt.value ?? "");
    const input = cur.inputs?.find((i) => i.name === "model" || i.type === "MODEL");
    if (!input || input.link == null) return null;
    const link = graph?.links?.get ? graph.links.get(input.link) : graph?.links?.[input.link];
    if (!link) return null;
    cur = graph.getNodeById?.(link.origin_id);
  }
  return null;
}

/**
 * Call `fn` every `ms` milliseconds while `node` is in a graph (from onAdded to onRemoved, or until
 * the graph no longer holds it). The model family upstream can change on another node, and the Vue
 * node mode never calls onDrawForeground, so a light poll is the one trigger that works in every
 * renderer.
 */
export function watchWhileInGraph(node, fn, ms) {
  let timer = null;
  const stop = () => { if (timer !== null) { clearInterval(timer); timer = null; } };
  const tick = () => {
    if (node.graph?.getNodeById?.(node.id) !== node) { stop(); return; }
    try { fn(); } catch (e) { console.warn("[comfyui-lokr]", e); stop(); }
  };
  const start = () => { if (timer === null) timer = setInterval(tick, ms); };
  chain(node, "onAdded", start);
  chain(node, "onRemoved", stop);
  if (node.graph) start();
}
