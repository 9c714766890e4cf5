// The Explain dashboard: film strips (probe images x explained epochs), charts and alert marks.
// One front-end for two hosts: TensorBoard's Explain tab (index.js, data from the plugin's routes) and the offline
// HTML report (data inlined in the page). Each host passes an `api` with two functions:
//   api.get(route, params) -> Promise of the JSON the route answers (runs, run, charts, numbers)
//   api.tile(params)       -> the URL of one film-strip column PNG (params: run, tag, step, part: 'maps' | 'input')
// and `live` (poll for new epochs). Plain modern JavaScript, no build step, no dependency.

const SVG = 'http://www.w3.org/2000/svg';
const COLOURS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#17becf', '#e377c2'];
export const POLL_MS = 5000;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

// "true 2 · predicted 1 · explained 1" from a caption dict of the layout text.
export function captionText(c) {
  if (!c) return '';
  const parts = [];
  if (c.label !== null && c.label !== undefined) parts.push(`true ${c.label}`);
  parts.push(`predicted ${c.prediction}`);
  if (c.explained !== null && c.explained !== undefined && c.explained !== c.prediction) parts.push(`explained ${c.explained}`);
  return parts.join(' · ');
}

function niceTicks(lo, hi, count = 4) {
  if (!(hi > lo)) { hi = lo + 1; }
  const raw = (hi - lo) / count, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map(m => m * mag).find(s => s >= raw) || raw;
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(Number(t.toFixed(10)));
  return out;
}

export class Dashboard {
  constructor(root, api, { live = true } = {}) {
    this.root = root; this.api = api; this.live = live;
    this.state = { runA: null, runB: '', method: null, size: 64, selected: null };
    this.runs = []; this.info = {}; this.versions = {};
    this.numbers = new Map();
    this.observer = new IntersectionObserver(entries => this.onVisible(entries), { rootMargin: '200px' });
  }

  async start() {
    this.root.classList.add('lx-root');
    this.root.replaceChildren(el('p', { class: 'lx-note', text: 'Loading…' }));
    await this.loadRuns();
    document.addEventListener('keydown', e => this.onKey(e));
    if (this.live) this.timer = setInterval(() => this.poll(), POLL_MS);
  }

  async loadRuns() {
    const listing = await this.api.get('runs', {});
    this.runs = listing.runs.map(r => r.name);
    for (const r of listing.runs) this.versions[r.name] = r.version;
    if (!this.runs.length) return this.empty(listing.others);
    if (!this.runs.includes(this.state.runA)) this.state.runA = this.runs[0];
    if (this.state.runB && !this.runs.includes(this.state.runB)) this.state.runB = '';
    await this.loadInfo();
    this.render();
  }

  empty(others) {
    this.root.replaceChildren(el('div', { class: 'lx-empty' },
      el('h2', { text: 'No explained epochs in this log dir yet' }),
      el('p', { text: `${others ? others + ' run(s) here hold other TensorBoard data, none from lightning_explain. ' : ''}` +
        'Add the callback to your Trainer (one line) and the film strips appear here while it trains:' }),
      el('pre', { text: 'trainer = Trainer(callbacks=[ExplainCallback()], logger=TensorBoardLogger("runs"))' })));
  }

  async loadInfo() {
    const names = [this.state.runA, this.state.runB].filter(Boolean);
    await Promise.all(names.map(async name => {
      this.info[name] = await this.api.get('run', { run: name });
    }));
    const views = this.info[this.state.runA].views.map(v => v.method);
    if (!views.includes(this.state.method)) this.state.method = views.includes('gradcam') ? 'gradcam' : views[0];
  }

  async poll() {
    let listing;
    try { listing = await this.api.get('runs', {}); } catch (err) { return; }
    const changed = listing.runs.some(r => this.versions[r.name] !== r.version) || listing.runs.length !== this.runs.length;
    if (!changed) return;
    const shown = [this.state.runA, this.state.runB].filter(Boolean);
    const wasEmpty = !this.runs.length;
    const shownChanged = listing.runs.some(r => shown.includes(r.name) && this.versions[r.name] !== r.version);
    this.runs = listing.runs.map(r => r.name);
    for (const r of listing.runs) this.versions[r.name] = r.version;
    if (wasEmpty) return this.loadRuns();
    if (shownChanged) { this.numbers.clear(); await this.loadInfo(); }
    this.render();
  }

