// runyard's dashboard, json.js: JSON read and written with every integer exact (the first part of
// /ui/app.js, src/dashboard/mod.rs; app.js reads every answer and event through it).

// The API keeps integers exactly up to 64 bits (docs/api.md); JSON.parse makes every number a
// double, exact only up to 2^53. parseJson() keeps an integer literal that is not a safe JS
// integer as an ExactInt holding the digits the server wrote: String() and templates give those
// digits, jsonStringify() writes them back as the same number, and in arithmetic or `<` it is the
// nearest double (valueOf), as JSON.parse would have made it. Every other value is what
// JSON.parse makes of it (safe integers stay plain numbers).
class ExactInt {
  constructor(digits) { this.digits = digits; }
  toString() { return this.digits; }
  valueOf() { return Number(this.digits); }
}
// Such an integer goes through JSON.parse and JSON.stringify as a string: a marker drawn at
// random for this page (no text from the server can know it) and the digits.
const EXACT = `runyard-exact-${Array.from(crypto.getRandomValues(new Uint32Array(4)), (n) => n.toString(36)).join("")}:`;
const EXACT_STRING = new RegExp(`"${EXACT}(-?\\d+)"`, "g");
// A JSON string (matched first, so the digits in one are left alone) or a JSON number.
const JSON_TOKEN = /"[^"\\]*(?:\\.[^"\\]*)*"|-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/g;

function parseJson(text) {
  // JSON.parse's own verdict first: what it refuses is refused (the rewrite below could make an
  // unquoted key valid), and text without an integer past 2^53 is its answer. Such an integer
  // has 17 digits or more, or 16 starting with 9 (2^53 is 9007199254740992).
  const plain = JSON.parse(text);
  if (!/\d{17}|9\d{15}/.test(text)) return plain;
  let marked = false, t;
  try {
    t = text.replace(JSON_TOKEN, (m) => {
      if (m[0] === '"' || /[.eE]/.test(m) || Number.isSafeInteger(Number(m))) return m;
      marked = true;
      return `"${EXACT}${m}"`;
    });
  } catch {
    return plain; // a string too long for the pattern's stack: as JSON.parse reads it
  }
  if (!marked) return plain;
  return JSON.parse(t, (k, v) => (typeof v === "string" && v.startsWith(EXACT) ? new ExactInt(v.slice(EXACT.length)) : v));
}

// JSON.stringify, with an ExactInt written as its digits.
function jsonStringify(v, indent) {
  let marked = false;
  const s = JSON.stringify(v, (k, x) => {
    if (!(x instanceof ExactInt)) return x;
    marked = true;
    return EXACT + x.digits;
  }, indent);
  return marked ? s.replace(EXACT_STRING, (m, digits) => digits) : s;
}
