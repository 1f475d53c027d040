// rumor's dashboard: plain DOM, no framework, no build step. Every text that
// came from the node (names, record data, torrent names, error messages) is
// written with textContent, never as HTML: records and torrents are data
// strangers chose.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = 'rumor-api-token';
  // How often the page asks again when the event stream is down, and how
  // long it waits before opening a closed stream again.
  const POLL_MS = 2000;
  const RECONNECT_MS = 10000;

  const state = {
    view: 'cluster',
    members: [],
    records: [],
    recordsAt: 0,
    torrents: new Map(),
    noSession: null,
    session: null,
    health: null,
    healthAt: 0,
    rates: null,
    details: null,
    detailsFilesDirty: false,
    live: false,
    pollTimer: null,
    removing: null,
    sessionFormDirty: false,
  };

  // ---- formatting ------------------------------------------------------

  function bytes(n) {
    if (n === null || n === undefined || !isFinite(n)) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    let i = 0;
    let v = Math.max(0, n);
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
    if (i === 0) return `${Math.round(v)} B`;
    return `${v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
  }
  const rate = (n) => `${bytes(n)}/s`;
  function duration(s) {
    if (s === null || s === undefined || !isFinite(s) || s < 0) return '∞';
    s = Math.round(s);
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
    return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  }
  const count = (n) => (n === null || n === undefined ? '–' : Number(n).toLocaleString('en'));
  const ms = (n) => (n < 1000 ? `${Math.round(n)} ms` : `${(n / 1000).toFixed(1)} s`);

  // el('td', {className: 'num', text: '3', 'data-testid': 'x'}, child...)
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'text') e.textContent = v;
      else if (k === 'className') e.className = v;
      else if (k === 'onclick') e.addEventListener('click', v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  // ---- messages --------------------------------------------------------

  let noticeTimer = null;
  function showError(text) {
    $('error-text').textContent = text;
    $('error').hidden = false;
  }
  function hideError() { $('error').hidden = true; $('error-text').textContent = ''; }
  function notice(text) {
    const n = $('notice');
    n.textContent = text;
    n.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => { n.hidden = true; }, 4000);
  }
  function why(r) {
    if (r.data && typeof r.data.error === 'string') return r.data.error;
    return r.text ? r.text.slice(0, 300) : 'no details';
  }

  // ---- the API ---------------------------------------------------------

  const token = () => sessionStorage.getItem(TOKEN_KEY);

  async function api(method, path, opts = {}) {
    const headers = {};
    const t = token();
    if (method !== 'GET' && t) headers.Authorization = `Bearer ${t}`;
    let body;
    if (opts.json !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(opts.json);
    } else if (opts.body !== undefined) {
      headers['Content-Type'] = opts.contentType || 'application/octet-stream';
      body = opts.body;
    }
    const resp = await fetch(path, { method, headers, body, cache: 'no-store' });
    const text = await resp.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    return { status: resp.status, ok: resp.ok, data, text };
  }

  // A write: on 401 the token form opens and the write is sent again with
  // the token given; a refusal shows the node's own message in #error.
  // Resolves to the answer's JSON, or null if the write did not happen.
  async function write(what, method, path, opts) {
    hideError();
    let r;
    try {
      r = await api(method, path, opts);
    } catch (e) {
      showError(`${what} failed: the node did not answer (${e.message})`);
      return null;
    }
    if (r.status === 401) {
      const hadToken = !!token();
      if (hadToken) showError(`${what} refused (401): ${why(r)} — the token given was not accepted.`);
      const given = await askToken(hadToken ? 'The node refused this token. Enter the right one:' : null);
      if (!given) {
        showError(`${what} refused (401): ${why(r)}`);
        return null;
      }
      return write(what, method, path, opts);
    }
    if (!r.ok) {
      showError(`${what} refused (${r.status}): ${why(r)}`);
      return null;
    }
    return r.data === null ? {} : r.data;
  }

  // ---- the token -------------------------------------------------------

  let tokenResolve = null;
  function askToken(reason) {
    $('token-why').textContent = reason ||
      'This node needs its API token for writes. It is kept for this browser tab only.';
    $('token-input').value = '';
    $('token-dialog').hidden = false;
    $('token-input').focus();
    return new Promise((resolve) => { tokenResolve = resolve; });
  }
  function closeToken(given) {
    $('token-dialog').hidden = true;
    const r = tokenResolve;
    tokenResolve = null;
    if (r) r(given);
  }
  function showTokenStatus() {
    const has = !!token();
    const s = $('token-status');
    s.textContent = has ? 'token set' : 'no token';
    s.className = has ? 'badge ok' : 'badge';
    $('token-clear').hidden = !has;
  }
  $('token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const t = $('token-input').value.trim();
    if (!t) return;
    sessionStorage.setItem(TOKEN_KEY, t);
    showTokenStatus();
    closeToken(t);
  });
  $('token-cancel').addEventListener('click', () => closeToken(null));
  $('token-clear').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showTokenStatus();
    notice('Token forgotten: the next write asks for it again.');
  });
  $('error-close').addEventListener('click', hideError);

  // ---- views -----------------------------------------------------------

  const VIEWS = ['cluster', 'records', 'torrents'];
  function show(view) {
    if (!VIEWS.includes(view)) view = 'cluster';
    state.view = view;
    for (const v of VIEWS) {
      $(`view-${v}`).hidden = v !== view;
      $(`tab-${v}`).setAttribute('aria-selected', String(v === view));
    }
    if (location.hash !== `#${view}`) history.replaceState(null, '', `#${view}`);
    refreshView();
  }
  for (const b of document.querySelectorAll('.tabs button')) {
    b.addEventListener('click', () => show(b.dataset.view));
  }
  window.addEventListener('hashchange', () => show(location.hash.slice(1)));

  function refreshView() {
    if (state.view === 'cluster') refreshMembers();
    if (state.view === 'records') refreshRecords();
    if (state.view === 'torrents') refreshTorrents();
  }

  // ---- cluster ---------------------------------------------------------

  async function refreshMembers() {
    try {
      const r = await api('GET', '/members');
      if (r.ok && r.data) renderMembers(r.data.members || []);
    } catch (_) { /* the live badge says the node is away */ }
  }

  // Puts `rows` (existing elements reused, new ones made) into `body` in
  // order, removing the rest. Rows are kept, never rebuilt: a refresh every
  // 2 s must not swallow a click on a row's button or reset its focus.
  function placeRows(body, rows) {
    rows.forEach((r, i) => { if (body.children[i] !== r) body.insertBefore(r, body.children[i] || null); });
    while (body.children.length > rows.length) body.lastElementChild.remove();
  }
  const rowsByKey = (body) => new Map([...body.children].map((r) => [r.dataset.key, r]));

  function renderMembers(members) {
    state.members = members;
    const body = $('members-body');
    const old = rowsByKey(body);
    placeRows(body, members.map((m) => {
      let row = old.get(m.id);
      if (!row) {
        row = el('tr', { 'data-testid': 'member', 'data-id': m.id, 'data-key': m.id },
          el('td', { className: 'data' }, m.id, m.me ? el('span', { className: 'muted', text: ' (this node)' }) : null),
          el('td', { className: 'data' }),
          el('td', { 'data-testid': 'member-state' }));
      }
      row.children[1].textContent = m.addr;
      row.children[2].textContent = m.state;
      row.children[2].className = `state-${m.state}`;
      return row;
    }));
  }

  async function refreshHealth() {
    let r;
    try {
      r = await api('GET', '/health');
    } catch (_) {
      setLive(false, 'node unreachable');
      return;
    }
    if (!r.ok || !r.data || !r.data.stats) return;
    const now = performance.now();
    const s = r.data.stats;
    const prev = state.health;
    if (prev) {
      const dt = (now - state.healthAt) / 1000;
      if (dt > 0.2) {
        state.rates = {
          msgIn: (s.gossip_messages_in - prev.gossip_messages_in) / dt,
          msgOut: (s.gossip_messages_out - prev.gossip_messages_out) / dt,
          bytesIn: (s.gossip_bytes_in - prev.gossip_bytes_in) / dt,
          bytesOut: (s.gossip_bytes_out - prev.gossip_bytes_out) / dt,
        };
      }
    }
    state.health = s;
    state.healthAt = now;
    renderHealth();
  }

  function renderHealth() {
    const s = state.health;
    if (!s) return;
    $('node-id').textContent = s.node_id || '';
    const byState = s.members_by_state || {};
    $('stat-alive').textContent = count((byState.alive || 0) + 1);
    const others = Object.entries(byState).filter(([, v]) => v > 0);
    $('stat-members-detail').textContent = others.length
      ? `this node and ${others.map(([k, v]) => `${v} ${k}`).join(', ')}`
      : 'this node alone';
    const rt = state.rates;
    $('stat-gossip-in').textContent = rt ? `${rt.msgIn.toFixed(1)} msg/s` : '–';
    $('stat-gossip-out').textContent = rt ? `${rt.msgOut.toFixed(1)} msg/s` : '–';
    $('stat-gossip-in-bytes').textContent = `${rt ? rate(rt.bytesIn) : '–'}, ${bytes(s.gossip_bytes_in)} in all`;
    $('stat-gossip-out-bytes').textContent = `${rt ? rate(rt.bytesOut) : '–'}, ${bytes(s.gossip_bytes_out)} in all`;
    const lag = s.gossip_lag || {};
    if (lag.count) {
      $('stat-lag').textContent = ms(lag.last_ms);
      $('stat-lag-detail').textContent = `last; mean ${ms(lag.sum_ms / lag.count)}, max ${ms(lag.max_ms)} over ${count(lag.count)} writes`;
    } else {
      $('stat-lag').textContent = '–';
      $('stat-lag-detail').textContent = 'no remote write applied yet';
    }
    $('stat-rrsets').textContent = count(s.rrsets);
    $('stat-entries').textContent = `${count(s.names)} names, ${count(s.entries)} entries, ${count(s.tombstones)} tombstones`;
    $('stat-dropped').textContent = count((s.gossip_dropped_auth || 0) + (s.gossip_dropped_format || 0) +
      (s.gossip_dropped_replay || 0) + (s.gossip_dropped_queue || 0));
  }

  // ---- records ---------------------------------------------------------

  async function refreshRecords() {
    try {
      const r = await api('GET', '/records');
      if (r.ok && Array.isArray(r.data)) {
        state.records = r.data;
        state.recordsAt = performance.now();
        renderRecords();
      }
    } catch (_) { /* shown by the live badge */ }
  }

  const left = (rec) => Math.max(0, rec.ttl - Math.floor((performance.now() - state.recordsAt) / 1000));

  function renderRecords() {
    const body = $('records-body');
    const old = rowsByKey(body);
    const rows = [];
    for (const rec of state.records) {
      if (left(rec) <= 0) continue;
      // Owner names hold no spaces: "name type" is a unique key.
      const key = `${rec.name} ${rec.type}`;
      let row = old.get(key);
      if (!row) {
        const del = el('button', {
          type: 'button', className: 'secondary compact', 'data-testid': 'record-delete', text: 'Delete',
          'aria-label': `Delete ${rec.name} ${rec.type}`,
        });
        del.addEventListener('click', () => deleteRecord(rec.name, rec.type));
        row = el('tr', { 'data-testid': 'record', 'data-name': rec.name, 'data-type': rec.type, 'data-key': key },
          el('td', { className: 'name', text: rec.name }),
          el('td', { text: rec.type }),
          el('td', { className: 'num', 'data-testid': 'record-ttl' }),
          el('td', { className: 'data', 'data-testid': 'record-data' }),
          el('td', {}, del));
      }
      row.children[2].textContent = duration(left(rec));
      const data = rec.data.join('\n');
      if (row.dataset.data !== data) {
        row.dataset.data = data;
        row.children[3].replaceChildren(...rec.data.map((d, i) => (i ? [el('br'), d] : [d])).flat());
      }
      rows.push(row);
    }
    placeRows(body, rows);
    $('records-empty').hidden = rows.length > 0;
    $('records-count').textContent = rows.length ? `(${rows.length})` : '';
  }

  // The TTL column counts down between fetches; a set whose time is up
  // leaves the table (the node no longer serves it).
  function tickRecords() {
    if (state.view !== 'records') return;
    let expired = false;
    for (const row of $('records-body').children) {
      const rec = state.records.find((r) => r.name === row.dataset.name && r.type === row.dataset.type);
      if (!rec) continue;
      const l = left(rec);
      if (l <= 0) expired = true;
      row.querySelector('[data-testid="record-ttl"]').textContent = duration(l);
    }
    if (expired) renderRecords();
  }

  const HINTS = {
    A: ['an IPv4 address', '10.1.0.15'],
    AAAA: ['an IPv6 address', 'fd00::15'],
    CNAME: ['one name', 'target.local'],
    MX: ['preference and a name', '10 mail.local'],
    TXT: ['text', 'v=spf1 -all'],
    SRV: ['priority weight port target', '0 5 5060 sip.local'],
    NS: ['a name', 'ns1.local'],
    PTR: ['a name', 'host.local'],
    other: ['RFC 3597: \\# LENGTH HEX', '\\# 4 0a000001'],
  };
  $('record-type').addEventListener('change', () => {
    const t = $('record-type').value;
    $('record-type-other-label').hidden = t !== 'other';
    const [hint, example] = HINTS[t] || HINTS.other;
    $('record-hint').textContent = hint;
    $('record-data').placeholder = example;
  });

  $('record-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    let type = $('record-type').value;
    if (type === 'other') type = $('record-type-other').value.trim().toUpperCase();
    const name = $('record-name').value.trim();
    const data = $('record-data').value.split('\n').map((l) => l.trim()).filter((l) => l);
    const ttl = Number($('record-ttl').value);
    $('record-submit').disabled = true;
    try {
      const ok = await write('Adding the record', 'POST', '/records', { json: { name, type, ttl, data } });
      if (ok) {
        notice(`Added ${name} ${type} (${data.length} record${data.length === 1 ? '' : 's'})`);
        $('record-data').value = '';
        refreshRecords();
      }
    } finally {
      $('record-submit').disabled = false;
    }
  });

  async function deleteRecord(name, type) {
    const path = `/records/${encodeURIComponent(name)}/${encodeURIComponent(type)}`;
    const ok = await write(`Deleting ${name} ${type}`, 'DELETE', path);
    if (ok) {
      notice(`Deleted ${name} ${type}`);
      refreshRecords();
    }
  }

  // ---- torrents --------------------------------------------------------

  const STATE_CLASS = {
    downloading: 'ok', seeding: 'ok', paused: '', queued: '', checking: 'warn', metadata: 'warn', error: 'bad',
  };

  async function refreshTorrents() {
    let r;
    try {
      r = await api('GET', '/torrents');
    } catch (_) {
      return;
    }
    if (r.status === 404) {
      noSession(why(r));
      return;
    }
    if (!r.ok || !r.data) return;
    state.noSession = null;
    $('torrents-none').hidden = true;
    $('torrents-session').hidden = false;
    const seen = new Set();
    for (const t of r.data.torrents || []) {
      seen.add(t.infohash);
      state.torrents.set(t.infohash, t);
    }
    for (const ih of [...state.torrents.keys()]) if (!seen.has(ih)) state.torrents.delete(ih);
    renderTorrents();
    refreshSession();
  }

  function noSession(message) {
    state.noSession = message;
    // The node's own words when it says why (no --downloads); else ours.
    $('torrents-none').textContent = /torrent session/i.test(message) ? message
      : `This node has no torrent session (${message}).`;
    $('torrents-none').hidden = false;
    $('torrents-session').hidden = true;
  }

  async function refreshSession() {
    try {
      const r = await api('GET', '/session');
      if (r.ok && r.data) renderSession(r.data);
    } catch (_) { /* shown by the live badge */ }
  }

  function renderSession(s) {
    state.session = s;
    const limit = (n) => (n ? `limit ${rate(n)}` : 'no limit');
    $('session-down').textContent = rate(s.download_rate);
    $('session-up').textContent = rate(s.upload_rate);
    $('session-down-limit').textContent = limit(s.download_limit);
    $('session-up-limit').textContent = limit(s.upload_limit);
    $('session-count').textContent = count(s.torrents);
    $('session-active').textContent =
      `${count(s.active)} active of at most ${count(s.max_active_downloads)}, ${count(s.queued)} queued`;
    // The form shows the node's settings until someone edits it.
    if (!state.sessionFormDirty) fillSessionForm(s);
  }

  const kibOrEmpty = (n) => (n ? String(Math.round(n / 1024)) : '');
  function fillSessionForm(s) {
    $('session-limit-down').value = kibOrEmpty(s.download_limit);
    $('session-limit-up').value = kibOrEmpty(s.upload_limit);
    $('session-max-active').value = s.max_active_downloads === undefined ? '' : String(s.max_active_downloads);
  }
  // KiB/s typed in a box: null (no limit) when empty or 0.
  const kibLimit = (v) => (v.trim() === '' || Number(v) === 0 ? null : Math.round(Number(v) * 1024));

  // Focusing a box counts as editing: a live update arriving between
  // clearing a box and typing into it must not refill it.
  $('session-form').addEventListener('input', () => { state.sessionFormDirty = true; });
  $('session-form').addEventListener('focusin', () => { state.sessionFormDirty = true; });
  $('session-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const body = {
      download_limit: kibLimit($('session-limit-down').value),
      upload_limit: kibLimit($('session-limit-up').value),
    };
    const max = $('session-max-active').value.trim();
    if (max !== '') body.max_active_downloads = Number(max);
    const s = await write('Setting the session limits', 'PATCH', '/session', { json: body });
    if (s) {
      state.sessionFormDirty = false;
      notice('Session limits set');
      if (s.download_rate !== undefined) renderSession(s); else refreshSession();
    }
  });

  function torrentCard(ih) {
    const id = `torrent-${ih}`;
    let card = $(id);
    if (card) return card;
    const button = (label, testid, onclick, cls) => el('button', {
      type: 'button', className: cls || 'secondary compact', 'data-testid': testid, id: `${testid}-${ih}`,
      text: label, onclick,
    });
    card = el('article', { className: 'torrent', id, 'data-testid': 'torrent', 'data-infohash': ih },
      el('div', { className: 'title' },
        el('span', { className: 'name', 'data-testid': 'torrent-name' }),
        el('span', { className: 'badge', 'data-testid': 'torrent-state' })),
      el('div', { className: 'progress' },
        el('progress', { max: '1', value: '0', 'data-testid': 'torrent-progress', id: `progress-${ih}` }),
        el('span', { className: 'pct', 'data-testid': 'torrent-pct' })),
      el('div', { className: 'facts' },
        el('span', { 'data-testid': 'torrent-size' }),
        el('span', { 'data-testid': 'torrent-down' }),
        el('span', { 'data-testid': 'torrent-up' }),
        el('span', { 'data-testid': 'torrent-peers' }),
        el('span', { 'data-testid': 'torrent-eta' })),
      el('div', { className: 'err', 'data-testid': 'torrent-error', hidden: true }),
      el('div', { className: 'actions' },
        button('Pause', 'torrent-pause', () => torrentAction(ih, 'pause')),
        button('Resume', 'torrent-resume', () => torrentAction(ih, 'resume')),
        button('Recheck', 'torrent-recheck', () => torrentAction(ih, 'recheck')),
        button('Details', 'torrent-details', () => openDetails(ih)),
        button('Remove', 'torrent-remove', () => askRemove(ih), 'danger compact')));
    return card;
  }

  function fillCard(card, t) {
    const q = (tid) => card.querySelector(`[data-testid="${tid}"]`);
    card.className = `torrent ${t.state}`;
    card.dataset.state = t.state;
    q('torrent-name').textContent = t.name || t.infohash;
    q('torrent-name').title = t.name || t.infohash;
    const st = q('torrent-state');
    st.textContent = t.state;
    st.className = `badge ${STATE_CLASS[t.state] || ''}`;
    const p = Math.max(0, Math.min(1, Number(t.progress) || 0));
    q('torrent-progress').value = p;
    q('torrent-progress').setAttribute('aria-valuenow', String(Math.floor(p * 100)));
    q('torrent-pct').textContent = `${(Math.floor(p * 1000) / 10).toFixed(1)}%`;
    q('torrent-size').textContent = `${bytes(t.done)} of ${bytes(t.size)}`;
    q('torrent-down').textContent = `↓ ${rate(t.download_rate)}`;
    q('torrent-up').textContent = `↑ ${rate(t.upload_rate)}`;
    q('torrent-peers').textContent = `${count(t.peers)} peers (${count(t.seeds)} seeds)`;
    q('torrent-eta').textContent = t.state === 'seeding' ? 'done'
      : t.state === 'downloading' ? `ETA ${duration(t.eta)}` : '';
    const err = q('torrent-error');
    err.hidden = !t.error;
    err.textContent = t.error || '';
    const paused = t.state === 'paused';
    q('torrent-pause').hidden = paused;
    q('torrent-resume').hidden = !paused;
  }

  function renderTorrents() {
    const list = $('torrent-list');
    const sorted = [...state.torrents.values()].sort((a, b) => (a.queue_position - b.queue_position) ||
      a.infohash.localeCompare(b.infohash));
    const cards = sorted.map((t) => {
      const c = torrentCard(t.infohash);
      fillCard(c, t);
      return c;
    });
    placeRows(list, cards);
    $('torrents-empty').hidden = cards.length > 0;
  }

  function upsertTorrent(t) {
    if (!t || !t.infohash) return;
    state.torrents.set(t.infohash, t);
    if (state.noSession === null) renderTorrents();
    if (state.details === t.infohash) refreshDetails();
  }

  function removedTorrent(ih) {
    state.torrents.delete(ih);
    renderTorrents();
    if (state.details === ih) closeDetails();
  }

  async function torrentAction(ih, action) {
    const t = state.torrents.get(ih);
    const label = `${action[0].toUpperCase()}${action.slice(1)} ${t ? t.name || ih : ih}`;
    const s = await write(label, 'POST', `/torrents/${ih}/${action}`);
    if (s && s.infohash) upsertTorrent(s);
  }

  function askRemove(ih) {
    const t = state.torrents.get(ih);
    state.removing = ih;
    $('remove-name').textContent = t ? t.name || ih : ih;
    $('remove-data').checked = false;
    $('remove-dialog').hidden = false;
    $('remove-cancel').focus();
  }
  $('remove-cancel').addEventListener('click', () => { $('remove-dialog').hidden = true; state.removing = null; });
  $('remove-confirm').addEventListener('click', async () => {
    const ih = state.removing;
    const withData = $('remove-data').checked;
    $('remove-dialog').hidden = true;
    state.removing = null;
    if (!ih) return;
    const t = state.torrents.get(ih);
    const ok = await write(`Removing ${t ? t.name || ih : ih}`, 'DELETE',
      `/torrents/${ih}${withData ? '?delete_data=true' : ''}`);
    if (ok) {
      notice(`Removed ${t ? t.name || ih : ih}${withData ? ' and its files' : ''}`);
      removedTorrent(ih);
    }
  });

  // A magnet link, 40 hex digits, or 32 base32 characters (as `rumor get`).
  function linkBody(text) {
    if (/^magnet:\?/i.test(text)) return { magnet: text };
    if (/^[0-9a-f]{40}$/i.test(text)) return { infohash: text.toLowerCase() };
    if (/^[a-z2-7]{32}$/i.test(text)) return { magnet: `magnet:?xt=urn:btih:${text.toUpperCase()}` };
    return null;
  }

  $('torrent-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const file = $('torrent-file').files[0];
    const link = $('torrent-link').value.trim();
    const paused = $('torrent-paused').checked;
    let answer;
    $('torrent-submit').disabled = true;
    try {
      if (file) {
        const buf = await file.arrayBuffer();
        answer = await write(`Adding ${file.name}`, 'POST', `/torrents${paused ? '?paused=true' : ''}`,
          { body: buf, contentType: 'application/x-bittorrent' });
      } else if (link) {
        const body = linkBody(link);
        if (!body) {
          showError('That is neither a magnet link nor an infohash (40 hex digits or 32 base32 characters).');
          return;
        }
        if (paused) body.paused = true;
        answer = await write('Adding the torrent', 'POST', '/torrents', { json: body });
      } else {
        showError('Give a magnet link, an infohash or a .torrent file.');
        return;
      }
    } finally {
      $('torrent-submit').disabled = false;
    }
    if (answer) {
      notice(`Added ${answer.name || answer.infohash}`);
      $('torrent-link').value = '';
      $('torrent-file').value = '';
      refreshTorrents();
    }
  });

  // ---- details ---------------------------------------------------------

  function openDetails(ih) {
    state.details = ih;
    state.detailsFilesDirty = false;
    $('files-save').disabled = true;
    $('details').hidden = false;
    $('details-name').textContent = (state.torrents.get(ih) || {}).name || ih;
    $('limit-down').value = '';
    $('limit-up').value = '';
    refreshDetails(true);
  }
  function closeDetails() {
    state.details = null;
    $('details').hidden = true;
  }
  $('details-close').addEventListener('click', closeDetails);

  let detailsBusy = false;
  async function refreshDetails(first) {
    const ih = state.details;
    if (!ih || detailsBusy) return;
    detailsBusy = true;
    try {
      const r = await api('GET', `/torrents/${ih}`);
      if (state.details !== ih) return;
      if (!r.ok) {
        if (r.status === 404) closeDetails();
        return;
      }
      renderDetails(r.data, first);
    } catch (_) { /* shown by the live badge */ } finally {
      detailsBusy = false;
    }
  }

  const PRIORITIES = [['0', 'skip'], ['1', 'normal'], ['2', 'high']];

  function renderDetails(d, first) {
    $('details-name').textContent = d.name || d.infohash;
    const kv = [
      ['Infohash', d.infohash], ['State', d.state],
      ['Progress', `${(Math.floor((d.progress || 0) * 1000) / 10).toFixed(1)}% (${bytes(d.done)} of ${bytes(d.size)})`],
      ['Download', `${rate(d.download_rate)}, ${bytes(d.downloaded)} this session`],
      ['Upload', `${rate(d.upload_rate)}, ${bytes(d.uploaded)} this session`],
      ['Peers', `${count(d.peers)} (${count(d.seeds)} seeds)`],
      ['ETA', d.state === 'downloading' ? duration(d.eta) : '–'],
      ['Limits', `down ${d.download_limit ? rate(d.download_limit) : 'none'}, up ${d.upload_limit ? rate(d.upload_limit) : 'none'}`],
      ['Added', d.added_at_ms ? new Date(d.added_at_ms).toLocaleString() : '–'],
    ];
    if (d.error) kv.push(['Error', d.error]);
    $('details-summary').replaceChildren(...kv.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { text: v })]));
    if (first) {
      $('limit-down').value = d.download_limit ? Math.round(d.download_limit / 1024) : '';
      $('limit-up').value = d.upload_limit ? Math.round(d.upload_limit / 1024) : '';
    }
    renderFiles(d.files || [], first);
    $('trackers-list').replaceChildren(...(d.trackers || []).map((t) => el('li', {},
      el('span', { className: 'data', text: t.url }),
      el('span', { className: 'muted', text: ` ${t.status || ''}${t.peers !== undefined && t.peers !== null ? `, ${t.peers} peers` : ''}` }),
      t.error ? el('div', { className: 'err', text: t.error }) : null)));
    $('peers-body').replaceChildren(...(d.peer_list || []).map((p) => el('tr', {},
      el('td', { className: 'data', text: p.addr }),
      el('td', { text: p.client || '' }),
      el('td', { className: 'num', text: rate(p.download_rate) }),
      el('td', { className: 'num', text: rate(p.upload_rate) }),
      el('td', { className: 'num', text: `${Math.floor((p.progress || 0) * 100)}%` }))));
  }

  // The file rows are built once per torrent and then updated in place:
  // rebuilding them on every refresh would close a priority menu the user
  // has open and replace the element they are about to choose from.
  function renderFiles(files, first) {
    const body = $('files-body');
    const rows = [...body.children];
    const same = rows.length === files.length
      && files.every((f, i) => rows[i].dataset.index === String(f.index) && rows[i].dataset.path === f.path);
    if (!same) {
      body.replaceChildren(...files.map((f) => {
        const sel = el('select', { 'data-testid': 'file-priority', 'data-index': f.index, 'aria-label': `Priority of ${f.path}` },
          ...PRIORITIES.map(([v, label]) => el('option', { value: v, text: label })));
        sel.value = String(f.priority);
        sel.addEventListener('change', () => { state.detailsFilesDirty = true; $('files-save').disabled = false; });
        const row = el('tr', { 'data-testid': 'file', 'data-index': f.index },
          el('td', { className: 'name', text: f.path }),
          el('td', { className: 'num', text: bytes(f.size) }),
          el('td', { className: 'num file-done', text: '' }),
          el('td', {}, sel));
        row.dataset.path = f.path;
        return row;
      }));
    }
    files.forEach((f, i) => {
      const row = body.children[i];
      const done = f.size ? `${Math.floor((f.done / f.size) * 100)}%` : '–';
      const cell = row.querySelector('.file-done');
      if (cell.textContent !== done) cell.textContent = done;
      const sel = row.querySelector('select');
      // The user's unsaved choices win over the node's until they apply them.
      if ((first || !state.detailsFilesDirty) && sel.value !== String(f.priority)) sel.value = String(f.priority);
    });
  }

  $('files-save').addEventListener('click', async () => {
    const ih = state.details;
    if (!ih) return;
    const sels = [...document.querySelectorAll('#files-body select')];
    const prios = [];
    for (const s of sels) prios[Number(s.dataset.index)] = Number(s.value);
    for (let i = 0; i < prios.length; i += 1) if (prios[i] === undefined) prios[i] = 1;
    const s = await write('Setting the file selection', 'PATCH', `/torrents/${ih}`, { json: { file_priorities: prios } });
    if (s) {
      state.detailsFilesDirty = false;
      $('files-save').disabled = true;
      notice('File selection applied');
      if (s.infohash) upsertTorrent(s);
      refreshDetails(true);
    }
  });

  $('limits-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const ih = state.details;
    if (!ih) return;
    const body = { download_limit: kibLimit($('limit-down').value), upload_limit: kibLimit($('limit-up').value) };
    const s = await write('Setting the limits', 'PATCH', `/torrents/${ih}`, { json: body });
    if (s) {
      notice('Limits set');
      if (s.infohash) upsertTorrent(s);
    }
  });

  document.addEventListener('keydown', (ev) => {
    if (ev.key !== 'Escape') return;
    if (!$('token-dialog').hidden) closeToken(null);
    else if (!$('remove-dialog').hidden) $('remove-cancel').click();
    else if (!$('details').hidden) closeDetails();
  });

  // ---- live updates ----------------------------------------------------

  function setLive(live, text) {
    state.live = live;
    const b = $('live');
    b.textContent = text || (live ? 'live' : `polling every ${POLL_MS / 1000} s`);
    b.className = live ? 'badge ok' : 'badge warn';
  }

  function startPolling() {
    if (state.pollTimer) return;
    state.pollTimer = setInterval(refreshView, POLL_MS);
  }
  function stopPolling() {
    clearInterval(state.pollTimer);
    state.pollTimer = null;
  }

  let recordsTimer = null;
  function recordsChanged() {
    // A burst of writes is one fetch.
    clearTimeout(recordsTimer);
    recordsTimer = setTimeout(() => { if (state.view === 'records') refreshRecords(); }, 250);
  }

  const parse = (e) => { try { return JSON.parse(e.data); } catch (_) { return null; } };

  function connectEvents() {
    if (!window.EventSource) {
      setLive(false);
      startPolling();
      return;
    }
    const es = new EventSource('/events');
    es.addEventListener('open', () => {
      setLive(true);
      stopPolling();
      refreshView();
    });
    es.addEventListener('error', () => {
      // The stream is down (or the node has none): poll until it is back.
      setLive(false);
      startPolling();
      if (es.readyState === EventSource.CLOSED) {
        setTimeout(connectEvents, RECONNECT_MS);
      }
    });
    es.addEventListener('torrent', (e) => upsertTorrent(parse(e)));
    es.addEventListener('torrent_removed', (e) => { const d = parse(e); if (d) removedTorrent(d.infohash); });
    es.addEventListener('session', (e) => { const d = parse(e); if (d) renderSession(d); });
    es.addEventListener('records', recordsChanged);
    es.addEventListener('members', (e) => {
      const d = parse(e);
      if (d && Array.isArray(d.members)) renderMembers(d.members);
    });
  }

  showTokenStatus();
  setLive(false, 'connecting');
  show(location.hash.slice(1) || 'cluster');
  refreshHealth();
  // Counters are not streamed: the cluster view's rates come from /health.
  setInterval(refreshHealth, POLL_MS);
  setInterval(tickRecords, 1000);
  connectEvents();
})();