  view(run) {
    const info = this.info[run];
    return info ? info.views.find(v => v.method === this.state.method) : undefined;
  }

  // The epochs of the columns: every epoch either shown run explained for this method, so two runs align.
  epochs() {
    const set = new Set();
    for (const run of [this.state.runA, this.state.runB].filter(Boolean)) {
      const v = this.view(run);
      if (v) v.frames.forEach(([epoch]) => set.add(epoch));
    }
    return [...set].sort((a, b) => a - b);
  }

  alertEpochs(run) {
    const info = this.info[run];
    return new Set(info ? info.alerts.map(a => a.epoch) : []);
  }

  render() {
    const keepX = this.root.querySelector('.lx-scroll')?.scrollLeft || 0;
    this.observer.disconnect();
    const runs = [this.state.runA, this.state.runB].filter(Boolean);
    this.root.replaceChildren(this.controls(), ...runs.map(r => this.strip(r)), this.chartsBlock());
    this.root.querySelectorAll('.lx-scroll').forEach(s => { s.scrollLeft = keepX; });
    this.syncScroll();
    this.loadCharts();
  }

  controls() {
    const select = (label, value, options, onchange, cls) => el('label', { class: 'lx-control' }, label,
      el('select', { class: cls, onchange },
        ...options.map(([v, t]) => el('option', { value: v, text: t, selected: v === value ? 'selected' : null }))));
    const methods = this.info[this.state.runA].views.map(v => [v.method, v.method]);
    const runs = this.runs.map(r => [r, r]);
    const size = el('input', { type: 'range', min: 24, max: 192, step: 8, value: this.state.size, class: 'lx-size',
      'aria-label': 'cell size' });
    size.addEventListener('input', () => {
      this.state.size = Number(size.value);
      this.root.style.setProperty('--cell', `${this.state.size}px`);
    });
    this.root.style.setProperty('--cell', `${this.state.size}px`);
    return el('div', { class: 'lx-controls' },
      select('Run ', this.state.runA, runs, e => { this.state.runA = e.target.value; this.reload(); }, 'lx-run'),
      select('compare with ', this.state.runB, [['', '—'], ...runs], e => { this.state.runB = e.target.value; this.reload(); }, 'lx-run-b'),
      select('Method ', this.state.method, methods, e => { this.state.method = e.target.value; this.numbers.clear(); this.render(); }, 'lx-method'),
      el('label', { class: 'lx-control' }, 'Cell size ', size),
      el('span', { class: 'lx-note', text: this.live ? `live: new epochs appear every ${POLL_MS / 1000} s` : '' }));
  }

  async reload() { await this.loadInfo(); this.render(); }

  // --------------------------------------------------------------------------------------------- film strip

