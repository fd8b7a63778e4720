// embedlake explore: the page. Vanilla JS, WebGL2, nothing fetched but this server's API.
// Lake text (paths, labels, notes, EXIF, ...) is untrusted: it only ever reaches the page as
// text nodes (el() and textContent), never as HTML.
'use strict';

const state = {
  groups: [], g: null, n: 0, xy: null, codes: null, flags: null, legend: null,
  filterActive: false, selected: [], view: { cx: 0, cy: 0, z: 1 }, bounds: null,
  queue: { name: 'near_duplicates', pos: 0, total: null, case: null, focus: 0 },
};
// what the tests and the bench read
window.explorer = { ready: false, drawn: 0, points: 0, paints: 0, firstPaintMs: null, state };

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'style') node.style.cssText = value; // CSSOM: the page's CSP allows no style attribute
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}
const $ = (id) => document.getElementById(id);
function status(text, isError) {
  const s = $('status');
  s.textContent = text || '';
  s.className = isError ? 'error' : '';
}

async function api(path, options) {
  const response = await fetch(path, options);
  if (!response.ok) {
    let message = response.status + ' ' + response.statusText;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return response;
}
const gParam = () => 'g=' + encodeURIComponent(state.g);

// --- WebGL ------------------------------------------------------------------------------
const VERTEX = `#version 300 es
in vec2 a_pos; in float a_code; in float a_flag;
uniform vec2 u_scale; uniform vec2 u_offset; uniform float u_size; uniform bool u_filter;
uniform vec3 u_palette[34];
out vec4 v_color;
void main() {
  gl_Position = vec4(a_pos * u_scale + u_offset, 0.0, 1.0);
  int code = int(a_code + 0.5);
  int flag = int(a_flag + 0.5);
  vec3 color = u_palette[code];
  float alpha = 0.9;
  float size = u_size;
  if (u_filter && (flag & 1) == 0) { color = mix(color, vec3(0.45), 0.75); alpha = 0.10; }
  else if (u_filter) { size += 2.0; }
  if ((flag & 2) != 0) { size += 2.0; color = mix(color, vec3(1.0), 0.35); }
  gl_PointSize = size;
  v_color = vec4(color, alpha);
}`;
const FRAGMENT = `#version 300 es
precision mediump float;
in vec4 v_color; out vec4 color;
void main() {
  vec2 d = gl_PointCoord - vec2(0.5);
  if (dot(d, d) > 0.25) discard;
  color = v_color;
}`;
const CATEGORY_COLORS = [
  '#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1', '#ff9da7',
  '#9c755f', '#bab0ac', '#1f77b4', '#aec7e8', '#ff7f0e', '#ffbb78', '#2ca02c', '#98df8a',
  '#d62728', '#ff9896', '#9467bd', '#c5b0d5', '#8c564b', '#c49c94', '#e377c2', '#f7b6d2',
  '#7f7f7f', '#c7c7c7', '#bcbd22', '#dbdb8d', '#17becf', '#9edae5'];
const VIRIDIS = ['#440154', '#481a6c', '#472f7d', '#414487', '#39568c', '#31688e', '#2a788e',
  '#23888e', '#1f988b', '#22a884', '#35b779', '#54c568', '#7ad151', '#a5db36', '#d2e21b',
  '#fde725'];
const NONE_COLOR = '#8fa3b8';
const OTHER_COLOR = '#5d6d7e';
const REVIEW_COLORS = { exclude: '#ff3b30', relabel: '#ffcc00', keep: '#34c759', tag: '#5ac8fa' };

function hexRgb(hex) {
  const v = parseInt(hex.slice(1), 16);
  return [(v >> 16 & 255) / 255, (v >> 8 & 255) / 255, (v & 255) / 255];
}
function legendColor(legend, code) {
  if (code === 0) return NONE_COLOR;
  if (!legend) return CATEGORY_COLORS[0];
  if (legend.kind === 'number') return VIRIDIS[Math.min(code - 1, VIRIDIS.length - 1)];
  if (legend.by === 'review') {
    const entry = legend.entries.find((e) => e.code === code);
    if (entry && REVIEW_COLORS[entry.label]) return REVIEW_COLORS[entry.label];
  }
  if (code > CATEGORY_COLORS.length) return OTHER_COLOR;
  return CATEGORY_COLORS[code - 1];
}

const gl = { ctx: null, program: null, buffers: {}, uniforms: {} };
function initGL() {
  const canvas = $('map');
  const ctx = canvas.getContext('webgl2', { antialias: false, preserveDrawingBuffer: true });
  if (!ctx) { status('this browser has no WebGL2: the map cannot be drawn', true); return; }
  const compile = (kind, source) => {
    const shader = ctx.createShader(kind);
    ctx.shaderSource(shader, source);
    ctx.compileShader(shader);
    if (!ctx.getShaderParameter(shader, ctx.COMPILE_STATUS)) throw new Error(ctx.getShaderInfoLog(shader));
    return shader;
  };
  const program = ctx.createProgram();
  ctx.attachShader(program, compile(ctx.VERTEX_SHADER, VERTEX));
  ctx.attachShader(program, compile(ctx.FRAGMENT_SHADER, FRAGMENT));
  ctx.linkProgram(program);
  if (!ctx.getProgramParameter(program, ctx.LINK_STATUS)) throw new Error(ctx.getProgramInfoLog(program));
  gl.ctx = ctx; gl.program = program;
  for (const name of ['u_scale', 'u_offset', 'u_size', 'u_filter', 'u_palette']) {
    gl.uniforms[name] = ctx.getUniformLocation(program, name);
  }
  gl.vao = ctx.createVertexArray();
  ctx.bindVertexArray(gl.vao);
  const attribute = (name, size, type) => {
    const buffer = ctx.createBuffer();
    const location = ctx.getAttribLocation(program, name);
    ctx.bindBuffer(ctx.ARRAY_BUFFER, buffer);
    ctx.enableVertexAttribArray(location);
    ctx.vertexAttribPointer(location, size, type, false, 0, 0);
    gl.buffers[name] = buffer;
  };
  attribute('a_pos', 2, ctx.FLOAT);
  attribute('a_code', 1, ctx.UNSIGNED_BYTE);
  attribute('a_flag', 1, ctx.UNSIGNED_BYTE);
}
function upload(name, data) {
  const ctx = gl.ctx;
  if (!ctx) return;
  ctx.bindBuffer(ctx.ARRAY_BUFFER, gl.buffers[name]);
  ctx.bufferData(ctx.ARRAY_BUFFER, data, ctx.STATIC_DRAW);
}
function setPalette() {
  const values = new Float32Array(34 * 3);
  for (let code = 0; code < 34; code++) values.set(hexRgb(legendColor(state.legend, code)), code * 3);
  gl.ctx.useProgram(gl.program);
  gl.ctx.uniform3fv(gl.uniforms.u_palette, values);
}

let frameQueued = false;
function draw() {
  if (frameQueued) return;
  frameQueued = true;
  requestAnimationFrame(() => { frameQueued = false; paint(); });
}
function paint() {
  const ctx = gl.ctx;
  if (!ctx) return;
  const canvas = ctx.canvas;
  const ratio = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(canvas.clientWidth * ratio));
  const h = Math.max(1, Math.round(canvas.clientHeight * ratio));
  if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
  ctx.viewport(0, 0, w, h);
  ctx.clearColor(0.06, 0.08, 0.1, 1);
  ctx.clear(ctx.COLOR_BUFFER_BIT);
  if (!state.n) { window.explorer.drawn = 0; return; }
  ctx.enable(ctx.BLEND);
  ctx.blendFunc(ctx.SRC_ALPHA, ctx.ONE_MINUS_SRC_ALPHA);
  ctx.useProgram(gl.program);
  const { cx, cy, z } = state.view;
  const sx = 2 * z / canvas.clientWidth, sy = 2 * z / canvas.clientHeight;
  ctx.uniform2f(gl.uniforms.u_scale, sx, sy);
  ctx.uniform2f(gl.uniforms.u_offset, -cx * sx, -cy * sy);
  const size = Math.max(2, Math.min(9, 9 - Math.log10(Math.max(state.n, 1)) * 1.2)) * ratio;
  ctx.uniform1f(gl.uniforms.u_size, size);
  ctx.uniform1i(gl.uniforms.u_filter, state.filterActive ? 1 : 0);
  ctx.bindVertexArray(gl.vao);
  ctx.drawArrays(ctx.POINTS, 0, state.n); // one draw call for every point
  window.explorer.drawn = state.n;
  window.explorer.paints += 1;
}

