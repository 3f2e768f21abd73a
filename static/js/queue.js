// The approval queue: live rows from /ws/feed/, deciding in place, bulk and keyboard.
import {
  clockOffset, connectFeed, countdownText, describeDecision, postForm, secondsLeft, showState, visible,
} from "./feed.js";
import { grantEvent, reloadGrants } from "./grants.js";

const RETIRE_AFTER_MS = 2000;
const queue = document.getElementById("queue");
const template = document.getElementById("row-template");
const bulk = document.getElementById("bulk");
const alerts = document.getElementById("alerts");
const pressure = document.getElementById("pressure");
const help = document.getElementById("help");
const baseTitle = document.title;
const offset = clockOffset();
let current = null; // the row j/k moved to
// Who is looking: the same rules as the server's, so live rows show only the buttons
// this person may use (the server refuses the rest anyway).
const viewer = JSON.parse(document.getElementById("viewer").textContent);

// --- Rows -----------------------------------------------------------------------------

function rows() {
  return [...queue.querySelectorAll("li.item")];
}

function liveRows() {
  return rows().filter((row) => !row.classList.contains("retiring"));
}

function findRow(id) {
  return rows().find((row) => row.dataset.id === id) || null;
}

function newRow() {
  const row = template.content.firstElementChild.cloneNode(true);
  noNativeValidation(row);
  return row;
}

// The script checks the reason itself and says so in the row; the browser's own
// bubble (kept for pages without the script) would stop the submit event first.
function noNativeValidation(root) {
  for (const form of root.querySelectorAll("form.decide")) form.noValidate = true;
}

// Writes a request resource into a row; agent text only ever as textContent.
function fill(row, request) {
  row.dataset.id = request.id;
  row.dataset.deadline = request.deadline || "";
  row.dataset.action = request.timeout_action;
  const pick = row.querySelector(".pick");
  pick.value = request.id;
  pick.setAttribute("aria-label", `Select ${request.operation} by ${request.agent}`);
  const link = row.querySelector(".operation");
  link.href = `/requests/${encodeURIComponent(request.id)}/`;
  link.textContent = request.operation;
  row.querySelector(".agent").textContent = request.agent;
  row.querySelector(".summary").textContent = visible(request.summary);
  row.querySelector(".escalated").hidden = !request.escalated_at;
  row.querySelector(".reason").setAttribute("aria-label", `Reason to reject ${request.operation}`);
  permit(row, request);
  for (const form of row.querySelectorAll("form.decide")) {
    form.action = `/requests/${encodeURIComponent(request.id)}/decide`;
  }
  const badges = row.querySelector(".badges");
  badges.replaceChildren(...request.triggers.filter((t) => t.fired).map(badge));
  row.querySelector(".countdown").dateTime = request.deadline || "";
  tickRow(row);
}

function mayDecide(request) {
  const groups = request.approver_groups || [];
  if (groups.length && !groups.some((group) => viewer.groups.includes(group))) return false;
  return !viewer.owned_agents.includes(request.agent);
}

function approvalLine(request) {
  const names = (request.approvals || []).map((approval) => approval.by);
  if ((request.required_approvals || 1) < 2) return "";
  const line = `${names.length} of ${request.required_approvals} approved`;
  return names.length ? `${line} — by ${names.join(", ")}` : line;
}

