#!/usr/bin/env python3
"""Writes the tokenizer parity corpus: tests/fixtures/tokenizer/corpus.jsonl.

Pure python, deterministic (seeded). Every line is {"text": ...}. The corpus mixes hand-written
snippets (code, prose in many scripts, emoji, text that looks like control tokens) with
programmatically generated strings (whitespace runs, random characters from many Unicode blocks,
random concatenations of vocabulary pieces, long words, numbers, URLs).

Also writes decode_cases.jsonl: id sequences for the Decode parity test ({"ids": [...]}), including
byte-fallback runs that are and are not valid UTF-8, special tokens and out-of-range ids.

With --stress-out it additionally writes a much larger random corpus (not committed) that
tools/make_tokenizer_reference.py can process for a wider one-off comparison.

Usage:
  python3 tools/make_tokenizer_corpus.py --tokenizer PATH/tokenizer.json \
      --out tests/fixtures/tokenizer [--stress-out /tmp/stress.jsonl]
"""

import argparse
import json
import os
import random

SEED = 20250301

# ---------------------------------------------------------------------------------------------
# Hand-written material.

CODE_SNIPPETS = [
    # C++
    """#include <vector>
#include <string>

// Sums the lengths of all strings.
std::size_t TotalLength(const std::vector<std::string>& parts) {
  std::size_t total = 0;
  for (const auto& p : parts) total += p.size();
  return total;
}
""",
    """template <class T>
class RingBuffer {
 public:
  explicit RingBuffer(int capacity) : data_(capacity), head_(0), size_(0) {}
  void Push(T v) {
    data_[(head_ + size_) % data_.size()] = std::move(v);
    if (size_ < static_cast<int>(data_.size())) ++size_; else head_ = (head_ + 1) % data_.size();
  }
 private:
  std::vector<T> data_;
  int head_, size_;
};""",
    "int main(int argc, char** argv) {\r\n  if (argc < 2) return 1;\r\n  printf(\"%s\\n\", argv[1]);\r\n  return 0;\r\n}\r\n",
    "auto lambda = [&](int x) -> int { return x * x + 0x7f - 0b1010; };  // bit tricks: a >>= 3; b <<= 2; c ^= ~d;",
    # Python
    '''def fibonacci(n: int) -> list[int]:
    """Returns the first n Fibonacci numbers."""
    out = [0, 1]
    while len(out) < n:
        out.append(out[-1] + out[-2])
    return out[:n]


if __name__ == "__main__":
    print(fibonacci(10))
''',
    "class Point:\n\tdef __init__(self, x, y):\n\t\tself.x = x\n\t\tself.y = y\n\n\tdef __repr__(self):\n\t\treturn f'Point({self.x!r}, {self.y!r})'\n",
    "squares = {k: k ** 2 for k in range(10) if k % 2 == 0}  # dict comprehension\nassert squares[4] == 16",
    "with open('data.csv', newline='') as f:\n    rows = [line.rstrip('\\n').split(',') for line in f]",
    # JavaScript / TypeScript
    """const fetchJson = async (url) => {
  const res = await fetch(url, { headers: { 'Accept': 'application/json' } });
  if (!res.ok) throw new Error(`HTTP ${res.status}`);
  return res.json();
};
export default fetchJson;""",
    "document.querySelectorAll('div.card > span').forEach((el, i) => { el.textContent = `#${i}`; });",
    "interface User { id: number; name?: string; tags: Array<string> }\nconst u: User = { id: 7, tags: [] };",
    # JSON
    '{"name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}}, "required": ["city"]}}',
    '[\n  {"id": 1, "ok": true, "score": 0.875},\n  {"id": 2, "ok": false, "score": null},\n  {"id": 3, "nested": {"a": [1, 2, [3, [4]]]}}\n]',
    '{"escaped": "line1\\nline2\\ttab \\"quoted\\" \\\\ backslash \\u00e9"}',
    # Shell
    """#!/usr/bin/env bash
set -euo pipefail
for f in *.log; do
  grep -c 'ERROR' "$f" || true
done | sort -n | tail -n 3
""",
    "find . -name '*.cpp' -print0 | xargs -0 clang-format -i && git diff --stat",
    "export PATH=\"$HOME/.local/bin:$PATH\"; echo ${PATH//:/\\n} > /tmp/paths.txt 2>&1 &",
    # Misc markup
    "<html><body><div class=\"x\"><h1>Title</h1><p>Some <strong>bold</strong> and <em>italic</em> text.</p></div></body></html>",
    "<table><thead><tr><th>Name</th><th>Qty</th></tr></thead><tbody><tr><td>Apple</td><td>3</td></tr></tbody></table>",
    "# Heading\n\n- item one\n- item **two**\n\n```python\nprint('hi')\n```\n\n> quoted text\n",
    "SELECT name, COUNT(*) AS n FROM orders WHERE created_at >= '2024-01-01' GROUP BY name HAVING n > 5 ORDER BY n DESC;",
    "\\begin{equation} E = mc^2, \\quad \\int_0^\\infty e^{-x^2}\\,dx = \\frac{\\sqrt{\\pi}}{2} \\end{equation}",
]