// --- the map's data ------------------------------------------------------------------------
function fitView() {
  const xy = state.xy;
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (let i = 0; i < xy.length; i += 2) {
    const x = xy[i], y = xy[i + 1];
    if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
  }
  if (!isFinite(x0)) { x0 = -1; x1 = 1; y0 = -1; y1 = 1; }
  const canvas = $('map');
  const spanX = Math.max(x1 - x0, 1e-9), spanY = Math.max(y1 - y0, 1e-9);
  const z = 0.9 * Math.min(canvas.clientWidth / spanX, canvas.clientHeight / spanY);
  state.view = { cx: (x0 + x1) / 2, cy: (y0 + y1) / 2, z };
}

async function loadGroups() {
  const data = await (await api('/api/groups')).json();
  state.groups = data.groups;
  const select = $('group');
  select.replaceChildren();
  for (const group of data.groups) {
    const name = [group.backbone, group.weights_id, group.precision].join('/');
    select.append(el('option', { value: name },
      `${group.backbone} · ${group.precision} · ${group.points.toLocaleString()} images`));
  }
  if (!data.groups.length) { status('this lake has no map yet: run `embedlake run` on it', true); return; }
  const wanted = new URLSearchParams(location.search).get('g');
  state.g = data.groups.some((g) => [g.backbone, g.weights_id, g.precision].join('/') === wanted)
    ? wanted : select.options[0].value;
  select.value = state.g;
}