  // One column per explained epoch, each column one image (a "tile": every probe image's maps at that epoch,
  // stacked; row r is the r-th band of var(--cell) pixels), loaded when it scrolls into view. The input column and
  // the captions are on the left; a click on a tile opens the cell under the pointer large.
  strip(run) {
    const view = this.view(run);
    const box = el('section', { class: 'lx-strip', 'data-run': run });
    const layer = this.info[run].layer;
    box.append(el('h3', { text: `${run} · ${this.state.method}` }), layer ? el('div', { class: 'lx-note', text: layer }) : null);
    if (!view) { box.append(el('p', { class: 'lx-note', text: `${run} did not log ${this.state.method}.` })); return box; }
    const frames = new Map(view.frames);
    const epochs = this.epochs(), alerts = this.alertEpochs(run);
    const last = view.frames[view.frames.length - 1];
    const span = this.span(view), rows = view.rows;
    box.style.setProperty('--rows', rows);
    box.style.setProperty('--span', span);
    box.style.setProperty('--aspect', view.aspect ?? 1);  // a cell's width / height (probe images need not be square)
    const table = el('table', { class: 'lx-table' });
    const head = el('tr', {}, el('th', { class: 'lx-input-head', text: 'input' }));
    for (const e of epochs) {
      const th = el('th', { class: 'lx-epoch' + (alerts.has(e) ? ' lx-alert' : '') + (e === this.state.selected ? ' lx-selected' : ''),
        'data-epoch': e, title: alerts.has(e) ? `FocusAlert fired at epoch ${e}` : `epoch ${e}` },
        `epoch ${e}`, alerts.has(e) ? el('span', { class: 'lx-badge', text: 'alert' }) : null);
      th.addEventListener('click', () => this.select(e));
      head.append(th);
    }
    table.append(el('thead', {}, head));
    const captions = this.info[run].captions;
    const labels = el('div', { class: 'lx-captions' });
    for (let r = 0; r < rows; r++) {
      const text = `#${r} ${captionText(captions[String(last[0])]?.[r])}`;
      labels.append(el('div', { class: 'lx-caption', 'data-row': r, title: text, text }));
    }
    const input = el('td', { class: 'lx-input' }, el('div', { class: 'lx-stack' },
      view.columns > 1 ? this.tile({ run, tag: view.tag, step: last[1], part: 'input' }, { class: 'lx-tile lx-in' }) : null,
      labels));
    const tr = el('tr', { class: 'lx-body' }, input);
    for (const e of epochs) {
      const td = el('td', { class: 'lx-slot' + (alerts.has(e) ? ' lx-alert' : ''), 'data-epoch': e });
      const step = frames.get(e);
      if (step === undefined) {  // not explained at this epoch: keep the column's width, so runs stay aligned
        td.append(el('div', { class: 'lx-tile lx-missing', title: `${run}: no epoch ${e}` }));
      } else {
        const img = this.tile({ run, tag: view.tag, step, part: 'maps' }, { class: 'lx-tile', 'data-epoch': e,
          title: `epoch ${e}: click an image to open it large` });
        img.addEventListener('click', ev => this.open(run, this.rowAt(img, ev, rows), e));
        img.addEventListener('mousemove', ev => {  // the caption of the image under the pointer, at this epoch
          const r = this.rowAt(img, ev, rows);
          img.title = `#${r} epoch ${e}: ${captionText(captions[String(e)]?.[r])} (click to open it large)`;
        });
        td.append(img);
      }
      tr.append(td);
    }
    table.append(el('tbody', {}, tr));
    box.append(el('div', { class: 'lx-scroll' }, table));
    return box;
  }

  // The number of maps each probe image has per epoch (the cells of one tile's row).
  span(view) { return Math.max(1, view.columns - 1); }

  rowAt(img, ev, rows) {
    const box = img.getBoundingClientRect();
    return Math.min(rows - 1, Math.max(0, Math.floor((ev.clientY - box.top) / box.height * rows)));
  }

  tile(params, attrs) {
    const img = el('img', { ...attrs, alt: '', 'data-src': this.api.tile(params), decoding: 'async' });
    this.observer.observe(img);
    return img;
  }

  // One cell of a tile, as an element of `size` pixels (the tile cropped with CSS; no other request).
  cellView(params, rows, span, row, col, size) {
    const x = span > 1 ? col / (span - 1) * 100 : 0, y = rows > 1 ? row / (rows - 1) * 100 : 0;
    const node = el('div', { class: 'lx-cellview', 'data-row': row, 'data-col': col });
    const width = Math.round(size * (this.view(params.run)?.aspect ?? 1));
    node.style.cssText = `width:${width}px;height:${size}px;background-image:url("${this.api.tile(params)}");` +
      `background-size:${span * 100}% ${rows * 100}%;background-position:${x}% ${y}%`;
    return node;
  }

  onVisible(entries) {
    for (const entry of entries) {
      if (!entry.isIntersecting) continue;
      const img = entry.target;
      img.src = img.dataset.src;
      this.observer.unobserve(img);
    }
  }