PROSE = [
    # English and Latin-script languages with accents.
    "A small grey heron waited by the canal while bicycles rattled past the bakery.",
    "It's nearly 5 o'clock -- or so the clock claims; still, we're late (again)!",
    "Café, naïve, façade, coöperate, résumé, jalapeño, Ångström, smörgåsbord.",
    "Le matin, nous buvons un café crème près de la fenêtre. Où est la bibliothèque ?",
    "Über die Brücke gehen täglich viele Fußgänger; die Straße ist schmal, aber schön.",
    "¿Dónde está el baño? ¡Qué día tan bonito! El niño comió piña y añadió más azúcar.",
    "Não sei se vou conseguir, mas vou tentar amanhã de manhã com calma.",
    "Wczoraj kupiłem świeży chleb i żółty ser. Dnes večer půjdeme do kina. A kávé túl forró.",
    "Tiếng Việt có nhiều dấu: à á ả ã ạ, ơ ờ ớ ở ỡ ợ, ư ừ ứ ử ữ ự.",
    "Türkçe: ğ ş ı İ ö ü ç — Işık, şeker, göğüs. Romana: ș ț ă î â.",
    # Cyrillic
    "Привет, мир! Сегодня хорошая погода, и мы идём гулять в парк.",
    "В субботу мы поедем на дачу и будем собирать яблоки.",
    "Українська мова: ґанок, їжак, єнот. Беларуская: ўсё, і.",
    # Greek
    "Καλημέρα κόσμε! Σήμερα ο καιρός είναι ζεστός και ο ήλιος λάμπει.",
    "Το βιβλίο είναι πάνω στο τραπέζι. Αλφάβητο: α β γ δ ε ζ η θ ι κ λ μ ν ξ ο π ρ σ ς τ υ φ χ ψ ω.",
    # Arabic, Hebrew (right to left)
    "مرحبا بالعالم! كيف حالك اليوم؟ أنا بخير، شكرا جزيلا.",
    "اللغة العربية جميلة جدا، وتكتب من اليمين إلى اليسار. الأرقام: ١٢٣٤٥٦٧٨٩٠",
    "שלום עולם! מה שלומך היום? אני לומד לתכנת בשפת C++.",
    "Mixed direction: the word שלום means peace, and سلام too.",
    # Indic
    "नमस्ते दुनिया! आज मौसम बहुत अच्छा है और हम बाज़ार जा रहे हैं।",
    "संस्कृतम् एकं प्राचीनं भाषा अस्ति। क्षत्रिय, ज्ञान, श्री।",
    "বাংলা ভাষা সুন্দর। தமிழ் மொழி பழமையானது. తెలుగు భాష. ಕನ್ನಡ. മലയാളം. ગુજરાતી. ਪੰਜਾਬੀ.",
    # Thai, Lao, Khmer, Myanmar
    "สวัสดีครับ วันนี้อากาศดีมาก เราจะไปเที่ยวทะเลกัน",
    "ພາສາລາວ ສະບາຍດີ. ភាសាខ្មែរ សួស្តី. မြန်မာဘာသာ မင်္ဂလာပါ.",
    # CJK
    "你好，世界！今天天气很好，我们去公园散步吧。",
    "機器學習是人工智慧的一個分支，研究電腦如何從資料中學習。",
    "我的電話號碼是一二三四五六七八九〇。「引號」『雙引號』《書名》。",
    # Japanese
    "こんにちは、世界！今日はいい天気ですね。カタカナ：コンピューター、プログラミング。",
    "駅の近くに新しいパン屋ができました。ｶﾀｶﾅ（半角）とカタカナ（全角）。",
    "ひらがなだけのぶんしょうもかけます。ゃゅょっーゝゞ。",
    # Korean
    "안녕하세요, 세계! 오늘 날씨가 정말 좋네요. 한국어는 한글로 씁니다.",
    "저는 매일 아침 커피를 마시고 산책을 합니다. 값, 읽다, 넓다, 앉다.",
    # Others
    "Հայերեն. ქართული ენა. አማርኛ. ᏣᎳᎩ. ᠮᠣᠩᠭᠣᠯ. ⵜⴰⵎⴰⵣⵉⵖⵜ. ꦧꦱꦗꦮ.",
    "Monospace math: 𝔸𝕓𝕔 𝐁𝐨𝐥𝐝 𝑖𝑡𝑎𝑙𝑖𝑐 ∀x∈ℝ: x²≥0, ∑ᵢ aᵢ ≤ ∞, √2 ≈ 1.41421356.",
    "Symbols: © ® ™ § ¶ † ‡ • … ‰ ′ ″ ‹ › « » “ ” ‘ ’ ‚ „ ← → ↑ ↓ ⇒ ⇔ ∞ ≠ ≤ ≥ ± × ÷.",
    "Box drawing: ┌─┬─┐ │ │ │ ├─┼─┤ └─┴─┘ ░▒▓█ ▁▂▃▄▅▆▇█",
    "Historic scripts: 𐌰𐌱𐌲 (Gothic), 𓀀𓀁𓀂 (hieroglyphs), 𒀀𒀁 (cuneiform), ᚠᚢᚦᚨᚱᚲ (runes).",
]

