/** `racklb explain` for people: rack by rack, node by node, with the reason word and its sentence. */
import { familyName } from '../core/ip.js';
import type { PoolChoiceReason } from '../core/ipam.js';
import { ANNOTATIONS } from '../core/types.js';
import { UNRACKED } from '../store/keys.js';
import type { FamilyExplanation, NodeExplanation, RackExplanation, ServiceExplanation, SpeakerExplanation } from './explain.js';

const POOL_TEXT: Record<PoolChoiceReason, string> = {
  poolAnnotation: `the pool the Service names (annotation ${ANNOTATIONS.pool.join(' or ')})`,
  poolOfRequestedIp: 'the pool that holds the requested IP',
  namespacePool: "a pool bound to the Service's namespace",
  defaultPool: `the default pool (${ANNOTATIONS.defaultEip.join(' or ')})`,
  keptWhileItFits: 'kept from an earlier allocation while it still fits (today another pool would be chosen)',
  keptFromStatus: 'a pool the Service may use',
};

function speakerLine(sp: SpeakerExplanation): string[] {
  const head = `speaker ${sp.node}${sp.asn !== null ? ` (AS ${sp.asn})` : ''}`;
  if (sp.problem === 'speakerNotSeen') return [`${head}: has never reported: not running, or cannot reach Redis`];
  const seen = sp.stale ? `; last heartbeat ${sp.lastSeen}: stale, sessions may have changed since` : '';
  const holding = sp.holding ? '; holding (store not proven complete: withdraws nothing)' : '';
  if (sp.problem === 'noPeer') return [`${head}: no BgpPeer selects this node${seen}${holding}`];
  return [
    `${head}${seen}${holding}`,
    ...sp.peers.map((p) => `    peer ${p.peer} ${p.neighborAddress} AS ${p.asn}${p.multihop ? ' (multihop)' : ''}: session ${p.sessionState}${p.up && p.uptimeSeconds ? `, up ${p.uptimeSeconds}s` : ''}${p.lastError ? `, last error: ${p.lastError}` : ''}`),
  ];
}

function rackBlock(r: RackExplanation, prefix: string): string[] {
  const lines = [`${r.rack === UNRACKED ? r.label : r.label}: ${r.announced.length ? `${prefix} -> ${r.announced.join(', ')}` : `${prefix} not announced`}`];
  if (r.speakers.length === 0) lines.push('  no speaker node in this rack');
  for (const sp of r.speakers) lines.push(...speakerLine(sp).map((l) => `  ${l}`));
  const width = Math.max(4, ...r.nextHops.map((h) => h.node.length));
  for (const h of r.nextHops) {
    const addr = (h.address ?? '-').padEnd(15);
    const tag = h.unracked && r.rack !== UNRACKED ? ' [no rack label]' : '';
    lines.push(`  ${h.node.padEnd(width)}  ${addr}  ${h.announced ? 'announced' : `NOT announced: ${h.reason}`}${tag} - ${h.detail}`);
  }
  return lines;
}

function originLines(e: Pick<ServiceExplanation, 'ip' | 'origin'>, label: string): string[] {
  if (!e.origin) return [`  ${label} ${e.ip}`];
  const how = e.origin.requested ? 'requested by the Service' : e.origin.by === 'keptFromStatus' ? 'kept the address its status showed (the store had lost it: Redis restarted empty, or a store rebuilt)' : 'allocated (the lowest free address)';
  return [
    `  ${label} ${e.ip}: ${how}, from Eip ${e.origin.pool}${e.origin.poolAddress ? ` (${e.origin.poolAddress})` : ''}, ${POOL_TEXT[e.origin.by]}`,
    `  ${e.origin.sharedWith.length ? `shared with ${e.origin.sharedWith.join(', ')} (one route for all)` : 'not shared'}`,
  ];
}

