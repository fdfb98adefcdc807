/**
 * The page `racklb inspect` serves: plain HTML, CSS and one script, no build step and no library.
 * The script draws the topology as SVG from /api/topology, follows /api/events (server-sent
 * events) to redraw when the state changes, and asks /api/paths for the chosen Service IP. Every
 * text from Redis goes in through textContent, never as markup.
 */

export const PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>racklb inspect</title>
<link rel="stylesheet" href="/app.css">
</head>
<body>
<header>
  <h1>racklb</h1>
  <span id="status" data-testid="status">connecting...</span>
</header>
<main>
  <aside>
    <h2>Services</h2>
    <ul id="services" data-testid="services"></ul>
    <h2>Paths</h2>
    <div id="paths" data-testid="paths"><p class="hint">Choose a Service to see its ECMP paths.</p></div>
  </aside>
  <section>
    <svg id="topology" data-testid="topology" xmlns="http://www.w3.org/2000/svg"></svg>
    <p class="legend"><span class="k established"></span>session Established <span class="k down"></span>session down <span class="k unknown"></span>no report <span class="k path"></span>ECMP path of the chosen Service IP</p>
  </section>
</main>
<script src="/app.js"></script>
</body>
</html>
`;

export const PAGE_CSS = `
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d2433; background: #f6f7f9; }
header { display: flex; align-items: baseline; gap: 1em; padding: 8px 16px; background: #1d2433; color: #fff; }
header h1 { font-size: 18px; margin: 0; }
main { display: flex; gap: 16px; padding: 12px 16px; }
aside { width: 320px; flex: none; }
aside h2 { font-size: 14px; margin: 12px 0 6px; text-transform: uppercase; color: #5a6475; }
#services { list-style: none; padding: 0; margin: 0; }
#services button { width: 100%; text-align: left; margin: 2px 0; padding: 6px 8px; border: 1px solid #c9ced8; background: #fff; border-radius: 4px; cursor: pointer; }
#services button.selected { border-color: #2b6cd4; background: #e8f0fd; }
#services button:disabled { color: #8a93a3; cursor: default; }
#paths ul { padding-left: 18px; margin: 4px 0; }
#paths .rack { font-weight: 600; margin-top: 6px; }
#paths .skip { color: #8a5a00; }
.hint { color: #5a6475; }
section { flex: 1; overflow: auto; }
svg { background: #fff; border: 1px solid #d8dce3; border-radius: 6px; }
svg text { font-size: 12px; fill: #1d2433; }
svg .rackbox { fill: #f1f4f9; stroke: #c9ced8; }
svg .box { fill: #fff; stroke: #5a6475; }
svg .router .box { fill: #eef3ff; stroke: #2b4f8f; }
svg .spine .box { fill: #e8ecf4; stroke: #1d2433; }
svg .node.speaker .box { stroke-width: 2.5; }
svg .node.ineligible .box { stroke-dasharray: 4 3; fill: #fafafa; }
svg .node.carries .box { fill: #e8f0fd; stroke: #2b6cd4; }
svg .uplink { stroke: #b5bccb; stroke-width: 1.5; }
svg .session { stroke-width: 2.5; fill: none; }
svg .session.established { stroke: #1f9d55; }
svg .session.down { stroke: #d64545; stroke-dasharray: 6 4; }
svg .session.unknown { stroke: #9aa3b2; stroke-dasharray: 2 4; }
svg .path { stroke: #2b6cd4; stroke-width: 4; fill: none; opacity: 0.75; }
svg .small { font-size: 11px; fill: #5a6475; }
svg .warn { fill: #b03a2e; }
.legend .k { display: inline-block; width: 18px; height: 4px; margin: 0 4px 2px 12px; vertical-align: middle; }
.legend .established { background: #1f9d55; } .legend .down { background: #d64545; } .legend .unknown { background: #9aa3b2; } .legend .path { background: #2b6cd4; height: 6px; }
`;

export const PAGE_JS = String.raw`
'use strict';
var SVG = 'http://www.w3.org/2000/svg';
var state = { topology: null, selected: null, paths: null };

function el(tag, attrs, parent, text) {
  var e = document.createElementNS(SVG, tag);
  for (var k in attrs) if (attrs[k] !== undefined && attrs[k] !== null) e.setAttribute(k, String(attrs[k]));
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}
function h(tag, attrs, parent, text) {
  var e = document.createElement(tag);
  for (var k in attrs) if (attrs[k] !== undefined && attrs[k] !== null) e.setAttribute(k, String(attrs[k]));
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}
function sessionClass(s) { return s.up ? 'established' : (s.sessionState === 'unknown' ? 'unknown' : 'down'); }

var NODE_W = 150, NODE_H = 46, ROUTER_W = 150, ROUTER_H = 40, GAP = 16, PAD = 14;
var Y_SPINE = 20, Y_RACK = 100, Y_ROUTER = 130, Y_NODE = 270;

function draw() {
  var t = state.topology;
  var svg = document.getElementById('topology');
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  if (!t) return;
  var x = PAD, columns = [];
  t.racks.forEach(function (r) {
    var n = Math.max(1, r.nodes.length, r.routers.length);
    var w = n * (NODE_W + GAP) - GAP + 2 * PAD;
    columns.push({ rack: r, x: x, w: w });
    x += w + GAP;
  });
  var width = Math.max(x + PAD, 600), height = Y_NODE + NODE_H + 60;
  svg.setAttribute('width', width); svg.setAttribute('height', height); svg.setAttribute('viewBox', '0 0 ' + width + ' ' + height);
  var layers = { racks: el('g', {}, svg), links: el('g', {}, svg), paths: el('g', { 'data-testid': 'path-layer' }, svg), boxes: el('g', {}, svg) };

  var spine = { x: width / 2 - 105, y: Y_SPINE, w: 210, h: 40 };
  var gs = el('g', { 'class': 'spine' }, layers.boxes);
  el('rect', { 'class': 'box', x: spine.x, y: spine.y, width: spine.w, height: spine.h, rx: 6 }, gs);
  el('text', { x: spine.x + 10, y: spine.y + 24 }, gs, 'spine (ECMP over the leaves)');

  var nodeAt = {}, routerAt = {};
  columns.forEach(function (c) {
    var r = c.rack;
    var g = el('g', { 'class': 'rack', 'data-rack': r.rack }, layers.racks);
    el('rect', { 'class': 'rackbox', x: c.x, y: Y_RACK - 24, width: c.w, height: height - Y_RACK + 10, rx: 8 }, g);
    // The label sits at the bottom of the rack, clear of the uplinks that cross the top.
    el('text', { x: c.x + 8, y: height - 22 }, g, r.rack === '-' ? 'nodes without a rack label' : 'rack ' + r.rack);
    var rx = c.x + PAD;
    if (r.routers.length === 0) {
      el('text', { 'class': 'small', x: rx, y: Y_ROUTER + 24 }, layers.boxes, r.speakers.length ? 'no peer' : r.rack === '-' ? 'candidates in every rack' : 'no speaker');
    }
    r.routers.forEach(function (ro) {
      var b = { x: rx, y: Y_ROUTER, w: ROUTER_W, h: ROUTER_H };
      routerAt[r.rack + '|' + ro.address] = b;
      var gr = el('g', { 'class': 'router', 'data-router': ro.address, 'data-rack': r.rack }, layers.boxes);
      el('rect', { 'class': 'box', x: b.x, y: b.y, width: b.w, height: b.h, rx: 6 }, gr);
      el('text', { x: b.x + 8, y: b.y + 16 }, gr, ro.names.join(', '));
      el('text', { 'class': 'small', x: b.x + 8, y: b.y + 32 }, gr, ro.address + '  AS ' + ro.asn);
      el('line', { 'class': 'uplink', x1: spine.x + spine.w / 2, y1: spine.y + spine.h, x2: b.x + b.w / 2, y2: b.y }, layers.links);
      rx += ROUTER_W + GAP;
    });
    var nx = c.x + PAD;
    r.nodes.forEach(function (n) {
      var b = { x: nx, y: Y_NODE, w: NODE_W, h: NODE_H };
      nodeAt[n.node] = b;
      var cls = 'node' + (n.speaker ? ' speaker' : '') + (n.nextHop !== 'yes' ? ' ineligible' : '');
      var gn = el('g', { 'class': cls, 'data-node': n.node, 'data-rack': r.rack, 'data-next-hop': n.nextHop }, layers.boxes);
      el('rect', { 'class': 'box', x: b.x, y: b.y, width: b.w, height: b.h, rx: 6 }, gn);
      el('text', { x: b.x + 8, y: b.y + 17 }, gn, n.node + (n.speaker ? ' [speaker]' : ''));
      el('text', { 'class': 'small', x: b.x + 8, y: b.y + 33 }, gn, n.addresses.join(' '));
      if (n.nextHop !== 'yes') el('text', { 'class': 'small warn', x: b.x, y: b.y + b.h + 14 }, gn, n.nextHop);
      el('title', {}, gn, n.node + ': ' + (n.ready ? 'Ready' : 'not Ready') + ', ' + (n.schedulable ? 'schedulable' : 'cordoned') + (n.nextHop === 'yes' ? ', next hop' : ', not a next hop: ' + n.nextHop));
      nx += NODE_W + GAP;
    });
  });
  // Sessions: from each speaker node up to the router it peers with, coloured by state.
  columns.forEach(function (c) {
    c.rack.speakers.forEach(function (sp) {
      var nb = nodeAt[sp.node];
      sp.peers.forEach(function (p) {
        var rb = routerAt[c.rack.rack + '|' + p.neighborAddress];
        if (!nb || !rb) return;
        var line = el('path', { 'class': 'session ' + sessionClass(p), 'data-speaker': sp.node, 'data-neighbor': p.neighborAddress, 'data-state': p.sessionState,
          d: 'M' + (nb.x + nb.w / 2 - 10) + ' ' + nb.y + ' L' + (rb.x + rb.w / 2 - 10) + ' ' + (rb.y + rb.h) }, layers.links);
        el('title', {}, line, sp.node + ' -> ' + p.peer + ' (' + p.neighborAddress + '): ' + p.sessionState + (p.lastError ? ', last error ' + p.lastError : ''));
      });
    });
  });
  // The chosen Service IP: spine -> router -> node, once per announced next hop and router.
  var p = state.paths;
  if (p) {
    p.racks.forEach(function (r) {
      r.hops.forEach(function (hop) {
        var nb = nodeAt[hop.node];
        if (!nb) return;
        var g = svg.querySelector('g.node[data-node="' + CSS.escape(hop.node) + '"]');
        if (hop.announced && g) g.classList.add('carries');
        hop.routers.forEach(function (addr) {
          var rb = routerAt[r.rack + '|' + addr];
          if (!rb) return;
          el('path', { 'class': 'path', 'data-rack': r.rack, 'data-router': addr, 'data-node': hop.node,
            d: 'M' + (spine.x + spine.w / 2) + ' ' + (spine.y + spine.h) + ' L' + (rb.x + rb.w / 2 + 10) + ' ' + rb.y + ' M' + (rb.x + rb.w / 2 + 10) + ' ' + (rb.y + rb.h) + ' L' + (nb.x + nb.w / 2 + 10) + ' ' + nb.y }, layers.paths);
        });
      });
    });
  }
}

function drawServices() {
  var list = document.getElementById('services');
  while (list.firstChild) list.removeChild(list.firstChild);
  var t = state.topology;
  if (!t || t.services.length === 0) { h('li', { 'class': 'hint' }, list, 'no Services'); return; }
  t.services.forEach(function (s) {
    var li = h('li', {}, list);
    var b = h('button', { 'class': 'service' + (state.selected === s.ip && s.ip ? ' selected' : ''), 'data-service': s.service, 'data-ip': s.ip || '' }, li, s.service + '  ' + (s.ip || 'pending'));
    if (!s.ip) { b.disabled = true; b.title = s.pending || 'no IP yet'; }
    b.addEventListener('click', function () { select(s.ip); });
  });
}

function drawPaths() {
  var box = document.getElementById('paths');
  while (box.firstChild) box.removeChild(box.firstChild);
  var p = state.paths;
  if (!p) { h('p', { 'class': 'hint' }, box, state.selected ? 'no Service holds ' + state.selected : 'Choose a Service to see its ECMP paths.'); return; }
  h('p', {}, box, p.prefix + ' (' + p.services.join(', ') + ')');
  p.racks.forEach(function (r) {
    h('div', { 'class': 'rack' }, box, (r.rack === '-' ? 'speakers without a rack label' : r.rack) + ': ' + (r.announced.length ? r.announced.length + ' next hop(s)' : 'not announced'));
    var ul = h('ul', {}, box);
    r.hops.forEach(function (hop) {
      var li = h('li', { 'data-path': r.rack + ' ' + hop.node, 'data-announced': String(hop.announced), 'data-reason': hop.reason || '', 'class': hop.announced ? '' : 'skip' }, ul,
        hop.node + ' ' + (hop.address || '') + (hop.announced ? ' via ' + hop.routers.join(', ') : ': ' + hop.reason));
      li.title = hop.detail;
    });
  });
}

function status(text) { document.getElementById('status').textContent = text; }

function refreshPaths() {
  if (!state.selected) { state.paths = null; drawPaths(); draw(); return Promise.resolve(); }
  var ip = state.selected;
  return fetch('/api/paths?ip=' + encodeURIComponent(ip)).then(function (res) { return res.ok ? res.json() : null; }).then(function (p) {
    if (state.selected !== ip) return;
    state.paths = p; drawPaths(); draw();
  });
}

function select(ip) { state.selected = ip; drawServices(); refreshPaths(); }

function apply(t) {
  state.topology = t;
  document.body.setAttribute('data-revision', String(t.revision));
  status('revision ' + t.revision + (t.complete ? '' : ' - store not marked complete (speakers withdraw nothing)') + ' - updated ' + new Date().toLocaleTimeString());
  drawServices(); draw(); refreshPaths();
}

function connect() {
  var es = new EventSource('/api/events');
  es.addEventListener('topology', function (ev) { apply(JSON.parse(ev.data)); });
  es.addEventListener('problem', function (ev) { status('cannot read the state: ' + JSON.parse(ev.data).error + ' (showing the last one read)'); });
  es.onerror = function () { status('disconnected from racklb inspect; retrying...'); };
}

fetch('/api/topology').then(function (res) { return res.json(); }).then(apply).finally(connect);
`;
