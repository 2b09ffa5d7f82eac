// Encodes a few hundred varied texts with the real Hugging Face tokenizers (Rust, via @anush008/tokenizers) and
// the DeepSeek-V3 tokenizer.json, writing tests/DeepSeekSharp.Tests/Fixtures/tokenizer/deepseek-v3-encodings.jsonl.
//   cd tools/tokenizer-fixtures && npm install && node make_fixtures.mjs
// Optional: node make_fixtures.mjs --tokenizer FILE --out FILE.jsonl (e.g. for a tokenizer trained by `dss tokenizer train`).
import { Tokenizer } from "@anush008/tokenizers";
import fs from "node:fs";
import path from "node:path";

const here = path.dirname(new URL(import.meta.url).pathname);
const repo = path.resolve(here, "../..");
const shared = path.resolve(repo, "../shared");
const arg = (name, def) => { const i = process.argv.indexOf(name); return i > 0 ? process.argv[i + 1] : def; };
const tokPath = arg("--tokenizer", path.join(shared, "data/deepseek-v3-tokenizer/tokenizer.json"));
const outPath = arg("--out", path.join(repo, "tests/DeepSeekSharp.Tests/Fixtures/tokenizer/deepseek-v3-encodings.jsonl"));

// Deterministic PRNG (mulberry32) so the fixture file is reproducible.
let seed = 20261122;
const rand = () => { seed |= 0; seed = (seed + 0x6d2b79f5) | 0; let t = Math.imul(seed ^ (seed >>> 15), 1 | seed); t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t; return ((t ^ (t >>> 14)) >>> 0) / 4294967296; };
const pick = (a) => a[Math.floor(rand() * a.length)];

const texts = [
  "Hello, world!", "The quick brown fox jumps over the lazy dog.", "  leading spaces", "trailing spaces   ",
  "tabs\tand\nnewlines\r\nmixed \t \n  ", "multiple\n\n\nblank lines\n", "   ", "\n", "", "a", "I'm you're we've they'll she'd",
  "def fib(n):\n    return n if n < 2 else fib(n-1) + fib(n-2)\n", "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }",
  "const x = {a: 1, 'b': [2, 3], c: \"str\"}; // comment", "SELECT * FROM users WHERE id = 42 AND name LIKE '%bob%';",
  "<html><body><div class=\"x\">text</div></body></html>", "https://example.com/path?query=1&x=y#frag", "user@example.com",
  "12345678901234567890", "3.14159265358979", "1,000,000 and 1.000.000 and 1 000 000", "2026-11-22T23:14:16Z", "v1.2.3-beta+build.5",
  "$100.00 €50 £30 ¥2000 ₹500", "100% of 50% is 25%", "x^2 + y^2 = z^2", "∑_{i=1}^{n} i = n(n+1)/2", "α β γ δ ε ∀x ∃y: x ≠ y",
  "你好，世界！", "深度求索是一家人工智能公司。", "今天天气很好，我们去公园散步吧。", "日本語のテキストです。ひらがなとカタカナ。",
  "한국어 텍스트입니다.", "Привет, мир! Как дела?", "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया", "สวัสดีชาวโลก",
  "Ελληνικά κείμενα", "Tiếng Việt có dấu", "Ünïcödé àccénts çà et là", "naïve café résumé", "Straße Größe Übermaß",
  "😀😃😄😁", "👨‍👩‍👧‍👦 family", "👍🏽 thumbs up medium skin", "🏳️‍🌈 flag", "❤️‍🔥 heart on fire", "🇺🇸🇯🇵🇨🇳 flags",
  "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math letters 𝐀𝐁𝐂 𝟏𝟐𝟑", "𠀀𠀁𠀂 CJK Ext-B 𪚥", "mixed 中文 and English 混合 text", "emoji🙂inside words",
  "<｜begin▁of▁sentence｜>Hello<｜end▁of▁sentence｜>", "<｜User｜>What is 2+2?<｜Assistant｜>4<｜end▁of▁sentence｜>",
  "text with <｜User｜> in the middle", "<｜fim▁begin｜>code<｜fim▁hole｜>more<｜fim▁end｜>", "almost <｜User| special",
  "!!!???...,,,", "-- --- ---- -----", "____init____", "CamelCaseIdentifierName", "snake_case_identifier_name",
  "ALL CAPS SHOUTING", "MiXeD cAsE", "'quoted' \"double\" `backtick`", "(parens) [brackets] {braces}", "a.b.c.d.e",
  "   multiple   spaces   between   words   ", "\u00a0non-breaking\u00a0spaces\u2003em space", "zero\u200bwidth\u200dchars",
  "e\u0301 combining accent", "Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇", "\u0000\u0001 control chars", "line\u2028separator\u2029para",
];
const words = ["the", "model", "expert", "routing", "latent", "attention", "DeepSeek", "token", "123", "4567", "中文", "😀", "café", "\n", "  ", "\t", "—", "...", "(x)", "a_b", "x=1;", "ñ"];
for (let i = 0; i < 150; i++) {
  const n = 1 + Math.floor(rand() * 14);
  let s = "";
  for (let j = 0; j < n; j++) s += pick(words) + (rand() < 0.7 ? " " : "");
  texts.push(s);
}
for (let i = 0; i < 60; i++) { // random code points across planes
  let s = "";
  const n = 1 + Math.floor(rand() * 12);
  for (let j = 0; j < n; j++) {
    const r = rand();
    let cp = r < 0.3 ? 32 + Math.floor(rand() * 95) : r < 0.6 ? 0xa0 + Math.floor(rand() * 0x2f60) : r < 0.8 ? 0x4e00 + Math.floor(rand() * 0x5000) : 0x1f300 + Math.floor(rand() * 0x700);
    if (cp >= 0xd800 && cp <= 0xdfff) cp = 0x41;
    s += String.fromCodePoint(cp);
  }
  texts.push(s);
}
const shakespeare = fs.readFileSync(path.join(shared, "data/tinyshakespeare/input.txt"), "utf8").split("\n\n");
for (let i = 0; i < 40; i++) texts.push(shakespeare[Math.floor(rand() * shakespeare.length)]);
const gsm = fs.readFileSync(path.join(shared, "data/gsm8k/train.jsonl"), "utf8").split("\n").filter(Boolean);
for (let i = 0; i < 30; i++) { const o = JSON.parse(pick(gsm)); texts.push(o.question + "\n" + o.answer); }

const tok = Tokenizer.fromFile(tokPath);
const lines = [];
for (const text of texts) {
  const enc = await tok.encode(text, null, { addSpecialTokens: false });
  lines.push(JSON.stringify({ text, ids: enc.getIds() }));
}
fs.mkdirSync(path.dirname(outPath), { recursive: true });
fs.writeFileSync(outPath, lines.join("\n") + "\n");
console.log(`wrote ${lines.length} encodings to ${outPath}`);