export function formatServiceExplanation(e: ServiceExplanation): string {
  const lines: string[] = [`Service ${e.service}`];
  if (!e.found) return [...lines, ...e.problems.map((p) => `  ${p}`)].join('\n');
  if (e.ip === null) return [...lines, ...e.problems.map((p) => `  ${p}`)].join('\n');
  if (e.families) return formatDualStack(e, e.families, lines);
  lines.push(...originLines(e, 'IP'));
  if (e.intent) {
    lines.push(
      e.intent.policy === 'Local'
        ? `  externalTrafficPolicy Local: next hops are nodes with a ready endpoint (${e.intent.endpointNodes.join(', ') || 'none'})`
        : '  externalTrafficPolicy Cluster: every Ready, schedulable node of a rack is a next hop',
    );
  }
  for (const p of e.problems) lines.push(`  ${p}`);
  for (const r of e.racks) lines.push('', ...rackBlock(r, e.prefix ?? ''));
  return lines.join('\n');
}

/** Each family in its own block: where its address came from and its racks, or why it has none. */
function formatDualStack(e: ServiceExplanation, families: readonly FamilyExplanation[], lines: string[]): string {
  lines.push(`  dual-stack (${e.ipFamilyPolicy ?? 'PreferDualStack'}): ${families.map((f) => `${familyName(f.family)} ${f.ip ?? 'none'}`).join(', ')}`);
  const policy = families.find((f) => f.intent)?.intent?.policy;
  if (policy) {
    lines.push(policy === 'Local' ? '  externalTrafficPolicy Local: next hops are nodes with a ready endpoint' : '  externalTrafficPolicy Cluster: every Ready, schedulable node of a rack is a next hop');
  }
  for (const p of e.problems) lines.push(`  ${p}`);
  for (const f of families) {
    lines.push('');
    if (f.ip === null) {
      lines.push(`  ${familyName(f.family)}: no address: ${f.pending ?? 'not allocated'}`);
      continue;
    }
    lines.push(...originLines(f, familyName(f.family)));
    if (f.intent?.policy === 'Local') lines.push(`  ready endpoints on ${f.intent.endpointNodes.join(', ') || 'no node'}`);
    for (const r of f.racks) lines.push('', ...rackBlock(r, f.prefix ?? ''));
  }
  return lines.join('\n');
}

export function formatNodeExplanation(e: NodeExplanation): string {
  if (!e.found) return `node ${e.node}: not stored: never received, or deleted (racklb events --kind Node --name ${e.node})`;
  const lines: string[] = [];
  lines.push(`node ${e.node}: ${e.rack ? `rack ${e.rack}` : 'no rack label: a next-hop candidate in every rack'}`);
  lines.push(`  addresses ${Object.values(e.addresses).join(', ') || 'none'}; ${e.ready ? 'Ready' : 'not Ready'}, ${e.schedulable ? 'schedulable' : 'cordoned'}`);
  lines.push(`  ${e.ineligible ? `not a next hop: ${e.ineligible}` : 'a next hop in its rack(s)'}`);
  for (const g of e.racks) lines.push(`  announced through ${g.label}: ${g.speakers.length ? `speaker(s) ${g.speakers.join(', ')}` : 'no speaker'}`);
  if (e.speaker) {
    lines.push('', `runs a speaker, announcing next hops of ${e.speaker.serves.length ? e.speaker.serves.join(', ') : 'no rack yet'}${e.rack ? '' : ' (no rack label: every node)'}`);
    lines.push(...speakerLine(e.speaker).map((l) => `  ${l}`));
  }
  lines.push('', e.routes.length ? 'routes that may carry it' : 'no route intent concerns this node');
  for (const r of e.routes) {
    lines.push(`  ${r.prefix.padEnd(20)} ${r.rack === UNRACKED ? '(unracked speakers)' : `rack ${r.rack}`}  ${r.announced ? 'announced' : `NOT announced: ${r.reason}`} - ${r.detail}  [${r.services.join(', ')}; ${r.policy}]`);
  }
  return lines.join('\n');
}