  syncScroll() {
    const boxes = [...this.root.querySelectorAll('.lx-scroll')];
    boxes.forEach(b => b.addEventListener('scroll', () => {
      boxes.forEach(o => { if (o !== b && Math.abs(o.scrollLeft - b.scrollLeft) > 1) o.scrollLeft = b.scrollLeft; });
    }));
  }

  select(epoch) {
    this.state.selected = epoch;
    this.root.querySelectorAll('th.lx-epoch').forEach(th => th.classList.toggle('lx-selected', Number(th.dataset.epoch) === epoch));
    this.root.querySelectorAll('.lx-marker').forEach(line => this.placeMarker(line, epoch));
    const th = this.root.querySelector(`.lx-strip th.lx-epoch[data-epoch="${epoch}"]`);
    if (th) {
      const scroll = th.closest('.lx-scroll');
      const first = th.parentElement.firstElementChild.getBoundingClientRect().width;
      scroll.scrollLeft = Math.max(0, th.offsetLeft - first - 8);
      scroll.dispatchEvent(new Event('scroll'));
    }
  }

  onKey(e) {
    if (!['ArrowLeft', 'ArrowRight', 'Escape'].includes(e.key) || e.target.tagName === 'SELECT' || e.target.tagName === 'INPUT') return;
    const modal = this.root.querySelector('.lx-modal');
    if (e.key === 'Escape') { modal?.remove(); return; }
    const epochs = this.epochs();
    if (!epochs.length) return;
    const cur = modal ? Number(modal.dataset.epoch) : this.state.selected;
    const i = epochs.indexOf(cur);
    const next = i < 0 ? epochs[epochs.length - 1] : epochs[Math.min(epochs.length - 1, Math.max(0, i + (e.key === 'ArrowRight' ? 1 : -1)))];
    e.preventDefault();
    if (modal) this.open(modal.dataset.run, Number(modal.dataset.row), next);
    else this.select(next);
  }

  // The large view of one cell, with the same image at the previous and the next epoch.
  open(run, row, epoch) {
    this.root.querySelector('.lx-modal')?.remove();
    const view = this.view(run);
    if (!view) return;
    const frames = view.frames.map(([e]) => e);
    const i = frames.indexOf(epoch);
    if (i < 0) return;
    const steps = new Map(view.frames);
    const span = this.span(view), rows = view.rows;
    const cells = (e, size) => {
      const out = el('div', { class: 'lx-cells' });
      const params = { run, tag: view.tag, step: steps.get(e), part: 'maps' };
      for (let c = 0; c < span; c++) out.append(this.cellView(params, rows, span, row, c, size));
      return out;
    };
    const caption = this.info[run].captions[String(epoch)]?.[row];
    const alerts = this.alertEpochs(run);
    const side = (e, label) => e === undefined ? el('div', { class: 'lx-side lx-none', text: `no ${label} epoch` }) :
      el('figure', { class: 'lx-side', onclick: () => this.open(run, row, e) }, cells(e, small), el('figcaption', { text: `${label}: epoch ${e}` }));
    const big = span > 1 ? 192 : 256, small = span > 1 ? 64 : 128;  // several maps per image: smaller cells
    const last = view.frames[view.frames.length - 1][1];  // the inputs' column the strip shows (the same every epoch)
    const input = view.columns > 1 ?
      this.cellView({ run, tag: view.tag, step: last, part: 'input' }, rows, 1, row, 0, big) : null;
    input?.classList.add('lx-input-big');
    const modal = el('div', { class: 'lx-modal', 'data-run': run, 'data-row': row, 'data-epoch': epoch },
      el('div', { class: 'lx-dialog', role: 'dialog', 'aria-label': `probe image ${row}, epoch ${epoch}` },
        el('button', { class: 'lx-close', text: '×', title: 'close (Esc)', onclick: () => modal.remove() }),
        el('h3', { text: `${run} · ${this.state.method} · probe image #${row} · epoch ${epoch}` + (alerts.has(epoch) ? ' · FocusAlert fired' : '') }),
        el('p', { class: 'lx-big-caption', text: captionText(caption) }),
        el('div', { class: 'lx-trio' }, side(frames[i - 1], 'previous'),
          el('figure', { class: 'lx-main' }, input, cells(epoch, big)),
          side(frames[i + 1], 'next')),
        el('p', { class: 'lx-note', text: '← → previous / next epoch · Esc closes' })));
    modal.addEventListener('click', e => { if (e.target === modal) modal.remove(); });
    this.root.append(modal);
    this.select(epoch);
  }

