// lakectl's web console: one page over /api/v1. Everything it shows comes from the API
// with the bearer token it asks for (kept in sessionStorage for this tab). Data is put
// into the page as text nodes only, never as HTML.
'use strict';

const TOKEN_KEY = 'lakectl.token';
let token = sessionStorage.getItem(TOKEN_KEY) || '';
let pendingAuth = null;

const $ = (sel) => document.querySelector(sel);

// Iceberg snapshot ids are 63-bit: a JSON number past 2^53 is kept as its exact text.
function parseJSON(text) {
  return JSON.parse(text, (k, v, ctx) =>
    typeof v === 'number' && Number.isInteger(v) && !Number.isSafeInteger(v) && ctx && typeof ctx.source === 'string'
      ? ctx.source : v);
}

// Whether JSON.parse hands the reviver each value's source text (needed for the above).
const EXACT_IDS = (() => {
  let ok = false;
  JSON.parse('1', (k, v, ctx) => { ok = !!(ctx && ctx.source === '1'); return v; });
  return ok;
})();

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(path, opts = {}) {
  for (;;) {
    const headers = Object.assign({}, opts.headers || {});
    const sent = token;
    if (sent) headers.Authorization = 'Bearer ' + sent;
    const r = await fetch(path, Object.assign({}, opts, { headers }));
    if (r.status === 401) {
      // Sent with a token that has been replaced meanwhile: retry with the new one.
      if (token !== sent) continue;
      await askToken(sent ? 'The server refused that token.' : '');
      continue;
    }
    const text = await r.text();
    const type = r.headers.get('content-type') || '';
    let body = text;
    if (type.startsWith('application/json')) {
      try { body = parseJSON(text); } catch (e) { body = text; }
    }
    if (!r.ok) {
      const code = body && body.code ? body.code : 'http_' + r.status;
      const message = body && body.message ? body.message : text;
      throw new ApiError(r.status, code, message);
    }
    return body;
  }
}

// One prompt for every call that was refused meanwhile.
function askToken(message) {
  if (!pendingAuth) {
    pendingAuth = new Promise((resolve) => {
      const d = $('#token-dialog');
      $('#token-error').textContent = message;
      $('#token-input').value = '';
      d.showModal();
      $('#token-input').focus();
      $('#token-form').onsubmit = (ev) => {
        ev.preventDefault();
        const t = $('#token-input').value.trim();
        if (!t) return;
        token = t;
        sessionStorage.setItem(TOKEN_KEY, t);
        $('#forget-token').hidden = false;
        d.close();
        pendingAuth = null;
        resolve();
      };
    });
  }
  return pendingAuth;
}

// h('td', {class: 'num'}, 'text', child, ...): an element; strings become text nodes.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'style') el.style.cssText = v; // CSSOM: allowed by the page's CSP
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const SVG = 'http://www.w3.org/2000/svg';
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

const fmt = (n) => (n === undefined || n === null ? '–' : Number(n).toLocaleString('en-US'));
const seg = (x) => encodeURIComponent(x);
// Each navigation numbers its view; a slower, older one does not overwrite it.
let view = 0;
function show(mine, ...nodes) { if (mine === view) $('#main').replaceChildren(...nodes); }
function errorBox(e) {
  return h('section', { class: 'error', id: 'error' }, h('strong', {}, e.code || 'error'), ': ', e.message || String(e));
}

// ---- tables list -------------------------------------------------------------------

async function loadTables() {
  const list = $('#tables');
  try {
    const tables = await api('/api/v1/tables');
    if (!tables.length) { list.replaceChildren(h('li', { class: 'muted' }, 'no tables yet')); return; }
    list.replaceChildren(...tables.map((t) => {
      const name = t.namespace + '.' + t.name;
      return h('li', {}, h('a', { href: '#/table/' + seg(t.namespace) + '/' + seg(t.name), 'data-table': name },
        h('span', {}, name), h('span', { class: 'rows' }, t.total_records === null ? '' : fmt(t.total_records) + ' rows')));
    }));
    markActive();
  } catch (e) {
    list.replaceChildren(h('li', { class: 'error' }, e.message));
  }
}