// Buttons for this person: none when they may not decide, no Approve once they approved.
// A payload another approver changed is not shown here, so it is not approved here: the
// row links to the request's page, which shows the change (the server's `payload_changed_by`).
function permit(row, request) {
  const allowed = mayDecide(request);
  const approvedByMe = (request.approvals || []).some((approval) => approval.by === viewer.username);
  const changedBy = request.payload_changed_by ?? null;
  const changed = row.querySelector(".changed");
  changed.hidden = changedBy === null;
  changed.querySelector(".changed-by").textContent = visible(changedBy || "");
  const actions = row.querySelector(".actions");
  if (actions) {
    actions.hidden = !allowed;
    show(actions, ".approve-form", !approvedByMe && changedBy === null);
    const review = show(actions, ".review", !approvedByMe && changedBy !== null);
    if (review) review.href = `/requests/${encodeURIComponent(request.id)}/`;
  }
  const pick = row.querySelector(".pick");
  pick.hidden = !allowed;
  pick.disabled = !allowed;
  row.querySelector(".not-yours").hidden = allowed;
  const line = approvalLine(request);
  const approvals = row.querySelector(".approvals");
  approvals.textContent = line;
  approvals.hidden = !line;
}

// Shows or hides one control of a row. A served row holds only the controls it showed
// then; a live change may need another, taken from the live rows' template.
function show(actions, selector, shown) {
  let element = actions.querySelector(selector);
  if (!element && shown) {
    element = template.content.querySelector(`.actions ${selector}`).cloneNode(true);
    actions.querySelector(".reject-form").before(element);
  }
  if (element) element.hidden = !shown;
  return element;
}

function badge(trigger) {
  const item = document.createElement("li");
  item.className = "badge";
  item.textContent = trigger.rule === "always" ? "always" : `${trigger.rule} ${trigger.value} > ${trigger.threshold}`;
  return item;
}

// Keeps the list in deadline order (soonest first).
function place(row) {
  const deadline = row.dataset.deadline;
  const after = liveRows().find((other) => other !== row && other.dataset.deadline > deadline);
  queue.insertBefore(row, after || null);
}

function upsert(request) {
  let row = findRow(request.id);
  const fresh = row === null;
  if (fresh) row = newRow();
  fill(row, request);
  row.classList.remove("retiring");
  if (fresh) place(row);
  return row;
}

// Shows what happened in place, then takes the row away.
function retire(row, text) {
  if (row.classList.contains("retiring")) return;
  row.classList.add("retiring");
  row.querySelector(".result").textContent = text;
  for (const control of row.querySelectorAll("button, input")) control.disabled = true;
  if (current === row) current = null;
  setTimeout(() => row.remove(), RETIRE_AFTER_MS);
  counted();
}

function counted() {
  const count = liveRows().length;
  document.getElementById("pending-count").textContent = count;
  document.getElementById("empty").hidden = count > 0;
  document.title = count ? `(${count}) ${baseTitle}` : baseTitle;
  selectionChanged();
}

function tickRow(row) {
  const clock = row.querySelector(".countdown");
  if (!row.dataset.deadline) return;
  clock.textContent = countdownText(row.dataset.deadline, row.dataset.action, offset);
  row.classList.toggle("urgent", secondsLeft(row.dataset.deadline, offset) < 30);
}

// --- The feed -------------------------------------------------------------------------

// After every (re)connection the snapshot is the truth: rows it lacks go at once.
function applySnapshot(snapshot) {
  const wanted = new Set(snapshot.pending.map((request) => request.id));
  for (const row of rows()) {
    if (!wanted.has(row.dataset.id)) row.remove();
  }
  for (const request of snapshot.pending) upsert(request);
  for (const row of liveRows()) place(row);
  alerts.replaceChildren(...snapshot.alerts.map(alertLine));
  reloadGrants();
  counted();
}

function onEvent(event) {
  if (event.type === "request.created" || event.type === "request.escalated" || event.type === "request.updated") {
    if (event.request.status !== "pending") return;
    upsert(event.request);
    counted();
    if (event.type === "request.created") notify(event.request);
  } else if (event.type === "request.decided") {
    const row = findRow(event.request.id);
    // Our own click shows its own result; anything else says who decided.
    if (row && !row.dataset.busy) retire(row, `Already ${describeDecision(event.request.decision)}.`);
  } else if (event.type === "alert.raised") {
    removeAlert(event.alert.id);
    alerts.append(alertLine(event.alert));
  } else if (event.type === "alert.resolved") {
    removeAlert(event.alert.id);
  } else if (event.type === "pressure.sample") {
    showPressure(event);
  } else if (event.type.startsWith("grant.")) {
    grantEvent(event);
  }
}

