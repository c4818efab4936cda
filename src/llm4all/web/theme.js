// Sets the colour theme before the page paints (a classic script, so it runs first).
// The choice is the user's (saved by the toggle) or else the system's.
(function () {
  var saved = null;
  try { saved = localStorage.getItem("llm4all-theme"); } catch (e) { /* storage off */ }
  var dark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
  document.documentElement.dataset.theme = saved === "light" || saved === "dark" ? saved : (dark ? "dark" : "light");
})();
