// The Flotilla dashboard: one ES module, no framework, no build step.
// Every value from the API reaches the DOM through textContent or an attribute
// (never parsed as markup), so log messages and span attributes cannot inject markup.

const POLL_MS = 2000;
const LIVE_THROTTLE_MS = 1000;

// ---- DOM helpers -----------------------------------------------------------

/** h('td', {class: 'num'}, 'text', child): an element; strings become text nodes. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'onclick' || k === 'onsubmit' || k === 'onchange') el.addEventListener(k.slice(2), v);
    else if (k === 'style') Object.assign(el.style, v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

function table(headers, rows, attrs) {
  return h('div', { class: 'card' },
    h('table', attrs || {},
      h('thead', {}, h('tr', {}, headers.map((x) => typeof x === 'string'
        ? h('th', {}, x) : h('th', { class: x.cls }, x.label)))),
      h('tbody', {}, rows)));
}

function empty(text, testid) {
  return h('p', { class: 'empty', 'data-testid': testid || 'empty' }, text);
}

// ---- formatting ------------------------------------------------------------

function fmtMs(ms) {
  if (ms === null || ms === undefined) return '–';
  if (ms < 1) return `${(ms * 1000).toFixed(0)} µs`;
  if (ms < 1000) return `${ms < 10 ? ms.toFixed(2) : ms.toFixed(1)} ms`;
  return `${(ms / 1000).toFixed(2)} s`;
}

function fmtBytes(b) {
  if (b === null || b === undefined) return '–';
  return `${(b / 1048576).toFixed(1)} MiB`;
}

function fmtUptime(s) {
  if (s === null || s === undefined) return '–';
  if (s < 60) return `${Math.floor(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${Math.floor(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

function fmtRate(r) {
  return r === null || r === undefined ? '–' : `${r.toFixed(r < 10 ? 2 : 1)}/s`;
}

function fmtPct(r) {
  return r === null || r === undefined ? '–' : `${(r * 100).toFixed(r < 0.1 ? 2 : 1)} %`;
}

function fmtTime(text) {
  if (!text) return '–';
  const d = new Date(text);
  if (Number.isNaN(d.getTime())) return String(text);
  const p = (n, w = 2) => String(n).padStart(w, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

function fmtDateTime(text) {
  if (!text) return '–';
  const d = new Date(text);
  return Number.isNaN(d.getTime()) ? String(text) : `${d.toLocaleDateString()} ${fmtTime(text)}`;
}

function fmtValue(v) {
  return typeof v === 'string' ? v : JSON.stringify(v);
}

/** A status as a badge with an icon and a word, so it reads without colour. */
function status(kind, word, title) {
  const icon = { ok: '✓', err: '✕', warn: '!', info: '…', none: '?' }[kind];
  return h('span', { class: `badge s-${kind}`, 'data-status': word, title }, `${icon} ${word}`);
}

const KNOWN_COLOURS = {
  gateway: '#3b6fb6', orders: '#8e44ad', inventory: '#16a085', payments: '#d35400',
  notifications: '#c0392b', analytics: '#2c7a2c', auth: '#7f6a00', users: '#5d6d7e',
  registry: '#34495e', bus: '#a0522d', dashboard: '#0e7490',
};

function serviceColour(name) {
  if (KNOWN_COLOURS[name]) return KNOWN_COLOURS[name];
  let hash = 0;
  for (const ch of String(name)) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return `hsl(${hash % 360} 55% 42%)`;
}

function chip(service) {
  return h('span', { class: 'chip', style: { background: serviceColour(service) } }, service);
}

// ---- API -------------------------------------------------------------------

class ApiError extends Error {}

async function api(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) if (v !== '' && v !== null && v !== undefined) q.set(k, v);
  const url = q.toString() ? `${path}?${q}` : path;
  let res;
  try {
    res = await fetch(url, { headers: { accept: 'application/json' } });
  } catch (e) {
    throw new ApiError(`The dashboard API does not answer (${e.message}).`);
  }
  if (!res.ok) {
    let detail = `${res.status} ${res.statusText}`;
    try {
      const p = await res.json();
      detail = [p.title, p.detail].filter(Boolean).join(': ') || detail;
      if (Array.isArray(p.errors)) detail += ` (${p.errors.map((e) => `${e.field}: ${e.message}`).join('; ')})`;
    } catch { /* not a problem document */ }
    const err = new ApiError(detail);
    err.status = res.status;
    throw err;
  }
  return res.json();
}

