const sources = JSON.parse(document.getElementById('sources').textContent);
const sections = Array.from(document.querySelectorAll('.method'));
function show(section, index) {
  const frames = JSON.parse(section.dataset.frames);
  const frame = frames[index];
  const src = sources[frame.source];
  section.querySelector('input.slider').value = index;
  section.querySelector('.epoch-label').textContent = frame.label;
  section.querySelectorAll('.tile').forEach((tile, r) => {
    const row = frame.rows[r];
    tile.style.display = row ? '' : 'none';
    if (!row) return;
    const crop = tile.querySelector('.crop'), img = tile.querySelector('img');
    crop.style.height = row[1] + 'px'; crop.style.width = frame.width + 'px';
    img.style.marginTop = (-row[0]) + 'px';
    if (img.getAttribute('src') !== src) img.setAttribute('src', src);
  });
  section.querySelectorAll('svg.chart').forEach(svg => {
    const line = svg.querySelector('.marker');
    if (frame.x === null || !svg.dataset.x0) { line.style.display = 'none'; return; }
    const x = Number(svg.dataset.x0) + (frame.x - Number(svg.dataset.xmin)) * Number(svg.dataset.scale);
    line.setAttribute('x1', x); line.setAttribute('x2', x); line.style.display = '';
  });
}
sections.forEach(section => {
  const slider = section.querySelector('input.slider');
  slider.addEventListener('input', () => show(section, Number(slider.value)));
  show(section, Number(slider.value));
});
const all = document.getElementById('all-epochs');
if (all) {
  const epochs = JSON.parse(all.dataset.epochs);
  all.addEventListener('input', () => {
    const epoch = epochs[Number(all.value)];
    document.getElementById('all-label').textContent = 'epoch ' + epoch;
    sections.forEach(section => {
      const frames = JSON.parse(section.dataset.frames);
      let best = 0;
      frames.forEach((f, i) => { if (f.x !== null && f.x <= epoch) best = i; });
      show(section, best);
    });
  });
}