async function loadPoints() {
  const started = performance.now();
  status('loading points…');
  const colors = fetchColors(); // in parallel: the server places them in the same order
  const response = await api('/api/points?' + gParam());
  const buffer = await response.arrayBuffer();
  state.xy = new Float32Array(buffer);
  state.n = state.xy.length / 2;
  state.flags = new Uint8Array(state.n);
  state.codes = new Uint8Array(state.n);
  state.filterActive = false;
  state.selected = [];
  upload('a_pos', state.xy);
  upload('a_flag', state.flags);
  fitView();
  window.explorer.points = state.n;
  await applyColors(await colors);
  paint();
  gl.ctx.finish();
  const ms = performance.now() - started;
  if (window.explorer.firstPaintMs === null) window.explorer.firstPaintMs = performance.now();
  window.explorer.loadMs = ms;
  status(`${state.n.toLocaleString()} points · drawn in ${Math.round(ms)} ms`);
  $('filter-status').textContent = '';
  window.explorer.ready = true;
  document.body.dataset.points = String(state.n);
}

async function fetchColors() {
  const by = $('color-by').value;
  const column = $('column').value.trim() || 'label';
  $('column-label').hidden = !['label', 'prediction', 'label_quality'].includes(by);
  const query = `/api/colors?${gParam()}&by=${encodeURIComponent(by)}&column=${encodeURIComponent(column)}`;
  try {
    const response = await api(query);
    return { legend: JSON.parse(response.headers.get('X-Legend')),
      points: Number(response.headers.get('X-Points')),
      codes: new Uint8Array(await response.arrayBuffer()) };
  } catch (error) {
    return { error };
  }
}
async function applyColors(result) {
  if (result.error) {
    state.legend = null;
    state.codes = new Uint8Array(state.n);
    status('colour: ' + result.error.message, true);
  } else if (result.points !== state.n) { // the lake changed since the points were loaded
    await loadPoints();
    return;
  } else {
    state.legend = result.legend;
    state.codes = result.codes;
  }
  upload('a_code', state.codes);
  setPalette();
  renderLegend();
  draw();
}
async function loadColors() {
  await applyColors(await fetchColors());
}

function renderLegend() {
  const box = $('legend');
  box.replaceChildren();
  const legend = state.legend;
  if (!legend) return;
  box.append(el('div', { class: 'title' }, el('b', {}, legend.by + (legend.column ? ` (${legend.column})` : ''))));
  for (const entry of legend.entries) {
    box.append(el('div', { class: 'row' },
      el('span', { class: 'swatch', style: `background:${legendColor(legend, entry.code)}` }),
      el('span', { class: 'label', title: entry.label }, entry.label),
      el('span', { class: 'count' }, entry.count.toLocaleString())));
  }
  box.append(el('div', { class: 'row' },
    el('span', { class: 'swatch', style: `background:${NONE_COLOR}` }),
    el('span', { class: 'label' }, '(none)'),
    el('span', { class: 'count' }, legend.none.toLocaleString())));
}

async function applyFilter(where) {
  const out = $('filter-status');
  out.className = '';
  out.textContent = 'filtering…';
  try {
    const response = await api(`/api/filter?${gParam()}&where=${encodeURIComponent(where)}`);
    if (Number(response.headers.get('X-Points')) !== state.n) { // the lake changed: reload
      await loadPoints();
      return applyFilter(where);
    }
    const bits = new Uint8Array(await response.arrayBuffer());
    let count = 0;
    for (let i = 0; i < state.n; i++) {
      const hit = (bits[i >> 3] >> (i & 7)) & 1;
      state.flags[i] = (state.flags[i] & ~1) | hit;
      count += hit;
    }
    state.filterActive = true;
    window.explorer.filterCount = count;
    out.textContent = `${count.toLocaleString()} of ${state.n.toLocaleString()} match`;
  } catch (error) {
    state.filterActive = false;
    for (let i = 0; i < state.n; i++) state.flags[i] &= ~1;
    window.explorer.filterCount = null;
    out.className = 'error';
    out.textContent = error.message;
  }
  upload('a_flag', state.flags);
  draw();
}
function clearFilter() {
  state.filterActive = false;
  for (let i = 0; i < state.n; i++) state.flags[i] &= ~1;
  upload('a_flag', state.flags);
  $('filter-status').textContent = '';
  $('filter').value = '';
  window.explorer.filterCount = null;
  draw();
}