// The table a `#/table/NS/NAME` hash names, as [ns, name]; null for any other hash.
function tableOfHash() {
  const m = location.hash.match(/^#\/table\/([^/]+)\/([^/]+)$/);
  if (!m) return null;
  try {
    const parts = [decodeURIComponent(m[1]), decodeURIComponent(m[2])];
    return parts.some((x) => x === '.' || x === '..') ? null : parts;
  } catch (e) {
    return null;
  }
}

function markActive() {
  const m = tableOfHash();
  const current = m ? m[0] + '.' + m[1] : null;
  for (const a of document.querySelectorAll('#tables a')) a.classList.toggle('active', a.dataset.table === current);
  $('#nav-overview').classList.toggle('active', !m && location.hash !== '#/query');
  $('#nav-query').classList.toggle('active', location.hash.startsWith('#/query'));
}

// ---- overview: plan, drift, held back, watcher -------------------------------------

async function showOverview(mine) {
  show(mine, h('h1', {}, 'Lakehouse'), h('p', { class: 'muted' }, 'planning…'));
  const [plan, watch] = await Promise.all([
    api('/api/v1/plan').catch((e) => e),
    api('/api/v1/watch').catch((e) => e),
  ]);
  const parts = [h('h1', {}, 'Lakehouse')];
  if (plan instanceof Error) {
    parts.push(h('section', { id: 'plan' }, h('h2', {}, 'Plan'), h('p', { class: 'error' }, plan.message)));
  } else {
    const lh = plan.lakehouse;
    if (lh) $('#lakehouse').textContent = `${lh.catalog_kind} catalog ${lh.catalog_name} · ${lh.catalog_uri || ''} · warehouse ${lh.warehouse}`;
    parts.push(planSection(plan));
    parts.push(driftSection(plan.drift || []));
    parts.push(heldSection(plan.held_back || []));
  }
  parts.push(watchSection(watch));
  show(mine, ...parts);
}

function describe(c) {
  if (Array.isArray(c.items) && c.items.length) return c.items.join('; ');
  if (Array.isArray(c.files)) return c.files.length + ' file(s), ' + fmt(c.bytes) + ' bytes from ' + (c.source || 'a source');
  for (const k of ['description', 'details', 'reason', 'sql']) if (typeof c[k] === 'string') return c[k];
  if (c.input_files !== undefined) return c.input_files + ' files (' + fmt(c.input_bytes) + ' bytes) into ~' + c.estimated_outputs;
  return '';
}

// The text `lakectl plan` prints, fetched when its section is first opened (planning
// observes every table: the overview does it once).
function planText() {
  const pre = h('pre', { id: 'plan-text' }, 'planning…');
  let asked = false;
  return h('details', {
    ontoggle: (ev) => {
      if (!ev.target.open || asked) return;
      asked = true;
      api('/api/v1/plan?format=text').then((t) => { pre.textContent = t; }, (e) => { pre.textContent = e.message; });
    },
  }, h('summary', {}, 'the plan as `lakectl plan` prints it'), pre);
}

function planSection(plan) {
  const sum = plan.summary || {};
  const head = sum.has_changes
    ? `${sum.add} to add, ${sum.change} to change, ${sum.destroy} to destroy` + (sum.ingest_files ? `, ${sum.ingest_files} file(s) to ingest` : '')
    : 'No changes: the tables match their manifests.';
  const rows = (plan.changes || []).map((c) => h('tr', {},
    h('td', {}, c.action, c.destructive ? h('span', { class: 'badge destructive' }, 'destructive') : null),
    h('td', {}, c.kind),
    h('td', {}, c.table || c.namespace || ''),
    h('td', {}, describe(c))));
  return h('section', { id: 'plan' }, h('h2', {}, 'Plan'),
    h('p', { id: 'plan-summary' }, head),
    rows.length ? h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'action'), h('th', {}, 'kind'), h('th', {}, 'table'), h('th', {}, 'what'))), h('tbody', {}, rows)) : null,
    (plan.errors || []).map((e) => h('p', { class: 'error' }, typeof e === 'string' ? e : JSON.stringify(e))),
    planText());
}

