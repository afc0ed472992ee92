// Prism dashboard: polls /api/summary (every second) and /api/timeline (every two) and draws
// them. Text from tasks (names, error messages) is only ever set as textContent.
'use strict';

const SVG = 'http://www.w3.org/2000/svg';
const STATE_COLORS = {
  waiting_for_arguments: '#9aa3b5', waiting_for_resources: '#e39b2d', running: '#5b4fd6',
  on_other_nodes: '#2a9d8f', finished_per_s: '#3a86ff', failed_per_s: '#c62f3b'
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, text) {
  const e = tag.startsWith('svg:') ? document.createElementNS(SVG, tag.slice(4))
                                   : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function bytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + ' ' + units[i];
}

function amount(name, v) {
  if (name === 'memory' || name === 'gpu_memory' || name === 'object_store_memory') return bytes(v);
  return Number.isInteger(v) ? String(v) : v.toFixed(2);
}

function duration(s) {
  if (s < 60) return s.toFixed(0) + ' s';
  if (s < 3600) return Math.floor(s / 60) + ' min ' + Math.floor(s % 60) + ' s';
  return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
}

function setStatus(text, bad) {
  const s = $('status');
  s.textContent = text;
  s.className = bad ? 'status bad' : 'status';
}

async function getJson(url) {
  const r = await fetch(url, { credentials: 'same-origin', cache: 'no-store' });
  if (r.status === 403) throw new Error('not authorised: open the URL Prism printed at start');
  if (!r.ok) throw new Error(url + ': HTTP ' + r.status);
  return r.json();
}

function drawTasks(t) {
  for (const [k, v] of Object.entries(t)) {
    const cell = $('count-' + k);
    if (cell) cell.textContent = v.toLocaleString('en-US');
  }
}

function drawNodes(nodes, threads) {
  const body = $('nodes');
  body.replaceChildren();
  for (const n of nodes) {
    const row = el('tr', { 'data-node': n.node, class: 'node' });
    row.append(el('td', { class: 'node-name' }, n.node));
    const cell = el('td');
    for (const [name, total] of Object.entries(n.total)) {
      const used = Math.max(0, total - (n.available[name] ?? total));
      const line = el('div', { class: 'res', 'data-resource': name });
      line.append(el('span', { class: 'name' }, name));
      const bar = el('span', { class: 'bar' });
      const fill = el('span', { class: 'fill' });
      fill.style.display = 'block';
      fill.style.width = (total > 0 ? Math.min(100, 100 * used / total) : 0) + '%';
      bar.append(fill);
      line.append(bar, el('span', { class: 'amount' }, amount(name, used) + ' / ' + amount(name, total)));
      cell.append(line);
    }
    row.append(cell);
    // What the node itself counts (another node's: its last report, at most a second old).
    row.append(el('td', { class: 'node-own' }, n.reported
      ? n.tasks_waiting_for_arguments + ' waiting for arguments, ' + n.tasks_queued + ' queued, ' +
        n.tasks_running + ' running, ' + n.tasks_done.toLocaleString('en-US') + ' done, ' +
        n.tasks_failed + ' failed; ' + n.objects + ' objects (' + bytes(n.primary_bytes) +
        '), copies ' + bytes(n.secondary_bytes) + '; ' + n.threads + ' threads'
      : 'not reported yet'));
    body.append(row);
  }
  $('threads').textContent = threads + ' scheduler threads on ' + nodes[0].node;
}

function drawObjects(o, x) {
  const rows = [
    ['objects in the store', o.objects.toLocaleString('en-US')],
    ['store bytes (primary)', bytes(o.primary_bytes) + ' of ' + bytes(o.capacity_bytes)],
    ['copies from other nodes (secondary)', bytes(o.secondary_bytes)],
    ['spilled to disk', bytes(o.spilled_bytes)],
    ['read back from disk', bytes(o.restored_bytes)],
    ['host <-> GPU copies', x.device_copies + ' (' + bytes(x.device_copy_bytes) + ')'],
    ['pulled from other nodes', x.node_pulls + ' (' + bytes(x.node_pulled_bytes) + ')'],
    ['served to other nodes', x.node_served + ' (' + bytes(x.node_served_bytes) + ')']
  ];
  const body = $('objects-body');
  body.replaceChildren();
  for (const [k, v] of rows) {
    const tr = el('tr');
    tr.append(el('th', {}, k), el('td', {}, v));
    body.append(tr);
  }
}

