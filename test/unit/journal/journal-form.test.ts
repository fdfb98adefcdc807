/**
 * What a journal line keeps of an object: everything a handler reads, without the large parts of
 * real objects that none reads.
 */
import { describe, expect, it } from 'vitest';
import { journalForm } from '../../../src/journal/journal.js';
import { parseNode, parseService } from '../../../src/core/objects.js';
import { node, service } from '../../helpers/fixtures.js';

const LAST_APPLIED = 'kubectl.kubernetes.io/last-applied-configuration';

/** A Node as a real cluster's API server sends it: managedFields, kubectl's copy, every image. */
function realNode(): Record<string, unknown> {
  const n = node({ name: 'worker-p001', ip: '192.168.0.3', rack: 'leaf1', speaker: true, annotations: { [LAST_APPLIED]: '{"kind":"Node"}', 'node.alpha.kubernetes.io/ttl': '0' } });
  (n.metadata as Record<string, unknown>).managedFields = [{ manager: 'kubelet', operation: 'Update', fieldsV1: { 'f:status': { 'f:images': {} } } }];
  (n.status as Record<string, unknown>).images = Array.from({ length: 40 }, (_, i) => ({ names: [`registry.example/image-${i}@sha256:${'0'.repeat(64)}`], sizeBytes: 1e8 }));
  return n;
}

describe('journalForm', () => {
  it('drops managedFields, the last-applied copy and a Node’s images, and nothing a handler reads', () => {
    const original = realNode();
    const kept = journalForm(original) as Record<string, Record<string, unknown>>;
    expect(kept.metadata?.managedFields).toBeUndefined();
    expect(kept.metadata?.annotations).toEqual({ 'node.alpha.kubernetes.io/ttl': '0' });
    expect(kept.status?.images).toBeUndefined();
    expect(kept.status?.addresses).toEqual((original.status as Record<string, unknown>).addresses);
    expect(parseNode(kept)).toEqual(parseNode(original));
    expect(JSON.stringify(kept).length).toBeLessThan(JSON.stringify(original).length / 4);
  });

  it('leaves the object it was given as it was', () => {
    const original = realNode();
    const before = JSON.stringify(original);
    journalForm(original);
    expect(JSON.stringify(original)).toBe(before);
  });

  it('returns an object with nothing to drop as it is, and keeps the status of other kinds', () => {
    const svc = service({ name: 'web', requestedIp: '198.51.100.9' });
    expect(journalForm(svc)).toBe(svc);
    const withImages = { ...svc, status: { images: ['not a Node'] } };
    expect(journalForm(withImages)).toBe(withImages);
    const applied = service({ name: 'web', annotations: { [LAST_APPLIED]: '{}' } });
    expect(parseService(journalForm(applied))).toEqual(parseService(applied));
    for (const odd of [null, 'text', 42, [1, 2]]) expect(journalForm(odd)).toBe(odd);
  });
});