  // --------------------------------------------------------------------------------------------- charts

  chartsBlock() { return el('section', { class: 'lx-charts' }); }

  async loadCharts() {
    const run = this.state.runA, view = this.view(run);
    const box = this.root.querySelector('.lx-charts');
    if (!view || !box) return;
    const data = await this.api.get('charts', { run, tag: view.tag });
    if (this.view(run) !== view) return;
    box.replaceChildren(el('h3', { text: `${run} · ${this.state.method}: focus, drift and faithfulness (median over the probe images; hover for each image)` }));
    if (!data.charts.length) box.append(el('p', { class: 'lx-note', text: 'No numbers logged for this view.' }));
    const alerts = new Set(data.alerts.map(a => a.epoch));
    for (const chart of data.charts) box.append(this.chart(chart, alerts, run, view.tag));
  }

  chart(chart, alerts, run, tag) {
    const W = 340, H = 190, L = 44, R = 92, T = 22, B = 28;
    const names = Object.keys(chart.series);
    const points = names.flatMap(n => chart.series[n]);
    const xs = [...new Set([...points.map(p => p[0]), ...this.epochs()])];
    let x0 = Math.min(...xs), x1 = Math.max(...xs);
    if (x1 === x0) { x0 -= 0.5; x1 += 0.5; }
    let y0 = Math.min(...points.map(p => p[1])), y1 = Math.max(...points.map(p => p[1]));
    if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
    const pad = (y1 - y0) * 0.08; y0 -= pad; y1 += pad;
    const sx = x => L + (x - x0) / (x1 - x0) * (W - L - R), sy = y => T + (y1 - y) / (y1 - y0) * (H - T - B);
    const root = svg('svg', { class: 'lx-chart', width: W, height: H, viewBox: `0 0 ${W} ${H}`, 'data-title': chart.title });
    root.dataset.x0 = x0; root.dataset.x1 = x1; root.dataset.left = L; root.dataset.width = W - L - R;
    const title = svg('text', { x: L, y: 14, class: 'lx-chart-title' }); title.textContent = chart.title; root.append(title);
    for (const t of niceTicks(y0, y1)) {
      root.append(svg('line', { x1: L, x2: W - R, y1: sy(t), y2: sy(t), class: 'lx-grid' }));
      const lab = svg('text', { x: L - 4, y: sy(t) + 3, class: 'lx-tick', 'text-anchor': 'end' }); lab.textContent = String(t); root.append(lab);
    }
    const xticks = xs.length <= 12 ? xs.sort((a, b) => a - b) : niceTicks(x0, x1, 6).filter(t => Number.isInteger(t));
    for (const t of xticks) {
      const lab = svg('text', { x: sx(t), y: H - B + 13, class: 'lx-tick', 'text-anchor': 'middle' }); lab.textContent = String(t); root.append(lab);
    }
    const xl = svg('text', { x: (L + W - R) / 2, y: H - 3, class: 'lx-tick', 'text-anchor': 'middle' }); xl.textContent = 'epoch'; root.append(xl);
    for (const e of alerts) {
      if (e < x0 || e > x1) continue;
      root.append(svg('line', { x1: sx(e), x2: sx(e), y1: T, y2: H - B, class: 'lx-alert-line', 'data-epoch': e }));
      const a = svg('text', { x: sx(e) + 2, y: T + 8, class: 'lx-alert-text' }); a.textContent = 'alert'; root.append(a);
    }
    const labels = [];
    names.forEach((name, k) => {
      const pts = chart.series[name];
      const colour = COLOURS[k % COLOURS.length];
      const dash = name.endsWith('_chance') ? '2 3' : name.endsWith('_first') ? '6 3' : '';
      root.append(svg('polyline', { points: pts.map(p => `${sx(p[0])},${sy(p[1])}`).join(' '), stroke: colour,
        'stroke-dasharray': dash, class: 'lx-line', 'data-series': name }));
      for (const p of pts) root.append(svg('circle', { cx: sx(p[0]), cy: sy(p[1]), r: 2.2, fill: colour }));
      const lastP = pts[pts.length - 1];
      labels.push({ y: sy(lastP[1]), name, colour });
    });
    labels.sort((a, b) => a.y - b.y);
    for (let i = 1; i < labels.length; i++) labels[i].y = Math.max(labels[i].y, labels[i - 1].y + 10);
    for (const lab of labels) {
      const t = svg('text', { x: W - R + 4, y: lab.y + 3, fill: lab.colour, class: 'lx-label' }); t.textContent = lab.name; root.append(t);
    }
    const marker = svg('line', { y1: T, y2: H - B, class: 'lx-marker' });
    root.append(marker);
    this.placeMarker(marker, this.state.selected);
    const hover = svg('line', { y1: T, y2: H - B, class: 'lx-hover', style: 'display:none' });
    root.append(hover);
    const epochAt = ev => {
      const box = root.getBoundingClientRect();
      const x = x0 + (ev.clientX - box.left - L) / (W - L - R) * (x1 - x0);
      return xs.reduce((best, e) => Math.abs(e - x) < Math.abs(best - x) ? e : best, xs[0]);
    };
    root.addEventListener('mousemove', ev => {
      const e = epochAt(ev);
      hover.setAttribute('x1', sx(e)); hover.setAttribute('x2', sx(e)); hover.style.display = '';
      this.tooltip(ev, chart, e, run, tag);
    });
    root.addEventListener('mouseleave', () => { hover.style.display = 'none'; this.root.querySelector('.lx-tip')?.remove(); });
    root.addEventListener('click', ev => this.select(epochAt(ev)));
    return root;
  }

