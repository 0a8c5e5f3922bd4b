// kvd console: namespaces, keys, and the month's usage and bill, through the
// public REST API under /v2/storage/kvs only.
//
// Rules this file keeps, whatever the data:
// - Text from the API or the user is put into the page with textContent
//   (through el() below), never parsed as HTML.
// - No inline script or style: the Content-Security-Policy forbids both.
// - The token lives in sessionStorage and goes out as a bearer header.
'use strict';

(() => {
  const API = '/v2/storage/kvs';
  const TOKEN_KEY = 'kvd.console.token';
  const HEX_LIMIT = 64 * 1024; // bytes shown in the hex view
  const MAX_VALUE = 1048576;

  // window.kvdConsole exposes figures for tests and debugging: the last key
  // page's render time, the charts, the route shown.
  const debug = { lastRender: null, charts: {}, route: '' };
  window.kvdConsole = debug;

  let token = sessionStorage.getItem(TOKEN_KEY) || '';
  let viewSeq = 0; // bumped on every navigation; stale async work checks it
  let flash = ''; // a status to show once the next view is up

  // ---- DOM helpers

  // el creates an element. attrs: "class", "text" (textContent), "on<event>"
  // (listeners); anything else is an attribute (true: present, false or
  // null: absent). Children are nodes or strings (as text).
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === undefined || v === null || v === false) continue;
        if (k === 'class') e.className = v;
        else if (k === 'text') e.textContent = v;
        else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
        else e.setAttribute(k, v === true ? '' : String(v));
      }
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      e.append(typeof c === 'string' ? document.createTextNode(c) : c);
    }
    return e;
  }

  function field(label, input, hint) {
    const hintEl = hint ? el('span', { class: 'hint', id: input.id + '-hint', text: hint }) : null;
    if (hintEl) input.setAttribute('aria-describedby', hintEl.id);
    return el('div', { class: 'field' + (input.tagName === 'TEXTAREA' ? ' grow' : '') },
      el('label', { for: input.id, text: label }), input, hintEl);
  }

  function tableWrap(label, table) {
    return el('div', { class: 'table-wrap', role: 'region', 'aria-label': label, tabindex: '0' }, table);
  }

  const $ = (id) => document.getElementById(id);
  const fmtInt = (n) => Number(n).toLocaleString('en-US');
  const dash = (v) => (v === null || v === undefined || v === '' ? '—' : String(v));

  function fmtBytes(n) {
    n = Number(n);
    const units = ['B', 'KB', 'MB', 'GB', 'TB'];
    let i = 0;
    let v = n;
    while (Math.abs(v) >= 1000 && i < units.length - 1) { v /= 1000; i++; }
    return i === 0 ? `${fmtInt(n)} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
  }

  function showError(msg) {
    const e = $('error');
    e.textContent = msg;
    e.hidden = !msg;
  }
  function say(msg) { $('status').textContent = msg; }

  // ---- API

  class APIError extends Error {
    constructor(status, detail, code) {
      super(detail);
      this.status = status;
      this.code = code || '';
    }
  }

  // api sends a request with the bearer token and returns the Response,
  // or throws an APIError carrying the envelope's detail.
  async function api(method, path, opts = {}) {
    const headers = new Headers(opts.headers || {});
    headers.set('Authorization', 'Bearer ' + token);
    let res;
    try {
      res = await fetch(API + path, {
        method, headers, body: opts.body, cache: 'no-store', credentials: 'omit', redirect: 'error',
      });
    } catch (e) {
      throw new APIError(0, 'Could not reach kvd: ' + e.message);
    }
    if (res.ok || (opts.allow && opts.allow.includes(res.status))) return res;
    let detail = `${res.status} ${res.statusText}`.trim();
    let code = '';
    try {
      const body = await res.json();
      const e = body && body.errors && body.errors[0];
      if (e) {
        detail = e.detail || e.title || detail;
        code = e.code;
      }
    } catch (_) { /* not the envelope */ }
    const err = new APIError(res.status, detail, code);
    if (res.status === 401 && !opts.probe) logout(detail);
    throw err;
  }

  async function apiJSON(method, path, opts) {
    const res = await api(method, path, opts);
    return res.json();
  }

  const nsPath = (id) => '/' + encodeURIComponent(id);
  // A key that is a whole path segment of dots cannot be sent by a browser:
  // URL parsing resolves "." and ".." (escaped or not) before the request.
  const keyPath = (id, key) => {
    if (key === '.' || key === '..') {
      throw new APIError(0, `The key “${key}” cannot be reached from a browser, which resolves “${key}” in a URL path before sending it; use the CLI or the API.`);
    }
    return nsPath(id) + '/keys/' + encodeURIComponent(key);
  };

  // ---- routing

  function parseHash() {
    const h = location.hash || '#/namespaces';
    if (!h.startsWith('#/')) return null; // an in-page link such as #main
    const [pathPart, query] = h.slice(2).split('?');
    const parts = pathPart.split('/').map((p) => { try { return decodeURIComponent(p); } catch (_) { return p; } });
    return { parts, query: new URLSearchParams(query || '') };
  }

  function go(hash) {
    if (location.hash === hash) route();
    else location.hash = hash;
  }

  function setView(title, ...nodes) {
    const main = $('main');
    main.replaceChildren(...nodes);
    document.title = title + ' · kvd console';
    const h = main.querySelector('h2');
    if (h) {
      h.setAttribute('tabindex', '-1');
      h.focus({ preventScroll: true });
    }
  }

  function markNav(which) {
    for (const [id, name] of [['nav-namespaces', 'namespaces'], ['nav-usage', 'usage']]) {
      if (name === which) $(id).setAttribute('aria-current', 'page');
      else $(id).removeAttribute('aria-current');
    }
  }

  function route() {
    const r = parseHash();
    if (!r) return;
    viewSeq++;
    destroyCharts();
    showError('');
    say(flash);
    flash = '';
    const loggedIn = !!token;
    $('main-nav').hidden = !loggedIn;
    $('logout').hidden = !loggedIn;
    if (!loggedIn) {
      debug.route = 'login';
      viewLogin('');
      return;
    }
    const [first, id, sub, ...rest] = r.parts;
    if (first === 'ns' && id && sub === 'key' && rest.length) {
      debug.route = 'key';
      markNav('namespaces');
      viewKey(id, rest.join('/'));
    } else if (first === 'ns' && id) {
      debug.route = 'keys';
      markNav('namespaces');
      viewKeys(id, r.query.get('prefix') || '');
    } else if (first === 'usage') {
      debug.route = 'usage';
      markNav('usage');
      viewUsage(id || '', r.query.get('ns') || '');
    } else {
      debug.route = 'namespaces';
      markNav('namespaces');
      viewNamespaces(Number(r.query.get('page')) || 1);
    }
  }

  function logout(message) {
    token = '';
    sessionStorage.removeItem(TOKEN_KEY);
    route();
    if (message) showError('Logged out: ' + message);
  }

  // ---- login

  function viewLogin() {
    const input = el('input', { id: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false', required: true });
    const form = el('form', { class: 'stacked', novalidate: true, 'aria-labelledby': 'login-h' },
      field('API token', input, 'A kvd token, or the value of TELNYX_API_KEY the server runs with.'),
      el('div', {}, el('button', { type: 'submit', id: 'login-button', text: 'Log in' })));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const t = input.value.trim();
      if (!t) {
        showError('Paste a token first.');
        input.focus();
        return;
      }
      token = t;
      say('Checking the token…');
      try {
        await api('GET', '?page[size]=1', { probe: true });
      } catch (e) {
        token = '';
        say('');
        showError(e.status === 401 ? 'This token is not accepted: ' + e.message : e.message);
        input.focus();
        return;
      }
      sessionStorage.setItem(TOKEN_KEY, t);
      flash = 'Logged in.';
      route();
    });
    setView('Log in', el('section', { class: 'card', 'aria-labelledby': 'login-h' },
      el('h2', { id: 'login-h', text: 'Log in' }),
      el('p', { text: 'Paste an API token to manage this kvd’s namespaces and keys and see its usage.' }),
      form));
    input.focus();
  }

  // ---- confirmation dialog

  function confirmDialog(title, message, confirmLabel) {
    return new Promise((resolve) => {
      const cancel = el('button', { type: 'button', class: 'secondary', text: 'Cancel' });
      const ok = el('button', { type: 'button', class: 'danger', id: 'confirm-ok', text: confirmLabel });
      const d = el('dialog', { 'aria-labelledby': 'dialog-title', 'aria-describedby': 'dialog-message' },
        el('h2', { id: 'dialog-title', text: title }),
        el('p', { id: 'dialog-message', text: message }),
        el('div', { class: 'actions' }, cancel, ok));
      let answer = false;
      const back = document.activeElement;
      cancel.addEventListener('click', () => d.close());
      ok.addEventListener('click', () => { answer = true; d.close(); });
      d.addEventListener('close', () => {
        d.remove();
        if (back && back.focus) back.focus();
        resolve(answer);
      });
      document.body.append(d);
      d.showModal();
      cancel.focus();
    });
  }

  // ---- namespaces

  const PAGE_SIZE = 20;

  function statusBadge(status) {
    return el('span', { class: 'badge ' + status, text: status });
  }

  async function viewNamespaces(page) {
    const seq = viewSeq;
    const name = el('input', { id: 'new-ns-name', type: 'text', autocomplete: 'off', spellcheck: 'false', maxlength: '255' });
    const createForm = el('form', { novalidate: true, 'aria-label': 'Create a namespace' },
      field('New namespace', name, 'Lowercase letters, digits and hyphens.'),
      el('button', { type: 'submit', id: 'create-ns', text: 'Create' }));
    const progress = el('p', { id: 'create-progress', role: 'status', 'aria-live': 'polite' });
    const tbody = el('tbody', { id: 'ns-rows' });
    const caption = el('caption', { text: 'Loading…' });
    const table = el('table', { id: 'ns-table' }, caption,
      el('thead', {}, el('tr', {},
        el('th', { scope: 'col', text: 'Name' }), el('th', { scope: 'col', text: 'Status' }),
        el('th', { scope: 'col', class: 'hide-narrow', text: 'ID' }), el('th', { scope: 'col', class: 'hide-narrow', text: 'Created' }),
        el('th', { scope: 'col', text: 'Actions' }))),
      tbody);
    const prev = el('button', { type: 'button', class: 'secondary', id: 'ns-prev', text: 'Previous page' });
    const next = el('button', { type: 'button', class: 'secondary', id: 'ns-next', text: 'Next page' });
    const pageInfo = el('span', { id: 'ns-page-info' });
    setView('Namespaces', el('section', { 'aria-labelledby': 'ns-h' },
      el('h2', { id: 'ns-h', text: 'Namespaces' }),
      createForm, progress,
      tableWrap('Namespaces', table),
      el('nav', { class: 'pager', 'aria-label': 'Namespace pages' }, prev, pageInfo, next)));

    let meta = { page_number: page, total_pages: 1 };
    const rowFor = (ns) => {
      const actions = el('div', { class: 'actions' },
        el('a', { href: '#/ns/' + encodeURIComponent(ns.id), text: 'Keys', 'aria-label': 'Keys of ' + ns.name }),
        el('a', { href: '#/usage?ns=' + encodeURIComponent(ns.id), text: 'Usage', 'aria-label': 'Usage of ' + ns.name }),
        el('button', {
          type: 'button', class: 'link danger', text: 'Delete', 'aria-label': 'Delete ' + ns.name,
          disabled: ns.status === 'deleting', onclick: () => deleteNamespace(ns),
        }));
      return el('tr', { 'data-id': ns.id, 'data-name': ns.name },
        el('td', {}, el('a', { href: '#/ns/' + encodeURIComponent(ns.id), text: ns.name })),
        el('td', { class: 'status-cell' }, statusBadge(ns.status)),
        el('td', { class: 'hide-narrow' }, el('code', { text: ns.id })),
        el('td', { class: 'hide-narrow nowrap', text: ns.created_at }),
        el('td', {}, actions));
    };
    const setRowStatus = (id, status) => {
      const row = tbody.querySelector(`tr[data-id="${CSS.escape(id)}"]`);
      if (row) row.querySelector('.status-cell').replaceChildren(statusBadge(status));
    };

    async function load(n) {
      caption.textContent = 'Loading…';
      let body;
      try {
        body = await apiJSON('GET', `?page[number]=${n}&page[size]=${PAGE_SIZE}`);
      } catch (e) {
        if (seq === viewSeq) showError(e.message);
        return;
      }
      if (seq !== viewSeq) return;
      meta = body.meta;
      const frag = document.createDocumentFragment();
      for (const ns of body.data) frag.append(rowFor(ns));
      tbody.replaceChildren(frag);
      const total = meta.total_results;
      caption.textContent = total === 0 ? 'No namespaces yet.' : `${fmtInt(total)} namespace${total === 1 ? '' : 's'}, oldest first`;
      pageInfo.textContent = `Page ${meta.page_number} of ${Math.max(1, meta.total_pages)}`;
      prev.disabled = meta.page_number <= 1;
      next.disabled = meta.page_number >= meta.total_pages;
    }
    prev.addEventListener('click', () => go('#/namespaces?page=' + (meta.page_number - 1)));
    next.addEventListener('click', () => go('#/namespaces?page=' + (meta.page_number + 1)));

    // poll follows one namespace's status until it settles, showing each
    // change as it happens.
    async function poll(id, label, until) {
      const deadline = Date.now() + 120000;
      let last = '';
      while (seq === viewSeq && Date.now() < deadline) {
        let status;
        try {
          const res = await api('GET', nsPath(id), { allow: [404] });
          status = res.status === 404 ? 'gone' : (await res.json()).data.status;
        } catch (e) {
          showError(e.message);
          return '';
        }
        if (status !== last) {
          last = status;
          progress.textContent = `${label}: ${status === 'gone' ? 'deleted' : status}`;
          if (status !== 'gone') setRowStatus(id, status);
        }
        if (until.includes(status)) return status;
        await new Promise((r) => setTimeout(r, 200));
      }
      return last;
    }

    createForm.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      showError('');
      const n = name.value.trim();
      let ns;
      try {
        ns = (await apiJSON('POST', '', { body: JSON.stringify({ name: n }), headers: { 'Content-Type': 'application/json' } })).data;
      } catch (e) {
        showError(e.message);
        name.focus();
        return;
      }
      name.value = '';
      progress.textContent = `${ns.name}: ${ns.status}`;
      // The newest namespace is on the last page.
      const first = await apiJSON('GET', `?page[number]=1&page[size]=${PAGE_SIZE}`).catch(() => null);
      const last = first ? Math.max(1, first.meta.total_pages) : 1;
      if (last !== meta.page_number) {
        history.replaceState(null, '', '#/namespaces?page=' + last);
      }
      await load(last);
      const status = await poll(ns.id, ns.name, ['provision_ok', 'provision_failed', 'gone']);
      if (status === 'provision_ok') progress.textContent = `${ns.name}: provision_ok — ready`;
    });

    async function deleteNamespace(ns) {
      const yes = await confirmDialog('Delete namespace?',
        `Delete namespace “${ns.name}” and every key in it? This cannot be undone.`, 'Delete namespace');
      if (!yes) return;
      try {
        await api('DELETE', nsPath(ns.id));
      } catch (e) {
        showError(e.message);
        return;
      }
      setRowStatus(ns.id, 'deleting');
      const status = await poll(ns.id, ns.name, ['gone', 'delete_failed']);
      if (status === 'gone') await load(meta.page_number > 1 && tbody.rows.length === 1 ? meta.page_number - 1 : meta.page_number);
    }

    await load(page);
  }

  // ---- keys of a namespace

  async function namespaceOf(id) {
    return (await apiJSON('GET', nsPath(id))).data;
  }

  function breadcrumb(...items) {
    return el('nav', { class: 'breadcrumb', 'aria-label': 'Breadcrumb' },
      el('ol', {}, ...items.map((it, i) => el('li', {},
        it.href ? el('a', { href: it.href, text: it.text }) : el('span', { 'aria-current': i === items.length - 1 ? 'page' : false, text: it.text })))));
  }

  async function viewKeys(id, prefix) {
    const seq = viewSeq;
    let ns;
    try {
      ns = await namespaceOf(id);
    } catch (e) {
      setView('Keys', breadcrumb({ href: '#/namespaces', text: 'Namespaces' }, { text: id }),
        el('h2', { text: 'Keys' }));
      showError(e.message);
      return;
    }
    if (seq !== viewSeq) return;
    const prefixInput = el('input', { id: 'prefix', type: 'text', autocomplete: 'off', spellcheck: 'false', value: prefix });
    const limit = el('select', { id: 'limit' },
      el('option', { value: '100', text: '100' }), el('option', { value: '1000', text: '1,000', selected: true }));
    const search = el('form', { role: 'search', novalidate: true, 'aria-label': 'Find keys by prefix' },
      el('div', { class: 'field grow' }, el('label', { for: 'prefix', text: 'Prefix' }), prefixInput),
      field('Keys per page', limit),
      el('button', { type: 'submit', id: 'list-keys', text: 'List keys' }));
    const tbody = el('tbody', { id: 'key-rows' });
    const caption = el('caption', { id: 'keys-caption', text: 'Loading…' });
    const table = el('table', { id: 'key-table' }, caption,
      el('thead', {}, el('tr', {},
        el('th', { scope: 'col', text: 'Key' }), el('th', { scope: 'col', class: 'num', text: 'Size' }),
        el('th', { scope: 'col', class: 'hide-narrow', text: 'Updated' }))),
      tbody);
    const first = el('button', { type: 'button', class: 'secondary', id: 'keys-first', text: 'First page' });
    const prev = el('button', { type: 'button', class: 'secondary', id: 'keys-prev', text: 'Previous page' });
    const next = el('button', { type: 'button', class: 'secondary', id: 'keys-next', text: 'Next page' });
    const renderInfo = el('span', { id: 'render-info', class: 'hint' });

    // The form to put a key.
    const newKey = el('input', { id: 'new-key', type: 'text', autocomplete: 'off', spellcheck: 'false' });
    const newType = el('input', { id: 'new-type', type: 'text', autocomplete: 'off', value: 'text/plain; charset=utf-8' });
    const newTTL = el('input', { id: 'new-ttl', type: 'number', min: '1', step: '1', inputmode: 'numeric' });
    const newValue = el('textarea', { id: 'new-value', spellcheck: 'false' });
    const newFile = el('input', { id: 'new-file', type: 'file' });
    const putForm = el('form', { class: 'stacked', novalidate: true, 'aria-labelledby': 'put-h' },
      field('Key', newKey, 'Letters, digits and - / _ = . ; up to 256 characters.'),
      field('Content type', newType),
      field('Expires after (seconds)', newTTL, 'Empty: the key never expires.'),
      field('Value', newValue),
      field('Or upload a file as the value', newFile, 'Its bytes are stored as they are, with the file’s type (up to 1 MiB).'),
      el('div', {}, el('button', { type: 'submit', id: 'put-key', text: 'Save key' })));

    setView('Keys of ' + ns.name,
      breadcrumb({ href: '#/namespaces', text: 'Namespaces' }, { text: ns.name }),
      el('section', { 'aria-labelledby': 'keys-h' },
        el('h2', { id: 'keys-h' }, 'Keys of ', el('span', { class: 'mono', text: ns.name })),
        el('p', {}, statusBadge(ns.status), ' ', el('a', { href: '#/usage?ns=' + encodeURIComponent(id), text: 'Usage of this namespace' })),
        search,
        tableWrap('Keys', table),
        el('nav', { class: 'pager', 'aria-label': 'Key pages' }, first, prev, next, renderInfo)),
      el('section', { 'aria-labelledby': 'put-h' },
        el('h3', { id: 'put-h', text: 'Put a key' }), putForm));

    // Cursor paging: cursors[i] starts page i.
    let cursors = [''];
    let page = 0;
    let more = false;
    let current = prefix;

    async function load() {
      const q = new URLSearchParams({ limit: limit.value });
      if (current) q.set('prefix', current);
      if (cursors[page]) q.set('cursor', cursors[page]);
      caption.textContent = 'Loading…';
      let body;
      try {
        body = await apiJSON('GET', nsPath(id) + '/keys?' + q);
      } catch (e) {
        if (seq === viewSeq) {
          caption.textContent = 'Could not list keys.';
          showError(e.message);
        }
        return;
      }
      if (seq !== viewSeq) return;
      const t0 = performance.now();
      // One fragment, text nodes only: a page of 1,000 keys is one insertion.
      const frag = document.createDocumentFragment();
      const base = '#/ns/' + encodeURIComponent(id) + '/key/';
      for (const k of body.data) {
        const tr = document.createElement('tr');
        const td1 = document.createElement('td');
        td1.className = 'key';
        const a = document.createElement('a');
        a.href = base + encodeURIComponent(k.key);
        a.textContent = k.key;
        td1.append(a);
        const td2 = document.createElement('td');
        td2.className = 'num';
        td2.textContent = fmtInt(k.size_bytes);
        const td3 = document.createElement('td');
        td3.className = 'hide-narrow nowrap';
        td3.textContent = k.updated_at;
        tr.append(td1, td2, td3);
        frag.append(tr);
      }
      tbody.replaceChildren(frag);
      void table.offsetHeight; // include layout in the measurement
      const ms = performance.now() - t0;
      debug.lastRender = { keys: body.data.length, ms };
      more = body.meta.has_more;
      if (more) cursors[page + 1] = body.meta.cursor;
      const n = body.data.length;
      caption.textContent = n === 0
        ? (current ? `No keys start with “${current}”.` : 'No keys yet.')
        : `Page ${page + 1}: ${fmtInt(n)} key${n === 1 ? '' : 's'}${current ? ` starting with “${current}”` : ''}${more ? ', more follow' : ''}`;
      renderInfo.textContent = `Rendered ${fmtInt(n)} rows in ${ms.toFixed(1)} ms`;
      first.disabled = prev.disabled = page === 0;
      next.disabled = !more;
    }

    search.addEventListener('submit', (ev) => {
      ev.preventDefault();
      showError('');
      current = prefixInput.value;
      cursors = [''];
      page = 0;
      history.replaceState(null, '', '#/ns/' + encodeURIComponent(id) + (current ? '?prefix=' + encodeURIComponent(current) : ''));
      load();
    });
    limit.addEventListener('change', () => { cursors = ['']; page = 0; load(); });
    first.addEventListener('click', () => { page = 0; load(); });
    prev.addEventListener('click', () => { if (page > 0) { page--; load(); } });
    next.addEventListener('click', () => { if (more) { page++; load(); } });

    putForm.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      showError('');
      const key = newKey.value;
      const file = newFile.files && newFile.files[0];
      if (file && file.size > MAX_VALUE) {
        showError(`The file is ${fmtInt(file.size)} bytes; a value is at most ${fmtInt(MAX_VALUE)} bytes (1 MiB).`);
        return;
      }
      const ttl = newTTL.value.trim();
      const headers = { 'Content-Type': file ? (file.type || 'application/octet-stream') : (newType.value.trim() || 'application/octet-stream') };
      let res;
      try {
        res = await api('PUT', keyPath(id, key) + (ttl ? '?ttl_secs=' + encodeURIComponent(ttl) : ''), { body: file || newValue.value, headers });
      } catch (e) {
        showError(e.message);
        newKey.focus();
        return;
      }
      say(`Saved ${key} (${res.status === 201 ? 'created' : 'replaced'}).`);
      newKey.value = '';
      newValue.value = '';
      newFile.value = '';
      newTTL.value = '';
      cursors = [''];
      page = 0;
      load();
    });

    await load();
  }

  // ---- one key

  function hexDump(bytes) {
    const n = Math.min(bytes.length, HEX_LIMIT);
    const lines = [];
    const hex = (b) => (b < 16 ? '0' : '') + b.toString(16);
    for (let off = 0; off < n; off += 16) {
      const row = bytes.subarray(off, Math.min(off + 16, n));
      let h = '';
      let a = '';
      for (let i = 0; i < 16; i++) {
        if (i < row.length) {
          h += hex(row[i]) + ' ';
          a += row[i] >= 0x20 && row[i] < 0x7f ? String.fromCharCode(row[i]) : '.';
        } else h += '   ';
        if (i === 7) h += ' ';
      }
      lines.push(off.toString(16).padStart(8, '0') + '  ' + h + ' |' + a + '|');
    }
    return lines.join('\n');
  }

  async function viewKey(id, key) {
    const seq = viewSeq;
    const crumbs = (nsName) => breadcrumb({ href: '#/namespaces', text: 'Namespaces' },
      { href: '#/ns/' + encodeURIComponent(id), text: nsName }, { text: key });
    let ns;
    let res;
    try {
      ns = await namespaceOf(id);
      res = await api('GET', keyPath(id, key));
    } catch (e) {
      if (seq !== viewSeq) return;
      setView('Key', crumbs(ns ? ns.name : id), el('h2', {}, 'Key ', el('code', { text: key })));
      showError(e.message);
      return;
    }
    const bytes = new Uint8Array(await res.arrayBuffer());
    if (seq !== viewSeq) return;
    const h = (name) => res.headers.get(name);
    const etag = h('ETag');
    const contentType = h('Content-Type') || '';
    let text = null;
    try { text = new TextDecoder('utf-8', { fatal: true }).decode(bytes); } catch (_) { /* binary */ }
    let json;
    let isJSON = false;
    if (text !== null && text.trim() !== '') {
      try { json = JSON.parse(text); isJSON = true; } catch (_) { /* not JSON */ }
    }

    const meta = el('dl', { class: 'meta', id: 'key-meta' });
    const addMeta = (label, value, idName) => meta.append(el('dt', { text: label }), el('dd', { id: idName, text: dash(value) }));
    addMeta('Size', h('Content-Length') !== null ? `${fmtInt(h('Content-Length'))} bytes` : `${fmtInt(bytes.length)} bytes`, 'meta-size');
    addMeta('Content type', contentType, 'meta-type');
    addMeta('Updated', h('Kv-Updated-At'), 'meta-updated');
    addMeta('Expires', h('Kv-Expires-At'), 'meta-expires');
    addMeta('ETag', etag, 'meta-etag');

    const pre = el('pre', { class: 'value', id: 'value', tabindex: '0', 'aria-label': 'Value' });
    const note = el('p', { class: 'hint', id: 'view-note' });
    const modes = [
      ['text', 'Text', text !== null, 'not valid UTF-8'],
      ['json', 'JSON', isJSON, 'not valid JSON'],
      ['hex', 'Hex', true, ''],
    ];
    const show = (mode) => {
      pre.classList.toggle('hex', mode === 'hex');
      if (mode === 'json') {
        pre.textContent = JSON.stringify(json, null, 2);
        note.textContent = 'Pretty-printed JSON. Numbers beyond 2^53 lose precision in this view; the stored bytes do not change.';
      } else if (mode === 'text') {
        pre.textContent = text;
        note.textContent = bytes.length === 0 ? 'The value is empty.' : '';
      } else {
        pre.textContent = hexDump(bytes);
        note.textContent = bytes.length > HEX_LIMIT ? `Showing the first ${fmtInt(HEX_LIMIT)} of ${fmtInt(bytes.length)} bytes.` : '';
      }
      debug.valueMode = mode;
    };
    const initial = isJSON && /json/i.test(contentType) ? 'json' : (text !== null ? 'text' : 'hex');
    const radios = modes.map(([mode, label, ok, why]) => {
      const input = el('input', { type: 'radio', name: 'view-mode', id: 'mode-' + mode, value: mode, disabled: !ok, checked: mode === initial });
      input.addEventListener('change', () => { if (input.checked) show(mode); });
      return el('label', { for: 'mode-' + mode }, input, ' ' + label + (ok ? '' : ` (${why})`));
    });
    const modeSet = el('fieldset', {}, el('legend', { text: 'Show the value as' }), ...radios);

    // Editing.
    const conflict = el('div', { class: 'conflict', id: 'conflict', role: 'alert', hidden: true });
    const editType = el('input', { id: 'edit-type', type: 'text', autocomplete: 'off', value: contentType });
    const editTTL = el('input', { id: 'edit-ttl', type: 'number', min: '1', step: '1', inputmode: 'numeric' });
    const editValue = el('textarea', { id: 'edit-value', spellcheck: 'false', disabled: text === null });
    editValue.value = text !== null ? text : '';
    const editFile = el('input', { id: 'edit-file', type: 'file' });
    const save = el('button', { type: 'submit', id: 'save-key', text: 'Save' });
    const editForm = el('form', { class: 'stacked', novalidate: true, 'aria-labelledby': 'edit-h' },
      field('Content type', editType),
      field('Expires after (seconds)', editTTL, 'Empty: the key will never expire (a write without a TTL makes the key permanent).'),
      field('Value', editValue, text === null ? 'This value is binary: replace it with a file below.' : (etag ? 'Saved only if the key has not changed since it was loaded (If-Match).' : '')),
      field('Or replace it with a file', editFile, 'Its bytes are stored as they are, with the file’s type (up to 1 MiB).'),
      el('div', {}, save));
    const del = el('button', { type: 'button', class: 'danger', id: 'delete-key', text: 'Delete key' });

    const reload = () => { if (seq === viewSeq) route(); };
    editForm.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      showError('');
      conflict.hidden = true;
      const file = editFile.files && editFile.files[0];
      if (file && file.size > MAX_VALUE) {
        showError(`The file is ${fmtInt(file.size)} bytes; a value is at most ${fmtInt(MAX_VALUE)} bytes (1 MiB).`);
        return;
      }
      if (!file && text === null) {
        showError('Choose a file: a binary value cannot be edited as text.');
        return;
      }
      const headers = { 'Content-Type': file ? (file.type || 'application/octet-stream') : (editType.value.trim() || 'application/octet-stream') };
      if (etag) headers['If-Match'] = etag;
      const ttl = editTTL.value.trim();
      try {
        await api('PUT', keyPath(id, key) + (ttl ? '?ttl_secs=' + encodeURIComponent(ttl) : ''), { body: file || editValue.value, headers });
      } catch (e) {
        if (e.status === 412) {
          conflict.replaceChildren(
            el('p', { text: 'This key changed since it was loaded, so it was not saved: ' + e.message }),
            el('p', { text: 'Reload to see the current value (your edit here will be lost), or copy your edit first.' }),
            el('button', { type: 'button', id: 'reload-key', text: 'Reload the key', onclick: reload }));
          conflict.hidden = false;
          conflict.querySelector('button').focus();
          return;
        }
        showError(e.message);
        return;
      }
      flash = `Saved ${key}.`;
      reload();
    });
    del.addEventListener('click', async () => {
      const yes = await confirmDialog('Delete key?', `Delete key “${key}” from namespace “${ns.name}”?`, 'Delete key');
      if (!yes) return;
      try {
        await api('DELETE', keyPath(id, key));
      } catch (e) {
        showError(e.message);
        return;
      }
      flash = `Deleted ${key}.`;
      go('#/ns/' + encodeURIComponent(id));
    });

    setView('Key ' + key, crumbs(ns.name),
      el('section', { 'aria-labelledby': 'key-h' },
        el('h2', { id: 'key-h' }, 'Key ', el('code', { text: key })),
        meta, modeSet, note, pre),
      el('section', { 'aria-labelledby': 'edit-h' },
        el('h3', { id: 'edit-h', text: 'Edit' }), conflict, editForm),
      el('section', { 'aria-labelledby': 'danger-h' },
        el('h3', { id: 'danger-h', text: 'Delete' }), del));
    show(initial);
  }

  // ---- usage and bill

  function destroyCharts() {
    for (const c of Object.values(debug.charts)) c.destroy();
    debug.charts = {};
  }

  function monthOf(d) { return d.toISOString().slice(0, 7); }
  function shiftMonth(m, by) {
    const [y, mo] = m.split('-').map(Number);
    return monthOf(new Date(Date.UTC(y, mo - 1 + by, 1)));
  }

  const SERIES = [
    ['reads', 'Reads', '#1f77b4'],
    ['writes', 'Writes', '#d62728'],
    ['deletes', 'Deletes', '#9467bd'],
    ['lists', 'Lists', '#2ca02c'],
  ];

  function chartWidth(box) { return Math.max(260, box.clientWidth - 4); }

  function drawCharts(days, opsBox, bytesBox) {
    destroyCharts();
    if (typeof uPlot === 'undefined') {
      opsBox.textContent = 'The chart library did not load.';
      return;
    }
    const xs = days.map((d) => Date.parse(d.date + 'T00:00:00Z') / 1000);
    const tzDate = (ts) => uPlot.tzDate(new Date(ts * 1000), 'Etc/UTC');
    const dayLabel = (u, v) => (v === null ? '—' : new Date(v * 1000).toISOString().slice(0, 10));
    const common = (box) => ({ width: chartWidth(box), height: 240, tzDate, scales: { x: { time: true } } });
    // Ticks on whole days (UTC), labelled MM-DD.
    const xAxis = {
      space: 48,
      incrs: [86400, 2 * 86400, 7 * 86400, 14 * 86400],
      values: (u, vals) => vals.map((v) => new Date(v * 1000).toISOString().slice(5, 10)),
    };
    debug.charts.ops = new uPlot({
      ...common(opsBox),
      series: [{ label: 'Day', value: dayLabel },
        ...SERIES.map(([, label, color]) => ({ label, stroke: color, width: 2, points: { show: true, size: 5, fill: color } }))],
      axes: [xAxis, { label: 'operations', values: (u, vals) => vals.map((v) => fmtInt(v)) }],
    }, [xs, ...SERIES.map(([k]) => days.map((d) => d[k]))], opsBox);
    debug.charts.bytes = new uPlot({
      ...common(bytesBox),
      series: [{ label: 'Day', value: dayLabel },
        { label: 'Stored at the day’s end', stroke: '#ff7f0e', fill: 'rgba(255,127,14,0.15)', width: 2, points: { show: true, size: 5, fill: '#ff7f0e' }, value: (u, v) => (v === null ? '—' : fmtBytes(v)) }],
      axes: [xAxis, { label: 'bytes', size: 70, values: (u, vals) => vals.map((v) => fmtBytes(v)) }],
    }, [xs, days.map((d) => d.stored_bytes)], bytesBox);
  }

  async function viewUsage(month, nsID) {
    const seq = viewSeq;
    const now = monthOf(new Date());
    if (!/^\d{4}-\d{2}$/.test(month)) month = now;
    const monthInput = el('input', { id: 'usage-month', type: 'month', value: month, max: now });
    const nsSelect = el('select', { id: 'usage-ns' }, el('option', { value: '', text: 'All namespaces, with the bill' }));
    const form = el('form', { novalidate: true, 'aria-label': 'Choose the month' },
      field('Month', monthInput), field('Namespace', nsSelect),
      el('button', { type: 'submit', id: 'show-usage', text: 'Show' }),
      el('button', { type: 'button', class: 'secondary', id: 'usage-prev', text: 'Previous month', onclick: () => go(usageHash(shiftMonth(month, -1), nsSelect.value)) }),
      el('button', { type: 'button', class: 'secondary', id: 'usage-next', text: 'Next month', disabled: month >= now, onclick: () => go(usageHash(shiftMonth(month, 1), nsSelect.value)) }));
    const body = el('div', { id: 'usage-body' }, el('p', { text: 'Loading…' }));
    setView('Usage ' + month, el('section', { 'aria-labelledby': 'usage-h' },
      el('h2', { id: 'usage-h', text: 'Usage and bill' }), form, body));
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      go(usageHash(monthInput.value || now, nsSelect.value));
    });

    let rep;
    let names = new Map();
    try {
      const [u, list] = await Promise.all([
        apiJSON('GET', (nsID ? nsPath(nsID) : '') + '/usage?month=' + encodeURIComponent(month) + '&granularity=day'),
        apiJSON('GET', '?page[size]=250').catch(() => ({ data: [] })),
      ]);
      rep = u.data;
      names = new Map(list.data.map((n) => [n.id, n.name]));
    } catch (e) {
      if (seq === viewSeq) {
        body.replaceChildren();
        showError(e.message);
      }
      return;
    }
    if (seq !== viewSeq) return;
    for (const [id, name] of names) nsSelect.append(el('option', { value: id, text: name, selected: id === nsID }));
    if (nsID && !names.has(nsID)) nsSelect.append(el('option', { value: nsID, text: nsID, selected: true }));

    const figure = (label, value, title) => el('div', {}, el('dt', { text: label }), el('dd', { title, text: value }));
    const scope = nsID ? `Namespace ${names.get(nsID) || nsID}` : 'All namespaces';
    const days = rep.days || [];
    const opsBox = el('div', { class: 'chart-box', id: 'ops-chart' });
    const bytesBox = el('div', { class: 'chart-box', id: 'bytes-chart' });
    const total = (k) => days.reduce((s, d) => s + d[k], 0);
    const nodes = [
      el('p', { id: 'usage-period' }, `${scope}, ${rep.month}: from ${rep.period_start} to ${rep.period_end} (UTC).`),
      el('dl', { class: 'figures', id: 'usage-figures' },
        figure('Reads', fmtInt(rep.reads)), figure('Writes', fmtInt(rep.writes)),
        figure('Deletes', fmtInt(rep.deletes)), figure('Lists', fmtInt(rep.lists)),
        figure('Storage', rep.storage_gb_months + ' GB-months', rep.storage_byte_seconds + ' byte-seconds'),
        figure('Stored now', fmtBytes(rep.stored_bytes), fmtInt(rep.stored_bytes) + ' bytes')),
      el('div', { class: 'charts' },
        el('figure', { class: 'chart', 'aria-labelledby': 'ops-caption', 'aria-describedby': 'ops-summary' },
          el('figcaption', { id: 'ops-caption', text: 'Operations per day' }),
          el('p', { class: 'visually-hidden', id: 'ops-summary', text: `${days.length} days: ${fmtInt(total('reads'))} reads, ${fmtInt(total('writes'))} writes, ${fmtInt(total('deletes'))} deletes, ${fmtInt(total('lists'))} lists. The table of days below has each figure.` }),
          opsBox),
        el('figure', { class: 'chart', 'aria-labelledby': 'bytes-caption', 'aria-describedby': 'bytes-summary' },
          el('figcaption', { id: 'bytes-caption', text: 'Stored bytes at the end of each day' }),
          el('p', { class: 'visually-hidden', id: 'bytes-summary', text: `Stored now: ${fmtInt(rep.stored_bytes)} bytes. The table of days below has each day’s figure.` }),
          bytesBox)),
    ];
    if (rep.bill) {
      // The API's figures as they are; whole numbers get separators.
      const q = (v) => (/^\d+$/.test(v) ? fmtInt(v) : v);
      const lines = rep.bill.lines.map((l) => el('tr', {},
        el('th', { scope: 'row', text: l.resource }),
        el('td', { class: 'num', text: q(l.quantity) }), el('td', { class: 'num hide-narrow', text: q(l.free) }),
        el('td', { class: 'num', text: q(l.billable) }),
        el('td', { class: 'num hide-narrow', text: `$${l.unit_price} per ${fmtInt(l.per_units)} ${l.unit}` }),
        el('td', { class: 'num', text: '$' + l.amount })));
      nodes.push(el('h3', { id: 'bill-h', text: 'Bill' }), tableWrap('Bill', el('table', { id: 'bill' },
        el('caption', { text: `As the API computes it: the free tier first, each line rounded to the cent (${rep.bill.currency}).` }),
        el('thead', {}, el('tr', {}, el('th', { scope: 'col', text: 'Resource' }), el('th', { scope: 'col', class: 'num', text: 'Quantity' }),
          el('th', { scope: 'col', class: 'num hide-narrow', text: 'Free' }), el('th', { scope: 'col', class: 'num', text: 'Billable' }),
          el('th', { scope: 'col', class: 'num hide-narrow', text: 'Price' }), el('th', { scope: 'col', class: 'num', text: 'Amount' }))),
        el('tbody', {}, ...lines),
        el('tfoot', {}, el('tr', {}, el('th', { scope: 'row', text: 'Total' }), el('td', { colspan: '4', class: 'hide-narrow' }),
          el('td', { class: 'num', id: 'bill-total', text: '$' + rep.bill.total }))))));
    }
    if (rep.namespaces) {
      const rows = rep.namespaces.map((n) => el('tr', {},
        el('th', { scope: 'row' }, n.name ? el('a', { href: usageHash(month, n.id), text: n.name }) : el('span', { text: '(deleted) ' + n.id })),
        el('td', { class: 'num', text: fmtInt(n.reads) }), el('td', { class: 'num', text: fmtInt(n.writes) }),
        el('td', { class: 'num', text: fmtInt(n.deletes) }), el('td', { class: 'num', text: fmtInt(n.lists) }),
        el('td', { class: 'num hide-narrow', text: n.storage_gb_months }),
        el('td', { class: 'num', title: fmtInt(n.stored_bytes) + ' bytes', text: fmtBytes(n.stored_bytes) })));
      nodes.push(el('h3', { text: 'By namespace' }), tableWrap('Usage by namespace', el('table', { id: 'usage-namespaces' },
        el('caption', { text: rows.length ? 'Namespaces with usage this month, deleted ones included.' : 'No namespace has usage this month.' }),
        el('thead', {}, el('tr', {}, ...['Namespace', 'Reads', 'Writes', 'Deletes', 'Lists', 'GB-months', 'Stored'].map((c, i) =>
          el('th', { scope: 'col', class: i === 0 ? '' : (i === 5 ? 'num hide-narrow' : 'num'), text: c })))),
        el('tbody', {}, ...rows))));
    }
    const dayRows = days.map((d) => el('tr', {},
      el('th', { scope: 'row', class: 'nowrap', text: d.date }),
      el('td', { class: 'num', text: fmtInt(d.reads) }), el('td', { class: 'num', text: fmtInt(d.writes) }),
      el('td', { class: 'num', text: fmtInt(d.deletes) }), el('td', { class: 'num', text: fmtInt(d.lists) }),
      el('td', { class: 'num hide-narrow', text: d.storage_byte_seconds }),
      el('td', { class: 'num', text: fmtInt(d.stored_bytes) })));
    nodes.push(el('h3', { text: 'By day' }), tableWrap('Usage by day', el('table', { id: 'usage-days' },
      el('caption', { text: 'Each UTC day of the month so far; the days add up to the month.' }),
      el('thead', {}, el('tr', {}, ...['Day', 'Reads', 'Writes', 'Deletes', 'Lists', 'Byte-seconds', 'Stored bytes at its end'].map((c, i) =>
        el('th', { scope: 'col', class: i === 0 ? '' : (i === 5 ? 'num hide-narrow' : 'num'), text: c })))),
      el('tbody', {}, ...dayRows))));
    body.replaceChildren(...nodes);
    if (days.length) drawCharts(days, opsBox, bytesBox);
    else opsBox.textContent = bytesBox.textContent = 'No days in this period.';
  }

  function usageHash(month, nsID) {
    return '#/usage/' + month + (nsID ? '?ns=' + encodeURIComponent(nsID) : '');
  }

  let resizeTimer = 0;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      for (const [name, c] of Object.entries(debug.charts)) {
        const box = $(name === 'ops' ? 'ops-chart' : 'bytes-chart');
        if (box) c.setSize({ width: chartWidth(box), height: 240 });
      }
    }, 100);
  });

  // ---- start

  $('logout').addEventListener('click', () => { flash = 'Logged out.'; logout(''); });
  $('skip-link').addEventListener('click', (ev) => {
    ev.preventDefault(); // keep the route in the hash
    $('main').focus();
  });
  window.addEventListener('hashchange', () => route());
  route();
})();
