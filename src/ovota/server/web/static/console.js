// Release console: confirmations for actions, the publish upload with a progress bar and every failure shown,
// and live parts ([data-live] elements with an id) that refresh themselves every few seconds.
// A refused form answers its POST with the page again: show (and reload, and refresh) the page's own address.
const pageUrl = document.getElementById('page-url');
if (pageUrl) history.replaceState(null, '', pageUrl.dataset.url);

function bindConfirms() {
  document.querySelectorAll('form[data-confirm]:not([data-bound])').forEach((form) => {
    form.dataset.bound = '1';
    form.addEventListener('submit', (event) => { if (!confirm(form.dataset.confirm)) event.preventDefault(); });
  });
}
bindConfirms();

const LIMIT_MB = 16;
function uploadFailure(request) {
  // The answer may be JSON (a refusal), a plain-text 413 (too large), the login page (the session ended),
  // or nothing at all (the network or the server went away).
  if (request.responseURL && request.responseURL.includes('/console/login')) return 'Your session has ended: log in again.';
  if (request.status === 413) return `The image is larger than the server takes (${LIMIT_MB} MB).`;
  if (request.status === 403) return 'Your token may not publish (it needs the release role).';
  try { return JSON.parse(request.responseText).error || `The server answered ${request.status}.`; }
  catch (e) { return `The server answered ${request.status} ${request.statusText}: ${request.responseText.slice(0, 200)}`; }
}

const publish = document.getElementById('publish');
if (publish) {
  publish.addEventListener('submit', (event) => {
    event.preventDefault();
    const bar = document.getElementById('upload-progress');
    const percent = document.getElementById('upload-percent');
    const message = document.getElementById('publish-message');
    const show = (text, ok) => { message.textContent = text; message.className = ok ? 'ok' : 'error'; };
    const request = new XMLHttpRequest();
    request.open('POST', publish.action);
    bar.hidden = false;
    request.upload.addEventListener('progress', (e) => {
      if (e.lengthComputable) { bar.value = Math.round(e.loaded * 100 / e.total); percent.textContent = bar.value + '%'; }
    });
    request.addEventListener('load', () => {
      let result = null;
      try { result = JSON.parse(request.responseText); } catch (e) { result = null; }
      if (request.status === 200 && result && result.ok) {
        show(result.message, true);
        setTimeout(() => { location.href = '/console?ok=' + encodeURIComponent(result.message); }, 300);
      } else {
        show(uploadFailure(request), false);
      }
    });
    request.addEventListener('error', () => show('The upload failed: the server could not be reached.', false));
    request.send(new FormData(publish));
  });
}

// Live parts: fetch this page again and swap in the new content of each [data-live] element, so a halt or new
// counts appear without a reload (forms outside them, such as a half-filled one, are left alone).
const live = document.querySelectorAll('[data-live][id]');
if (live.length) {
  const refresh = async () => {
    try {
      const response = await fetch(location.href, { headers: { 'X-Requested-With': 'live' } });
      if (!response.ok || response.url.includes('/console/login')) return;
      const fresh = new DOMParser().parseFromString(await response.text(), 'text/html');
      fresh.querySelectorAll('[data-live][id]').forEach((part) => {
        const old = document.getElementById(part.id);
        if (!old) return;
        const open = new Set([...old.querySelectorAll('details[open] > summary')].map((s) => s.textContent.split(' (')[0]));
        part.querySelectorAll('details > summary').forEach((s) => {
          if (open.has(s.textContent.split(' (')[0])) s.parentElement.open = true;
        });
        if (old.innerHTML !== part.innerHTML) old.replaceWith(document.importNode(part, true));
      });
      bindConfirms();
    } catch (e) { /* the next round tries again */ }
  };
  setInterval(refresh, Number(document.body.dataset.refresh || 3000));
}