function driftSection(drift) {
  return h('section', { id: 'drift' }, h('h2', {}, 'Drift'),
    drift.length ? drift.map((d) => h('div', {},
      h('h3', {}, d.table, h('span', { class: 'muted' }, ' onDrift: ' + d.policy)),
      h('ul', {}, (d.items || []).map((i) => h('li', {}, i.what, h('span', { class: 'badge held' }, i.outcome))),
        (d.snapshots || []).map((f) => h('li', {}, 'snapshot ', h('code', {}, f.snapshot_id), ' by another writer: ', f.operation || '')))))
      : h('p', { class: 'muted' }, 'No changes made outside lakectl.'));
}

function heldSection(held) {
  return h('section', { id: 'held-back' }, h('h2', {}, 'Held back'),
    held.length ? h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'table'), h('th', {}, 'change'), h('th', {}, 'details'), h('th', {}, 'snapshot'), h('th', {}, 'change id'))),
      h('tbody', {}, held.map((x) => h('tr', {}, h('td', {}, x.table), h('td', {}, x.change), h('td', {}, x.details), h('td', {}, h('code', {}, x.snapshot_id)), h('td', {}, h('code', {}, x.change_id))))))
      : h('p', { class: 'muted' }, 'No changes are held back (a rollback holds back the changes it undoes; `lakectl apply --reapply ID` releases one).'));
}

function watchSection(w) {
  const sec = h('section', { id: 'watch' }, h('h2', {}, 'Watcher'));
  if (w instanceof Error) {
    sec.append(h('p', { class: w.code === 'not_configured' ? 'muted' : 'error' }, w.message));
    return sec;
  }
  const tables = w.tables || {};
  const names = Object.keys(tables).sort();
  sec.append(h('p', { class: 'muted' }, (w.cycles ?? 0) + ' reconcile cycle(s) so far · woken by ' + (w.file_events || '–') +
    (w.git ? ' · git ' + (w.git.commit || '').slice(0, 12) + ' pulled ' + w.git.last_pull : '')));
  if (w.error) sec.append(h('p', { class: 'error' }, w.error));
  sec.append(h('table', {}, h('thead', {}, h('tr', {}, ['table', 'condition', 'reason', 'message', 'pending', 'held back', 'last applied', 'last reconcile'].map((x) => h('th', {}, x)))),
    h('tbody', {}, names.map((n) => {
      const t = tables[n];
      return h('tr', { 'data-table': n }, h('td', {}, n), h('td', {}, h('span', { class: 'badge ' + t.condition }, t.condition)),
        h('td', {}, t.reason), h('td', {}, t.last_error || t.message), h('td', { class: 'num' }, t.pending_changes),
        h('td', { class: 'num' }, t.held_back), h('td', {}, h('code', {}, t.last_applied_snapshot ?? '–')), h('td', {}, t.last_reconcile));
    }))));
  return sec;
}

// ---- one table ---------------------------------------------------------------------