// --- interaction: pan, zoom, click, box, lasso ---------------------------------------------
function toData(px, py) {
  const canvas = $('map');
  const { cx, cy, z } = state.view;
  return [cx + (px - canvas.clientWidth / 2) / z, cy - (py - canvas.clientHeight / 2) / z];
}
function nearestPoint(px, py, radius) {
  const [x, y] = toData(px, py);
  const limit = (radius / state.view.z) ** 2;
  let best = -1, bestD = limit;
  const xy = state.xy;
  for (let i = 0; i < state.n; i++) {
    if (state.filterActive && !(state.flags[i] & 1)) continue;
    const dx = xy[2 * i] - x, dy = xy[2 * i + 1] - y;
    const d = dx * dx + dy * dy;
    if (d < bestD) { bestD = d; best = i; }
  }
  return best;
}
// shift+drag draws the shape chosen in the map's hint line (a box unless changed); alt+drag a lasso
function selectShape(event) {
  if (event.altKey) return 'lasso';
  return event.shiftKey ? $('select-shape').value : null;
}
function addVertex(path, px, py) { // a lasso vertex where the pointer has moved 2 px or more
  const n = path.length;
  if (n && Math.abs(px - path[n - 2]) + Math.abs(py - path[n - 1]) < 2) return;
  path.push(px, py);
}
function showLasso(path) {
  const lasso = $('lasso');
  if (!path) { lasso.setAttribute('hidden', ''); return; }
  $('lasso-path').setAttribute('points', path.join(' '));
  lasso.removeAttribute('hidden');
}
function initInteraction() {
  const canvas = $('map');
  const box = $('box');
  let drag = null;
  canvas.addEventListener('wheel', (event) => {
    event.preventDefault();
    const rect = canvas.getBoundingClientRect();
    const px = event.clientX - rect.left, py = event.clientY - rect.top;
    const [x, y] = toData(px, py);
    const factor = Math.exp(-event.deltaY * 0.0015);
    state.view.z *= factor;
    const [x2, y2] = toData(px, py);
    state.view.cx += x - x2; state.view.cy += y - y2;
    draw();
  }, { passive: false });
  canvas.addEventListener('mousedown', (event) => {
    const rect = canvas.getBoundingClientRect();
    const x = event.clientX - rect.left, y = event.clientY - rect.top, select = selectShape(event);
    drag = { x, y, select, moved: false, view: { ...state.view }, path: select === 'lasso' ? [x, y] : null };
    if (select) event.preventDefault(); // no text selection while drawing
  });
  window.addEventListener('mousemove', (event) => {
    if (!drag) return;
    const rect = canvas.getBoundingClientRect();
    const px = event.clientX - rect.left, py = event.clientY - rect.top;
    if (Math.abs(px - drag.x) + Math.abs(py - drag.y) > 3) drag.moved = true;
    if (drag.select === 'lasso') {
      addVertex(drag.path, px, py);
      showLasso(drag.path);
    } else if (drag.select === 'box') {
      box.hidden = false;
      box.style.left = Math.min(px, drag.x) + 'px'; box.style.top = Math.min(py, drag.y) + 'px';
      box.style.width = Math.abs(px - drag.x) + 'px'; box.style.height = Math.abs(py - drag.y) + 'px';
    } else if (drag.moved) {
      state.view.cx = drag.view.cx - (px - drag.x) / state.view.z;
      state.view.cy = drag.view.cy + (py - drag.y) / state.view.z;
      draw();
    }
  });
  window.addEventListener('mouseup', (event) => {
    if (!drag) return;
    const rect = canvas.getBoundingClientRect();
    const px = event.clientX - rect.left, py = event.clientY - rect.top;
    const was = drag;
    drag = null;
    box.hidden = true;
    showLasso(null);
    if (was.select === 'box' && was.moved) selectBox(was.x, was.y, px, py);
    else if (was.select === 'lasso' && was.moved) {
      addVertex(was.path, px, py);
      selectLasso(was.path);
    } else if (!was.moved && event.target === canvas) {
      const i = nearestPoint(px, py, 12);
      if (i >= 0) openPoint(i);
    }
  });
}
async function openPoint(i) {
  try {
    const data = await (await api(`/api/ids?${gParam()}&i=${i}`)).json();
    if (data.points.length) location.hash = '#image/' + data.points[0].image_id;
  } catch (error) { status(error.message, true); }
}
// The selection: the picked point indices (an Int32Array) are highlighted on the map and fill
// the grid with the first 200 thumbnails. The box and the lasso both end here.
async function showSelection(picked) {
  const flags = state.flags;
  for (let i = 0; i < state.n; i++) flags[i] &= ~2;
  for (let k = 0; k < picked.length; k++) flags[picked[k]] |= 2;
  upload('a_flag', flags);
  draw();
  state.selected = Array.from(picked);
  window.explorer.selected = picked.length;
  const asked = (state.selectionAsked = (state.selectionAsked || 0) + 1);
  const shown = state.selected.slice(0, 200);
  $('selection-title').textContent = `Selection: ${picked.length.toLocaleString()} images` +
    (picked.length > shown.length ? ` (the first ${shown.length} shown)` : '');
  const grid = $('grid');
  grid.replaceChildren();
  if (!shown.length) return;
  let data;
  try {
    data = await (await api(`/api/ids?${gParam()}&i=${shown.join(',')}`)).json();
  } catch (error) {
    if (asked === state.selectionAsked) status(error.message, true);
    return;
  }
  if (asked !== state.selectionAsked) return; // a later selection was made meanwhile
  for (const point of data.points) grid.append(card(point.image_id, point.path));
}
const inFilter = (i) => !state.filterActive || (state.flags[i] & 1);

