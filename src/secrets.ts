/**
 * Keeping secrets out of what people read: the journal, logs and `racklb state`. The only secret
 * in Kubernetes objects racklb reads is a BgpPeer's MD5 password (`authPassword`); the speaker
 * needs it, so the stored BgpPeer record keeps it (protect Redis with ACLs and TLS), but every copy
 * of an event made for people to read goes through here first.
 */

/** Object members whose values are secrets, wherever they appear. */
export const SECRET_KEYS: ReadonlySet<string> = new Set(['authPassword', 'password']);
export const REDACTED = '[redacted]';

/** A JSON.stringify replacer that replaces the value of every secret member. */
export function redactReplacer(key: string, value: unknown): unknown {
  return SECRET_KEYS.has(key) && value !== undefined && value !== null && value !== '' ? REDACTED : value;
}

// How JSON.stringify writes a secret member's name. A string value holding the same characters is
// written with its quotes escaped, so only a member can match.
const SECRET_MEMBER = /"(?:authPassword|password)":/;

/**
 * JSON.stringify(value, redactReplacer), at the cost of a plain JSON.stringify when nothing in
 * `value` is a secret: the replacer is a call per member, and most events carry no secret at all.
 */
export function redactedJson(value: unknown): string {
  const text = JSON.stringify(value);
  return SECRET_MEMBER.test(text) ? JSON.stringify(value, redactReplacer) : text;
}

// "authPassword": "..." in JSON text, and the same once escaped inside a JSON string (structured
// CloudEvents may carry the object as a string).
const PLAIN = /("(?:authPassword|password)"\s*:\s*)("(?:[^"\\]|\\.)*"|[^,}\]\s]+)/g;
// Inside the escaped value: a plain character, or an inner escape (\" \\ \n as \\\" \\\\ \\n).
const ESCAPED = /(\\"(?:authPassword|password)\\"\s*:\s*)(\\"(?:[^"\\]|\\\\\\"|\\\\\\\\|\\\\[^"\\])*\\"|[^,}\]\s\\]+)/g;

/** Redacts secret members in text that may be (broken) JSON: request bodies kept for the journal. */
export function redactText(text: string): string {
  return text.replace(ESCAPED, `$1\\"${REDACTED}\\"`).replace(PLAIN, `$1"${REDACTED}"`);
}
