// Hearth web client: a plain ES module, no dependencies, no build step.
// Protocol: docs/protocol.md (websocket /ws, subprotocol hearth.v1.json, HTTP /api).

const MAX_TEXT = 4000;
const TYPING_EVERY = 2000; // ms between our own `typing` commands
const TYPING_SHOW = 4000; // ms an "X is typing…" line stays up
const BACKOFF_MIN = 500;
const BACKOFF_MAX = 15000;
const STABLE_AFTER = 10000; // a connection up this long resets the backoff
const STAFF = new Set(['facilitator', 'clinician', 'admin']);
const TOKEN_KEY = 'hearth.token';

const $ = (id) => document.getElementById(id);

const S = {
  token: sessionStorage.getItem(TOKEN_KEY),
  user: null, // the account: shown to its owner only
  me: null, // our member card in the open room's community: what the others see of us
  ws: null,
  nextId: 1,
  calls: new Map(), // command id -> {resolve, reject}
  connected: false, // authenticated on the current socket
  stopped: true, // no reconnecting (signed out, or a fatal close)
  attempt: 0,
  retryTimer: null,
  liveSince: 0,
  room: null, // {id, name, kind}
  loaded: false, // history loaded for this room, so a rejoin can resume with `since`
  lastSeq: 0,
  buffer: null, // live durable events held back while join/history is in flight
  msgs: new Map(), // seq -> message model
  reacts: new Map(), // target seq -> Map(emoji -> Set(member id))
  pending: new Map(), // client_id -> {client_id, room, text, acked, inflight, li}
  presence: new Map(),
  typers: new Map(),
  lastTyping: 0,
};

// ---------- small helpers ----------

// Build an element. Strings become text nodes, so user data never becomes markup.
function h(tag, props = {}, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v == null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const kid of kids) if (kid != null && kid !== false) el.append(kid);
  return el;
}