async function showTable(mine, ns, name) {
  show(mine, h('h1', {}, ns + '.' + name), h('p', { class: 'muted' }, 'loading…'));
  const base = '/api/v1/tables/' + seg(ns) + '/' + seg(name);
  const [t, snaps] = await Promise.all([api(base), api(base + '/snapshots')]);
  const full = ns + '.' + name;
  show(mine,
    h('h1', { id: 'table-name' }, full),
    h('dl', { class: 'meta' },
      h('dt', {}, 'rows'), h('dd', {}, fmt(t.total_records)),
      h('dt', {}, 'current snapshot'), h('dd', {}, h('code', {}, t.current_snapshot_id ?? 'none')),
      h('dt', {}, 'location'), h('dd', {}, h('code', {}, t.location)),
      h('dt', {}, 'metadata'), h('dd', {}, h('code', {}, t.metadata_location))),
    h('div', { class: 'toolbar' }, h('a', { href: '#/query?sql=' + seg(`select * from ${full} limit 100`), id: 'query-table' }, 'Query this table')),
    schemaSection(t),
    layoutSection(t),
    historySection(t, snaps, ns, name),
    propertiesSection(t));
}

function schemaSection(t) {
  const keys = new Set(t.identifier_fields || []);
  return h('section', { id: 'schema' }, h('h2', {}, 'Schema ', h('span', { class: 'muted' }, 'id ' + t.schema_id)),
    h('table', {}, h('thead', {}, h('tr', {}, h('th', { class: 'num' }, 'field id'), h('th', {}, 'name'), h('th', {}, 'type'), h('th', {}, 'required'), h('th', {}, 'doc'))),
      h('tbody', {}, t.columns.map((c) => h('tr', { 'data-field-id': c.id },
        h('td', { class: 'num' }, c.id),
        h('td', { style: 'padding-left:' + (0.5 + c.depth * 1.2) + 'rem' }, h('code', {}, c.name), keys.has(c.path) ? [' ', h('span', { class: 'badge key' }, 'key')] : null),
        h('td', {}, h('code', {}, c.type)),
        h('td', {}, c.required ? 'required' : 'optional'),
        h('td', {}, c.doc || ''))))));
}

function layoutSection(t) {
  return h('section', { id: 'layout-spec' }, h('h2', {}, 'Partitioning and sort order'),
    h('dl', { class: 'meta' },
      h('dt', {}, 'partitioned by'), h('dd', { id: 'partitioning' }, t.partition_spec.length ? t.partition_spec.map((p) => h('div', {}, h('code', {}, p))) : 'unpartitioned'),
      h('dt', {}, 'sorted by'), h('dd', { id: 'sort-order' }, t.sort_order.length ? t.sort_order.map((p) => h('div', {}, h('code', {}, p))) : 'unsorted'),
      h('dt', {}, 'held back'), h('dd', {}, t.held_back.length ? t.held_back.map((x) => h('div', {}, x.change + ': ' + x.details + ' (snapshot ', h('code', {}, x.snapshot_id), ')')) : 'none')));
}

function propertiesSection(t) {
  const entries = Object.entries(t.properties);
  return h('section', { id: 'properties' }, h('h2', {}, 'Properties'),
    h('table', { class: 'props' }, h('tbody', {}, entries.map(([k, v]) => h('tr', {}, h('td', {}, h('code', {}, k)),
      h('td', {}, v.length > 160 ? h('details', {}, h('summary', {}, v.slice(0, 80) + '… (' + v.length + ' chars)'), h('code', {}, v)) : h('code', {}, v)))))));
}