function showBanner(text) {
  const b = document.getElementById('banner');
  b.textContent = text || '';
  b.hidden = !text;
}

// ---- routing ---------------------------------------------------------------

const routes = [
  { re: /^\/services\/?$/, page: 'services', view: servicesView, mode: 'poll' },
  { re: /^\/traces\/?$/, page: 'traces', view: tracesView, mode: 'live' },
  { re: /^\/traces\/([0-9a-f]{32})\/?$/, page: 'traces', view: traceView, mode: 'live' },
  { re: /^\/logs\/?$/, page: 'logs', view: logsView, mode: 'live' },
  { re: /^\/sagas\/?$/, page: 'sagas', view: sagasView, mode: 'poll' },
  { re: /^\/bus\/?$/, page: 'bus', view: busView, mode: 'poll' },
];

let current = null; // { route, refresh, mode }
let pollTimer = null;
let liveSource = null;
let liveTimer = null;
let generation = 0;

function navigate(url, replace) {
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  render();
}

/** Rewrites the query string of the current page without a new history entry. */
function setQuery(params, push) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== '' && v !== null && v !== undefined) q.set(k, v);
  const url = location.pathname + (q.toString() ? `?${q}` : '');
  if (url === location.pathname + location.search) return;
  if (push) history.pushState(null, '', url);
  else history.replaceState(null, '', url);
}

function render() {
  if (location.pathname === '/' || location.pathname === '') {
    history.replaceState(null, '', '/services');
  }
  const path = location.pathname;
  const main = document.getElementById('main');
  generation += 1;
  stopUpdates();
  showBanner('');
  main.replaceChildren();
  const route = routes.find((r) => r.re.test(path));
  for (const a of document.querySelectorAll('#nav a')) {
    a.classList.toggle('active', route !== undefined && a.dataset.page === route.page);
  }
  if (!route) {
    document.title = 'Not found · Flotilla';
    main.append(h('h1', {}, 'Not found'),
      empty(`No page at ${path}. Pick one above.`, 'not-found'));
    return;
  }
  const match = path.match(route.re);
  const query = new URLSearchParams(location.search);
  const gen = generation;
  const refresh = route.view(main, match.slice(1), query, () => gen === generation);
  current = { route, refresh, mode: route.mode };
  startUpdates();
}

function stopUpdates() {
  clearInterval(pollTimer);
  pollTimer = null;
  clearTimeout(liveTimer);
  liveTimer = null;
}

function setConn(state, text) {
  const c = document.getElementById('conn');
  c.dataset.state = state;
  c.textContent = text;
}

function startUpdates() {
  if (!current || document.hidden) {
    setConn('paused', '⏸ paused');
    return;
  }
  if (current.mode === 'poll') {
    pollTimer = setInterval(() => current.refresh(), POLL_MS);
    setConn('live', `● polling every ${POLL_MS / 1000} s`);
  } else {
    openLive();
  }
}

function openLive() {
  if (liveSource) return;
  setConn('connecting', '○ connecting');
  liveSource = new EventSource('/api/live');
  liveSource.onopen = () => setConn('live', '● live');
  liveSource.onerror = () => setConn('offline', '✕ live updates lost; retrying');
  liveSource.addEventListener('ingest', () => {
    if (!current || current.mode !== 'live' || liveTimer) return;
    liveTimer = setTimeout(() => { liveTimer = null; current.refresh(); }, LIVE_THROTTLE_MS);
  });
}

function closeLive() {
  if (liveSource) liveSource.close();
  liveSource = null;
}

document.addEventListener('visibilitychange', () => {
  stopUpdates();
  if (document.hidden) {
    closeLive();
    setConn('paused', '⏸ paused');
  } else {
    if (current) current.refresh();
    startUpdates();
  }
});

