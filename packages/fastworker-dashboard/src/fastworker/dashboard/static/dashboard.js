// fastworker dashboard: the only script of our own. htmx does the rest.
// It marks the page while the dashboard itself does not answer (htmx keeps polling and
// the mark goes when an answer comes), and says why an action was refused.
(function () {
  "use strict";
  const body = document.body;
  document.addEventListener("htmx:sendError", function () {
    body.classList.add("fw-offline");
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    if (event.detail.successful) body.classList.remove("fw-offline");
  });
  document.addEventListener("htmx:responseError", function (event) {
    const config = event.detail.requestConfig || {};
    if (config.verb !== "post") return;
    const status = event.detail.xhr.status;
    const toast = document.getElementById("toast");
    if (!toast) return;
    const box = document.createElement("div");
    box.className = "toast toast-error";
    box.setAttribute("role", "status");
    box.textContent =
      status === 403
        ? "Refused: this page's security token is stale. Reload the page and try again."
        : status === 401
          ? "Refused: the dashboard's access token is needed. Reload the page."
          : "The action failed (HTTP " + status + ").";
    toast.replaceChildren(box);
  });
})();
