import { parseObject } from '/work/main/dist/src/core/objects.js';
import { bgpPeer } from '/work/main/dist/test/helpers/fixtures.js';
try { parseObject(bgpPeer({ name: 'bad-peer', peerAs: 0, neighborAddress: '192.0.2.9' })); } catch (e) { console.log(e.message); }