document.addEventListener('click', (e) => {
  const a = e.target.closest('a');
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || url.pathname.startsWith('/api/') || url.pathname.startsWith('/assets/')) return;
  e.preventDefault();
  navigate(url.pathname + url.search);
});

window.addEventListener('popstate', render);

/**
 * A view's body that refreshes itself: `load()` fetches, `draw(data)` returns nodes.
 * Errors show in the view (and the banner) instead of leaving stale data unexplained.
 */
function refresher(container, alive, load, draw) {
  let busy = false;
  let drawn = false;
  const run = async () => {
    if (busy) return;
    busy = true;
    try {
      const data = await load();
      if (!alive()) return;
      showBanner('');
      container.replaceChildren(...[draw(data)].flat());
      drawn = true;
    } catch (e) {
      if (!alive()) return;
      if (e instanceof ApiError && e.status === undefined) {
        showBanner(`${e.message} Showing the last data received; retrying.`);
        if (!drawn) container.replaceChildren(h('p', { class: 'error-state', 'data-testid': 'api-down' }, e.message));
      } else {
        container.replaceChildren(h('p', { class: 'error-state', 'data-testid': 'api-error' }, String(e.message || e)));
      }
    } finally {
      busy = false;
    }
  };
  container.replaceChildren(h('p', { class: 'empty', 'data-testid': 'loading' }, 'Loading…'));
  run();
  return run;
}

/** A filter form bound to the query string; `onChange` runs after each change. */
function filterForm(fields, query, onChange) {
  const inputs = {};
  const form = h('form', { class: 'filters', 'data-testid': 'filters', role: 'search' });
  for (const f of fields) {
    let input;
    if (f.options) {
      input = h('select', { name: f.name, id: `f-${f.name}` },
        f.options.map(([value, label]) => h('option', { value }, label)));
    } else {
      input = h('input', { name: f.name, id: `f-${f.name}`, type: f.type || 'text', placeholder: f.placeholder || '', min: f.min, step: f.step });
    }
    input.value = query.get(f.name) || '';
    inputs[f.name] = input;
    form.append(h('label', { for: `f-${f.name}` }, f.label, input));
  }
  const values = () => Object.fromEntries(Object.entries(inputs).map(([k, el]) => [k, el.value.trim()]));
  const submit = (e) => { if (e) e.preventDefault(); setQuery(values(), true); onChange(values()); };
  form.addEventListener('submit', submit);
  form.addEventListener('change', (e) => { if (e.target.tagName === 'SELECT') submit(); });
  form.append(h('button', { type: 'submit' }, 'Apply'),
    h('button', { type: 'button', onclick: () => { for (const el of Object.values(inputs)) el.value = ''; submit(); } }, 'Clear'));
  return { form, values };
}

// ---- Services --------------------------------------------------------------

function healthBadge(i) {
  if (i.status === 'up' && i.healthy) return status('ok', 'healthy');
  if (i.status === 'down' || i.healthy === false) return status('err', i.status === 'down' ? 'down' : 'unhealthy');
  return status('none', 'unknown');
}

function breakerBadge(b) {
  const kind = { closed: 'ok', open: 'err', half_open: 'warn' }[b.state] || 'none';
  return h('span', { class: `badge s-${kind}`, 'data-testid': 'breaker', title: `circuit breaker to ${b.target}` },
    `${b.target}: ${b.state.replace('_', '-')}`);
}