function selectBox(ax, ay, bx, by) {
  const [x0, y1] = toData(Math.min(ax, bx), Math.min(ay, by));
  const [x1, y0] = toData(Math.max(ax, bx), Math.max(ay, by));
  const xy = state.xy;
  const picked = new Int32Array(state.n);
  let count = 0;
  for (let i = 0; i < state.n; i++) {
    const x = xy[2 * i], y = xy[2 * i + 1];
    if (x >= x0 && x <= x1 && y >= y0 && y <= y1 && inFilter(i)) picked[count++] = i;
  }
  return showSelection(picked.subarray(0, count));
}

// The points inside a polygon given in data coordinates ([x0, y0, x1, y1, ...]), by the even-odd
// rule. Built for a million points and a free-hand path of hundreds of vertices: a bounding-box
// prefilter, then the polygon's edges bucketed into horizontal bands so that a point meets only
// the few edges of its band; typed arrays throughout, nothing allocated per point.
function pointsInPolygon(poly) {
  const m = poly.length >> 1;
  const picked = new Int32Array(m >= 3 ? state.n : 0);
  if (m < 3) return picked;
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (let a = 0; a < m; a++) {
    const x = poly[2 * a], y = poly[2 * a + 1];
    if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
  }
  const bands = Math.min(4096, 4 * m);
  const scale = bands / Math.max(y1 - y0, 1e-300);
  const band = (y) => Math.min(bands - 1, Math.max(0, Math.floor((y - y0) * scale)));
  const first = new Int32Array(bands + 1); // band k's edges: edges[first[k] .. first[k + 1])
  const span = new Int32Array(2 * m); // edge a (vertex a - 1 -> vertex a): its first, last band
  for (let a = 0, b = m - 1; a < m; b = a++) {
    const ya = poly[2 * a + 1], yb = poly[2 * b + 1];
    span[2 * a] = band(Math.min(ya, yb));
    span[2 * a + 1] = band(Math.max(ya, yb));
    for (let k = span[2 * a]; k <= span[2 * a + 1]; k++) first[k + 1] += 1;
  }
  for (let k = 0; k < bands; k++) first[k + 1] += first[k];
  const edges = new Int32Array(first[bands]);
  const fill = first.slice(0, bands);
  for (let a = 0; a < m; a++) {
    for (let k = span[2 * a]; k <= span[2 * a + 1]; k++) edges[fill[k]++] = a;
  }
  const xy = state.xy;
  let count = 0;
  for (let i = 0; i < state.n; i++) {
    const x = xy[2 * i], y = xy[2 * i + 1];
    if (x < x0 || x > x1 || y < y0 || y > y1 || !inFilter(i)) continue;
    const k = band(y);
    let inside = false;
    for (let e = first[k], end = first[k + 1]; e < end; e++) {
      const a = edges[e], b = a === 0 ? m - 1 : a - 1;
      const xa = poly[2 * a], ya = poly[2 * a + 1], xb = poly[2 * b], yb = poly[2 * b + 1];
      if ((ya > y) !== (yb > y) && x < xa + (y - ya) * (xb - xa) / (yb - ya)) inside = !inside;
    }
    if (inside) picked[count++] = i;
  }
  return picked.subarray(0, count);
}
window.explorer.pointsInPolygon = pointsInPolygon; // the tests check it at scale
function selectLasso(path) { // path: the lasso's vertices in canvas pixels
  const poly = new Float64Array(path.length);
  for (let k = 0; k < path.length; k += 2) {
    const [x, y] = toData(path[k], path[k + 1]);
    poly[k] = x; poly[k + 1] = y;
  }
  window.explorer.lasso = Array.from(poly);
  return showSelection(pointsInPolygon(poly));
}

