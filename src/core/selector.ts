/** Kubernetes label selectors (metav1.LabelSelector), validated and matched as the API server does. */
import { invalidField } from '../errors.js';
import {
  LABEL_KEY_RULE,
  hasOwnKey,
  isLabelKey,
  optionalArray,
  optionalObject,
  own,
  parseLabelMap,
  requireLabelValue,
  requireObject,
} from './fields.js';
import type { LabelSelector, LabelSelectorRequirement } from './types.js';

const OPERATORS: readonly LabelSelectorRequirement['operator'][] = ['In', 'NotIn', 'Exists', 'DoesNotExist'];

/** undefined or null: no selector. `{}` is a selector that matches everything. */
export function parseLabelSelector(raw: unknown, field: string): LabelSelector | undefined {
  const obj = optionalObject(raw, field);
  if (obj === undefined) return undefined;
  const matchLabels = parseLabelMap(own(obj, 'matchLabels'), `${field}.matchLabels`);
  const exprs = optionalArray(own(obj, 'matchExpressions'), `${field}.matchExpressions`);
  const matchExpressions = exprs.map((e, i) => parseRequirement(e, `${field}.matchExpressions[${i}]`));
  return { matchLabels, matchExpressions };
}

function parseRequirement(raw: unknown, field: string): LabelSelectorRequirement {
  const obj = requireObject(raw, field);
  const key = own(obj, 'key');
  if (typeof key !== 'string' || !isLabelKey(key)) throw invalidField(`${field}.key`, LABEL_KEY_RULE, key);
  const operator = own(obj, 'operator');
  if (!OPERATORS.includes(operator as LabelSelectorRequirement['operator'])) {
    throw invalidField(`${field}.operator`, `must be one of ${OPERATORS.join(', ')}`, operator);
  }
  const op = operator as LabelSelectorRequirement['operator'];
  const values = optionalArray(own(obj, 'values'), `${field}.values`).map((v, i) =>
    requireLabelValue(v, `${field}.values[${i}]`),
  );
  const needsValues = op === 'In' || op === 'NotIn';
  if (needsValues && values.length === 0) {
    throw invalidField(`${field}.values`, `must be non-empty when operator is ${op}`);
  }
  if (!needsValues && values.length > 0) {
    throw invalidField(`${field}.values`, `must be empty when operator is ${op}`, values);
  }
  return { key, operator: op, values };
}

/**
 * No selector matches everything (PorterLB applies a BgpPeer without nodeSelector to every speaker),
 * and so does an empty one, as in Kubernetes' LabelSelectorAsSelector. Label lookups use own
 * properties only: `constructor` is a valid label key.
 */
export function matchesSelector(sel: LabelSelector | undefined, labels: Record<string, string>): boolean {
  if (sel === undefined) return true;
  // Called for every speaker and BgpPeer pair of a batch: no entry arrays, no closures.
  const match = sel.matchLabels;
  for (const k in match) {
    if (!hasOwnKey(match, k)) continue;
    if (!hasOwnKey(labels, k) || labels[k] !== match[k]) return false;
  }
  for (const req of sel.matchExpressions) {
    const present = hasOwnKey(labels, req.key);
    const value = present ? labels[req.key] : undefined;
    switch (req.operator) {
      case 'In':
        if (value === undefined || !req.values.includes(value)) return false;
        break;
      case 'NotIn':
        if (value !== undefined && req.values.includes(value)) return false;
        break;
      case 'Exists':
        if (!present) return false;
        break;
      case 'DoesNotExist':
        if (present) return false;
        break;
    }
  }
  return true;
}