function servicesView(main, _params, _query, alive) {
  document.title = 'Services · Flotilla';
  const summary = h('span', { class: 'sub', 'data-testid': 'services-summary' });
  const body = h('div', {});
  main.append(h('h1', {}, 'Services', summary), body);
  return refresher(body, alive, () => api('/api/services'), (data) => {
    const services = data.services || [];
    const instances = services.flatMap((s) => s.instances || []);
    const healthy = instances.filter((i) => i.healthy && i.status === 'up').length;
    summary.textContent = `${services.length} services · ${instances.length} instances · ${healthy} healthy · scraped ${fmtTime(data.scraped_at)}`;
    if (services.length === 0) return empty('No service is registered. Is `flotilla up` running?', 'no-services');
    const rows = [];
    for (const s of services) {
      const list = s.instances || [];
      if (list.length === 0) {
        rows.push(h('tr', { class: 'group', 'data-testid': 'service-row', 'data-service': s.name, 'data-healthy': 'false' },
          h('td', {}, chip(s.name)), h('td', { colspan: 11 }, status('err', 'no instances'))));
      }
      list.forEach((i, n) => {
        const up = i.healthy && i.status === 'up';
        rows.push(h('tr', {
          class: n === 0 ? 'group' : null, 'data-testid': 'service-row', 'data-service': s.name,
          'data-instance': i.id, 'data-healthy': String(up),
        },
        h('td', {}, n === 0 ? chip(s.name) : ''),
        h('td', { class: 'mono' }, i.id),
        h('td', { class: 'mono' }, i.address),
        h('td', { 'data-testid': 'health' }, healthBadge(i)),
        h('td', {}, i.version || '–'),
        h('td', { class: 'num' }, fmtUptime(i.uptime_s)),
        h('td', { class: 'num' }, fmtBytes(i.rss_bytes)),
        h('td', { class: 'num' }, fmtRate(i.request_rate)),
        h('td', { class: `num ${i.error_rate > 0 ? 'lvl-ERROR' : ''}` }, fmtPct(i.error_rate)),
        h('td', { class: 'num' }, fmtMs(i.p50_ms)),
        h('td', { class: 'num' }, fmtMs(i.p99_ms)),
        h('td', { class: 'wrap' }, (i.breakers || []).length ? i.breakers.map(breakerBadge) : h('span', { class: 'muted' }, '–'))));
      });
    }
    return table(['Service', 'Instance', 'Address', 'Health', 'Version',
      { label: 'Uptime', cls: 'num' }, { label: 'RSS', cls: 'num' }, { label: 'Requests', cls: 'num' },
      { label: 'Errors', cls: 'num' }, { label: 'p50', cls: 'num' }, { label: 'p99', cls: 'num' }, 'Breakers'],
    rows, { 'data-testid': 'services-table' });
  });
}

// ---- Traces ----------------------------------------------------------------

function traceStatus(s) {
  return s === 'error' ? status('err', 'error') : s === 'ok' ? status('ok', 'ok') : status('none', s || 'unset');
}

function tracesView(main, _params, query, alive) {
  document.title = 'Traces · Flotilla';
  const body = h('div', {});
  let filters = Object.fromEntries(query);
  const { form } = filterForm([
    { name: 'service', label: 'Service', placeholder: 'any' },
    { name: 'status', label: 'Status', options: [['', 'any'], ['ok', 'ok'], ['error', 'error']] },
    { name: 'min_duration_ms', label: 'Min duration (ms)', type: 'number', min: 0, step: 'any' },
    { name: 'route', label: 'Route', placeholder: '/api/orders' },
  ], query, (v) => { filters = v; run(); });
  main.append(h('h1', {}, 'Traces', h('span', { class: 'sub' }, 'newest first')), form, body);
  const run = refresher(body, alive, () => api('/api/traces', { ...filters, limit: 100 }), (data) => {
    const traces = data.traces || [];
    if (traces.length === 0) {
      return empty(Object.values(filters).some(Boolean)
        ? 'No trace matches these filters.' : 'No traces yet. Send a request through the gateway.', 'no-traces');
    }
    const longest = Math.max(...traces.map((t) => t.duration_ms), 0.001);
    return table(['Start', 'Root', 'Route', { label: 'Duration', cls: 'num' }, { label: 'Spans', cls: 'num' }, 'Services', 'Status', 'Trace'],
      traces.map((t) => h('tr', {
        class: 'click', 'data-testid': 'trace-row', 'data-trace-id': t.trace_id, 'data-status': t.status,
        onclick: (e) => { if (!e.target.closest('a')) navigate(`/traces/${t.trace_id}`); },
      },
      h('td', { class: 'mono' }, fmtTime(t.start)),
      h('td', {}, chip(t.root_service), t.root_name),
      h('td', { class: 'mono' }, t.route || '–'),
      h('td', { class: 'num' }, h('span', { class: 'minibar', style: { width: `${Math.max(2, (t.duration_ms / longest) * 80)}px` } }), fmtMs(t.duration_ms)),
      h('td', { class: 'num' }, t.span_count),
      h('td', {}, (t.services || []).map(chip)),
      h('td', {}, traceStatus(t.status)),
      h('td', { class: 'mono' }, h('a', { href: `/traces/${t.trace_id}` }, t.trace_id.slice(0, 12) + '…')))),
      { 'data-testid': 'traces-table' });
  });
  return run;
}

