const $ = (id) => document.getElementById(id);
function show(id, text, ok) { const el = $(id); el.textContent = text; el.className = ok ? 'ok' : 'error'; }
async function send(url, body, messageId) {
  const response = await fetch(url, {method: 'POST', body});
  const result = await response.json();
  if (!result.ok) { show(messageId, result.error, false); return false; }
  if (result.message) show(messageId, result.message, true); else $(messageId).textContent = '';
  if (url.endsWith('/settings')) updateCheck();
  if (result.job !== undefined || url.endsWith('/boot') || url.endsWith('/reboot')) poll();
  return true;
}
function renderStatus(status) {
  $('running').textContent = status.running; $('boot').textContent = status.boot;
  $('firmware').textContent = status.firmware; $('partition').value = status.boot;
  for (const [name, version] of Object.entries(status.images)) { const el = $('image-' + name); if (el) el.textContent = version || '(empty)'; }
}
async function poll() {
  const response = await fetch('/api/firmware/status'); const state = await response.json();
  renderStatus(state.status);
  const job = state.job; if (!job) return;
  $('job').hidden = false; $('job-title').textContent = job.title;
  $('progress').value = job.percent; $('percent').textContent = job.percent + '%';
  $('job-log').textContent = job.lines.join('\n');
  if (!job.done) { setTimeout(poll, 250); return; }
  show('job-result', job.ok ? job.title + ': done' : job.title + ': failed (see the log)', job.ok);
}
async function updateCheck() {
  const response = await fetch('/api/firmware/updatecheck'); const info = await response.json();
  if (!info.ok) { $('server-version').textContent = info.error; return; }
  $('server-version').textContent = info.version + (info.newer ? ' (is newer)' : ' (no update required)');
  $('changelog').textContent = info.changelog;
}
document.addEventListener('DOMContentLoaded', () => {
  $('settings').addEventListener('submit', (e) => { e.preventDefault(); send('/api/firmware/settings', new FormData(e.target), 'settings-message'); });
  $('update-now').addEventListener('click', () => { const f = new FormData(); f.append('mode', 'server'); send('/api/firmware/flash', f, 'flash-message'); });
  $('flash-url').addEventListener('submit', (e) => { e.preventDefault(); send('/api/firmware/flash', new FormData(e.target), 'url-message'); });
  $('flash-file').addEventListener('submit', (e) => { e.preventDefault(); send('/api/firmware/upload', new FormData(e.target), 'file-message'); });
  $('boot-form').addEventListener('submit', (e) => { e.preventDefault(); send('/api/firmware/boot', new FormData(e.target), 'boot-message'); });
  $('reboot').addEventListener('click', () => { if (confirm('Reboot the module now?')) send('/api/firmware/reboot', new FormData(), 'boot-message'); });
  updateCheck(); poll();
});