EMOJI = [
    "I love it 😀😃😄😁😆😅😂🤣 so much!",
    "Family: 👨‍👩‍👧‍👦 👩‍👩‍👦 👨‍👨‍👧‍👧; couple: 👩‍❤️‍💋‍👨; tech: 👩‍💻 🧑‍🚀 👨‍🔬",
    "Skin tones: 👍🏻 👍🏼 👍🏽 👍🏾 👍🏿 👋🏽 🙏🏿 🤝🏼",
    "Flags: 🇫🇷 🇯🇵 🇧🇷 🇰🇪 🏳️‍🌈 🏴‍☠️ 🏴󠁧󠁢󠁳󠁣󠁴󠁿",
    "Keycaps and variation selectors: 1️⃣ 2️⃣ #️⃣ *️⃣ ❤️ ❤︎ ☺️ ✔️ ™️",
    "Mixed:🎉party🎉,🍕+🍺=😋 ; 🐶🐱🐭🐹🐰🦊🐻🐼",
    "Rare emoji: 🫠 🫨 🪼 🫎 🧌 🪿 🩷 🫸🏾",
]

SPECIAL_LOOKING = [
    "<start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n<start_of_turn>model\nParis.<end_of_turn>\n",
    "<bos><start_of_turn>developer\nYou are a helpful assistant.<end_of_turn>\n",
    "<bos>",
    "<eos>",
    "<pad><unk><mask>[multimodal]",
    "text<bos>text<eos>text",
    "<start_of",
    "<start_of_turn",
    "start_of_turn>",
    "<eos >",
    "< eos>",
    "<EOS>",
    "<<bos>>",
    "<<<start_of_turn>>>",
    "<bos<bos>>",
    "<unused40>",
    "<unused0><unused1><unused99><unused6241><unused6242><unused9999>",
    "<unused 40>",
    "<start_function_declaration>declaration:get_weather{description:<escape>Current weather<escape>,parameters:{properties:{city:{type:<escape>STRING<escape>}},required:[<escape>city<escape>],type:<escape>OBJECT<escape>}}<end_function_declaration>",
    "<start_function_call>call:get_weather{city:<escape>Paris<escape>}<end_function_call>",
    "<start_function_response>response:get_weather{temperature:21,unit:<escape>c<escape>}<end_function_response>",
    "<start_function_declaration><end_function_declaration><start_function_call><end_function_call><start_function_response><end_function_response><escape>",
    "<start_function_call <escape<escape>> <end_function_call",
    "<0x0A>",
    "<0x41><0xE4><0xB8><0xAD><0xff><0xZZ>",
    "<image_soft_token><start_of_image><end_of_image>",
    "<h1>x</h1><b>bold</b><i>it</i><u>u</u><s>s</s><sub>2</sub><sup>3</sup><code>c</code>",
    "<a href='x'>link</a> <img src=y> <span>s</span> <bbox>1,2,3,4</bbox> <li>one</li>",
    "<table>\n\t<tr>\n\t\t<td>cell</td>\n\t</tr>\n</table>",
    "raw sentencepiece marks: ▁hello▁world ▁▁▁ ▁ ▁▁",
    "▁",
    "▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁",
    "<start_of_turn>model\n<start_function_call>call:turn_on_flashlight{}<end_function_call><start_function_response>",
]

