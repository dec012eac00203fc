// newsletter preview. The server announces each compile on /events (Server-Sent Events);
// the page then asks /api/state for what to show. The chosen view (width, background,
// tab, subscriber) lives in the URL fragment, so reloads and new compiles keep it.
// Everything from the server is put in the page as text, never as HTML.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const frame = $("email");
  const TABS = ["html", "text", "report"]; // "report" only once the issue has been sent
  const view = { width: "desktop", dark: false, tab: "html", as: "", layout: "" };
  let shownTag = null;
  let shownEmailUrl = "";
  let latestRequest = 0;

  function loadView() {
    const saved = new URLSearchParams(location.hash.slice(1));
    view.width = saved.get("width") === "mobile" ? "mobile" : "desktop";
    view.dark = saved.get("dark") === "1";
    view.tab = TABS.includes(saved.get("tab")) ? saved.get("tab") : "html";
    view.as = saved.get("as") || "";
    view.layout = saved.get("layout") || "";
  }

  function saveView() {
    const params = new URLSearchParams();
    if (view.width !== "desktop") params.set("width", view.width);
    if (view.dark) params.set("dark", "1");
    if (view.tab !== "html") params.set("tab", view.tab);
    if (view.as) params.set("as", view.as);
    if (view.layout) params.set("layout", view.layout);
    const fragment = params.toString();
    history.replaceState(null, "", fragment ? "#" + fragment : location.pathname + location.search);
  }

  function applyView() {
    for (const button of document.querySelectorAll(".segmented button")) {
      button.setAttribute("aria-pressed", String(button.dataset.width === view.width));
    }
    $("device").dataset.width = view.width;
    $("dark").setAttribute("aria-pressed", String(view.dark));
    document.body.classList.toggle("dark", view.dark);
    frame.style.colorScheme = view.dark ? "dark" : "light"; // the email's own prefers-color-scheme styles follow
    for (const tab of TABS) {
      const selected = view.tab === tab;
      $("tab-" + tab).setAttribute("aria-selected", String(selected));
      $("tab-" + tab).tabIndex = selected ? 0 : -1;
      $("panel-" + tab).hidden = !selected;
    }
    if (view.tab === "report" && !$("report").getAttribute("src")) $("report").src = "/report.html";
  }

  function renderReportTab(sent) { // the issue's report, once the ledger has it (the same page as report --html)
    $("tab-report").hidden = !sent;
    if (!sent && view.tab === "report") change({ tab: "html" });
  }

  function change(update) {
    Object.assign(view, update);
    applyView();
    saveView();
  }

  function setStatus(kind, text) {
    $("status").className = "status " + kind;
    $("status-text").textContent = text;
  }

  async function refresh() {
    const request = ++latestRequest;
    let state;
    try {
      const response = await fetch("/api/state?as=" + encodeURIComponent(view.as) + layoutQuery(),
                                   { cache: "no-store" });
      state = await response.json();
    } catch (error) {
      setStatus("offline", "Cannot reach the preview server");
      return;
    }
    if (request === latestRequest) render(state);
  }

  function layoutQuery() {
    return view.layout ? "&layout=" + encodeURIComponent(view.layout) : "";
  }

  function render(state) {
    shownTag = state.tag;
    renderLayouts(state.layouts || [], state.issue.layout);
    document.title = state.issue.id + " · Preview";
    $("issue-id").textContent = state.issue.id;
    const time = new Date(state.compiled_at * 1000).toLocaleTimeString();
    renderReportTab(Boolean(state.report));
    const failed = Boolean(state.error);
    document.body.classList.toggle("compile-failed", failed);
    $("error").hidden = !failed;
    if (failed) {
      renderError(state.error);
      setStatus("failed", "Compile error at " + time);
      return; // the last good email stays visible, dimmed, under the error
    }
    setStatus("live", "Live · compiled " + time + " in " + Math.round(state.took_ms) + " ms");
    renderPicker(state.subscribers, state.as);
    renderHeaders(state.headers);
    renderSize(state.size);
    renderLint(state.lint);
    $("text").textContent = state.text;
    $("compiled").textContent = state.issue.path + " with " + state.issue.layout;
    showEmail(state.tag, state.as);
  }

  function renderError(error) {
    const where = error.path ? (error.line ? error.path + ":" + error.line : error.path) : "";
    $("error-where").textContent = where;
    $("error-where").hidden = !where;
    $("error-message").textContent = error.message;
    $("error-hint").textContent = error.hint || "";
    $("error-hint").hidden = !error.hint;
  }

  function renderLayouts(names, shown) {
    const select = $("layout");
    const key = JSON.stringify(names);
    if (select.dataset.key !== key) {
      select.replaceChildren(...names.map((name) => new Option(name, name)));
      select.dataset.key = key;
    }
    const current = (shown || "").split(/[\\/]/).pop().replace(/\.mjml$/, "");
    select.value = view.layout || current;
  }

  function renderPicker(choices, chosen) {
    const select = $("as");
    const key = JSON.stringify(choices);
    if (select.dataset.key !== key) { // rebuilding an open list would close it under the reader
      select.replaceChildren(...choices.map((choice) => new Option(choice.label, choice.email)));
      select.dataset.key = key;
    }
    select.value = chosen;
  }

  function renderHeaders(headers) {
    const rows = [];
    for (const [name, value] of headers) {
      const term = document.createElement("dt");
      term.textContent = name;
      const detail = document.createElement("dd");
      detail.textContent = value;
      rows.push(term, detail);
    }
    $("headers").replaceChildren(...rows);
  }

  function renderSize(size) {
    const kb = (bytes) => (bytes / 1024).toFixed(1).replace(/\.0$/, "") + " KB";
    const scale = size.clip * 1.15; // the bar runs a little past the clip so its mark stays visible
    const percent = (bytes) => Math.min(100, (bytes / scale) * 100) + "%";
    const clipped = size.bytes >= size.clip;
    const close = !clipped && size.bytes >= size.warning;
    const bar = $("size-bar");
    bar.style.width = percent(size.bytes);
    bar.className = "meter-fill" + (clipped ? " clipped" : close ? " warning" : "");
    $("size-warning-mark").style.left = percent(size.warning);
    $("size-clip-mark").style.left = percent(size.clip);
    const amount = document.createElement("strong");
    amount.textContent = kb(size.bytes);
    const share = Math.round((size.bytes / size.clip) * 100);
    const verdict = clipped ? " Gmail will clip this email." : close ? " Close to the clip." : "";
    $("size").replaceChildren(amount, ` of HTML, ${share}% of Gmail's ~${kb(size.clip)} clip.${verdict}`);
    $("size-legend").textContent = `Marks: lint warns from ${kb(size.warning)}; Gmail clips at ${kb(size.clip)}.`;
  }

  function renderLint(findings) {
    $("lint-count").textContent = String(findings.length);
    const items = findings.map((finding) => {
      const item = document.createElement("li");
      item.className = finding.level;
      const level = document.createElement("span");
      level.className = "level";
      level.textContent = finding.level;
      const where = document.createElement("span");
      where.className = "where";
      where.textContent = finding.line ? finding.path + ":" + finding.line : finding.path;
      item.append(level, finding.message, where);
      return item;
    });
    if (!items.length) {
      const clean = document.createElement("li");
      clean.className = "clean";
      clean.textContent = "No problems found.";
      items.push(clean);
    }
    $("lint").replaceChildren(...items);
  }

  function showEmail(tag, as) {
    const url = "/email.html?v=" + encodeURIComponent(tag) + "&as=" + encodeURIComponent(as) + layoutQuery();
    if (url === shownEmailUrl) return;
    shownEmailUrl = url;
    let x = 0;
    let y = 0;
    try { x = frame.contentWindow.scrollX; y = frame.contentWindow.scrollY; } catch (error) { /* nothing shown yet */ }
    frame.addEventListener("load", () => {
      try { frame.contentWindow.scrollTo(x, y); } catch (error) { /* keep the top */ }
    }, { once: true });
    try {
      frame.contentWindow.location.replace(url); // no history entry per compile: Back leaves the preview
    } catch (error) {
      frame.src = url;
    }
  }

  function onTabKey(event) {
    const tabs = TABS.filter((tab) => !$("tab-" + tab).hidden);
    let index = tabs.indexOf(view.tab);
    if (event.key === "ArrowRight") index = (index + 1) % tabs.length;
    else if (event.key === "ArrowLeft") index = (index + tabs.length - 1) % tabs.length;
    else if (event.key === "Home") index = 0;
    else if (event.key === "End") index = tabs.length - 1;
    else return;
    event.preventDefault();
    change({ tab: tabs[index] });
    $("tab-" + tabs[index]).focus();
  }

  function connect() {
    const events = new EventSource("/events");
    events.addEventListener("version", (event) => {
      if (event.data !== shownTag) refresh();
    });
    events.addEventListener("error", () => setStatus("offline", "Reconnecting to the preview server…"));
  }

  loadView();
  applyView();
  for (const button of document.querySelectorAll(".segmented button")) {
    button.addEventListener("click", () => change({ width: button.dataset.width }));
  }
  $("dark").addEventListener("click", () => change({ dark: !view.dark }));
  for (const tab of TABS) {
    $("tab-" + tab).addEventListener("click", () => change({ tab }));
    $("tab-" + tab).addEventListener("keydown", onTabKey);
  }
  $("as").addEventListener("change", (event) => {
    change({ as: event.target.value });
    refresh();
  });
  $("layout").addEventListener("change", (event) => {
    change({ layout: event.target.value });
    refresh();
  });
  window.addEventListener("hashchange", () => { // the address was edited, or Back was pressed
    const before = view.as + "|" + view.layout;
    loadView();
    applyView();
    if (view.as + "|" + view.layout !== before) refresh();
  });
  connect();
})();
