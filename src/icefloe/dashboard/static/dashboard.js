// Live updates of an ingestion page while a run is in progress: poll the live fragment every 2 s
// and swap it in; when the run has finished, reload the page once (runs, charts and ledger change).
// A notice or error shown once stays out of the address bar (and out of a reload).
(function () {
  "use strict";
  var POLL_MS = 2000;
  var url = new URL(window.location.href);
  if (url.searchParams.has("notice") || url.searchParams.has("error")) {
    url.searchParams.delete("notice");
    url.searchParams.delete("error");
    window.history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
  function poll() {
    var live = document.getElementById("live");
    if (!live || live.dataset.inProgress !== "yes") return;
    fetch(live.dataset.liveUrl, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (!response.ok) throw new Error("live update: HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("live");
        if (!fresh) return;
        live.replaceWith(fresh);
        if (fresh.dataset.inProgress === "yes") {
          window.setTimeout(poll, POLL_MS);
        } else {
          window.location.reload();
        }
      })
      .catch(function () {
        window.setTimeout(poll, POLL_MS * 5); // the server restarts or the network blinks: slower
      });
  }
  window.setTimeout(poll, POLL_MS);
})();
