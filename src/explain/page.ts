/**
 * The explain page (GET /api/explain): one self-contained HTML document. Its CSS and JS are inline
 * and allowed by hash in the Content-Security-Policy sent with it, which also allows fetch to its
 * own origin only, so the page loads nothing from elsewhere and the pasted token can go nowhere
 * but POST /api/explain of the service that served it. The token lives only in the textarea; the
 * answer is drawn with textContent, never parsed as HTML (token claims are attacker-controlled).
 */
import { createHash } from 'node:crypto';

const STYLE = `
:root {
  --bg: #f5f6f8; --panel: #fff; --border: #d9dee4; --soft: #eef1f4; --text: #1c2128; --muted: #5d6672;
  --accent: #0b5cad; --accent-hover: #094a8c;
  --green: #1a7f37; --green-bg: #e6f6ea; --red: #c62828; --red-bg: #fdecea; --amber: #8a5a00; --amber-bg: #fff6d6;
  --mono: ui-monospace, SFMono-Regular, "SF Mono", Menlo, Consolas, "Liberation Mono", monospace;
}
* { box-sizing: border-box; }
html, body { margin: 0; }
body { background: var(--bg); color: var(--text); font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header.bar { background: #1f2933; color: #fff; padding: 0 24px; height: 52px; display: flex; align-items: center; gap: 14px; }
header.bar .brand { font-weight: 650; letter-spacing: .2px; font-size: 15px; }
header.bar .sep { width: 1px; height: 20px; background: #4b5663; }
header.bar .page { color: #d5dbe1; }
header.bar .note { margin-left: auto; color: #aab4bf; font-size: 12.5px; }
main { max-width: 1280px; margin: 0 auto; padding: 20px 24px 40px; }
.card { background: var(--panel); border: 1px solid var(--border); border-radius: 8px; }
form.card { padding: 16px 18px; }
label { display: block; font-weight: 600; font-size: 12.5px; color: var(--muted); margin-bottom: 6px; text-transform: uppercase; letter-spacing: .4px; }
textarea, input, select, button { font: inherit; color: inherit; }
textarea { width: 100%; min-height: 96px; resize: vertical; font-family: var(--mono); font-size: 12.5px; line-height: 1.5; padding: 9px 11px; border: 1px solid var(--border); border-radius: 6px; background: #fbfcfd; word-break: break-all; }
textarea:focus, input:focus, select:focus { outline: 2px solid #9cc3ea; outline-offset: 0; border-color: var(--accent); }
.row { display: flex; gap: 12px; align-items: flex-end; margin-top: 14px; }
.row .field { display: flex; flex-direction: column; }
.row .grow { flex: 1; }
select, input[type=text] { height: 36px; padding: 0 10px; border: 1px solid var(--border); border-radius: 6px; background: #fff; }
select { width: 120px; }
input[type=text] { font-family: var(--mono); font-size: 13px; }
button { height: 36px; padding: 0 20px; border: 0; border-radius: 6px; background: var(--accent); color: #fff; font-weight: 600; cursor: pointer; }
button:hover { background: var(--accent-hover); }
button:disabled { opacity: .6; cursor: progress; }
.help { margin: 10px 0 0; color: var(--muted); font-size: 12.5px; }
.error { margin-top: 16px; padding: 12px 14px; border-radius: 8px; background: var(--red-bg); color: var(--red); border: 1px solid #f3c1bd; }
.empty { margin-top: 16px; padding: 28px; text-align: center; color: var(--muted); border: 1px dashed var(--border); border-radius: 8px; }
.verdict { margin-top: 16px; padding: 14px 18px; border-left: 5px solid; }
.verdict.allow { border-left-color: var(--green); }
.verdict.deny, .verdict.indeterminate { border-left-color: var(--red); }
.verdict .line { display: flex; align-items: center; gap: 12px; flex-wrap: wrap; }
.pill { display: inline-block; padding: 3px 10px; border-radius: 999px; font-weight: 700; font-size: 12.5px; letter-spacing: .4px; }
.allow .pill { background: var(--green-bg); color: var(--green); }
.deny .pill, .indeterminate .pill { background: var(--red-bg); color: var(--red); }
.verdict .reason { font-family: var(--mono); font-weight: 600; }
.verdict .request { margin-left: auto; font-family: var(--mono); color: var(--muted); font-size: 12.5px; }
.verdict .message { margin-top: 6px; color: var(--muted); }
.fix { margin-top: 10px; padding: 10px 12px; background: var(--amber-bg); color: #4d3800; border-radius: 6px; }
.fix b { color: var(--amber); margin-right: 6px; }
.facts-inline { margin-top: 8px; color: var(--muted); font-size: 13px; }
.facts-inline span { font-family: var(--mono); color: var(--text); }
.grid { display: grid; grid-template-columns: minmax(0, 1.35fr) minmax(0, 1fr); gap: 16px; margin-top: 16px; align-items: start; }
@media (max-width: 960px) { .grid { grid-template-columns: 1fr; } }
.card h2 { margin: 0; padding: 12px 16px; font-size: 13px; text-transform: uppercase; letter-spacing: .5px; color: var(--muted); border-bottom: 1px solid var(--border); display: flex; align-items: center; gap: 10px; }
.card h2 .badge { margin-left: auto; }
.badge { font-size: 11.5px; text-transform: none; letter-spacing: 0; padding: 2px 8px; border-radius: 999px; font-weight: 600; }
.badge.ok { background: var(--green-bg); color: var(--green); }
.badge.warn { background: var(--amber-bg); color: var(--amber); }
ol.tree { list-style: none; margin: 0; padding: 10px 16px 14px; position: relative; }
ol.tree::before { content: ""; position: absolute; left: 50px; top: 24px; bottom: 28px; width: 2px; background: var(--soft); }
li.node { position: relative; margin: 2px 0; }
li.node > details > summary, li.node > .static { list-style: none; display: flex; align-items: center; gap: 10px; padding: 7px 8px 7px 4px; border-radius: 6px; cursor: pointer; }
li.node > .static { cursor: default; }
li.node > details > summary::-webkit-details-marker { display: none; }
li.node > details > summary:hover { background: #f6f8fa; }
.icon { position: relative; z-index: 1; flex: none; width: 22px; height: 22px; border-radius: 50%; display: inline-flex; align-items: center; justify-content: center; font-size: 12px; font-weight: 700; color: #fff; box-shadow: 0 0 0 3px var(--panel); }
.pass .icon { background: var(--green); }
.fail .icon { background: var(--red); }
.skipped .icon { background: #c4cbd3; }
.node .title { font-weight: 600; white-space: nowrap; }
.skipped .title { color: var(--muted); font-weight: 500; }
.node .summary { color: var(--muted); font-family: var(--mono); font-size: 12px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; min-width: 0; flex: 1; }
.fail .summary { color: var(--red); font-weight: 600; }
.node .chev { color: #9aa4ae; font-size: 11px; flex: none; width: 10px; }
details[open] > summary .chev { transform: rotate(90deg); }
li.node.fail > details > summary { background: var(--red-bg); }
dl.facts { margin: 4px 0 8px 48px; padding: 10px 12px; display: grid; grid-template-columns: 84px minmax(0, 1fr); gap: 6px 12px; border: 1px solid var(--border); border-radius: 6px; background: #fbfcfd; }
.fail dl.facts { border-color: #f3c1bd; background: #fffafa; }
dl.facts dt { color: var(--muted); font-weight: 600; font-size: 12px; text-transform: uppercase; letter-spacing: .3px; padding-top: 1px; }
dl.facts dd { margin: 0; font-family: var(--mono); font-size: 12.5px; overflow-wrap: anywhere; }
dl.facts dd.fixtext { font-family: inherit; font-size: 13px; }
.tokenbody { padding: 4px 16px 14px; }
.tokenbody h3 { margin: 12px 0 6px; font-size: 12px; color: var(--muted); text-transform: uppercase; letter-spacing: .4px; }
table.claims { width: 100%; border-collapse: collapse; table-layout: fixed; }
table.claims td { padding: 5px 8px; border-top: 1px solid var(--soft); vertical-align: top; font-family: var(--mono); font-size: 12px; overflow-wrap: anywhere; }
table.claims td.name { width: 30%; color: var(--accent); font-weight: 600; }
table.claims .when { display: block; color: var(--muted); font-family: system-ui, sans-serif; font-size: 12px; margin-top: 2px; }
table.claims .when.expired { color: var(--red); font-weight: 600; }
.muted { color: var(--muted); }
footer { max-width: 1280px; margin: 0 auto; padding: 0 24px 24px; color: var(--muted); font-size: 12px; }
`;