// Rows and data files along main, oldest first.
function chart(title, points, color, id) {
  const W = 420, H = 150, L = 58, R = 12, T = 12, B = 26;
  const svg = s('svg', { class: 'chart', id, width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title });
  if (!points.length) return h('figure', {}, svg, h('figcaption', {}, title + ': no snapshots'));
  const xs = points.map((p) => p.x), ys = points.map((p) => p.y);
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y1 = Math.max(...ys, 1);
  const X = (x, i) => L + (x1 > x0 ? (x - x0) / (x1 - x0) : points.length > 1 ? i / (points.length - 1) : 0.5) * (W - L - R);
  const Y = (y) => H - B - (y / y1) * (H - T - B);
  svg.append(s('line', { class: 'axis', x1: L, y1: H - B, x2: W - R, y2: H - B }), s('line', { class: 'axis', x1: L, y1: T, x2: L, y2: H - B }));
  svg.append(s('text', { x: L - 6, y: T + 4, 'text-anchor': 'end' }, fmt(y1)), s('text', { x: L - 6, y: H - B + 3, 'text-anchor': 'end' }, '0'));
  const t = (ms) => new Date(ms).toISOString().replace('T', ' ').slice(0, 19);
  svg.append(s('text', { x: L, y: H - 8 }, t(x0)), s('text', { x: W - R, y: H - 8, 'text-anchor': 'end' }, t(x1)));
  svg.append(s('polyline', { stroke: color, points: points.map((p, i) => X(p.x, i) + ',' + Y(p.y)).join(' ') }));
  points.forEach((p, i) => svg.append(s('circle', { cx: X(p.x, i), cy: Y(p.y), r: 3.5, fill: color, 'data-snapshot': p.id },
    s('title', {}, `${fmt(p.y)} at ${t(p.x)} (snapshot ${p.id})`))));
  return h('figure', {}, svg, h('figcaption', {}, title));
}

function historySection(t, snaps, ns, name) {
  const main = snaps.filter((x) => x.in_main).slice().reverse();
  const rows = main.filter((x) => x.total_records !== null).map((x) => ({ x: x.timestamp_ms, y: x.total_records, id: x.snapshot_id }));
  const files = main.filter((x) => x.total_data_files !== null).map((x) => ({ x: x.timestamp_ms, y: x.total_data_files, id: x.snapshot_id }));
  const items = snaps.map((x) => {
    const a = x.annotation;
    const cls = [x.current ? 'current' : '', x.in_main ? '' : 'off-main', x.held_back ? 'held' : ''].join(' ').trim();
    const rowsDelta = [x.added_records ? '+' + fmt(x.added_records) : null, x.deleted_records ? '−' + fmt(x.deleted_records) : null].filter(Boolean).join(' ');
    const filesDelta = [x.added_data_files ? '+' + fmt(x.added_data_files) : null, x.deleted_data_files ? '−' + fmt(x.deleted_data_files) : null].filter(Boolean).join(' ');
    return h('li', { class: cls, 'data-snapshot': x.snapshot_id },
      h('div', { class: 'head' }, x.time.replace('T', ' ').replace('Z', ' UTC'), ' · ', x.operation, ' ', h('code', {}, x.snapshot_id),
        x.current ? h('span', { class: 'badge current' }, 'current') : null,
        x.in_main ? null : h('span', { class: 'badge off' }, 'rolled back'),
        x.held_back ? h('span', { class: 'badge held' }, 'held back') : null),
      h('div', { class: 'stats' }, 'rows ', rowsDelta || '±0', ' → ', fmt(x.total_records), ' · data files ', filesDelta || '±0', ' → ', fmt(x.total_data_files)),
      a ? h('div', { class: 'annotation' },
        h('span', { class: 'change' }, a.change), a.details ? ': ' + a.details : '',
        h('div', { class: 'muted' },
          a.manifest ? ['manifest ', h('code', {}, a.manifest)] : 'no manifest',
          a.git_commit ? [' · git ', h('code', { title: a.git_commit }, a.git_commit.slice(0, 12))] : '',
          a.change_id ? [' · change ', h('code', {}, a.change_id)] : ''))
        : h('div', { class: 'annotation muted' }, 'not written by lakectl (no annotation)'),
      x.in_main && !x.current
        ? h('button', { type: 'button', class: 'rollback', onclick: () => rollback(ns, name, x) }, 'Roll back to here…')
        : null);
  });
  return h('section', { id: 'history' }, h('h2', {}, 'History'),
    h('div', { class: 'charts' }, chart('rows', rows, '#2456c9', 'chart-rows'), chart('data files', files, '#1a7f37', 'chart-files')),
    h('ol', { class: 'timeline', id: 'timeline' }, items));
}

