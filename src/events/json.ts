/**
 * Checks the shape of JSON text before it is parsed: duplicate object keys and nesting depth.
 *
 * JSON.parse keeps the last of two equal keys and recurses without a bound. The Kubernetes API
 * server (Go's encoding/json) never emits a duplicate key, so a body holding one was forged or
 * corrupted, and readers disagree on which copy counts (Go and JavaScript keep the last, many
 * streaming parsers the first): such a body is refused instead of being read one way here and
 * another way by whoever replays the journal. The depth bound refuses bodies built to exhaust the
 * stack of a recursive reader (ours, the SDK's, or a tool that reads the journal later).
 *
 * The scan is iterative and only looks at structure; text that is not valid JSON passes here and
 * is reported by JSON.parse, which runs next.
 */

/** Kubernetes objects nest about 15 levels at most (managedFields); a CloudEvent envelope adds one. */
export const MAX_JSON_DEPTH = 100;

export interface JsonShapeProblem {
  /** Dotted path of the offending member, e.g. `metadata.name` or `spec.afiSafis[0]`. */
  field: string;
  rule: string;
}

// A frame's path is not kept: it is rebuilt from the stack (`pathAt`) only when a problem is
// reported. Building it for every nested value made this scan cost twice the JSON.parse after it.
type Frame = { kind: 'object'; keys: Set<string>; expectKey: boolean; lastKey: string } | { kind: 'array'; index: number };

const QUOTE = 0x22;
const BACKSLASH = 0x5c;

function memberPath(base: string, key: string): string {
  const plain = /^[A-Za-z_$][A-Za-z0-9_$-]*$/.test(key);
  const shown = key.length > 120 ? `${key.slice(0, 117)}...` : key;
  if (base === '') return plain ? shown : `[${JSON.stringify(shown)}]`;
  return plain ? `${base}.${shown}` : `${base}[${JSON.stringify(shown)}]`;
}

/** The path of the member or element stack[depth - 1] is at now: the path of stack[depth] ('' for the top level). */
function pathAt(stack: readonly Frame[], depth: number): string {
  let path = '';
  for (let d = 0; d < depth; d++) {
    const frame = stack[d] as Frame;
    path = frame.kind === 'object' ? memberPath(path, frame.lastKey) : `${path}[${frame.index}]`;
  }
  return path;
}

/** Index just past the closing quote of the string that starts at `start` (a quote), or -1. */
function stringEnd(text: string, start: number): number {
  let i = start + 1;
  for (;;) {
    const q = text.indexOf('"', i);
    if (q < 0) return -1;
    let backslashes = 0;
    for (let j = q - 1; j > start && text.charCodeAt(j) === BACKSLASH; j--) backslashes++;
    if (backslashes % 2 === 0) return q + 1;
    i = q + 1;
  }
}

/** The first duplicate key or over-deep nesting in `text`, or undefined when there is none. */
export function jsonShapeProblem(text: string, maxDepth = MAX_JSON_DEPTH): JsonShapeProblem | undefined {
  const stack: Frame[] = [];
  const n = text.length;
  let i = 0;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      const end = stringEnd(text, i);
      if (end < 0) return undefined; // unterminated: JSON.parse says so
      const top = stack[stack.length - 1];
      if (top?.kind === 'object' && top.expectKey) {
        const raw = text.slice(i + 1, end - 1);
        let key = raw;
        if (raw.includes('\\')) {
          try {
            key = JSON.parse(`"${raw}"`) as string;
          } catch {
            return undefined;
          }
        }
        if (top.keys.has(key)) return { field: memberPath(pathAt(stack, stack.length - 1), key), rule: 'must appear once: duplicate keys in JSON are refused' };
        top.keys.add(key);
        top.lastKey = key;
        top.expectKey = false;
      }
      i = end;
      continue;
    }
    if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      if (stack.length >= maxDepth) {
        const path = pathAt(stack, stack.length);
        return { field: path === '' ? '.' : path, rule: `must nest at most ${maxDepth} levels deep` };
      }
      stack.push(c === 0x7b ? { kind: 'object', keys: new Set(), expectKey: true, lastKey: '' } : { kind: 'array', index: 0 });
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      stack.pop();
    } else if (c === 0x2c /* , */) {
      const top = stack[stack.length - 1];
      if (top?.kind === 'object') top.expectKey = true;
      else if (top?.kind === 'array') top.index++;
    }
    i++;
  }
  return undefined;
}
