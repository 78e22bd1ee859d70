"""The console's two pages: plain HTML with a little JavaScript, no build step and nothing fetched
from elsewhere (a device on the line is offline). ``{placeholders}`` are filled by console.py."""

LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ganomaly-edge: log in</title>
<style>body{font:15px system-ui,sans-serif;margin:4em auto;max-width:24em}input,button{font:inherit;padding:.3em}
.m{color:#b00}</style></head><body>
<h1>ganomaly-edge console</h1>
<form method="post" action="/login">
<p><label>Token <input type="password" name="token" id="token" autofocus autocomplete="current-password"></label></p>
<p><button id="login">Log in</button></p><p class="m">{message}</p>
</form></body></html>
"""

REVIEW_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ganomaly-edge: alarms</title>
<meta name="csrf" content="{csrf}">
<style>
body{font:14px system-ui,sans-serif;margin:0;display:flex;flex-direction:column;height:100vh}
header{padding:.4em .8em;background:#222;color:#eee;display:flex;gap:1em;align-items:center;flex-wrap:wrap}
header form{display:inline}
#live{display:flex;gap:.6em;flex-wrap:wrap;padding:.3em .8em;background:#f3f3f3;border-bottom:1px solid #ccc}
.cam{border:1px solid #bbb;border-radius:4px;padding:.2em .5em;background:#fff}
.cam.off{background:#fdd}.cam svg{vertical-align:middle}
main{display:flex;flex:1;min-height:0}
#list{overflow:auto;flex:1;min-width:28em}
table{border-collapse:collapse;width:100%}td{padding:2px 6px;border-bottom:1px solid #eee}
tr.sel{background:#ffe9a8}tr{cursor:pointer}td img{height:40px}
tr[data-verdict=defect] .v{color:#b00;font-weight:bold}tr[data-verdict=false_alarm] .v{color:#070}
#detail{flex:1.3;overflow:auto;padding:.5em 1em;border-left:1px solid #ccc}
#frame{position:relative;display:inline-block}#frame img{max-width:100%;display:block}
.box{position:absolute;border:2px solid #f0f;pointer-events:none}
kbd{border:1px solid #999;border-radius:3px;padding:0 .3em;background:#fafafa}
#msg{color:#b00}
</style></head><body>
<header><b>ganomaly-edge</b><form method="get" action="/">{filters}</form>
<span>{count} alarm(s)</span>
<span><kbd>j</kbd>/<kbd>k</kbd> move, <kbd>d</kbd> defect, <kbd>f</kbd> false alarm, <kbd>s</kbd> skip</span>
<span id="model"><input id="bundle" size="28" placeholder="/path/to/new/bundle"> <button id="swap">swap model</button>
<button id="rollback">roll back</button> <button id="export">export false alarms</button></span>
{logout}<span id="msg"></span></header>
<div id="live"></div>
<main><div id="list"><table><tbody id="rows">{rows}</tbody></table></div>
<div id="detail"><p>Select an alarm (or press <kbd>j</kbd>).</p></div></main>
<script>
"use strict";
const csrf = document.querySelector('meta[name=csrf]').content;
const rows = () => Array.from(document.querySelectorAll('#rows tr'));
let cur = -1;
function esc(s) { return String(s == null ? '' : s).replace(/[&<>"]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c])); }
async function show(i) {
  const r = rows(); if (!r.length) return;
  cur = Math.max(0, Math.min(i, r.length - 1));
  r.forEach((t, k) => t.classList.toggle('sel', k === cur));
  r[cur].scrollIntoView({block: 'nearest'});
  const res = await fetch('/api/alarms/' + r[cur].dataset.id);
  if (!res.ok) { document.getElementById('detail').textContent = 'cannot load: ' + res.status; return; }
  const a = await res.json();
  const fs = a.frame_size || {};
  let boxes = '';
  const img = a.images.frame || a.images.overlay;
  const d = document.getElementById('detail');
  d.innerHTML = '<h3>' + esc(a.camera) + ' ' + new Date(a.ts * 1000).toLocaleString() + '</h3>' +
    '<p>score <b>' + a.score.toFixed(3) + '</b> against threshold ' + a.threshold.toFixed(2) +
    (a.score >= a.threshold ? ' (' + (a.score / a.threshold).toFixed(2) + '&times;)' : '') +
    ' &middot; item ' + esc(a.item || '-') + ' &middot; model ' + esc(a.model.name) + ' <code>' +
    esc(a.model.hash.slice(0, 12)) + '</code> &middot; verdict <b id="verdict">' + esc(a.verdict || 'none') + '</b></p>' +
    '<div id="frame"><img id="frameimg" alt="frame" src="' + img + '"></div>' +
    (a.images.overlay ? '<p>overlay</p><img style="max-width:100%" alt="overlay" src="' + a.images.overlay + '">' : '') +
    '<p>boxes: ' + a.boxes.map(b => b.x + ',' + b.y + ' ' + b.w + 'x' + b.h).join('; ') + '</p>';
  const fi = document.getElementById('frameimg');
  fi.onload = () => {  // boxes are in frame pixels: drawn where the saved frame is the whole frame
    if (fi.naturalWidth !== fs.w || fi.naturalHeight !== fs.h) return;
    const s = fi.clientWidth / fi.naturalWidth;
    for (const b of a.boxes) {
      const e = document.createElement('div'); e.className = 'box';
      Object.assign(e.style, {left: b.x * s + 'px', top: b.y * s + 'px', width: b.w * s + 'px', height: b.h * s + 'px'});
      document.getElementById('frame').appendChild(e);
    }
  };
}
async function mark(v) {
  const r = rows(); if (cur < 0 || !r.length) return;
  const row = r[cur];
  const res = await fetch('/api/alarms/' + row.dataset.id + '/verdict', {method: 'POST',
    headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf}, body: JSON.stringify({verdict: v})});
  const msg = document.getElementById('msg');
  if (!res.ok) { msg.textContent = 'verdict not recorded: ' + res.status + ' ' + (await res.text()); return; }
  msg.textContent = '';
  row.dataset.verdict = v; row.querySelector('.v').textContent = v;
  show(cur + 1);
}
async function post(url, body) {
  const res = await fetch(url, {method: 'POST', headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf},
    body: JSON.stringify(body)});
  let out; try { out = await res.json(); } catch (e) { out = {reason: res.status + ' ' + res.statusText}; }
  return [res.ok, out];
}
async function model(body) {
  const msg = document.getElementById('msg');
  msg.textContent = 'loading and self-testing...';
  const [ok, r] = await post('/api/model', body);
  msg.textContent = ok ? 'model ' + (r.hash || '') + ' now scores ' + (r.cameras || []).join(', ')
                       : 'refused, the old model stays: ' + (r.reason || r.error || JSON.stringify(r));
}
document.getElementById('swap').onclick = () => model({bundle: document.getElementById('bundle').value});
document.getElementById('rollback').onclick = () => model({rollback: true});
document.getElementById('export').onclick = async () => {
  const [ok, r] = await post('/api/export', {verdict: 'false_alarm'});
  document.getElementById('msg').textContent = ok ? 'exported ' + r.count + ' frame(s) to ' + r.out
                                                  : 'not exported: ' + (r.error || r.reason || JSON.stringify(r));
};
document.getElementById('rows').addEventListener('click', ev => {
  const tr = ev.target.closest('tr'); if (tr) show(rows().indexOf(tr));
});
document.addEventListener('keydown', ev => {
  if (ev.target.closest('input,select,textarea') || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const k = ev.key;
  if (k === 'j' || k === 'ArrowDown') show(cur + 1);
  else if (k === 'k' || k === 'ArrowUp') show(cur - 1);
  else if (k === 'd') mark('defect');
  else if (k === 'f') mark('false_alarm');
  else if (k === 's') show(cur + 1);
  else return;
  ev.preventDefault();
});
function spark(scores, thr) {
  if (!scores.length) return '';
  const hi = Math.max(thr * 1.5, ...scores), w = 2;
  const bars = scores.map((s, i) => '<rect x="' + i * w + '" y="' + (20 - 20 * s / hi) + '" width="' + (w - .5) +
    '" height="' + 20 * s / hi + '" fill="' + (s >= thr ? '#d00' : '#5a5') + '"/>').join('');
  return '<svg width="' + scores.length * w + '" height="20">' + bars + '<line x1="0" x2="' + scores.length * w +
    '" y1="' + (20 - 20 * thr / hi) + '" y2="' + (20 - 20 * thr / hi) + '" stroke="#000" stroke-width=".5"/></svg>';
}
async function live() {
  try {
    const res = await fetch('/api/status');
    if (res.ok) {
      const s = await res.json();
      document.getElementById('live').innerHTML = Object.entries(s.cameras).map(([n, c]) =>
        '<span class="cam' + (c.online ? '' : ' off') + '" data-camera="' + esc(n) + '"><b>' + esc(n) + '</b> ' +
        (c.online ? 'online' : 'offline') + ' &middot; ' + c.fps + ' fps &middot; ' + c.alarms_per_min +
        ' alarms/min' + (c.precision == null ? '' : ' &middot; precision ' + c.precision) +
        ' &middot; model ' + esc(c.model) + ' <code>' + esc((c.model_hash || '').slice(0, 12)) + '</code> ' +
        spark(c.scores, c.threshold) + '</span>').join('');
    }
  } catch (e) {}
  setTimeout(live, 2000);
}
live();
</script></body></html>
"""