function alertLine(alert) {
  const line = document.createElement("p");
  line.className = "alert";
  line.dataset.id = String(alert.id);
  line.dataset.severity = alert.severity;
  const severity = document.createElement("strong");
  severity.textContent = alert.severity;
  const where = alert.process ? `${alert.host} · ${alert.process}` : alert.host;
  const link = document.createElement("a");
  link.href = "/monitoring/";
  link.textContent = "details";
  line.append(severity, ` ${where}: ${alert.kind} ${alert.value} > ${alert.threshold} `, link);
  return line;
}

function removeAlert(id) {
  for (const line of alerts.querySelectorAll(".alert")) {
    if (line.dataset.id === String(id)) line.remove();
  }
}

function showPressure(sample) {
  let item = [...pressure.children].find((li) => li.dataset.host === sample.host);
  if (!item) {
    item = document.createElement("li");
    item.dataset.host = sample.host;
    const name = document.createElement("span");
    name.className = "host";
    const meter = document.createElement("meter");
    Object.assign(meter, { min: 0, max: 100, low: 75, high: 80, optimum: 0 });
    const value = document.createElement("span");
    value.className = "value";
    item.append(name, meter, value);
    pressure.append(item);
  }
  const percent = Number(sample.pressure);
  item.querySelector(".host").textContent = sample.host;
  item.querySelector("meter").value = percent;
  item.querySelector("meter").setAttribute("aria-label", `Memory pressure on ${sample.host}`);
  item.querySelector(".value").textContent = `${percent.toFixed(1)}%`;
  item.dataset.level = percent > 90 ? "critical" : percent > 80 ? "warning" : "ok";
}

// --- Deciding ---------------------------------------------------------------------------

async function decide(form) {
  const row = form.closest("li.item");
  const rejecting = form.classList.contains("reject-form");
  const result = row.querySelector(".result");
  if (rejecting && !form.elements.reason.value.trim()) {
    result.textContent = "A reason is required to reject.";
    form.elements.reason.focus();
    return;
  }
  row.dataset.busy = "1";
  result.textContent = rejecting ? "Rejecting…" : "Approving…";
  const { status, body } = await postForm(form);
  delete row.dataset.busy;
  if (status === 200 && body.request && body.request.status === "pending") {
    // An approval that leaves the request waiting for other operators.
    fill(row, body.request);
    result.textContent = `Approved: ${approvalLine(body.request)}.`;
  } else if (status === 200) {
    retire(row, `${rejecting ? "Rejected" : "Approved"}.`);
  } else if (status === 409 && body.request) {
    retire(row, `Already ${describeDecision(body.request.decision)}.`);
  } else {
    result.textContent = (body.error && body.error.message) || `The server answered ${status}.`;
  }
}

queue.addEventListener("submit", (event) => {
  const form = event.target.closest("form.decide");
  if (!form) return;
  event.preventDefault();
  decide(form);
});

queue.addEventListener("change", (event) => {
  if (event.target.classList.contains("pick")) selectionChanged();
});

function picked() {
  return liveRows().filter((row) => row.querySelector(".pick").checked && !row.querySelector(".pick").disabled);
}

function selectionChanged() {
  const count = picked().length;
  document.getElementById("selected-count").textContent = `${count} selected`;
  const all = document.getElementById("select-all");
  all.checked = count > 0 && count === liveRows().length;
  for (const button of bulk.querySelectorAll("button")) button.disabled = count === 0;
}

document.getElementById("select-all").addEventListener("change", (event) => {
  for (const row of liveRows()) {
    const pick = row.querySelector(".pick");
    if (!pick.disabled) pick.checked = event.target.checked;
  }
  selectionChanged();
});