// ---- rollback: the dry run's diff, then a confirmation ------------------------------

function rollbackBody(id, dryRun) {
  // The id goes into the JSON as its exact digits (it may be past 2^53); a rounded
  // number would name another snapshot.
  if (typeof id === 'number' && !Number.isSafeInteger(id)) {
    throw new Error('this browser rounds snapshot ids past 2^53 (no JSON.parse source text); use `lakectl rollback` or the API');
  }
  if (!/^-?\d+$/.test(String(id))) throw new Error('bad snapshot id ' + id);
  return '{"to":' + id + ',"dry_run":' + (dryRun ? 'true' : 'false') + '}';
}

function rollbackDiff(r) {
  const lines = [];
  lines.push(h('p', {}, 'main moves from snapshot ', h('code', {}, r.from_snapshot ?? 'none'), ' to ', h('code', {}, r.to_snapshot), ' (', r.to_time, ').'));
  lines.push(h('p', { id: 'rollback-rows' }, 'rows: ', fmt(r.rows_before), ' → ', fmt(r.rows_after)));
  if (r.schema_id) {
    const before = new Set(r.schema_before), after = new Set(r.schema_after);
    lines.push(h('div', { class: 'diff', id: 'rollback-schema' }, h('div', {}, `schema ${r.schema_id[0]} → ${r.schema_id[1]}`),
      r.schema_before.filter((l) => !after.has(l)).map((l) => h('div', { class: 'del mono' }, '- ' + l)),
      r.schema_after.filter((l) => !before.has(l)).map((l) => h('div', { class: 'add mono' }, '+ ' + l))));
  }
  if (r.spec_id) lines.push(h('p', {}, `partition spec ${r.spec_id[0]} → ${r.spec_id[1]}`));
  if (r.sort_order_id) lines.push(h('p', {}, `sort order ${r.sort_order_id[0]} → ${r.sort_order_id[1]}`));
  lines.push(h('div', { id: 'rollback-held' }, r.held_back.length
    ? [h('p', {}, 'These changes are taken out and held back from plan and apply:'),
      h('ul', {}, r.held_back.map((x) => h('li', {}, x.change + ': ' + x.details + ' (snapshot ', h('code', {}, x.snapshot_id), ')')))]
    : h('p', {}, 'No change of lakectl\'s is taken out.')));
  if (r.released && r.released.length) lines.push(h('p', {}, 'Back in main: ' + r.released.join(', ')));
  return lines;
}

// Each opened rollback dialog is numbered: an older dry run's answer is dropped.
let rollbackSeq = 0;

async function rollback(ns, name, snap) {
  const mine = ++rollbackSeq;
  const d = $('#rollback-dialog');
  const body = $('#rollback-body');
  const confirm = $('#rollback-confirm');
  const path = '/api/v1/tables/' + seg(ns) + '/' + seg(name) + '/rollback';
  $('#rollback-title').textContent = `Roll back ${ns}.${name} to snapshot ${snap.snapshot_id}?`;
  body.replaceChildren(h('p', { class: 'muted' }, 'dry run…'));
  confirm.disabled = true;
  confirm.onclick = null;
  confirm.textContent = 'Roll back';
  const cancel = $('#rollback-cancel');
  cancel.textContent = 'Cancel';
  cancel.onclick = () => d.close();
  let done = false;
  d.onclose = () => { if (done) route(); };
  d.showModal();
  const current = () => mine === rollbackSeq && d.open;
  let plan;
  try {
    plan = await api(path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: rollbackBody(snap.snapshot_id, true) });
  } catch (e) {
    if (current()) body.replaceChildren(h('p', { class: 'error' }, e.message));
    return;
  }
  if (!current()) return;
  body.replaceChildren(h('div', { id: 'rollback-diff' }, h('p', { class: 'muted' }, 'Dry run: nothing has changed yet.'), rollbackDiff(plan)));
  confirm.disabled = false;
  confirm.onclick = async () => {
    confirm.disabled = true;
    cancel.disabled = true;
    try {
      const r = await api(path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: rollbackBody(snap.snapshot_id, false) });
      done = true;
      loadTables();
      if (!d.open) { route(); return; }
      body.replaceChildren(h('p', { id: 'rollback-done' }, 'Rolled back: main is at snapshot ', h('code', {}, r.to_snapshot), '.'), rollbackDiff(r));
      confirm.onclick = null;
      cancel.textContent = 'Close';
    } catch (e) {
      body.append(h('p', { class: 'error' }, e.message));
      confirm.disabled = false;
    } finally {
      cancel.disabled = false;
    }
  };
}