/** No template literals or `${` below: this text is embedded as is and hashed for the CSP. */
const SCRIPT = `
(function () {
  'use strict';
  var form = document.getElementById('explain-form');
  var tokenEl = document.getElementById('token');
  var methodEl = document.getElementById('method');
  var pathEl = document.getElementById('path');
  var submitEl = document.getElementById('submit');
  var resultEl = document.getElementById('result');
  var key = new URLSearchParams(location.search).get('code');

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function add(parent) {
    for (var i = 1; i < arguments.length; i++) if (arguments[i]) parent.appendChild(arguments[i]);
    return parent;
  }
  function display(v) {
    if (typeof v === 'string') return v;
    if (Array.isArray(v) && v.every(function (x) { return typeof x === 'string'; })) return v.join(', ');
    return JSON.stringify(v);
  }
  function fact(dl, name, value, cls) {
    if (value === undefined || value === null || value === '') return;
    add(dl, el('dt', null, name), el('dd', cls || null, value));
  }

  function showError(message) {
    resultEl.replaceChildren(add(el('div', 'error'), el('strong', null, 'Could not explain: '), document.createTextNode(message)));
  }

  async function run() {
    if (!tokenEl.value.trim()) { showError('paste a token first.'); tokenEl.focus(); return; }
    // An AuthZEN evaluation request (JSON: subject with properties.token, action, resource) is the whole question.
    var authzen = tokenEl.value.trim().charAt(0) === '{';
    if (!authzen && !pathEl.value.trim()) { showError('enter the request path, e.g. /Patient/123.'); pathEl.focus(); return; }
    submitEl.disabled = true;
    submitEl.textContent = 'Explaining…';
    try {
      var headers = { 'content-type': 'application/json' };
      if (key) headers['x-functions-key'] = key;
      var res = await fetch(location.pathname, {
        method: 'POST',
        headers: headers,
        body: authzen ? tokenEl.value.trim() : JSON.stringify({ token: tokenEl.value, method: methodEl.value, path: pathEl.value.trim() }),
        cache: 'no-store',
        credentials: 'same-origin',
        referrerPolicy: 'no-referrer'
      });
      var body = null;
      try { body = await res.json(); } catch (e) { body = null; }
      if (!res.ok || !body || !body.decision) {
        var why = body && (body.hint || body.message || body.error);
        showError('HTTP ' + res.status + (why ? ': ' + why : ''));
        return;
      }
      render(body);
    } catch (err) {
      showError(String(err && err.message || err));
    } finally {
      submitEl.disabled = false;
      submitEl.textContent = 'Explain';
    }
  }

  function render(e) {
    var d = e.decision;
    var verdictWord = d.decision === 'allow' ? 'ALLOWED' : d.decision === 'deny' ? 'DENIED' : 'INDETERMINATE';
    var verdict = el('section', 'card verdict ' + d.decision);
    verdict.id = 'verdict';
    add(verdict, add(el('div', 'line'),
      el('span', 'pill', verdictWord + ' · ' + d.status),
      el('span', 'reason', d.reason),
      el('span', 'request', e.request.method + ' ' + e.request.path)));
    add(verdict, el('div', 'message', d.message));
    if (e.hint) add(verdict, add(el('div', 'fix'), el('b', null, 'Fix'), document.createTextNode(e.hint)));
    if (d.decision === 'allow') {
      var p = d.principal || {};
      var parts = [];
      if (p.objectId) parts.push('oid ' + p.objectId);
      if (p.applicationId) parts.push('app ' + p.applicationId);
      if (p.fhirUser) parts.push('fhirUser ' + p.fhirUser);
      var info = el('div', 'facts-inline');
      if (parts.length) add(info, document.createTextNode('Principal '), el('span', null, parts.join(' · ')));
      if (d.dataActions) add(info, document.createTextNode('   Data actions '), el('span', null, d.dataActions.join(', ')));
      if (d.compartment) add(info, document.createTextNode('   Compartment '), el('span', null, d.compartment));
      if (d.queryAppend) add(info, document.createTextNode('   Narrowed by '), el('span', null, d.queryAppend));
      add(verdict, info);
    }

    var steps = el('section', 'card');
    steps.id = 'steps';
    add(steps, el('h2', null, 'Decision steps'));
    var tree = el('ol', 'tree');
    e.trace.forEach(function (s) {
      var li = el('li', 'node ' + s.outcome);
      li.setAttribute('data-step', s.id);
      li.setAttribute('data-outcome', s.outcome);
      var icon = el('span', 'icon', s.outcome === 'pass' ? '✓' : s.outcome === 'fail' ? '✕' : '–');
      icon.setAttribute('aria-label', s.outcome);
      var summaryText = s.outcome === 'fail' ? s.reason : s.outcome === 'pass' ? s.found : s.hint;
      if (s.outcome === 'skipped') {
        add(li, add(el('div', 'static'), el('span', 'chev', ''), icon, el('span', 'title', s.title), el('span', 'summary', summaryText || '')));
      } else {
        var det = el('details');
        var sum = add(el('summary'), el('span', 'chev', '▶'), icon, el('span', 'title', s.title), el('span', 'summary', summaryText || ''));
        var dl = el('dl', 'facts');
        fact(dl, 'Expected', s.expected);
        fact(dl, 'Found', s.found);
        if (s.outcome === 'fail') { fact(dl, 'Reason', s.reason); fact(dl, 'Fix', s.hint, 'fixtext'); }
        if (!dl.firstChild) fact(dl, 'Result', 'passed');
        add(det, sum, dl);
        if (s.id === e.failedStep) det.open = true;
        add(li, det);
      }
      tree.appendChild(li);
    });
    add(steps, tree);

    var tok = el('section', 'card');
    tok.id = 'token-panel';
    var h = el('h2', null, 'Token');
    if (e.token) add(h, el('span', 'badge ' + (e.token.verified ? 'ok' : 'warn'), e.token.status));
    add(tok, h);
    var body = el('div', 'tokenbody');
    if (!e.token) {
      add(body, el('p', 'muted', 'The token could not be decoded: it is not a JWS with a JSON header and claims.'));
    } else {
      var times = {};
      (e.token.times || []).forEach(function (t) { times[t.claim] = t; });
      add(body, el('h3', null, 'Header'), table(e.token.header, {}), el('h3', null, 'Claims'), table(e.token.claims, times));
    }
    add(tok, body);

    resultEl.replaceChildren(verdict, add(el('div', 'grid'), steps, tok));
  }

  function table(obj, times) {
    var t = el('table', 'claims');
    var tb = el('tbody');
    Object.keys(obj).forEach(function (name) {
      var tr = el('tr');
      var v = el('td', 'value', display(obj[name]));
      var time = times[name];
      if (time) {
        v.textContent = time.iso;
        add(v, el('span', 'when' + (/^expired/.test(time.relative) ? ' expired' : ''), time.relative + ' · ' + time.seconds));
      }
      add(tr, el('td', 'name', name), v);
      tb.appendChild(tr);
    });
    if (!tb.firstChild) add(tb, add(el('tr'), el('td', 'muted', '(none)')));
    return add(t, tb);
  }

  form.addEventListener('submit', function (ev) { ev.preventDefault(); run(); });
  tokenEl.addEventListener('keydown', function (ev) {
    if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); run(); }
  });
})();
`;