/**
 * The spans in waterfall order: depth-first by parent, children by start. A span whose
 * parent is not in the trace (not exported yet, or lost) is a root marked `orphan`.
 * `async` marks a consumer span that starts after its parent ended (a bus hop).
 */
export function buildTree(spans) {
  const byId = new Map(spans.map((s) => [s.span_id, s]));
  const children = new Map();
  const roots = [];
  for (const s of spans) {
    const parent = s.parent_span_id && byId.get(s.parent_span_id);
    if (parent && parent !== s) {
      if (!children.has(parent.span_id)) children.set(parent.span_id, []);
      children.get(parent.span_id).push(s);
    } else {
      roots.push({ span: s, orphan: Boolean(s.parent_span_id) });
    }
  }
  const byStart = (a, b) => a.offset_ms - b.offset_ms;
  const out = [];
  const seen = new Set();
  const visit = (span, depth, orphan, parent) => {
    if (seen.has(span.span_id)) return;
    seen.add(span.span_id);
    const async = parent !== null && span.offset_ms >= parent.offset_ms + parent.duration_ms
      && (span.kind === 'consumer' || parent.kind === 'producer');
    out.push({ span, depth, orphan, async, parent });
    for (const c of (children.get(span.span_id) || []).sort(byStart)) visit(c, depth + 1, false, span);
  };
  for (const r of roots.sort((a, b) => byStart(a.span, b.span))) visit(r.span, 0, r.orphan, null);
  return out;
}

function axisTicks(total) {
  const target = total / 5;
  const pow = 10 ** Math.floor(Math.log10(Math.max(target, 1e-6)));
  const step = [1, 2, 5, 10].map((m) => m * pow).find((s) => s >= target) || pow * 10;
  const ticks = [];
  for (let t = 0; t <= total + 1e-9; t += step) ticks.push(t);
  return ticks;
}