bulk.addEventListener("submit", async (event) => {
  event.preventDefault();
  const outcome = event.submitter ? event.submitter.value : "approve";
  const result = document.getElementById("bulk-result");
  const chosen = picked();
  if (outcome === "reject" && !bulk.elements.reason.value.trim()) {
    result.textContent = "A reason is required to reject.";
    bulk.elements.reason.focus();
    return;
  }
  for (const row of chosen) row.dataset.busy = "1";
  const { status, body } = await postForm(bulk, { outcome });
  for (const row of chosen) delete row.dataset.busy;
  if (!body.results) {
    result.textContent = (body.error && body.error.message) || `The server answered ${status}.`;
    return;
  }
  let done = 0;
  for (const item of body.results) {
    const row = findRow(item.id);
    if (item.status === 200) done += 1;
    if (!row) continue;
    if (item.status === 200 && item.request.status === "pending") fill(row, item.request);
    else if (item.status === 200) retire(row, outcome === "reject" ? "Rejected." : "Approved.");
    else if (item.code === "already_approved" || item.code === "forbidden") {
      // Still pending (a quorum waits for someone else): show the count, keep the row.
      if (item.request && item.request.status === "pending") fill(row, item.request);
      row.querySelector(".result").textContent = item.message;
    }
    else if (item.status === 409) retire(row, item.message);
    else row.querySelector(".result").textContent = item.message;
  }
  result.textContent = `${done} of ${body.results.length} ${outcome === "reject" ? "rejected" : "approved"}.`;
  // The reason belonged to that batch; the next one starts with an empty box.
  if (done && outcome === "reject") bulk.elements.reason.value = "";
});

// --- Keyboard -------------------------------------------------------------------------

function move(step) {
  const list = liveRows();
  if (!list.length) return;
  const index = current ? list.indexOf(current) : -1;
  const next = list[Math.min(list.length - 1, Math.max(0, index + step))];
  for (const row of list) row.classList.toggle("current", row === next);
  current = next;
  current.focus();
}

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const typing = event.target.closest("input, textarea, select") || help.open;
  if (typing) return;
  const row = current && current.isConnected ? current : null;
  if (event.key === "j") move(1);
  else if (event.key === "k") move(-1);
  else if (event.key === "?") help.showModal();
  else if (row && event.key === "a" && row.querySelector(".approve-form:not([hidden])")) {
    decide(row.querySelector(".approve-form"));
  }
  else if (row && event.key === "r" && row.querySelector(".reason")) row.querySelector(".reason").focus();
  else if (row && event.key === "o") location.href = row.querySelector(".operation").href;
  else if (row && event.key === "x") {
    const pick = row.querySelector(".pick");
    pick.checked = !pick.checked;
    selectionChanged();
  } else return;
  event.preventDefault();
});

document.getElementById("help-button").addEventListener("click", () => help.showModal());

// --- Notifications (optional; permission asked once, on a click) ------------------------

const notifyButton = document.getElementById("notify-button");
if ("Notification" in window && Notification.permission === "default" && !localStorage.getItem("oversight.asked")) {
  notifyButton.hidden = false;
  notifyButton.addEventListener("click", async () => {
    localStorage.setItem("oversight.asked", "1");
    notifyButton.hidden = true;
    await Notification.requestPermission();
  });
}

function notify(request) {
  if (!document.hidden || !("Notification" in window) || Notification.permission !== "granted") return;
  new Notification(`Oversight: ${request.operation}`, { body: `${request.agent}: ${visible(request.summary)}`, tag: request.id });
}

// --- Start ----------------------------------------------------------------------------

noNativeValidation(queue);
for (const row of rows()) tickRow(row);
counted();
setInterval(() => rows().forEach(tickRow), 1000);
const status = document.getElementById("live-status");
connectFeed({ onSnapshot: applySnapshot, onEvent, onState: (state, delay) => showState(status, state, delay) });