function newClientId(prefix) {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return `${prefix}-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}

const charCount = (text) => [...text.normalize('NFC')].length; // the server counts code points after NFC
const snippet = (text = '', n = 60) => ([...text].length > n ? `${[...text].slice(0, n).join('')}…` : text);

function fmtTime(ts) {
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return '';
  const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  if (d.toDateString() === new Date().toDateString()) return time;
  return `${d.toLocaleDateString([], { month: 'short', day: 'numeric' })}, ${time}`;
}

function describe(err) {
  if (!err) return 'Something went wrong.';
  if (typeof err === 'string') return err;
  const msg = err.message || 'Something went wrong.';
  if (err.code === 'rate_limited' && err.retry_after) return `${msg} Try again in ${Math.ceil(err.retry_after)} s.`;
  return msg;
}

let errorTimer = null;
function showError(err) {
  const el = $('error');
  el.textContent = describe(err);
  el.hidden = false;
  clearTimeout(errorTimer);
  errorTimer = setTimeout(() => { el.hidden = true; }, 8000);
}

function setStatus(text, state) {
  const el = $('conn');
  el.textContent = text;
  el.dataset.state = state;
}

function show(view) {
  for (const id of ['signin', 'rooms', 'room', 'agreement']) $(id).hidden = id !== view;
  $('signout').hidden = view === 'signin';
}

// ---------- HTTP ----------

async function api(method, path, body) {
  const headers = {};
  if (body) headers['Content-Type'] = 'application/json';
  if (S.token) headers.Authorization = `Bearer ${S.token}`;
  let res;
  try {
    res = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined });
  } catch {
    throw { code: 'network', message: 'Cannot reach Hearth. Check your connection.' };
  }
  let data = {};
  try { data = await res.json(); } catch { /* not JSON */ }
  if (!res.ok) {
    const err = data.error || { code: 'http', message: `Request failed (${res.status}).` };
    if (res.status === 429 && !err.retry_after) err.retry_after = Number(res.headers.get('Retry-After')) || 1;
    err.status = res.status;
    throw err;
  }
  return data;
}

// ---------- sign in / sign up / sign out ----------

let signupMode = false;
function setMode(signup) {
  signupMode = signup;
  for (const el of document.querySelectorAll('.signup-only')) {
    el.hidden = !signup;
    for (const input of el.querySelectorAll('input, select')) input.disabled = !signup;
  }
  $('auth-title').textContent = signup ? 'Create an account' : 'Sign in';
  $('auth-submit').textContent = signup ? 'Create account' : 'Sign in';
  $('auth-toggle').textContent = signup ? 'I already have an account' : 'New here? Create an account';
  $('password').autocomplete = signup ? 'new-password' : 'current-password';
  $('password').minLength = signup ? 8 : 0;
  $('username').minLength = signup ? 3 : 0;
  $('auth-error').textContent = '';
}

async function onAuthSubmit(e) {
  e.preventDefault();
  const form = new FormData(e.target);
  const body = { username: form.get('username').trim().toLowerCase(), password: form.get('password') };
  if (signupMode) Object.assign(body, { display_name: form.get('display_name').trim(), role: form.get('role') });
  $('auth-submit').disabled = true;
  $('auth-error').textContent = '';
  try {
    const data = await api('POST', signupMode ? '/api/signup' : '/api/login', body);
    S.token = data.token;
    S.user = data.user;
    sessionStorage.setItem(TOKEN_KEY, data.token);
    e.target.reset();
    setMode(false);
    enter();
  } catch (err) {
    $('auth-error').textContent = describe(err);
  } finally {
    $('auth-submit').disabled = false;
  }
}

function enter() {
  S.stopped = false;
  S.attempt = 0;
  show('rooms');
  connect();
  loadRooms();
}

async function signOut(message = '', revoke = false) {
  if (revoke && S.token) api('POST', '/api/logout').catch(() => {});
  S.stopped = true;
  clearTimeout(S.retryTimer);
  const ws = S.ws;
  S.ws = null;
  S.connected = false;
  dropCalls();
  if (ws) ws.close(1000);
  S.token = null;
  S.user = null;
  sessionStorage.removeItem(TOKEN_KEY);
  S.room = null;
  resetRoom();
  setStatus('Signed out', 'off');
  show('signin');
  $('auth-error').textContent = message;
}

// ---------- rooms ----------

async function loadRooms() {
  const list = $('room-list');
  try {
    const [{ rooms }, { communities }] = await Promise.all([api('GET', '/api/rooms'), api('GET', '/api/communities')]);
    const names = new Map(communities.map((c) => [c.id, c.name]));
    list.replaceChildren(...(rooms.length ? rooms.map((r) => h('li', {},
      h('button', { type: 'button', class: 'room-btn', onclick: () => openRoom(r) },
        h('span', { class: 'room-name', text: r.name }),
        h('span', { class: 'room-kind', text: `${r.kind === 'group' ? 'Group' : 'Drop-in'} · ${names.get(r.community) || ''}` }))))
      : [h('li', { class: 'muted', text: 'No rooms yet. Join a community below to see its rooms.' })]));
    renderCommunities(communities);
  } catch (err) {
    if (err.status === 401) return signOut('Please sign in again.');
    showError(err);
  }
}

// A community: you are in it under the name shown, or you choose the name others will see.
function renderCommunities(communities) {
  $('community-list').replaceChildren(...communities.map((c) => {
    if (c.member) return h('li', { class: 'community', text: `${c.name}: you are “${c.member.name}” here.` });
    if (c.join !== 'open') return h('li', { class: 'community muted', text: `${c.name}: by invitation.` });
    const id = `name-${c.id}`;
    const form = h('form', { class: 'stack community', onsubmit: (e) => joinCommunity(e, c) },
      h('label', { for: id, text: `${c.name}: the name others will see here` }),
      h('input', { id, name: 'display_name', maxlength: 40, required: true, autocomplete: 'nickname' }),
      h('button', { type: 'submit', class: 'primary', text: 'Join this community' }));
    return h('li', {}, form);
  }));
}

async function joinCommunity(e, community) {
  e.preventDefault();
  const name = new FormData(e.target).get('display_name').trim();
  try {
    await api('POST', `/api/communities/${community.id}/members`, { display_name: name });
    loadRooms();
  } catch (err) {
    showError(err);
  }
}

// `join` answered agreement_required: show the text; once agreed, join again.
function askAgreement(agreement) {
  const room = S.room;
  $('agreement-text').textContent = agreement.text;
  show('agreement');
  $('agreement-text').focus();
  $('agreement-accept').onclick = async () => {
    try {
      const body = { version: agreement.version, ...(agreement.room ? { room: agreement.room } : {}) };
      await api('POST', `/api/communities/${agreement.community}/agreement/accept`, body);
      if (S.room !== room) return;
      show('room');
      if (S.connected) joinRoom();
    } catch (err) {
      showError(err);
    }
  };
  $('agreement-back').onclick = () => leaveRoom();
}

function openRoom(room) {
  S.room = { ...room };
  resetRoom();
  $('room-name').textContent = room.name;
  show('room');
  if (S.connected) joinRoom();
}

function leaveRoom() {
  if (S.room && S.connected) call('leave', { room: S.room.id }).catch(() => {});
  S.room = null;
  resetRoom();
  show('rooms');
  loadRooms();
}

function resetRoom() {
  S.me = null;
  S.loaded = false;
  S.buffer = null;
  S.pending.clear();
  S.presence.clear();
  clearMessages();
  clearTypers();
  renderPresence();
  $('messages').replaceChildren();
}

function clearMessages() {
  S.lastSeq = 0;
  S.msgs.clear();
  S.reacts.clear();
  for (const li of [...$('messages').children]) if (!li.classList.contains('queued')) li.remove();
}

// Join the open room: first visit = join + history(50); after a reconnect = join with `since`.
async function joinRoom() {
  const room = S.room;
  const resume = S.loaded;
  const list = $('messages');
  S.buffer = [];
  list.setAttribute('aria-busy', 'true');
  try {
    const res = await call('join', resume ? { room: room.id, since: S.lastSeq } : { room: room.id });
    if (S.room !== room) return;
    Object.assign(room, res.room);
    S.me = res.member; // who we are in this room's community: our own `from`, presence and typing card
    $('room-name').textContent = room.name;
    setPresence(res.presence);
    if (resume && res.recovered) {
      res.events.forEach(applyEvent);
    } else {
      const hist = await call('history', { room: room.id, limit: 50 });
      if (S.room !== room) return;
      clearMessages();
      hist.events.forEach(applyEvent);
    }
    S.lastSeq = Math.max(S.lastSeq, res.seq);
    const held = S.buffer;
    S.buffer = null;
    held.forEach(applyEvent);
    S.loaded = true;
    scrollDown();
    for (const p of S.pending.values()) if (!p.acked) trySend(p);
  } catch (err) {
    if (S.room === room) S.buffer = null;
    if (err.code === 'agreement_required' && S.room === room) askAgreement(err.agreement);
    else if (err.code !== 'disconnected') showError(err);
  } finally {
    list.removeAttribute('aria-busy');
  }
}

// ---------- websocket ----------

function wsUrl() {
  return `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/ws`;
}

function connect() {
  clearTimeout(S.retryTimer);
  S.retryTimer = null;
  if (S.stopped || !S.token) return;
  setStatus(S.attempt ? 'Reconnecting…' : 'Connecting…', 'wait');
  let ws;
  try {
    ws = new WebSocket(wsUrl(), 'hearth.v1.json');
  } catch {
    return scheduleReconnect(1006, '');
  }
  S.ws = ws;
  S.nextId = 1;
  S.connected = false;
  S.liveSince = 0;
  ws.onopen = () => {
    if (ws !== S.ws) return;
    call('auth', { token: S.token }).then((res) => {
      S.user = res.user;
      S.connected = true;
      S.liveSince = Date.now();
      setStatus('Connected', 'ok');
      $('me').textContent = `Signed in as ${res.user.name}`;
      if (S.room) joinRoom();
    }, (err) => {
      if (err.code !== 'disconnected') showError(err); // the server closes after a failed auth
    });
  };
  ws.onmessage = (e) => { if (ws === S.ws) onFrame(e.data); };
  ws.onclose = (e) => { if (ws === S.ws) onClose(e); };
}

function call(op, args = {}) {
  return new Promise((resolve, reject) => {
    const ws = S.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      reject({ code: 'disconnected', message: 'Not connected.' });
      return;
    }
    const id = S.nextId++;
    S.calls.set(id, { resolve, reject });
    ws.send(JSON.stringify({ id, op, ...args }));
  });
}

function dropCalls() {
  const calls = [...S.calls.values()];
  S.calls.clear();
  for (const c of calls) c.reject({ code: 'disconnected', message: 'Connection lost.' });
}

function onFrame(data) {
  let frame;
  try { frame = JSON.parse(data); } catch { return; }
  if (!frame || typeof frame !== 'object') return;
  if (typeof frame.ev === 'string') return onEvent(frame);
  const c = S.calls.get(frame.id);
  if (!c) {
    if (frame.error) showError(frame.error);
    return;
  }
  S.calls.delete(frame.id);
  if (frame.error) c.reject(frame.error);
  else c.resolve(frame.result);
}

function onClose(e) {
  S.ws = null;
  S.connected = false;
  dropCalls();
  clearTypers();
  for (const p of S.pending.values()) p.inflight = false;
  if (e.code === 4401) return signOut('Your session has ended. Please sign in again.');
  if (e.code === 4400 || e.code === 4403) {
    S.stopped = true;
    setStatus('Disconnected', 'off');
    showError(e.code === 4403 ? 'You can no longer take part here.' : `The connection was refused (${e.code}). Reload the page to try again.`);
    return;
  }
  if (S.liveSince && Date.now() - S.liveSince > STABLE_AFTER) S.attempt = 0;
  scheduleReconnect(e.code, e.reason);
}

function scheduleReconnect(code, reason) {
  if (S.stopped) return;
  const base = Math.min(BACKOFF_MAX, BACKOFF_MIN * 2 ** S.attempt);
  let delay = base / 2 + Math.random() * (base / 2); // jitter: 50–100 % of the step
  if (code === 1012 && reason !== 'try again' && S.attempt === 0) delay = Math.random() * 250; // worker restart
  if (code === 4429) delay = Math.max(delay, 5000); // rate limit: pause
  S.attempt += 1;
  setStatus('Reconnecting…', 'wait');
  S.retryTimer = setTimeout(connect, delay);
}

// ---------- events ----------

function onEvent(ev) {
  if (!S.room || ev.room !== S.room.id) return;
  if (ev.ev === 'presence') {
    for (const u of ev.joined || []) S.presence.set(u.id, u);
    for (const u of ev.left || []) S.presence.delete(u.id);
    renderPresence();
  } else if (ev.ev === 'typing') {
    if (ev.user && ev.user.id !== S.me?.id) showTyping(ev.user);
  } else if (typeof ev.seq === 'number') {
    if (S.buffer) S.buffer.push(ev);
    else applyEvent(ev);
  }
}

// Durable events, applied once each, in seq order.
function applyEvent(ev) {
  if (typeof ev.seq !== 'number' || ev.seq <= S.lastSeq) return;
  S.lastSeq = ev.seq;
  if (ev.ev === 'message') return addMessage(ev);
  const m = S.msgs.get(ev.target);
  if (ev.ev === 'edit' && m && !m.deleted && ev.seq > (m.edit_seq || 0)) {
    Object.assign(m, { text: ev.text, edited: true, edit_seq: ev.seq });
  }
  else if (ev.ev === 'delete' && m) Object.assign(m, { deleted: true, text: undefined });
  else if (ev.ev === 'reaction') foldReaction(ev);
  if (m) renderMessage(m);
}

function foldReaction(ev) {
  let byEmoji = S.reacts.get(ev.target);
  if (!byEmoji) S.reacts.set(ev.target, (byEmoji = new Map()));
  let users = byEmoji.get(ev.emoji);
  if (!users) byEmoji.set(ev.emoji, (users = new Set()));
  if (ev.remove) users.delete(ev.from?.id);
  else users.add(ev.from?.id);
}

function addMessage(ev) {
  const m = { ...ev, li: h('li') };
  S.msgs.set(ev.seq, m);
  const p = ev.client_id && ev.from?.id === S.me?.id ? S.pending.get(ev.client_id) : null;
  if (p) {
    p.li.remove();
    S.pending.delete(ev.client_id);
  }
  if (S.typers.has(ev.from?.id)) {
    clearTimeout(S.typers.get(ev.from.id).timer);
    S.typers.delete(ev.from.id);
    renderTyping();
  }
  renderMessage(m);
  const stick = nearBottom() || p;
  const list = $('messages');
  list.insertBefore(m.li, list.querySelector('li.queued')); // own unsent messages stay last
  if (stick) scrollDown();
}

function renderMessage(m) {
  const mine = m.from?.id === S.me?.id;
  m.li.className = `msg${mine ? ' mine' : ''}${m.deleted ? ' deleted' : ''}`;
  const kids = [h('div', { class: 'meta' },
    h('span', { class: 'who', text: mine ? `${m.from.name} (you)` : m.from?.name || 'Someone' }),
    STAFF.has(m.from?.role) ? h('span', { class: 'role', text: m.from.role }) : null,
    h('time', { datetime: m.ts, title: new Date(m.ts).toLocaleString(), text: fmtTime(m.ts) }),
    m.edited && !m.deleted ? h('span', { class: 'edited', text: 'edited' }) : null)];
  const quoted = m.reply_to && S.msgs.get(m.reply_to);
  if (quoted) {
    kids.push(h('p', { class: 'quote', text: `↩ ${quoted.from?.name}: ${quoted.deleted ? 'message deleted' : snippet(quoted.text)}` }));
  }
  kids.push(h('p', { class: 'text', text: m.deleted ? 'message deleted' : m.text ?? '' }));
  if (!m.deleted) kids.push(actionBar(m, mine));
  m.li.replaceChildren(...kids);
}

function actionBar(m, mine) {
  const bar = h('div', { class: 'actions' });
  const byEmoji = S.reacts.get(m.seq) || new Map();
  for (const [emoji, users] of byEmoji) {
    if (!users.size) continue;
    const on = users.has(S.me?.id);
    bar.append(h('button', {
      type: 'button', class: 'chip', 'aria-pressed': String(on),
      'aria-label': `${emoji} ${users.size}${on ? ', tap to remove yours' : ''}`,
      onclick: () => command('react', { target: m.seq, emoji, remove: on }),
    }, `${emoji} ${users.size}`));
  }
  if (!byEmoji.get('💛')?.size) {
    bar.append(h('button', {
      type: 'button', class: 'chip add', 'aria-label': 'React with a heart',
      onclick: () => command('react', { target: m.seq, emoji: '💛', remove: false }),
    }, '+💛'));
  }
  if (mine) {
    bar.append(
      h('button', { type: 'button', class: 'link', onclick: () => editMessage(m) }, 'Edit'),
      h('button', { type: 'button', class: 'link', onclick: () => deleteMessage(m) }, 'Delete'));
  }
  return bar;
}

function editMessage(m) {
  const text = window.prompt('Edit your message', m.text);
  if (text == null || text === m.text || !text.trim()) return;
  if (charCount(text) > MAX_TEXT) return showError(`A message can be at most ${MAX_TEXT} characters.`);
  command('edit', { target: m.seq, text });
}

function deleteMessage(m) {
  if (window.confirm('Delete this message for everyone?')) command('delete', { target: m.seq });
}

// edit / delete / react: a fresh client_id each; not retried across reconnects.
async function command(op, args) {
  if (!S.room) return;
  try {
    await call(op, { room: S.room.id, client_id: newClientId(op[0]), ...args });
  } catch (err) {
    showError(err.code === 'disconnected' ? 'Not connected. Try again in a moment.' : err);
  }
}

// ---------- sending ----------

function sendMessage() {
  const ta = $('composer-text');
  const text = ta.value;
  if (!S.room || !text.trim() || charCount(text) > MAX_TEXT) return;
  const p = { client_id: newClientId('c'), room: S.room.id, text, acked: false, inflight: false, li: h('li') };
  p.li.className = 'msg mine queued sending';
  renderPending(p);
  S.pending.set(p.client_id, p);
  $('messages').append(p.li);
  scrollDown();
  ta.value = '';
  onComposerInput();
  trySend(p);
}

function renderPending(p) {
  p.li.replaceChildren(
    h('div', { class: 'meta' },
      h('span', { class: 'who', text: `${S.me?.name || S.user?.name || 'You'} (you)` }),
      h('span', { class: 'state', text: p.acked ? 'sent' : 'sending…' })),
    h('p', { class: 'text', text: p.text }));
}

async function trySend(p) {
  if (!S.connected || !S.loaded || p.inflight || S.pending.get(p.client_id) !== p) return;
  p.inflight = true;
  try {
    const res = await call('send', { room: p.room, text: p.text, client_id: p.client_id });
    if (S.pending.get(p.client_id) !== p) return; // our own event came first
    p.acked = true;
    p.li.classList.remove('sending');
    if (res.seq <= S.lastSeq) { // the event went by without a match (e.g. after a history reload)
      S.pending.delete(p.client_id);
      if (S.msgs.has(res.seq)) p.li.remove();
      else p.li.classList.remove('queued');
    }
    renderPending(p);
  } catch (err) {
    if (err.code === 'disconnected') return; // resent with the same client_id after the rejoin
    if (err.code === 'rate_limited' || err.code === 'unavailable') {
      setTimeout(() => trySend(p), (err.retry_after || 2) * 1000);
      return;
    }
    S.pending.delete(p.client_id);
    p.li.remove();
    showError(`Your message was not sent: ${describe(err)}`);
    const ta = $('composer-text');
    if (!ta.value) { ta.value = p.text; onComposerInput(); }
  } finally {
    p.inflight = false;
  }
}

function onComposerInput() {
  const ta = $('composer-text');
  const n = charCount(ta.value);
  const count = $('count');
  count.textContent = `${n} / ${MAX_TEXT}`;
  count.classList.toggle('near', n > MAX_TEXT - 200);
  count.classList.toggle('over', n > MAX_TEXT);
  $('send').disabled = n > MAX_TEXT;
  ta.style.height = 'auto';
  ta.style.height = `${Math.min(ta.scrollHeight, 160)}px`;
}

function onComposerTyping() {
  const now = Date.now();
  if (!S.connected || !S.loaded || !$('composer-text').value.trim()) return;
  if (now - S.lastTyping < TYPING_EVERY) return;
  S.lastTyping = now;
  call('typing', { room: S.room.id }).catch(() => {});
}

// ---------- presence and typing ----------

function setPresence(people) {
  S.presence = new Map(people.map((u) => [u.id, u]));
  renderPresence();
}

function renderPresence() {
  const people = [...S.presence.values()];
  $('presence-count').textContent = `${people.length} here`;
  $('presence-list').replaceChildren(...people.map((u) => h('li', {},
    h('span', { text: u.id === S.me?.id ? `${u.name} (you)` : u.name }),
    STAFF.has(u.role) ? h('span', { class: 'role', text: u.role }) : null)));
}

function showTyping(user) {
  const old = S.typers.get(user.id);
  if (old) clearTimeout(old.timer);
  const timer = setTimeout(() => { S.typers.delete(user.id); renderTyping(); }, TYPING_SHOW);
  S.typers.set(user.id, { name: user.name, timer });
  renderTyping();
}

function clearTypers() {
  for (const t of S.typers.values()) clearTimeout(t.timer);
  S.typers.clear();
  renderTyping();
}

function renderTyping() {
  const names = [...S.typers.values()].map((t) => t.name);
  $('typing').textContent = names.length === 0 ? ''
    : names.length === 1 ? `${names[0]} is typing…`
      : names.length === 2 ? `${names[0]} and ${names[1]} are typing…`
        : 'Several people are typing…';
}

// ---------- scrolling ----------

function nearBottom() {
  const sc = $('scroller');
  return sc.scrollHeight - sc.scrollTop - sc.clientHeight < 120;
}

function scrollDown() {
  const sc = $('scroller');
  sc.scrollTop = sc.scrollHeight;
}

// ---------- wiring ----------

$('auth-form').addEventListener('submit', onAuthSubmit);
$('auth-toggle').addEventListener('click', () => setMode(!signupMode));
$('signout').addEventListener('click', () => signOut('', true));
$('back').addEventListener('click', leaveRoom);
$('composer').addEventListener('submit', (e) => { e.preventDefault(); sendMessage(); });
$('composer-text').addEventListener('input', () => { onComposerInput(); onComposerTyping(); });
$('composer-text').addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    sendMessage();
  }
});
window.addEventListener('online', () => { if (S.retryTimer) connect(); });

setMode(false);
if (S.token) enter();
else {
  show('signin');
  setStatus('Not signed in', 'off');
}