function thumb(imageId, className) {
  const img = el('img', { src: '/api/thumb/' + imageId, alt: '', loading: 'lazy', class: className });
  img.addEventListener('error', () => img.replaceWith(el('div', { class: 'noimg ' + (className || '') }, 'no thumbnail')), { once: true });
  return img;
}
function card(imageId, path, extra) {
  return el('div', { class: 'card', 'data-image-id': imageId, onclick: () => { location.hash = '#image/' + imageId; } },
    thumb(imageId), el('div', { class: 'path' }, path || imageId.slice(0, 12)), extra || null);
}

// --- the image page ----------------------------------------------------------------------
function kvTable(object) {
  const table = el('table', { class: 'kv' });
  for (const [key, value] of Object.entries(object)) {
    if (value === null || value === undefined || value === '') continue;
    table.append(el('tr', {}, el('td', {}, key), el('td', {}, typeof value === 'object' ? JSON.stringify(value) : String(value))));
  }
  return table;
}
function rowsTable(rows, columns) {
  if (!rows.length) return el('p', { class: 'empty' }, 'none');
  columns = columns || Object.keys(rows[0]);
  return el('table', { class: 'rows' },
    el('tr', {}, columns.map((c) => el('th', {}, c))),
    rows.map((row) => el('tr', {}, columns.map((c) => el('td', {}, row[c] === null || row[c] === undefined ? '' : String(row[c]))))));
}

