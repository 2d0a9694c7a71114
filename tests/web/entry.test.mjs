// node --test tests/web : the entry module web/lokr.js without a browser: it does nothing without a
// DOM or ComfyUI, registers one extension when there is an app, hooks only the pack's node types and
// adds the stylesheet once.
import { test } from "node:test";
import assert from "node:assert/strict";

test("the extension module loads without a DOM or ComfyUI and does nothing", async () => {
  const mod = await import("../../web/lokr.js");
  assert.equal(typeof mod, "object");
});

test("degrades: frontend without registerExtension, node without addDOMWidget", async () => {
  const saved = { document: globalThis.document, comfyAPI: globalThis.comfyAPI };
  try {
    globalThis.document = { getElementById: () => null };
    globalThis.comfyAPI = { app: { app: {} }, api: { api: null } };
    await import("../../web/lokr.js?no-register");  // app lacks registerExtension: nothing happens

    const registered = [];
    globalThis.comfyAPI = { app: { app: { registerExtension: (ext) => registered.push(ext) } }, api: { api: null } };
    const head = [];
    globalThis.document = {
      getElementById: (id) => head.find((e) => e.id === id) ?? null,
      createElement: (tag) => ({ tag, set textContent(v) {}, style: {} }),
      head: { appendChild: (e) => head.push(e) },
    };
    await import("../../web/lokr.js?register");
    assert.equal(registered.length, 1);
    assert.equal(registered[0].name, "comfyui-lokr.panel");
    const nodeType = { prototype: {} };
    await registered[0].beforeRegisterNodeDef(nodeType, {
      name: "LoKrLoader", input: { required: { lokr_name: [["a.safetensors"]] } },
    });
    assert.equal(typeof nodeType.prototype.onNodeCreated, "function");
    // the stylesheet beside the entry module, as a <link>
    assert.equal(head.length, 1);
    assert.equal(head[0].tag, "link");
    assert.equal(head[0].rel, "stylesheet");
    assert.equal(head[0].href, new URL("../../web/lokr.css", import.meta.url).href);
    // a node without widgets / addDOMWidget: no panel, no throw
    const node = {};
    nodeType.prototype.onNodeCreated.call(node);
    assert.equal(node.lokrPanel, undefined);
    // the stack node (lokr_1..lokr_N) gets a hook too; without addDOMWidget it has no panel
    const stackType = { prototype: {} };
    await registered[0].beforeRegisterNodeDef(stackType, {
      name: "LoKrStack", input: { required: { lokr_1: [["None"]], strength_model_1: ["FLOAT"], lokr_2: [["None"]] } },
    });
    assert.equal(typeof stackType.prototype.onNodeCreated, "function");
    const stackNode = { widgets: [{ name: "lokr_1", value: "None" }] };
    stackType.prototype.onNodeCreated.call(stackNode);
    assert.equal(stackNode.lokrStackPanel, undefined);
    // the Power Loader (rows) gets a hook too; without addDOMWidget its rows widget is left as it is
    const powerType = { prototype: {} };
    await registered[0].beforeRegisterNodeDef(powerType, {
      name: "LoKrPowerLoader", input: { required: { model: ["MODEL"], clip: ["CLIP"], rows: ["STRING"] } },
    });
    assert.equal(typeof powerType.prototype.onNodeCreated, "function");
    const powerNode = { widgets: [{ name: "rows", value: "[]" }] };
    powerType.prototype.onNodeCreated.call(powerNode);
    assert.equal(powerNode.lokrPowerPanel, undefined);
    assert.equal(powerNode.widgets[0].hidden, undefined);  // still shown: there is no editor to replace it
    assert.equal(head.length, 1);  // the stylesheet is added once
    // other packs' nodes are left alone
    const other = { prototype: {} };
    await registered[0].beforeRegisterNodeDef(other, { name: "LoraLoader", input: { required: { lora_name: [[]] } } });
    assert.equal(other.prototype.onNodeCreated, undefined);
    // malformed node data does not throw
    await registered[0].beforeRegisterNodeDef({ prototype: {} }, null);
  } finally {
    globalThis.document = saved.document;
    globalThis.comfyAPI = saved.comfyAPI;
    if (saved.document === undefined) delete globalThis.document;
    if (saved.comfyAPI === undefined) delete globalThis.comfyAPI;
  }
});