WHITESPACE = [
    "",
    " ",
    "  ",
    "   ",
    "\t",
    "\n",
    "\r\n",
    "\r",
    " leading space",
    "trailing space ",
    "  two leading and two trailing  ",
    "a  b   c    d     e",
    "tab\tseparated\tvalues\t\t\tend",
    "line one\nline two\n\nline four\n\n\n\nline eight",
    "windows\r\nline\r\nendings\r\n\r\n",
    "mixed \t \n \r\n \t\t  \n\n  \t",
    "\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n",
    "\t" * 45,
    " " * 70,
    " " * 31 + "x" + " " * 32,
    "\u00a0non-breaking\u00a0space\u2003em space\u2009thin\u200bzero-width\u3000ideographic",
    "\u000b\u000c vertical tab and form feed \u0085 next line \u2028 line sep \u2029 para sep",
]

COMBINING = [
    "\u0301",
    "\u0301\u0302\u0303",
    "e\u0301 vs \u00e9 (decomposed vs precomposed)",
    "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034fa\u0334\u0308\u0341l\u0336\u0327g\u0315o\u0359",
    "\u0915\u094d\u0937 \u093f alone, \u0e31 alone, \u05b7 alone",
    "\u200d\u200c zero width joiner and non-joiner \ufe0f\ufe0e",
    "\ufeffBOM at start, \ufffd replacement char, \ue000 private use, \U000f0000 plane 15",
    "Control chars: \u0000 \u0001 \u001b[31mred\u001b[0m \u007f \u0080 \u009f",
    "Ａｂｃ１２３ fullwidth, ﬁ ﬂ ligatures, ℌ ℍ ℕ letterlike, ① ② ⑳ circled",
]