// ---- query -------------------------------------------------------------------------

function showQuery(mine) {
  const params = new URLSearchParams(location.hash.split('?')[1] || '');
  const sql = h('textarea', { id: 'sql', spellcheck: 'false', 'aria-label': 'SQL' });
  sql.value = params.get('sql') || sessionStorage.getItem('lakectl.sql') || 'select * from sales.orders limit 100';
  const asOf = h('input', { id: 'as-of', placeholder: 'snapshot id or RFC 3339 time (optional)', size: 34 });
  const status = h('span', { id: 'query-status', class: 'muted' });
  const out = h('div', { class: 'results', id: 'results' });
  const run = async () => {
    sessionStorage.setItem('lakectl.sql', sql.value);
    status.textContent = 'running…';
    out.replaceChildren();
    const started = performance.now();
    const q = { sql: sql.value };
    if (asOf.value.trim()) q.as_of = asOf.value.trim();
    try {
      const r = await api('/api/v1/query', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(q) });
      const ms = Math.round(performance.now() - started);
      status.textContent = `${r.rows.length} row(s)${r.truncated ? ' (truncated at the server\'s limit)' : ''} in ${ms} ms`;
      out.replaceChildren(resultsTable(r));
    } catch (e) {
      status.textContent = '';
      out.replaceChildren(h('p', { class: 'error', id: 'query-error' }, e.message));
    }
  };
  sql.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) run(); });
  show(mine, h('h1', {}, 'Query'),
    h('section', {}, sql,
      h('div', { class: 'toolbar' }, h('button', { id: 'run-query', type: 'button', class: 'primary', onclick: run }, 'Run'),
        h('label', {}, 'as of ', asOf), status,
        h('span', { class: 'muted' }, 'read-only SQL over namespace.table · Ctrl+Enter runs'))),
    h('section', {}, out));
}

function cell(v) {
  if (v === null || v === undefined) return h('td', { class: 'null' }, 'null');
  if (typeof v === 'number') return h('td', { class: 'num' }, String(v));
  if (typeof v === 'object') return h('td', { class: 'mono' }, JSON.stringify(v));
  return h('td', {}, String(v));
}

function resultsTable(r) {
  return h('table', { id: 'results-table' },
    h('thead', {}, h('tr', {}, r.columns.map((c) => h('th', {}, c)))),
    h('tbody', {}, r.rows.map((row) => h('tr', {}, r.columns.map((c) => cell(row[c]))))));
}

// ---- routing -----------------------------------------------------------------------

async function route() {
  markActive();
  const mine = ++view;
  const hash = location.hash || '#/';
  const m = tableOfHash();
  try {
    if (m) await showTable(mine, m[0], m[1]);
    else if (hash.startsWith('#/query')) showQuery(mine);
    else await showOverview(mine);
  } catch (e) {
    show(mine, errorBox(e));
  }
}

$('#token-dialog').addEventListener('cancel', (ev) => ev.preventDefault());
$('#forget-token').hidden = !token;
$('#forget-token').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  token = '';
  location.reload();
});
if (!EXACT_IDS) {
  $('#lakehouse').textContent = 'this browser rounds 63-bit snapshot ids: rollback is off here';
}
window.addEventListener('hashchange', route);
loadTables();
route();
