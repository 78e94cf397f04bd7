// Download area: copy a firmware URL to the clipboard.
document.querySelectorAll('button.copy').forEach((button) => {
  button.addEventListener('click', async () => {
    await navigator.clipboard.writeText(new URL(button.dataset.url, location.href).href);
    button.textContent = 'Copied';
  });
});
