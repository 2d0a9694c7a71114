// node --test tests/web : web/logic/sidecar.js, what the panel shows of a /lokr/sidecar answer.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as S from "../../web/logic/sidecar.js";

// the shape nodes/file_routes.py sidecar_payload sends (tests/nodes/test_routes.py checks the server side)
const ANSWER = {
  file: "sub/style.safetensors", kind: "lokr", family: "sd1", family_label: "SD1.x",
  trigger_words: ["lokr style", "red hat"], top_tags: [["cat", 4]], base_model: "SD 1.5", title: "Good Style",
  notes: null, preferred_weight: null, source_url: "https://civitai.com/models/12?modelVersionId=34",
  preview: "/lokr/preview?file=sub%2Fstyle.safetensors", has_thumbnail: false, sources: {}, problems: [],
};

test("sidecarView: title, base model, source link, preview route, words", () => {
  const v = S.sidecarView(ANSWER);
  assert.deepEqual({ ...v, words: [...v.words] }, {
    title: "Good Style", baseModel: "SD 1.5", sourceUrl: "https://civitai.com/models/12?modelVersionId=34",
    preview: "/lokr/preview?file=sub%2Fstyle.safetensors", words: ["lokr style", "red hat"],
  });
  assert.ok(Object.isFrozen(v) && S.hasSidecarBlock(v));
  assert.equal(S.sidecarView(null), null);
  assert.equal(S.sidecarView("x"), null);
});

test("sidecarView drops values of the wrong type and empty text", () => {
  const v = S.sidecarView({ title: "  ", base_model: 5, trigger_words: ["a", 3, "", " b "], preview: null });
  assert.deepEqual([v.title, v.baseModel, v.preview, v.sourceUrl, [...v.words]], [null, null, null, null, ["a", "b"]]);
  assert.equal(S.hasSidecarBlock(v), false);
  assert.equal(S.sidecarView({ trigger_words: "a, b" }).words.length, 0);
});

test("safeHttpUrl: only absolute http(s) links", () => {
  assert.equal(S.safeHttpUrl("https://civitai.com/models/1"), "https://civitai.com/models/1");
  assert.equal(S.safeHttpUrl("HTTP://Example.com/a b"), "http://example.com/a%20b");
  for (const bad of ["javascript:alert(1)", " javascript:alert(1)", "data:text/html,x", "file:///etc/passwd",
    "/relative", "//evil.example/x", "civitai.com/models/1", "", null, 3, { href: "https://x" }]) {
    assert.equal(S.safeHttpUrl(bad), null, String(bad));
  }
  assert.equal(S.sidecarView({ source_url: "javascript:alert(1)" }).sourceUrl, null);
});

test("previewRoute: only the pack's preview route", () => {
  assert.equal(S.previewRoute("/lokr/preview?file=a.safetensors"), "/lokr/preview?file=a.safetensors");
  for (const bad of ["/home/me/loras/a.png", "https://x/a.png", "/lokr/info?file=a", "", null]) {
    assert.equal(S.previewRoute(bad), null, String(bad));
  }
});

test("panelTags: the sidecar's trigger words first, else the summary's words or top tags", () => {
  const summary = { metadata: { trigger_words: [], top_tags: [["grass", 9], ["dog", 3]] } };
  assert.deepEqual(S.panelTags(summary, S.sidecarView(ANSWER)), { words: ["lokr style", "red hat"], label: "Trigger words" });
  assert.deepEqual(S.panelTags(summary, S.sidecarView({})), { words: ["grass", "dog"], label: "Top tags" });
  assert.deepEqual(S.panelTags({ metadata: { trigger_words: ["hdr"] } }, null), { words: ["hdr"], label: "Trigger words" });
  const many = S.sidecarView({ trigger_words: Array.from({ length: 20 }, (_, i) => `w${i}`) });
  assert.equal(S.panelTags(summary, many, 5).words.length, 5);
});

test("withSidecarRows: the sidecar's base model replaces the header's", () => {
  const rows = [{ label: "Modules", text: "4" }, { label: "Base model", text: "v1-5-pruned.safetensors" }];
  assert.deepEqual(S.withSidecarRows(rows, S.sidecarView(ANSWER)), [{ label: "Modules", text: "4" },
    { label: "Base model", text: "SD 1.5" }]);
  assert.equal(S.withSidecarRows(rows, S.sidecarView({})), rows);
  assert.equal(S.withSidecarRows(rows, null), rows);
});