function traceView(main, [traceId], query, alive) {
  document.title = `Trace ${traceId.slice(0, 8)} · Flotilla`;
  const header = h('div', {});
  const body = h('div', {});
  main.append(h('h1', {}, 'Trace', h('span', { class: 'mono sub', 'data-testid': 'trace-id' }, traceId)), header, body);
  let selected = query.get('span');
  let last = null;
  const draw = (trace) => {
    last = trace;
    const spans = trace.spans || [];
    const total = Math.max(trace.duration_ms, 0.001);
    const services = [...new Set(spans.map((s) => s.service))];
    const errors = spans.filter((s) => s.status === 'error').length;
    header.replaceChildren(h('div', { class: 'legend', 'data-testid': 'trace-summary' },
      h('span', {}, `started ${fmtDateTime(trace.start)}`),
      h('span', {}, `duration ${fmtMs(trace.duration_ms)}`),
      h('span', {}, `${spans.length} spans`),
      errors ? status('err', `${errors} error${errors > 1 ? 's' : ''}`) : status('ok', 'no errors'),
      h('span', {}, services.map(chip)),
      h('span', {}, '▨ async hop (starts after its parent ended)'),
      h('a', { href: `/logs?trace_id=${traceId}`, 'data-testid': 'trace-logs' }, 'logs of this trace')));
    if (spans.length === 0) return empty('This trace has no spans yet.', 'no-spans');
    const rows = buildTree(spans);
    const pct = (ms) => `${Math.min(100, Math.max(0, (ms / total) * 100))}%`;
    const head = h('div', { class: 'wf-row wf-head' }, h('div', { class: 'wf-label' }, 'service · span'),
      h('div', { class: 'wf-track' }, axisTicks(total).map((t) => h('div', { class: 'wf-tick', style: { left: pct(t) } }, h('span', {}, fmtMs(t))))));
    const wf = h('div', { class: 'wf', 'data-testid': 'waterfall' }, head, rows.map(({ span: s, depth, orphan, async, parent }) => {
      const err = s.status === 'error';
      const track = h('div', { class: 'wf-track' });
      if (async) {
        const end = parent.offset_ms + parent.duration_ms;
        track.append(h('div', { class: 'wf-gap', style: { left: pct(end), width: pct(s.offset_ms - end) } }));
      }
      const left = (s.offset_ms / total) * 100;
      track.append(
        h('div', { class: `wf-bar${err ? ' err' : ''}${async ? ' async' : ''}`, style: { left: pct(s.offset_ms), width: pct(s.duration_ms), background: serviceColour(s.service) } }),
        h('div', { class: 'wf-dur', style: left > 70 ? { right: `${100 - left}%` } : { left: `calc(${pct(s.offset_ms + s.duration_ms)} + 2px)` } }, fmtMs(s.duration_ms)));
      const icon = err ? '✕' : async ? '⤳' : orphan ? '⚠' : '';
      return h('div', {
        class: `wf-row${err ? ' err' : ''}${s.span_id === selected ? ' sel' : ''}`,
        'data-testid': 'span-row', 'data-span-id': s.span_id, 'data-service': s.service,
        'data-status': s.status, 'data-kind': s.kind, 'data-async': String(async), 'data-depth': depth,
        title: `${s.service} · ${s.name} · ${fmtMs(s.duration_ms)} · ${s.status}${async ? ' · async hop' : ''}${orphan ? ' · parent not in trace' : ''}`,
        onclick: () => { selected = s.span_id; setQuery({ span: s.span_id }); body.replaceChildren(draw(last)); },
      },
      h('div', { class: 'wf-label', style: { paddingLeft: `${8 + depth * 14}px` } },
        h('span', { class: 'icon', 'aria-label': err ? 'error' : async ? 'async' : orphan ? 'orphan' : '' }, icon),
        chip(s.service), s.name, orphan ? h('span', { class: 'muted' }, ' (parent missing)') : ''),
      track);
    }));
    const sel = spans.find((s) => s.span_id === selected);
    const layout = h('div', { class: `trace-layout${sel ? ' with-panel' : ''}` }, wf, sel ? spanPanel(traceId, sel, rows) : null);
    return layout;
  };
  return refresher(body, alive, () => api(`/api/traces/${traceId}`), draw);

  function spanPanel(tid, s, rows) {
    const row = rows.find((r) => r.span === s);
    const attrs = Object.entries(s.attributes || {}).sort(([a], [b]) => a.localeCompare(b));
    return h('aside', { class: 'panel', 'data-testid': 'span-panel', 'data-span-id': s.span_id },
      h('button', { class: 'close', type: 'button', title: 'close', onclick: () => { selected = null; setQuery({}); body.replaceChildren(draw(last)); } }, '×'),
      h('h3', {}, s.name),
      h('table', {}, h('tbody', {},
        [['service', chip(s.service)], ['instance', s.instance || '–'], ['kind', s.kind],
          ['status', traceStatus(s.status)], ['status message', s.status_message || '–'],
          ['start', `+${fmtMs(s.offset_ms)}`], ['duration', fmtMs(s.duration_ms)],
          ['span id', h('code', {}, s.span_id)], ['parent', s.parent_span_id ? h('code', {}, s.parent_span_id) : '– (root)'],
          ['hop', row && row.async ? 'async (started after its parent ended)' : row && row.parent ? 'sync' : '–']]
          .map(([k, v]) => h('tr', {}, h('th', {}, k), h('td', {}, v))))),
      h('p', {}, h('a', { href: `/logs?trace_id=${tid}&span_id=${s.span_id}`, 'data-testid': 'span-logs' },
        `logs of this span (${s.log_count ?? 0}) →`)),
      h('h2', {}, 'Attributes'),
      attrs.length ? h('table', { 'data-testid': 'span-attributes' }, h('tbody', {},
        attrs.map(([k, v]) => h('tr', {}, h('th', { class: 'mono' }, k), h('td', { class: 'mono' }, fmtValue(v))))))
        : h('p', { class: 'muted' }, 'none'),
      h('h2', {}, 'Events'),
      (s.events || []).length ? h('table', {}, h('tbody', {}, s.events.map((ev) => h('tr', {},
        h('td', { class: 'mono' }, `+${fmtMs(ev.offset_ms)}`),
        h('td', {}, h('strong', {}, ev.name),
          Object.entries(ev.attributes || {}).map(([k, v]) => h('div', { class: 'mono' }, `${k} = ${fmtValue(v)}`)))))))
        : h('p', { class: 'muted' }, 'none'));
  }
}

