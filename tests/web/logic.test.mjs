// node --test tests/web : the pure logic of the web extension (web/logic/*.js).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import * as blockVector from "../../web/logic/block_vector.js";
import * as dit from "../../web/logic/dit_blocks.js";
import * as family from "../../web/logic/family.js";
import * as format from "../../web/logic/format.js";
import * as nodeUi from "../../web/logic/node_ui.js";
import * as stack from "../../web/logic/stack.js";
import * as summary from "../../web/logic/summary.js";

const L = { ...blockVector, ...dit, ...family, ...format, ...nodeUi, ...stack, ...summary };

const shared = JSON.parse(readFileSync(new URL("./block_vectors.json", import.meta.url), "utf8"));

test("block IDs: lengths and order per family (docs/block-weights.md)", () => {
  assert.equal(L.blockIds("sd1", 17).length, 17);
  assert.equal(L.blockIds("sd1", 26).length, 26);
  assert.equal(L.blockIds("sdxl", 12).length, 12);
  assert.equal(L.blockIds("sdxl", 20).length, 20);
  assert.deepEqual(L.blockIds("sd1", 17).slice(0, 8), ["BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "MID"]);
  assert.deepEqual(L.blockIds("sdxl", 12).slice(-2), ["OUT04", "OUT05"]);
  assert.deepEqual(L.blockIds("sd2", 26), L.blockIds("sd1", 26));
  assert.equal(L.blockIds("sdxl", 17), null);
  assert.equal(L.blockIds("flux", 17), null);
  assert.deepEqual(L.familiesForLength(17), ["sd1", "sd2"]);
  assert.deepEqual(L.familiesForLength(20), ["sdxl"]);
  assert.deepEqual(L.familiesForLength(5), []);
});

for (const [i, c] of shared.cases.entries()) {
  test(`shared vector case ${i}: ${JSON.stringify(c.vector).slice(0, 40)} (${c.family})`, () => {
    const opts = { family: c.family, A: c.A ?? 4, B: c.B ?? 1, blocks: c.dit_blocks ?? null };
    if (c.error) {
      assert.throws(() => L.parseBlockVector(c.vector, opts), (e) => e.message.includes(c.error));
      return;
    }
    const parsed = L.parseBlockVector(c.vector, opts);
    assert.deepEqual(Object.keys(parsed.blocks), Object.keys(c.blocks));
    for (const [id, v] of Object.entries(c.blocks)) {
      if (v === null) assert.equal(parsed.blocks[id], null, id);
      else assert.ok(Math.abs(parsed.blocks[id] - v) < 1e-12, `${id}: ${parsed.blocks[id]} != ${v}`);
    }
  });
}

test("parseBlockVector infers the family from the length and resolves presets", () => {
  assert.equal(L.parseBlockVector("1,1,1,1,1,1,1,1,1,1,1,1").family, "sdxl");
  assert.equal(L.parseBlockVector("1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1").family, "sd1");
  const p = L.parseBlockVector("SD-OUT", { presets: { "SD-OUT": "1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1" } });
  assert.equal(p.blocks.OUT11, 1);
  assert.equal(p.blocks.MID, 0);
  assert.throws(() => L.parseBlockVector("1,1", {}), /has 2 values; expected 17 for SD 1.x\/2.x .* or 12 for SDXL.*58 for Flux.1/);
  assert.throws(() => L.parseBlockVector("1,1", { family: "sd4" }), /unknown model family 'sd4'/);
  // transformers: 58 values is Flux.1's full layout; a short form needs the family (or the editor's layout)
  assert.equal(L.parseBlockVector(Array(58).fill(1).join(",")).family, "flux");
  assert.equal(L.parseBlockVector("1,0.5,2", { fallback: "flux" }).blocks["single 37"], 2);
  assert.throws(() => L.parseBlockVector("1,0.5,2", { fallback: "sd1" }), /has 3 values/);
});

test("parseToken", () => {
  assert.equal(L.parseToken(" 2.5 "), 2.5);
  assert.equal(L.parseToken("a", { A: 3 }), 1.5);
  assert.equal(L.parseToken("b", { B: 1 }), 0.5);
  assert.equal(L.parseToken("R"), null);
  assert.throws(() => L.parseToken("1.2.3"), /'1.2.3' is not a number/);
  assert.equal(L.parseToken("A"), 4);  // lokr_core's default A=4, B=1
  assert.equal(L.parseToken("r"), null);
  assert.throws(() => L.parseToken("Infinity"), /not a number/);
});

test("formatVector / formatNumber / formatCounts", () => {
  assert.equal(L.formatVector([1, 0.5, 0.123456, "R", -1]), "1,0.5,0.1235,R,-1");
  assert.equal(L.formatNumber(0.30000000000000004), "0.3");
  assert.equal(L.formatNumber("inf"), "∞");
  assert.equal(L.formatNumber("-inf"), "-∞");
  assert.equal(L.formatNumber("nan"), "NaN");
  assert.equal(L.formatNumber(1e10), "10000000000");
  assert.equal(L.formatNumber(12345678.5), "1.23e+7");
  assert.equal(L.formatNumber(null), "–");
  assert.equal(L.formatNumber("4"), "4");
  assert.equal(L.formatNumber(Infinity), "∞");
  assert.equal(L.formatCounts({ full: 2, split_w2: 10, tucker: 2 }), "split_w2: 10, full: 2, tucker: 2");
  assert.equal(L.formatCounts(null), "");
  // the formatted vector parses back to the same values
  const v = [1, 0.25, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0.5];
  assert.deepEqual(L.parseBlockVector(L.formatVector(v)).values, v);
});

test("family labels, checkpoint-name guesses and mismatch text", () => {
  assert.equal(L.familyLabel("sdxl"), "SDXL");
  assert.equal(L.familyLabel(null), "unknown");
  assert.equal(L.familyLabel("flux"), "Flux.1");
  assert.equal(L.familyLabel("flux/chroma"), "Flux.1 or Chroma");
  assert.equal(L.familyLabel("sd9"), "sd9");
  assert.equal(L.familyFromCheckpointName("flux1-dev.safetensors"), "flux");
  assert.equal(L.familyFromCheckpointName("flux1-krea-dev_fp8_scaled.safetensors"), "flux");  // Flux.1 Krea is a Flux.1
  assert.equal(L.familyFromCheckpointName("flux2_dev_fp8mixed.safetensors"), "flux2");
  assert.equal(L.familyFromCheckpointName("sd3.5_medium.safetensors"), "sd3");
  assert.equal(L.familyFromCheckpointName("wan2.1_t2v_1.3B_fp16.safetensors"), "wan");  // not SD 2.1
  assert.equal(L.familyFromCheckpointName("qwen_image_fp8_e4m3fn.safetensors"), "qwen_image");
  assert.equal(L.familyFromCheckpointName("z_image_turbo_bf16.safetensors"), "zimage");
  assert.equal(L.familyFromCheckpointName("swan_lake.safetensors"), null);
  assert.equal(L.familyMismatch("flux", "sd3"), "This LoKr looks like Flux.1, the model like SD3 / SD3.5");
  assert.equal(L.familyMismatch("flux/chroma", "chroma"), null);
  assert.equal(L.familyMismatch("zimage", "sdxl", { file: "Z-Image (server)", model: "SDXL (server)" }),
    "This LoKr looks like Z-Image (server), the model like SDXL (server)");
  assert.equal(L.familyMismatch("sd1/sd2", "flux"), "This LoKr looks like SD1.x or SD2.x, the model like Flux.1");
  assert.equal(L.familyFromCheckpointName("sd_xl_base_1.0.safetensors"), "sdxl");
  assert.equal(L.familyFromCheckpointName("ponyDiffusionV6XL.safetensors"), "sdxl");
  assert.equal(L.familyFromCheckpointName("v2-1_768-ema-pruned.safetensors"), "sd2");
  assert.equal(L.familyFromCheckpointName("v1-5-pruned-emaonly.safetensors"), "sd1");
  assert.equal(L.familyFromCheckpointName("mystery.safetensors"), null);
  assert.equal(L.familyFromCheckpointName(null), null);
  assert.equal(L.familyMismatch("sd1", "sdxl"), "This LoKr looks like SD1.x, the model like SDXL");
  assert.equal(L.familyMismatch("sd1", "sd1"), null);
  assert.equal(L.familyMismatch(null, "sd1"), null);
  assert.equal(L.familyMismatch("sdxl", null), null);
  assert.equal(L.familyMismatch("sd1/sd2", "sd2"), null);
  assert.equal(L.familyMismatch("sd1", "sd1/sd2"), null);
  assert.equal(L.familyMismatch("sd1/sd2", "sdxl"), "This LoKr looks like SD1.x or SD2.x, the model like SDXL");
  assert.equal(L.familyLabel("sd1/sd2"), "SD1.x or SD2.x");
});

test("triggerWords: explicit list, else top tags, else tag frequency totals", () => {
  assert.deepEqual(L.triggerWords({ trigger_words: ["ohwx", "dog"] }), ["ohwx", "dog"]);
  assert.deepEqual(L.triggerWords({ metadata: { trigger_words: ["ohwx"], top_tags: [["cat", 3]] } }), ["ohwx"]);
  assert.deepEqual(L.triggerWords({ metadata: { trigger_words: [], top_tags: [["cat", 3], ["hat", 1]] } }), ["cat", "hat"]);
  const s = { metadata: { tag_frequency: { "10_a": { cat: 3, hat: 5 }, "5_b": { cat: 4 } } } };
  assert.deepEqual(L.triggerWords(s), ["cat", "hat"]);
  assert.deepEqual(L.triggerWords(s, 1), ["cat"]);
  assert.deepEqual(L.triggerWords(null), []);
  assert.deepEqual(L.triggerWords({}), []);
});

test("summaryRows: the lokr_core.report.summarize schema", () => {
  const rows = L.summaryRows({
    file: "x.safetensors", format: "lycoris", family: "sd1", module_count: 140,
    blocks: { te: 12, down: 40, mid: 8, up: 80 }, layouts: { "full+split": 128, "full+full": 12 },
    ranks: { 4: 128, full: 12 }, params: 2500000, dora: 0, scale_rule: "file",
    scales: { a: 0.5 }, scale_values: { "0.5": 128, "1": 12 }, warnings: [],
    other_modules: { lora: 3 },
    metadata: {
      training: { ss_sd_model_name: "v1-5.safetensors", ss_network_dim: "32", ss_network_alpha: "1",
        ss_network_args: { algo: "lokr", factor: 8 } },
      trigger_words: [], top_tags: [["cat", 9], ["hat", 4]], keys: [],
    },
  });
  const map = Object.fromEntries(rows.map((r) => [r.label, r.text]));
  assert.deepEqual(map, {
    Family: "SD1.x",
    Modules: "140 (te: 12, down: 40, mid: 8, up: 80), 2.5M params",
    Layouts: "full+split: 128, full+full: 12",
    Rank: "4 ×128, full ×12",
    Scale: "0.5 ×128, 1 ×12 (rule: file)",
    Trained: "dim 32, alpha 1",
    "Base model": "v1-5.safetensors",
    Algorithm: "algo=lokr factor=8",
    "Not LoKr": "lora: 3",
  });
  assert.deepEqual(L.summaryRows(null), []);
  const one = Object.fromEntries(L.summaryRows({ family: "sdxl", module_count: 2, scale_values: { 1: 2 }, dora: 2 })
    .map((r) => [r.label, r.text]));
  assert.deepEqual(one, { Family: "SDXL", Modules: "2", Scale: "1", DoRA: "2 modules" });
  assert.equal(L.formatCount(1234), "1.2k");
  assert.equal(L.formatCount(12), "12");
  assert.equal(L.formatTally({ 8: 3 }), "8");
  assert.equal(L.formatTally(null), "");
});

test("stack slots: slot names in slot order, chosen files without None / empty", () => {
  assert.deepEqual(L.stackSlotNames(["strength_model_1", "lokr_10", "lokr_2", "lokr_1", "lokr_name", "lokr_x", "lora_stack"]),
    ["lokr_1", "lokr_2", "lokr_10"]);
  assert.deepEqual(L.stackSlotNames(undefined), []);
  const widgets = [
    { name: "lokr_2", value: "b.safetensors" }, { name: "strength_model_1", value: 1 },
    { name: "lokr_1", value: "a.safetensors" }, { name: "lokr_3", value: L.NO_FILE },
    { name: "lokr_4", value: "" }, { name: "lokr_5", value: "a.safetensors" }, { name: "lokr_stack_panel" }, null,
  ];
  assert.deepEqual(L.stackSelection(widgets), [
    { slot: 1, name: "lokr_1", file: "a.safetensors" },
    { slot: 2, name: "lokr_2", file: "b.safetensors" },
    { slot: 5, name: "lokr_5", file: "a.safetensors" },
  ]);
  assert.deepEqual(L.stackSelection([{ name: "lokr_1", value: "None" }]), []);
  assert.deepEqual(L.stackSelection(null), []);
});

test("compactSummary: one line for the stack panel", () => {
  const line = L.compactSummary({
    family: "sd1", module_count: 40, layouts: { "split-w2": 36, full: 4 }, scale_values: { 1: 40 },
    metadata: { trigger_words: [], top_tags: [["ohwx corgi", 24], ["grass", 9], ["sitting", 7], ["outdoors", 5]] },
  });
  assert.deepEqual(line, {
    family: "SD1.x", text: "40 modules · split-w2: 36, full: 4 · scale 1",
    words: ["ohwx corgi", "grass", "sitting"], explicit: false,
  });
  const one = L.compactSummary({ family: "sdxl", module_count: 1, scale_values: { "0.5": 1 }, trigger_words: ["zk"] }, 5);
  assert.deepEqual(one, { family: "SDXL", text: "1 module · scale 0.5", words: ["zk"], explicit: true });
  assert.deepEqual(L.compactSummary(null), { family: "unknown", text: "", words: [], explicit: false });
  assert.equal(L.scaleText({ scales: "inf" }), "∞");
  assert.equal(L.scaleText({}), "");
  assert.equal(L.hasTriggerWords({ metadata: { trigger_words: ["a"] } }), true);
  assert.equal(L.hasTriggerWords({ metadata: { trigger_words: [] } }), false);
});

test("reportRows: counts, warnings, unmatched names cut", () => {
  const rows = L.reportRows({ matched: { a: 1, b: 2 }, unmatched: ["x1", "x2", "x3"], shape_mismatch: {} }, 2);
  assert.deepEqual(rows, [
    { label: "Matched", text: "2" },
    { label: "Unmatched", text: "3", warn: true },
    { label: "Shape mismatch", text: "0", warn: false },
    { label: "Not applied", text: "x1, x2 … +1", warn: true },
  ]);
  assert.deepEqual(L.reportRows({ matched: 5, total: 7 })[0], { label: "Matched", text: "5 / 7" });
  assert.deepEqual(L.reportRows(undefined), []);
});

test("warningsOf and presetsFor", () => {
  assert.deepEqual(L.warningsOf({ warnings: "x" }), ["x"]);
  assert.deepEqual(L.warningsOf({ warnings: ["a", "b"] }), ["a", "b"]);
  assert.deepEqual(L.warningsOf({}), []);
  const presets = { "SD-ALL": "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1", "XL-ALL": "1,1,1,1,1,1,1,1,1,1,1,1" };
  assert.deepEqual(Object.keys(L.presetsFor(presets, "sd1", 17)), ["SD-ALL"]);
  assert.deepEqual(Object.keys(L.presetsFor(presets, "sdxl", 12)), ["XL-ALL"]);
  assert.deepEqual(L.presetsFor(presets, "sdxl", 20), {});
});

test("editor layouts: labels and the layout of a parsed vector", () => {
  const layouts = L.editorLayouts();
  assert.deepEqual(layouts.slice(0, 4).map((l) => l.label),
    ["SD 1.x/2.x · 17 values", "SD 1.x/2.x · 26 values", "SDXL · 12 values", "SDXL · 20 values"]);
  const flux = layouts[L.layoutIndex(layouts, "flux", 58)];
  assert.equal(flux.label, "Flux.1 · double 19, single 38");
  assert.deepEqual(flux.ids.slice(0, 3), ["BASE", "double 0", "double 1"]);
  assert.deepEqual(flux.ids.slice(19, 21), ["double 18", "single 0"]);
  assert.equal(flux.ids.at(-1), "single 37");
  assert.equal(layouts[L.layoutIndex(layouts, "sd3", 25)].label, "SD3 / SD3.5 · joint 24");
  assert.equal(layouts[L.layoutIndex(layouts, "wan", 41)].ids.at(-1), "layers 39");
  assert.deepEqual(layouts.map((l) => l.family).slice(4), Object.keys(L.DIT_BLOCKS));
  assert.equal(L.layoutIndex(layouts, "sd1", 26), 1);
  assert.equal(L.layoutIndex(layouts, "sd2", 17), 0);  // SD 2.x uses the SD 1.x layouts
  assert.equal(L.layoutIndex(layouts, "sd1/sd2", 17), 0);
  assert.equal(L.layoutIndex(layouts, "sdxl", 20), 3);
  assert.equal(L.layoutIndex(layouts, "sdxl", 17), -1);
  assert.equal(L.layoutIndex(layouts, "flux/chroma", 58), L.layoutIndex(layouts, "flux", 58));
  // a run on a Flux.2 Klein-sized model (8 double, 24 single): that family's layout has its counts
  const klein = L.editorLayouts({ family: "flux2", blocks: { double: 8, single: 24 } });
  assert.equal(klein[L.layoutIndex(klein, "flux2", 33)].label, "Flux.2 · double 8, single 24");
  assert.equal(L.layoutIndex(klein, "flux2", 57), -1);
  for (const l of layouts) assert.equal(new Set(l.ids).size, l.ids.length);
});

test("DiT vectors: full, per group, % spec, presets, errors (lokr_core's rules)", () => {
  const p = L.parseBlockVector("1,0.5,2", { family: "flux" });
  assert.equal(p.ids.length, 58);
  assert.equal(p.blocks["double 18"], 0.5);
  assert.equal(p.blocks["single 0"], 2);
  const small = { double: 2, single: 2 };
  assert.deepEqual(L.parseBlockVector("%default=0,base=1,double1=0.5", { family: "flux", blocks: small }).blocks,
    { BASE: 1, "double 0": 0, "double 1": 0.5, "single 0": 0, "single 1": 0 });
  assert.deepEqual(L.parseBlockVector("FLUX-SINGLE-ONLY", { family: "chroma", blocks: small }).values, [1, 0, 0, 1, 1]);
  assert.deepEqual(L.parseBlockVector("1,R,A", { family: "wan", blocks: { layers: 2 }, A: 3 }).values, [1, null, 3]);
  assert.throws(() => L.parseBlockVector("FLUX-DBL-TAIL", { family: "flux", blocks: small }), /double 13.*double 0\.\.double 1/);
  assert.throws(() => L.parseBlockVector("1,1,1,1", { family: "flux", blocks: small }),
    /4 values given; expected 5 values \(BASE, double 0\.\.1, single 0\.\.1\) or 3 values/);
  assert.throws(() => L.parseBlockVector("%double=1", { family: "sd3" }), /sd3 has no double blocks; its groups are joint/);
  assert.throws(() => L.parseBlockVector("SD-ALL", { family: "flux", presets: { "SD-ALL": "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1" } }),
    /preset 'SD-ALL' is for SD UNets; for Flux.1 use a DiT preset/);
  assert.throws(() => L.parseBlockVector("DIT-ALL", { family: "sdxl" }), /preset 'DIT-ALL' is for transformer/);
  assert.equal(L.parseBlockVector("DIT-HALF", { fallback: "zimage" }).blocks["layers 29"], 0.5);
  assert.deepEqual(L.countsOf(L.ditLayout("sd3")), { joint: 24 });
  assert.equal(L.countsOf(L.blockIds("sd1", 17)), null);
  assert.deepEqual(L.ditGroups(L.ditLayout("flux")), ["BASE", "double", "single"]);
  assert.equal(L.ditFamily("flux/chroma"), "flux");
  assert.equal(L.ditFamily("sdxl"), null);
  assert.equal(L.isDitFamily("qwen_image"), true);
  // presets offered for a layout: DiT presets that fit it; SD ones by length
  const table = { "SD-ALL": "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1" };
  assert.deepEqual(Object.keys(L.presetsFor(table, "sd1", 17)), ["SD-ALL"]);
  const fluxPresets = Object.keys(L.presetsFor(table, "flux", 58));
  assert.ok(fluxPresets.includes("FLUX-DBL-TAIL") && fluxPresets.includes("DIT-ALL") && !fluxPresets.includes("SD-ALL"));
  assert.ok(!Object.keys(L.presetsFor(table, "flux", 5, small)).includes("FLUX-DBL-TAIL"));
  assert.ok(!Object.keys(L.presetsFor(table, "sd3", 25)).includes("FLUX-DOUBLE-ONLY"));
  assert.deepEqual(Object.keys(L.presetsFor(table, "sd3", 25)), ["DIT-ALL", "DIT-NONE", "DIT-BASE-ONLY", "DIT-BLOCKS-ONLY", "DIT-HALF"]);
});

test("panelsFor: the pack's node definitions get the panels their inputs call for", () => {
  const def = (name, required, optional = {}) => ({ name, input: { required, optional } });
  assert.deepEqual(L.panelsFor(def("LoKrLoader", { model: ["MODEL"], lokr_name: [[]] })),
    { file: "lokr_name", vector: null, slots: [], power: null });
  assert.deepEqual(L.panelsFor(def("LoKrBlockWeights", { lokr_name: [[]], preset: [[]], block_vector: ["STRING"] }, { A: ["FLOAT"] })),
    { file: "lokr_name", vector: "block_vector", slots: [], power: null });
  assert.deepEqual(L.panelsFor(def("LoKrStack", { lokr_2: [[]], strength_model_1: ["FLOAT"], lokr_1: [[]] })),
    { file: null, vector: null, slots: ["lokr_1", "lokr_2"], power: null });
  assert.deepEqual(L.panelsFor(def("LoKrPowerLoader", { model: ["MODEL"], clip: ["CLIP"], rows: ["STRING"] }, { lora_stack: ["LORA_STACK"] })),
    { file: null, vector: null, slots: [], power: "rows" });
  assert.equal(L.panelsFor(def("OtherPowerLoader", { rows: ["STRING"] })), null);  // not the pack's
  assert.equal(L.panelsFor(def("LoKrApplyStack", { lora_stack: ["LORA_STACK"] })), null);
  assert.equal(L.panelsFor(def("LoraLoader", { lora_name: [[]] })), null);  // another pack's (core's) node
  assert.equal(L.panelsFor(def("LoKrLoader", { lora_name: [[]], vector: ["STRING"], lbw: ["STRING"] })), null);
  assert.deepEqual(L.panelsFor({ name: "X", python_module: "custom_nodes.comfyui-lokr", input: { required: { lokr_name: [[]] } } }),
    { file: "lokr_name", vector: null, slots: [], power: null });
  assert.equal(L.panelsFor(null), null);
  assert.deepEqual(L.inputNames(def("N", { a: 1 }, { b: 2 })), ["a", "b"]);
  assert.deepEqual(L.inputNames(undefined), []);
});

test("run report from a node's executed message; editor text and family from the node's widgets", () => {
  assert.deepEqual(L.reportFromMessage({ lokr_report: [{ matched: 1 }] }), { matched: 1 });
  assert.deepEqual(L.reportFromMessage({ lokr_report: { matched: 2 } }), { matched: 2 });
  assert.equal(L.reportFromMessage({ lokr_report: [] }), null);
  assert.equal(L.reportFromMessage({ text: ["x"] }), null);
  assert.equal(L.reportFromMessage(undefined), null);
  assert.equal(L.vectorText("SD-OUTALL", "1,1"), "SD-OUTALL");
  assert.equal(L.vectorText("custom", " 1,0 "), "1,0");
  assert.equal(L.vectorText(undefined, undefined), "");
  assert.equal(L.parseFamily("sdxl"), "sdxl");
  assert.equal(L.parseFamily("flux", "sd3"), "flux");
  assert.equal(L.parseFamily("auto", "flux/chroma"), "flux/chroma");  // the last run's model
  assert.equal(L.parseFamily("auto"), null);
  assert.equal(L.parseFamily("sd9", null), null);
  assert.deepEqual(L.detectedLayout({ block_family: "flux", blocks: { double: 2, single: 2 } }),
    { family: "flux", blocks: { double: 2, single: 2 } });
  assert.deepEqual(L.detectedLayout({ block_family: "sdxl", blocks: null }), { family: "sdxl", blocks: null });
  assert.equal(L.detectedLayout({ matched: 3 }), null);
  assert.equal(L.detectedLayout(null), null);
});

test("summaryFamily and the warning badge text", () => {
  assert.equal(L.summaryFamily({ family: "sdxl" }), "sdxl");
  assert.equal(L.summaryFamily({ model_family: "sd1" }), "sd1");
  assert.equal(L.summaryFamily(null), undefined);
  assert.equal(L.warningBadgeText("short"), "⚠ short");
  const long = "x".repeat(41);
  assert.equal(L.warningBadgeText(long), "⚠ " + "x".repeat(38) + "…");
});

test("familyView: the run report's families and labels first, then the summary and the checkpoint name", () => {
  // before a run: the summary's family, the model guessed from the checkpoint name
  let v = L.familyView({ family: "sd1" }, null, "sdxl");
  assert.deepEqual(v, { file: "sd1", fileLabel: "SD1.x", model: "sdxl", modelLabel: "SDXL",
    mismatch: "This LoKr looks like SD1.x, the model like SDXL" });
  // the server's labels win; a report's model family (read from the weights) beats the name guess
  v = L.familyView({ family: "flux", family_label: "Flux.1" }, { family: "flux", family_label: "Flux.1 (file)",
    model_family: "sd3", model_family_label: "SD3 / SD3.5 (model)" }, "flux");
  assert.equal(v.mismatch, "This LoKr looks like Flux.1 (file), the model like SD3 / SD3.5 (model)");
  assert.equal(v.modelLabel, "SD3 / SD3.5 (model)");
  // a report without the fields (older nodes) changes nothing; null ids fall back
  v = L.familyView({ family: "zimage" }, { matched: 3 }, "qwen_image");
  assert.equal(v.mismatch, "This LoKr looks like Z-Image, the model like Qwen-Image");
  v = L.familyView({ family: "flux/chroma" }, { family: null, model_family: "chroma", model_family_label: "Chroma" }, null);
  assert.deepEqual([v.fileLabel, v.modelLabel, v.mismatch], ["Flux.1 or Chroma", "Chroma", null]);
  assert.equal(L.familyView(null, null, null).fileLabel, "unknown");
  assert.equal(L.summaryFamilyLabel({ family: "wan", family_label: "Wan 2.1 / 2.2" }), "Wan 2.1 / 2.2");
  assert.equal(L.summaryFamilyLabel({ family: "hidream" }), "HiDream");
  assert.equal(L.compactSummary({ family: "qwen_image", module_count: 2 }).family, "Qwen-Image");
});

test("reportRows: nearest candidates and skipped modules with their reasons", () => {
  const rows = L.reportRows({
    matched: 3, total: 6, unmatched: ["lycoris_blocks_9_x", "odd"], shape_mismatch: {},
    nearest: { lycoris_blocks_9_x: ["diffusion_model.blocks.1.x.weight", "b"], odd: [] },
    skipped: { lycoris_norm_out_linear: "swapped halves: not applied in bypass" },
  });
  assert.deepEqual(rows.slice(-2), [
    { label: "Not applied", text: "lycoris_blocks_9_x (nearest: diffusion_model.blocks.1.x.weight), odd", warn: true },
    { label: "Skipped", text: "lycoris_norm_out_linear: swapped halves: not applied in bypass", warn: true },
  ]);
  assert.equal(L.reportRows({ matched: 1, skipped: {} }).length, 1);
});