function whoInput() {
  const input = el('input', { id: 'who', size: 10, placeholder: 'who', value: localStorage.getItem('embedlake-who') || '' });
  input.addEventListener('change', () => localStorage.setItem('embedlake-who', input.value));
  return input;
}
async function postReview(imageIds, decision, value, note) {
  const body = { image_ids: imageIds, decision, value: value || null, note: note || null,
    who: localStorage.getItem('embedlake-who') || null };
  const response = await api('/api/review', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  const data = await response.json();
  window.explorer.reviews = (window.explorer.reviews || 0) + data.recorded;
  status(`recorded ${data.recorded} review(s): ${decision}`);
  if (state.legend && state.legend.by === 'review') loadColors();
  return data;
}
function reviewPanel(imageIds, after) {
  const note = el('input', { id: 'note', size: 24, placeholder: 'note (optional)' });
  const value = el('input', { id: 'value', size: 14, placeholder: 'new label / tag' });
  const out = el('span', { id: 'review-status', role: 'status' });
  const act = async (decision) => {
    if ((decision === 'relabel' || decision === 'tag') && !value.value.trim()) {
      out.className = 'error'; out.textContent = `a ${decision} needs a value`; value.focus(); return;
    }
    try {
      await postReview(imageIds, decision, decision === 'relabel' || decision === 'tag' ? value.value.trim() : null, note.value.trim());
      out.className = ''; out.textContent = `recorded: ${decision}`;
      if (after) after();
    } catch (error) { out.className = 'error'; out.textContent = error.message; }
  };
  return el('div', { class: 'review-panel' },
    el('b', {}, 'Review'),
    el('div', { class: 'buttons' },
      el('button', { id: 'btn-keep', onclick: () => act('keep') }, 'Keep'),
      el('button', { id: 'btn-exclude', onclick: () => act('exclude') }, 'Exclude'),
      value,
      el('button', { id: 'btn-relabel', onclick: () => act('relabel') }, 'Relabel'),
      el('button', { id: 'btn-tag', onclick: () => act('tag') }, 'Tag')),
    el('div', { class: 'buttons' }, note, whoInput()),
    out);
}

const REVIEW_COLUMNS = ['made_at', 'decision', 'value', 'label_column', 'note', 'who', 'in_force'];
async function refreshReviews(imageId) {
  const data = await (await api('/api/image/' + encodeURIComponent(imageId))).json();
  if (state.imageShown !== imageId) return;
  $('reviews').replaceChildren(rowsTable(data.reviews, REVIEW_COLUMNS));
  window.explorer.image = data;
}
async function showImage(imageId) {
  const view = $('view-image');
  state.imageShown = imageId;
  window.explorer.image = null;
  view.replaceChildren(el('p', {}, 'loading…'));
  let data;
  try {
    data = await (await api('/api/image/' + encodeURIComponent(imageId))).json();
  } catch (error) {
    if (state.imageShown !== imageId) return;
    view.replaceChildren(el('p', { class: 'error', id: 'image-error' }, error.message));
    return;
  }
  if (state.imageShown !== imageId) return; // another image was asked for meanwhile
  const first = data.files[0] || {};
  const listed = new Map();
  for (const column of data.neighbors) {
    for (const item of column.items) listed.set(item.neighbor_id, (listed.get(item.neighbor_id) || 0) + 1);
  }
  const columns = data.neighbors.map((column) => el('div', { class: 'column', 'data-group': column.g },
    el('h3', {}, column.backbone),
    el('div', { class: 'gid' }, column.g.split('/').slice(1).join(' · ')),
    column.items.map((item) => {
      const only = data.neighbors.length > 1 && listed.get(item.neighbor_id) === 1;
      return el('div', { class: 'item' + (only ? ' only' : ''), 'data-image-id': item.neighbor_id,
        onclick: () => { location.hash = '#image/' + item.neighbor_id; } },
      thumb(item.neighbor_id),
      el('div', {},
        el('div', { class: 'sim' }, `#${item.rank} · ${Number(item.similarity).toFixed(4)}`),
        el('div', { class: 'npath' }, item.path || item.neighbor_id.slice(0, 12)),
        only ? el('div', { class: 'badge' }, 'only under this backbone') : null));
    })));
  const labels = data.labels.map((row) => ({
    backbone: row.backbone, column: row.column, given: row.given_label, reviewed: row.reviewed_label,
    predicted: row.predicted_label, probability: row.probability === null ? null : Number(row.probability).toFixed(3),
    label_quality: row.label_quality === null ? null : Number(row.label_quality).toFixed(3),
    suggested: row.suggested_label, issue: row.is_issue,
  }));
  view.replaceChildren(
    el('p', {}, el('a', { href: '#map' }, '← map'), ' · ', el('a', { href: '#queue/' + state.queue.name }, 'review queue')),
    el('h1', { class: 'path', id: 'image-path' }, first.path || imageId),
    el('div', { class: 'image-head' },
      thumb(imageId, 'big'),
      el('div', {},
        el('div', { class: 'gid' }, 'image_id ', el('code', { id: 'image-id' }, imageId)),
        kvTable(first),
        data.files.length > 1 ? el('p', {}, `also at: ${data.files.slice(1).map((f) => f.path).join(', ')}`) : null),
      el('div', {}, reviewPanel([imageId], () => refreshReviews(imageId)),
        el('h2', {}, 'Reviews'), el('div', { id: 'reviews' }, rowsTable(data.reviews, REVIEW_COLUMNS)))),
    el('h2', {}, 'Labels and the probes\' predictions'),
    el('div', { id: 'labels' }, rowsTable(labels)),
    el('h2', {}, 'Neighbours under each backbone'),
    el('p', { class: 'gid' }, 'highlighted: neighbours one backbone finds and the other does not'),
    el('div', { class: 'neighbors', id: 'neighbors' }, columns.length ? columns : el('p', { class: 'empty' }, 'no neighbour lists')),
    el('h2', {}, 'Metadata'),
    el('div', { id: 'metadata' }, data.metadata.length ? data.metadata.map((row) => kvTable(row)) : el('p', { class: 'empty' }, 'no sidecar row')));
  window.explorer.image = data;
}

// --- review queues -----------------------------------------------------------------------
async function showQueue(name, pos) {
  state.queue.name = name;
  state.queue.pos = pos;
  const asked = (state.queue.asked = (state.queue.asked || 0) + 1);
  $('queue-name').value = name;
  const box = $('queue-case');
  let data;
  try {
    data = await (await api(`/api/queue/${encodeURIComponent(name)}?${gParam()}&pos=${pos}`)).json();
  } catch (error) {
    if (asked !== state.queue.asked) return;
    box.replaceChildren(el('p', { class: 'error' }, error.message));
    return;
  }
  if (asked !== state.queue.asked) return; // a later case was asked for meanwhile
  state.queue.total = data.total;
  state.queue.case = data.case;
  if (state.queue.focus >= (data.case ? data.case.images.length : 0)) state.queue.focus = 0;
  $('queue-pos').textContent = data.case
    ? `case ${pos + 1} of ${data.total.toLocaleString()}` : (pos === 0 ? 'no cases' : 'past the last case');
  if (!data.case) { box.replaceChildren(el('p', { class: 'empty' }, 'nothing in this queue')); return; }
  const c = data.case;
  const info = [];
  const scoreName = { near_duplicates: 'similarity', label_issues: 'label quality',
    outliers: 'mean similarity to its neighbours', leaky_splits: 'similarity' }[name] || 'score';
  if (c.score !== undefined && c.score !== null) info.push(`${scoreName} ${Number(c.score).toFixed(4)}`);
  if (c.given_label !== undefined) info.push(`given label: ${c.given_label}`, `suggested: ${c.suggested_label}`);
  if (c.reviewed_label) info.push(`reviewed: ${c.reviewed_label}`);
  if (c.value_a !== undefined) info.push(`splits: ${c.value_a} / ${c.value_b}`);
  const cards = c.images.map((image, n) => {
    const sims = c.similarities && n > 0 ? `similarity ${Number(c.similarities[n - 1]).toFixed(4)}` : '';
    const node = card(image.image_id, image.path, el('div', {},
      sims ? el('div', { class: 'meta' }, sims) : null,
      el('div', { class: 'decisions' }, (image.decisions || []).join(', '))));
    node.onclick = (event) => { event.preventDefault(); state.queue.focus = n; focusCard(); };
    node.ondblclick = () => { location.hash = '#image/' + image.image_id; };
    return node;
  });
  const focused = () => [c.images[state.queue.focus].image_id];
  const panel = reviewPanel([], () => showQueue(name, pos));
  // the panel acts on the focused image
  panel.querySelectorAll('button').forEach((button) => {
    const decision = button.id.replace('btn-', '');
    button.onclick = null;
    button.replaceWith(el('button', { id: button.id, onclick: () => queueDecide(decision) }, button.textContent));
  });
  box.replaceChildren(el('div', { class: 'case-info', id: 'case-info' }, info.join(' · ')),
    el('div', { class: 'grid', id: 'case-images' }, cards), el('p'), panel);
  focusCard();
  window.explorer.queue = data;
  window.explorer.focused = focused;
}
function focusCard() {
  document.querySelectorAll('#case-images .card').forEach((node, n) => node.classList.toggle('focus', n === state.queue.focus));
}
async function queueDecide(decision) {
  const c = state.queue.case;
  if (!c) return;
  const imageId = c.images[state.queue.focus].image_id;
  const value = $('value') ? $('value').value.trim() : '';
  const out = $('review-status');
  if ((decision === 'relabel' || decision === 'tag') && !value) {
    out.className = 'error'; out.textContent = `type the ${decision === 'tag' ? 'tag' : 'new label'} first, then press the key again`;
    $('value').focus();
    return;
  }
  try {
    await postReview([imageId], decision, decision === 'relabel' || decision === 'tag' ? value : null, $('note') ? $('note').value.trim() : '');
    await showQueue(state.queue.name, state.queue.pos);
    $('review-status').textContent = `recorded: ${decision} of ${imageId.slice(0, 12)}…`;
  } catch (error) { out.className = 'error'; out.textContent = error.message; }
}
function queueKeys(event) {
  if ($('view-queue').hidden || event.ctrlKey || event.metaKey || event.altKey) return;
  if (['INPUT', 'TEXTAREA', 'SELECT'].includes(document.activeElement.tagName)) {
    if (event.key === 'Escape') document.activeElement.blur();
    return;
  }
  const q = state.queue;
  const count = q.case ? q.case.images.length : 0;
  const actions = {
    j: () => { if (q.total === null || q.pos + 1 < q.total) location.hash = `#queue/${q.name}/${q.pos + 1}`; },
    k: () => { if (q.pos > 0) location.hash = `#queue/${q.name}/${q.pos - 1}`; },
    l: () => { if (count) { q.focus = (q.focus + 1) % count; focusCard(); } },
    h: () => { if (count) { q.focus = (q.focus + count - 1) % count; focusCard(); } },
    ArrowRight: () => actions.l(), ArrowLeft: () => actions.h(),
    a: () => queueDecide('keep'), x: () => queueDecide('exclude'),
    r: () => queueDecide('relabel'), t: () => queueDecide('tag'),
    o: () => { if (count) location.hash = '#image/' + q.case.images[q.focus].image_id; },
  };
  if (actions[event.key]) { event.preventDefault(); actions[event.key](); }
}

// --- routing -------------------------------------------------------------------------------
function route() {
  const hash = location.hash.replace(/^#/, '') || 'map';
  const [page, arg, extra] = hash.split('/');
  $('view-map').hidden = page !== 'map';
  $('view-image').hidden = page !== 'image';
  $('view-queue').hidden = page !== 'queue';
  if (page === 'image') showImage(arg || '');
  else if (page === 'queue') showQueue(arg || state.queue.name, Math.max(0, parseInt(extra || '0', 10) || 0));
  else draw();
}

async function start() {
  try { initGL(); } catch (error) { status('WebGL: ' + error.message, true); }
  initInteraction();
  $('group').addEventListener('change', async () => { state.g = $('group').value; await loadPoints(); route(); });
  $('color-by').addEventListener('change', loadColors);
  $('column').addEventListener('change', loadColors);
  $('filter-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const where = $('filter').value.trim();
    if (where) applyFilter(where); else clearFilter();
  });
  $('filter-clear').addEventListener('click', clearFilter);
  $('queue-name').addEventListener('change', () => { location.hash = `#queue/${$('queue-name').value}/0`; });
  window.addEventListener('keydown', queueKeys);
  window.addEventListener('hashchange', route);
  window.addEventListener('resize', draw);
  try {
    await loadGroups();
    if (state.g) await loadPoints();
  } catch (error) { status(error.message, true); }
  route();
}
start();
