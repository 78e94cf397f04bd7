// Release console: confirmations for promote/rollback, and the publish upload with a progress bar.
document.querySelectorAll('form[data-confirm]').forEach((form) => {
  form.addEventListener('submit', (event) => { if (!confirm(form.dataset.confirm)) event.preventDefault(); });
});
const publish = document.getElementById('publish');
if (publish) {
  publish.addEventListener('submit', (event) => {
    event.preventDefault();
    const bar = document.getElementById('upload-progress');
    const percent = document.getElementById('upload-percent');
    const message = document.getElementById('publish-message');
    const request = new XMLHttpRequest();
    request.open('POST', publish.action);
    bar.hidden = false;
    request.upload.addEventListener('progress', (e) => {
      if (e.lengthComputable) { bar.value = Math.round(e.loaded * 100 / e.total); percent.textContent = bar.value + '%'; }
    });
    request.addEventListener('load', () => {
      const result = JSON.parse(request.responseText);
      message.textContent = result.ok ? result.message : result.error;
      message.className = result.ok ? 'ok' : 'error';
      if (result.ok) { setTimeout(() => { location.href = '/console?ok=' + encodeURIComponent(result.message); }, 300); }
    });
    request.send(new FormData(publish));
  });
}
// Fleet table: rows that do not contain the filter text are hidden as you type.
document.querySelectorAll('input[data-filter]').forEach((input) => {
  input.addEventListener('input', () => {
    const needle = input.value.trim().toLowerCase();
    document.querySelectorAll(input.dataset.filter).forEach((row) => {
      row.hidden = needle !== '' && !row.textContent.toLowerCase().includes(needle);
    });
  });
});
