/** The speaker's Prometheus metrics, in one registry served on /metrics. */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

export interface SpeakerMetrics {
  registry: Registry;
  sessionsUp: Gauge;
  pathsAnnounced: Gauge;
  holding: Gauge;
  reconcileSeconds: Histogram;
  reconcileErrors: Counter;
  storeErrors: Counter;
}

export function createSpeakerMetrics(): SpeakerMetrics {
  const registry = new Registry();
  return {
    registry,
    sessionsUp: new Gauge({ name: 'racklb_speaker_sessions_up', help: 'BGP sessions in state Established', registers: [registry] }),
    pathsAnnounced: new Gauge({ name: 'racklb_speaker_paths_announced', help: 'Paths (prefix and next hop) held in gobgpd', registers: [registry] }),
    holding: new Gauge({ name: 'racklb_speaker_holding', help: '1 while the store is not proven complete and withdrawals are held back', registers: [registry] }),
    reconcileSeconds: new Histogram({ name: 'racklb_speaker_reconcile_seconds', help: 'Duration of one reconcile with gobgpd', buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5], registers: [registry] }),
    reconcileErrors: new Counter({ name: 'racklb_speaker_reconcile_errors_total', help: 'Reconciles that failed and were retried', registers: [registry] }),
    storeErrors: new Counter({ name: 'racklb_speaker_store_errors_total', help: 'Failed reads of Redis', registers: [registry] }),
  };
}