// ---- Logs ------------------------------------------------------------------

function levelBadge(level) {
  const kind = { ERROR: 'err', WARN: 'warn', INFO: 'info', DEBUG: 'none', TRACE: 'none' }[level] || 'none';
  return h('span', { class: `badge s-${kind}` }, level);
}

function logsView(main, _params, query, alive) {
  document.title = 'Logs · Flotilla';
  const body = h('div', {});
  let filters = Object.fromEntries(query);
  const { form } = filterForm([
    { name: 'service', label: 'Service', placeholder: 'any' },
    { name: 'level', label: 'Minimum level', options: [['', 'any'], ['trace', 'TRACE'], ['debug', 'DEBUG'], ['info', 'INFO'], ['warn', 'WARN'], ['error', 'ERROR']] },
    { name: 'q', label: 'Text', placeholder: 'contains…' },
    { name: 'trace_id', label: 'Trace id', placeholder: '32 hex' },
    { name: 'span_id', label: 'Span id', placeholder: '16 hex' },
  ], query, (v) => { filters = v; run(); });
  main.append(h('h1', {}, 'Logs', h('span', { class: 'sub' }, 'newest first')), form, body);
  const run = refresher(body, alive, () => api('/api/logs', { ...filters, limit: 200 }), (data) => {
    const logs = data.logs || [];
    if (logs.length === 0) {
      return empty(Object.values(filters).some(Boolean) ? 'No log record matches these filters.' : 'No logs yet.', 'no-logs');
    }
    return table(['Time', 'Level', 'Service', 'Message', 'Trace'], logs.map((l) => h('tr', {
      'data-testid': 'log-row', 'data-level': l.level, 'data-service': l.service,
    },
    h('td', { class: 'mono', title: l.time }, fmtTime(l.time)),
    h('td', {}, levelBadge(l.level)),
    h('td', {}, chip(l.service), l.instance ? h('span', { class: 'muted mono' }, ` ${l.instance}`) : ''),
    h('td', { class: `wrap mono lvl-${l.level}` }, l.message,
      Object.keys(l.attributes || {}).length
        ? h('span', { class: 'muted' }, ' ', Object.entries(l.attributes).map(([k, v]) => `${k}=${fmtValue(v)}`).join(' ')) : ''),
    h('td', { class: 'mono' }, l.trace_id
      ? h('a', { href: `/traces/${l.trace_id}${l.span_id ? `?span=${l.span_id}` : ''}` }, `${l.trace_id.slice(0, 8)}…`) : '–'))),
    { 'data-testid': 'logs-table' });
  });
  return run;
}

// ---- Sagas -----------------------------------------------------------------

function stepClass(step) {
  const s = String(step.status).toLowerCase();
  if (s.includes('compensat') || step.compensation_attempts > 0) return 'comp';
  if (s.includes('fail') || s.includes('error')) return 'failed';
  if (s === 'done' || s.includes('complete') || s.includes('succe')) return 'done';
  if (s.includes('run') || s.includes('progress') || step.attempts > 0) return 'running';
  return '';
}

function sagaStatus(saga) {
  const s = String(saga.status).toUpperCase();
  if (saga.stuck) return status('err', `${saga.status} (stuck)`);
  if (s.includes('CONFIRM') || s.includes('COMPLETE') || s === 'DONE') return status('ok', saga.status);
  if (s.includes('CANCEL') || s.includes('FAIL') || s.includes('COMPENSAT')) return status('warn', saga.status);
  return status('info', saga.status);
}