NUMBERS_URLS = [
    "0 1 2 3 4 5 6 7 8 9 10 11 99 100 101 999 1000 1001 65535 65536 4294967296",
    "3.14159265358979323846264338327950288419716939937510",
    "-0.0001, +1e-10, 6.022e23, 1_000_000, 0xDEADBEEF, 0o755, 0b1101, 1,234,567.89, 1.234.567,89",
    "Phone: +1 (555) 012-3456; date: 2024-02-29T23:59:59.999Z; time 07:30am; ref 451-2-77-903318-6",
    "https://example.com/path/to/page?query=hello%20world&lang=en#section-2",
    "http://user:pass@sub.domain.co.uk:8080/a/b/c.html?x=1&y=2;z=3",
    "mailto:someone@example.org, ftp://files.example.net/pub/file.tar.gz, file:///home/user/.bashrc",
    "C:\\Program Files\\App\\bin\\app.exe --config=\"C:\\Users\\me\\config.ini\"",
    "git@github.com:org/repo.git  sha256:4be1c07d55f2a93e0c6d7718b2f9a40e61cf3d92a8e5b7c014d3f6e29a1b8c57",
    "IPv4 192.168.0.1, IPv6 2001:db8:1f:0:0:0:0:42, fe80::1%eth0, MAC 00:1A:2B:3C:4D:5E",
]


# ---------------------------------------------------------------------------------------------
# Generated material.

UNICODE_BLOCKS = [
    (0x0020, 0x007E),  # ASCII
    (0x00A0, 0x024F),  # Latin-1, Latin Extended
    (0x0300, 0x036F),  # combining diacritics
    (0x0370, 0x03FF),  # Greek
    (0x0400, 0x04FF),  # Cyrillic
    (0x0590, 0x05FF),  # Hebrew
    (0x0600, 0x06FF),  # Arabic
    (0x0900, 0x097F),  # Devanagari
    (0x0E00, 0x0E7F),  # Thai
    (0x1100, 0x11FF),  # Hangul Jamo
    (0x2000, 0x206F),  # punctuation
    (0x2500, 0x257F),  # box drawing
    (0x3040, 0x30FF),  # kana
    (0x4E00, 0x9FFF),  # CJK
    (0xAC00, 0xD7A3),  # Hangul syllables
    (0xE000, 0xF8FF),  # private use
    (0xFF00, 0xFFEF),  # halfwidth / fullwidth
    (0x1F300, 0x1FAFF),  # emoji
    (0x20000, 0x2A6DF),  # CJK extension B
    (0x10000, 0x1007F),  # Linear B
    (0xE0000, 0xE007F),  # tags
]


def random_char(rng):
    lo, hi = rng.choice(UNICODE_BLOCKS)
    while True:
        cp = rng.randint(lo, hi)
        if not 0xD800 <= cp <= 0xDFFF:
            return chr(cp)


def random_unicode_text(rng, n):
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.15:
            out.append(" ")
        elif r < 0.18:
            out.append(rng.choice(["\n", "\t", "  ", "\r\n"]))
        else:
            out.append(random_char(rng))
    return "".join(out)


def load_vocab_pieces(tokenizer_path):
    with open(tokenizer_path, encoding="utf-8") as f:
        tok = json.load(f)
    vocab = tok["model"]["vocab"]
    pieces = sorted(vocab.keys(), key=lambda s: vocab[s])
    added = [a["content"] for a in tok["added_tokens"]]
    return vocab, pieces, added


def random_piece_text(rng, pieces, added, n):
    """Concatenates random vocabulary pieces (with U+2581 turned into spaces most of the time)."""
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.03:
            out.append(rng.choice(added))
            continue
        piece = rng.choice(pieces)
        if piece.startswith("<0x") and len(piece) == 6:
            piece = chr(int(piece[3:5], 16)) if int(piece[3:5], 16) < 0x80 else "?"
        if rng.random() < 0.9:
            piece = piece.replace("\u2581", " ")
        out.append(piece)
    return "".join(out)


