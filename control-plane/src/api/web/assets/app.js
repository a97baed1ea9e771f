// Tandem's web page: reads /ui/overview every 2 s and draws it. Every name on the page
// comes from users, so the DOM is built with createElement and textContent only — never
// innerHTML — and the server's Content-Security-Policy forbids inline code besides.
'use strict';

(function () {
  const REFRESH_MS = 2000;
  const TOKEN_KEY = 'tandem.adminToken';
  // How long a consequential button (promote, abort) waits for its confirming click.
  const ARM_MS = 4000;

  const state = {
    token: null, // the admin token, once the API accepted it
    armed: new Map(), // "ns/name/action" → until (ms)
    busy: false,
    last: null,
  };

  // ---- DOM helpers -------------------------------------------------------------------

  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k === 'title') e.title = v;
      else if (k.startsWith('data-')) e.setAttribute(k, String(v));
      else if (k === 'onclick') e.addEventListener('click', v);
      else e.setAttribute(k, String(v));
    }
    for (const c of children) {
      if (c === undefined || c === null || c === false) continue;
      e.append(typeof c === 'string' ? document.createTextNode(c) : c);
    }
    return e;
  }

  function td(text, cls) {
    return el('td', { class: cls, text: text });
  }

  function fill(sectionId, rows) {
    const section = document.getElementById(sectionId);
    const body = section.querySelector('tbody, .cards');
    body.replaceChildren(...rows);
    section.querySelector('.empty').hidden = rows.length > 0;
    const table = section.querySelector('table');
    if (table) table.hidden = rows.length === 0;
  }

  // ---- formats (as tandemctl prints them) ---------------------------------------------

  const DASH = '–';

  function pct(x) {
    return typeof x === 'number' ? (x * 100).toFixed(2) + '%' : DASH;
  }

  function rate(x) {
    return typeof x === 'number' ? x.toFixed(2) : DASH;
  }

  function ms(seconds) {
    return typeof seconds === 'number' ? (seconds * 1000).toFixed(1) + 'ms' : DASH;
  }

  function count(x) {
    return typeof x === 'number' ? String(Math.round(x)) : DASH;
  }

  function successClass(x) {
    if (typeof x !== 'number') return 'num';
    if (x >= 0.999) return 'num good';
    if (x >= 0.99) return 'num warn';
    return 'num bad';
  }

  // "12s ago", "3 min ago", relative to the server's clock (no skew with the browser's).
  function ago(iso, nowIso) {
    const t = Date.parse(iso);
    const now = Date.parse(nowIso);
    if (isNaN(t) || isNaN(now)) return DASH;
    const s = Math.max(0, Math.round((now - t) / 1000));
    if (s < 90) return s + 's ago';
    if (s < 90 * 60) return Math.round(s / 60) + ' min ago';
    if (s < 36 * 3600) return Math.round(s / 3600) + ' h ago';
    return iso.slice(0, 10);
  }

  function plural(n, one, many) {
    return n + ' ' + (n === 1 ? one : many);
  }

  function stamp(iso) {
    return iso ? iso.replace('T', ' ').replace('Z', ' UTC') : '';
  }

  // ---- sections ------------------------------------------------------------------------

  function renderSummary(o) {
    const p = o.proxies || {};
    const parts = [
      'revision ' + o.revision,
      plural(p.connected || 0, 'proxy', 'proxies') + ' connected, ' + (p.reporting || 0) + ' reporting',
      'rates over the last ' + Math.round(o.window_seconds || 0) + ' s',
      'updated ' + stamp(o.generated_at),
    ];
    document.getElementById('summary').textContent = parts.join(' · ');
  }

  function renderServices(o) {
    const rows = (o.services || []).map((s) => {
      const name = el('td', { class: 'name' }, s.namespace ? el('span', { class: 'ns', text: s.namespace + '/' }) : null, s.name);
      if (s.seen_as === 'backend') {
        name.append(' ', el('span', { class: 'tag', text: 'as backend', title: 'Only reached as a route\'s backend: the figures are its callers\' requests routed to it.' }));
      }
      return el('tr', { 'data-service': s.name },
        name,
        td(rate(s.requests_per_second), 'num'),
        td(pct(s.success_rate), successClass(s.success_rate)),
        td(ms(s.p50_seconds), 'num'),
        td(ms(s.p95_seconds), 'num'),
        td(ms(s.p99_seconds), 'num'),
        td(count(s.tcp_open_inbound), 'num'),
        td(String(s.sidecars || 0), 'num'));
    });
    fill('services', rows);
  }

  function renderEdges(o) {
    const rows = (o.edges || []).map((e) => {
      const idle = !(e.requests_per_second > 0);
      return el('tr', { class: idle ? 'idle' : null, 'data-from': e.from || '', 'data-to': e.to },
        el('td', { class: 'name', text: e.from || '(no service)' }),
        el('td', { class: 'arrow', text: '→' }),
        el('td', { class: 'name', text: e.to }),
        td(rate(e.requests_per_second), 'num'),
        td(pct(e.success_rate), successClass(e.success_rate)),
        td(ms(e.p99_seconds), 'num'));
    });
    fill('edges', rows);
  }

  function renderHistory(o) {
    const rows = (o.history || []).map((r) =>
      el('tr', { 'data-revision': r.revision },
        td(String(r.revision), 'num'),
        el('td', { class: 'when', text: ago(r.time, o.generated_at), title: stamp(r.time) }),
        td(r.who, 'who'),
        td(r.summary, 'summary')));
    fill('history', rows);
  }

  // "stepped to 10%: web-v2 healthy ...: updated HTTPRoute default/web-canary" → the
  // decision and its reason, without the canary's name or the list of routes changed.
  function decisionText(summary, id) {
    let text = summary.startsWith('canary ' + id + ' ') ? summary.slice(id.length + 8) : summary;
    const changes = text.search(/: (updated|created|deleted) [A-Za-z]+ [^ ]+(, |$)/);
    if (changes > 0) text = text.slice(0, changes);
    return text;
  }

  function renderCanary(c, now) {
    const id = c.namespace + '/' + c.name;
    const card = el('article', { class: 'card', 'data-canary': id });
    const st = c.state || {};
    const auto = st.auto;
    const title = el('h3', null, id);
    if (c.error) {
      card.append(title, el('p', { class: 'bad', text: c.error }));
      return card;
    }
    const phase = st.phase === 'running' ? (auto && auto.paused ? 'paused' : 'running') : 'rolled back';
    title.append(' ', el('span', { class: 'badge ' + phase.replace(' ', '-'), text: phase }));
    if (auto) title.append(' ', el('span', { class: 'badge guarded', text: 'guarded' }));
    card.append(title);

    // The live split.
    const weights = c.weights || {};
    const total = Object.values(weights).reduce((a, b) => a + b, 0) || 1;
    const split = el('div', { class: 'split' });
    for (const [role, name] of [['stable', st.stable], ['canary', st.canary]]) {
      const w = weights[name] || 0;
      const seg = el('div', { class: 'seg ' + role, 'data-backend': name, 'data-weight': w },
        el('span', { text: name + ' ' + Math.round((100 * w) / total) + '%' }));
      seg.style.flexGrow = String(w);
      split.append(seg);
    }
    card.append(split);

    // The steps, the reached ones marked.
    const steps = el('ol', { class: 'steps' });
    for (const s of st.steps || []) {
      const cls = s === st.percent ? 'current' : s < st.percent ? 'done' : null;
      steps.append(el('li', { class: cls, text: s + '%' }));
    }
    card.append(el('div', { class: 'row' }, el('span', { class: 'label', text: 'steps' }), steps));

    if (auto) {
      const limits = [];
      if (auto.maxErrorRate) limits.push('error rate ≤ ' + auto.maxErrorRate);
      if (auto.maxP99) limits.push('p99 ≤ ' + auto.maxP99);
      const pace = 'at least ' + auto.minRequests + ' requests and ' + auto.stepTimeSeconds + ' s per step';
      const since = auto.stepStarted ? ', step began ' + ago(auto.stepStarted, now) : '';
      card.append(el('div', { class: 'row' }, el('span', { class: 'label', text: 'SLO' }),
        el('span', { class: 'slo', text: limits.join(', ') + ' · ' + pace + since })));
      const j = c.judgement;
      if (j) {
        card.append(el('div', { class: 'row' }, el('span', { class: 'label', text: 'judged' }),
          el('span', { class: 'judgement' }, el('span', { class: 'decision ' + j.decision, text: j.decision }), ' ' + j.reason)));
      }
    }

    const backends = el('table', { class: 'backends' },
      el('thead', null, el('tr', null, el('th', { text: 'backend' }), el('th', { text: 'role' }),
        el('th', { class: 'num', text: 'weight' }), el('th', { class: 'num', text: 'req/s' }),
        el('th', { class: 'num', text: 'success' }), el('th', { class: 'num', text: 'p99' }))),
      el('tbody', null, ...(c.backends || []).map((b) =>
        el('tr', { 'data-backend': b.name },
          td(b.name, 'name'), td(b.role, b.role), td(b.weight === undefined || b.weight === null ? DASH : String(b.weight), 'num'),
          td(rate(b.requests_per_second), 'num'), td(pct(b.success_rate), successClass(b.success_rate)),
          td(ms(b.p99_seconds), 'num')))));
    card.append(backends);

    const decisions = el('ol', { class: 'decisions' });
    for (const d of c.decisions || []) {
      decisions.append(el('li', { 'data-revision': d.revision },
        el('span', { class: 'rev', text: '#' + d.revision }),
        el('span', { class: 'when', text: ago(d.time, now), title: stamp(d.time) }),
        el('span', { class: 'who', text: d.who }),
        el('span', { class: 'summary', text: decisionText(d.summary, id), title: d.summary })));
    }
    card.append(el('h4', { text: 'decisions' }), decisions);

    if (state.token && st.phase === 'running') card.append(actions(c, id, st, auto));
    return card;
  }

  // ---- admin ----------------------------------------------------------------------------

  function actions(c, id, st, auto) {
    const list = [];
    if (auto) list.push(auto.paused ? ['resume', 'Resume'] : ['pause', 'Pause']);
    if (!(st.steps || []).length || st.percent < st.steps[st.steps.length - 1]) list.push(['step', 'Next step']);
    list.push(['promote', 'Promote'], ['abort', 'Abort']);
    const box = el('div', { class: 'actions' });
    for (const [action, label] of list) {
      const key = id + '/' + action;
      const consequential = action === 'promote' || action === 'abort';
      const armed = (state.armed.get(key) || 0) > Date.now();
      const button = el('button', {
        type: 'button',
        class: action + (armed ? ' armed' : ''),
        'data-action': action,
        text: armed ? 'Confirm ' + action : label,
        onclick: () => {
          if (consequential && !((state.armed.get(key) || 0) > Date.now())) {
            state.armed.set(key, Date.now() + ARM_MS);
            render(state.last);
            setTimeout(() => render(state.last), ARM_MS + 50);
            return;
          }
          state.armed.delete(key);
          act(c.namespace, c.name, action);
        },
      });
      box.append(button);
    }
    return box;
  }

  async function act(namespace, name, action) {
    const path = '/v1/canaries/' + encodeURIComponent(namespace) + '/' + encodeURIComponent(name);
    try {
      const r = await fetch(path, {
        method: 'POST',
        headers: { 'Authorization': 'Bearer ' + state.token, 'Content-Type': 'application/json' },
        body: JSON.stringify({ action: action }),
        cache: 'no-store',
      });
      const body = await r.json().catch(() => ({}));
      if (r.status === 401) {
        setToken(null);
        notice('The admin token was refused: read-only again.', true);
      } else if (!r.ok) {
        notice('canary ' + namespace + '/' + name + ' ' + action + ': ' + (body.error || r.status), true);
      } else {
        notice('canary ' + namespace + '/' + name + ' ' + action + ': revision ' + body.revision, false);
      }
    } catch (e) {
      notice('canary ' + action + ' failed: ' + e.message, true);
    }
    refresh();
  }

  function setToken(token) {
    state.token = token;
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
    const mode = document.getElementById('mode');
    mode.textContent = token ? 'admin' : 'read-only';
    mode.className = 'badge ' + (token ? 'admin' : '');
    document.getElementById('forget-token').hidden = !token;
    document.getElementById('token').value = '';
    render(state.last);
  }

  // A token is used only once the API accepts it (any token-protected read will do).
  async function tryToken(token) {
    if (!token) return;
    try {
      const r = await fetch('/v1/status', { headers: { 'Authorization': 'Bearer ' + token }, cache: 'no-store' });
      if (r.ok) {
        setToken(token);
      } else {
        setToken(null);
        notice('The control plane refused that token.', true);
      }
    } catch (e) {
      notice('Could not check the token: ' + e.message, true);
    }
  }

  // ---- refresh loop -----------------------------------------------------------------

  function notice(text, bad) {
    const n = document.getElementById('notice');
    n.textContent = text || '';
    n.hidden = !text;
    n.className = bad ? 'bad' : 'good';
  }

  function render(o) {
    if (!o) return;
    renderSummary(o);
    renderServices(o);
    renderEdges(o);
    const cards = (o.canaries || []).map((c) => renderCanary(c, o.generated_at));
    fill('canaries', cards);
    renderHistory(o);
    document.body.setAttribute('data-revision', String(o.revision));
  }

  async function refresh() {
    if (state.busy) return;
    state.busy = true;
    try {
      const r = await fetch('/ui/overview', { cache: 'no-store' });
      const o = await r.json();
      if (!r.ok) throw new Error(o.error || 'HTTP ' + r.status);
      state.last = o;
      render(o);
      document.body.classList.remove('stale');
      if (document.getElementById('notice').classList.contains('unreachable')) notice('');
    } catch (e) {
      document.body.classList.add('stale');
      notice('The control plane does not answer (' + e.message + '); showing the last figures.', true);
      document.getElementById('notice').classList.add('unreachable');
    } finally {
      state.busy = false;
    }
  }

  function start() {
    document.getElementById('token-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      tryToken(document.getElementById('token').value.trim());
    });
    document.getElementById('forget-token').addEventListener('click', () => setToken(null));
    tryToken(sessionStorage.getItem(TOKEN_KEY));
    refresh();
    setInterval(refresh, REFRESH_MS);
  }

  start();
})();