function sagasView(main, _params, _query, alive) {
  document.title = 'Sagas · Flotilla';
  const body = h('div', {});
  main.append(h('h1', {}, 'Sagas', h('span', { class: 'sub' }, 'in flight first, then most recent · dashed ↺ = compensation')), body);
  return refresher(body, alive, () => api('/api/sagas', { limit: 50 }), (data) => {
    const sagas = data.sagas || [];
    if (sagas.length === 0) return empty('No sagas yet. Place an order through the gateway.', 'no-sagas');
    return table(['Order', 'Kind', 'Status', 'Steps', 'Created', 'Updated'], sagas.map((g) => h('tr', {
      'data-testid': 'saga-row', 'data-saga-id': g.id, 'data-status': g.status,
    },
    h('td', { class: 'mono' }, g.id),
    h('td', {}, g.kind),
    h('td', {}, sagaStatus(g), g.reason ? h('div', { class: 'muted' }, g.reason) : ''),
    h('td', {}, h('div', { class: 'steps' }, (g.steps || []).map((st, n) => {
      const cls = stepClass(st);
      const extra = [];
      if (st.attempts > 1) extra.push(`×${st.attempts}`);
      if (st.compensation_attempts > 0) extra.push(`↺${st.compensation_attempts}`);
      return [n ? h('span', { class: 'arrow' }, '→') : null,
        h('span', {
          class: `step ${cls}`, 'data-testid': 'saga-step', 'data-step': st.name,
          title: [`${st.name}: ${st.status}`, st.at ? `at ${st.at}` : '', st.error ? `error: ${st.error}` : ''].filter(Boolean).join('\n'),
        }, `${cls === 'comp' ? '↺ ' : cls === 'done' ? '✓ ' : cls === 'failed' ? '✕ ' : ''}${st.name} · ${st.status}${extra.length ? ` (${extra.join(' ')})` : ''}`)];
    }))),
    h('td', { class: 'mono' }, fmtDateTime(g.created)),
    h('td', { class: 'mono' }, fmtTime(g.updated)))),
    { 'data-testid': 'sagas-table' });
  });
}

// ---- Bus -------------------------------------------------------------------

function busView(main, _params, _query, alive) {
  document.title = 'Bus · Flotilla';
  const kind = h('span', { class: 'sub', 'data-testid': 'bus-kind' });
  const body = h('div', {});
  main.append(h('h1', {}, 'Bus', kind), body);
  return refresher(body, alive, () => api('/api/bus'), (data) => {
    kind.textContent = data.url_kind === 'nats' ? 'NATS JetStream' : 'embedded bus';
    const groups = data.groups || [];
    const dead = data.dead_letters || [];
    return [
      h('h2', {}, `Consumer groups (${groups.length})`),
      groups.length === 0 ? empty('No consumer group is subscribed.', 'no-groups')
        : table(['Group', 'Subjects', { label: 'Lag', cls: 'num' }, { label: 'Pending', cls: 'num' }],
          groups.map((g) => h('tr', { 'data-testid': 'group-row', 'data-group': g.name },
            h('td', {}, g.name),
            h('td', { class: 'wrap mono' }, (g.subjects || []).join(', ')),
            h('td', { class: 'num' }, g.lag > 0 ? status(g.lag > 1000 ? 'err' : 'warn', String(g.lag)) : status('ok', '0')),
            h('td', { class: 'num' }, g.pending))), { 'data-testid': 'groups-table' }),
      h('h2', {}, `Dead letters (${dead.length})`),
      dead.length === 0 ? empty('No dead letters.', 'no-dead-letters')
        : table([{ label: 'Seq', cls: 'num' }, 'Subject', 'Type', 'Event id', 'Time'],
          dead.map((d) => h('tr', { 'data-testid': 'dead-letter-row' },
            h('td', { class: 'num' }, d.seq), h('td', { class: 'mono' }, d.subject), h('td', {}, d.type),
            h('td', { class: 'mono' }, d.id), h('td', { class: 'mono' }, fmtDateTime(d.time)))), { 'data-testid': 'dead-letters-table' }),
    ];
  });
}

render();