def long_words(rng):
    letters = "abcdefghijklmnopqrstuvwxyz"
    yield "a" * 1000
    yield "ab" * 300
    yield "x" * 257
    yield "pneumonoultramicroscopicsilicovolcanoconiosis " * 5
    yield "Donaudampfschifffahrtselektrizitaetenhauptbetriebswerkbauunterbeamtengesellschaft"
    yield "".join(rng.choice(letters) for _ in range(600))
    yield "".join(rng.choice(letters + letters.upper() + "0123456789+/") for _ in range(400)) + "=="
    yield "9" * 300
    yield "".join(str(rng.randint(0, 9)) for _ in range(200))
    yield "中" * 120
    yield "😀" * 60
    yield "é" * 200
    yield "_" * 100 + "-" * 100 + "=" * 100
    yield "こんにちは" * 40


def numbers(rng):
    parts = []
    for _ in range(80):
        k = rng.randint(0, 4)
        if k == 0:
            parts.append(str(rng.randint(0, 10**rng.randint(1, 12))))
        elif k == 1:
            parts.append(f"{rng.uniform(-1000, 1000):.{rng.randint(0, 8)}f}")
        elif k == 2:
            parts.append(f"{rng.randint(1, 31):02d}/{rng.randint(1, 12):02d}/{rng.randint(1900, 2100)}")
        elif k == 3:
            parts.append(hex(rng.randint(0, 2**32)))
        else:
            parts.append(f"{rng.randint(0, 100)}%")
    return " ".join(parts)


def whitespace_runs(rng):
    for _ in range(25):
        s = []
        for _ in range(rng.randint(1, 12)):
            s.append(rng.choice([" ", "\t", "\n", "\r\n", "\r", "word", "x", "▁", "\u00a0"]) *
                     rng.randint(1, 40))
        yield "".join(s)


def special_mixes(rng, added):
    specials = ["<bos>", "<eos>", "<pad>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>",
                "<start_of_image>", "<end_of_image>", "<image_soft_token>", "[multimodal]"]
    fg = ["<start_function_declaration>", "<end_function_declaration>", "<start_function_call>",
          "<end_function_call>", "<start_function_response>", "<end_function_response>",
          "<escape>"]
    noise = ["<", ">", "<<", ">>", "</", "/>", "_", " ", "\n", "start", "end", "of", "turn",
             "unused", "4", "40", "function", "call", "x"]
    for _ in range(40):
        s = []
        for _ in range(rng.randint(2, 20)):
            r = rng.random()
            if r < 0.25:
                s.append(rng.choice(specials))
            elif r < 0.45:
                s.append(rng.choice(fg))
            elif r < 0.55:
                s.append(rng.choice(added))
            else:
                s.append(rng.choice(noise))
        yield "".join(s)


def chat_like(rng):
    users = ["What's the weather in Paris?", "Turn on the flashlight.", "Résume ce texte.",
             "東京の天気は？", "Напомни мне завтра в 9:00.", "Send an email to bob@example.com"]
    for u in users:
        yield (f"<start_of_turn>user\n{u}<end_of_turn>\n<start_of_turn>model\n"
               f"<start_function_call>call:do{{q:<escape>{u}<escape>}}<end_function_call>")


def build_corpus(rng, pieces, added):
    lines = []
    lines += CODE_SNIPPETS + PROSE + EMOJI + SPECIAL_LOOKING + WHITESPACE + COMBINING + NUMBERS_URLS
    lines += list(long_words(rng))
    lines.append(numbers(rng))
    lines += list(whitespace_runs(rng))
    lines += list(special_mixes(rng, added))
    lines += list(chat_like(rng))
    # Paragraphs joining several hand-written lines (long single BPE words).
    for _ in range(20):
        k = rng.randint(2, 6)
        lines.append(rng.choice([" ", "\n", "  ", "\n\n", "\t"]).join(
            rng.sample(PROSE + EMOJI + CODE_SNIPPETS, k)))
    for _ in range(120):
        lines.append(random_unicode_text(rng, rng.randint(1, 200)))
    for _ in range(150):
        lines.append(random_piece_text(rng, pieces, added, rng.randint(1, 60)))
    return lines