function sha256(text: string): string {
  return `'sha256-${createHash('sha256').update(text, 'utf8').digest('base64')}'`;
}

/**
 * default-src 'none': nothing but what is listed; the inline style and script by hash; fetch to
 * this origin only; no base URL changes, no form posts, no framing.
 */
export const EXPLAIN_PAGE_CSP = [
  "default-src 'none'",
  `script-src ${sha256(SCRIPT)}`,
  `style-src ${sha256(STYLE)}`,
  "connect-src 'self'",
  "img-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

export const EXPLAIN_PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Explain a decision · fhir-pdp</title>
<style>${STYLE}</style>
</head>
<body>
<header class="bar">
  <span class="brand">fhir-pdp</span><span class="sep"></span><span class="page">Explain a decision</span>
  <span class="note">Admin · the token is sent only to this service and is never stored</span>
</header>
<main>
  <form id="explain-form" class="card" autocomplete="off" novalidate>
    <label for="token">Bearer token, or an AuthZEN evaluation request (JSON; method and path then come from it)</label>
    <textarea id="token" name="token" spellcheck="false" autocapitalize="off" autocomplete="off" placeholder="eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiIs…   (with or without “Bearer ”)"></textarea>
    <div class="row">
      <div class="field">
        <label for="method">Method</label>
        <select id="method" name="method">
          <option>GET</option><option>POST</option><option>PUT</option><option>PATCH</option><option>DELETE</option><option>HEAD</option>
        </select>
      </div>
      <div class="field grow">
        <label for="path">Request path</label>
        <input id="path" name="path" type="text" value="/Patient/123" spellcheck="false" autocapitalize="off" autocomplete="off">
      </div>
      <button id="submit" type="submit">Explain</button>
    </div>
    <p class="help">Runs the same checks as <code>/api/decide</code> and shows each of them. Ctrl+Enter explains.</p>
  </form>
  <div id="result"><div class="empty">Paste a token and choose the request to see every check of the decision.</div></div>
</main>
<script>${SCRIPT}</script>
</body>
</html>
`;