function drawErrors(errors, total) {
  $('errors-total').textContent = total === 0 ? '(none)' :
      '(' + total + ' kept' + (errors.length < total ? ', the newest ' + errors.length + ' shown' : '') + ')';
  const body = $('errors');
  body.replaceChildren();
  for (const e of errors.slice().reverse()) {  // newest first
    const tr = el('tr', { class: 'error', 'data-task': e.task });
    tr.append(el('td', {}, new Date(e.time_ms).toLocaleTimeString()),
              el('td', {}, e.node), el('td', { class: 'function' }, e.function),
              el('td', { class: 'type' }, e.type), el('td', { class: 'message' }, e.message));
    body.append(tr);
  }
}

function drawHistory(h) {
  const svg = $('history');
  svg.replaceChildren();
  const samples = h.samples;
  if (samples.length === 0) return;
  const W = 1000, H = 180, PAD = 4;
  // Lines: the in-flight states as counts; done and failed as rates between samples.
  const series = {};
  h.states.forEach((name, i) => {
    if (name !== 'done' && name !== 'failed') series[name] = samples.map((s) => [s[0], s[i + 1]]);
  });
  const rate = (col) => samples.slice(1).map((s, i) => {
    const dt = (s[0] - samples[i][0]) / 1000;
    return [s[0], dt > 0 ? (s[col] - samples[i][col]) / dt : 0];
  });
  series.finished_per_s = rate(h.states.indexOf('done') + 1);
  series.failed_per_s = rate(h.states.indexOf('failed') + 1);
  const t0 = samples[0][0], t1 = Math.max(samples[samples.length - 1][0], t0 + 1);
  let max = 1;
  for (const pts of Object.values(series)) for (const p of pts) max = Math.max(max, p[1]);
  const legend = $('history-legend');
  legend.replaceChildren();
  for (const [name, pts] of Object.entries(series)) {
    if (pts.length === 0) continue;
    const d = pts.map((p) => ((p[0] - t0) / (t1 - t0) * (W - 2 * PAD) + PAD).toFixed(1) + ',' +
                             (H - PAD - p[1] / max * (H - 2 * PAD)).toFixed(1)).join(' ');
    svg.append(el('svg:polyline', { points: d, fill: 'none', stroke: STATE_COLORS[name],
                                    'stroke-width': 2, 'vector-effect': 'non-scaling-stroke',
                                    'data-state': name }));
    const last = pts[pts.length - 1][1];
    const item = el('span', { 'data-state': name });
    const swatch = el('i');
    swatch.style.background = STATE_COLORS[name];
    item.append(swatch, document.createTextNode(name.replaceAll('_', ' ') + ': ' +
                                                Math.round(last).toLocaleString('en-US')));
    legend.append(item);
  }
  svg.append(el('svg:text', { x: W - PAD, y: 14, 'text-anchor': 'end', 'font-size': 12,
                              fill: '#6b7385' }, 'max ' + Math.round(max).toLocaleString('en-US')));
}

function hue(s) {
  let h = 0;
  for (let i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) >>> 0;
  return h % 360;
}