  placeMarker(line, epoch) {
    const root = line.ownerSVGElement;
    if (epoch === null || epoch === undefined || !root) { line.style.display = 'none'; return; }
    const x0 = Number(root.dataset.x0), x1 = Number(root.dataset.x1);
    const x = Number(root.dataset.left) + (epoch - x0) / (x1 - x0) * Number(root.dataset.width);
    line.setAttribute('x1', x); line.setAttribute('x2', x); line.style.display = '';
  }

  async tooltip(ev, chart, epoch, run, tag) {
    let tip = this.root.querySelector('.lx-tip');
    if (!tip) { tip = el('div', { class: 'lx-tip' }); this.root.append(tip); }
    tip.style.left = `${ev.pageX + 14}px`; tip.style.top = `${ev.pageY + 10}px`;
    const key = `${run}|${tag}|${epoch}`;
    tip.dataset.key = key;
    const lines = [`epoch ${epoch}`];
    for (const [name, pts] of Object.entries(chart.series)) {
      const p = pts.find(q => q[0] === epoch);
      if (p) lines.push(`${name}: ${p[1].toFixed(3)}`);
    }
    tip.textContent = lines.join('\n');
    if (!this.numbers.has(key)) {
      this.numbers.set(key, this.api.get('numbers', { run, tag, epoch }).catch(() => ({ numbers: {} })));
    }
    const per = (await this.numbers.get(key)).numbers;
    if (tip.dataset.key !== key || !tip.isConnected) return;
    const more = [];
    for (const name of Object.keys(chart.series)) {
      const values = per[`${chart.kind}/${name}`];
      if (values) more.push(`${name} per image: ${values.map((v, i) => `#${i} ${v === null ? '–' : v.toFixed(2)}`).join('  ')}`);
    }
    if (more.length) tip.textContent = lines.join('\n') + '\n' + more.join('\n');
  }
}

export async function mount(root, api, options = {}) {
  const dashboard = new Dashboard(root, api, options);
  await dashboard.start();
  return dashboard;
}
