// Deployments, runs and GPU-hours pages (ui-ops): behaviour hung off data- attributes, since
// the CSP allows no inline script.

// A refused rollout step (409: already paused, nothing to undo) answers with the rollout
// fragment naming the reason; htmx swaps only 2xx by default, so let that one through.
document.addEventListener("htmx:beforeSwap", (event) => {
  const target = event.detail.target;
  if (event.detail.xhr.status === 409 && target && target.hasAttribute("data-swap-conflict")) {
    event.detail.shouldSwap = true;
    event.detail.isError = false;
  }
});

// The GPU-hours period selector shows the chosen period as soon as it changes.
document.addEventListener("change", (event) => {
  const field = event.target;
  if (field instanceof HTMLSelectElement && field.hasAttribute("data-submit-on-change")) {
    field.form.submit();
  }
});
