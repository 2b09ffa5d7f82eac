// HF tokenizers (Rust) encoding speed on a file, single-threaded call, median of 5 after a warm-up:
//   node bench.mjs --tokenizer FILE --file TEXT   → {"mb", "tokens", "seconds_median", "mb_per_s"}
import { Tokenizer } from "@anush008/tokenizers";
import fs from "node:fs";
const arg = (n) => process.argv[process.argv.indexOf(n) + 1];
const text = fs.readFileSync(arg("--file"), "utf8");
const mb = Buffer.byteLength(text, "utf8") / 1e6;
const times = [];
let tokens = 0;
for (let i = 0; i < 6; i++) {
  const tok = Tokenizer.fromFile(arg("--tokenizer"));
  const t = process.hrtime.bigint();
  const enc = await tok.encode(text, null, { addSpecialTokens: false });
  tokens = enc.getIds().length;
  if (i > 0) times.push(Number(process.hrtime.bigint() - t) / 1e9);
}
times.sort((a, b) => a - b);
const med = times[Math.floor(times.length / 2)];
console.log(JSON.stringify({ mb: +mb.toFixed(3), tokens, seconds_median: +med.toFixed(4), mb_per_s: +(mb / med).toFixed(2) }));