function drawTimeline(t) {
  const svg = $('timeline');
  svg.replaceChildren();
  // One row per (node, thread); a span is [lane, thread, start_ms, dur_ms, name, task, gpu].
  // (Device lanes have negative threads: GPU d is -1 - d.)
  const key = (s) => s[0] * 1000000 + s[1] + 500000;
  const rows = [...new Set(t.spans.map(key))].sort((a, b) => a - b);
  const ROW = 16, LABEL = 110, W = 1000;
  const H = Math.max(40, rows.length * ROW + 20);
  svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
  svg.style.height = H + 'px';
  // The axis spans the window, narrowed to the runs it holds (at least a second), so that short
  // runs are not a pixel wide.
  let from = t.now_ms - t.window_ms;
  if (t.spans.length > 0) {
    const first = Math.min(...t.spans.map((s) => s[2]));
    from = Math.max(from, Math.min(first - 0.02 * (t.now_ms - first), t.now_ms - 1000));
  }
  const span = t.now_ms - from;
  const x = (ms) => LABEL + Math.max(0, (ms - from) / span) * (W - LABEL);
  const several = t.lanes.length > 1;
  rows.forEach((k, i) => {
    const lane = Math.floor(k / 1000000), thread = (k % 1000000) - 500000;
    const what = thread < 0 ? 'GPU ' + (-1 - thread) + ' work' : 'thread ' + thread;
    svg.append(el('svg:text', { x: 4, y: i * ROW + 12, 'font-size': 11, fill: '#6b7385' },
                  (several ? t.lanes[lane] + ' \u00b7 ' : '') + what));
  });
  const rowIndex = new Map(rows.map((k, i) => [k, i]));
  for (const s of t.spans) {
    const name = t.names[s[4]];
    const x0 = x(s[2]), x1 = x(s[2] + s[3]);
    const r = el('svg:rect', { class: 'span', x: x0.toFixed(2), y: rowIndex.get(key(s)) * ROW + 2,
                               width: Math.max(0.5, x1 - x0).toFixed(2), height: ROW - 4,
                               fill: 'hsl(' + hue(name) + ',55%,' + (s[6] >= 0 ? '40%' : '58%') + ')',
                               'data-name': name, 'data-node': t.lanes[s[0]] });
    r.append(el('svg:title', {}, name + ' on ' + t.lanes[s[0]] + ' (task ' + s[5] +
                                 (s[6] >= 0 ? ', GPU ' + s[6] : '') + '): ' + s[3].toFixed(3) + ' ms'));
    svg.append(r);
  }
  svg.append(el('svg:text', { x: LABEL, y: H - 4, 'font-size': 11, fill: '#6b7385' },
                '-' + (span / 1000).toFixed(span < 10000 ? 1 : 0) + ' s'));
  svg.append(el('svg:text', { x: W - 4, y: H - 4, 'font-size': 11, fill: '#6b7385',
                              'text-anchor': 'end' }, 'now'));
  $('timeline-note').textContent = '(the last ' + (t.window_ms / 1000) + ' s on ' +
      t.lanes.join(', ') + ': ' + t.spans.length.toLocaleString('en-US') + ' runs' +
      (t.truncated ? ', the newest only' : '') +
      (t.missing.length > 0 ? '; no answer from ' + t.missing.join(', ') : '') + ')';
}

async function refreshSummary() {
  try {
    const s = await getJson('/api/summary');
    $('node-id').textContent = s.node;
    $('role').textContent = s.role;
    $('uptime').textContent = 'up ' + duration(s.uptime_s);
    drawTasks(s.tasks);
    drawNodes(s.nodes, s.threads);
    drawObjects(s.objects, s.transfers);
    drawErrors(s.errors, s.errors_total);
    drawHistory(s.history);
    setStatus('live, updated ' + new Date().toLocaleTimeString(), false);
  } catch (e) {
    setStatus(e.message.startsWith('not authorised') ? e.message : 'disconnected: ' + e.message, true);
  }
}

async function refreshTimeline() {
  try {
    drawTimeline(await getJson('/api/timeline?window_ms=60000'));
  } catch (e) {
    // refreshSummary reports the connection's state.
  }
}

refreshSummary();
refreshTimeline();
setInterval(refreshSummary, 1000);
setInterval(refreshTimeline, 2000);