def build_stress(rng, pieces, added, n_lines):
    lines = []
    for i in range(n_lines):
        r = i % 4
        if r == 0:
            lines.append(random_unicode_text(rng, rng.randint(1, 400)))
        elif r == 1:
            lines.append(random_piece_text(rng, pieces, added, rng.randint(1, 150)))
        elif r == 2:
            lines.append(next(iter(special_mixes(rng, added))) + random_piece_text(rng, pieces, added, 10))
        else:
            k = rng.randint(1, 8)
            lines.append(" ".join(rng.choice(PROSE + CODE_SNIPPETS + EMOJI + COMBINING) for _ in range(k)))
    return lines


def build_decode_cases(rng, vocab):
    """Id sequences for Decode: byte runs (valid and invalid UTF-8), specials, control ids."""
    n_vocab = len(vocab)

    def byte_id(b):
        return vocab[f"<0x{b:02X}>"]

    specials = [0, 1, 2, 3, 105, 106, 255999, 256000, 262144]
    control = list(range(46, 53))
    cases = []
    valid_sequences = [
        [0xE4, 0xB8, 0xAD],  # 中
        [0xF0, 0x9F, 0x98, 0x80],  # 😀
        [0xC3, 0xA9],  # é
        [0x0A], [0x41], [0x00],
    ]
    invalid_sequences = [
        [0xFF], [0x80], [0xC3], [0xE4, 0xB8], [0xED, 0xA0, 0x80],  # surrogate
        [0xC0, 0xAF],  # overlong
        [0xF4, 0x90, 0x80, 0x80],  # above U+10FFFF
        [0xE4, 0xB8, 0xAD, 0xFF],  # valid char then invalid byte
    ]
    for seq in valid_sequences + invalid_sequences:
        cases.append([byte_id(b) for b in seq])
    for _ in range(150):
        ids = []
        for _ in range(rng.randint(1, 25)):
            r = rng.random()
            if r < 0.35:
                seq = rng.choice(valid_sequences + invalid_sequences)
                ids += [byte_id(b) for b in seq]
            elif r < 0.5:
                ids.append(byte_id(rng.randint(0, 255)))
            elif r < 0.65:
                ids.append(rng.choice(specials))
            elif r < 0.7:
                ids.append(rng.choice(control))
            else:
                ids.append(rng.randint(0, n_vocab - 1))
        cases.append(ids)
    # Ids past the vocabulary are dropped by decode.
    cases.append([byte_id(0xE4), n_vocab + 1, byte_id(0xB8), byte_id(0xAD), 300000])
    cases.append([])
    return cases


def write_jsonl(path, records):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True, help="Gemma 3 tokenizer.json (vocabulary pieces)")
    ap.add_argument("--out", required=True, help="folder for corpus.jsonl and decode_cases.jsonl")
    ap.add_argument("--stress-out", help="optional large random corpus (not committed)")
    ap.add_argument("--stress-lines", type=int, default=6000)
    args = ap.parse_args()

    vocab, pieces, added = load_vocab_pieces(args.tokenizer)
    rng = random.Random(SEED)
    lines = build_corpus(rng, pieces, added)
    os.makedirs(args.out, exist_ok=True)
    write_jsonl(os.path.join(args.out, "corpus.jsonl"), [{"text": t} for t in lines])
    cases = build_decode_cases(random.Random(SEED + 1), vocab)
    write_jsonl(os.path.join(args.out, "decode_cases.jsonl"), [{"ids": c} for c in cases])
    print(f"corpus: {len(lines)} lines, {sum(len(t.encode()) for t in lines)} bytes; "
          f"decode cases: {len(cases)}")
    if args.stress_out:
        stress = build_stress(random.Random(SEED + 2), pieces, added, args.stress_lines)
        write_jsonl(args.stress_out, [{"text": t} for t in stress])
        print(f"stress: {len(stress)} lines, {sum(len(t.encode()) for t in stress)} bytes")


if __name__ == "__main__":
    main()
