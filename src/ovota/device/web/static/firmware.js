'use strict';
// The Firmware page's behaviour, as OVMS 3.3.006's inline script has it: tabs, the version dialog, and the
// flash dialog whose <pre> shows a console command's output as /api/execute streams it (OVMS's loadcmd).
const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];
const PROCESSING = 'Processing\u2026 (do not interrupt, may take some minutes)\n';
const LOG_LINE = /^[EWIDV] \(\d+\) [^:\s]+: /;  // the module's log: not part of a command's output

function showTab(id) {
  for (const tab of $$('[role=tab]')) {
    const active = tab.getAttribute('aria-controls') === id;
    tab.classList.toggle('active', active);
    tab.setAttribute('aria-selected', String(active));
    tab.tabIndex = active ? 0 : -1;
    $('#' + tab.getAttribute('aria-controls')).classList.toggle('active', active);
  }
}

function openDialog(dialog) {
  if (typeof dialog.showModal === 'function') dialog.showModal(); else dialog.setAttribute('open', '');
}

function append(pre, text) {
  pre.textContent += text;
  pre.scrollTop = pre.scrollHeight;
}

function setloading(dialog, on) {
  for (const button of $$('button', dialog)) button.disabled = on;
  dialog.classList.toggle('loading', on);
}

// POST a console command to /api/execute and append its output to `pre` while it arrives.
async function loadcmd(command, pre) {
  let response;
  try {
    response = await fetch('/api/execute', {method: 'POST', body: new URLSearchParams({command})});
  } catch (err) {
    append(pre, 'Lost contact with the module (' + err.message + ').\n');
    return false;
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  try {
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      append(pre, decoder.decode(value, {stream: true}));
    }
  } catch (err) {
    append(pre, '\nLost contact with the module (' + err.message + ').\n');
    return false;
  }
  append(pre, decoder.decode());
  return response.ok;
}

async function runCommand(command) {
  const dialog = $('#flash-dialog');
  const output = $('#output');
  output.textContent = PROCESSING;
  setloading(dialog, true);
  openDialog(dialog);
  await loadcmd(command, output);
  setloading(dialog, false);
}

// Emulator addition: upload a file, then follow the flash job through /api/firmware/status.
async function uploadAndFlash() {
  const input = $('#input-upload');
  const message = $('#upload-message');
  if (!input.files.length) { message.textContent = 'Select a firmware file first.'; return; }
  message.textContent = '';
  const dialog = $('#flash-dialog');
  const output = $('#output');
  output.textContent = PROCESSING;
  setloading(dialog, true);
  openDialog(dialog);
  const body = new FormData();
  body.append('file', input.files[0]);
  try {
    const response = await fetch('/api/firmware/upload', {method: 'POST', body});
    const result = await response.json();
    if (!result.ok) { append(output, result.error + '\n'); return; }
    for (;;) {
      const state = await (await fetch('/api/firmware/status')).json();
      output.textContent = PROCESSING + state.job.lines.filter((line) => !LOG_LINE.test(line)).map((line) => line + '\n').join('');
      output.scrollTop = output.scrollHeight;
      if (state.job.done) break;
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
  } catch (err) {
    append(output, 'Lost contact with the module (' + err.message + ').\n');
  } finally {
    setloading(dialog, false);
  }
}

function updateNow() {
  const server = $('input[name=server]').value || 'https://api.openvehicles.com/firmware/ota';
  const tag = $('input[name=tag]').value || 'main';
  const hardware = $('#hardware').textContent;
  const url = server.replace(/\/$/, '') + '/' + hardware + '/' + tag + '/ovms3.bin';
  runCommand('ota flash http ' + url);
}

// OVMS's OutputReboot: post "module reset", wait for the module, then load the page again.
async function reboot() {
  const dots = $('#dots');
  const timer = setInterval(() => { dots.textContent += '\u2022'; }, 1000);
  try {
    await fetch('/api/execute', {method: 'POST', body: new URLSearchParams({command: 'module reset'})})
      .then((response) => response.text());
  } catch (err) {
    // the module went away while rebooting: reload anyway
  }
  clearInterval(timer);
  location.replace('/cfg/firmware');
}

document.addEventListener('DOMContentLoaded', () => {
  if ($('#rebooting')) { reboot(); return; }
  const tabs = $$('[role=tab]');
  tabs.forEach((tab, i) => {
    tab.addEventListener('click', (ev) => { ev.preventDefault(); showTab(tab.getAttribute('aria-controls')); });
    tab.addEventListener('keydown', (ev) => {  // arrow keys move between the tabs, as in any tab list
      const step = {ArrowRight: 1, ArrowLeft: -1}[ev.key];
      if (!step) return;
      const next = tabs[(i + step + tabs.length) % tabs.length];
      showTab(next.getAttribute('aria-controls'));
      next.focus();
    });
  });
  const fromHash = location.hash && $('[role=tab][aria-controls="' + location.hash.slice(1) + '"]');
  showTab(fromHash ? location.hash.slice(1) : 'tab-setup');
  $('#ota-versioninfo-btn').addEventListener('click', () => openDialog($('#version-dialog')));
  $('.action-dismiss').addEventListener('click', () => $('#version-dialog').close());
  $('.action-update-now').addEventListener('click', updateNow);
  $('.action-upload').addEventListener('click', uploadAndFlash);
  for (const form of $$('.section-flash')) {
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const action = ev.submitter ? ev.submitter.value : '';
      if (action === 'flash-http') runCommand('ota flash http ' + $('input[name=flash_http]').value);
      else if (action === 'flash-vfs') runCommand('ota flash vfs ' + $('input[name=flash_vfs]').value);
    });
  }
  const flashDialog = $('#flash-dialog');
  flashDialog.addEventListener('cancel', (ev) => ev.preventDefault());  // no Escape: as data-keyboard="false"
  $('.action-reboot').addEventListener('click', () => $('#reboot-form').submit());
  $('.action-close').addEventListener('click', () => location.replace('/cfg/firmware'));
});
